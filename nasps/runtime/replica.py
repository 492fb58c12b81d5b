"""The controller replica actor: pull, sample m, train them, push, on its own and without end.

Each replica loops independently of the others (no barrier): pull every shard, sample m
architectures, have the ledger admit them, train the admitted ones on its m child workers,
commit their rows, compute the REINFORCE gradient and push each slice to its shard. The maths
is ``nasps.controller.Controller``; this file is only the orchestration.

Workers sit idle from a round's last child to the next round's first, so that stretch is kept
short: children go to the workers before their admission is back (Ray hands the admission to
the call before it runs), children that finish together are committed in one call, and the
gradient is computed while the commit is on its way, the push waiting in Ray for the commit.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from nasps.controller import Controller
from nasps.evaluators import ChildResult
from nasps.ledger import Admission, Outcome
from nasps.parameter_server import join_params, to_wire
from nasps.policies import SampledBatch, build_policy
from nasps.runtime.worker import ChildWorker
from nasps.spaces import build_space

log = logging.getLogger(__name__)

MAX_FAILED_STARTS = 5  # a worker that fails to start this many times in a row is given up
WORKER_LOST = object()  # the result of a child whose worker died
# A finished child waits at most this long for others of its round to finish, so that they are
# committed in one recorder call: the recorder serves every replica, and each call costs it
# about a millisecond. The last child of a round is committed at once.
COMMIT_WINDOW_S = 0.1


@dataclass
class RoundTiming:
    """Seconds a replica spent on each part of its rounds, summed."""

    rounds: int = 0
    pull: float = 0.0
    sample: float = 0.0
    children: float = 0.0
    gradient: float = 0.0
    push: float = 0.0
    replaced_workers: int = 0
    commits: int = 0  # calls that committed children (several children can share one)


@dataclass(frozen=True)
class _Batch:
    """One round's samples: the parameters they came from and what the ledger made of them."""

    params: torch.Tensor
    versions: list[int]
    sampled: SampledBatch
    archs: list
    admissions: list
    early: dict = field(default_factory=dict)  # calls sent before the admission was back: ref -> (index, worker)

    @property
    def controller_version(self) -> Optional[int]:
        return min(self.versions) if self.versions else None


@dataclass
class _Trained:
    """A round's children once every one has finished, and the recorder calls committing them."""

    results: list  # index in batch -> ChildResult of a child trained this round, else None
    recording: dict  # recorder's commit ref -> indices in batch (its value: their outcomes)
    reusing: dict  # recorder's ref of a cached child's row -> index in batch (one outcome)

    def outcomes(self, committed: bool = True) -> list[Optional[Outcome]]:
        """Each child's outcome: as committed (waits for the commits), or with ``committed``
        false as the results say it will be (ids to come). A cached child's is always the
        committed row of its identical twin."""
        outcomes = [None if r is None else Outcome(0, r.status, r.reward, cached=False, error=r.error)
                    for r in self.results]
        for i, outcome in zip(self.reusing.values(), ray.get(list(self.reusing))):
            outcomes[i] = outcome
        if committed:
            for indices, batch_outcomes in zip(self.recording.values(), ray.get(list(self.recording))):
                for i, outcome in zip(indices, batch_outcomes):
                    outcomes[i] = outcome
        return outcomes


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
        self.config = config
        space = build_space(config.space)
        policy = build_policy(config.strategy, space.decisions())
        self.controller = Controller(replica, space, policy, config.strategy,
                                     config.cluster.children_per_replica, config.seed)
        if controller_state is not None:  # a resumed search: baseline, push counter, generator
            self.controller.load_state_dict(controller_state)
        self.shards = shards
        self.bounds = bounds
        self.recorder = recorder
        self.worker_options = worker_options
        self.max_retries = config.cluster.max_retries
        self.workers = [self._new_worker() for _ in range(config.cluster.children_per_replica)]
        # A worker takes children once it is up: one that cannot be placed (a node gone, a
        # smaller cluster) never gets one, and the replica trains on those it has.
        self.idle: set[int] = set()  # workers up and free for a child
        self.starting = {w.__ray_ready__.remote(): i for i, w in enumerate(self.workers)}
        self.failed_starts = [0] * len(self.workers)
        self.timing = RoundTiming()
        self._pulled = None  # (slices, versions) that the last push replied with
        self._push_report = None  # the last push, for the recorder, sent with the next admit
        self._samples = 0  # children sampled by all replicas, as of this replica's last admit

    def _new_worker(self):
        return ChildWorker.options(**self.worker_options).remote(self.config.evaluator)

    def ready(self) -> bool:
        """Returns once every child worker of this replica has been constructed."""
        refs = list(self.starting)
        ray.wait(refs, num_returns=len(refs))
        self._started(refs)
        return True

    def run(self) -> RoundTiming:
        """Rounds until the ledger admits nothing more.

        Each round: sample m (from the parameters the last push replied with, or a pull), have
        the ledger admit them, train them, commit their rows, compute the gradient, push it.
        """
        self._samples = ray.get(self.recorder.progress.remote()).samples  # the depth in force
        self._retrain_recovered()
        batch = self._next_batch()
        while batch is not None:
            self._learn(batch, self._train(batch))
            self.timing.rounds += 1
            batch = self._next_batch()
        if self._push_report is not None:
            ray.get(self.recorder.report_push.remote(*self._push_report))
        for worker in self.workers:  # free their CPUs and GPUs for replicas still training
            ray.kill(worker)
        return self.timing

    def _retrain_recovered(self) -> None:
        """Train the children that were in flight when the search last stopped (a resumed
        search), m at a time. Their samples came from a policy since replaced, so they are
        recorded but feed no gradient."""
        while archs := ray.get(self.recorder.take_recovered.remote(len(self.workers), self.replica)):
            admissions = [Admission("run")] * len(archs)
            self._train(_Batch(torch.zeros(0), [], None, archs, admissions)).outcomes()

    def _next_batch(self) -> Optional[_Batch]:
        """Sample m architectures and have them admitted; None when none is."""
        t0 = time.perf_counter()
        if self.controller.learns:
            if self._pulled is None:
                pulled = ray.get([s.pull.remote() for s in self.shards])
                self._pulled = [p for p, _ in pulled], [v for _, v in pulled]
            slices, versions = self._pulled
            self._pulled = None
            params = join_params(slices)
        else:
            params, versions = torch.zeros(0), [0]
        t1 = time.perf_counter()
        sampled, archs = self.controller.sample(params, self._samples)
        admitted = self.recorder.admit.remote(archs, self._push_report, self.replica, self.generation)
        self._push_report = None
        # Send the children to the idle workers now, with the admission as an argument that Ray
        # resolves before the call runs: a worker trains its child only if it was admitted to
        # run. Sending m calls costs the replica about a millisecond each; this way that time
        # overlaps the admission's round trip instead of following it.
        early = {}
        for i, w in zip(range(len(archs)), sorted(self.idle)):
            self.idle.discard(w)
            early[self.workers[w].evaluate.remote(archs[i], admitted, i)] = (i, w)
        admissions, self._samples = ray.get(admitted)
        self.timing.pull += t1 - t0
        self.timing.sample += time.perf_counter() - t1
        if all(a.kind == "drop" for a in admissions):
            for ref, result in zip(early, self._results(list(early), early, archs)):
                if result is not WORKER_LOST:
                    self.idle.add(early[ref][1])
            return None
        return _Batch(params, versions, sampled, archs, admissions, early)

    def _train(self, batch: _Batch) -> _Trained:
        """Train the admitted children and send each row to be committed as it finishes."""
        t0 = time.perf_counter()
        archs, version = batch.archs, batch.controller_version
        training = dict(batch.early)  # worker's result ref -> (index in batch, worker)
        recording = {}  # recorder's commit ref -> indices in batch (a list of outcomes)
        reusing = {}  # recorder's ref of a cached row -> index in batch (one outcome)
        queue = deque()  # children waiting for a worker
        sent = {i for i, _ in batch.early.values()}
        for i, (arch, admission) in enumerate(zip(archs, batch.admissions)):
            if admission.kind == "run" and i not in sent:
                queue.append(i)
            elif admission.kind in ("cached", "wait"):
                reusing[self.recorder.reuse.remote(arch, self.replica, version)] = i
        results = [None] * len(archs)
        retries = [0] * len(archs)

        def dispatch() -> None:
            while queue and self.idle:
                w = self.idle.pop()
                i = queue.popleft()
                training[self.workers[w].evaluate.remote(archs[i])] = (i, w)

        dispatch()
        unrecorded = []  # (index in batch, result) of finished children not yet sent to commit
        first_finished = 0.0  # when the oldest of them finished
        while training or queue or unrecorded:
            waiting = list(training) + list(self.starting)
            if not unrecorded:
                # Block for the first result (or a replacement worker coming up), then take
                # every other one already there.
                ray.wait(waiting, num_returns=1)
                ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
            elif training:
                # A child has finished: give the rest of the round until the window closes to
                # finish too (one wait, not one per child: each costs the replica CPU).
                ready, _ = ray.wait(waiting, num_returns=len(waiting),
                                    timeout=max(0.0, first_finished + COMMIT_WINDOW_S - time.time()))
            else:
                ready = []
            self._started([ref for ref in ready if ref in self.starting])
            done = [ref for ref in ready if ref in training]
            for ref, result in zip(done, self._results(done, training, archs)):
                i, w = training.pop(ref)
                if result is not WORKER_LOST:
                    self.idle.add(w)
                if batch.admissions[i].kind != "run":
                    continue  # sent before its admission was back, and not admitted: not trained
                if result is not WORKER_LOST:
                    finished = (i, result)
                elif retries[i] < self.max_retries:  # its worker died: again, on another worker
                    retries[i] += 1
                    queue.appendleft(i)
                    continue
                else:
                    finished = (i, self._lost_result(retries[i]))
                if not unrecorded:
                    first_finished = time.time()
                unrecorded.append(finished)
                results[finished[0]] = finished[1]
            dispatch()
            # Children that finish close together are committed in one call: the last of a
            # round at once, the others after at most COMMIT_WINDOW_S.
            if unrecorded and (not training or time.time() - first_finished >= COMMIT_WINDOW_S):
                self.timing.commits += 1
                commit = self.recorder.record.remote([(archs[i], result) for i, result in unrecorded],
                                                     self.replica, version, self.generation)
                recording[commit] = [i for i, _ in unrecorded]
                unrecorded = []
        self.timing.children += time.perf_counter() - t0
        return _Trained(results, recording, reusing)

    def _learn(self, batch: _Batch, trained: _Trained) -> None:
        """The REINFORCE gradient of this batch at the parameters it was sampled from, pushed.

        The gradient is computed from the results while their commits are on the way; the
        pushes carry the commits, so Ray applies them only once every row is committed."""
        t0 = time.perf_counter()
        scored = self.controller.feedback(batch.sampled.actions, trained.outcomes(committed=False))
        gradient = self.controller.gradient(batch.params, scored)
        t1 = time.perf_counter()
        commits = list(trained.recording)
        if gradient is None:
            ray.get(commits)
        else:
            seq = self.controller.next_seq()
            replies = ray.get([
                shard.push_and_pull.remote(self.name, seq, to_wire(gradient[start:stop]), version, *commits)
                for shard, (start, stop), version in zip(self.shards, self.bounds, batch.versions)])
            receipts = [receipt for receipt, _, _ in replies]
            # The reply is the shard after this push: the next sample needs no separate pull.
            self._pulled = [p for _, p, _ in replies], [v for _, _, v in replies]
            rows = [(self.replica, seq, s, batch.versions[s], r.version, r.staleness, r.applied, r.epoch)
                    for s, r in enumerate(receipts)]
            staleness = max(r.staleness for r in receipts)
            stats = self.controller.round_stats(seq, batch.sampled, scored, batch.archs[0].depth)
            # The rows that fed the gradient, now that their ids are known (the commits are back).
            fed = [x.child_id for x in self.controller.feedback(batch.sampled.actions, trained.outcomes())]
            self._push_report = (fed, staleness, rows, stats, self.controller.state_dict())
        self.timing.gradient += t1 - t0
        self.timing.push += time.perf_counter() - t1

    def _started(self, refs: list) -> None:
        """Replacement workers that came up take children; one that failed to start is
        replaced again. One that cannot be placed (its node gone, the cluster smaller) simply
        never comes up: the replica goes on with the workers it has."""
        for ref in refs:
            w = self.starting.pop(ref)
            try:
                ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                self.failed_starts[w] += 1
                log.warning("replica %d: child worker %d failed to start (%d times): %s", self.replica, w,
                            self.failed_starts[w], type(exc).__name__)
                if self.failed_starts[w] < MAX_FAILED_STARTS:
                    self._replace_worker(w)
                if not self.starting and not self.idle and all(
                        n >= MAX_FAILED_STARTS for n in self.failed_starts):
                    raise RuntimeError(f"replica {self.replica}: no child worker could start") from exc
                continue
            self.failed_starts[w] = 0
            self.idle.add(w)

    def _results(self, refs: list, training: dict, archs: list) -> list:
        """The results of finished children; WORKER_LOST for a child whose worker died (the
        worker is replaced)."""
        try:
            return ray.get(refs)
        except (RayActorError, RayTaskError):
            pass
        results = []
        for ref in refs:  # only after a worker died: find which
            try:
                results.append(ray.get(ref))
            except (RayActorError, RayTaskError) as exc:
                i, w = training[ref]
                log.warning("replica %d: child worker %d lost while training %s: %s",
                            self.replica, w, archs[i].hash, type(exc).__name__)
                self._replace_worker(w)
                results.append(WORKER_LOST)
        return results

    def _replace_worker(self, w: int) -> None:
        ray.kill(self.workers[w], no_restart=True)  # "unavailable" may still be training: end it
        self.workers[w] = self._new_worker()
        self.starting[self.workers[w].__ray_ready__.remote()] = w
        self.timing.replaced_workers += 1

    def _lost_result(self, retries: int) -> ChildResult:
        """A child whose worker died on every try is a failed child."""
        now = time.time()
        return ChildResult("failed", None, {"retries": retries},
                           f"worker lost {retries + 1} time(s) (cluster.max_retries {self.max_retries})",
                           None, now, now)

