"""How close the Ray runtime gets to ideal throughput when children cost nothing but time.

A python evaluator sleeps T seconds per child, so with K*m children in flight the ideal is
K*m / T children per second. The benchmark runs the real runtime (S=2 shards, REINFORCE, the
results store) at K*m = 4, 16 and 64 in flight and prints achieved / ideal in the steady state
(after every worker has finished its first child), and the controller's own time per round
(pull, sample + admit, gradient, push), which is what keeps workers waiting.

    python bench/orchestration.py [--sleep 0.2] [--seconds 20]
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
        "cluster": {"parameter_servers": 2, "replicas": replicas, "children_per_replica": m,
                    "cpus_per_child": 0},
        "budget": {"children": children}, "logging": {"tensorboard": tensorboard},
    })


def steady_rate(run_dir: Path, ready_at: float) -> tuple[float, int]:
    """Children per second from the moment every worker was up to the last child."""
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    ends = sorted(r.finished_at for r in store.children() if not r.cached)
    store.close()
    return len(ends) / (ends[-1] - ready_at), len(ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=0.2, help="T: seconds each child sleeps")
    parser.add_argument("--seconds", type=float, default=20.0, help="ideal duration of each setting")
    parser.add_argument("--no-tensorboard", action="store_true", help="measure without the event files")
    args = parser.parse_args()
    os.environ["NASPS_BENCH_SLEEP"] = str(args.sleep)
    os.chdir(ROOT)
    import ray

    from nasps.runtime.driver import connect, run_search
    connect(None, {})
    print(f"orchestration benchmark: evaluator sleeps T = {args.sleep} s, S = 2, "
          f"{os.cpu_count()} CPUs, Ray {ray.__version__}")
    print(f"{'K':>3} {'m':>3} {'in flight':>9} {'children':>8} {'ideal/s':>8} {'achieved/s':>10} "
          f"{'ratio':>6} {'round ms (pull / sample+admit / gradient / push)':>50}")
    for replicas, m in SETTINGS:
        in_flight = replicas * m
        ideal = in_flight / args.sleep
        children = int(ideal * args.seconds) + in_flight
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_search(make_config(replicas, m, children, not args.no_tensorboard), Path(tmp) / "run")
            rate, n = steady_rate(Path(tmp) / "run", summary.ready_at)
        rounds = sum(t.rounds for t in summary.timings)
        ms = [1000 * sum(getattr(t, part) for t in summary.timings) / rounds
              for part in ("pull", "sample", "gradient", "push")]
        print(f"{replicas:>3} {m:>3} {in_flight:>9} {n:>8} {ideal:>8.1f} {rate:>10.1f} {rate / ideal:>6.3f} "
              f"{sum(ms):>12.1f} = {ms[0]:.1f} / {ms[1]:.1f} / {ms[2]:.1f} / {ms[3]:.1f}"
              f"   commits/round {sum(t.commits for t in summary.timings) / rounds:.2f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
