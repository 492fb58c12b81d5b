"""Thin Ray actor wrappers around the plain classes that do the work.

- ``ParameterServerShard``: a ``ParameterShard`` (one slice of the policy, its Adam state).
- ``Recorder``: the ledger and results store, on the driver's node, so the store is a local
  file there. Async, so a child that waits for an identical one in training does not block it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import ray
import torch

from nasps.board import Board
from nasps.evaluators import ChildResult
from nasps.ledger import Admission, Ledger, Outcome, Progress
from nasps.parameter_server import AdamSettings, ParameterShard, PushReceipt
from nasps.spaces import Architecture
from nasps.store import ResultsStore, RoundStats

log = logging.getLogger(__name__)

@ray.remote
class ParameterServerShard:
    """A ``ParameterShard`` that speaks numpy arrays on the wire: Ray ships those without
    pickling (zero-copy), which makes a push several times cheaper than with torch tensors."""

    def __init__(self, index: int, params, adam: AdamSettings):
        self.shard = ParameterShard(index, torch.tensor(np.asarray(params)), adam)

    def pull(self) -> tuple[np.ndarray, int]:
        params, version = self.shard.pull()
        return params.numpy(), version

    def push(self, replica: str, seq: int, gradient, version_pulled: int) -> PushReceipt:
        return self.shard.push(replica, seq, torch.tensor(gradient), version_pulled)

    def push_and_pull(self, replica: str, seq: int, gradient,
                      version_pulled: int) -> tuple[PushReceipt, np.ndarray, int]:
        receipt, params, version = self.shard.push_and_pull(replica, seq, torch.tensor(gradient),
                                                            version_pulled)
        return receipt, params.numpy(), version

    def state_dict(self) -> dict:
        return self.shard.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shard.load_state_dict(state)


@ray.remote
class Recorder:
    def __init__(self, store_path: str, budget_children: int, sample_cap: int,
                 board_dir: Optional[str] = None):
        board = Board(board_dir) if board_dir is not None else None
        self.ledger = Ledger(ResultsStore(Path(store_path)), budget_children, sample_cap, board)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._recovered = list(self.ledger.recovered)  # in flight when the search last stopped
        self.controllers: dict[int, dict] = {}  # replica -> its controller state at its last push

    async def admit(self, archs: list[Architecture],
                    push_report: Optional[tuple] = None) -> tuple[list[Admission], int]:
        """Admit a replica's new samples; ``push_report`` is its previous round's push, if any
        (carried here to save the replica one call per round). Also returns how many children
        all replicas have sampled, which sets the depth of the replica's next round."""
        if push_report is not None:
            await self.report_push(*push_report)
        return self.ledger.admit(archs), self.ledger.progress.samples

    async def record(self, children: list[tuple[Architecture, ChildResult]], replica: int,
                     controller_version: int) -> list[Outcome]:
        """Commit the children that finished (one call for all that finished together)."""
        outcomes = [self.ledger.record(arch, result, replica, controller_version)
                    for arch, result in children]
        for arch, _ in children:
            self._wake(arch.hash)
        return outcomes

    async def reuse(self, arch: Architecture, replica: int, controller_version: int) -> Optional[Outcome]:
        """Commit a cached child once its identical twin has finished; None if the twin never will."""
        while self.ledger.finished(arch.hash) is None:
            if not self.ledger.in_flight(arch.hash):
                return None
            event = self._changed[arch.hash]
            await event.wait()
        return self.ledger.record_cached(arch, replica, controller_version)

    async def report_push(self, child_ids: Sequence[int], staleness: int, rows: list[tuple],
                          stats: Optional[RoundStats] = None, controller: Optional[dict] = None) -> None:
        self.ledger.record_push(list(child_ids), staleness, rows, stats)
        if controller is not None:
            self.controllers[controller["replica"]] = controller

    async def controller_states(self) -> dict[int, dict]:
        return dict(self.controllers)

    async def take_recovered(self, m: int) -> list[Architecture]:
        """Up to m children that were in flight when the search stopped, to train again (once)."""
        taken, self._recovered = self._recovered[:m], self._recovered[m:]
        return taken

    async def progress(self) -> Progress:
        return self.ledger.progress

    async def interrupt(self) -> None:
        self.ledger.interrupt()

    async def close(self) -> None:
        self.ledger.close()

    def _wake(self, arch_hash: str) -> None:
        event = self._changed.pop(arch_hash, None)
        if event is not None:
            event.set()
