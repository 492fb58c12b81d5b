"""Ray nodes of the tests' own, on this machine: started by `ray start --block` in a Unix
session of their own and on ports of their own, and stopped by killing exactly that session.

`ray stop` stops every Ray on the machine (another test's cluster, a second pytest run's), so
the tests never use it. A node's `ray start` process is the leader of its session: its pid is
the session id shared by everything the node spawns (raylet, GCS, agents, workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
# Every port Ray would otherwise take from its defaults, so no two nodes of this machine meet.
NODE_PORTS = ["node-manager-port", "object-manager-port", "metrics-export-port",
              "runtime-env-agent-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port"]
HEAD_PORTS = NODE_PORTS + ["ray-client-server-port", "dashboard-port"]
# Workers bind ports the OS picks, never the default range's first ports, where two raylets of
# one machine would hand out the same numbers.
COMMON = ["--block", "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def session_pids(sid: int) -> list[int]:
    """Live processes of one Unix session (zombies, dead but not yet reaped, left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(sid: int, timeout_s: float = 15.0) -> None:
    """SIGKILL every process of a session until none is left (a dying parent may still fork)."""
    deadline = time.time() + timeout_s
    while (left := session_pids(sid)) and time.time() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    assert not session_pids(sid), f"processes of session {sid} outlived SIGKILL"


def start_node(args: list[str], log: Path, head: bool) -> subprocess.Popen:
    """`ray start --block ARGS` in a session of its own, with ports of its own."""
    names = HEAD_PORTS if head else NODE_PORTS
    numbers: set[int] = set()
    while len(numbers) < len(names):  # the OS may hand the same free port out twice
        numbers.add(free_port())
    ports = [f"--{name}={number}" for name, number in zip(names, sorted(numbers))]
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([RAY, "start", *args, *COMMON, *ports], env=node_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    """SIGTERM to its `ray start --block` (it stops what it started), then SIGKILL whatever is
    left of its session."""
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=45)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    kill_session(node.pid)


def wait_for(address: str, needle: str, nodes: list[subprocess.Popen], logs: list[Path],
             timeout_s: float = 120.0) -> None:
    """Until `ray status` shows ``needle`` (e.g. "/8.0 CPU": every node registered)."""
    deadline = time.time() + timeout_s
    while True:
        for node, log in zip(nodes, logs):
            assert node.poll() is None, log.read_text()[-3000:]
        status = subprocess.run([RAY, "status", f"--address={address}"], env=node_env(),
                                capture_output=True, text=True)
        if status.returncode == 0 and needle in status.stdout:
            return
        assert time.time() < deadline, status.stdout + status.stderr
        time.sleep(0.5)
