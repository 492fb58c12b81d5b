"""Keeping workers busy and never hanging: rolling rounds against the paper's barrier, the
gradient a rolling replica pushes, deadlines for every child, failure patience, a cluster
too small for the search, and a store that cannot be written (SIGTERM: tests/test_resume.py)."""

import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter

import pytest
import torch

from nasps.config import config_from_dict
from nasps.errors import UserInputError
from nasps.method.controller import Controller, Scored
from nasps.method.parameter_server import ParameterShard
from nasps.method.serial import adam_settings
from nasps.policies import build_policy
from nasps.runtime.driver import run_search
from nasps.spaces import Architecture, build_space
from nasps.state.rundir import open_for_resume
from nasps.state.store import ResultsStore
from tests.conftest import NASPS, ROOT, TOY_SPACE, query, toy_config
from tests.test_cli import assert_one_line_error, nasps, write_config


def stored(run_dir):
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    try:
        return store.children()
    finally:
        store.close()


def overtakes(rows) -> int:
    """How often a worker started its next child while a child of the same replica that was
    training before the worker's last one finished was still training: what a round's barrier
    never lets happen. Read from the store's timestamps, not from a timer."""
    trained = [r for r in rows if not r.cached]
    count = 0
    for worker in {r.worker for r in trained}:
        mine = sorted((r for r in trained if r.worker == worker), key=lambda r: r.started_at)
        for last, after in zip(mine, mine[1:]):
            count += any(o.worker != worker and o.replica == last.replica and o.started_at < last.finished_at
                         and o.finished_at > after.started_at for o in trained)
    return count


def replay(config, rows) -> torch.Tensor:
    """The policy a serial computation makes from the stored children of a one-replica search:
    update after update, the REINFORCE gradient of the children that fed it (in the order their
    rows were committed) at the parameters the updates before it made, applied with Adam."""
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    controller = Controller(0, space, policy, config.strategy, config.cluster.children_per_replica, config.seed)
    shard = ParameterShard(0, policy.initial_params(config.seed), adam_settings(config))
    for seq in sorted({r.update_seq for r in rows if r.update_seq is not None}):
        fed = sorted((r for r in rows if r.update_seq == seq), key=lambda r: r.id)
        scored = [Scored(tuple(space.encode(Architecture.from_value(config.space.type, r.arch))), r.reward, r.id)
                  for r in fed]
        params, version = shard.pull()
        shard.push("0", seq, controller.gradient(params, scored), version)
    return torch.from_numpy(shard.pull()[0])


@pytest.mark.parametrize("rounds", ["rolling", "barrier"])
def test_rolling_keeps_workers_busy_and_pushes_the_gradient_of_every_m_children(ray_session, tmp_path, rounds):
    """The paper's controller (an LSTM with anchors) on conv networks, S = 3 shards; half the
    children take 12 times as long as the rest. Rolling: a worker that finishes starts its next
    child while a slow one trains, and each update is the gradient of the next m committed
    children at the parameters the replica holds. Barrier: never; each update is a round.
    Either way the policy the shards end with is the one a serial replay of the stored
    children computes."""
    m = 4
    config = config_from_dict({
        "space": {"type": "conv", "num_filters": [8, 16], "curriculum": {"start_depth": 3, "add_layers": 0}},
        "evaluator": {"type": "python", "target": "tests.toys:conv_slow_when_wide"},
        "strategy": {"type": "reinforce", "policy": "lstm", "learning_rate": 0.01},
        "cluster": {"parameter_servers": 3, "replicas": 1, "children_per_replica": m, "cpus_per_child": 0,
                    "rounds": rounds},
        "budget": {"children": 20}, "seed": 11})
    summary = run_search(config, tmp_path / "run")
    rows = stored(tmp_path / "run")
    assert summary.progress.trained == 20 and all(r.status == "ok" for r in rows)
    fed = [r for r in rows if r.update_seq is not None]
    if rounds == "rolling":
        assert overtakes(rows) > 0
        sizes = list(Counter(r.update_seq for r in fed).values())
        assert sizes[:-1] == [m] * (len(sizes) - 1) and 1 <= sizes[-1] <= m  # m per update, the rest at the end
    else:
        assert overtakes(rows) == 0
        # A barrier round is m samples: the children of one update were sampled from one version.
        for seq in {r.update_seq for r in fed}:
            assert len({r.controller_version for r in fed if r.update_seq == seq}) == 1
    updates = {r.update_seq for r in fed}
    assert summary.shard_versions == [len(updates)] * 3 and len(updates) >= 5
    assert query(tmp_path / "run", "SELECT COUNT(*) FROM rounds")[0][0] == len(updates)
    assert len({r.reward for r in fed}) > 1  # the advantages are not all zero
    torch.testing.assert_close(summary.params, replay(config, rows), rtol=1e-4, atol=1e-6)


def test_a_child_that_never_returns_ends_as_timeout_and_the_search_goes_on(ray_session, tmp_path):
    config = toy_config(strategy={"type": "random"},
                        evaluator={"type": "python", "target": "tests.toys:hang_when_a0", "timeout_s": 1.0},
                        cluster={"replicas": 1, "children_per_replica": 2, "cpus_per_child": 0},
                        budget={"children": 12})
    summary = run_search(config, tmp_path / "run")
    rows = [r for r in stored(tmp_path / "run") if not r.cached]
    assert summary.progress.trained == len(rows) == 12
    hung = [r for r in rows if r.arch["a"] == 0]
    assert hung and all(r.status == "timeout" and "evaluator.timeout_s" in r.error for r in hung)
    assert all(r.status == "ok" for r in rows if r.arch["a"] != 0)
    # The runtime, not the evaluator, ended them: each one's worker was killed and replaced.
    assert sum(s.timeouts for s in summary.replicas) == len(hung)
    assert sum(s.replaced_workers for s in summary.replicas) >= len(hung)


def test_a_broken_evaluator_stops_the_search_and_resume_continues_once_fixed(ray_session, tmp_path):
    env_vars = {"NASPS_TOY_DIR": str(tmp_path)}
    path = write_config(tmp_path, evaluator={"type": "python", "target": "tests.toys:broken_unless_fixed"},
                        cluster={"cpus_per_child": 0, "replicas": 1, "children_per_replica": 2,
                                 "runtime_env": {"env_vars": env_vars}},
                        budget={"children": 12, "max_consecutive_failures": 4})
    run_dir = tmp_path / "run"
    broken = nasps("search", "--config", str(path), "--run-dir", str(run_dir), "--address", ray_session)
    assert broken.returncode == 1, broken.stderr
    errors = [line for line in broken.stderr.splitlines() if line.startswith("nasps: error:")]
    # The workers log each failed child's traceback (the user's to read); nasps prints none.
    driver = [line for line in broken.stderr.splitlines() if "ChildWorker pid=" not in line]
    assert len(errors) == 1 and not any("Traceback" in line for line in driver)
    assert "RuntimeError: the evaluator is broken: no such dataset /data/missing" in errors[0]
    assert "budget.max_consecutive_failures" in errors[0] and "--resume" in errors[0]
    failed = query(run_dir, "SELECT status FROM children WHERE cached = 0")
    assert 4 <= len(failed) <= 6 and {s for (s,) in failed} == {"failed"}  # 4, and the ones in flight

    (tmp_path / "fixed").touch()  # the user fixes the evaluator
    run_search(open_for_resume(run_dir, []), run_dir, resume=True, address=ray_session)  # in this process
    trained = query(run_dir, "SELECT status FROM children WHERE cached = 0")
    assert len(trained) == 12 and Counter(s for (s,) in trained)["failed"] == len(failed)


@pytest.mark.parametrize("cluster, key", [({"cpus_per_child": 64}, "cluster.cpus_per_child"),
                                          ({"gpus_per_child": 1}, "cluster.gpus_per_child"),
                                          ({"resources_per_child": {"tpu": 1}}, "cluster.resources_per_child.tpu")])
def test_a_cluster_too_small_for_the_search_is_refused_before_anything_is_written(ray_session, tmp_path,
                                                                                 cluster, key):
    """The session's cluster has 4 CPUs, no GPU and no autoscaler: waiting would be forever.
    (The command's one line and exit 2 are checked on an embedded Ray below.)"""
    config = toy_config(cluster={"cpus_per_child": 0, "replicas": 2, "children_per_replica": 2, **cluster})
    with pytest.raises(UserInputError, match="4 child workers") as refused:
        run_search(config, tmp_path / "run", address=ray_session)
    assert key in str(refused.value) and "hold 0" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run" / "results.sqlite").exists()  # the same --run-dir works once fixed


def test_an_embedded_ray_too_small_for_the_search_is_one_line_and_exit_2(tmp_path):
    path = write_config(tmp_path, cluster={"cpus_per_child": 1000})
    result = nasps("search", "--config", str(path), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert_one_line_error(result, "cluster.cpus_per_child", "1000 CPU each")


def wait_for_rows(run_dir, n, process, timeout_s=120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if (run_dir / "results.sqlite").exists() and \
                query(run_dir, "SELECT COUNT(*) FROM children WHERE cached = 0")[0][0] >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} children trained in {timeout_s} s")


RESUMABLE = {"evaluator": {"type": "python", "target": "tests.toys:sleep_then_score"},
             "space": {"type": "categorical",
                       "decisions": TOY_SPACE["decisions"] + [{"name": "e", "choices": list(range(100))}]},
             "budget": {"children": 16}, "checkpoint": {"every_updates": 2, "every_s": 1.0},
             "logging": {"tensorboard": False}}


def trained_rows(run_dir):
    return query(run_dir, "SELECT id, arch_hash, reward FROM children WHERE cached = 0 ORDER BY id")


def test_a_store_that_cannot_be_written_stops_the_search_and_loses_nothing(ray_session, tmp_path):
    """The disk goes read-only under a running search (here: the store's files made immutable).
    The commit that fails stores nothing, the search ends with exit 1 and one line, every row
    committed before is intact, and once the disk is back, --resume finishes the budget."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    path = write_config(tmp_path, **RESUMABLE)
    run_dir = tmp_path / "run"
    env = dict(os.environ, NASPS_TOY_SLEEP="0.2")
    search = subprocess.Popen(NASPS + ["search", "--config", str(path), "--run-dir", str(run_dir),
                                       "--address", ray_session], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    files = [str(run_dir / name) for name in ("results.sqlite", "results.sqlite-wal")]
    try:
        wait_for_rows(run_dir, 6, search)
        locked = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
        if locked.returncode != 0:
            search.kill()
            pytest.skip(f"this file system cannot make a file immutable ({locked.stderr.strip()})")
        before = trained_rows(run_dir)
        _, err = search.communicate(timeout=120)
    finally:
        subprocess.run(["chattr", "-i", *files], capture_output=True)
        if search.poll() is None:
            search.kill()
    assert search.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("nasps: error:")]
    assert len(errors) == 1 and "cannot write the results store" in errors[0] and "Traceback" not in err
    db = sqlite3.connect(run_dir / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert trained_rows(run_dir)[:len(before)] == before

    resumed = nasps("search", "--resume", str(run_dir), "--address", ray_session, env=env)
    assert resumed.returncode == 0, resumed.stderr
    after = trained_rows(run_dir)
    assert len(after) == 16 and len({h for _, h, _ in after}) == 16 and after[:len(before)] == before
