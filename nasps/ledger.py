"""The ledger: which sampled children get trained, which reuse a result, when the search ends.

Every sampled architecture is admitted here before it is trained:
- ``run``: it takes one of the budget's tickets and is trained;
- ``cached``: an identical architecture of this run already finished, so its result is reused
  (a row with cached = 1, not counted against the budget, not trained again);
- ``wait``: an identical architecture is being trained right now; the result is reused once
  that one finishes;
- ``drop``: the budget is spent, or the sample cap is reached; it is not kept.
Tickets never exceed ``budget.children``, so the search stops at exactly the budget.
Plain Python around the results store: the runtime wraps it in a Ray actor.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from nasps.evaluators import ChildResult
from nasps.spaces import Architecture
from nasps.store import ResultsStore, RoundStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Admission:
    kind: str                      # run | cached | wait | drop
    child: Optional["Outcome"] = None  # the reused result, for `cached`


@dataclass(frozen=True)
class Outcome:
    """A committed child as the policy sees it: the row id, its status and reward."""

    id: int
    status: str
    reward: Optional[float]
    cached: bool
    error: Optional[str] = None


@dataclass
class Progress:
    trained: int = 0
    cached: int = 0
    in_flight: int = 0
    samples: int = 0
    best_reward: Optional[float] = None
    by_status: dict[str, int] = field(default_factory=dict)
    stop_reason: Optional[str] = None
    updates: int = 0  # controller updates committed (pushes of all replicas)
    started_at: float = field(default_factory=time.time)


class Ledger:
    def __init__(self, store: ResultsStore, budget_children: int, sample_cap: int):
        self.store = store
        self.budget = budget_children
        self.sample_cap = sample_cap
        self.progress = Progress()
        self._finished: dict[str, Outcome] = {}  # arch hash -> first finished child
        self._in_flight: Counter[str] = Counter()  # arch hash -> children being trained
        self._running: dict[Optional[int], list[Architecture]] = {}  # replica -> admitted to run
        self._statuses: Counter[str] = Counter()
        rows = store.children()
        for row in rows:
            self._note(row.arch_hash, Outcome(row.id, row.status, row.reward, row.cached, row.error))
        # A resumed search: children admitted before the stop that never finished keep their
        # tickets and are trained again, once (``recovered``).
        self.recovered = [Architecture(space, text, depth) for space, text, depth in store.pending()]
        for arch in self.recovered:
            self._in_flight[arch.hash] += 1
            self.progress.in_flight += 1
        self.progress.samples = len(rows) + len(self.recovered)

    @property
    def tickets_left(self) -> int:
        return self.budget - self.progress.trained - self.progress.in_flight

    def admit(self, archs: list[Architecture], replica: Optional[int] = None) -> list[Admission]:
        """Decide, for each sampled architecture in order, what becomes of it. Those admitted to
        run are written down as pending, so a resumed search knows what was in flight."""
        decisions = self._admit([a.hash for a in archs])
        running = [a for a, d in zip(archs, decisions) if d.kind == "run"]
        self.store.add_pending([(a.space, a.json_text, a.hash, a.depth) for a in running])
        self._running.setdefault(replica, []).extend(running)
        return decisions

    def take_recovered(self, m: int, replica: Optional[int]) -> list[Architecture]:
        """Up to m recovered children, now ``replica``'s to train."""
        recovered = [a for a in self.recovered if self._in_flight[a.hash] > 0]
        taken, self.recovered = recovered[:m], recovered[m:]
        self._running.setdefault(replica, []).extend(taken)
        return taken

    def reclaim(self, replica: Optional[int]) -> list[Architecture]:
        """The children a replica that died had admitted and not finished: they keep their
        tickets and go back to be trained again (``recovered``)."""
        lost = [a for a in self._running.pop(replica, []) if self._in_flight[a.hash] > 0]
        self.recovered.extend(lost)
        return lost

    def _admit(self, hashes: list[str]) -> list[Admission]:
        decisions = []
        for arch_hash in hashes:
            if self.progress.stop_reason in ("interrupted", "budget"):
                decisions.append(Admission("drop"))  # the search is over: not even cached rows
                continue
            if self.progress.samples >= self.sample_cap:
                if self.progress.stop_reason is None:
                    self.progress.stop_reason = "sample_cap"
                    log.warning("stopping: %d architectures sampled (budget.max_samples) with %d of %d "
                                "children trained; the policy keeps proposing architectures it has "
                                "already seen", self.progress.samples, self.progress.trained, self.budget)
                decisions.append(Admission("drop"))
                continue
            if arch_hash in self._finished:
                self.progress.samples += 1
                decisions.append(Admission("cached", self._finished[arch_hash]))
            elif self._in_flight[arch_hash]:
                self.progress.samples += 1
                decisions.append(Admission("wait"))
            elif self.tickets_left > 0:
                self.progress.samples += 1
                self._in_flight[arch_hash] += 1
                self.progress.in_flight += 1
                decisions.append(Admission("run"))
            else:
                decisions.append(Admission("drop"))
        return decisions

    def record(self, arch: Architecture, result: ChildResult, replica: Optional[int],
               controller_version: Optional[int]) -> Outcome:
        """Commit a trained child (one that was admitted as ``run``)."""
        return self.record_all([(arch, result)], replica, controller_version)[0]

    def record_all(self, children: list[tuple[Architecture, ChildResult]], replica: Optional[int],
                   controller_version: Optional[int]) -> list[Outcome]:
        """Commit trained children in one transaction. The ledger's own counts change only once
        it has committed: if any row fails, none is stored and every child is still in flight.
        A second result for a child already committed (its replica was replaced while training
        it, and both finished) is not committed again: the first stands."""
        outcomes: list[Optional[Outcome]] = [None] * len(children)
        written = []  # (index, arch, outcome) of the rows this transaction writes
        with self.store.batch():
            for k, (arch, result) in enumerate(children):
                if self._in_flight[arch.hash] <= 0:
                    first = self._finished.get(arch.hash)
                    if first is None:
                        raise RuntimeError(f"child {arch.hash} was not admitted to run")
                    log.warning("child %s finished twice (its replica was replaced while training it); "
                                "the first result stands", arch.hash)
                    outcomes[k] = first
                    continue
                row_id = self.store.add_child(
                    arch_json=arch.json_text, arch_hash=arch.hash, status=result.status,
                    reward=result.reward, metrics=result.metrics, error=result.error, cached_from=None,
                    replica=replica, controller_version=controller_version, worker=result.worker,
                    started_at=result.started_at, finished_at=result.finished_at, depth=arch.depth)
                written.append((k, arch, Outcome(row_id, result.status, result.reward, cached=False,
                                                 error=result.error)))
        for k, arch, outcome in written:
            if arch in self.recovered:  # a late result of a child that was to be trained again
                self.recovered.remove(arch)
            self._in_flight[arch.hash] -= 1
            self.progress.in_flight -= 1
            running = self._running.get(replica, [])
            if arch in running:
                running.remove(arch)
            self._note(arch.hash, outcome)
            outcomes[k] = outcome
        return outcomes

    def release(self, arch: Architecture) -> None:
        """Give back the ticket of a child that was admitted but will not finish."""
        if self._in_flight[arch.hash] > 0:
            self._in_flight[arch.hash] -= 1
            self.progress.in_flight -= 1
            self.store.remove_pending(arch.hash)

    def record_push(self, child_ids: list[int], staleness: int, rows: list[tuple],
                    stats: Optional[RoundStats]) -> None:
        """Commit one controller update: its shard pushes, the staleness of the children that fed
        it, and the controller's view of the round."""
        self.store.add_pushes(rows)
        self.store.set_staleness(child_ids, staleness)
        self.progress.updates += 1
        if stats is not None:
            self.store.add_round(stats, staleness)

    def close(self) -> None:
        self.store.close()

    def finished(self, arch_hash: str) -> Optional[Outcome]:
        return self._finished.get(arch_hash)

    def in_flight(self, arch_hash: str) -> bool:
        return self._in_flight[arch_hash] > 0

    def record_cached(self, arch: Architecture, replica: Optional[int],
                      controller_version: Optional[int]) -> Outcome:
        """Commit a child that reuses the finished result of an identical architecture."""
        origin = self._finished[arch.hash]
        now = time.time()
        metrics: Mapping[str, Any] = {}
        row_id = self.store.add_child(
            arch_json=arch.json_text, arch_hash=arch.hash, status=origin.status, reward=origin.reward,
            metrics=metrics, error=origin.error, cached_from=origin.id, replica=replica,
            controller_version=controller_version, worker=None, started_at=now, finished_at=now,
            depth=arch.depth)
        outcome = Outcome(row_id, origin.status, origin.reward, cached=True, error=origin.error)
        self._note(arch.hash, outcome)
        return outcome

    def interrupt(self) -> None:
        self.progress.stop_reason = "interrupted"

    @property
    def done(self) -> bool:
        """True when no more children will be admitted to run and none are in flight."""
        if self.progress.in_flight:
            return False
        return self.progress.stop_reason is not None or self.progress.trained >= self.budget

    def _note(self, arch_hash: str, outcome: Outcome) -> None:
        if outcome.cached:
            self.progress.cached += 1
        else:
            self.progress.trained += 1
            self._finished.setdefault(arch_hash, outcome)
        self._statuses[outcome.status] += 1
        self.progress.by_status = dict(self._statuses)
        if outcome.reward is not None and math.isfinite(outcome.reward):
            best = self.progress.best_reward
            self.progress.best_reward = outcome.reward if best is None else max(best, outcome.reward)
        if self.progress.trained >= self.budget and self.progress.stop_reason is None:
            self.progress.stop_reason = "budget"
