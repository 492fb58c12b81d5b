"""A search on a two-node Ray cluster, and the loss of the second node while it runs.

Both nodes run on this machine, each from its own `ray start --block` in its own Unix session
and on ports of its own, so that neither meets the session's cluster (tests/conftest.py). The
search runs as the `nasps search --address` command, as a user would run it on a cluster. When
about a quarter of the budget is trained, every process of the second node (its raylet, its
agents and the child workers on it) is killed at once with SIGKILL, as when a machine goes. The
search goes on with the head alone: exactly the budget, no finished child lost, none trained
twice, and the children that were training on the lost node trained again elsewhere.
"""

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import nasps
from bench.faults import audit, trained_rows
from tests.conftest import NASPS, ROOT, TOY_SPACE
from tests.ray_nodes import (
    RAY,
    free_port,
    kill_session,
    node_env,
    session_pids,
    start_node,
    stop_node,
    wait_for,
)

CPUS_PER_NODE = 4
BUDGET = 40
KILL_AT = 10  # trained children when the second node goes
# Ray declares a silent node dead after about 15 s of failed health checks; the search then has
# 30 children of 0.3 s left to train on the head's 4 CPUs.
AFTER_KILL_S = 120
# The toy space and a decision of 1000 choices: children that rarely repeat, so (almost) every
# sample is trained and the budget is reached by training, not by the cache.
SPACE = {"type": "categorical",
         "decisions": TOY_SPACE["decisions"] + [{"name": "e", "choices": list(range(1000))}]}
NODE = [f"--num-cpus={CPUS_PER_NODE}", "--object-store-memory=100000000"]


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node of 4 CPUs each, on ports of their own: (address, second node's
    `ray start` process, whose pid is its session id). The test may kill the second node."""
    temp_dir = tempfile.mkdtemp(prefix="nasps-2n-ray-")  # short: Ray's socket paths live here
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = [Path(temp_dir) / "head.log", Path(temp_dir) / "second.log"]
    nodes = []
    try:
        nodes.append(start_node(["--head", f"--port={port}", "--include-dashboard=false",
                                 f"--temp-dir={temp_dir}", *NODE], logs[0], head=True))
        wait_for(address, f"/{CPUS_PER_NODE}.0 CPU", nodes, logs)
        nodes.append(start_node([f"--address={address}", *NODE], logs[1], head=False))
        wait_for(address, f"/{2 * CPUS_PER_NODE}.0 CPU", nodes, logs)
        yield address, nodes[1]
    finally:
        for node in reversed(nodes):  # the second node first, while its head still answers
            stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _read(run_dir: Path, query: str) -> list[dict]:
    """Rows of a query on the store, read-only (the search may still be writing it)."""
    db = sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(query)]
    finally:
        db.close()


def _children(run_dir: Path) -> dict[int, dict]:
    """Every committed row of the store, whole, by id."""
    return {row["id"]: row for row in _read(run_dir, "SELECT * FROM children")}


LAMBDA_SEARCH = """
import sys
import nasps
space = {"type": "categorical", "decisions": [{"name": "a", "choices": list(range(50))},
                                              {"name": "b", "choices": list(range(50))}]}
offset = 0.5  # a closure's value: the function travels to the other node whole

def node_of():
    import ray
    return ray.get_runtime_context().get_node_id()

run = nasps.search({"space": space, "strategy": {"type": "random"},
                    "cluster": {"children_per_replica": 8, "cpus_per_child": 1},
                    "budget": {"children": 24}, "logging": {"tensorboard": False}},
                   evaluator=lambda arch: {"reward": arch["a"] / 50 + offset, "metrics": {"node": node_of()}},
                   run_dir=sys.argv[1], address=sys.argv[2], progress=False)
print(len(run.children()))
"""


def test_a_lambda_from_a_script_scores_children_on_both_nodes(two_nodes, tmp_path):
    address, _ = two_nodes
    out = subprocess.run([sys.executable, "-c", LAMBDA_SEARCH, str(tmp_path / "run"), address], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env=node_env())
    assert out.returncode == 0, out.stderr[-3000:]
    children = [c for c in nasps.load(tmp_path / "run").children() if not c.cached]
    assert len(children) == 24 and all(c.status == "ok" for c in children)
    assert all(c.reward == pytest.approx(c.arch["a"] / 50 + 0.5) for c in children)
    assert len({c.metrics["node"] for c in children}) == 2  # 8 workers of 1 CPU: both nodes


def test_losing_a_worker_node_mid_search_loses_no_child(two_nodes, tmp_path):
    address, second = two_nodes
    config = {"space": SPACE, "evaluator": {"type": "python", "target": "tests.toys:sleep_then_score"},
              "strategy": {"type": "reinforce", "learning_rate": 0.1},
              # 6 workers of 1 CPU, spread over both nodes; the head alone holds 4 of them.
              "cluster": {"parameter_servers": 2, "replicas": 2, "children_per_replica": 3,
                          "cpus_per_child": 1,
                          # Workers are started by the nodes' raylets: the driver's environment
                          # reaches them only through the runtime_env.
                          "runtime_env": {"env_vars": {"NASPS_TOY_SLEEP": "0.3"}}},
              "budget": {"children": BUDGET}, "checkpoint": {"every_updates": 2},
              "logging": {"tensorboard": False}, "seed": 0}
    path, run_dir = tmp_path / "search.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    stderr = tmp_path / "search.stderr"
    started = time.time()
    with stderr.open("w") as err:
        search = subprocess.Popen(NASPS + ["search", "--config", str(path), "--run-dir", str(run_dir),
                                           "--address", address],
                                  cwd=ROOT, env=node_env(),
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        while len(trained_rows(run_dir)) < KILL_AT:
            assert search.poll() is None, stderr.read_text()[-5000:]
            assert time.time() - started < 180, "the search trained too little before the kill"
            time.sleep(0.1)
        before = _children(run_dir)  # committed before the kill: every one must survive unchanged
        # The second node goes, all of it at once: its raylet, its agents, the workers on it.
        second_pids = set(session_pids(second.pid))
        kill_session(second.pid)
        killed_at = time.time()
        second.wait()  # reap its `ray start`, our child
        try:
            code = search.wait(timeout=AFTER_KILL_S)
        except subprocess.TimeoutExpired:
            # Where it stands, before it is stopped: what is trained, what waits, what Ray lacks.
            status = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True,
                                    text=True, env=node_env())
            pending = _read(run_dir, "SELECT id, arch_hash FROM pending")
            pytest.fail(f"the search did not finish {AFTER_KILL_S} s after the node loss: "
                        f"{len(trained_rows(run_dir))} of {BUDGET} trained, pending {pending}\n"
                        f"{status.stdout}\n{stderr.read_text()[-5000:]}")
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    log = stderr.read_text()
    print(f"kill after {killed_at - started:.1f} s with {len(before)} rows committed; the search "
          f"ended {time.time() - killed_at:.1f} s after the kill")
    assert code == 0, log[-5000:]

    rows = _children(run_dir)
    result = audit(run_dir)
    assert result["trained"] == BUDGET and result["trained_twice"] == 0, result
    # None lost, none rewritten; only the update a child fed and its staleness may be filled in
    # after the kill (they arrive with the report of that update).
    for i, row in before.items():
        assert i in rows, f"row {i} lost"
        after = dict(rows[i])
        if row["update_seq"] is None:
            after["staleness"] = after["update_seq"] = None
        assert after == row, (row, rows[i])
    failed = [(r["id"], r["worker"], r["error"]) for r in rows.values() if r["status"] != "ok"]
    assert result["statuses"] == {"ok": BUDGET}, (failed, log[-5000:])
    assert result["pending_left"] == 0
    # The second node really trained children before it went: a worker pid of its session.
    workers = {int(r["worker"].rsplit(":", 1)[1]) for r in before.values()}
    assert workers & second_pids, (workers, sorted(second_pids))
