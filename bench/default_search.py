"""The default search (`make search`) against a random search of the same budget.

Each seed runs ``configs/default.yaml`` as ``nasps search`` does (embedded local Ray), then the
same config with ``strategy: {type: random}`` (and, with ``--evolution``, aging evolution). For
each run it prints the validation accuracy of the best, median and worst trained child, and
the mean accuracy of the top 1, 5 and 15 (the paper's control figure, in numbers); then, over
the seeds, the controller's top-k means minus the others'. The default search discriminates
when children spread out, the best is not perfect, and the controller's top-k beat random's.

    python bench/default_search.py [--seeds 0 1] [--children 120] [--evolution] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasps.plots import TOP_KS  # noqa: E402
from nasps.report import load_run  # noqa: E402

DEFAULT = ROOT / "configs" / "default.yaml"
OTHERS = {"random": {"type": "random"}, "evolution": {"type": "evolution"}}  # against the config's own


def run_search(config: dict, run_dir: Path, overrides: list[str]) -> None:
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    sets = [arg for item in overrides for arg in ("--set", item)]
    subprocess.run([sys.executable, "-m", "nasps", "search", "--config", str(path), "--run-dir", str(run_dir),
                    *sets], check=True, stdout=subprocess.DEVNULL)


def accuracies(run_dir: Path) -> list[float]:
    """The validation accuracy the reward was computed from, of every trained child, best first."""
    rows = [r for r in load_run(run_dir).rows if not r.cached and r.status == "ok"]
    return sorted((r.metrics["best_val_accuracy"] for r in rows), reverse=True)


def describe(accs: list[float]) -> dict[str, float]:
    out = {"best": accs[0], "median": statistics.median(accs), "worst": accs[-1]}
    out.update({f"top{k}": statistics.fmean(accs[:k]) for k in TOP_KS})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--children", type=int, default=None, help="budget (default: the config's)")
    parser.add_argument("--evolution", action="store_true", help="also run aging evolution (its defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an evaluator, space or budget key of both searches")
    args = parser.parse_args()
    base = yaml.safe_load(DEFAULT.read_text())
    if args.children:
        base["budget"]["children"] = args.children
    columns = ["best", "median", "worst", *(f"top{k}" for k in TOP_KS)]
    print(f"{'seed':>4}  {'strategy':<9}  " + "  ".join(f"{c:>7}" for c in columns) + "   (validation accuracy, %)")
    others = ["random"] + (["evolution"] if args.evolution else [])
    gains: dict[str, dict[str, list[float]]] = {other: {c: [] for c in columns} for other in others}
    with tempfile.TemporaryDirectory(prefix="nasps-default-") as tmp:
        for seed in args.seeds:
            found = {}
            for strategy in ["reinforce", *others]:
                config = dict(base, seed=seed)
                if strategy in OTHERS:
                    config["strategy"] = OTHERS[strategy]
                run_dir = Path(tmp) / f"{strategy}-{seed}"
                run_search(config, run_dir, args.set)
                found[strategy] = describe(accuracies(run_dir))
                print(f"{seed:>4}  {strategy:<9}  " + "  ".join(f"{100 * found[strategy][c]:>7.2f}" for c in columns),
                      flush=True)
            for other in others:
                for c in columns:
                    gains[other][c].append(100 * (found["reinforce"][c] - found[other][c]))
    for other in others:
        print(f"\ncontroller minus {other} (accuracy points), mean over seeds [min, max]:")
        for c in columns:
            values = gains[other][c]
            print(f"  {c:<7} {statistics.fmean(values):+6.2f}  [{min(values):+.2f}, {max(values):+.2f}]")


if __name__ == "__main__":
    main()
