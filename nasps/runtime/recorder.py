"""The recorder actor: the ledger and the results store, on the driver's node, so the store
is a local file there. Async, so a child that waits for an identical one in training does not
block it. It imports no torch (it needs none, and it is on the path of every search's start)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence

import ray

from nasps.evaluators import ChildResult
from nasps.spaces import Architecture
from nasps.state.ledger import Admission, Admitted, Ledger, Member, Outcome, Progress, PushReport
from nasps.state.store import ResultsStore

log = logging.getLogger(__name__)


class StaleReplicaError(RuntimeError):
    """A call from a replica the driver has replaced."""


class StoreWriteError(RuntimeError):
    """The results store cannot be written: the search must stop."""


def was_restarted() -> bool:
    """Whether Ray is running this actor's constructor again, after its process died."""
    with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated property
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.get_runtime_context().was_current_actor_reconstructed


@ray.remote
class Recorder:
    """The ledger and the results store. The only writer of the store, so that every row is
    committed in one place, in order.

    Ray restarts it when its process dies (``max_restarts``): it rebuilds the ledger from the
    store, whose pending table names the replica training each child in flight, and the
    controllers' last states from the checkpoint. A call in flight at the death fails; a
    replica sends a failed commit again (a child's second result is never stored), and any
    other failed call ends that replica, which the driver replaces."""

    def __init__(self, store_path: str, budget_children: int, sample_cap: int,
                 max_consecutive_failures: Optional[int] = None, run_started_at: Optional[float] = None,
                 recent: int = 0, early_stopping=None):
        restarted = was_restarted()
        self.path = Path(store_path)
        self.ledger = Ledger(ResultsStore(self.path), budget_children, sample_cap,
                             max_consecutive_failures=max_consecutive_failures, run_started_at=run_started_at,
                             pending_in_flight=restarted, recent=recent,
                             early_stopping=early_stopping)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.controllers: dict[int, dict] = {}  # replica -> its controller state at its last push
        self.generations: dict[int, int] = {}  # replica -> restarts: calls of older ones are stale
        if restarted:
            from nasps.state.checkpoint import load_checkpoint  # torch: only on this rare path
            checkpoint = load_checkpoint(self.path.parent)
            self.controllers = dict(checkpoint["replicas"]) if checkpoint else {}
            log.warning("the recorder was restarted: %d children trained, %d in flight, from the store",
                        self.ledger.progress.trained, self.ledger.progress.in_flight)

    async def admit(self, archs: list[Architecture], replica: Optional[int] = None, generation: int = 0,
                    finished: Sequence[tuple[Architecture, ChildResult, Optional[int]]] = (),
                    report: Optional[PushReport] = None, known: int = 0) -> Admitted:
        """Admit a replica's new samples. The replica's children that finished since its last
        call (rows of architecture, result, the policy version it was sampled from) and its
        last update's report ride along, committed first in the same transaction. The answer
        carries the recent children after the first ``known`` (those the replica has seen), and
        the early-stopping thresholds in force, which go with the replica's next children."""
        # A replica the driver has already replaced (its process outlived the verdict) gets
        # nothing more to train, so no ticket goes to a child nobody will finish.
        stale = self._stale(replica, generation)
        with self._writing(), self.ledger.store.batch():
            if report is not None and not stale:
                self._record_push(report)
            outcomes = self._record(finished, replica)
            admissions = [Admission("drop")] * len(archs) if stale else self.ledger.admit(archs, replica)
        self._refuse_stale(replica, generation, finished)
        return Admitted(tuple(admissions), self.ledger.progress.samples, tuple(outcomes),
                        *self.ledger.recent_since(known), tuple(self.ledger.thresholds().items()))

    async def record(self, children: list[tuple[Architecture, ChildResult, Optional[int]]], replica: int,
                     generation: int = 0) -> list[Outcome]:
        """Commit the children that finished (one call for all that finished together): rows
        of (architecture, result, the policy version it was sampled from)."""
        with self._writing():
            outcomes = self._record(children, replica)
        self._refuse_stale(replica, generation, children)
        return outcomes

    def _record(self, children, replica: Optional[int]) -> list[Outcome]:
        outcomes = self.ledger.record_all(children, replica)
        for arch, _, _ in children:
            self._wake(arch.hash)
        return outcomes

    def _refuse_stale(self, replica: Optional[int], generation: int, children) -> None:
        """A replica already replaced whose process lived on: its rows are kept (a second
        result of the same child is not), but it must not learn from them, or it would move the
        policy with rewards its successor trains again."""
        if children and self._stale(replica, generation):
            raise StaleReplicaError(f"replica {replica} generation {generation} was replaced; "
                                    "its children are recorded, its gradient is not applied")

    async def reuse(self, arch: Architecture, replica: int, controller_version: Optional[int]) -> Optional[Outcome]:
        """Commit a cached child once its identical twin has finished; None if the twin never will."""
        while self.ledger.finished(arch.hash) is None:
            if not self.ledger.in_flight(arch.hash):
                return None
            event = self._changed[arch.hash]
            await event.wait()
        with self._writing():
            return self.ledger.record_cached(arch, replica, controller_version)

    async def report_push(self, report: PushReport) -> None:
        with self._writing(), self.ledger.store.batch():
            self._record_push(report)

    def _record_push(self, report: PushReport) -> None:
        self.ledger.record_push(report)
        if report.controller is not None:
            self.controllers[report.replica] = report.controller

    async def shard_restored(self, index: int, version: int, cause: str) -> int:
        """Record a shard reloaded from the checkpoint; its new epoch."""
        with self._writing():
            epoch, lost = self.ledger.store.add_restore(index, version, cause)
        log.warning("shard %d restored to version %d (%s): %d updates applied after the checkpoint "
                    "are lost", index, version, cause, lost)
        return epoch

    async def lost_updates(self) -> int:
        return self.ledger.store.lost_updates()

    async def controller_states(self) -> dict[int, dict]:
        return dict(self.controllers)

    async def last_seq(self, replica: int) -> int:
        """The last update of ``replica`` the store has recorded."""
        return self.ledger.store.last_seq(replica)

    async def take_recovered(self, m: int, replica: int) -> list[Architecture]:
        """Up to m children that were in flight when the search stopped or their replica died,
        to train again (once); they become that replica's."""
        with self._writing():
            return self.ledger.take_recovered(m, replica)

    async def replica_lost(self, replica: int) -> tuple[int, int]:
        """A replica died: its unfinished children go back to be trained again. Returns how
        many, and the generation of its successor."""
        self.generations[replica] = self.generations.get(replica, 0) + 1
        with self._writing():
            return len(self.ledger.reclaim(replica)), self.generations[replica]

    async def set_generations(self, generations: dict[int, int]) -> None:
        """The driver's count of each replica's restarts (sent again after this actor restarted)."""
        for replica, generation in generations.items():
            self.generations[replica] = max(generation, self.generations.get(replica, 0))

    async def progress(self) -> Progress:
        return self.ledger.progress

    async def recent(self) -> tuple[tuple[Member, ...], int]:
        """The recent children evolution and the reward predictor propose from (none for
        other strategies), and how many ever joined them."""
        return self.ledger.recent_since(0)

    async def interrupt(self) -> None:
        self.ledger.interrupt()

    async def close(self) -> None:
        self.ledger.close()

    def _stale(self, replica: Optional[int], generation: int) -> bool:
        # Older than the newest generation known; after a restart none is known until the
        # driver says, and none is taken for stale meanwhile.
        return generation < self.generations.get(replica, 0)

    @contextmanager
    def _writing(self):
        """A store that cannot be written (a full disk, an I/O error) stops the search, with
        the reason; what was committed stays, and the transaction in progress is rolled back."""
        try:
            yield
        except sqlite3.Error as exc:
            message = f"{self.path}: cannot write the results store ({exc})"
            self.ledger.progress.stop_reason, self.ledger.progress.last_error = "store", message
            raise StoreWriteError(message) from None

    def _wake(self, arch_hash: str) -> None:
        event = self._changed.pop(arch_hash, None)
        if event is not None:
            event.set()
