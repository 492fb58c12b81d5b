"""Children placed on GPUs by `cluster.gpus_per_child`, on a Ray head that declares 4 GPUs.

The machine needs no GPU: Ray hands out the 4 declared GPU ids and sets CUDA_VISIBLE_DEVICES
in each worker as it would on real hardware, which is what placement is about. The head is
this module's own (the session's has no GPUs) and the search runs as the `nasps` command, so
this test process, joined to the session's Ray by other tests, never joins a second cluster.
"""

import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from nasps.state.store import ResultsStore
from tests.conftest import NASPS, ROOT, TOY_SPACE
from tests.ray_nodes import free_port, start_node, stop_node, wait_for

GPUS = 4
# The toy space and a decision of 1000 choices: random children that never repeat, so every
# worker trains a child of its own in the first round (a repeat would wait for its twin instead).
SPACE = {"type": "categorical",
         "decisions": TOY_SPACE["decisions"] + [{"name": "e", "choices": list(range(1000))}]}


@pytest.fixture(scope="module")
def gpu_address():
    """A Ray head of 8 CPUs and 4 declared GPUs, on ports of its own, stopped at the end."""
    temp_dir = tempfile.mkdtemp(prefix="nasps-gpu-ray-")  # short: Ray's socket paths live here
    log = Path(temp_dir) / "head.log"
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = start_node(["--head", f"--port={port}", "--num-cpus=8", f"--num-gpus={GPUS}",
                       "--include-dashboard=false", f"--temp-dir={temp_dir}"], log, head=True)
    try:
        wait_for(address, f"/{GPUS}.0 GPU", [head], [log])  # up once its GPUs are registered
        yield address
    finally:
        stop_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def search(address: str, tmp_path: Path, *, gpus_per_child: float, replicas: int,
           children_per_replica: int, children: int) -> list:
    """Run a search of `tests.toys:gpu_probe` children on the GPU head; its trained rows."""
    config = {"space": SPACE, "evaluator": {"type": "python", "target": "tests.toys:gpu_probe"},
              "strategy": {"type": "random"},
              "cluster": {"replicas": replicas, "children_per_replica": children_per_replica,
                          "cpus_per_child": 0.5, "gpus_per_child": gpus_per_child},
              "budget": {"children": children}, "logging": {"tensorboard": False}, "seed": 0}
    path, run_dir = tmp_path / "search.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(NASPS + ["search", "--config", str(path), "--run-dir", str(run_dir),
                                     "--address", address],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    store = ResultsStore(run_dir / "results.sqlite")
    try:
        rows = [r for r in store.children() if not r.cached]
    finally:
        store.close()
    assert len(rows) == children and all(r.status == "ok" for r in rows), [r.error for r in rows]
    return rows


def gpus_of_workers(rows: list) -> dict[int, tuple[str, ...]]:
    """Each worker's (pid's) GPU ids, checking that every child saw what Ray gave its worker."""
    placed = {}
    for r in rows:
        ids = tuple(r.metrics["gpu_ids"])
        assert r.metrics["cuda_visible_devices"] == ",".join(ids)  # CUDA sees only its GPUs
        assert placed.setdefault(r.metrics["pid"], ids) == ids  # a worker keeps its GPUs
    return placed


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    # At a tie an end sorts before a start: a child that starts as another ends does not overlap.
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def intervals(rows: list) -> list[tuple[float, float]]:
    return [(r.metrics["started"], r.metrics["finished"]) for r in rows]


def test_a_quarter_gpu_each_packs_four_children_per_gpu(gpu_address, tmp_path):
    rows = search(gpu_address, tmp_path, gpus_per_child=0.25, replicas=2, children_per_replica=8,
                  children=32)
    placed = gpus_of_workers(rows)
    assert all(len(ids) == 1 for ids in placed.values())  # every child saw exactly one GPU
    workers_on = defaultdict(set)
    for pid, (gpu,) in placed.items():
        workers_on[gpu].add(pid)
    assert len(placed) == 16
    assert {gpu: len(pids) for gpu, pids in workers_on.items()} == {str(g): 4 for g in range(GPUS)}
    # All 16 children ran at once, and never more than 4 on one GPU.
    assert most_at_once(intervals(rows)) == 16
    for gpu in workers_on:
        assert most_at_once(intervals([r for r in rows if r.metrics["gpu_ids"] == [gpu]])) <= 4


def test_one_gpu_each_gives_every_worker_its_own(gpu_address, tmp_path):
    rows = search(gpu_address, tmp_path, gpus_per_child=1, replicas=2, children_per_replica=2,
                  children=8)
    placed = gpus_of_workers(rows)
    assert len(placed) == 4 and all(len(ids) == 1 for ids in placed.values())
    assert sorted(ids[0] for ids in placed.values()) == [str(g) for g in range(GPUS)]
    assert most_at_once(intervals(rows)) == 4


def test_two_gpus_each_split_the_four_between_two_workers(gpu_address, tmp_path):
    rows = search(gpu_address, tmp_path, gpus_per_child=2, replicas=1, children_per_replica=2,
                  children=4)
    placed = gpus_of_workers(rows)
    assert len(placed) == 2 and all(len(ids) == 2 == len(set(ids)) for ids in placed.values())
    assert sorted(g for ids in placed.values() for g in ids) == [str(g) for g in range(GPUS)]
    assert most_at_once(intervals(rows)) == 2
