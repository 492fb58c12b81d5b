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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nasps.board import board_dir
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


@dataclass
class SearchSummary:
    progress: Progress
    wall_s: float
    timings: list[RoundTiming]
    shard_versions: list[int]
    params: torch.Tensor  # the policy's final flat parameter vector, joined from the shards
    shard_states: list[dict]  # each shard's final state: parameters, Adam moments, version
    ready_at: float  # when every actor was up and the replicas started their first round
    lost_updates: int = 0  # resumed: shard updates applied after the checkpoint, lost with the stop


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
    kwargs = {} if address else {"include_dashboard": False}
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
    try:
        return _run(config, run_dir, on_progress, poll_s, started, resume, checkpoint)
    finally:
        if started_ray:
            ray.shutdown()


def _pushes_so_far(run_dir: Path, checkpoint: Optional[dict]) -> tuple[int, dict[int, int]]:
    """Shard updates the store saw applied after the checkpoint was taken (lost with the stop),
    and the last push sequence number of each replica."""
    store = ResultsStore(run_dir / STORE_NAME)
    try:
        pushes = store.pushes()
    finally:
        store.close()
    saved = [s["version"] for s in checkpoint["shards"]] if checkpoint else []
    lost = sum(1 for p in pushes if p[6] and p[4] > (saved[p[2]] if p[2] < len(saved) else 0))
    last_seq: dict[int, int] = {}
    for p in pushes:
        last_seq[p[0]] = max(last_seq.get(p[0], 0), p[1])
    return lost, last_seq


def _run(config: Config, run_dir: Path, on_progress, poll_s: float, started: float, resume: bool,
         checkpoint: Optional[dict]) -> SearchSummary:
    cluster = config.cluster
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    tb = board_dir(run_dir, config)
    recorder = Recorder.options(num_cpus=0, scheduling_strategy=here).remote(
        str((run_dir / "results.sqlite").resolve()), config.budget.children, config.budget.sample_cap,
        str(tb.resolve()) if tb is not None else None)

    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    bounds = shard_bounds(policy.num_params, cluster.parameter_servers if policy.learns else 1)
    initial = [p.numpy() for p in split_params(policy.initial_params(config.seed), bounds)]
    adam = adam_settings(config)
    shards = [ParameterServerShard.options(num_cpus=0).remote(i, p, adam)
              for i, p in enumerate(initial)] if policy.learns else []
    lost, pushed = 0, {}
    controllers: dict[int, dict] = {}
    if resume:
        lost, pushed = _pushes_so_far(run_dir, checkpoint)
        if checkpoint is not None:
            ray.get([s.load_state_dict.remote(state) for s, state in zip(shards, checkpoint["shards"])])
            controllers = checkpoint["replicas"]
        if lost:
            log.warning("resuming: %d shard updates applied after the last checkpoint are lost "
                        "(the policy continues from the checkpoint)", lost)
        if checkpoint is None and policy.learns:
            log.warning("resuming without a checkpoint: the policy starts again from its initial "
                        "parameters; every finished child is kept")

    worker_options = {"num_cpus": cluster.cpus_per_child, "num_gpus": cluster.gpus_per_child}
    replicas = [ControllerReplica.options(num_cpus=0).remote(
        k, config, shards, bounds, recorder, worker_options, _controller_state(k, controllers, checkpoint, pushed))
        for k in range(cluster.replicas)]
    clock = CheckpointClock(config.checkpoint.every_s, config.checkpoint.every_updates,
                            checkpoint["updates"] if checkpoint else 0)

    def save() -> None:
        if shards:
            progress = ray.get(recorder.progress.remote())
            states = ray.get([s.state_dict.remote() for s in shards])
            saved = {**controllers, **ray.get(recorder.controller_states.remote())}
            save_checkpoint(run_dir, states, saved, progress.updates)
            clock.saved(progress.updates)

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
        runs = [r.run.remote() for r in replicas]
        remaining = list(runs)
        while remaining:
            _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=poll_s)
            progress = ray.get(recorder.progress.remote())
            if on_progress is not None:
                on_progress(progress)
            if shards and clock.due(progress.updates):
                save()
        timings = ray.get(runs)
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
    ray.get(recorder.close.remote())
    return SearchSummary(progress, time.time() - started, timings, [s["version"] for s in states],
                         join_params([s["params"] for s in states]), states, ready_at, lost)


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
