"""NAS-Bench-201 CIFAR-10: random search, REINFORCE and evolution, with the protocol of the data README.

Each search gets N unique evaluations (150), its reward is the 12-epoch validation accuracy, it
picks the evaluated cell with the best reward, and we report that cell's 200-epoch test accuracy,
mean +- std over many seeds. Searches run through the reference loop (``nasps.method.serial``), which
calls the same policy, REINFORCE, ledger and evaluator code as the Ray runtime.
Published (NAS-Bench-201, Table 5): random 93.70 +- 0.36, REINFORCE 93.85 +- 0.37,
regularised evolution 93.92 +- 0.30, optimum 94.37.

    python bench/nb201/run.py [--table CSV] [--seeds 50] [--evaluations 150] [--noise 0.5]

``--noise STD``: the reward gets Gaussian noise of STD accuracy points (table.py says how).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.nb201.table import cell_key, load_table, space_config, table_path  # noqa: E402
from nasps.config import config_from_dict  # noqa: E402
from nasps.method.serial import run_serial  # noqa: E402
from nasps.state.store import ResultsStore  # noqa: E402

# name -> strategy section (m = 1 throughout, as in NAS-Bench-201's REINFORCE). The LSTM's
# defaults (lr 0.01, temperature 5, tanh 2.5, entropy 1e-3, screening of 8 candidates) were
# chosen on seeds 0..59; --ablations reruns that study.
NO_SCREENING = {"screening": {"candidates": 1}}
LSTM_PAPER = {"type": "reinforce", "policy": "lstm", "learning_rate": 0.0006, "entropy_weight": 0.0,
              "lstm": {"temperature": None, "tanh_constant": None}, **NO_SCREENING}
LSTM_SOFT = {"type": "reinforce", "policy": "lstm", "entropy_weight": 0.0, **NO_SCREENING}
EVOLUTION = "evolution (population 10, sample 3)"
STRATEGIES = {
    "random": {"type": "random"},
    EVOLUTION: {"type": "evolution", "population": 10, "sample_size": 3},
    "factorized (lr 6e-4, as the paper)": {"type": "reinforce", "learning_rate": 0.0006},
    "factorized (lr 0.1)": {"type": "reinforce", "learning_rate": 0.1},
    "lstm (the paper's settings)": LSTM_PAPER,
    "lstm (its defaults)": {"type": "reinforce", "policy": "lstm"},
    "lstm (its defaults, no screening)": {"type": "reinforce", "policy": "lstm", **NO_SCREENING},
}
# One setting changed at a time, to see what each does.
ABLATIONS = {
    "lstm lr 0.01, no temperature/tanh": {**LSTM_PAPER, "learning_rate": 0.01},
    "lstm lr 0.01, temp 5, tanh 2.5": LSTM_SOFT,
    "  same, baseline decay 0.8": {**LSTM_SOFT, "baseline_decay": 0.8},
    "  same, repeats not learned from": {**LSTM_SOFT, "learn_from_repeats": False},
    "lstm defaults, lr 0.02": {"type": "reinforce", "policy": "lstm", "learning_rate": 0.02},
    "lstm defaults, screening 16 candidates": {"type": "reinforce", "policy": "lstm",
                                               "screening": {"candidates": 16}},
    "lstm defaults, screening 32 candidates": {"type": "reinforce", "policy": "lstm",
                                               "screening": {"candidates": 32}},
}
STRATEGY_M: dict[str, int] = {}  # m per strategy where not 1


def search_once(strategy: dict, m: int, seed: int, evaluations: int, run_dir: Path) -> float:
    os.environ["NASPS_NB201_NOISE_SEED"] = str(seed)
    config = config_from_dict({
        "space": space_config(),
        "evaluator": {"type": "python", "target": "bench.nb201.table:reward"},
        "strategy": strategy,
        "cluster": {"children_per_replica": m},
        "budget": {"children": evaluations, "max_samples": 100 * evaluations},
        "seed": seed,
    })
    run_serial(config, run_dir)
    store = ResultsStore(run_dir / "results.sqlite")
    rows = [r for r in store.children() if not r.cached and r.status == "ok"]
    store.close()
    if len(rows) < evaluations:
        logging.warning("seed %d: only %d unique evaluations (sample cap)", seed, len(rows))
    best = max(rows, key=lambda r: (r.reward, -r.id))
    return load_table(str(table_path()))[cell_key(best.arch)][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=None, help="path of nb201_cifar10.csv")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=100,
                        help="seeds used: first-seed .. first-seed+seeds-1 (settings were tuned on 0..59)")
    parser.add_argument("--evaluations", type=int, default=150)
    parser.add_argument("--only", nargs="*", help="names of the strategies to run")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="std (accuracy points) of Gaussian noise added to each reward")
    parser.add_argument("--ablations", action="store_true",
                        help="also run the LSTM ablations (one setting changed at a time)")
    args = parser.parse_args()
    if args.table is not None:
        os.environ["NASPS_NB201_TABLE"] = str(args.table.resolve())
    os.environ["NASPS_NB201_NOISE"] = str(args.noise)
    if not table_path().is_file():
        print(f"bench/nb201: the NAS-Bench-201 table is not at {table_path()}; "
              "pass --table PATH (the benchmark did not run)")
        return
    logging.basicConfig(level=logging.ERROR)
    os.chdir(ROOT)
    table = load_table(str(table_path()))
    optimum = max(test for _, test in table.values())
    print(f"NAS-Bench-201 CIFAR-10 ({len(table)} cells, optimum {optimum:.2f}); "
          f"{args.evaluations} unique evaluations, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, "
          f"reward noise std {args.noise} points; "
          "200-epoch test accuracy of the picked cell, mean +- std")
    torch.set_num_threads(1)  # the controller's tensors are tiny; threads only add overhead
    strategies = {**STRATEGIES, **(ABLATIONS if args.ablations else {})}
    evolution: list[float] = []  # its accuracy per seed, to compare the others with on the same seeds
    for name, strategy in strategies.items():
        if args.only and name not in args.only:
            continue
        m = STRATEGY_M.get(name, 1)
        start = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            accs = [search_once(strategy, m, seed, args.evaluations, Path(tmp) / f"s{seed}")
                    for seed in seeds]
        if name == EVOLUTION:
            evolution = accs
        against = ""
        if evolution and name != EVOLUTION:
            diffs = [a - e for a, e in zip(accs, evolution)]
            against = (f"; minus evolution {statistics.fmean(diffs):+.3f} "
                       f"(SE {statistics.stdev(diffs) / math.sqrt(len(diffs)):.3f})")
        print(f"{name:<48} m={m}  {statistics.fmean(accs):.3f} +- {statistics.stdev(accs):.2f}  "
              f"(SE {statistics.stdev(accs) / math.sqrt(len(accs)):.3f}, min {min(accs):.2f}, max {max(accs):.2f}"
              f"{against}; {time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
