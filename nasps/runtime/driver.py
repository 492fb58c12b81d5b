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
               poll_s: float = 1.0) -> SearchSummary:
    """Run one search to its budget on Ray and return what happened."""
    run_dir = Path(run_dir)
    open_new_store(run_dir, config).close()
    started_ray = connect(address, config.cluster.runtime_env)
    started = time.time()
    try:
        return _run(config, run_dir, on_progress, poll_s, started)
    finally:
        if started_ray:
            ray.shutdown()


def _run(config: Config, run_dir: Path, on_progress, poll_s: float, started: float) -> SearchSummary:
    cluster = config.cluster
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    recorder = Recorder.options(num_cpus=0, scheduling_strategy=here).remote(
        str((run_dir / "results.sqlite").resolve()), config.budget.children, config.budget.sample_cap)

    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    bounds = shard_bounds(policy.num_params, cluster.parameter_servers if policy.learns else 1)
    initial = [p.numpy() for p in split_params(policy.initial_params(config.seed), bounds)]
    adam = adam_settings(config)
    shards = [ParameterServerShard.options(num_cpus=0).remote(i, p, adam)
              for i, p in enumerate(initial)] if policy.learns else []

    worker_options = {"num_cpus": cluster.cpus_per_child, "num_gpus": cluster.gpus_per_child}
    replicas = [ControllerReplica.options(num_cpus=0).remote(
        k, config, shards, bounds, recorder, worker_options) for k in range(cluster.replicas)]
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
            if on_progress is not None:
                on_progress(ray.get(recorder.progress.remote()))
        timings = ray.get(runs)
    except KeyboardInterrupt:
        # Stop admitting children; rows already committed stay. Children in flight are dropped.
        log.warning("interrupted: keeping the children finished so far")
        ray.get(recorder.interrupt.remote())
        for r in replicas:
            ray.kill(r)
        timings, ready_at = [], time.time()
    progress = ray.get(recorder.progress.remote())
    states = ray.get([s.state_dict.remote() for s in shards])
    ray.get(recorder.close.remote())
    return SearchSummary(progress, time.time() - started, timings, [s["version"] for s in states],
                         join_params([s["params"] for s in states]), states, ready_at)
