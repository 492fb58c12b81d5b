"""Thin Ray actor wrappers around the plain classes that do the work.

- ``ParameterServerShard``: a ``ParameterShard`` (one slice of the policy, its Adam state).
- ``Recorder``: the ledger and results store, on the driver's node, so the store is a local
  file there. Async, so a child that waits for an identical one in training does not block it.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import ray
import torch

from nasps.checkpoint import load_checkpoint
from nasps.evaluators import ChildResult
from nasps.ledger import Admission, Ledger, Outcome, Progress
from nasps.parameter_server import AdamSettings, ParameterShard, PushReceipt, from_wire
from nasps.spaces import Architecture
from nasps.store import ResultsStore, RoundStats

log = logging.getLogger(__name__)


class StaleReplicaError(RuntimeError):
    """A call from a replica the driver has replaced."""


def _restarted() -> bool:
    with warnings.catch_warnings():  # Ray 2.60 warns about its own use of a deprecated property
        warnings.simplefilter("ignore", DeprecationWarning)
        return ray.get_runtime_context().was_current_actor_reconstructed


@ray.remote
class ParameterServerShard:
    """A ``ParameterShard`` that speaks plain types on the wire: gradients come as bytes and
    parameters go back as numpy arrays; torch tensors cost Ray a torch (de)serialisation."""

    def __init__(self, index: int, params, adam: AdamSettings, run_dir: Optional[str] = None,
                 recorder: Optional[str] = None):
        """``params``: the initial slice, or its length for a restartable shard (``run_dir``)
        whose state the driver loads next: a restart then needs no constructor argument from
        the object store, only the checkpoint, which the driver writes before any update.
        ``recorder`` is the recorder actor's name (a handle would be an argument in the store)."""
        initial = torch.zeros(params) if isinstance(params, int) else torch.tensor(np.asarray(params))
        self.shard = ParameterShard(index, initial, adam)
        if run_dir is not None and _restarted():
            # Ray restarted this shard after its process died: continue from the last checkpoint
            # and say how many updates that lost.
            state = load_checkpoint(run_dir)["shards"][index]
            epoch = ray.get(ray.get_actor(recorder).shard_restored.remote(index, state["version"], "restart"))
            self.shard.load_state_dict(state, epoch)

    def pull(self) -> tuple[np.ndarray, int]:
        params, version = self.shard.pull()
        return params.numpy(), version

    def push(self, replica: str, seq: int, gradient, version_pulled: int) -> PushReceipt:
        return self.shard.push(replica, seq, from_wire(gradient), version_pulled)

    def push_and_pull(self, replica: str, seq: int, gradient, version_pulled: int,
                      *committed) -> tuple[PushReceipt, np.ndarray, int]:
        """Apply a gradient (``to_wire`` bytes) and reply with the parameters after it.

        ``committed``: the recorder's commits of the rows whose rewards made this gradient. A
        replica passes them as object refs, so Ray runs the push only once they have returned:
        no reward moves the policy before its row is durable, and the replica need not wait for
        the commit itself before pushing. Their values are not needed here."""
        receipt, params, version = self.shard.push_and_pull(replica, seq, from_wire(gradient), version_pulled)
        return receipt, params.numpy(), version

    def state_dict(self) -> dict:
        return self.shard.state_dict()

    def load_state_dict(self, state: dict, epoch: int = 0) -> None:
        self.shard.load_state_dict(state, epoch)

    def set_params(self, params) -> None:
        self.shard.params = torch.tensor(np.asarray(params))


@ray.remote
class Recorder:
    def __init__(self, store_path: str, budget_children: int, sample_cap: int):
        self.ledger = Ledger(ResultsStore(Path(store_path)), budget_children, sample_cap)
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

        self.controllers: dict[int, dict] = {}  # replica -> its controller state at its last push
        self.generations: dict[int, int] = {}  # replica -> restarts: calls of older ones are stale

    async def admit(self, archs: list[Architecture], push_report: Optional[tuple] = None,
                    replica: Optional[int] = None, generation: int = 0) -> tuple[list[Admission], int]:
        """Admit a replica's new samples; ``push_report`` is its previous round's push, if any
        (carried here to save the replica one call per round). Also returns how many children
        all replicas have sampled, which sets the depth of the replica's next round."""
        if generation != self.generations.get(replica, 0):
            # A replica the driver has already replaced (its process outlived the verdict):
            # it gets nothing more to train, so no ticket goes to a child nobody will finish.
            return [Admission("drop")] * len(archs), self.ledger.progress.samples
        with self.ledger.store.batch():
            if push_report is not None:
                self._record_push(*push_report)
            admissions = self.ledger.admit(archs, replica)
        return admissions, self.ledger.progress.samples

    async def record(self, children: list[tuple[Architecture, ChildResult]], replica: int,
                     controller_version: int, generation: int = 0) -> list[Outcome]:
        """Commit the children that finished (one call for all that finished together)."""
        outcomes = self.ledger.record_all(children, replica, controller_version)
        for arch, _ in children:
            self._wake(arch.hash)
        if generation != self.generations.get(replica, 0):
            # A replica already replaced whose process lived on: its rows are kept (a second
            # result of the same child is not), but the push that waits for this commit must
            # fail, or it would move the policy with rewards its successor trains again.
            raise StaleReplicaError(f"replica {replica} generation {generation} was replaced; "
                                    "its children are recorded, its gradient is not applied")
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
        with self.ledger.store.batch():
            self._record_push(child_ids, staleness, rows, stats, controller)

    def _record_push(self, child_ids: Sequence[int], staleness: int, rows: list[tuple],
                     stats: Optional[RoundStats] = None, controller: Optional[dict] = None) -> None:
        self.ledger.record_push(list(child_ids), staleness, rows, stats)
        if controller is not None:
            self.controllers[controller["replica"]] = controller

    async def shard_restored(self, index: int, version: int, cause: str) -> int:
        """Record a shard reloaded from the checkpoint; its new epoch."""
        epoch, lost = self.ledger.store.add_restore(index, version, cause)
        log.warning("shard %d restored to version %d (%s): %d updates applied after the checkpoint "
                    "are lost", index, version, cause, lost)
        return epoch

    async def lost_updates(self) -> int:
        return self.ledger.store.lost_updates()

    async def controller_states(self) -> dict[int, dict]:
        return dict(self.controllers)

    async def take_recovered(self, m: int, replica: int) -> list[Architecture]:
        """Up to m children that were in flight when the search stopped or their replica died,
        to train again (once); they become that replica's."""
        return self.ledger.take_recovered(m, replica)

    async def replica_lost(self, replica: int) -> tuple[int, int]:
        """A replica died: its unfinished children go back to be trained again. Returns how
        many, and the generation of its successor."""
        self.generations[replica] = self.generations.get(replica, 0) + 1
        return len(self.ledger.reclaim(replica)), self.generations[replica]

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
