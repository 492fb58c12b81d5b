"""The controller replica actor: pull, sample m, train them, push, on its own and without end.

Each replica loops independently of the others (no barrier): pull every shard, sample m
architectures, have the ledger admit them, train the admitted ones on its m child workers,
wait for their rows to be committed, compute the REINFORCE gradient and push each slice to
its shard. The maths is ``nasps.controller.Controller``; this file is only the orchestration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from nasps.controller import Controller
from nasps.evaluators import ChildResult
from nasps.evaluators.base import worker_name
from nasps.parameter_server import join_params
from nasps.policies import build_policy
from nasps.spaces import build_space

log = logging.getLogger(__name__)


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
    pushes: list = field(default_factory=list)


@ray.remote
class ControllerReplica:
    def __init__(self, replica: int, config, shards: list, bounds: list[tuple[int, int]],
                 recorder, worker_options: dict):
        torch.set_num_threads(1)  # many replicas share a machine; their tensors are tiny
        self.replica = replica
        self.name = str(replica)
        self.config = config
        space = build_space(config.space)
        policy = build_policy(config.strategy, space.decisions())
        self.controller = Controller(replica, space, policy, config.strategy,
                                     config.cluster.children_per_replica, config.seed)
        self.shards = shards
        self.bounds = bounds
        self.recorder = recorder
        self.worker_options = worker_options
        self.workers = [self._new_worker() for _ in range(config.cluster.children_per_replica)]
        self.timing = RoundTiming()

    def _new_worker(self):
        from nasps.runtime.actors import ChildWorker
        return ChildWorker.options(**self.worker_options).remote(self.config.evaluator)

    def ready(self) -> bool:
        """Returns once every child worker of this replica has been constructed."""
        ray.get([w.__ray_ready__.remote() for w in self.workers])
        return True

    def run(self) -> RoundTiming:
        while self.round():
            pass
        return self.timing

    def round(self) -> bool:
        """One pull-sample-train-push round. False when the ledger admits nothing more."""
        t = self.timing
        t0 = time.perf_counter()
        if self.controller.learns:
            pulled = ray.get([s.pull.remote() for s in self.shards])
            params = join_params([p for p, _ in pulled])
            versions = [v for _, v in pulled]
        else:
            params, versions = torch.zeros(0), [0]
        controller_version = min(versions)
        t1 = time.perf_counter()
        batch, archs = self.controller.sample(params)
        admissions = ray.get(self.recorder.admit.remote([a.hash for a in archs]))
        t2 = time.perf_counter()
        if all(a.kind == "drop" for a in admissions):
            return False

        pending = {}  # object ref -> index in batch
        runs = iter(range(len(self.workers)))
        for i, (arch, admission) in enumerate(zip(archs, admissions)):
            if admission.kind == "run":
                w = next(runs)
                result = self.workers[w].evaluate.remote(arch)
                # The recorder receives the worker's result directly: the row is committed
                # as soon as the child finishes, before this replica sees its reward.
                ref = self.recorder.record.remote(arch, result, self.replica, controller_version)
                pending[ref] = (i, w)
            elif admission.kind in ("cached", "wait"):
                pending[self.recorder.reuse.remote(arch, self.replica, controller_version)] = (i, None)
        outcomes = [None] * len(archs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, w = pending.pop(ref)
                try:
                    outcomes[i] = ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    if w is None:
                        raise
                    outcomes[i] = self._worker_lost(w, archs[i], controller_version, exc)
        t3 = time.perf_counter()

        scored = self.controller.feedback(batch.actions, outcomes)
        gradient = self.controller.gradient(params, scored)
        t4 = time.perf_counter()
        if gradient is not None:
            seq = self.controller.next_seq()
            receipts = ray.get([
                shard.push.remote(self.name, seq, gradient[start:stop], version)
                for shard, (start, stop), version in zip(self.shards, self.bounds, versions)])
            rows = [(self.replica, seq, s, versions[s], r.version, r.staleness, r.applied)
                    for s, r in enumerate(receipts)]
            staleness = max(r.staleness for r in receipts)
            self.recorder.report_push.remote([x.child_id for x in scored], staleness, rows)
        t5 = time.perf_counter()
        t.rounds += 1
        t.pull += t1 - t0
        t.sample += t2 - t1
        t.children += t3 - t2
        t.gradient += t4 - t3
        t.push += t5 - t4
        return True

    def _worker_lost(self, w: int, arch, controller_version: int, exc: Exception):
        """A child whose worker died is a failed child; the worker is replaced."""
        log.warning("replica %d: child worker %d lost while training %s: %s",
                    self.replica, w, arch.hash, type(exc).__name__)
        self.workers[w] = self._new_worker()
        self.timing.replaced_workers += 1
        now = time.time()
        lost = ChildResult("failed", None, {}, f"worker lost: {type(exc).__name__}",
                           worker_name(), now, now)
        return ray.get(self.recorder.record.remote(arch, lost, self.replica, controller_version))
