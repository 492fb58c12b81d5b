"""TensorBoard event files of a search, under ``RUN_DIR/tb`` (``tensorboard --logdir RUN_DIR/tb``).

Written by whoever commits the rows (the ledger), so every scalar here is also in the results
store; TensorBoard is a view of the run, never its record. Children are plotted against their
row id (order of finishing), controller updates against the count of updates all replicas made.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from nasps.store import RoundStats

BOARD_DIR = "tb"


class Board:
    def __init__(self, log_dir: str | Path):
        # Imported here: tensorboard takes seconds to import, and only the recorder needs it.
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=10)
        self.best: Optional[float] = None
        self.updates = 0

    def child(self, child_id: int, status: str, reward: Optional[float], duration_s: Optional[float],
              depth: Optional[int], finished_at: Optional[float]) -> None:
        """One trained child (cached repeats are not new information)."""
        at = finished_at
        if status == "ok" and reward is not None and math.isfinite(reward):
            self.best = reward if self.best is None else max(self.best, reward)
            self.writer.add_scalar("child/reward", reward, child_id, walltime=at)
        if self.best is not None:
            self.writer.add_scalar("child/best_reward", self.best, child_id, walltime=at)
        if duration_s is not None:
            self.writer.add_scalar("child/wall_time_s", duration_s, child_id, walltime=at)
        if depth is not None:
            self.writer.add_scalar("child/depth", depth, child_id, walltime=at)

    def update(self, stats: RoundStats, staleness: int) -> None:
        """One controller update (a replica's push)."""
        self.updates += 1
        step = self.updates
        if stats.baseline is not None:
            self.writer.add_scalar("controller/baseline", stats.baseline, step)
        self.writer.add_scalar("controller/entropy", stats.entropy, step)
        self.writer.add_scalar("controller/staleness", staleness, step)
        if stats.mean_reward is not None:
            self.writer.add_scalar("controller/mean_reward", stats.mean_reward, step)

    def close(self) -> None:
        self.writer.close()


def board_dir(run_dir: str | Path, config) -> Optional[Path]:
    """Where a run's event files go, or None when ``logging.tensorboard`` is off."""
    return Path(run_dir) / BOARD_DIR if config.logging.tensorboard else None
