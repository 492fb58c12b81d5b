"""TensorBoard event files of a search, under ``RUN_DIR/tb`` (``tensorboard --logdir RUN_DIR/tb``).

The board follows the results store: it reads the rows committed since it last looked and
writes them as events, so every scalar here is in the store, and TensorBoard is a view of the
run, never its record. It runs in the driver, off the path of the children: the recorder, which
every replica waits on, only commits rows. Children are plotted against their row id (order of
finishing), controller updates against the count of updates all replicas made.

``position.json`` beside the event files says how far the board has written, so a resumed
search continues the curves where they stopped instead of drawing them again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional

from nasps.evaluators import SCORED
from nasps.store import STORE_NAME, ResultsStore

log = logging.getLogger(__name__)

BOARD_DIR = "tb"
POSITION = "position.json"


class Board:
    def __init__(self, log_dir: str | Path, store_path: str | Path):
        # tensorboard's own writer and protos, not torch.utils.tensorboard (seconds to import).
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir = Path(log_dir)
        self.store = ResultsStore(store_path, readonly=True)
        self.last_child, self.last_round = self._position()
        self.best = self.store.best_reward(up_to=self.last_child)
        self.updates = self.store.count_rounds(up_to=self.last_round)
        self.writer = EventFileWriter(str(self.log_dir), flush_secs=3600)  # flushed by follow()
        # From now on these event files have a position: a driver killed before its first
        # follow() leaves one that says where its curves start.
        self._save_position()

    def _position(self) -> tuple[int, int]:
        """(last child id, last round rowid) already written: where a resumed search left off."""
        path = self.log_dir / POSITION
        if path.is_file():
            try:
                position = json.loads(path.read_text())
                return int(position["child"]), int(position["round"])
            except (ValueError, KeyError, TypeError):
                pass  # damaged: fall through
        if self.log_dir.is_dir() and any("tfevents" in p.name for p in self.log_dir.iterdir()):
            # Events without a position (written before it was kept): do not draw them twice.
            return self.store.last_child_id(), self.store.last_round_rowid()
        return 0, 0

    def follow(self) -> int:
        """Write the rows committed since the last call; how many children and updates that was."""
        children = self.store.children_since(self.last_child)
        rounds = self.store.rounds_since(self.last_round)
        for row in children:
            if not row.cached:  # a cached repeat is not new information
                self._child(row)
            self.last_child = row.id
        for rowid, stats, staleness, pushed_at in rounds:
            self._update(stats, staleness, pushed_at)
            self.last_round = rowid
        if children or rounds:
            self.writer.flush()
            self._save_position()
        return len(children) + len(rounds)

    def _child(self, row) -> None:
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
        self._write(values, row.id, row.finished_at)

    def _update(self, stats, staleness: int, pushed_at: float) -> None:
        self.updates += 1
        values = {"controller/entropy": stats.entropy, "controller/staleness": staleness}
        if stats.baseline is not None:
            values["controller/baseline"] = stats.baseline
        if stats.mean_reward is not None:
            values["controller/mean_reward"] = stats.mean_reward
        self._write(values, self.updates, pushed_at)

    def _write(self, values: dict[str, float], step: int, walltime: Optional[float]) -> None:
        # One event for all of a step's scalars: a quarter of the events of one per scalar.
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(v))
                                       for tag, v in values.items()])
        self.writer.add_event(self._event(summary=summary, step=step, wall_time=walltime or time.time()))

    def _save_position(self) -> None:
        path = self.log_dir / POSITION
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"child": self.last_child, "round": self.last_round}))
        os.replace(partial, path)

    def close(self) -> None:
        """Write what is left and close the files."""
        try:
            self.follow()
        finally:
            self.writer.close()
            self.store.close()


def board_dir(run_dir: str | Path, config) -> Optional[Path]:
    """Where a run's event files go, or None when ``logging.tensorboard`` is off."""
    return Path(run_dir) / BOARD_DIR if config.logging.tensorboard else None


class SafeBoard:
    """A Board whose failures cost only TensorBoard: the search goes on without it."""

    def __init__(self, board: Board):
        self.board: Optional[Board] = board

    def follow(self) -> None:
        self._call("follow")

    def close(self) -> None:
        self._call("close")
        self.board = None

    def _call(self, method: str) -> None:
        if self.board is None:
            return
        try:
            getattr(self.board, method)()
        except Exception as exc:  # a full disk, a removed folder: the rows are safe in the store
            log.warning("TensorBoard: stopped writing %s (%s: %s); the results store has every row",
                        self.board.log_dir, type(exc).__name__, exc)
            self.board = None


def open_board(run_dir: str | Path, config) -> Optional[SafeBoard]:
    """The board of a run whose store exists, or None when ``logging.tensorboard`` is off (or
    the event files cannot be opened: TensorBoard is a view, the search goes on without it)."""
    log_dir = board_dir(run_dir, config)
    if log_dir is None:
        return None
    try:
        return SafeBoard(Board(log_dir, Path(run_dir) / STORE_NAME))
    except Exception as exc:
        log.warning("TensorBoard: cannot write %s (%s: %s); the search goes on without it",
                    log_dir, type(exc).__name__, exc)
        return None
