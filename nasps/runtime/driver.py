"""The driver: start or join Ray, create the actors, follow progress, stop at the budget.

``ray.init()`` with no address starts an embedded local Ray; ``--address`` (or RAY_ADDRESS)
joins a running cluster. The recorder (ledger and results store) is pinned to the driver's
node, so the run directory is a local folder even on a cluster. On Ctrl-C the ledger stops
admitting children and everything committed so far stays in the store.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nasps.board import SafeBoard, open_board
from nasps.checkpoint import CheckpointClock, check_resumable, load_checkpoint, resume_seq, save_checkpoint
from nasps.config import Config
from nasps.errors import UserInputError
from nasps.ledger import Progress
from nasps.parameter_server import join_params, shard_bounds, split_params
from nasps.policies import build_policy
from nasps.rundir import open_new_store
from nasps.runtime.actors import ParameterServerShard, Recorder
from nasps.runtime.replica import ControllerReplica, RoundTiming
from nasps.search import adam_settings
from nasps.spaces import build_space
from nasps.store import STORE_NAME, ResultsStore

log = logging.getLogger(__name__)

MAX_REPLICA_RESTARTS = 100  # beyond this a replica's failures are a bug, not bad luck: stop


@dataclass
class SearchSummary:
    progress: Progress
    wall_s: float
    timings: list[RoundTiming]
    shard_versions: list[int]
    params: torch.Tensor  # the policy's final flat parameter vector, joined from the shards
    shard_states: list[dict]  # each shard's final state: parameters, Adam moments, version
    ready_at: float  # when every actor was up and the replicas started their first round
    lost_updates: int = 0  # shard updates lost to restores from the checkpoint (resume, shard death)
    replica_restarts: int = 0


def connect(address: Optional[str], runtime_env: dict) -> bool:
    """Start or join Ray. Returns True when this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    env = dict(runtime_env)
    env_vars = dict(env.get("env_vars", {}))
    # Workers import the user's evaluator the way the driver does: from the current directory
    # and PYTHONPATH (the paths exist on this machine; a cluster uses working_dir/py_modules).
    paths = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env_vars.setdefault("PYTHONPATH", os.pathsep.join(paths))
    env["env_vars"] = env_vars
    address = address or os.environ.get("RAY_ADDRESS") or None
    # "local" starts a new Ray even when one started by `ray start` runs on this machine (plain
    # ray.init() would join that one): no --address means nasps's own embedded Ray.
    kwargs = {} if address else {"include_dashboard": False}
    address = address or "local"
    try:
        ray.init(address=address, runtime_env=env, logging_level=logging.WARNING, **kwargs)
    except ConnectionError as exc:
        hint = "" if os.environ.get("RAY_AUTH_MODE") else (
            "; if the cluster uses token authentication, set RAY_AUTH_MODE=token")
        raise UserInputError(f"--address {address}: cannot join the Ray cluster ({exc}){hint}") from None
    return True


def run_search(config: Config, run_dir: str | Path, *, address: Optional[str] = None,
               on_progress: Optional[Callable[[Progress], None]] = None,
               poll_s: float = 1.0, resume: bool = False) -> SearchSummary:
    """Run one search to its budget on Ray and return what happened. With ``resume`` the run
    directory already holds this search (``nasps.rundir.open_for_resume`` checked it): the
    learning state comes from its checkpoint and the store goes on where it stopped."""
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir) if resume else None
    if resume:
        check_resumable(config, checkpoint)
    else:
        open_new_store(run_dir, config).close()
    started_ray = connect(address, config.cluster.runtime_env)
    started = time.time()
    # TensorBoard follows the store from the driver, off the recorder that every replica waits on.
    board = open_board(run_dir, config)
    try:
        return _run(config, run_dir, on_progress, poll_s, started, resume, checkpoint, started_ray, board)
    finally:
        if board is not None:
            board.close()
        if started_ray:
            ray.shutdown()


def _last_seqs(run_dir: Path) -> dict[int, int]:
    """The last push sequence number of each replica in the store."""
    store = ResultsStore(run_dir / STORE_NAME, readonly=True)
    try:
        pushes = store.pushes()
    finally:
        store.close()
    last_seq: dict[int, int] = {}
    for p in pushes:
        last_seq[p[0]] = max(last_seq.get(p[0], 0), p[1])
    return last_seq


def _run(config: Config, run_dir: Path, on_progress, poll_s: float, started: float, resume: bool,
         checkpoint: Optional[dict], started_ray: bool, board: Optional[SafeBoard]) -> SearchSummary:
    cluster = config.cluster
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    recorder_name = f"nasps-recorder-{uuid.uuid4().hex[:12]}"
    recorder = Recorder.options(num_cpus=0, scheduling_strategy=here, name=recorder_name).remote(
        str((run_dir / STORE_NAME).resolve()), config.budget.children, config.budget.sample_cap)

    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    bounds = shard_bounds(policy.num_params, cluster.parameter_servers if policy.learns else 1)
    initial = [p.numpy() for p in split_params(policy.initial_params(config.seed), bounds)]
    adam = adam_settings(config)
    # Shards live on the driver's node, next to the checkpoint they restart from when their
    # process dies (Ray restarts them and retries the calls in flight; pushes are idempotent).
    shards = [ParameterServerShard.options(num_cpus=0, scheduling_strategy=here, max_restarts=-1,
                                           max_task_retries=-1).remote(
        i, len(p), adam, str(run_dir.resolve()), recorder_name) for i, p in enumerate(initial)] if policy.learns else []
    ray.get([s.set_params.remote(p) for s, p in zip(shards, initial)])
    pushed: dict[int, int] = {}
    controllers: dict[int, dict] = {}
    if resume:
        pushed = _last_seqs(run_dir)
        if checkpoint is not None:
            for index, (shard, state) in enumerate(zip(shards, checkpoint["shards"])):
                epoch = ray.get(recorder.shard_restored.remote(index, state["version"], "resume"))
                ray.get(shard.load_state_dict.remote(state, epoch))
            controllers = checkpoint["replicas"]
            lost = ray.get(recorder.lost_updates.remote())
            if lost:
                log.warning("resuming: the policy continues from the last checkpoint; in all, %d shard "
                            "updates of this run have been lost to restores", lost)
        if checkpoint is None and policy.learns:
            log.warning("resuming without a checkpoint: the policy starts again from its initial "
                        "parameters; every finished child is kept")

    # Children spread over the nodes that can hold them: a node that leaves takes only its share.
    worker_options = {"num_cpus": cluster.cpus_per_child, "num_gpus": cluster.gpus_per_child,
                      "scheduling_strategy": "SPREAD"}
    if not started_ray and cluster.runtime_env:
        # Ray was started by the caller (a script, a notebook): the config's runtime_env did not
        # go into ray.init, so the workers, which run the user's code, take it themselves.
        worker_options["runtime_env"] = cluster.runtime_env
    def make_replica(k: int, state: Optional[dict], generation: int = 0):
        # On the driver's node with the recorder and shards: a worker node that leaves takes
        # only child workers with it.
        return ControllerReplica.options(num_cpus=0, scheduling_strategy=here).remote(
            k, config, shards, bounds, recorder, worker_options, state, generation)

    replicas = [make_replica(k, _controller_state(k, controllers, checkpoint, pushed))
                for k in range(cluster.replicas)]
    restarts = 0
    clock = CheckpointClock(config.checkpoint.every_s, config.checkpoint.every_updates,
                            checkpoint["updates"] if checkpoint else 0)

    def save() -> None:
        if shards:
            progress = ray.get(recorder.progress.remote())
            states = ray.get([s.state_dict.remote() for s in shards])
            saved = {**controllers, **ray.get(recorder.controller_states.remote())}
            save_checkpoint(run_dir, states, saved, progress.updates)
            clock.saved(progress.updates)

    if checkpoint is None:
        save()  # version 0: a shard that dies before the first update restarts from here

    try:
        # Start every replica's loop only once all K*m workers exist, so no replica races ahead
        # while others are still starting (starting a worker process can take seconds).
        pending = [r.ready.remote() for r in replicas]
        said_at = time.time()
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            if pending and time.time() - said_at >= 5.0:  # say it now and then, not every poll
                said_at = time.time()
                log.info("starting actors: %d of %d replicas have all their workers (%d workers of "
                         "%s CPU and %s GPU each; more than the cluster holds never start)",
                         len(replicas) - len(pending), len(replicas), cluster.replicas *
                         cluster.children_per_replica, cluster.cpus_per_child, cluster.gpus_per_child)
        ready_at = time.time()
        runs = {r.run.remote(): k for k, r in enumerate(replicas)}
        timings = []
        while runs:
            ready, _ = ray.wait(list(runs), num_returns=len(runs), timeout=poll_s)
            for ref in ready:
                k = runs.pop(ref)
                try:
                    timings.append(ray.get(ref))
                except (RayActorError, RayTaskError) as exc:
                    if restarts >= MAX_REPLICA_RESTARTS:
                        raise
                    replicas[k] = _restart_replica(k, replicas[k], exc, make_replica, recorder, shards,
                                                   controllers)
                    runs[replicas[k].run.remote()] = k
                    restarts += 1
            progress = ray.get(recorder.progress.remote())
            if on_progress is not None:
                on_progress(progress)
            if board is not None:
                board.follow()
            if shards and clock.due(progress.updates):
                save()
        save()
    except KeyboardInterrupt:
        # Stop admitting children; rows already committed stay. Children in flight are dropped.
        log.warning("interrupted: keeping the children finished so far")
        ray.get(recorder.interrupt.remote())
        for r in replicas:
            ray.kill(r)
        save()
        timings, ready_at = [], time.time()
    progress = ray.get(recorder.progress.remote())
    states = ray.get([s.state_dict.remote() for s in shards])
    lost = ray.get(recorder.lost_updates.remote())
    ray.get(recorder.close.remote())
    return SearchSummary(progress, time.time() - started, timings, [s["version"] for s in states],
                         join_params([s["params"] for s in states]), states, ready_at, lost, restarts)


def _restart_replica(k: int, old, exc: Exception, make_replica, recorder, shards: list, controllers: dict):
    """A replica whose process died (killed, its node lost): its unfinished children go back
    to be trained again, and a new replica k continues from its last reported controller with
    fresh weights from the shards (its push counter past every push they applied)."""
    ray.kill(old, no_restart=True)  # "unavailable" may be a replica still running: end it first
    reclaimed, generation = ray.get(recorder.replica_lost.remote(k))
    state = ray.get(recorder.controller_states.remote()).get(k, controllers.get(k))
    shard_states = ray.get([s.state_dict.remote() for s in shards])
    seq = resume_seq(k, state, shard_states)
    state = {**(state or {"replica": k, "baseline": None, "generator": None}), "seq": seq}
    log.warning("replica %d died (%s); restarting it, %d of its children will be trained again",
                k, type(exc).__name__, reclaimed)
    return make_replica(k, state, generation)


def _controller_state(replica: int, controllers: dict[int, dict], checkpoint: Optional[dict],
                      pushed: dict[int, int]) -> Optional[dict]:
    """A replica's controller as the checkpoint left it, its push counter past every receipt
    the shards hold for it and every push the store recorded (``pushed``: replica -> last seq,
    so the pushes lost with the stop keep their rows); None for a new run."""
    if checkpoint is None:
        return None
    seq = max(resume_seq(replica, controllers.get(replica), checkpoint["shards"]), pushed.get(replica, 0))
    state = controllers.get(replica)
    if state is None:
        return {"replica": replica, "baseline": None, "seq": seq, "generator": None}
    return {**state, "seq": seq}
