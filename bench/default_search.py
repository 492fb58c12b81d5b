"""The default search (`make search`) against a random search of the same budget.

Each seed runs ``configs/default.yaml`` as ``nasps search`` does (embedded local Ray), then the
same config with ``strategy: {type: random}`` (and, with ``--evolution``, aging evolution). For
each run it prints the validation accuracy of the best, median and worst trained child, and
the mean accuracy of the top 1, 5 and 15 (the paper's control figure, in numbers); then, over
the seeds, the controller's top-k means minus the others'. The default search discriminates
when children spread out, the best is not perfect, and the controller's top-k beat random's.

``--space rnn_cell`` runs the same comparison on the paper's recurrent-cell space instead,
sized for a CPU (``rnn_config``): character-level language models of the start of
../shared/data/ptb/ptb.train.txt, scored by validation perplexity (lower is better; the
differences printed are then the others' minus the controller's, so positive favours it).

    python bench/default_search.py [--space conv|rnn_cell] [--seeds 0 1] [--children 120] [--evolution]
                                   [--set KEY=VALUE ...] [--keep DIR]
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

from nasps.evaluators import SCORED  # noqa: E402
from nasps.views.report import TOP_KS, load_run  # noqa: E402

DEFAULT = ROOT / "configs" / "default.yaml"
PTB = ROOT.parent / "shared" / "data" / "ptb" / "ptb.train.txt"
TEXT_BYTES = 120_000  # of PTB's training text: 108,000 characters to train on, 12,000 to score


def rnn_config(text: Path) -> dict:
    """The paper's base-8 cell space with the default search's controller and cluster, each
    child a small character-level language model: hidden 32, 2 epochs of 12,000 characters in
    batches of 8 (about 86 SGD steps). At batch 32 (about 20 steps) most cells ended worse than
    the unigram distribution of the characters, and cells whose state never depends on the
    input (16% of the space) scored above the median one: a controller learnt to propose them."""
    base = yaml.safe_load(DEFAULT.read_text())
    return {"space": {"type": "rnn_cell", "base": 8},
            "strategy": {"type": "reinforce", "policy": "lstm"},
            "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(text)},
                          "epochs": 2, "max_tokens_per_epoch": 12_000, "hidden_size": 32, "batch_size": 8,
                          "bptt": 35, "dropout": 0.0, "learning_rate": 5.0},
            "cluster": base["cluster"], "budget": {"children": 150}, "seed": 0}
OTHERS = {"random": {"type": "random"}, "evolution": {"type": "evolution"}}  # against the config's own


def run_search(config: dict, run_dir: Path, overrides: list[str]) -> None:
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    sets = [arg for item in overrides for arg in ("--set", item)]
    subprocess.run([sys.executable, "-m", "nasps", "search", "--config", str(path), "--run-dir", str(run_dir),
                    *sets], check=True, stdout=subprocess.DEVNULL)


def scores(run_dir: Path, metric: str, lower_is_better: bool) -> list[float]:
    """The validation figure the reward was computed from, of every trained child, best first."""
    rows = [r for r in load_run(run_dir).rows if not r.cached and r.status in SCORED]
    return sorted((r.metrics[metric] for r in rows), reverse=not lower_is_better)


def describe(accs: list[float]) -> dict[str, float]:
    out = {"best": accs[0], "median": statistics.median(accs), "worst": accs[-1]}
    out.update({f"top{k}": statistics.fmean(accs[:k]) for k in TOP_KS})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="conv", choices=["conv", "rnn_cell"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--children", type=int, default=None, help="budget (default: the config's)")
    parser.add_argument("--evolution", action="store_true", help="also run aging evolution (its defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an evaluator, space or budget key of both searches")
    parser.add_argument("--keep", type=Path, default=None, help="write the run directories here (default: a "
                        "temporary folder, removed at the end)")
    args = parser.parse_args()
    cells = args.space == "rnn_cell"
    metric, scale, unit = ("best_val_perplexity", 1, "validation perplexity") if cells else \
        ("best_val_accuracy", 100, "validation accuracy, %")
    columns = ["best", "median", "worst", *(f"top{k}" for k in TOP_KS)]
    print(f"{'seed':>4}  {'strategy':<9}  " + "  ".join(f"{c:>7}" for c in columns) + f"   ({unit})")
    others = ["random"] + (["evolution"] if args.evolution else [])
    gains: dict[str, dict[str, list[float]]] = {other: {c: [] for c in columns} for other in others}
    with tempfile.TemporaryDirectory(prefix="nasps-default-") as tmp:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        if cells:
            text = Path(tmp) / "ptb-start.txt"
            text.write_bytes(PTB.read_bytes()[:TEXT_BYTES])
        base = rnn_config(text) if cells else yaml.safe_load(DEFAULT.read_text())
        if args.children:
            base["budget"]["children"] = args.children
        for seed in args.seeds:
            found = {}
            for strategy in ["reinforce", *others]:
                config = dict(base, seed=seed)
                if strategy in OTHERS:
                    config["strategy"] = OTHERS[strategy]
                run_dir = Path(tmp) / f"{strategy}-{seed}"
                run_search(config, run_dir, args.set)
                found[strategy] = describe(scores(run_dir, metric, lower_is_better=cells))
                print(f"{seed:>4}  {strategy:<9}  " + "  ".join(f"{scale * found[strategy][c]:>7.2f}" for c in columns),
                      flush=True)
            for other in others:
                for c in columns:
                    gain = scale * (found["reinforce"][c] - found[other][c])
                    gains[other][c].append(-gain if cells else gain)
    for other in others:
        which = f"{other} minus controller (perplexity)" if cells else f"controller minus {other} (accuracy points)"
        print(f"\n{which}, mean over seeds [min, max]:")
        for c in columns:
            values = gains[other][c]
            print(f"  {c:<7} {statistics.fmean(values):+6.2f}  [{min(values):+.2f}, {max(values):+.2f}]")


if __name__ == "__main__":
    main()
