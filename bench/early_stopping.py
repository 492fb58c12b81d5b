"""Early stopping on the default search: epochs, wall time and the best child, with and without.

Each seed runs ``configs/default.yaml`` as ``nasps search`` does (embedded local Ray), once as
it is and once with ``evaluator.early_stopping: {}`` (the median rule with its defaults). For
each pair it prints the epochs trained, the wall time and the validation accuracy of the
child with the best reward, then the ratios over the seeds. Target: at most 0.6 of the
epochs, and the best child within 0.5 points.

    python bench/early_stopping.py [--seeds 0 1 2] [--children 120] [--set KEY=VALUE ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.default_search import DEFAULT, run_search  # noqa: E402
from nasps.state.store import ranked_children  # noqa: E402
from nasps.views.report import load_run  # noqa: E402


def measure(config: dict, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    run_search(config, run_dir, overrides)
    wall = time.perf_counter() - start
    rows = load_run(run_dir).rows
    trained = [r for r in rows if not r.cached and "epochs" in r.metrics]
    best = ranked_children(rows)[0]
    return {"epochs": sum(r.metrics["epochs"] for r in trained),
            "planned": sum(r.metrics["planned_epochs"] for r in trained),
            "stopped": sum(r.status == "stopped" for r in trained), "wall": wall,
            "best": 100 * best.metrics["best_val_accuracy"],
            "top": 100 * max(r.metrics["best_val_accuracy"] for r in trained)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--children", type=int, default=None, help="budget (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of both searches")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the run directories there (default: a temporary folder)")
    args = parser.parse_args()
    base = yaml.safe_load(DEFAULT.read_text())
    if args.children:
        base["budget"]["children"] = args.children
    print(f"{'seed':>4}  {'early stopping':<14}  {'epochs':>11}  {'stopped':>7}  {'wall s':>7}  "
          f"{'best child':>10}  {'best val':>8}   (accuracy of the best-reward child, and the best of all, %)")
    ratios: dict[str, list[float]] = {"epochs": [], "wall": [], "best": [], "top": []}
    with tempfile.TemporaryDirectory(prefix="nasps-early-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        for seed in args.seeds:
            found = {}
            for label, early in (("off", None), ("median rule", {})):
                config = dict(base, seed=seed)
                config["evaluator"] = dict(base["evaluator"], early_stopping=early)
                found[label] = m = measure(config, Path(tmp) / f"{label.split()[0]}-{seed}", args.set)
                print(f"{seed:>4}  {label:<14}  {m['epochs']:>5.0f}/{m['planned']:<5.0f}  {m['stopped']:>7.0f}  "
                      f"{m['wall']:>7.1f}  {m['best']:>10.2f}  {m['top']:>8.2f}", flush=True)
            off, on = found["off"], found["median rule"]
            ratios["epochs"].append(on["epochs"] / off["epochs"])
            ratios["wall"].append(on["wall"] / off["wall"])
            ratios["best"].append(on["best"] - off["best"])
            ratios["top"].append(on["top"] - off["top"])
    print("\nwith early stopping, over the seeds: mean [min, max]")
    for name, label in (("epochs", "epochs trained, ratio"), ("wall", "wall time, ratio"),
                        ("best", "best-reward child's accuracy, points"), ("top", "best accuracy, points")):
        values = ratios[name]
        print(f"  {label:<38} {statistics.fmean(values):+.3f}  [{min(values):+.3f}, {max(values):+.3f}]")


if __name__ == "__main__":
    main()
