"""nasps.tune: the controller as a Ray Tune searcher, driven through Tune's Searcher API and
by a real Tuner with ASHA."""

import importlib
import random
import statistics
import sys

import numpy as np
import pytest
import torch

from nasps.config import config_from_dict
from nasps.errors import ConfigError, UserInputError
from nasps.spaces import Architecture, build_space
from nasps.tune import NaspsSearcher
from tests.conftest import TOY_SPACE, toy_config
from tests.toys import climb, match_fraction

SPACE = build_space(toy_config().space)


@pytest.fixture(autouse=True)
def one_thread():
    """The policy's tensors are tiny: on a busy machine, torch's thread pool costs more than it
    saves (the runtime's replicas run on one thread for the same reason)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def drive(searcher: NaspsSearcher, trials: int, in_flight: int = 4, seed: int = 0, name: str = "trial") -> list[float]:
    """Tune's calls on a toy objective: up to ``in_flight`` trials at once, finishing in a seeded
    random order, each reporting its match fraction as ``score`` and 1 - that as ``loss``.
    Returns the match fractions in the order the trials finished."""
    order = random.Random(seed)
    running, scores, started = {}, [], 0
    while len(scores) < trials:
        while len(running) < in_flight and started < trials:
            config = searcher.suggest(f"{name}{started}")
            if config is None or config == NaspsSearcher.FINISHED:
                break
            running[f"{name}{started}"] = config
            started += 1
        trial = order.choice(sorted(running))
        score = match_fraction(running.pop(trial)["arch"])
        searcher.on_trial_result(trial, {"score": score, "loss": 1 - score})
        searcher.on_trial_complete(trial, {"score": score, "loss": 1 - score, "done": True})
        scores.append(score)
    return scores


@pytest.mark.parametrize("strategy", [None, {"policy": "lstm"}, {"type": "evolution"}],
                         ids=["default", "lstm", "evolution"])
def test_the_searcher_learns_the_toy_and_beats_random(strategy):
    """200 trials, 4 at a time, an update every 4 results: the last 50 score well above the
    first 50 and above random search through the same searcher (about 0.3)."""
    searcher = NaspsSearcher(TOY_SPACE, strategy, metric="score", mode="max", children_per_update=4)
    learnt = drive(searcher, 200)
    random_search = drive(NaspsSearcher(TOY_SPACE, {"type": "random"}, metric="score", mode="max"), 200)
    first, last, baseline = (statistics.fmean(s) for s in (learnt[:50], learnt[-50:], random_search))
    assert last > first + 0.1 and last > baseline + 0.2, (first, last, baseline)
    assert searcher.updates == (50 if strategy != {"type": "evolution"} else 0)  # evolution: no gradient
    assert len(searcher.outcomes) == 200 and {o.status for o in searcher.outcomes.values()} == {"ok"}


@pytest.mark.parametrize("space", [
    {"type": "conv", "strides": [1, 2], "hyperparameters": [{"name": "learning_rate", "choices": [0.1, 0.01]}],
     "curriculum": {"start_depth": 2, "add_layers": 1, "every_children": 4, "max_depth": 3}},
    {"type": "rnn_cell", "base": 4}], ids=["conv", "rnn_cell"])
def test_every_space_gives_trials_its_architectures(space):
    """Trials of the paper's spaces get that space's architectures and feed updates; a conv
    curriculum deepens with the architectures sampled."""
    searcher = NaspsSearcher(space, {"policy": "lstm"}, metric="score", mode="max", children_per_update=2)
    built = build_space(config_from_dict({"space": space, "evaluator": {"target": "tests.toys:conv_toy"}}).space)
    arches = []
    for trial in range(8):
        arch = searcher.suggest(str(trial))["arch"]
        built.encode(Architecture.from_value(space["type"], arch))  # raises if not the space's
        searcher.on_trial_complete(str(trial), {"score": 0.5, "done": True})
        arches.append(arch)
    assert searcher.updates == 4
    if space["type"] == "conv":
        assert [len(a["layers"]) for a in arches] == [2, 2, 2, 2, 3, 3, 3, 3]


def test_mode_min_learns_from_the_negated_metric():
    searcher = NaspsSearcher(TOY_SPACE, metric="loss", mode="min", children_per_update=4)
    learnt = drive(searcher, 200)
    assert statistics.fmean(learnt[-50:]) > statistics.fmean(learnt[:50]) + 0.1
    assert sorted(o.reward for o in searcher.outcomes.values()) == sorted(s - 1 for s in learnt)


def test_stopped_errored_and_silent_trials():
    """A trial a scheduler stopped enters with its last score (Tune marks it done); one that
    errored (even after reporting), never reported the metric or reported a NaN is a failure,
    which enters with failure_reward (left out when it is null)."""
    searcher = NaspsSearcher(TOY_SPACE, {"failure_reward": 0.0}, metric="score", mode="max",
                             children_per_update=4)
    for trial in "abcd":
        searcher.suggest(trial)
    searcher.on_trial_result("a", {"score": 0.25})
    searcher.on_trial_complete("a", {"score": 0.5, "done": True})
    searcher.on_trial_result("b", {"score": 0.75})
    searcher.on_trial_complete("b", error=True)
    searcher.on_trial_complete("c", {"other": 1.0, "done": True})
    searcher.on_trial_complete("d", {"score": float("nan"), "done": True})
    searcher.on_trial_complete("d", {"score": 1.0, "done": True})  # told twice: the first counts
    searcher.suggest("e")
    searcher.on_trial_complete("e", {"score": "high", "done": True})
    assert [(o.status, o.reward, o.error) for o in searcher.outcomes.values()] == [
        ("ok", 0.5, None), ("failed", None, "the trial raised an error"),
        ("failed", None, "no 'score' in its results"), ("diverged", None, "score is nan"),
        ("failed", None, "score is 'high', not a number")]
    # One update from the first four, in the order they finished: rewards 0.5, 0, 0, 0.
    assert searcher.updates == 1 and searcher.controller.baseline == pytest.approx(0.5 * 0.95 ** 3)
    left_out = NaspsSearcher(TOY_SPACE, metric="score", mode="max", children_per_update=2)
    for trial in "ab":
        left_out.suggest(trial)
    left_out.on_trial_complete("a", error=True)
    left_out.on_trial_complete("b", {"done": True})
    assert left_out.updates == 0 and len(left_out.outcomes) == 2  # nothing to learn from


def test_barrier_rounds_wait_for_the_whole_round_and_max_trials_ends_the_search():
    searcher = NaspsSearcher(TOY_SPACE, metric="score", mode="max", children_per_update=3, rounds="barrier",
                             max_trials=5)
    configs = [searcher.suggest(t) for t in "abc"]
    assert searcher.suggest("d") is None  # the round is out: Tune asks again later
    for trial, config in zip("ab", configs):
        searcher.on_trial_complete(trial, {"score": match_fraction(config["arch"]), "done": True})
    assert searcher.suggest("d") is None and searcher.updates == 0
    searcher.on_trial_complete("c", {"score": match_fraction(configs[2]["arch"]), "done": True})
    assert searcher.updates == 1
    last = [searcher.suggest(t) for t in "de"]  # the budget's last two: a round of two
    assert searcher.suggest("f") == NaspsSearcher.FINISHED
    for trial, config in zip("de", last):
        searcher.on_trial_complete(trial, {"score": match_fraction(config["arch"]), "done": True})
    assert searcher.updates == 2


def test_save_and_restore_continue_the_same_search(tmp_path):
    """A searcher restored mid-search (screening on, trials in flight, results not learnt from,
    samples not handed out) goes on exactly as the one that was saved."""
    def new():
        return NaspsSearcher(TOY_SPACE, {"policy": "lstm"}, children_per_update=3, seed=5)
    searcher = new()
    searcher.set_search_properties("score", "max", {"epochs": 3}, num_samples=20)
    drive(searcher, 12)  # screening starts after 10
    searcher.suggest("x"), searcher.suggest("y")
    assert searcher.updates == 4 and searcher.running.keys() == {"x", "y"} and len(searcher.queue) == 1
    searcher.on_trial_complete("x", {"score": 0.5, "done": True})
    searcher.on_trial_result("y", {"score": np.float32(0.25)})  # numpy's numbers are numbers too
    searcher.save(str(tmp_path / "searcher.pt"))
    restored = new()
    restored.restore(str(tmp_path / "searcher.pt"))
    assert (restored.metric, restored.mode) == ("score", "max")  # from the checkpoint
    torch.testing.assert_close(restored.params, searcher.params)
    # Screening passes over the same architectures: those trained, and those still out.
    assert list(restored.controller.proposed) == list(searcher.controller.proposed) != []
    for s in (searcher, restored):
        s.on_trial_complete("y")  # ended with no result of its own (a paused trial): its last score counts
        assert s.outcomes["y"].reward == 0.25
        drive(s, 30, seed=1, name="later")
    assert restored.updates == searcher.updates == 14 and len(searcher.outcomes) == 44  # 3 results an update
    assert restored.outcomes == searcher.outcomes
    torch.testing.assert_close(restored.params, searcher.params)
    other = NaspsSearcher(TOY_SPACE, {"policy": "factorized"}, children_per_update=3, seed=5)
    with pytest.raises(UserInputError, match=r"another strategy\.policy \('lstm', not 'factorized'\)"):
        other.restore(str(tmp_path / "searcher.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserInputError, match="junk.pt: not a readable NaspsSearcher checkpoint"):
        new().restore(str(tmp_path / "junk.pt"))


@pytest.mark.parametrize("space, strategy, kwargs, message", [
    ({"type": "categorical"}, None, {}, "space.decisions: missing required key (the decisions, in the order the "
                                        "policy makes them)"),
    (TOY_SPACE, {"policy": "lstmm"}, {}, "strategy.policy: must be one of factorized, lstm; got 'lstmm'"),
    (TOY_SPACE, {"type": "evolve"}, {}, "strategy.type: must be one of reinforce, random, evolution; got 'evolve'"),
    (TOY_SPACE, {"learning_rat": 0.1}, {},
     "strategy.learning_rat: unknown key (did you mean 'strategy.learning_rate'?)"),
    (TOY_SPACE, {"type": "evolution", "sample_size": 20}, {},
     "strategy.sample_size: 20 is more than the population (10)"),
    (TOY_SPACE, None, {"children_per_update": 0}, "children_per_update: must be >= 1, got 0"),
    (TOY_SPACE, None, {"rounds": "lockstep"}, "rounds: must be one of rolling, barrier; got 'lockstep'"),
    (TOY_SPACE, None, {"mode": "maximise"}, "mode: must be min or max, got 'maximise'"),
])
def test_bad_input_is_one_line_naming_the_key(space, strategy, kwargs, message):
    with pytest.raises(ConfigError) as info:
        NaspsSearcher(space, strategy, **kwargs)
    assert str(info.value) == message


def test_config_dataclasses_are_accepted_and_a_missing_metric_is_one_line():
    config = toy_config(strategy={"type": "reinforce", "policy": "lstm"})
    searcher = NaspsSearcher(config.space, config.strategy)
    assert searcher.config.strategy == config.strategy
    with pytest.raises(UserInputError, match="no metric and mode to learn from; pass metric= and mode="):
        searcher.suggest("a")


def test_without_ray_tune_the_import_names_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n == "ray.tune" or n.startswith("ray.tune.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    monkeypatch.delitem(sys.modules, "nasps.tune")
    with pytest.raises(ImportError) as info:
        importlib.import_module("nasps.tune")
    assert str(info.value) == "nasps.tune needs the tune extra: pip install 'nasps[tune]'"


def test_a_tuner_with_asha_learns_from_every_trial(ray_session, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    searcher = NaspsSearcher(TOY_SPACE, children_per_update=4, max_trials=8)
    initial = searcher.params
    tuner = tune.Tuner(
        climb, param_space={"epochs": 4},
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max", num_samples=8,
                                    scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2),
                                    reuse_actors=True),  # a new actor per trial costs seconds each
        run_config=tune.RunConfig(name="toy", storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 8 and not results.errors
    for result in results:
        SPACE.encode(Architecture.from_value("categorical", result.config["arch"]))  # raises if not the space's
        assert result.config["epochs"] == 4  # the param_space's constants reach every trial
    stopped = [r for r in results if r.metrics["training_iteration"] < 4]
    assert stopped, "ASHA stopped no trial: the toy's rewards should spread them"
    # Every trial, those ASHA stopped included, entered with its last score.
    assert {trial: (o.status, o.reward) for trial, o in searcher.outcomes.items()} == \
        {r.metrics["trial_id"]: ("ok", r.metrics["score"]) for r in results}
    assert all(r.metrics["score"] < match_fraction(r.config["arch"]) for r in stopped if r.metrics["score"])
    assert searcher.updates == 2 and not torch.equal(searcher.params, initial)
    # Tune saved the searcher with its experiment: a fresh one continues from that.
    restored = NaspsSearcher(TOY_SPACE, children_per_update=4, max_trials=8)
    restored.restore_from_dir(str(tmp_path / "toy"))
    assert restored.updates == 2 and restored.outcomes == searcher.outcomes
    # The space is the searcher's: Tune refuses search values of a param_space of its own.
    with pytest.raises(ValueError, match="unresolved parameters"):
        tune.Tuner(climb, param_space={"epochs": tune.choice([2, 4])},
                   tune_config=tune.TuneConfig(search_alg=NaspsSearcher(TOY_SPACE), metric="score", mode="max"),
                   run_config=tune.RunConfig(name="refused", storage_path=str(tmp_path), verbose=0)).fit()
