"""How busy the Ray runtime keeps its workers when children cost nothing but time.

A python evaluator sleeps instead of training, so what is measured is the runtime alone: the
real replicas, S = 2 shards, REINFORCE, the results store and TensorBoard. Two parts, each
against a reference measured in the same run on the same Ray:

- equal children (every child sleeps T): K*m = 4, 16 and 64 in flight, achieved children per
  second in the steady state against the ideal K*m / T, for rolling and barrier rounds. The
  reference is bare Ray actors in the shape of a nasps barrier round doing no work of their
  own: K loops each sending m sleeps of T to their own m workers, waiting for all, then making
  the round's serial calls (a commit to one shared actor, S pushes in parallel, an admission).
- mixed children (each architecture sleeps its own 0.1 to 1.0 s, 0.55 s on average): K = 2 and
  8 replicas of m = 8, workers busy (child time / (wall x K*m), over the steady window where
  every worker has started and none has run dry) for rolling and barrier rounds. The reference
  is a bare Ray work queue: K*m actors fed by one loop, the same durations, the ideal of any
  scheduler, and the barrier's own bound E[mean] / E[max of m] for these durations.

    python bench/orchestration.py [--part equal mixed] [--seconds 20] [--sleep 0.2] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasps.config import config_from_dict  # noqa: E402
from nasps.state.store import ResultsStore  # noqa: E402

EQUAL = [(2, 2), (4, 4), (8, 8)]  # (K replicas, m children each): 4, 16, 64 in flight
MIXED = [(2, 8), (8, 8)]
SHARDS = 2
DECISIONS = [{"name": f"d{i}", "choices": list(range(10))} for i in range(8)]  # 10^8: repeats are rare


def mixed_duration(arch: dict) -> float:
    """0.1 to 1.0 s, fixed per architecture (a deeper or wider child costs more, every time)."""
    digest = hashlib.sha256(repr(sorted(arch.items())).encode()).digest()
    return 0.1 + 0.9 * int.from_bytes(digest[:4], "big") / 2 ** 32


def evaluate(arch: dict) -> float:
    """Sleep T seconds (NASPS_BENCH_SLEEP, set in the workers' runtime_env), or the
    architecture's own duration when it is "mixed"; the reward is a deterministic function of
    the architecture."""
    sleep = os.environ["NASPS_BENCH_SLEEP"]
    time.sleep(mixed_duration(arch) if sleep == "mixed" else float(sleep))
    return (sum(int(v) for v in arch.values()) % 97) / 97.0


def make_config(replicas: int, m: int, children: int, rounds: str, sleep: str, tensorboard: bool = True) -> object:
    return config_from_dict({
        "space": {"type": "categorical", "decisions": DECISIONS},
        "evaluator": {"type": "python", "target": "bench.orchestration:evaluate"},
        "strategy": {"type": "reinforce", "learning_rate": 0.001},
        "cluster": {"parameter_servers": SHARDS, "replicas": replicas, "children_per_replica": m,
                    "cpus_per_child": 0, "rounds": rounds,
                    "runtime_env": {"env_vars": {"NASPS_BENCH_SLEEP": sleep}}},
        "budget": {"children": children}, "logging": {"tensorboard": tensorboard},
    })


def intervals_of(run_dir: Path) -> list[tuple[str, float, float]]:
    """(worker, started, finished) of every trained child."""
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    try:
        return [(r.worker, r.started_at, r.finished_at) for r in store.children() if not r.cached]
    finally:
        store.close()


def steady_window(intervals: list[tuple[str, float, float]]) -> tuple[float, float]:
    """From the moment every worker has started its first child to the moment the first worker
    finishes its last: start-up and the run-out at the budget left out."""
    first, last = {}, {}
    for worker, start, end in intervals:
        first[worker] = min(first.get(worker, start), start)
        last[worker] = max(last.get(worker, end), end)
    return max(first.values()), min(last.values())


def busy(intervals: list[tuple[str, float, float]], workers: int) -> float:
    """Child time inside the steady window / (window x workers)."""
    t0, t1 = steady_window(intervals)
    inside = sum(max(0.0, min(end, t1) - max(start, t0)) for _, start, end in intervals)
    return inside / ((t1 - t0) * workers)


def steady_rate(intervals: list[tuple[str, float, float]]) -> float:
    """Children per second finished in the steady window."""
    t0, t1 = steady_window(intervals)
    return sum(t0 < end <= t1 for _, _, end in intervals) / (t1 - t0)


def run_nasps(replicas: int, m: int, children: int, rounds: str, sleep: str, tensorboard: bool):
    from nasps.runtime.driver import run_search
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_search(make_config(replicas, m, children, rounds, sleep, tensorboard), Path(tmp) / "run")
        return summary, intervals_of(Path(tmp) / "run")


def bare_round_ratio(replicas: int, m: int, shards: int, sleep: float, seconds: float) -> float:
    """achieved / ideal for bare Ray actors in the shape of a nasps barrier round (docstring)."""
    import ray

    @ray.remote(num_cpus=0)
    class Sleeper:
        def sleep(self, i: int) -> int:
            time.sleep(sleep)
            return i

    @ray.remote(num_cpus=0)
    class Hub:  # stands for the recorder, and for each shard
        def call(self, payload):
            return payload

    @ray.remote(num_cpus=0)
    class Round:
        def __init__(self, recorder, shard_hubs):
            self.workers = [Sleeper.remote() for _ in range(m)]
            self.recorder, self.shards = recorder, shard_hubs

        def ready(self) -> bool:
            ray.get([w.__ray_ready__.remote() for w in self.workers])
            ray.get([w.sleep.remote(0) for w in self.workers])  # the first call of each, as nasps's steady state
            return True

        def run(self, rounds: int) -> float:
            started = time.time()
            for r in range(rounds):
                ray.get([w.sleep.remote(r) for w in self.workers])
                ray.get(self.recorder.call.remote(r))  # commit
                ray.get([s.call.remote(r) for s in self.shards])  # push to every shard
                ray.get(self.recorder.call.remote(r))  # admit
            return time.time() - started

    recorder, shard_hubs = Hub.remote(), [Hub.remote() for _ in range(shards)]
    loops = [Round.remote(recorder, shard_hubs) for _ in range(replicas)]
    ray.get([loop.ready.remote() for loop in loops])
    rounds = max(1, int(seconds / sleep))
    elapsed = max(ray.get([loop.run.remote(rounds) for loop in loops]))
    for actor in loops + shard_hubs + [recorder]:
        ray.kill(actor)
    return rounds * sleep / elapsed


def bare_queue_busy(workers: int, seconds: float) -> float:
    """Workers busy for K*m bare actors fed from one queue with the mixed durations (docstring)."""
    import ray

    @ray.remote(num_cpus=0)
    class Sleeper:
        def sleep(self, duration: float) -> tuple[str, float, float]:
            start = time.time()
            time.sleep(duration)
            return f"{os.getpid()}", start, time.time()

    rng = random.Random(0)
    actors = [Sleeper.remote() for _ in range(workers)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    todo = int(seconds * workers / 0.55)
    running = {}
    intervals = []
    for actor in actors:
        running[actor.sleep.remote(mixed_duration({"r": rng.random()}))] = actor
        todo -= 1
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        actor = running.pop(done[0])
        intervals.append(ray.get(done[0]))
        if todo > 0:
            running[actor.sleep.remote(mixed_duration({"r": rng.random()}))] = actor
            todo -= 1
    for actor in actors:
        ray.kill(actor)
    return busy(intervals, workers)


def barrier_bound(m: int, draws: int = 20000) -> float:
    """E[mean] / E[max of m] of the mixed durations: the most any barrier round can keep busy."""
    rng = random.Random(1)
    rounds = [[mixed_duration({"r": rng.random()}) for _ in range(m)] for _ in range(draws // m)]
    return statistics.fmean(statistics.fmean(r) for r in rounds) / statistics.fmean(max(r) for r in rounds)


def selected(shapes, args):
    """The (K, m, K*m) of the shapes the command line asks for (all when it names none)."""
    for replicas, m in shapes:
        if not args.in_flight or replicas * m in args.in_flight:
            yield replicas, m, replicas * m


def equal_part(args) -> None:
    print(f"\nequal children: each sleeps T = {args.sleep} s; steady children/s against the ideal K*m/T")
    print(f"{'K':>3} {'m':>3} {'in flight':>9} {'ideal/s':>8} {'rolling':>8} {'barrier':>8} {'bare Ray':>8} "
          f"{'rolling/bare':>12} {'barrier/bare':>12}")
    for replicas, m, in_flight in selected(EQUAL, args):
        ideal = in_flight / args.sleep
        children = int(ideal * args.seconds) + in_flight
        ratios = {}
        for rounds in ("rolling", "barrier"):
            _, intervals = run_nasps(replicas, m, children, rounds, str(args.sleep), not args.no_tensorboard)
            ratios[rounds] = steady_rate(intervals) / ideal
        bare = bare_round_ratio(replicas, m, SHARDS, args.sleep, args.seconds / 2)
        print(f"{replicas:>3} {m:>3} {in_flight:>9} {ideal:>8.1f} {ratios['rolling']:>8.3f} {ratios['barrier']:>8.3f} "
              f"{bare:>8.3f} {ratios['rolling'] / bare:>12.3f} {ratios['barrier'] / bare:>12.3f}", flush=True)


def mixed_part(args) -> None:
    print("\nmixed children: 0.1 to 1.0 s each, fixed per architecture (mean 0.55 s); workers busy "
          "in the steady window")
    print(f"{'K':>3} {'m':>3} {'workers':>7} {'rolling':>8} {'barrier':>8} {'bare queue':>10} "
          f"{'barrier bound':>13} {'rolling/queue':>13}  replica's own ms per child: sample / gradient")
    for replicas, m, workers in selected(MIXED, args):
        children = int(args.seconds * workers / 0.55) + workers
        result = {}
        for rounds in ("rolling", "barrier"):
            summary, intervals = run_nasps(replicas, m, children, rounds, "mixed", not args.no_tensorboard)
            result[rounds] = busy(intervals, workers), summary
        queue = bare_queue_busy(workers, args.seconds)
        stats = result["rolling"][1].replicas
        sampled = sum(s.samples for s in stats)
        own = (1000 * sum(s.sample_s for s in stats) / sampled, 1000 * sum(s.gradient_s for s in stats) / sampled)
        print(f"{replicas:>3} {m:>3} {workers:>7} {result['rolling'][0]:>8.3f} {result['barrier'][0]:>8.3f} "
              f"{queue:>10.3f} {barrier_bound(m):>13.3f} {result['rolling'][0] / queue:>13.3f}  "
              f"{own[0]:.2f} / {own[1]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["equal", "mixed"], default=["equal", "mixed"])
    parser.add_argument("--sleep", type=float, default=0.2, help="T: seconds each equal child sleeps")
    parser.add_argument("--seconds", type=float, default=20.0, help="ideal duration of each setting")
    parser.add_argument("--no-tensorboard", action="store_true", help="measure without the event files")
    parser.add_argument("--in-flight", type=int, nargs="+", help="run only these settings (children in flight)")
    args = parser.parse_args()
    os.chdir(ROOT)
    import ray

    from nasps.runtime.driver import connect
    connect(None, {})
    print(f"orchestration benchmark: S = {SHARDS}, {os.cpu_count()} CPUs, Ray {ray.__version__}, "
          f"TensorBoard {'off' if args.no_tensorboard else 'on'}")
    if "equal" in args.part:
        equal_part(args)
    if "mixed" in args.part:
        mixed_part(args)
    ray.shutdown()


if __name__ == "__main__":
    main()
