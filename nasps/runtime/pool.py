"""A replica's m child workers: which child each trains, which wait behind it, and deadlines.

Plain Python inside the replica's process (it calls Ray, the replica decides what to train).
A worker trains one child at a time; while children are short, a second one waits queued
behind it, so the worker never waits for the replica. The pool turns every way a child can end
into a result: its worker's reply, a worker that died (retried on another worker up to
``cluster.max_retries``), or a deadline passed (the worker is killed and the child is
``timeout``). Nothing it waits for goes unsaid: a child that runs far longer than the others
without a deadline is logged, and so are workers that take long to start.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from nasps.evaluators import ChildResult
from nasps.runtime.worker import ChildWorker
from nasps.spaces import Architecture

log = logging.getLogger(__name__)

MAX_FAILED_STARTS = 5  # a worker that fails to start this many times in a row is given up
# A worker holds a second child queued behind the one it trains while children take less than
# this (median): a child's few milliseconds at the replica then matter, and the queue hides
# them. Longer children start their next one a round trip after they finish.
QUEUE_AHEAD_S = 2.0
LOST_REPLY_S = 5.0  # how long a child's reply may trail the news that its worker died
# Without a deadline, a child running this many times the median child (and at least
# STRAGGLER_MIN_S) is logged once, so that a hung evaluator never goes unnoticed.
STRAGGLER_FACTOR = 10.0
STRAGGLER_MIN_S = 60.0
STARTING_MESSAGE_S = 60.0  # how often a pool with no worker up says that it waits for them


@dataclass(eq=False)
class Child:
    """One child on its way through a replica: sampled (or recovered), admitted, trained,
    committed, and then (if it was sampled there) part of an update."""

    arch: Architecture
    actions: Optional[tuple[int, ...]] = None  # None: a recovered child, which feeds no gradient
    entropy: float = 0.0  # of the policy along its sample
    version: Optional[int] = None  # the policy version it was sampled from
    worker: Optional[int] = None
    ref: Any = None  # its evaluate call
    started: float = 0.0  # when its worker began it, as the replica sees it: its deadline runs from here
    retries: int = 0
    warned: bool = False


class WorkerPool:
    def __init__(self, name: str, size: int, worker_options: dict, evaluator_config,
                 deadline: Optional[float], max_retries: int, queue_ahead: bool):
        self.name, self.size = name, size
        self.worker_options, self.evaluator_config = worker_options, evaluator_config
        self.deadline, self.max_retries = deadline, max_retries
        # Queueing behind a child stops when a worker dies with one queued: a child that kills
        # its worker may take the reply of the one before it along, and then which of the two
        # did it cannot be told.
        self.queue_ahead = queue_ahead
        self.calls: dict[Any, tuple[str, Any]] = {}  # ref -> ("start", worker) or ("train", child)
        self.workers: list = [None] * size
        self.up: set[int] = set()  # workers started and alive
        self.on_worker = [deque() for _ in range(size)]  # children sent to each: the first trains
        self.failed_starts = [0] * size
        self.queue: deque[Child] = deque()  # admitted to run, waiting for room on a worker
        self.thresholds: dict = {}  # early stopping's by depth, as the recorder last said
        self.durations: deque[float] = deque(maxlen=200)  # of children that finished ok
        self.median_s = 0.0
        self.replaced = self.timeouts = 0
        self.said_at = time.time()  # when a pool with no worker up last said so
        for w in range(size):
            self._start(w)

    def ready(self) -> int:
        """Wait until every worker has started (or failed to); how many are up."""
        refs = [ref for ref, (kind, _) in self.calls.items() if kind == "start"]
        ray.wait(refs, num_returns=len(refs))
        for ref in refs:
            self.handle(ref)
        return len(self.up)

    def depth(self) -> int:
        """Children a worker holds at once: a second waits behind the one it trains only while
        children are short enough for the round trip to matter."""
        return 2 if self.queue_ahead and self.durations and self.median_s < QUEUE_AHEAD_S else 1

    def room(self) -> int:
        """Children the workers that are up can take now, less those queued for them."""
        depth = self.depth()
        return sum(max(0, depth - len(self.on_worker[w])) for w in self.up) - len(self.queue)

    def idle(self) -> bool:
        return any(not self.on_worker[w] for w in self.up)

    def busy(self) -> bool:
        return bool(self.queue) or any(self.on_worker)

    def assign(self) -> None:
        """Queued children go to the workers with the fewest children."""
        depth = self.depth()
        while self.queue:
            w = min(self.up, key=lambda w: len(self.on_worker[w]), default=None)
            if w is None or len(self.on_worker[w]) >= depth:
                return
            child = self.queue.popleft()
            child.worker = w
            if not self.on_worker[w]:
                child.started = time.time()
            self.on_worker[w].append(child)
            child.ref = self.workers[w].evaluate.remote(child.arch, self.thresholds.get(child.arch.depth, {}))
            self.calls[child.ref] = ("train", child)

    def handle(self, ref) -> list[tuple[Child, ChildResult]]:
        """A call of the pool's that came back; the children it finished."""
        kind, what = self.calls.pop(ref)
        if kind == "start":
            self._started(ref, what)
            return []
        child = what
        try:
            result = ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            log.warning("%s: child worker %d lost while training %s: %s", self.name, child.worker,
                        child.arch.hash, type(exc).__name__)
            return self._lose(child.worker)
        waiting = self.on_worker[child.worker]
        waiting.popleft()
        if waiting:
            waiting[0].started = time.time()
        return [self._finished(child, result)]

    def watch(self) -> list[tuple[Child, ChildResult]]:
        """Children past their deadline lose their worker and end as ``timeout``; without a
        deadline, one far slower than the others is logged once."""
        now, ended = time.time(), []
        if self.up:
            self.said_at = now
        elif now - self.said_at >= STARTING_MESSAGE_S:
            self.said_at = now
            log.warning("%s: waiting for its %d child workers to start (%s)", self.name, self.size,
                        self.worker_options)
        for child in self._training():
            running = now - child.started
            if self.deadline is not None and running >= self.deadline:
                self.timeouts += 1
                log.warning("%s: child %s gave no result in %.0f s; its worker is killed", self.name,
                            child.arch.hash, running)
                ended += self._lose(child.worker, ChildResult(
                    "timeout", None, {}, f"no result {self.deadline:g} s after it started (evaluator.timeout_s); "
                    "its worker was killed and replaced", None, child.started, now))
            elif self.deadline is None and not child.warned and running >= self._straggler_s():
                child.warned = True
                log.warning("%s: child %s has trained for %.0f s, over %.0fx the median child; "
                            "evaluator.timeout_s would bound it", self.name, child.arch.hash, running,
                            STRAGGLER_FACTOR)
        return ended

    def timers(self) -> list[float]:
        """When ``watch`` has something to do."""
        timers = []
        for child in self._training():
            if self.deadline is not None:
                timers.append(child.started + self.deadline)
            elif not child.warned:
                timers.append(child.started + self._straggler_s())
        return timers

    def close(self) -> None:
        for worker in self.workers:  # free their CPUs and GPUs for replicas still training
            ray.kill(worker)

    def _training(self) -> list[Child]:
        return [self.on_worker[w][0] for w in self.up if self.on_worker[w]]

    def _straggler_s(self) -> float:
        return max(STRAGGLER_MIN_S, STRAGGLER_FACTOR * self.median_s)

    def _finished(self, child: Child, result: ChildResult) -> tuple[Child, ChildResult]:
        if result.status == "ok":
            self.durations.append(result.duration_s)
            self.median_s = statistics.median(self.durations)
        return child, result

    def _lose(self, w: int, result: Optional[ChildResult] = None) -> list[tuple[Child, ChildResult]]:
        """A worker that died, or is killed at its child's deadline (``result``: the child's
        timeout). The child it trained is retried on another worker (a death, up to
        cluster.max_retries) or ends; the children queued behind it go back to the queue."""
        children = list(self.on_worker[w])
        self.on_worker[w].clear()
        for child in children:
            self.calls.pop(child.ref, None)
        ended = []
        # One that finished just before its worker died is done: its reply may still be on its
        # way when the death is known, and comes within a moment (the worker is gone).
        while result is None and children:
            try:
                ended.append(self._finished(children[0], ray.get(children[0].ref, timeout=LOST_REPLY_S)))
            except (RayActorError, RayTaskError, GetTimeoutError):
                break
            children.pop(0)
        ray.kill(self.workers[w], no_restart=True)  # "unavailable" may still be training: end it
        self.up.discard(w)
        self._start(w)
        self.replaced += 1
        if not children:
            return ended
        head, rest = children[0], children[1:]
        if result is None and rest:  # which of them killed it cannot be told: neither is counted
            self.queue_ahead = False
            self.queue.extendleft(reversed(children))
            return ended
        self.queue.extendleft(reversed(rest))
        if result is None and head.retries < self.max_retries:
            head.retries += 1
            self.queue.appendleft(head)
            return ended
        if result is None:
            now = time.time()
            result = ChildResult("failed", None, {"retries": head.retries},
                                 f"worker lost {head.retries + 1} time(s) (cluster.max_retries "
                                 f"{self.max_retries})", None, now, now)
        return ended + [(head, result)]

    def _start(self, w: int) -> None:
        self.workers[w] = ChildWorker.options(**self.worker_options).remote(self.evaluator_config)
        self.calls[self.workers[w].__ray_ready__.remote()] = ("start", w)

    def _started(self, ref, w: int) -> None:
        """A worker came up and takes children; one that failed to start is started again. One
        that cannot be placed (its node gone, the cluster smaller) never comes up: the replica
        goes on with the workers it has."""
        try:
            ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            self.failed_starts[w] += 1
            log.warning("%s: child worker %d failed to start (%d times): %s", self.name, w,
                        self.failed_starts[w], type(exc).__name__)
            if self.failed_starts[w] < MAX_FAILED_STARTS:
                self._start(w)
            elif not self.up and all(n >= MAX_FAILED_STARTS for n in self.failed_starts):
                raise RuntimeError(f"{self.name}: no child worker could start") from exc
            return
        self.failed_starts[w] = 0
        self.up.add(w)
