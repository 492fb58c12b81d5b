"""Following a run's results store: the rows committed since a position, as numbers to plot.

The views of a search (TensorBoard, MLflow) are followers: each keeps how far it has written
(the last child id and the last ``rounds`` rowid), reads the rows committed after that and
writes them, then moves its position. So every number they show is in the store, and a
resumed search continues from the position instead of writing a row twice. Children are
stepped by their row id (order of finishing), controller updates by the count of updates all
replicas made.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from nasps.evaluators import SCORED
from nasps.state.store import ResultsStore, RoundStats


class StoreFollower:
    """Reads the rows since its position; a view says how they are written (``write``) and
    made durable with the new position (``commit``)."""

    def __init__(self, store_path: str | Path):
        self.store = ResultsStore(store_path, readonly=True)
        self.start_at(0, 0)

    def start_at(self, child: int, round_rowid: int) -> None:
        """Continue after child ``child`` and round ``round_rowid``: what a resumed view wrote."""
        self.last_child, self.last_round = child, round_rowid
        self.best = self.store.best_reward(up_to=child)
        self.updates = self.store.count_rounds(up_to=round_rowid)

    def follow(self) -> int:
        """Write the rows committed since the last call; how many children and updates that was."""
        children = self.store.children_since(self.last_child)
        rounds = self.store.rounds_since(self.last_round)
        for row in children:
            if not row.cached:  # a cached repeat is not new information
                self.write(self.child_values(row), row.id, row.finished_at)
        for _, stats, staleness, pushed_at in rounds:
            self.updates += 1
            self.write(self.update_values(stats, staleness), self.updates, pushed_at)
        if children or rounds:
            self.last_child = children[-1].id if children else self.last_child
            self.last_round = rounds[-1][0] if rounds else self.last_round
            self.commit()
        return len(children) + len(rounds)

    def child_values(self, row) -> dict[str, float]:
        values = {}
        if row.status in SCORED and row.reward is not None and math.isfinite(row.reward):
            self.best = row.reward if self.best is None else max(self.best, row.reward)
            values["child/reward"] = row.reward
        if self.best is not None:
            values["child/best_reward"] = self.best
        if row.duration_s is not None:
            values["child/wall_time_s"] = row.duration_s
        if row.depth is not None:
            values["child/depth"] = row.depth
        return values

    def update_values(self, stats: RoundStats, staleness: int) -> dict[str, float]:
        values = {"controller/entropy": stats.entropy, "controller/staleness": staleness}
        if stats.baseline is not None:
            values["controller/baseline"] = stats.baseline
        if stats.mean_reward is not None:
            values["controller/mean_reward"] = stats.mean_reward
        return values

    def write(self, values: dict[str, float], step: int, walltime: Optional[float]) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Make what ``write`` wrote durable, then the position (``last_child``, ``last_round``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Write what is left."""
        try:
            self.follow()
        finally:
            self.store.close()


def read_json(path: Path) -> Optional[dict]:
    """A position file, or None when there is none (or it is damaged: it is written again)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict) -> None:
    """Written, then renamed: a killed driver leaves the old position or the new one."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)
