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

import logging
import time
from pathlib import Path
from typing import Optional

from nasps.state.store import STORE_NAME
from nasps.views.follow import StoreFollower, read_json, write_json

log = logging.getLogger(__name__)

BOARD_DIR = "tb"
POSITION = "position.json"


class Board(StoreFollower):
    def __init__(self, log_dir: str | Path, store_path: str | Path):
        # tensorboard's own writer and protos, not torch.utils.tensorboard (seconds to import).
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir = Path(log_dir)
        super().__init__(store_path)
        self.start_at(*self._position())
        self.writer = EventFileWriter(str(self.log_dir), flush_secs=3600)  # flushed by follow()
        # From now on these event files have a position: a driver killed before its first
        # follow() leaves one that says where its curves start.
        self._save_position()

    def _position(self) -> tuple[int, int]:
        """(last child id, last round rowid) already written: where a resumed search left off."""
        position = read_json(self.log_dir / POSITION)
        try:
            return int(position["child"]), int(position["round"])
        except (KeyError, TypeError, ValueError):
            pass  # none, or damaged: fall through
        if self.log_dir.is_dir() and any("tfevents" in p.name for p in self.log_dir.iterdir()):
            # Events without a position (written before it was kept): do not draw them twice.
            return self.store.last_child_id(), self.store.last_round_rowid()
        return 0, 0

    def write(self, values: dict[str, float], step: int, walltime: Optional[float]) -> None:
        # One event for all of a step's scalars: a quarter of the events of one per scalar.
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(v))
                                       for tag, v in values.items()])
        self.writer.add_event(self._event(summary=summary, step=step, wall_time=walltime or time.time()))

    def commit(self) -> None:
        self.writer.flush()
        self._save_position()

    def _save_position(self) -> None:
        write_json(self.log_dir / POSITION, {"child": self.last_child, "round": self.last_round})

    def close(self) -> None:
        """Write what is left and close the files."""
        try:
            super().close()
        finally:
            self.writer.close()


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
