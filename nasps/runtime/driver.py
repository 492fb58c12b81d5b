"""The driver: start or join Ray, create the actors, follow progress, stop at the budget.

``ray.init()`` with no address starts an embedded local Ray; ``--address`` (or RAY_ADDRESS)
joins a running cluster. The recorder (ledger and results store) and the shards are pinned to
the driver's node, so the run directory is a local folder even on a cluster. A search goes
through these steps (``_Search``): check the cluster can hold it, start the recorder, the
shards (from the checkpoint) and the replicas, wait until their workers are up, then follow
progress, replacing what dies and checkpointing, until every replica is done. Ctrl-C or
SIGTERM, too many failures in a row and a store that cannot be written all stop it the same
way: nothing more is admitted, the replicas go, and the checkpoint is saved.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nasps.config import Config
from nasps.errors import SearchFailed, Terminated, UserInputError
from nasps.method.parameter_server import ParameterShard, join_params, shard_bounds, split_params
from nasps.method.serial import adam_settings, open_views
from nasps.policies import build_policy
from nasps.runtime.capacity import check_fits
from nasps.runtime.recorder import Recorder
from nasps.runtime.replica import ControllerReplica, ReplicaStats
from nasps.runtime.shard import ParameterServerShard
from nasps.spaces import build_space
from nasps.state.checkpoint import CheckpointClock, check_resumable, load_checkpoint, resume_seq, save_checkpoint
from nasps.state.ledger import Progress
from nasps.state.rundir import open_new_store
from nasps.state.store import STORE_NAME
from nasps.views.mlflow_log import check_mlflow

log = logging.getLogger(__name__)

MAX_REPLICA_RESTARTS = 100  # beyond this a replica's failures are a bug, not bad luck: stop
STARTING_MESSAGE_S = 5.0  # how often the driver says what it waits for while actors start
STARTUP_DEADLINE_S = 900.0  # workers that fit and have not started by then never will
RECORDER_DEADLINE_S = 60.0  # for Ray to bring a dead recorder back
STOP_DEADLINE_S = 10.0  # for stopped replicas to commit what finished before they are killed
STOPPED = ("failures", "store")  # stop reasons that end the search before its budget


@dataclass
class SearchSummary:
    progress: Progress
    wall_s: float
    replicas: list[ReplicaStats]
    shard_versions: list[int]
    params: torch.Tensor  # the policy's final flat parameter vector, joined from the shards
    shard_states: list[dict]  # each shard's final state: parameters, Adam moments, version
    ready_at: float  # when every actor was up and the replicas started
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
    directory already holds this search (``nasps.state.rundir.open_for_resume`` checked it): the
    learning state comes from its checkpoint and the store goes on where it stopped.

    Ctrl-C and SIGTERM stop it with everything finished kept and a checkpoint saved, then
    raise ``KeyboardInterrupt`` (``Terminated`` for SIGTERM)."""
    run_dir = Path(run_dir)
    check_mlflow(config)
    checkpoint = load_checkpoint(run_dir) if resume else None
    if resume:
        check_resumable(config, checkpoint)
    started_ray = connect(address, config.cluster.runtime_env)
    sigterm = _SigtermAsInterrupt()
    try:
        with sigterm:
            check_fits(config.cluster, embedded=started_ray)
            if not resume:
                open_new_store(run_dir, config).close()
            search = _Search(config, run_dir, checkpoint, started_ray)
            try:
                return search.run(on_progress, poll_s)
            finally:
                search.close()
    except KeyboardInterrupt:
        if sigterm.received:  # Ray may raise its own KeyboardInterrupt from inside a wait
            raise Terminated("SIGTERM") from None
        raise
    finally:
        if started_ray:
            ray.shutdown()


class _Search:
    """One driver run of a search: its actors, and what the driver does with them."""

    def __init__(self, config: Config, run_dir: Path, checkpoint: Optional[dict], started_ray: bool):
        self.config, self.run_dir, self.checkpoint = config, run_dir, checkpoint
        self.cluster = config.cluster
        self.started = time.time()
        self.here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # TensorBoard and MLflow follow the store from the driver, off the recorder that every replica waits on.
        self.views = open_views(run_dir, config)
        self.controllers: dict[int, dict] = dict(checkpoint["replicas"]) if checkpoint else {}
        self.generations = {k: 0 for k in range(self.cluster.replicas)}
        self.restarts = 0
        self.stats: list[ReplicaStats] = []
        self.clock = CheckpointClock(config.checkpoint.every_s, config.checkpoint.every_updates,
                                     checkpoint["updates"] if checkpoint else 0)
        # Children spread over the nodes that can hold them: a node that leaves takes only its share.
        self.worker_options = {"num_cpus": self.cluster.cpus_per_child, "num_gpus": self.cluster.gpus_per_child,
                               "resources": dict(self.cluster.resources_per_child), "scheduling_strategy": "SPREAD"}
        if not started_ray and self.cluster.runtime_env:
            # Ray was started by the caller (a script, a notebook): the config's runtime_env did
            # not go into ray.init, so the workers, which run the user's code, take it themselves.
            self.worker_options["runtime_env"] = self.cluster.runtime_env
        self.recorder = None
        self.shards: list = []
        self.replicas: list = []
        self.runs: dict = {}  # a replica's run() -> its index
        self.ledger_started: Optional[float] = None

    def run(self, on_progress, poll_s: float) -> SearchSummary:
        try:
            self._start_recorder()
            shard_states, loading = self._start_shards()
            # The replicas start (a process and torch each, seconds) while the shards load; none
            # pulls parameters before its run(), which waits for the loads.
            self.replicas = [self._make_replica(k, self._controller_state(k, shard_states))
                             for k in range(self.cluster.replicas)]
            ray.get(loading)
            ready_at = self._wait_until_ready(poll_s)
            self._follow(on_progress, poll_s)
        except KeyboardInterrupt:
            log.warning("interrupted: keeping the children finished so far")
            self._stop(interrupt=True)
            raise
        return self._summary(ready_at)

    def close(self) -> None:
        for view in self.views:
            view.close()

    # ------------------------------------------------------------------ starting

    def _start_recorder(self) -> None:
        self.recorder_name = f"nasps-recorder-{uuid.uuid4().hex[:12]}"
        budget = self.config.budget
        self.recorder = Recorder.options(num_cpus=0, scheduling_strategy=self.here, name=self.recorder_name,
                                         max_restarts=-1, max_task_retries=0).remote(
            str((self.run_dir / STORE_NAME).resolve()), budget.children, budget.sample_cap,
            budget.max_consecutive_failures, self.started, self.config.strategy.recent_children,
            self.config.evaluator.early_stopping)

    def _start_shards(self) -> tuple[list[dict], list]:
        """The shards, from the checkpoint: the states they load, and the calls that load them.
        A new search writes its version-0 checkpoint first, so that a shard that dies before the
        first update restarts from it too (Ray restarts shards and retries the calls in flight;
        pushes are idempotent)."""
        space = build_space(self.config.space)
        policy = build_policy(self.config.strategy, space.decisions())
        self.bounds = shard_bounds(policy.num_params, self.cluster.parameter_servers if policy.learns else 1)
        if not policy.learns:
            return [], []
        adam = adam_settings(self.config)
        states = self.checkpoint["shards"] if self.checkpoint else [
            ParameterShard(i, p, adam).state_dict()
            for i, p in enumerate(split_params(policy.initial_params(self.config.seed), self.bounds))]
        if self.checkpoint is None:
            if self._progress().trained:
                log.warning("resuming without a checkpoint: the policy starts again from its initial "
                            "parameters; every finished child is kept")
            save_checkpoint(self.run_dir, states, {}, 0)
        self.shards = [ParameterServerShard.options(num_cpus=0, scheduling_strategy=self.here, max_restarts=-1,
                                                    max_task_retries=-1).remote(
            i, len(state["params"]), adam, str(self.run_dir.resolve()), self.recorder_name)
            for i, state in enumerate(states)]
        epochs = [0] * len(states)
        if self.checkpoint is not None:
            epochs = [self._ask("shard_restored", i, s["version"], "resume") for i, s in enumerate(states)]
            lost = self._ask("lost_updates")
            if lost:
                log.warning("resuming: the policy continues from the last checkpoint; in all, %d shard "
                            "updates of this run have been lost to restores", lost)
        return states, [shard.load_state_dict.remote(state, epoch)
                        for shard, state, epoch in zip(self.shards, states, epochs)]

    def _make_replica(self, k: int, state: Optional[dict], generation: int = 0):
        # On the driver's node with the recorder and shards: a worker node that leaves takes
        # only child workers with it.
        return ControllerReplica.options(num_cpus=0, scheduling_strategy=self.here, max_concurrency=2).remote(
            k, self.config, self.shards, self.bounds, self.recorder, self.worker_options, state, generation)

    def _controller_state(self, k: int, shard_states: list[dict]) -> Optional[dict]:
        """Where replica k continues: its controller's last known state (baseline, random
        generator), with its push counter past every push the shards or the store know of."""
        state = self.controllers.get(k)
        seq = resume_seq(k, state, shard_states, self._ask("last_seq", k))
        if state is None and seq == 0:
            return None
        return {**(state or {"replica": k, "baseline": None, "generator": None}), "seq": seq}

    def _wait_until_ready(self, poll_s: float) -> float:
        """Start every replica's loop only once all K*m workers exist, so no replica races ahead
        while others are still starting (starting a worker process can take seconds)."""
        pending = {r.ready.remote(): k for k, r in enumerate(self.replicas)}
        said_at = time.time()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=poll_s)
            for ref in done:
                k = pending.pop(ref)
                try:
                    ray.get(ref)
                except RayTaskError as exc:  # raised by ready(): no worker of the replica could start
                    raise SearchFailed(f"replica {k}: its child workers cannot start ({_first_line(exc)})") from None
                except RayActorError as exc:  # the replica's own process died
                    self.replicas[k] = self._restart_replica(k, exc)
                    pending[self.replicas[k].ready.remote()] = k
            waited = time.time() - self.started
            if pending and time.time() - said_at >= STARTING_MESSAGE_S:  # now and then, not every poll
                said_at = time.time()
                log.info("starting actors: %d of %d replicas have all their workers (%d workers of %s CPU, "
                         "%s GPU%s each), %.0f s so far", len(self.replicas) - len(pending), len(self.replicas),
                         self.cluster.replicas * self.cluster.children_per_replica, self.cluster.cpus_per_child,
                         self.cluster.gpus_per_child, "".join(f", {v:g} {k}" for k, v in
                                                              self.cluster.resources_per_child.items()), waited)
            if pending and waited > STARTUP_DEADLINE_S:
                raise SearchFailed(f"child workers did not start in {STARTUP_DEADLINE_S:.0f} s; the cluster "
                                   "has room for them, so their evaluator may hang while it starts")
        return time.time()

    # ------------------------------------------------------------------ running

    def _follow(self, on_progress, poll_s: float) -> None:
        """Until every replica is done: replace the ones that die, save checkpoints, show
        progress. Too many failures in a row, or a store that cannot be written, stop it."""
        self.runs = {r.run.remote(): k for k, r in enumerate(self.replicas)}
        while self.runs:
            ready, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=poll_s)
            for ref in ready:
                self._replica_ended(ref)
            progress = self._progress()
            if on_progress is not None:
                on_progress(progress)
            for view in self.views:
                view.follow()
            if progress.stop_reason in STOPPED:
                log.warning("stopping: %s", progress.last_error)
                self._stop()
                return
            if self.shards and self.clock.due(progress.updates):
                self._save()
        self._save()

    def _replica_ended(self, ref) -> None:
        k = self.runs.pop(ref)
        try:
            self.stats.append(ray.get(ref))
            return
        except (RayActorError, RayTaskError) as exc:
            error = exc
        if self._progress().stop_reason in STOPPED:
            return  # the search is stopping: the replica's end is part of it
        if self.restarts >= MAX_REPLICA_RESTARTS:
            raise error
        self.replicas[k] = self._restart_replica(k, error)
        self.runs[self.replicas[k].run.remote()] = k

    def _restart_replica(self, k: int, exc: Exception):
        """A replica whose process died (killed, its node lost, its recorder call lost): its
        unfinished children go back to be trained again, and a new replica k continues from its
        last reported controller with fresh weights from the shards."""
        self.restarts += 1
        ray.kill(self.replicas[k], no_restart=True)  # "unavailable" may be a replica still running: end it first
        reclaimed, self.generations[k] = self._ask("replica_lost", k)
        self.controllers.update(self._ask("controller_states"))
        log.warning("replica %d died (%s); restarting it, %d of its children will be trained again",
                    k, _first_line(exc), reclaimed)
        shard_states = ray.get([s.state_dict.remote() for s in self.shards])
        return self._make_replica(k, self._controller_state(k, shard_states), self.generations[k])

    def _progress(self) -> Progress:
        """The ledger's progress. A recorder that was restarted (Ray rebuilds it from the
        store) learns the replicas' generations again."""
        progress = self._ask("progress")
        if self.ledger_started is not None and progress.started_at != self.ledger_started:
            log.warning("the recorder was restarted; every committed child is in the store")
            self._ask("set_generations", self.generations)
        self.ledger_started = progress.started_at
        return progress

    def _ask(self, call: str, *args):
        """A call to the recorder that waits out its restart (a moment: Ray brings it back)."""
        deadline = time.time() + RECORDER_DEADLINE_S
        while True:
            try:
                return ray.get(getattr(self.recorder, call).remote(*args))
            except RayActorError:
                if time.time() > deadline:
                    raise SearchFailed(f"the recorder did not come back in {RECORDER_DEADLINE_S:.0f} s") from None
                time.sleep(0.2)

    def _save(self) -> None:
        if not self.shards:
            return
        progress = self._progress()
        states = ray.get([s.state_dict.remote() for s in self.shards])
        self.controllers.update(self._ask("controller_states"))
        save_checkpoint(self.run_dir, states, self.controllers, progress.updates)
        self.clock.saved(progress.updates)

    def _stop(self, interrupt: bool = False) -> None:
        """End the search now: nothing more is admitted, the replicas commit what finished and
        report their last update, then go (with their workers), and the checkpoint is saved.
        Children still training stay pending: a resume trains them."""
        if self.recorder is None:
            return
        if interrupt:
            self._ask("interrupt")
        for replica in self.replicas:
            replica.stop.remote()
        if self.runs:
            ray.wait(list(self.runs), num_returns=len(self.runs), timeout=STOP_DEADLINE_S)
        for replica in self.replicas:
            ray.kill(replica)
        self.runs = {}
        self._save()

    def _summary(self, ready_at: float) -> SearchSummary:
        progress = self._progress()
        states = ray.get([s.state_dict.remote() for s in self.shards])
        lost = self._ask("lost_updates")
        self._ask("close")
        params = torch.from_numpy(join_params([s["params"] for s in states]))
        return SearchSummary(progress, time.time() - self.started, self.stats, [s["version"] for s in states],
                             params, states, ready_at, lost, self.restarts)


class _SigtermAsInterrupt:
    """SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread, so a search a job
    scheduler stops ends as one stopped with Ctrl-C, not with Ray's own handler's stack dump."""

    def __init__(self):
        self.previous = None
        self.received = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc) -> bool:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

    def _raise(self, signum, frame):
        self.received = True
        raise Terminated("SIGTERM")


def _first_line(exc: BaseException) -> str:
    """An exception in one line: a Ray error's own cause when it has one."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:300]
