"""Early stopping of children: thresholds from the store's curves, each kind of child stopping
where they say, statuses and rewards, the runtime and the report."""

import logging

import pytest
import torch

from nasps.config import config_from_dict
from nasps.evaluators import ChildResult, build_evaluator, run_child
from nasps.evaluators.image import reward_of
from nasps.evaluators.python import _takes_two_arguments
from nasps.method.controller import Controller
from nasps.method.serial import run_serial
from nasps.policies import build_policy
from nasps.spaces import Architecture, build_space
from nasps.state.ledger import Ledger, Outcome, quantile
from nasps.state.rundir import open_new_store
from nasps.state.store import ResultsStore
from nasps.views.report import format_report, summarize
from tests.conftest import TOY_SPACE, query, toy_config
from tests.toys import TARGET

RULE = {"grace_epochs": 2, "keep_quantile": 0.5, "min_children": 3}
CURVE = {"type": "python", "target": "tests.toys:learning_curve"}


def toy(**arch):
    return Architecture.from_value("categorical", {**TARGET, **arch})


def test_quantiles_interpolate_between_the_nearest_two():
    assert quantile([0.2, 0.4, 0.6, 0.8], 0.5) == pytest.approx(0.5)
    assert quantile([0.2, 0.4, 0.6, 0.8], 0.25) == pytest.approx(0.35)
    assert quantile([0.5, 0.7, 0.9], 0.5) == 0.7 and quantile([3.0], 0.9) == 3.0


def test_thresholds_from_the_stores_curves_worked_out_by_hand_and_after_a_resume(tmp_path):
    config = toy_config(evaluator={**CURVE, "early_stopping": RULE})
    store = open_new_store(tmp_path / "run", config)
    ledger = Ledger(store, 10, 100, early_stopping=config.evaluator.early_stopping)
    curves = [("ok", [[1, 0.1], [2, 0.4], [3, 0.5]]), ("ok", [[1, 0.3], [2, 0.2], [3, 0.9]]),
              ("stopped", [[1, 0.2], [2, 0.6]]), ("ok", [[1, 0.5], [2, 0.8], [3, 0.7]]),
              ("failed", [[1, 9.0], [2, 9.0], [3, 9.0]])]  # a failed child's curve counts for nothing
    for a, (status, curve) in enumerate(curves):
        arch = toy(a=a % 4, d=1 + a // 4)
        assert ledger.admit([arch])[0].kind == "run"
        reward = None if status == "failed" else curve[-1][1]
        ledger.record(arch, ChildResult(status, reward, {"curve": curve}, None, "w", 0.0, 1.0), 0, None)
    # Epoch 1 is within the grace. Epoch 2: the median of 0.2, 0.4, 0.6, 0.8 is 0.5. Epoch 3:
    # of 0.5, 0.9, 0.7 (the stopped child never had a score there), 0.7.
    assert ledger.thresholds() == {None: pytest.approx({2: 0.5, 3: 0.7})}  # no curriculum: one depth
    # A repeat reuses a stopped child's result, and adds no curve.
    assert ledger.admit([toy(a=2, d=1)])[0].kind == "cached"
    ledger.close()
    # Rebuilt from the store, as a resumed search's ledger is.
    again = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 10, 100,
                   early_stopping=config.evaluator.early_stopping)
    assert again.thresholds() == {None: pytest.approx({2: 0.5, 3: 0.7})}
    # Fewer than min_children at an epoch: no threshold there; no rule: none anywhere.
    strict = config_from_dict({"space": TOY_SPACE,
                               "evaluator": {**CURVE, "early_stopping": {**RULE, "min_children": 4}}})
    again.early_stopping = strict.evaluator.early_stopping
    assert again.thresholds() == {None: pytest.approx({2: 0.5})}
    again.early_stopping = None
    assert again.thresholds() == {}
    again.close()


def test_children_are_held_to_the_thresholds_of_their_own_depth(tmp_path):
    """A depth curriculum's deeper children come later and learn at another pace: each depth has
    its own thresholds, from its own children, once min_children of them have a score."""
    config = toy_config(evaluator={**CURVE, "early_stopping": RULE})
    store = open_new_store(tmp_path / "run", config)
    ledger = Ledger(store, 10, 100, early_stopping=config.evaluator.early_stopping)
    shallow = [[[1, 0.1], [2, 0.2]], [[1, 0.2], [2, 0.3]], [[1, 0.3], [2, 0.4]], [[1, 0.4], [2, 0.6]]]
    deep = [[[1, 0.5], [2, 0.7]], [[1, 0.6], [2, 0.9]], [[1, 0.7], [2, 0.8]]]
    for depth, curves in ((2, shallow), (3, deep)):
        for a, curve in enumerate(curves):
            arch = Architecture.from_value("categorical", {**TARGET, "a": a, "d": depth}, depth=depth)
            assert ledger.admit([arch])[0].kind == "run"
            ledger.record(arch, ChildResult("ok", curve[-1][1], {"curve": curve}, None, "w", 0.0, 1.0), 0, None)
    # Depth 2: the median of 0.2, 0.3, 0.4, 0.6 is 0.35; depth 3: of 0.7, 0.9, 0.8, 0.8. All seven
    # together have 0.6: a depth-2 child at 0.5 would stop and a depth-3 child at 0.65 go on; by
    # depth it is the other way round.
    expected = {2: pytest.approx({2: 0.35}), 3: pytest.approx({2: 0.8})}
    assert ledger.thresholds() == expected
    ledger.close()
    again = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 10, 100,
                   early_stopping=config.evaluator.early_stopping)
    assert again.thresholds() == expected  # a resume rebuilds them from the store's depths
    again.close()


def test_a_resumed_board_counts_a_stopped_child_among_the_best(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    for a, (status, reward) in enumerate([("ok", 0.5), ("stopped", 0.8), ("failed", None)]):
        arch = toy(a=a)
        store.add_child(arch_json=arch.json_text, arch_hash=arch.hash, status=status, reward=reward, metrics={},
                        error=None, cached_from=None, replica=0, controller_version=0, worker="w",
                        started_at=0.0, finished_at=1.0)
    assert store.best_reward(up_to=3) == 0.8
    store.close()


def python_evaluator(early_stopping=RULE, target=CURVE["target"]):
    return build_evaluator(config_from_dict({"space": TOY_SPACE, "evaluator": {
        "type": "python", "target": target, "early_stopping": early_stopping}}).evaluator)


def test_a_python_evaluator_told_to_stop_stops_with_the_score_it_has():
    result = run_child(python_evaluator(), toy(), {3: 0.9})  # at step 3 it scores 0.3
    assert (result.status, result.reward) == ("stopped", pytest.approx(0.3))
    assert [e for e, _ in result.metrics["curve"]] == [1, 2, 3]
    assert [s for _, s in result.metrics["curve"]] == pytest.approx([0.1, 0.2, 0.3])
    assert result.metrics["epochs"] == 3
    # Above every threshold: it trains to the end.
    result = run_child(python_evaluator(), toy(), {3: 0.1, 5: 0.5})
    assert (result.status, result.reward, len(result.metrics["curve"])) == ("ok", pytest.approx(1.0), 10)
    # Early stopping off: report() never says stop, and nothing is added to the metrics.
    result = run_child(python_evaluator(None), toy(), {3: 0.9})
    assert (result.status, result.reward) == ("ok", pytest.approx(1.0)) and "curve" not in result.metrics


def test_a_one_argument_function_is_called_as_before_and_the_worker_says_it_cannot_be_stopped(caplog):
    with caplog.at_level(logging.WARNING):
        evaluator = python_evaluator(target="tests.toys:match_fraction")
    assert "takes one argument, so no child can be stopped early" in caplog.text
    result = run_child(evaluator, toy(), {3: 0.9})
    assert (result.status, result.reward, result.metrics) == ("ok", 1.0, {})


def test_which_functions_are_given_report():
    def one(arch): ...
    def two(arch, report): ...
    def with_default(arch, scale=2.0): ...
    def named_report(arch, report=None): ...
    def star(*args): ...
    assert [_takes_two_arguments(f) for f in (one, two, with_default, named_report, star, len)] == \
        [False, True, False, True, True, False]


def image_evaluator(**settings):
    raw = {"type": "image_classification", "epochs": 4, "batch_size": 64, "crop_padding": 1, "flip": False,
           "learning_rate": 0.05, "early_stopping": RULE, **settings}
    return build_evaluator(config_from_dict({"space": {"type": "conv"}, "evaluator": raw}).evaluator)


def test_an_image_child_below_the_threshold_stops_after_that_epoch_with_its_partial_reward():
    torch.set_num_threads(1)
    layer = {"type": "conv", "filter_height": 3, "filter_width": 3, "num_filters": 16, "stride": 1}
    layers = [{**layer, "inputs": [i - 1] if i else []} for i in range(3)]
    arch = Architecture.from_value("conv", {"layers": layers, "hyperparameters": {}})
    result = run_child(image_evaluator(), arch, {1: 0.0, 2: 1.01, 3: 0.0})
    assert result.status == "stopped", result.error
    m = result.metrics
    assert (m["epochs"], m["planned_epochs"], len(m["val_accuracies"])) == (2, 4, 2)
    assert m["curve"] == [[1, m["val_accuracies"][0]], [2, m["val_accuracies"][1]]]
    assert result.reward == pytest.approx(reward_of("accuracy_cubed_last5", m["val_accuracies"]))
    assert m["best_val_accuracy"] > 0.3  # it learned in its two epochs (chance is 0.1)
    # Off, the same thresholds change nothing: all four epochs, no curve.
    result = run_child(image_evaluator(early_stopping=None), arch, {2: 1.01})
    assert (result.status, result.metrics["epochs"], "curve" in result.metrics) == ("ok", 4, False)


def test_a_language_model_child_stops_on_the_reward_its_perplexity_gives(tmp_path):
    torch.set_num_threads(1)
    (tmp_path / "t.txt").write_text("abc abd bca cab " * 150)
    config = config_from_dict({
        "space": {"type": "rnn_cell", "base": 2},
        "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(tmp_path / "t.txt")},
                      "epochs": 3, "hidden_size": 16, "bptt": 20, "batch_size": 16, "dropout": 0.0,
                      "early_stopping": {"grace_epochs": 1}}})
    arch = build_space(config.space).decode([0, 1, 1, 3, 0, 1, 0, 0, 1, 1])
    result = run_child(build_evaluator(config.evaluator), arch, {1: 1e9})
    assert result.status == "stopped", result.error
    ppl = result.metrics["val_perplexities"]
    assert len(ppl) == 1 and result.metrics["epochs"] == 1 and result.metrics["planned_epochs"] == 3
    assert result.metrics["curve"] == [[1, pytest.approx(80.0 / ppl[0] ** 2)]]
    assert result.reward == pytest.approx(80.0 / ppl[0] ** 2)


def stopped_search(tmp_path, early_stopping=RULE, children=30):
    config = toy_config(evaluator={**CURVE, "early_stopping": early_stopping}, strategy={"type": "random"},
                        budget={"children": children})
    run_serial(config, tmp_path / "run")
    store = ResultsStore(tmp_path / "run" / "results.sqlite", readonly=True)
    rows = [r for r in store.children() if not r.cached]
    store.close()
    return rows


def test_a_search_stops_children_below_the_earlier_childrens_median_and_reports_what_it_saved(tmp_path):
    rows = stopped_search(tmp_path)
    stopped = [r for r in rows if r.status == "stopped"]
    assert stopped and all(r.status in ("ok", "stopped") for r in rows)
    # Each child against the median, at each epoch from the grace on, of the children before it.
    for n, row in enumerate(rows):
        earlier = [r.metrics["curve"] for r in rows[:n]]
        stop_at = None
        for epoch, score in row.metrics["curve"]:
            scores = sorted(c[epoch - 1][1] for c in earlier if len(c) >= epoch)
            if epoch >= 2 and len(scores) >= 3 and score < quantile(scores, 0.5):
                stop_at = epoch
                break
        assert (row.status == "stopped") == (stop_at is not None), row
        assert row.metrics["epochs"] == (stop_at or 10)
        assert row.reward == pytest.approx(row.metrics["curve"][-1][1])
    report = summarize(tmp_path / "run")
    saved = sum(10 - r.metrics["epochs"] for r in stopped)
    assert (report.stopped, report.epochs_planned, report.epochs_saved) == (len(stopped), 10 * len(rows), saved)
    assert f"early stopping: {len(stopped)} children stopped, {saved} of {10 * len(rows)} planned epochs saved" \
        in format_report(report)


def test_a_stopped_childs_reward_teaches_the_controller():
    config = toy_config(evaluator={**CURVE, "early_stopping": RULE})
    space = build_space(config.space)
    controller = Controller(0, space, build_policy(config.strategy, space.decisions()), config.strategy, 2, seed=0)
    outcomes = [Outcome(1, "stopped", 0.2, cached=False), Outcome(2, "failed", None, cached=False)]
    assert [(x.reward, x.child_id) for x in controller.feedback([(0, 0, 0, 0), (1, 1, 1, 1)], outcomes)] == [(0.2, 1)]


def test_without_early_stopping_every_child_trains_to_the_end(tmp_path):
    rows = stopped_search(tmp_path, early_stopping=None, children=10)
    assert all(r.status == "ok" and r.metrics == {"epochs": 10, "planned_epochs": 10} for r in rows)
    assert "early stopping" not in format_report(summarize(tmp_path / "run"))


def test_replicas_on_ray_get_the_thresholds_with_their_children(ray_session, tmp_path):
    from nasps.runtime.driver import run_search
    config = toy_config(evaluator={**CURVE, "early_stopping": RULE}, strategy={"type": "random"},
                        cluster={"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0},
                        budget={"children": 40})
    assert run_search(config, tmp_path / "run").progress.trained == 40
    rows = query(tmp_path / "run", "SELECT status, json_extract(metrics, '$.epochs') FROM children WHERE cached = 0")
    stopped = [epochs for status, epochs in rows if status == "stopped"]
    # Thresholds exist once 3 children finished; from then on about a third of random children
    # (those matching nothing, 0.375 of them) are below the median at step 2. None stops within
    # the grace, and a stopped child trained fewer than its 10 steps.
    assert len(stopped) >= 4 and all(2 <= epochs < 10 for epochs in stopped)
