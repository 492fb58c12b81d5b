"""The Ray runtime on a real local Ray: shards, replicas, workers, recorder."""

import sqlite3

import numpy as np
import torch

from nasps.controller import Controller
from nasps.parameter_server import AdamSettings, ParameterShard, join_params, shard_bounds, split_params
from nasps.policies import build_policy
from nasps.runtime.driver import run_search
from nasps.spaces import build_space
from nasps.store import ResultsStore
from tests.conftest import toy_config
from tests.test_serial_search import best_probability


def rows_of(run_dir):
    store = ResultsStore(run_dir / "results.sqlite")
    try:
        return store.children(), store.pushes()
    finally:
        store.close()


def test_distributed_search_stores_every_child_and_counts_pushes(ray_session, tmp_path):
    config = toy_config(cluster={"parameter_servers": 2, "replicas": 2, "children_per_replica": 2,
                                 "cpus_per_child": 0.25},
                        evaluator={"type": "python", "target": "tests.toys:match_fraction_slow"},
                        budget={"children": 24})
    summary = run_search(config, tmp_path / "run")
    rows, pushes = rows_of(tmp_path / "run")
    trained = [r for r in rows if not r.cached]
    assert len(trained) == 24 == summary.progress.trained  # exactly the budget
    assert len({r.arch_hash for r in trained}) == 24  # a repeat is never trained twice
    assert all(r.status == "ok" and r.reward is not None for r in rows)
    assert {r.replica for r in rows} == {0, 1}
    # K*m long-lived workers, each training child after child (data stays resident in them).
    pids = {r.metrics["pid"] for r in trained}
    assert 2 <= len(pids) <= 4 < len(trained)
    # Each shard's version is exactly the number of pushes it applied; nothing applied twice.
    for shard, version in enumerate(summary.shard_versions):
        applied = [p for p in pushes if p[2] == shard and p[6]]
        assert version == len(applied) > 0
        assert sorted(p[4] for p in applied) == list(range(1, version + 1))
    assert all(p[5] == p[4] - 1 - p[3] for p in pushes)  # staleness = version before - pulled
    fed = [r for r in rows if r.staleness is not None]
    assert fed and all(r.staleness >= 0 for r in fed)
    assert all(r.controller_version is not None for r in rows)


def test_retried_push_is_not_applied_twice_by_the_actor(ray_session):
    import ray

    from nasps.runtime.actors import ParameterServerShard
    shard = ParameterServerShard.options(num_cpus=0).remote(0, np.zeros(4, np.float32), AdamSettings(0.1))
    first = ray.get(shard.push.remote("7", 1, np.ones(4, np.float32), 0))
    retry, params, version = ray.get(shard.push_and_pull.remote("7", 1, np.ones(4, np.float32), 0))
    assert first.applied and not retry.applied and version == 1
    np.testing.assert_allclose(params, np.full(4, -0.1), rtol=1e-6)


def test_sharded_update_equals_single_process_update(ray_session):
    """For the same parameters, samples and rewards, S shards end where one shard does."""
    import ray

    from nasps.runtime.actors import ParameterServerShard
    config = toy_config()
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    params = torch.randn(policy.num_params)
    controller = Controller(0, space, policy, config.strategy, 6, seed=3)
    batch, _ = controller.sample(params)
    from nasps.controller import Scored
    scored = [Scored(a, r, i) for i, (a, r) in enumerate(zip(batch.actions, [0.1, 0.9, 0.4, 0.3, 0.8, 0.2]))]
    gradient = controller.gradient(params, scored)
    adam = AdamSettings(0.05)
    single = ParameterShard(0, params, adam)
    single.push("0", 1, gradient, 0)
    bounds = shard_bounds(policy.num_params, 3)
    shards = [ParameterServerShard.options(num_cpus=0).remote(i, p.numpy(), adam)
              for i, p in enumerate(split_params(params, bounds))]
    ray.get([s.push.remote("0", 1, gradient[a:b].numpy(), 0) for s, (a, b) in zip(shards, bounds)])
    joined = join_params([p for p, _ in ray.get([s.pull.remote() for s in shards])])
    torch.testing.assert_close(joined, single.pull()[0])


def test_reinforce_on_ray_learns_the_toy_and_beats_random(ray_session, tmp_path):
    budget = {"children": 100, "max_samples": 300}
    cluster = {"parameter_servers": 2, "replicas": 2, "children_per_replica": 2, "cpus_per_child": 0}
    config = toy_config(strategy={"type": "reinforce", "learning_rate": 0.2, "baseline_decay": 0.9},
                        cluster=cluster, budget=budget)
    summary = run_search(config, tmp_path / "rl")
    assert best_probability(config, summary.params) > 0.9
    random_config = toy_config(strategy={"type": "random"}, cluster=cluster, budget=budget)
    random_summary = run_search(random_config, tmp_path / "random")
    assert random_summary.shard_versions == []  # random search has no parameters to serve
    rl_rows, _ = rows_of(tmp_path / "rl")
    random_rows, _ = rows_of(tmp_path / "random")
    rl_mean = sum(r.reward for r in rl_rows[-100:]) / 100
    random_mean = sum(r.reward for r in random_rows) / len(random_rows)
    assert rl_mean > 0.85 and random_mean < 0.5


def test_failures_and_a_dead_worker_cost_only_their_child(ray_session, tmp_path):
    config = toy_config(strategy={"type": "random"},
                        cluster={"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0},
                        evaluator={"type": "python", "target": "tests.toys:crash_on_a0"},
                        budget={"children": 30})
    summary = run_search(config, tmp_path / "run")
    rows, _ = rows_of(tmp_path / "run")
    trained = [r for r in rows if not r.cached]
    assert len(trained) == 30
    lost = [r for r in trained if r.arch["a"] == 0]
    assert lost and all(r.status == "failed" and r.error.startswith("worker lost") for r in lost)
    assert all(r.status == "ok" for r in trained if r.arch["a"] != 0)
    assert sum(t.replaced_workers for t in summary.timings) == len(lost)


def test_flaky_evaluator_statuses_through_ray(ray_session, tmp_path):
    config = toy_config(strategy={"type": "random"}, cluster={"cpus_per_child": 0},
                        evaluator={"type": "python", "target": "tests.toys:flaky"},
                        budget={"children": 25})
    summary = run_search(config, tmp_path / "run")
    assert summary.progress.trained == 25
    db = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM children WHERE cached = 0 GROUP BY status"))
    db.close()
    assert set(statuses) == {"ok", "failed", "diverged"} and sum(statuses.values()) == 25
