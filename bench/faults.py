"""Faults injected for real into a running search, and the audit of what it left.

A search runs as its own ``nasps search`` process with its embedded local Ray, and this file
kills its processes with SIGKILL while it runs: a child worker, the recorder, a controller
replica, a parameter-server shard, or the driver itself (then ``nasps search --resume``, after killing
what the driver had started, as if its machine had gone). The audit reads the store: children
finished, lost (a committed row that disappeared: must be 0), trained twice (must be 0), and
shard updates lost to restores. The benchmark compares the throughput with the same search
without faults.

    python bench/faults.py [--children 300] [--rounds rolling|barrier]

The tests (tests/test_faults.py) call ``run_with_faults`` and ``audit`` on a smaller search.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
NASPS = [sys.executable, "-m", "nasps"]
KINDS = {"worker": "ray::ChildWorker", "replica": "ray::ControllerReplica", "shard": "ray::ParameterServerShard",
         "recorder": "ray::Recorder"}


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` with its command line (Ray's workers name themselves
    ``ray::Class.method``)."""
    parents, lines = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            lines[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = lines.get(child, "")
                frontier.append(child)
    return found


def pids_of(root: int, kind: str) -> list[int]:
    return sorted(pid for pid, line in descendants(root).items() if line.startswith(KINDS[kind]))


def _read(run_dir: Path, sql: str) -> list[tuple]:
    """Rows of a query on the store, read-only while the search writes it ([] before it exists)."""
    if not (run_dir / "results.sqlite").exists():
        return []
    db = sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is not written yet
        return []
    finally:
        db.close()


def trained_rows(run_dir: Path) -> list[tuple[int, str]]:
    """(id, arch_hash) of the trained children committed so far."""
    return _read(run_dir, "SELECT id, arch_hash FROM children WHERE cached = 0 ORDER BY id")


def restarts(run_dir: Path) -> int:
    """Shard restarts (not resumes) the store has recorded so far."""
    return len(_read(run_dir, "SELECT shard FROM restores WHERE cause = 'restart'"))


@dataclass
class FaultRun:
    wall_s: float = 0.0
    killed: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, pid, trained at the kill)
    committed_before_kills: set = field(default_factory=set)  # rows that must survive
    returncodes: list[int] = field(default_factory=list)
    stderr: str = ""
    shard_kills: int = 0


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(NASPS + args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"))


def run_with_faults(config: dict, run_dir: Path, faults: list[tuple[int, str]], *,
                    env: Optional[dict] = None, timeout_s: float = 600.0) -> FaultRun:
    """Run the search of ``config`` into ``run_dir``; when ``n`` children are trained, kill the
    ``kind`` of each ``(n, kind)`` in ``faults`` (worker, replica, shard or driver)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONPATH", str(ROOT))
    config_path = run_dir.parent / f"{run_dir.name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = run_dir.parent / f"{run_dir.name}.stderr"
    run = FaultRun()
    pending = sorted(faults)
    started = time.time()
    driver = _start(["search", "--config", str(config_path), "--run-dir", str(run_dir)], env, log)
    while True:
        if time.time() - started > timeout_s:
            driver.kill()
            raise TimeoutError(f"the search did not finish in {timeout_s} s")
        code = driver.poll()
        if code is not None:
            run.returncodes.append(code)
            if code != 0 or not pending or pending[0][1] != "driver":
                break
        rows = trained_rows(run_dir)
        # A kill waits at least for the store: before it there is no search to resume; and a
        # killed shard's restart is recorded before the next kill (children keep training while
        # a shard restarts, so counting them is not enough).
        if pending and (run_dir / "results.sqlite").exists() and len(rows) >= pending[0][0] \
                and restarts(run_dir) >= run.shard_kills:
            at, kind = pending.pop(0)
            run.committed_before_kills.update(rows)
            if kind == "driver":
                # The head machine goes: the driver and every Ray process it started.
                others = descendants(driver.pid)
                driver.kill()
                driver.wait()
                for pid in others:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                run.killed.append((kind, driver.pid, len(rows)))
                run.returncodes.append(driver.returncode)
                time.sleep(1.0)
                driver = _start(["search", "--resume", str(run_dir)], env, log)
            else:
                victims = pids_of(driver.pid, kind)
                if not victims:
                    pending.insert(0, (at, kind))  # not started yet: try again shortly
                else:
                    os.kill(victims[0], signal.SIGKILL)
                    run.killed.append((kind, victims[0], len(rows)))
                    run.shard_kills += kind == "shard"
        time.sleep(0.05)
    run.wall_s = time.time() - started
    run.stderr = log.read_text(errors="replace") if log.exists() else ""
    return run


def audit(run_dir: Path, run: Optional[FaultRun] = None) -> dict:
    """What the store says about a search that went through faults."""
    db = sqlite3.connect(run_dir / "results.sqlite")
    try:
        trained = db.execute("SELECT id, arch_hash, status FROM children WHERE cached = 0").fetchall()
        pending = db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        restores = db.execute("SELECT shard, epoch, version, cause FROM restores ORDER BY shard, epoch").fetchall()
    finally:
        db.close()
    from nasps.state.store import ResultsStore
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    try:
        lost_updates = store.lost_updates()
    finally:
        store.close()
    rows = {(i, h) for i, h, _ in trained}
    statuses: dict[str, int] = {}
    for _, _, status in trained:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "trained": len(trained),
        "trained_twice": len(trained) - len({h for _, h, _ in trained}),
        "finished_lost": len(run.committed_before_kills - rows) if run else 0,
        "statuses": statuses,
        "pending_left": pending,
        "restores": restores,
        "lost_updates": lost_updates,
    }


BENCH_CONFIG = {
    "space": {"type": "categorical", "decisions": [
        {"name": "a", "choices": [0, 1, 2, 3]}, {"name": "b", "choices": ["x", "y", "z"]},
        {"name": "c", "choices": [0.1, 0.5, 0.9]}, {"name": "d", "choices": [1, 2, 3, 4]},
        {"name": "e", "choices": list(range(1000))}]},
    "evaluator": {"type": "python", "target": "tests.toys:sleep_then_score"},
    # A learning rate at which the policy does not settle on a few architectures within 300
    # children: every sample a new child, so both runs reach the budget by training.
    "strategy": {"type": "reinforce", "learning_rate": 0.01},
    "cluster": {"parameter_servers": 2, "replicas": 2, "children_per_replica": 4, "cpus_per_child": 0.25},
    "checkpoint": {"every_updates": 5, "every_s": 2.0},
    "logging": {"tensorboard": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each child trains")
    parser.add_argument("--rounds", choices=["rolling", "barrier"], default="rolling")
    args = parser.parse_args()
    config = {**BENCH_CONFIG, "budget": {"children": args.children},
              "cluster": {**BENCH_CONFIG["cluster"], "rounds": args.rounds}}
    env = dict(os.environ, NASPS_TOY_SLEEP=str(args.sleep))
    n = args.children
    # A kill every few seconds: workers throughout, the recorder, a replica, a shard, and once
    # the driver.
    faults = sorted([(int(n * f), "worker") for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)]
                    + [(int(n * 0.2), "recorder"), (int(n * 0.3), "replica"), (int(n * 0.5), "shard"),
                       (int(n * 0.65), "driver")])
    with tempfile.TemporaryDirectory() as tmp:
        clean = run_with_faults(config, Path(tmp) / "clean", [], env=env)
        faulty = run_with_faults(config, Path(tmp) / "faults", faults, env=env)
        result = audit(Path(tmp) / "faults", faulty)
        clean_result = audit(Path(tmp) / "clean")
    print(f"faults: {n}-child search, K=2, m=4, S=2, {args.rounds} rounds, children of {args.sleep} s")
    for kind, pid, at in faulty.killed:
        print(f"  killed {kind:<7} pid {pid:>7} at {at} children")
    print(f"exit statuses of the drivers: {faulty.returncodes} (the killed one is -9)")
    print(f"children finished {result['trained']} (budget {n}), lost {result['finished_lost']}, "
          f"trained twice {result['trained_twice']}, statuses {result['statuses']}")
    print(f"shard restores {len(result['restores'])}, updates lost to them {result['lost_updates']}")
    print(f"wall: {clean.wall_s:.1f} s without faults ({clean_result['trained']} children), "
          f"{faulty.wall_s:.1f} s with faults; throughput ratio {clean.wall_s / faulty.wall_s:.2f}")


if __name__ == "__main__":
    main()
