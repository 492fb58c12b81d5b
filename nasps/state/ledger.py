"""The ledger: which sampled children get trained, which reuse a result, when the search ends.

Every sampled architecture is admitted here before it is trained:
- ``run``: it takes one of the budget's tickets and is trained;
- ``cached``: an identical architecture of this run already finished, so its result is reused
  (a row with cached = 1, not counted against the budget, not trained again);
- ``wait``: an identical architecture is being trained right now; the result is reused once
  that one finishes;
- ``drop``: the search is over (budget spent, sample cap reached, too many failures in a row,
  interrupted); it is not kept.
Tickets never exceed ``budget.children``, so the search stops at exactly the budget.

Which results a repeat may reuse: an ``ok`` or ``stopped`` child always; a ``failed``,
``diverged`` or ``timeout`` child only within the driver run that trained it (the same code
fails the same way, but a resumed search may run fixed code); an ``oom`` child never (memory
depends on what else shares the device), so a repeat of it is trained again.

Plain Python around the results store: the runtime wraps it in a Ray actor. The store's
``pending`` table mirrors which replica trains each admitted child, so a ledger rebuilt from
the store (a resumed search, a recorder restarted) knows what is in flight.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from nasps.config import EarlyStoppingConfig
from nasps.evaluators import SCORED, ChildResult, headline
from nasps.spaces import Architecture
from nasps.state.store import PushRow, ResultsStore, RoundStats

log = logging.getLogger(__name__)

# Statuses that count towards budget.max_consecutive_failures.
FAILURES = ("failed", "diverged", "timeout")


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated between the two nearest (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


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


@dataclass(frozen=True)
class Admitted:
    """The recorder's answer to a replica: the outcomes of the children it committed and the
    admissions of its new samples, with how many children all replicas have sampled (which
    sets the depth of the replica's next samples)."""

    admissions: tuple[Admission, ...]
    samples: int
    outcomes: tuple[Outcome, ...] = ()
    recent: tuple["Member", ...] = ()  # the recent children the replica has not seen yet
    recent_end: int = 0  # how many children have ever joined the recent ones, these included
    thresholds: tuple = ()  # early stopping's (depth, {epoch: threshold}) in force


@dataclass(frozen=True)
class Member:
    """A trained child with a reward (ok, or stopped early), as evolution and the reward
    predictor see it: its architecture's value and its reward."""

    arch: dict
    reward: float


@dataclass(frozen=True)
class PushReport:
    """One controller update as its replica reports it once the shards have answered: the rows
    of its pushes, the children whose rewards made it, and the controller's view of it."""

    replica: int
    seq: int
    child_ids: tuple[int, ...]
    staleness: int  # the largest over the shards
    pushes: tuple[PushRow, ...]
    stats: RoundStats
    controller: Optional[dict] = None  # the replica's controller state after the update


@dataclass
class Progress:
    trained: int = 0
    cached: int = 0
    in_flight: int = 0
    samples: int = 0
    best_reward: Optional[float] = None
    best_metric: Optional[str] = None  # what people read of that child: "val 93.10%", "ppl 81.2"
    by_status: dict[str, int] = field(default_factory=dict)
    stop_reason: Optional[str] = None  # budget | sample_cap | failures | store | interrupted
    updates: int = 0  # controller updates committed (pushes of all replicas)
    started_at: float = field(default_factory=time.time)  # of this ledger (a rebuilt one starts anew)
    failures_in_a_row: int = 0  # trained or cached children that ended failed, diverged or timeout
    last_error: Optional[str] = None  # of the last of them


class Ledger:
    def __init__(self, store: ResultsStore, budget_children: int, sample_cap: int, *,
                 max_consecutive_failures: Optional[int] = None, run_started_at: Optional[float] = None,
                 pending_in_flight: bool = False, recent: int = 0,
                 early_stopping: Optional[EarlyStoppingConfig] = None):
        """``run_started_at``: failures committed since then are reused by repeats (None: all).
        ``pending_in_flight``: the store's pending children are still being trained by the
        replicas it names (the recorder was restarted mid-run); otherwise (a new driver run)
        they were in flight when the search stopped and are to be trained again, once.
        ``recent``: keep the last this many children with a reward (ok or stopped), in the
        order they were committed (evolution's population, the reward predictor's data; 0 = none).
        ``early_stopping``: keep the trained children's validation curves, for ``thresholds``."""
        self.store = store
        self.budget = budget_children
        self.sample_cap = sample_cap
        self.max_failures = None  # set below: rows already stored never stop a search by themselves
        self.progress = Progress(updates=store.count_updates())
        self._reusable: dict[str, Outcome] = {}  # arch hash -> the result a repeat reuses
        self._trained: dict[str, Outcome] = {}  # arch hash -> its last trained child
        self._in_flight: Counter[str] = Counter()  # arch hash -> children being trained
        self._running: dict[Optional[int], list[Architecture]] = {}  # replica -> admitted to run
        self._statuses: Counter[str] = Counter()
        self.recent: deque[Member] = deque(maxlen=recent)
        self.recent_end = 0  # children that ever joined `recent`
        self.early_stopping = early_stopping
        # (depth, epoch) -> the scores trained children of that depth had there, sorted
        self._scores: dict[tuple[Optional[int], int], list[float]] = {}
        rows = store.children()
        for row in rows:
            since = run_started_at is None or (row.finished_at or 0.0) >= run_started_at
            outcome = Outcome(row.id, row.status, row.reward, row.cached, row.error)
            self._note(row.arch_hash, outcome, reusable_failure=since, metrics=row.metrics, depth=row.depth)
            self._join_recent(row.arch, outcome)
        self.progress.failures_in_a_row, self.progress.last_error = 0, None  # a streak is per driver run
        self.max_failures = max_consecutive_failures
        self.recovered: list[Architecture] = []  # admitted, not finished, and nobody trains them
        pending = store.pending()
        for child in pending:
            arch = Architecture(child.space, child.arch_json, child.depth)
            self._in_flight[arch.hash] += 1
            self.progress.in_flight += 1
            if pending_in_flight and child.replica is not None:
                self._running.setdefault(child.replica, []).append(arch)
            else:
                self.recovered.append(arch)
        if not pending_in_flight:
            store.set_pending_replica([a.hash for a in self.recovered], None)
        self.progress.samples = len(rows) + len(pending)

    @property
    def tickets_left(self) -> int:
        return self.budget - self.progress.trained - self.progress.in_flight

    def admit(self, archs: list[Architecture], replica: Optional[int] = None) -> list[Admission]:
        """Decide, for each sampled architecture in order, what becomes of it. Those admitted to
        run are written down as pending, so a resumed search knows what was in flight."""
        decisions = [self._admit(a.hash) for a in archs]
        running = [a for a, d in zip(archs, decisions) if d.kind == "run"]
        self.store.add_pending([(a.space, a.json_text, a.hash, a.depth) for a in running], replica)
        self._running.setdefault(replica, []).extend(running)
        return decisions

    def take_recovered(self, m: int, replica: Optional[int]) -> list[Architecture]:
        """Up to m recovered children, now ``replica``'s to train."""
        recovered = [a for a in self.recovered if self._in_flight[a.hash] > 0]
        taken, self.recovered = recovered[:m], recovered[m:]
        self.store.set_pending_replica([a.hash for a in taken], replica)
        self._running.setdefault(replica, []).extend(taken)
        return taken

    def reclaim(self, replica: Optional[int]) -> list[Architecture]:
        """The children a replica that died had admitted and not finished: they keep their
        tickets and go back to be trained again (``recovered``)."""
        lost = [a for a in self._running.pop(replica, []) if self._in_flight[a.hash] > 0]
        self.store.set_pending_replica([a.hash for a in lost], None)
        self.recovered.extend(lost)
        return lost

    def _admit(self, arch_hash: str) -> Admission:
        p = self.progress
        if p.stop_reason in ("interrupted", "budget", "failures", "store"):
            return Admission("drop")  # the search is over: not even cached rows
        if p.samples >= self.sample_cap:
            if p.stop_reason is None:
                p.stop_reason = "sample_cap"
                log.warning("stopping: %d architectures sampled (budget.max_samples) with %d of %d children "
                            "trained; the policy keeps proposing architectures it has already seen",
                            p.samples, p.trained, self.budget)
            return Admission("drop")
        if arch_hash in self._reusable:
            p.samples += 1
            return Admission("cached", self._reusable[arch_hash])
        if self._in_flight[arch_hash]:
            p.samples += 1
            return Admission("wait")
        if self.tickets_left > 0:
            p.samples += 1
            self._in_flight[arch_hash] += 1
            p.in_flight += 1
            return Admission("run")
        return Admission("drop")

    def record(self, arch: Architecture, result: ChildResult, replica: Optional[int],
               controller_version: Optional[int]) -> Outcome:
        """Commit a trained child (one that was admitted as ``run``)."""
        return self.record_all([(arch, result, controller_version)], replica)[0]

    def record_all(self, children: Sequence[tuple[Architecture, ChildResult, Optional[int]]],
                   replica: Optional[int]) -> list[Outcome]:
        """Commit trained children, each with the policy version it was sampled from, in one
        transaction. The ledger's own counts change only once it has committed: if any row
        fails, none is stored and every child is still in flight. A second result for a child
        already committed (a retried commit, or its replica was replaced while training it and
        both finished) is not committed again: the first stands."""
        outcomes: list[Optional[Outcome]] = [None] * len(children)
        written = []  # (index, arch, outcome) of the rows this transaction writes
        with self.store.batch():
            for k, (arch, result, controller_version) in enumerate(children):
                if self._in_flight[arch.hash] <= 0:
                    first = self._trained.get(arch.hash)
                    if first is None:
                        raise RuntimeError(f"child {arch.hash} was not admitted to run")
                    log.info("a second result for child %s (a retried commit, or its replica was replaced "
                             "while training it): the first stands", arch.hash)
                    outcomes[k] = first
                    continue
                row_id = self.store.add_child(
                    arch_json=arch.json_text, arch_hash=arch.hash, status=result.status,
                    reward=result.reward, metrics=result.metrics, error=result.error, cached_from=None,
                    replica=replica, controller_version=controller_version, worker=result.worker,
                    started_at=result.started_at, finished_at=result.finished_at, depth=arch.depth)
                written.append((k, arch, Outcome(row_id, result.status, result.reward, cached=False,
                                                 error=result.error), result.metrics))
        for k, arch, outcome, metrics in written:
            if arch in self.recovered:  # a late result of a child that was to be trained again
                self.recovered.remove(arch)
            self._in_flight[arch.hash] -= 1
            self.progress.in_flight -= 1
            for running in self._running.values():
                if arch in running:
                    running.remove(arch)
                    break
            self._note(arch.hash, outcome, metrics=metrics, depth=arch.depth)
            self._join_recent(arch, outcome)
            outcomes[k] = outcome
        return outcomes

    def record_push(self, report: PushReport) -> None:
        """Commit one controller update: its shard pushes, the children that fed it, and the
        controller's view of it. A report made twice (a retried call) is counted once."""
        self.store.add_pushes(report.pushes)
        self.store.set_update(report.child_ids, report.seq, report.staleness)
        if self.store.add_round(report.stats, report.staleness):
            self.progress.updates += 1

    def close(self) -> None:
        self.store.close()

    def finished(self, arch_hash: str) -> Optional[Outcome]:
        """The result a repeat of this architecture reuses, if there is one yet."""
        return self._reusable.get(arch_hash) or (None if self._in_flight[arch_hash] else
                                                 self._trained.get(arch_hash))

    def in_flight(self, arch_hash: str) -> bool:
        return self._in_flight[arch_hash] > 0

    def record_cached(self, arch: Architecture, replica: Optional[int],
                      controller_version: Optional[int]) -> Outcome:
        """Commit a child that reuses the finished result of an identical architecture."""
        origin = self.finished(arch.hash)
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

    def _join_recent(self, arch: Architecture | dict, outcome: Outcome) -> None:
        """A trained child with a reward joins the recent ones; the oldest leaves. (A search
        that keeps none parses no architecture here: this is on every commit's path.)"""
        if self.recent.maxlen and not outcome.cached and outcome.status in SCORED \
                and outcome.reward is not None and math.isfinite(outcome.reward):
            self.recent.append(Member(arch.as_dict() if isinstance(arch, Architecture) else arch,
                                      outcome.reward))
            self.recent_end += 1

    def recent_since(self, known: int) -> tuple[tuple[Member, ...], int]:
        """The recent children after the first ``known`` that ever joined (those still kept),
        and how many ever joined: a replica asks for only what it has not seen."""
        new = min(self.recent_end - known, len(self.recent))
        newest_first = itertools.islice(reversed(self.recent), max(new, 0))
        return tuple(reversed(tuple(newest_first))), self.recent_end

    def thresholds(self) -> dict[Optional[int], dict[int, float]]:
        """{depth: {epoch: the score below which a child of that depth stops after that epoch}}:
        the keep_quantile of the scores the trained children of its depth had there, from
        grace_epochs on, where min_children have one (empty without early stopping). By depth,
        because a depth curriculum's deeper children come later and learn at another pace: the
        shallow ones of the search's start would set the bar too low for them."""
        rule = self.early_stopping
        if rule is None:
            return {}
        thresholds: dict[Optional[int], dict[int, float]] = {}
        for (depth, epoch), scores in self._scores.items():
            if epoch >= rule.grace_epochs and len(scores) >= rule.min_children:
                thresholds.setdefault(depth, {})[epoch] = quantile(scores, rule.keep_quantile)
        return thresholds

    @property
    def done(self) -> bool:
        """True when no more children will be admitted to run and none are in flight."""
        if self.progress.in_flight:
            return False
        return self.progress.stop_reason is not None or self.progress.trained >= self.budget

    def _note(self, arch_hash: str, outcome: Outcome, reusable_failure: bool = True,
              metrics: Optional[Mapping[str, Any]] = None, depth: Optional[int] = None) -> None:
        p = self.progress
        if outcome.cached:
            p.cached += 1
        else:
            p.trained += 1
            self._trained[arch_hash] = outcome
            if self.early_stopping is not None and outcome.status in SCORED:
                for epoch, score in (metrics or {}).get("curve", ()):
                    if math.isfinite(score):
                        bisect.insort(self._scores.setdefault((depth, int(epoch)), []), score)
            if outcome.status in SCORED or (outcome.status in FAILURES and reusable_failure):
                self._reusable.setdefault(arch_hash, outcome)
        self._statuses[outcome.status] += 1
        p.by_status = dict(self._statuses)
        if outcome.reward is not None and math.isfinite(outcome.reward) and \
                (p.best_reward is None or outcome.reward > p.best_reward):
            p.best_reward = outcome.reward
            p.best_metric = headline(metrics or {})
        if outcome.status in SCORED:
            p.failures_in_a_row = 0
        elif outcome.status in FAILURES:
            p.failures_in_a_row += 1
            p.last_error = outcome.error
            if self.max_failures is not None and p.failures_in_a_row >= self.max_failures \
                    and p.stop_reason is None:
                p.stop_reason = "failures"
                log.warning("stopping: %d children in a row ended failed, diverged or timeout "
                            "(budget.max_consecutive_failures); the last: %s", p.failures_in_a_row, p.last_error)
        if p.trained >= self.budget and p.stop_reason is None:
            p.stop_reason = "budget"
