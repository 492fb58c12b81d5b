"""The controller replica actor: keeps its m child workers busy and turns every m finished
children into one REINFORCE update pushed to the shards.

Rolling rounds (``cluster.rounds: rolling``, the default): a worker that finishes starts its
next child at once, sampled from the parameters the replica held when it sampled it (short
children wait queued behind the one their worker trains; ``pool.py``). Rows are committed as
children finish; every m committed children (cached repeats included) make one gradient,
computed at the parameters held then and pushed to every shard, whose replies are the fresh
parameters. Barrier rounds (the paper's): sample m, train them all, push, sample the next m.
Both are one loop: sample, commit, learn, wait for what comes back. The maths is
``nasps.method.controller.Controller``; this file is only the orchestration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError

from nasps.evaluators import ChildResult, deadline_s
from nasps.method.controller import Controller, Scored
from nasps.method.parameter_server import join_params, to_wire
from nasps.policies import build_policy
from nasps.runtime.pool import Child, WorkerPool
from nasps.spaces import build_space
from nasps.state.ledger import Outcome, PushReport
from nasps.state.store import PushRow

# Finished children ride on the next admission; when none goes (barrier rounds, long children,
# the end), those that finish within this window are committed in one call (the recorder
# serves every replica, and each call costs it about a millisecond).
COMMIT_WINDOW_S = 0.1
REPORT_WINDOW_S = 0.5  # an update's report rides on the next admission, or goes alone this soon
HALT_POLL_S = 0.5  # the longest the loop waits without looking whether the driver stopped it
WIND_DOWN_S = 5.0  # how long a stopped replica waits for its commits and pushes on their way


@dataclass
class ReplicaStats:
    """What one replica did, for the driver's summary and the benchmarks."""

    updates: int = 0
    samples: int = 0
    admissions: int = 0  # recorder calls that admitted samples
    commits: int = 0  # recorder calls that committed trained children (several can share one)
    replaced_workers: int = 0
    timeouts: int = 0
    sample_s: float = 0.0  # the replica's own time sampling architectures
    gradient_s: float = 0.0  # and computing gradients


@dataclass
class _Update:
    """A gradient on its way to the shards."""

    seq: int
    scored: list[Scored]
    entropies: list[float]
    depth: Optional[int]
    versions: list[int]  # of the parameters it was computed at, per shard
    replies: list = field(default_factory=list)


@ray.remote
class ControllerReplica:
    def __init__(self, replica: int, config, shards: list, bounds: list[tuple[int, int]],
                 recorder, worker_options: dict, controller_state: Optional[dict] = None,
                 generation: int = 0):
        torch.set_num_threads(1)  # many replicas share a machine; their tensors are tiny
        self.replica = replica
        self.generation = generation  # restarts of this replica id: the recorder ignores older ones
        # The shards' name for this replica's pushes: a successor gets receipts of its own, so
        # a push its predecessor sent late can never make one of its own look like a retry.
        self.name = str(replica) if generation == 0 else f"{replica}.{generation}"
        self.m = config.cluster.children_per_replica
        self.barrier = config.cluster.rounds == "barrier"
        space = build_space(config.space)
        self.controller = Controller(replica, space, build_policy(config.strategy, space.decisions()),
                                     config.strategy, self.m, config.seed)
        if controller_state is not None:  # a resumed or restarted replica: baseline, push counter, generator
            self.controller.load_state_dict(controller_state)
        # Random search and evolution never push, so nothing saves their generator.
        self.saved_stream = controller_state is not None and controller_state.get("generator") is not None
        self.shards, self.bounds, self.recorder = shards, bounds, recorder
        self.pool = WorkerPool(f"replica {replica}", self.m, worker_options, config.evaluator,
                               deadline_s(config.evaluator), config.cluster.max_retries, queue_ahead=not self.barrier)
        self.stats = ReplicaStats()
        self.waiting: dict[Any, tuple[str, Any]] = {}  # the recorder's and shards' calls: ref -> (kind, what)
        self.admitting = 0  # children whose admission is on its way
        self.unrecorded: list[tuple[Child, ChildResult]] = []  # finished, not yet sent to commit
        self.unrecorded_since = 0.0
        self.finished: list[tuple[Child, Outcome]] = []  # committed, waiting for the next update
        self.update: Optional[_Update] = None
        self.report: Optional[PushReport] = None  # the last update's, for the recorder
        self.report_since = 0.0
        self.stopping = False  # the ledger admits nothing more
        self.halted = False  # the driver stops the search (stop())
        self.recovering = True  # children a stopped search or a dead replica left come first
        self.params, self.versions = np.zeros(0, np.float32), []
        self.samples = 0  # children sampled by all replicas, as of this replica's last admission

    def ready(self) -> int:
        """Returns once every child worker of this replica has started (or failed to): how
        many are up. A worker that cannot be placed keeps it waiting (the driver says so)."""
        return self.pool.ready()

    def run(self) -> ReplicaStats:
        """Sample, train, commit and learn until the ledger admits nothing more and nothing
        of this replica is in flight (or the driver stops it)."""
        self.samples = ray.get(self.recorder.progress.remote()).samples  # the depth in force
        if self.samples and not self.saved_stream:
            self.controller.new_stream(self.samples)
        self.controller.observe(*ray.get(self.recorder.recent.remote()))
        if self.controller.learns:
            self._take_parameters(ray.get([s.pull.remote() for s in self.shards]))
        else:
            self.versions = [0]  # random search: every child comes from the one, fixed policy
        while not self.halted:
            self.pool.assign()
            self._sample()
            self._commit()
            self._learn()
            if self.stopping and self.update is None and not self.finished and not self._round_open():
                break
            self._wait()
        if self.halted:
            self._wind_down()
        reports = [ref for ref, (kind, _) in self.waiting.items() if kind == "report"]
        if self.report is not None:
            reports.append(self.recorder.report_push.remote(self.report))
        ray.get(reports)
        self.pool.close()
        self.stats.replaced_workers, self.stats.timeouts = self.pool.replaced, self.pool.timeouts
        return self.stats

    def stop(self) -> None:
        """The driver stops the search (Ctrl-C, SIGTERM, too many failures): run() returns within
        moments, with every finished child committed and the last update reported; the children
        still training are left to a resume. (The replica runs two threads: this call lands
        while run() goes on.)"""
        self.halted = True

    # ------------------------------------------------------------------ the steps of the loop

    def _round_open(self) -> bool:
        """Anything of this replica's children still on its way (admitted, trained, committed)."""
        return bool(self.admitting or self.unrecorded or self.pool.busy()
                    or any(kind in ("commit", "reuse") for kind, _ in self.waiting.values()))

    def _sample(self) -> None:
        """Children for the room on the workers: in rolling mode as soon as a worker is idle, or
        once half of them have room behind the child they train; in barrier mode m at a time,
        once the last round is over. Recovered children come before new samples."""
        if self.stopping or not self.pool.up:
            return
        if self.barrier:
            if self._round_open() or self.finished or self.update is not None:
                return
            n = self.m
        else:
            n = self.pool.room() - self.admitting
            if n <= 0 or (not self.pool.idle() and n < max(1, self.m // 2)):
                return
        if self.recovering:
            archs = ray.get(self.recorder.take_recovered.remote(n, self.replica))
            self.recovering = len(archs) == n
            if archs:
                self.pool.queue.extend(Child(arch) for arch in archs)
                return
        t0 = time.perf_counter()
        sampled, archs = self.controller.sample(self.params, self.samples, n)
        self.stats.sample_s += time.perf_counter() - t0
        self.stats.samples += n
        self.stats.admissions += 1
        # What the recorder should hear anyway rides along: the rows of the children that
        # finished since the last call, and the last update's report.
        finished, self.unrecorded = self.unrecorded, []
        self.stats.commits += bool(finished)
        admitted = self.recorder.admit.remote(archs, self.replica, self.generation,
                                              [(c.arch, result, c.version) for c, result in finished], self.report,
                                              self.controller.known)
        self.report = None
        version = min(self.versions) if self.versions else None
        children = [Child(arch, tuple(actions), entropy, version)
                    for arch, actions, entropy in zip(archs, sampled.actions, sampled.entropies)]
        self.admitting += n
        self.waiting[admitted] = ("admit", (children, finished))

    def _commit(self) -> None:
        """Send the finished children to be committed when no admission took them: together
        when they finish within the window, at once when nothing else of this replica trains."""
        if self.unrecorded and (not self.pool.busy() or time.time() - self.unrecorded_since >= COMMIT_WINDOW_S):
            batch, self.unrecorded = self.unrecorded, []
            self._send_commit(batch)

    def _send_commit(self, batch: list[tuple[Child, ChildResult]]) -> None:
        rows = [(child.arch, result, child.version) for child, result in batch]
        self.waiting[self.recorder.record.remote(rows, self.replica, self.generation)] = ("commit", batch)
        self.stats.commits += 1

    def _learn(self) -> None:
        """One gradient from the committed children, once there are m of them (in barrier mode,
        once the round is over), at the parameters held now, pushed to every shard."""
        if self.update is not None or not self.finished:
            return
        if not self.barrier and len(self.finished) >= self.m:
            batch, self.finished = self.finished[:self.m], self.finished[self.m:]
        elif (self.barrier or self.stopping) and not self._round_open():
            batch, self.finished = self.finished, []  # a round, or what is left at the end
        else:
            return
        batch.sort(key=lambda pair: pair[1].id)  # the order their rows were committed in
        scored = self.controller.feedback([c.actions for c, _ in batch], [o for _, o in batch])
        t0 = time.perf_counter()
        gradient = self.controller.gradient(self.params, scored)
        self.stats.gradient_s += time.perf_counter() - t0
        if gradient is None:
            return
        seq = self.controller.next_seq()
        self.update = _Update(seq, scored, [c.entropy for c, _ in batch], batch[-1][0].arch.depth,
                              list(self.versions), [None] * len(self.shards))
        for s, (shard, (start, stop), version) in enumerate(zip(self.shards, self.bounds, self.versions)):
            self.waiting[shard.push_and_pull.remote(self.name, seq, to_wire(gradient[start:stop]), version)] = \
                ("push", s)

    def _wait(self) -> None:
        """Block until a call returns or a timer is due, then handle whatever has returned."""
        timers = self.pool.timers()
        if self.unrecorded:
            timers.append(self.unrecorded_since + COMMIT_WINDOW_S)
        if self.report is not None:
            timers.append(self.report_since + REPORT_WINDOW_S)
        timeout = min([HALT_POLL_S] + [max(0.0, t - time.time()) for t in timers])
        refs = list(self.waiting) + list(self.pool.calls)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # take every other one already back too (one wait, not one per result)
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref in self.pool.calls:  # a lost worker's other children are handled with the first
                self._finished(self.pool.handle(ref))
            elif ref in self.waiting:
                kind, what = self.waiting.pop(ref)
                getattr(self, f"_on_{kind}")(ref, what)
        self._finished(self.pool.watch())
        if self.report is not None and time.time() - self.report_since >= REPORT_WINDOW_S:
            self._send_report()

    def _wind_down(self) -> None:
        """After stop(): commit what finished, and see the commits, admissions (their rows) and
        pushes (their report) already on their way through, for WIND_DOWN_S at most."""
        if self.unrecorded:
            batch, self.unrecorded = self.unrecorded, []
            self._send_commit(batch)
        deadline = time.time() + WIND_DOWN_S
        while (left := [ref for ref, (kind, _) in self.waiting.items() if kind in ("admit", "commit", "push")]) \
                and time.time() < deadline:
            for ref in ray.wait(left, num_returns=1, timeout=max(0.0, deadline - time.time()))[0]:
                kind, what = self.waiting.pop(ref)
                getattr(self, f"_on_{kind}")(ref, what)

    # ------------------------------------------------------------------ what comes back

    def _finished(self, ended: list[tuple[Child, ChildResult]]) -> None:
        if ended and not self.unrecorded:
            self.unrecorded_since = time.time()
        self.unrecorded += ended

    def _on_admit(self, ref, sent: tuple[list[Child], list[tuple[Child, ChildResult]]]) -> None:
        children, finished = sent
        self.admitting -= len(children)
        admitted = ray.get(ref)
        self.samples = admitted.samples
        self.controller.observe(admitted.recent, admitted.recent_end)
        self.pool.thresholds = dict(admitted.thresholds)
        self._committed(finished, admitted.outcomes)
        for child, admission in zip(children, admitted.admissions):
            if admission.kind == "run":
                self.pool.queue.append(child)
            elif admission.kind in ("cached", "wait"):
                self.waiting[self.recorder.reuse.remote(child.arch, self.replica, child.version)] = ("reuse", child)
            else:  # drop: the ledger admits nothing more
                self.stopping = True

    def _on_commit(self, ref, batch: list[tuple[Child, ChildResult]]) -> None:
        try:
            outcomes = ray.get(ref)
        except RayActorError:
            # The recorder died; Ray restarts it from the store. The commit goes again: if the
            # first made it, the rows are there and the second result of a child is not kept.
            self._send_commit(batch)
            return
        self._committed(batch, outcomes)

    def _committed(self, batch: list[tuple[Child, ChildResult]], outcomes) -> None:
        self.finished += [(child, outcome) for (child, _), outcome in zip(batch, outcomes) if child.actions is not None]

    def _on_reuse(self, ref, child: Child) -> None:
        outcome = ray.get(ref)
        if outcome is not None and child.actions is not None:  # None: its twin will never finish
            self.finished.append((child, outcome))

    def _on_push(self, ref, shard: int) -> None:
        update = self.update
        update.replies[shard] = ray.get(ref)
        if any(reply is None for reply in update.replies):
            return
        self._take_parameters([(params, version) for _, params, version in update.replies])
        receipts = [receipt for receipt, _, _ in update.replies]
        rows = tuple(PushRow(self.replica, update.seq, s, update.versions[s], r.version, r.staleness, r.applied,
                             r.epoch) for s, r in enumerate(receipts))
        stats = self.controller.round_stats(update.seq, update.entropies, update.scored, update.depth)
        if self.report is not None:  # an older report not sent yet: it goes first, alone
            self._send_report()
        self.report = PushReport(self.replica, update.seq, tuple(x.child_id for x in update.scored),
                                 max(r.staleness for r in receipts), rows, stats, self.controller.state_dict())
        self.report_since = time.time()
        self.update = None
        self.stats.updates += 1

    def _send_report(self) -> None:
        self.waiting[self.recorder.report_push.remote(self.report)] = ("report", None)
        self.report = None

    def _on_report(self, ref, _) -> None:
        ray.get(ref)

    def _take_parameters(self, pulled: list) -> None:
        """The shards' slices and versions (a pull, or the replies to a push)."""
        self.params = join_params([params for params, _ in pulled])
        self.versions = [version for _, version in pulled]
