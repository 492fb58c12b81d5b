"""nasps report: the PNG plots and diagrams, --compare, and numbers equal to the store's."""

import json
import statistics
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from nasps.config import config_from_dict
from nasps.method.serial import run_serial
from nasps.state.store import ChildRow, ResultsStore
from nasps.views.plots import top_k_curve
from tests.conftest import NASPS, ROOT, TOY_SPACE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(tmp_path, name, space, target, strategy, children, seed=0):
    config = config_from_dict({"space": space, "evaluator": {"type": "python", "target": target},
                               "strategy": strategy, "budget": {"children": children,
                                                                "max_samples": 50 * children},
                               "seed": seed})
    run_serial(config, tmp_path / name)
    return tmp_path / name


def report(*args):
    done = subprocess.run(NASPS + ["report", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


def rows_of(run_dir):
    store = ResultsStore(run_dir / "results.sqlite")
    try:
        return store.children()
    finally:
        store.close()


def assert_png(path, min_width=300):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= min_width and image.size[1] >= 150
        # Something was drawn: a blank canvas has a single colour.
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(2)) > 1


def mean_top(rows, k):
    rewards = sorted((r.reward for r in rows if not r.cached and r.status == "ok"), reverse=True)
    return statistics.fmean(rewards[:k]) if len(rewards) >= k else None


def test_report_plots_and_compare_against_random(tmp_path):
    rl = run(tmp_path, "rl", TOY_SPACE, "tests.toys:match_fraction",
             {"type": "reinforce", "learning_rate": 0.05}, 40)
    rnd = run(tmp_path, "random", TOY_SPACE, "tests.toys:match_fraction", {"type": "random"}, 40)
    data = json.loads(report(rl, "--compare", rnd, "--format", "json").stdout)
    names = {p.split("/")[-1] for p in data["plots"]}
    # A categorical space has no depth and no diagram; reinforce has controller updates.
    assert names == {"rewards.png", "control.png", "staleness.png", "throughput.png", "controller.png"}
    for path in data["plots"]:
        assert_png(Path(path))
    for entry, run_dir in ((data, rl), (data["compare"][0], rnd)):
        rows = rows_of(run_dir)
        assert entry["trained"] == sum(not r.cached for r in rows)
        for k in (1, 5, 15):
            assert entry["top_means"][str(k)] == pytest.approx(mean_top(rows, k))
    assert data["strategy"] == "reinforce" and data["compare"][0]["strategy"] == "random"
    text = report(rl, "--compare", rnd, "--no-plots").stdout
    assert "top 15" in text and "random" in text and "plots:" not in text


def test_random_search_report_has_no_controller_plots(tmp_path):
    rnd = run(tmp_path, "random", TOY_SPACE, "tests.toys:match_fraction", {"type": "random"}, 10)
    data = json.loads(report(rnd, "--format", "json").stdout)
    assert {p.split("/")[-1] for p in data["plots"]} == {"rewards.png", "control.png", "throughput.png"}


@pytest.mark.parametrize("space, target, files", [
    ({"type": "conv", "num_filters": [4, 8], "strides": [1, 2], "layer_types": ["conv", "max_pool"],
      "curriculum": {"start_depth": 2, "add_layers": 1, "every_children": 4, "max_depth": 5}},
     "tests.toys:conv_toy", {"depth.png"}),
    ({"type": "rnn_cell", "base": 4}, "tests.toys:cell_toy", set()),
])
def test_diagrams_of_the_top_architectures(tmp_path, space, target, files):
    run_dir = run(tmp_path, "run", space, target, {"type": "reinforce", "policy": "lstm"}, 12)
    data = json.loads(report(run_dir, "--format", "json").stdout)
    names = {p.split("/")[-1] for p in data["plots"]}
    assert {"architecture_1.png", "architecture_2.png", "architecture_3.png"} | files <= names
    for name in names:
        assert_png(run_dir / "report" / name, min_width=200)


def test_top_k_curve_is_the_mean_of_the_k_best_so_far():
    rewards = [0.3, None, 0.9, 0.1, 0.5, 0.7, 0.2]
    rows = [ChildRow(i, {}, str(i), r, "ok" if r is not None else "failed", False, {}, None, 0, 0, None,
                     None, 0.0, 1.0, 1.0) for i, r in enumerate(rewards, 1)]
    xs, ys = top_k_curve(rows, 2)
    expected = []
    for n in range(1, len(rows) + 1):
        seen = sorted((r for r in rewards[:n] if r is not None), reverse=True)
        if len(seen) >= 2:
            expected.append((n, statistics.fmean(seen[:2])))
    assert list(zip(xs, ys)) == [(n, pytest.approx(y)) for n, y in expected]


def test_plots_that_cannot_be_written_are_one_line(tmp_path):
    rnd = run(tmp_path, "random", TOY_SPACE, "tests.toys:match_fraction", {"type": "random"}, 3)
    (rnd / "report").write_text("a file where the plots would go")
    done = subprocess.run(NASPS + ["report", str(rnd)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--no-plots" in done.stderr
    assert (rnd / "report").read_text() == "a file where the plots would go"
    assert report(rnd, "--no-plots").stdout.startswith("run:")


def test_the_metric_people_read_is_beside_the_reward(tmp_path):
    """Validation accuracy (or perplexity) next to the reward: in the search's progress, the
    report's top table, and as the plots' second axis, read off the reward's own formula."""
    from nasps.evaluators import headline
    from nasps.views.plots import metric_scale
    from nasps.views.report import format_report, summarize
    space = {"type": "conv", "num_filters": [4], "curriculum": {"start_depth": 2, "add_layers": 0}}
    config = config_from_dict({"space": space, "strategy": {"type": "random"}, "budget": {"children": 3},
                               "evaluator": {"type": "image_classification", "epochs": 1}})
    progress, _ = run_serial(config, tmp_path / "run")
    report = summarize(tmp_path / "run")
    best = report.top[0]
    assert progress.best_metric == headline(best.metrics) == f"val {100 * best.metrics['best_val_accuracy']:.2f}%"
    first = next(line for line in format_report(report).splitlines() if line.split()[:2] == ["1", str(best.id)])
    assert progress.best_metric.split()[1] in first.split()  # rank, id, reward, validation accuracy, ...
    cubed = metric_scale({"type": "image_classification"})
    assert cubed.from_reward(0.9 ** 3) == pytest.approx(90.0) and cubed.to_reward(90.0) == pytest.approx(0.729)
    assert metric_scale({"type": "image_classification", "reward": "accuracy"}).from_reward(0.5) == pytest.approx(50)
    ppl = metric_scale({"type": "language_model"})
    assert ppl.from_reward(80 / 120 ** 2) == pytest.approx(120.0) and ppl.to_reward(120.0) == pytest.approx(80 / 14400)
    assert metric_scale({"type": "python"}) is None
    assert headline({"best_val_perplexity": 81.23}) == "ppl 81.23" and headline({"loss": 1}) is None
