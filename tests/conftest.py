"""Shared fixtures: one local Ray cluster for the whole session (for each of the test processes
when make test runs two), toy configs."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import types
from pathlib import Path

import pytest

from nasps.config import config_from_dict
from tests.ray_nodes import free_port, start_node, stop_node, wait_for

# Ray's token authentication stays on, and a client joining a cluster by address must say so
# before Ray is first imported (Ray reads it once).
os.environ.setdefault("RAY_AUTH_MODE", "token")
if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
    # A token of the test session's own: `ray start` (the two-node tests) refuses to start without
    # one, while ray.init() would write one to ~/.ray, so on a fresh machine the order decided.
    _token = Path(tempfile.mkdtemp(prefix="nasps-test-token-")) / "auth_token"
    _token.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(_token)

ROOT = Path(__file__).resolve().parent.parent
NASPS = [sys.executable, "-m", "nasps"]

TOY_SPACE = {"type": "categorical", "decisions": [
    {"name": "a", "choices": [0, 1, 2, 3]},
    {"name": "b", "choices": ["x", "y", "z"]},
    {"name": "c", "choices": [0.1, 0.5, 0.9]},
    {"name": "d", "choices": [1, 2, 3, 4]},
]}


def toy_config(**sections):
    """A small valid config over the toy space; keyword arguments replace whole sections."""
    raw = {"space": TOY_SPACE,
           "evaluator": {"type": "python", "target": "tests.toys:match_fraction"},
           "strategy": {"type": "reinforce", "learning_rate": 0.2},
           "cluster": {"cpus_per_child": 0},
           "budget": {"children": 20},
           "seed": 0}
    raw.update(sections)
    return config_from_dict(raw)


def query(run_dir: Path, sql: str) -> list[tuple]:
    """Rows of a query on a run's results store."""
    db = sqlite3.connect(Path(run_dir) / "results.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def random_search(tmp_path, space, evaluator, children=3) -> Path:
    """A small random search with the reference loop, into ``tmp_path / "run"``."""
    from nasps.method.serial import run_serial
    config = config_from_dict({"space": space, "evaluator": evaluator, "strategy": {"type": "random"},
                               "budget": {"children": children}})
    run_serial(config, tmp_path / "run")
    return tmp_path / "run"


def block_ray(monkeypatch) -> None:
    """Bad input must stop before Ray: a search or a training that gets that far fails the test."""
    def accepted(*args, **kwargs):
        raise AssertionError("the bad input was accepted: nasps went on to start Ray")
    for name, attr in (("nasps.runtime.driver", "run_search"), ("nasps.runtime.final", "run_grid")):
        fake = types.ModuleType(name)
        setattr(fake, attr, accepted)
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.chdir(ROOT)


def run_cli(capsys, *argv) -> tuple[int, str]:
    """``nasps ARGV`` in this process (a subprocess costs seconds of imports): (exit status, stderr)."""
    from nasps import cli
    capsys.readouterr()
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        status = exc.code
    return status, capsys.readouterr().err


@pytest.fixture
def bad_input_cli(monkeypatch, capsys):
    """``run_cli`` for input that must be refused before Ray starts."""
    block_ray(monkeypatch)
    return lambda *argv: run_cli(capsys, *argv)


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray head started once for the session; tests join it like a user's cluster. It
    runs in a session of its own and is stopped by killing that session (never `ray stop`,
    which would stop every Ray on the machine)."""
    temp_dir = tempfile.mkdtemp(prefix="nasps-ray-")  # short: Ray's socket paths live here
    log = Path(temp_dir) / "head.log"
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_node(["--head", f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
                       f"--temp-dir={temp_dir}"], log, head=True)
    try:
        wait_for(address, "/4.0 CPU", [head], [log])
        yield address
    finally:
        import ray
        if ray.is_initialized():
            ray.shutdown()
        stop_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_address):
    """This test process joined to the session's Ray, the way the nasps driver joins one."""
    from nasps.runtime.driver import connect
    os.chdir(ROOT)
    connect(ray_address, {})
    return ray_address
