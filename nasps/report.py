"""What a run directory says: top architectures, counts by status, throughput.

Reads ``results.sqlite`` while a search may still be writing it (WAL lets it).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nasps.errors import UserInputError
from nasps.spaces import describe
from nasps.store import STORE_NAME, ChildRow, ResultsStore, ranked_children


@dataclass(frozen=True)
class RunReport:
    run_dir: str
    children: int
    trained: int
    cached: int
    by_status: dict[str, int]
    top: list[ChildRow]
    wall_s: float
    trained_per_min: float
    mean_staleness: Optional[float]
    pushes: int


def summarize(run_dir: str | Path, top: int = 10) -> RunReport:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir}: no such run directory")
    store = ResultsStore(run_dir / STORE_NAME)
    try:
        rows = store.children()
        pushes = store.pushes()
    finally:
        store.close()
    trained = [r for r in rows if not r.cached]
    starts = [r.started_at for r in trained if r.started_at is not None]
    ends = [r.finished_at for r in trained if r.finished_at is not None]
    wall = (max(ends) - min(starts)) if starts and ends else 0.0
    ranked = ranked_children(rows)
    staleness = [p[5] for p in pushes if p[6]]
    return RunReport(
        run_dir=str(run_dir), children=len(rows), trained=len(trained),
        cached=len(rows) - len(trained), by_status=dict(Counter(r.status for r in rows)),
        top=ranked[:top], wall_s=wall, trained_per_min=(60.0 * len(trained) / wall) if wall > 0 else 0.0,
        mean_staleness=statistics.fmean(staleness) if staleness else None, pushes=len(pushes))


def format_report(report: RunReport) -> str:
    lines = [f"run: {report.run_dir}",
             f"children: {report.children} ({report.trained} trained, {report.cached} cached)",
             "status: " + ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items())),
             f"throughput: {report.trained_per_min:.1f} children/min over {report.wall_s:.1f} s"]
    if report.mean_staleness is not None:
        lines.append(f"pushes: {report.pushes} shard updates, mean staleness {report.mean_staleness:.2f}")
    if report.top:
        lines.append("")
        lines.append(f"top {len(report.top)} architectures:")
        lines.append(f"{'rank':>4}  {'id':>5}  {'reward':>10}  {'time_s':>7}  architecture")
        for rank, r in enumerate(report.top, 1):
            first, *more = describe(r.arch)
            lines.append(f"{rank:>4}  {r.id:>5}  {r.reward:>10.5g}  {r.duration_s or 0:>7.2f}  {first}")
            lines.extend(" " * 36 + line for line in more)
    else:
        lines.append("no child finished with status ok yet")
    return "\n".join(lines)


def report_json(report: RunReport) -> dict:
    """The report as plain data for scripts (``nasps report --format json``)."""
    return {
        "run_dir": report.run_dir, "children": report.children, "trained": report.trained,
        "cached": report.cached, "by_status": report.by_status, "wall_s": report.wall_s,
        "trained_per_min": report.trained_per_min, "mean_staleness": report.mean_staleness,
        "pushes": report.pushes,
        "top": [{"rank": rank, "id": r.id, "reward": r.reward, "metrics": r.metrics, "arch": r.arch,
                 "arch_hash": r.arch_hash, "duration_s": r.duration_s, "depth": r.depth}
                for rank, r in enumerate(report.top, 1)],
    }
