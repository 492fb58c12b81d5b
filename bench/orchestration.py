"""How close the Ray runtime gets to ideal throughput when children cost nothing but time.

A python evaluator sleeps T seconds per child, so with K*m children in flight the ideal is
K*m / T children per second. The benchmark runs the real runtime (S=2 shards, REINFORCE, the
results store, TensorBoard) at K*m = 4, 16 and 64 in flight and prints achieved / ideal in the
steady state (after every worker has finished its first child), and the controller's own time
per round (pull, sample + admit, gradient, push), which is what keeps workers waiting.

The reference, measured in the same run on the same Ray: bare Ray actors in the shape of a
nasps round and doing no work of their own. K replicas each send m sleeps of T to their own m
workers, wait for all, then make the round's serial calls (a commit to one shared actor, S
pushes in parallel to S actors, an admission to the shared actor). Its ratio is what Ray
itself allows this machine for this round; nasps / bare is the runtime's own cost.

    python bench/orchestration.py [--sleep 0.2] [--seconds 20] [--in-flight 64] [--no-reference]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nasps.config import config_from_dict  # noqa: E402
from nasps.store import ResultsStore  # noqa: E402

SETTINGS = [(2, 2), (4, 4), (8, 8)]  # (K replicas, m children each): 4, 16, 64 in flight
SHARDS = 2


def evaluate(arch: dict) -> float:
    """Sleep T seconds; the reward is a deterministic function of the architecture."""
    time.sleep(float(os.environ["NASPS_BENCH_SLEEP"]))
    return (sum(int(v) for v in arch.values()) % 97) / 97.0


def make_config(replicas: int, m: int, children: int, tensorboard: bool = True) -> object:
    # 8 decisions x 10 choices: 10^8 architectures, so repeats (which are not trained) are rare.
    decisions = [{"name": f"d{i}", "choices": list(range(10))} for i in range(8)]
    return config_from_dict({
        "space": {"type": "categorical", "decisions": decisions},
        "evaluator": {"type": "python", "target": "bench.orchestration:evaluate"},
        "strategy": {"type": "reinforce", "learning_rate": 0.001},
        "cluster": {"parameter_servers": SHARDS, "replicas": replicas, "children_per_replica": m,
                    "cpus_per_child": 0},
        "budget": {"children": children}, "logging": {"tensorboard": tensorboard},
    })


def steady_rate(run_dir: Path) -> tuple[float, float, int]:
    """(children per second in the steady state, from the moment every worker had finished its
    first child to the last child; the same from the first child's start; children)."""
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    rows = [r for r in store.children() if not r.cached]
    store.close()
    first_of_worker: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: r.finished_at):
        first_of_worker.setdefault(r.worker, r.finished_at)
    warm = max(first_of_worker.values())
    last = max(r.finished_at for r in rows)
    steady = [r for r in rows if r.finished_at > warm]
    return (len(steady) / (last - warm), len(rows) / (last - min(r.started_at for r in rows)), len(rows))


def bare_ray_ratio(replicas: int, m: int, shards: int, sleep: float, seconds: float) -> float:
    """achieved / ideal for bare Ray actors in the shape of a nasps round (module docstring)."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=0.2, help="T: seconds each child sleeps")
    parser.add_argument("--seconds", type=float, default=20.0, help="ideal duration of each setting")
    parser.add_argument("--no-tensorboard", action="store_true", help="measure without the event files")
    parser.add_argument("--in-flight", type=int, nargs="+", choices=[k * m for k, m in SETTINGS],
                        help="run only these settings (children in flight)")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare-Ray reference")
    args = parser.parse_args()
    os.environ["NASPS_BENCH_SLEEP"] = str(args.sleep)
    os.chdir(ROOT)
    import ray

    from nasps.runtime.driver import connect, run_search
    connect(None, {})
    print(f"orchestration benchmark: evaluator sleeps T = {args.sleep} s, S = {SHARDS}, "
          f"{os.cpu_count()} CPUs, Ray {ray.__version__}, TensorBoard {'off' if args.no_tensorboard else 'on'}")
    print(f"{'K':>3} {'m':>3} {'in flight':>9} {'children':>8} {'ideal/s':>8} {'steady/s':>8} "
          f"{'ratio':>6} {'from start':>10} {'bare Ray':>8} {'nasps/bare':>10}   round ms: total = pull / "
          "sample+admit / gradient / push")
    for replicas, m in SETTINGS:
        in_flight = replicas * m
        if args.in_flight and in_flight not in args.in_flight:
            continue
        ideal = in_flight / args.sleep
        children = int(ideal * args.seconds) + in_flight
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_search(make_config(replicas, m, children, not args.no_tensorboard), Path(tmp) / "run")
            rate, from_start, n = steady_rate(Path(tmp) / "run")
        bare = None if args.no_reference else bare_ray_ratio(replicas, m, SHARDS, args.sleep, args.seconds / 2)
        rounds = sum(t.rounds for t in summary.timings)
        ms = [1000 * sum(getattr(t, part) for t in summary.timings) / rounds
              for part in ("pull", "sample", "gradient", "push")]
        reference = f"{'-':>8} {'-':>10}" if bare is None else f"{bare:>8.3f} {rate / ideal / bare:>10.3f}"
        print(f"{replicas:>3} {m:>3} {in_flight:>9} {n:>8} {ideal:>8.1f} {rate:>8.1f} {rate / ideal:>6.3f} "
              f"{from_start / ideal:>10.3f} {reference}   {sum(ms):.1f} = {ms[0]:.1f} / {ms[1]:.1f} / "
              f"{ms[2]:.1f} / {ms[3]:.1f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
