"""Checkpoints and --resume: the driver stopped mid-search by SIGTERM (as a job scheduler or
`ray job stop` does; kill -9 is in tests/test_faults.py), then resumed: exactly the budget,
nothing finished lost, nothing trained twice, in-flight children re-run once, and the policy's
version equal to the updates that were not lost. Bad resumes are one line, exit 2, and change
nothing on disk."""

import hashlib
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml

from nasps.config import config_from_dict
from nasps.runtime.driver import run_search
from nasps.state.rundir import open_for_resume
from tests.conftest import NASPS, ROOT, query

# Random children that never repeat by chance: 4 * 3 * 3 * 4 * 1000 * 1000 architectures.
WIDE_SPACE = {"type": "categorical", "decisions": [
    {"name": "a", "choices": [0, 1, 2, 3]}, {"name": "b", "choices": ["x", "y", "z"]},
    {"name": "c", "choices": [0.1, 0.5, 0.9]}, {"name": "d", "choices": [1, 2, 3, 4]},
    {"name": "e", "choices": list(range(1000))}, {"name": "f", "choices": list(range(1000))}]}

CONFIG = {
    "space": {"type": "categorical", "decisions": [
        {"name": "a", "choices": [0, 1, 2, 3]}, {"name": "b", "choices": ["x", "y", "z"]},
        {"name": "c", "choices": [0.1, 0.5, 0.9]}, {"name": "d", "choices": [1, 2, 3, 4]},
        {"name": "e", "choices": list(range(50))}]},
    "evaluator": {"type": "python", "target": "tests.toys:sleep_then_score"},
    "strategy": {"type": "reinforce", "learning_rate": 0.1},
    "cluster": {"parameter_servers": 2, "replicas": 2, "children_per_replica": 2, "cpus_per_child": 0.25},
    "budget": {"children": 30},
    "checkpoint": {"every_updates": 2, "every_s": 1.0},
    "logging": {"tensorboard": False},
}


def trained_rows(run_dir):
    return query(run_dir, "SELECT arch_hash, replica, controller_version FROM children WHERE cached = 0")


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(done, needle):
    status, err = done
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.fixture(scope="module")
def killed_run(ray_session, tmp_path_factory):
    """A search whose driver was stopped with SIGTERM mid-way, after at least one checkpoint:
    like Ctrl-C, exit 143 with one line, not Ray's own handler's stack dump."""
    tmp = tmp_path_factory.mktemp("resume")
    config = tmp / "search.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run_dir = tmp / "run"
    env = dict(os.environ, NASPS_TOY_SLEEP="0.3")
    stderr = tmp / "stderr"
    driver = subprocess.Popen(NASPS + ["search", "--config", str(config), "--run-dir", str(run_dir),
                                       "--address", ray_session], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr.open("w"))
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run_dir / "checkpoint.pt").exists() and (run_dir / "results.sqlite").exists() \
                and len(trained_rows(run_dir)) >= 10:
            break
        time.sleep(0.1)
    driver.send_signal(signal.SIGTERM)
    driver.wait(timeout=60)
    err = stderr.read_text()
    assert driver.returncode == 143, err
    assert "terminated (SIGTERM); finished children are kept" in err and "--resume" in err
    assert "SIGTERM received" not in err and "Traceback" not in err
    assert len(trained_rows(run_dir)) < 30, "the search ended before it could be stopped"
    return run_dir, env, ray_session


def test_resume_after_the_driver_is_killed(killed_run):
    run_dir, env, address = killed_run
    before = trained_rows(run_dir)
    pending = [h for (h,) in query(run_dir, "SELECT arch_hash FROM pending")]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    saved_versions = [s["version"] for s in checkpoint["shards"]]
    pushes_before = query(run_dir, "SELECT shard, version, applied FROM pushes")
    lost = [sum(1 for s, v, a in pushes_before if a and s == shard and v > saved)
            for shard, saved in enumerate(saved_versions)]

    done = subprocess.run(NASPS + ["search", "--resume", str(run_dir), "--address", address],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    after = trained_rows(run_dir)
    hashes = [h for h, _, _ in after]
    assert len(after) == 30  # exactly the budget, across the stop
    assert len(set(hashes)) == 30  # nothing trained twice
    assert after[:len(before)] == before  # nothing finished was lost or changed
    for h in pending:  # what was in flight at the kill was trained again, once, off the gradient
        rows = [r for r in after if r[0] == h]
        assert len(rows) == 1 and rows[0][2] is None
    assert query(run_dir, "SELECT COUNT(*) FROM pending") == [(0,)]
    # The policy continued from the checkpoint: each shard's version is the updates it kept.
    final = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    applied = query(run_dir, "SELECT shard, COUNT(*) FROM pushes WHERE applied = 1 GROUP BY shard")
    for shard, count in applied:
        assert final["shards"][shard]["version"] == count - lost[shard]
    if sum(lost):
        assert "lost" in done.stderr
    # (A finished search resumed with a larger budget: tests/test_board.py.)


def test_bad_resumes_are_one_line_and_touch_nothing(killed_run, tmp_path, bad_input_cli):
    run_dir, _, _ = killed_run
    store, checkpoint = run_dir / "results.sqlite", run_dir / "checkpoint.pt"
    sums = {p: digest(p) for p in (store, checkpoint, run_dir / "config.yaml")}

    def resume(target, *extra):
        return bad_input_cli("search", "--resume", target, *extra)

    one_line_error(resume(run_dir, "--set", "strategy.learning_rate=0.5"), "only budget.* and cluster.*")
    one_line_error(resume(run_dir, "--set", "cluster.parameter_servers=3"), "cluster.parameter_servers")
    one_line_error(resume(run_dir, "--set", "budget.children=-1"), "budget.children")
    one_line_error(resume(tmp_path / "nowhere"), "no such run directory")
    one_line_error(resume(tmp_path), "no config.yaml there")
    one_line_error(resume(run_dir, "--config", str(run_dir / "config.yaml")), "--config FILE for a new search")
    assert {p: digest(p) for p in sums} == sums

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "results.sqlite", "checkpoint.pt"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    (broken / "checkpoint.pt").write_bytes(checkpoint.read_bytes()[:200])  # truncated
    one_line_error(resume(broken), "checkpoint.pt: not a readable nasps checkpoint")
    (broken / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    (broken / "results.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)  # truncated
    one_line_error(resume(broken), "results.sqlite")
    assert (broken / "results.sqlite").read_bytes() == b"SQLite format 3\x00" + b"\x00" * 40


def test_a_resumed_random_search_samples_new_architectures(ray_session, tmp_path):
    """Random search saves no generator (it never pushes): the resumed replicas start streams of
    their own, not the first run's again, whose architectures would all be cached repeats.
    (In a space of 12 million architectures, two random samples repeat with a chance of 1e-5.)"""
    config = config_from_dict({**CONFIG, "space": WIDE_SPACE, "strategy": {"type": "random"},
                               "evaluator": {"type": "python", "target": "tests.toys:match_fraction"},
                               "cluster": {"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0},
                               "budget": {"children": 6}})
    run_search(config, tmp_path / "run")
    run_search(open_for_resume(tmp_path / "run", ["budget.children=12"]), tmp_path / "run", resume=True)
    rows = query(tmp_path / "run", "SELECT arch_hash, cached FROM children")
    assert len(rows) == 12 and not any(cached for _, cached in rows)
