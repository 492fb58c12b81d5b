"""The reference loop learns: on a toy objective with one best architecture, REINFORCE puts
more than 0.9 probability on it within a stated budget and beats random search."""

import statistics

import pytest
import torch

from nasps.method.serial import run_serial
from nasps.policies import build_policy
from nasps.spaces import Architecture, build_space
from nasps.state.store import ResultsStore
from tests.conftest import toy_config
from tests.toys import TARGET

SAMPLES = 300  # stated budget: 300 sampled architectures (cached repeats included)


def best_probability(config, params) -> float:
    """P(the toy's one best architecture) under the config's policy at ``params``."""
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    best = space.encode(Architecture.from_value("categorical", TARGET))
    log_prob, _ = policy.log_probs(torch.as_tensor(params), [best])
    return float(log_prob.exp())


def run(tmp_path, strategy, seed):
    config = toy_config(strategy=strategy, budget={"children": 100, "max_samples": SAMPLES}, seed=seed)
    progress, shard = run_serial(config, tmp_path / f"{strategy['type']}-{seed}")
    store = ResultsStore(tmp_path / f"{strategy['type']}-{seed}" / "results.sqlite")
    rows = store.children()
    store.close()
    return config, shard, progress, rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_finds_the_best_and_beats_random(tmp_path, seed):
    config, shard, progress, rows = run(tmp_path, {"type": "reinforce", "learning_rate": 0.2,
                                                   "baseline_decay": 0.9}, seed)
    assert best_probability(config, shard.pull()[0]) > 0.9
    assert progress.samples == SAMPLES and len(rows) == SAMPLES
    assert shard.version == SAMPLES  # m = 1: one push per sample, every reward fed the gradient

    _, _, random_progress, random_rows = run(tmp_path, {"type": "random"}, seed)
    # Random search spends its budget on distinct architectures (100 of 144), learning nothing.
    assert random_progress.trained == 100
    reinforce_mean = statistics.fmean(r.reward for r in rows[-100:])
    random_mean = statistics.fmean(r.reward for r in random_rows)
    assert reinforce_mean > 0.9 > 0.5 > random_mean
    # And it needs fewer trained children to first meet the best architecture.
    first_best = [r for r in rows if r.reward == 1.0][0]
    random_best = [r for r in random_rows if r.reward == 1.0]
    trained_before = sum(1 for r in rows if not r.cached and r.id <= first_best.id)
    random_before = random_best[0].id if random_best else 101
    assert trained_before < random_before or trained_before <= 20


def test_failed_children_are_rows_and_skip_the_gradient(tmp_path):
    config = toy_config(evaluator={"type": "python", "target": "tests.toys:flaky"},
                        budget={"children": 30}, strategy={"type": "random"})
    progress, _ = run_serial(config, tmp_path / "run")
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    by_status = {}
    for r in store.children():
        by_status.setdefault(r.status, []).append(r)
    store.close()
    assert set(by_status) == {"ok", "failed", "diverged"}
    assert all(r.reward is None and "a = 0" in r.error for r in by_status["failed"] if r.arch["a"] == 0)
    assert all("not a number" in r.error for r in by_status["failed"] if r.arch["a"] == 3)
    assert all(r.reward is None and r.arch["a"] == 1 for r in by_status["diverged"])
    assert progress.trained == 30


def test_failure_reward_feeds_failures_into_the_gradient(tmp_path):
    base = dict(evaluator={"type": "python", "target": "tests.toys:flaky"}, budget={"children": 12})
    _, skipping = run_serial(toy_config(**base), tmp_path / "skip")
    _, feeding = run_serial(toy_config(**base, strategy={"type": "reinforce", "learning_rate": 0.2,
                                                         "failure_reward": 0.0}), tmp_path / "feed")
    store = ResultsStore(tmp_path / "skip" / "results.sqlite")
    ok_rows, all_rows = store.count("status = 'ok'"), store.count()
    store.close()
    assert skipping.version == ok_rows < all_rows  # m = 1: a push for each ok child only
    store = ResultsStore(tmp_path / "feed" / "results.sqlite")
    assert feeding.version == store.count() > store.count("status = 'ok'")
    store.close()


@pytest.mark.parametrize("repeats", [True, False])
def test_repeats_feed_the_gradient_only_when_asked(tmp_path, repeats):
    """A cached row is a real sample of the policy; with learn_from_repeats off it is kept out of
    the gradient (its staleness stays null, and no push is made for it)."""
    strategy = {"type": "reinforce", "learning_rate": 0.3, "learn_from_repeats": repeats}
    config = toy_config(strategy=strategy, budget={"children": 40, "max_samples": 150})
    _, shard = run_serial(config, tmp_path / "run")
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    rows = store.children()
    store.close()
    cached = [r for r in rows if r.cached]
    assert len(cached) > 20  # the policy converges and repeats itself
    assert all((r.staleness is not None) == repeats for r in cached)
    assert all(r.staleness is not None for r in rows if not r.cached)
    assert shard.version == (len(rows) if repeats else len(rows) - len(cached))  # m = 1
