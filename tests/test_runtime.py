"""The Ray runtime on a real local Ray: shards, replicas, workers, recorder."""

import sqlite3
import time

import numpy as np
import torch

from nasps.method.controller import Controller
from nasps.method.parameter_server import AdamSettings, ParameterShard, join_params, shard_bounds, split_params
from nasps.method.serial import run_serial
from nasps.policies import build_policy
from nasps.runtime.driver import run_search
from nasps.spaces import build_space
from nasps.state.store import ResultsStore
from tests.conftest import query, toy_config
from tests.test_serial_search import best_probability
from tests.toys import match_fraction


def rows_of(run_dir):
    store = ResultsStore(run_dir / "results.sqlite")
    try:
        return store.children(), store.pushes()
    finally:
        store.close()


# The toy's decisions with fewer choices: 32 architectures, the toy's best among them.
SMALL_SPACE = {"type": "categorical", "decisions": [
    {"name": "a", "choices": [0, 1, 2, 3]}, {"name": "b", "choices": ["x", "y"]},
    {"name": "c", "choices": [0.5, 0.9]}, {"name": "d", "choices": [3, 4]}]}


def test_distributed_search_stores_every_child_and_counts_pushes(ray_session, tmp_path):
    config = toy_config(cluster={"parameter_servers": 2, "replicas": 2, "children_per_replica": 2,
                                 "cpus_per_child": 0.25,
                                 "runtime_env": {"env_vars": {"NASPS_TOY_DIR": str(tmp_path)}}},
                        evaluator={"type": "python", "target": "tests.toys:match_fraction_counted"},
                        # 24 distinct children of a space of 32 come with repeats (without any, 24
                        # uniform draws do 5e-6 of the time), and those repeats must not be trained.
                        # Screening would pass over trained architectures; a slow policy keeps the
                        # draws spread (a fast one converges and hits the sample cap first).
                        space=SMALL_SPACE,
                        strategy={"type": "reinforce", "learning_rate": 0.02, "screening": {"candidates": 1}},
                        budget={"children": 24})
    summary = run_search(config, tmp_path / "run")
    rows, pushes = rows_of(tmp_path / "run")
    trained = [r for r in rows if not r.cached]
    assert len(trained) == 24 == summary.progress.trained  # exactly the budget
    assert len({r.arch_hash for r in trained}) == 24  # a repeat is never trained twice
    # The evaluator ran once per trained row: a repeat (a cached row) never reached a worker.
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == len(set(calls)) == 24 and len(rows) > 24
    assert all(r.status == "ok" and r.reward is not None for r in rows)
    assert {r.replica for r in rows} == {0, 1}
    # K*m long-lived workers, each training child after child (data stays resident in them).
    pids = {r.metrics["pid"] for r in trained}
    assert 2 <= len(pids) <= 4 < len(trained)
    # Each shard's version is exactly the number of pushes it applied; nothing applied twice.
    for shard, version in enumerate(summary.shard_versions):
        applied = [p for p in pushes if p.shard == shard and p.applied]
        assert version == len(applied) > 0
        assert sorted(p.version for p in applied) == list(range(1, version + 1))
    assert all(p.staleness == p.version - 1 - p.version_pulled for p in pushes)  # version before - pulled
    fed = [r for r in rows if r.staleness is not None]
    assert fed and all(r.staleness >= 0 for r in fed)
    assert all(r.controller_version is not None for r in rows)


def test_retried_push_is_not_applied_twice_by_the_actor(ray_session):
    import ray

    from nasps.runtime.shard import ParameterServerShard
    shard = ParameterServerShard.options(num_cpus=0).remote(0, np.zeros(4, np.float32), AdamSettings(0.1))
    first = ray.get(shard.push.remote("7", 1, np.ones(4, np.float32), 0))
    retry, params, version = ray.get(shard.push_and_pull.remote("7", 1, np.ones(4, np.float32), 0))
    assert first.applied and not retry.applied and version == 1
    np.testing.assert_allclose(params, np.full(4, -0.1), rtol=1e-6)


def test_a_replica_pushes_only_after_the_rows_of_its_rewards_are_committed(ray_session, tmp_path):
    """While another process holds the store's write lock, the replica's children finish but
    their commit cannot: no shard may move until the lock is released and the rows exist."""
    import ray

    from nasps.method.serial import adam_settings
    from nasps.runtime.recorder import Recorder
    from nasps.runtime.replica import ControllerReplica
    from nasps.runtime.shard import ParameterServerShard
    from nasps.state.rundir import open_new_store

    config = toy_config(evaluator={"type": "python", "target": "tests.toys:sleep_then_score"},
                        cluster={"parameter_servers": 2, "replicas": 1, "children_per_replica": 2,
                                 "cpus_per_child": 0, "runtime_env": {"env_vars": {"NASPS_TOY_SLEEP": "1.0"}}},
                        budget={"children": 4})
    run_dir = tmp_path / "run"
    open_new_store(run_dir, config).close()
    store_path = run_dir / "results.sqlite"
    recorder = Recorder.options(num_cpus=0).remote(str(store_path), 4, 1000)
    policy = build_policy(config.strategy, build_space(config.space).decisions())
    bounds = shard_bounds(policy.num_params, 2)
    shards = [ParameterServerShard.options(num_cpus=0).remote(i, p, adam_settings(config))
              for i, p in enumerate(split_params(policy.initial_params(0), bounds))]
    replica = ControllerReplica.options(num_cpus=0).remote(
        0, config, shards, bounds, recorder, {"num_cpus": 0, "runtime_env": config.cluster.runtime_env})
    ray.get(replica.ready.remote())
    run = replica.run.remote()
    deadline = time.time() + 60
    while not query(run_dir, "SELECT COUNT(*) FROM pending")[0][0] and time.time() < deadline:
        time.sleep(0.02)  # the first round is admitted; its children sleep a second
    lock = sqlite3.connect(store_path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the recorder's commits now wait for this lock
    try:
        time.sleep(3.0)  # the children finish meanwhile; their commit cannot
        assert query(run_dir, "SELECT COUNT(*) FROM children")[0][0] == 0
        assert [ray.get(s.pull.remote())[1] for s in shards] == [0, 0]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    ray.get(run, timeout=60)
    rows = query(run_dir, "SELECT COUNT(*) FROM children WHERE cached = 0")[0][0]
    assert rows == 4 and all(ray.get(s.pull.remote())[1] >= 1 for s in shards)


def test_a_replaced_replica_keeps_its_rows_but_its_commit_fails(ray_session, tmp_path):
    """The commit of a replica already replaced fails once its rows are kept: it never learns
    from children its successor trains again."""
    import pytest
    import ray

    from nasps.evaluators import ChildResult
    from nasps.runtime.recorder import Recorder
    from nasps.spaces import Architecture
    from nasps.state.rundir import open_new_store

    config = toy_config(budget={"children": 4})
    open_new_store(tmp_path / "run", config).close()
    recorder = Recorder.options(num_cpus=0).remote(str(tmp_path / "run" / "results.sqlite"), 4, 100)
    arch = Architecture.from_value("categorical", {"a": 1})
    ray.get(recorder.admit.remote([arch], 0, 0))
    ray.get(recorder.replica_lost.remote(0))  # replica 0 is replaced while it trains the child
    now = time.time()
    with pytest.raises(ray.exceptions.RayTaskError, match="StaleReplicaError"):
        ray.get(recorder.record.remote([(arch, ChildResult("ok", 0.5, {}, None, "w", now, now), 0)], 0, 0))
    assert query(tmp_path / "run", "SELECT reward FROM children") == [(0.5,)]


def test_sharded_update_equals_single_process_update(ray_session):
    """For the same parameters, samples and rewards, S shards end where one shard does."""
    import ray

    from nasps.runtime.shard import ParameterServerShard
    config = toy_config()
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    params = torch.randn(policy.num_params)
    controller = Controller(0, space, policy, config.strategy, 6, seed=3)
    batch, _ = controller.sample(params)
    from nasps.method.controller import Scored
    scored = [Scored(a, r, i) for i, (a, r) in enumerate(zip(batch.actions, [0.1, 0.9, 0.4, 0.3, 0.8, 0.2]))]
    gradient = controller.gradient(params, scored)
    adam = AdamSettings(0.05)
    single = ParameterShard(0, params, adam)
    single.push("0", 1, gradient, 0)
    bounds = shard_bounds(policy.num_params, 3)
    shards = [ParameterServerShard.options(num_cpus=0).remote(i, p, adam)
              for i, p in enumerate(split_params(params, bounds))]
    ray.get([s.push.remote("0", 1, gradient[a:b].numpy(), 0) for s, (a, b) in zip(shards, bounds)])
    joined = join_params([p for p, _ in ray.get([s.pull.remote() for s in shards])])
    np.testing.assert_allclose(joined, single.pull()[0], rtol=1.3e-6, atol=1e-5)


def test_reinforce_on_ray_learns_the_toy_and_beats_random(ray_session, tmp_path):
    budget = {"children": 100, "max_samples": 300}
    cluster = {"parameter_servers": 2, "replicas": 2, "children_per_replica": 2, "cpus_per_child": 0}
    config = toy_config(strategy={"type": "reinforce", "learning_rate": 0.2, "baseline_decay": 0.9},
                        cluster=cluster, budget=budget)
    summary = run_search(config, tmp_path / "rl")
    assert best_probability(config, summary.params) > 0.9
    # The reference: random search by the serial loop (random search on Ray: tests/test_faults.py).
    run_serial(toy_config(strategy={"type": "random"}, budget=budget), tmp_path / "random")
    rl_rows, _ = rows_of(tmp_path / "rl")
    random_rows, _ = rows_of(tmp_path / "random")
    rl_mean = sum(r.reward for r in rl_rows[-100:]) / 100
    random_mean = sum(r.reward for r in random_rows) / len(random_rows)
    assert rl_mean > 0.85 and random_mean < 0.5


def test_failures_and_a_dead_worker_cost_only_their_child(ray_session, tmp_path):
    config = toy_config(strategy={"type": "random"},
                        cluster={"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0},
                        evaluator={"type": "python", "target": "tests.toys:fails_every_way"},
                        budget={"children": 30, "max_consecutive_failures": None})  # most children fail
    summary = run_search(config, tmp_path / "run")
    rows, _ = rows_of(tmp_path / "run")
    trained = [r for r in rows if not r.cached]
    assert len(trained) == 30 == summary.progress.trained
    lost = [r for r in trained if r.arch["a"] == 0]
    # Each dies once, is retried once on a new worker (cluster.max_retries 1), dies again: failed.
    assert lost and all(r.status == "failed" and r.error.startswith("worker lost 2 time(s)") for r in lost)
    for r in trained:
        if r.arch["a"] == 0:
            continue
        if r.arch["a"] == 1:
            assert r.status == "diverged" and r.error == "reward is nan"
        elif r.arch["a"] == 3:
            assert r.status == "failed" and r.error.startswith("TypeError: evaluator returned 'not a number'")
        elif r.arch["b"] == "x":
            assert r.status == "failed" and r.error == "ValueError: b = x is not supported with a = 2"
        elif r.arch["a"] == 2:
            assert r.status == "ok" and r.reward == match_fraction(r.arch)
    assert {r.status for r in trained} == {"ok", "failed", "diverged"}
    # A child queued behind another may kill its worker before the reply of the one before it is
    # out; neither is blamed, the replica queues no more children behind others, and the killer
    # costs one more worker: at most one more for each child that was queued then (K*m = 4).
    replaced = sum(t.replaced_workers for t in summary.replicas)
    assert 2 * len(lost) <= replaced <= 2 * len(lost) + 4


def test_curriculum_grows_across_replicas_and_is_recorded(ray_session, tmp_path):
    from nasps.config import config_from_dict
    space_raw = {"type": "conv", "num_filters": [8, 16],
                 "curriculum": {"start_depth": 1, "add_layers": 1, "every_children": 8, "max_depth": 3}}
    config = config_from_dict({
        "space": space_raw, "evaluator": {"type": "python", "target": "tests.toys:conv_toy"},
        "strategy": {"type": "reinforce", "policy": "lstm"},
        "cluster": {"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0},
        "budget": {"children": 40}})
    run_search(config, tmp_path / "run")
    rows, _ = rows_of(tmp_path / "run")
    assert all(r.depth == len(r.arch["layers"]) for r in rows)
    by_order = sorted(rows, key=lambda r: r.id)
    assert by_order[0].depth == 1 and by_order[-1].depth == 3
    # A replica learns the count of samples from the previous round's admission, so a depth can
    # lag by at most one round of the K*m = 4 children in flight.
    for position, row in enumerate(by_order):
        assert row.depth <= space_depth(config, position + 4)


def space_depth(config, samples):
    return build_space(config.space).depth_at(samples)
