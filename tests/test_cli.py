"""The nasps command in subprocesses, as a user runs it."""

import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import time

import pytest
import yaml

from tests.conftest import NASPS, ROOT, TOY_SPACE, block_ray, run_cli


def nasps(*args, timeout=300, **kwargs):
    return subprocess.run(NASPS + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def write_config(tmp_path, **overrides):
    raw = {"space": TOY_SPACE, "evaluator": {"type": "python", "target": "tests.toys:match_fraction"},
           "cluster": {"cpus_per_child": 0, "replicas": 2, "children_per_replica": 2,
                       "parameter_servers": 2},
           "strategy": {"type": "reinforce", "learning_rate": 0.2}, "budget": {"children": 16}}
    raw.update(overrides)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_validate_accepts_the_shipped_config():
    result = nasps("validate", "configs/default.yaml")
    assert result.returncode == 0 and "ok" in result.stdout


def test_version_and_log_levels(capsys):
    from nasps import __version__
    from nasps.cli import log_level, main
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"nasps {__version__}"
    levels = [log_level(v, q) for v, q in [(0, 0), (1, 0), (3, 0), (0, 1), (0, 2), (0, 5), (1, 1)]]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG, logging.WARNING, logging.ERROR, logging.ERROR,
                      logging.INFO]


@pytest.mark.parametrize("text, needles", [
    ("", ["the file is empty"]),
    ("space: [", ["not valid YAML"]),
    ("spce: {}\n", ["spce: unknown key", "did you mean 'space'"]),
])
def test_bad_files_give_one_line(tmp_path, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_one_line_error(nasps("validate", str(path)), str(path), *needles)


def test_bad_values_and_overrides_give_one_line(tmp_path):
    path = write_config(tmp_path)
    assert_one_line_error(nasps("validate", str(path), "--set", "cluster.replicas=zero"),
                          "cluster.replicas: must be an integer")
    assert_one_line_error(nasps("validate", str(path), "--set", "budget.children=-5"),
                          "budget.children: must be >= 1")
    assert_one_line_error(nasps("validate", str(path), "--set", "evaluator.target=nowhere:fn"),
                          "evaluator.target: cannot import module 'nowhere'")
    assert_one_line_error(nasps("validate", str(path), "--set", "evaluator.target=tests.toys:nope"),
                          "has no attribute 'nope'")
    assert_one_line_error(nasps("validate", str(tmp_path)), "is a directory")
    assert_one_line_error(nasps("validate", str(tmp_path / "missing.yaml")), "no such config file")
    assert_one_line_error(nasps("search", "--config", str(path), "--bogus"), "unrecognized arguments")
    assert_one_line_error(nasps("report", str(tmp_path / "nowhere")), "no such run directory")


def test_search_report_and_a_run_dir_that_is_not_reused(ray_session, tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path)
    run_dir = tmp_path / "run"
    result = nasps("search", "--config", str(path), "--run-dir", str(run_dir),
                   "--address", ray_session, "--set", "budget.children=12")
    assert result.returncode == 0, result.stderr
    assert "children 12/12" in result.stdout and "top" in result.stdout
    # In a pipe, progress is plain lines (the live line on a terminal has its own test).
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert lines and "\x1b[" not in result.stdout
    assert "children 12/12" in lines[-1] and "ETA" in lines[-1] and "best" in lines[-1]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["budget"]["children"] == 12 and resolved["strategy"]["baseline_decay"] == 0.95
    db = sqlite3.connect(run_dir / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM children WHERE cached = 0").fetchone()[0] == 12
    db.close()

    # The rest in this process: a subprocess costs seconds of imports.
    from nasps import cli
    capsys.readouterr()
    assert cli.main(["report", str(run_dir), "--no-plots"]) in (0, None)
    out = capsys.readouterr().out
    assert "12 trained" in out and "architectures" in out

    before = hashlib.sha256((run_dir / "results.sqlite").read_bytes()).hexdigest()
    block_ray(monkeypatch)
    status, err = run_cli(capsys, "search", "--config", path, "--run-dir", run_dir, "--address", ray_session)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "already holds a search" in err, err
    assert hashlib.sha256((run_dir / "results.sqlite").read_bytes()).hexdigest() == before


def test_report_of_a_corrupt_store_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.sqlite").write_bytes(b"this is not a database" * 100)
    assert_one_line_error(nasps("report", str(run_dir)), "results.sqlite")


def _rows(store):
    db = sqlite3.connect(store)
    rows = db.execute("SELECT id, arch_hash, reward, status FROM children ORDER BY id").fetchall()
    db.close()
    return rows


@pytest.mark.parametrize("name", ["cifar10.yaml", "ptb.yaml"])
def test_shipped_cluster_configs_load(name):
    from nasps.config import load_config
    config = load_config(ROOT / "configs" / name)
    assert config.strategy.policy == "lstm" and config.cluster.gpus_per_child == 1
    assert config.space.type == {"cifar10.yaml": "conv", "ptb.yaml": "rnn_cell"}[name]


def test_ctrl_c_on_a_live_terminal_keeps_every_finished_child(ray_session, tmp_path):
    """Through a pseudo-terminal the search shows rich's live line (escape codes, a bar); Ctrl-C
    then stops it with exit 130, and every child that finished is kept, unchanged."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    # A space the policy cannot exhaust: the search must still be running when Ctrl-C comes,
    # not ended by the sample cap on the 144 toy architectures.
    space = {"type": "categorical", "decisions": TOY_SPACE["decisions"] + [{"name": "e", "choices": list(range(1000))}]}
    path = write_config(tmp_path, space=space, evaluator={"type": "python", "target": "tests.toys:sleep_then_score"},
                        budget={"children": 1000})
    run_dir = tmp_path / "run"
    main, follower = pty.openpty()
    # A terminal of 160 x 40, as a user's window would report it (a bare pty reports 0 x 0).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    child = subprocess.Popen(NASPS + ["search", "--config", str(path), "--run-dir", str(run_dir),
                                      "--address", ray_session],
                             stdout=follower, stderr=follower, stdin=follower, cwd=ROOT, close_fds=True,
                             env=dict(os.environ, COLUMNS="160", LINES="40", NASPS_TOY_SLEEP="0.3"))
    os.close(follower)
    store = run_dir / "results.sqlite"
    seen, rows_before, deadline = b"", None, time.time() + 120
    while time.time() < deadline:
        if select.select([main], [], [], 0.2)[0]:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if rows_before is None and store.exists() and len(_rows(store)) >= 8 and b"ETA" in seen:
            rows_before = _rows(store)
            child.send_signal(signal.SIGINT)
    os.close(main)
    assert rows_before is not None, "the search did not get going"
    assert child.wait(timeout=60) == 130
    text = seen.decode("utf-8", "replace")
    assert "\x1b[" in text and "/1000" in text and "ETA" in text and "━" in text  # rich's live bar
    assert "finished children are kept" in text
    rows_after = _rows(store)
    assert rows_after[:len(rows_before)] == rows_before  # nothing finished was lost or changed
    assert len(rows_after) < 1000
    db = sqlite3.connect(store)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
