"""Whether the cluster can hold a search's child workers, asked before any actor starts.

Shards, replicas and the recorder reserve nothing; each of the K*m child workers reserves
``cluster.cpus_per_child`` CPUs, ``gpus_per_child`` GPUs and ``resources_per_child``. A worker
must fit on one node, so the count is per node. A cluster that cannot hold them all and has no
autoscaler to add nodes would wait forever: that is a bad config, said in one line. With an
autoscaler (a ``ray up`` or KubeRay cluster) the driver waits for it and says what for.
"""

from __future__ import annotations

import json
import logging
import math
import re

import ray

from nasps.config import ClusterConfig
from nasps.errors import UserInputError

log = logging.getLogger(__name__)

KEYS = {"CPU": "cluster.cpus_per_child", "GPU": "cluster.gpus_per_child"}
# Ray's read-only monitor (a cluster of `ray start` nodes) names each node's type after the node.
_READONLY_NODE_TYPE = re.compile(r"node_[0-9a-f]{56}")


def per_child(cluster: ClusterConfig) -> dict[str, float]:
    """What one child worker reserves, resource by resource (only what it asks for)."""
    need = {"CPU": cluster.cpus_per_child, "GPU": cluster.gpus_per_child, **cluster.resources_per_child}
    return {name: float(amount) for name, amount in need.items() if amount > 0}


def workers_that_fit(nodes: list[dict[str, float]], need: dict[str, float]) -> int:
    """How many workers of ``need`` the nodes hold between them."""
    if not need:
        return math.inf
    # Ray counts resources in units of 1e-4, so 4 x 0.25 GPU fit exactly on one GPU.
    return sum(min(math.floor(node.get(name, 0.0) / amount + 1e-6) for name, amount in need.items())
               for node in nodes)


def check_fits(cluster: ClusterConfig, embedded: bool) -> None:
    """Raise a one-line error when the cluster cannot hold every child worker and cannot grow;
    log what the search waits for when an autoscaler may add nodes."""
    need = per_child(cluster)
    workers = cluster.replicas * cluster.children_per_replica
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    fits = workers_that_fit(nodes, need)
    if fits >= workers:
        return
    # The key to change: the resource that holds the fewest workers.
    short = min(need, key=lambda name: workers_that_fit(nodes, {name: need[name]}))
    key = KEYS.get(short, f"cluster.resources_per_child.{short}")
    has = ", ".join(f"{_amount(sum(node.get(name, 0.0) for node in nodes))} {name}" for name in need)
    text = (f"{key}: the search needs {workers} child workers (cluster.replicas {cluster.replicas} x "
            f"cluster.children_per_replica {cluster.children_per_replica}) of "
            f"{', '.join(f'{_amount(v)} {k}' for k, v in need.items())} each; the cluster's {len(nodes)} "
            f"node(s) hold {fits} ({has} in all)")
    if embedded or not autoscaler_may_add_nodes():
        raise UserInputError(text)
    log.warning("%s; waiting for the autoscaler to add nodes", text)


def autoscaler_may_add_nodes() -> bool:
    """False only when the cluster shows it cannot grow: its monitor is Ray's read-only one,
    which every cluster of `ray start` nodes without ``--autoscaling-config`` has. Anything
    else (an autoscaler's own node types, the v2 autoscaler, no status to read) may grow."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        from ray.experimental.internal_kv import _internal_kv_get

        if is_autoscaler_v2(fetch_from_server=True):
            return True
        status = _internal_kv_get("__autoscaling_status")
    except Exception as exc:  # an internal API of Ray's that moved: assume it may grow, and wait
        log.info("cannot read the autoscaler's status (%s)", exc)
        return True
    if not status:
        return True
    report = json.loads(status).get("autoscaler_report") or {}
    types = set(report.get("active_nodes") or {}) | set(report.get("pending_launches") or {})
    return not types or not all(_READONLY_NODE_TYPE.fullmatch(t) for t in types)


def _amount(value: float) -> str:
    return f"{value:g}"
