"""NAS-Bench-201 (CIFAR-10) as a python evaluator: a search's reward is a table lookup.

The table (``../shared/data/nb201/nb201_cifar10.csv`` by default, or NASPS_NB201_TABLE) holds
every cell of the space. The reward is the 12-epoch validation accuracy (a fraction); the
200-epoch test accuracy is reported only for the cell a search finally picks.

Noisy mode (NASPS_NB201_NOISE = a standard deviation in accuracy points): the reward is the
12-epoch accuracy plus Gaussian noise, as a real child scores differently each time it is
trained. The noise is drawn per cell and per search (NASPS_NB201_NOISE_SEED), so a run can be
repeated exactly.
"""

from __future__ import annotations

import csv
import functools
import os
import random
from pathlib import Path

EDGES = ("e01", "e02", "e12", "e03", "e13", "e23")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DEFAULT_TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nb201" / "nb201_cifar10.csv"


def table_path() -> Path:
    return Path(os.environ.get("NASPS_NB201_TABLE", DEFAULT_TABLE))


@functools.lru_cache(maxsize=2)
def load_table(path: str) -> dict[tuple[str, ...], tuple[float, float]]:
    """{(op of each edge): (12-epoch validation accuracy %, 200-epoch test accuracy %)}."""
    table = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ops = tuple(OPS[int(row[e])] for e in EDGES)
            table[ops] = (float(row["cifar10valid_val_12ep"]), float(row["cifar10_test_200ep"]))
    return table


def cell_key(arch: dict) -> tuple[str, ...]:
    return tuple(arch[e] for e in EDGES)


def reward(arch: dict) -> dict:
    """The python evaluator: 12-epoch validation accuracy as a fraction."""
    val, _ = load_table(str(table_path()))[cell_key(arch)]
    std = float(os.environ.get("NASPS_NB201_NOISE", "0"))
    if std > 0:
        val += random.Random(f"{os.environ.get('NASPS_NB201_NOISE_SEED', '0')}/{cell_key(arch)}").gauss(0.0, std)
    return {"reward": val / 100.0, "metrics": {"val_accuracy": val / 100.0}}


def space_config() -> dict:
    return {"type": "categorical", "decisions": [{"name": e, "choices": list(OPS)} for e in EDGES]}
