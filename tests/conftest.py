"""Shared fixtures: one local Ray cluster for the whole session, toy configs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nasps.config import config_from_dict

# Ray's token authentication stays on, and a client joining a cluster by address must say so
# before Ray is first imported (Ray reads it once).
os.environ.setdefault("RAY_AUTH_MODE", "token")

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray head started once for the session; tests join it like a user's cluster."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=4",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    address = f"127.0.0.1:{port}"
    yield address
    import ray
    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


@pytest.fixture(scope="session")
def ray_session(ray_address):
    """This test process joined to the session's Ray, the way the nasps driver joins one."""
    from nasps.runtime.driver import connect
    os.chdir(ROOT)
    connect(ray_address, {})
    return ray_address
