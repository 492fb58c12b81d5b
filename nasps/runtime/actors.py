"""Thin Ray actor wrappers around the plain classes that do the work.

- ``ParameterServerShard``: a ``ParameterShard`` (one slice of the policy, its Adam state).
- ``ChildWorker``: builds its evaluator once (data stays resident) and trains one child a call.
- ``Recorder``: the ledger and results store, on the driver's node, so the store is a local
  file there. Async, so a child that waits for an identical one in training does not block it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import ray

from nasps.evaluators import ChildResult, build_evaluator, run_child
from nasps.ledger import Admission, Ledger, Outcome, Progress
from nasps.parameter_server import ParameterShard
from nasps.spaces import Architecture
from nasps.store import ResultsStore

log = logging.getLogger(__name__)

ParameterServerShard = ray.remote(ParameterShard)


@ray.remote
class ChildWorker:
    def __init__(self, evaluator_config):
        self.evaluator = build_evaluator(evaluator_config)

    def evaluate(self, arch: Architecture) -> ChildResult:
        return run_child(self.evaluator, arch)


@ray.remote
class Recorder:
    def __init__(self, store_path: str, budget_children: int, sample_cap: int):
        self.ledger = Ledger(ResultsStore(Path(store_path)), budget_children, sample_cap)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def admit(self, hashes: list[str]) -> list[Admission]:
        return self.ledger.admit(hashes)

    async def record(self, arch: Architecture, result: ChildResult, replica: int,
                     controller_version: int) -> Outcome:
        outcome = self.ledger.record(arch, result, replica, controller_version)
        self._wake(arch.hash)
        return outcome

    async def release(self, arch: Architecture) -> None:
        self.ledger.release(arch)
        self._wake(arch.hash)

    async def reuse(self, arch: Architecture, replica: int, controller_version: int) -> Optional[Outcome]:
        """Commit a cached child once its identical twin has finished; None if the twin never will."""
        while self.ledger.finished(arch.hash) is None:
            if not self.ledger.in_flight(arch.hash):
                return None
            event = self._changed[arch.hash]
            await event.wait()
        return self.ledger.record_cached(arch, replica, controller_version)

    async def report_push(self, child_ids: Sequence[int], staleness: int, rows: list[tuple]) -> None:
        self.ledger.store.add_pushes(rows)
        self.ledger.store.set_staleness(child_ids, staleness)

    async def progress(self) -> Progress:
        return self.ledger.progress

    async def interrupt(self) -> None:
        self.ledger.interrupt()

    async def close(self) -> None:
        self.ledger.store.close()

    def _wake(self, arch_hash: str) -> None:
        event = self._changed.pop(arch_hash, None)
        if event is not None:
            event.set()
