"""What a run directory says: top architectures, counts by status, throughput, and plots.

Reads ``results.sqlite`` while a search may still be writing it (WAL lets it). The plots go to
``RUN_DIR/report/`` (made again on every report: they are views of the store, never data).
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from nasps.errors import UserInputError
from nasps.evaluators import headline
from nasps.spaces import describe
from nasps.state.store import STORE_NAME, ChildRow, PushRow, ResultsStore, ranked_children

# The paper's control experiment plots the mean of the top 1, 5 and 15 children.
TOP_KS = (1, 5, 15)

REPORT_DIR = "report"


@dataclass(frozen=True)
class RunReport:
    run_dir: str
    strategy: Optional[str]
    children: int
    trained: int
    cached: int
    by_status: dict[str, int]
    top: list[ChildRow]
    wall_s: float
    trained_per_min: float
    mean_staleness: Optional[float]
    pushes: int
    top_means: dict[int, Optional[float]]  # k -> mean reward of the k best trained children
    lost_updates: int = 0  # shard updates lost to restores from the checkpoint
    stopped: int = 0  # trained children that early stopping stopped
    epochs_planned: int = 0  # of the trained children that say (evaluator metrics "planned_epochs")
    epochs_saved: int = 0  # planned but not trained, as those children were stopped


@dataclass(frozen=True)
class StoredRun:
    """One run directory's store, read once."""

    run_dir: Path
    rows: list[ChildRow]
    pushes: list[PushRow]
    rounds: list[tuple]
    strategy: Optional[str]
    lost_updates: int = 0
    run_starts: tuple[float, ...] = ()  # when the search and each resume of it started
    evaluator: Optional[dict] = None  # the config's evaluator section


def load_run(run_dir: str | Path) -> StoredRun:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir}: no such run directory")
    store = ResultsStore(run_dir / STORE_NAME, readonly=True)
    try:
        meta = store.meta()
        strategy = meta.get("config", {}).get("strategy", {}).get("type")
        starts = tuple(t for t in [meta.get("created_at"), *meta.get("resumed_at", [])] if t is not None)
        return StoredRun(run_dir, store.children(), store.pushes(), store.rounds(), strategy,
                         store.lost_updates(), starts, meta.get("config", {}).get("evaluator"))
    finally:
        store.close()


def training_time(trained: list[ChildRow], run_starts: Sequence[float]) -> float:
    """Seconds the search trained children: for each driver run (the first, then each resume),
    from its first child's start to its last child's finish. The time between a stop and its
    resume is not the search's."""
    resumes = sorted(run_starts)[1:]
    spans: dict[int, tuple[float, float]] = {}
    for r in trained:
        if r.started_at is None or r.finished_at is None:
            continue
        run = bisect.bisect_right(resumes, r.started_at)
        start, end = spans.get(run, (r.started_at, r.finished_at))
        spans[run] = (min(start, r.started_at), max(end, r.finished_at))
    return sum(end - start for start, end in spans.values())


def summarize(run_dir: str | Path | StoredRun, top: int = 10) -> RunReport:
    run = run_dir if isinstance(run_dir, StoredRun) else load_run(run_dir)
    rows, pushes = run.rows, run.pushes
    trained = [r for r in rows if not r.cached]
    wall = training_time(trained, run.run_starts)
    ranked = ranked_children(rows)
    staleness = [p.staleness for p in pushes if p.applied]
    top_means = {k: statistics.fmean(r.reward for r in ranked[:k]) if len(ranked) >= k else None
                 for k in TOP_KS}
    planned = [r for r in trained if isinstance(r.metrics.get("planned_epochs"), int)
               and isinstance(r.metrics.get("epochs"), int)]
    return RunReport(
        stopped=sum(r.status == "stopped" for r in trained),
        epochs_planned=sum(r.metrics["planned_epochs"] for r in planned),
        epochs_saved=sum(r.metrics["planned_epochs"] - r.metrics["epochs"] for r in planned if r.status == "stopped"),
        run_dir=str(run.run_dir), strategy=run.strategy, top_means=top_means, children=len(rows),
        lost_updates=run.lost_updates, trained=len(trained),
        cached=len(rows) - len(trained), by_status=dict(Counter(r.status for r in rows)),
        top=ranked[:top], wall_s=wall, trained_per_min=(60.0 * len(trained) / wall) if wall > 0 else 0.0,
        mean_staleness=statistics.fmean(staleness) if staleness else None, pushes=len(pushes))


def format_report(report: RunReport) -> str:
    lines = [f"run: {report.run_dir}",
             f"children: {report.children} ({report.trained} trained, {report.cached} cached)",
             "status: " + ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items())),
             f"throughput: {report.trained_per_min:.1f} children/min over {report.wall_s:.1f} s"]
    if report.stopped:
        saved = f", {report.epochs_saved} of {report.epochs_planned} planned epochs saved " \
                f"({100 * report.epochs_saved / report.epochs_planned:.0f}%)" if report.epochs_planned else ""
        lines.append(f"early stopping: {report.stopped} children stopped{saved}")
    if report.mean_staleness is not None:
        lost = f", {report.lost_updates} lost to shard restores" if report.lost_updates else ""
        lines.append(f"pushes: {report.pushes} shard updates, mean staleness {report.mean_staleness:.2f}{lost}")
    if report.top:
        lines.append("")
        lines.append(f"top {len(report.top)} architectures:")
        lines.append(f"{'rank':>4}  {'id':>5}  {'reward':>10}  {'validation':>12}  {'time_s':>7}  architecture")
        for rank, r in enumerate(report.top, 1):
            first, *more = describe(r.arch)
            read = headline(r.metrics) or "-"
            lines.append(f"{rank:>4}  {r.id:>5}  {r.reward:>10.5g}  {read:>12}  {r.duration_s or 0:>7.2f}  {first}")
            lines.extend(" " * 50 + line for line in more)
    else:
        lines.append("no child finished with status ok or stopped yet")
    return "\n".join(lines)


def report_json(report: RunReport) -> dict:
    """The report as plain data for scripts (``nasps report --format json``)."""
    return {
        "run_dir": report.run_dir, "children": report.children, "trained": report.trained,
        "cached": report.cached, "by_status": report.by_status, "wall_s": report.wall_s,
        "trained_per_min": report.trained_per_min, "mean_staleness": report.mean_staleness,
        "pushes": report.pushes, "strategy": report.strategy, "lost_updates": report.lost_updates,
        "stopped": report.stopped, "epochs_planned": report.epochs_planned, "epochs_saved": report.epochs_saved,
        "top_means": {str(k): v for k, v in report.top_means.items()},
        "top": [{"rank": rank, "id": r.id, "reward": r.reward, "metrics": r.metrics, "arch": r.arch,
                 "arch_hash": r.arch_hash, "duration_s": r.duration_s, "depth": r.depth}
                for rank, r in enumerate(report.top, 1)],
    }


def format_comparison(reports: list[RunReport]) -> str:
    """One line per run: what the control figure shows, in numbers."""
    def mean(value: Optional[float]) -> str:
        return f"{value:>9.5g}" if value is not None else f"{'-':>9}"
    lines = [f"{'run':<32}  {'strategy':<10}  {'trained':>7}  "
             + "  ".join(f"{'top ' + str(k):>9}" for k in TOP_KS)]
    for r in reports:
        lines.append(f"{Path(r.run_dir).name[:32]:<32}  {r.strategy or '-':<10}  {r.trained:>7}  "
                     + "  ".join(mean(r.top_means[k]) for k in TOP_KS))
    return "\n".join(lines)


def write_report_plots(run: StoredRun, compare: list[StoredRun], top: int = 3) -> list[Path]:
    """The PNG plots and diagrams of ``run`` (against ``compare`` in the control figure)."""
    out_dir = run.run_dir / REPORT_DIR
    try:
        out_dir.mkdir(exist_ok=True)
        probe = out_dir / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserInputError(f"{out_dir}: cannot write the plots ({exc.strerror}); "
                             f"use --no-plots to print the report only") from None
    from nasps.views.plots import write_plots
    data = plot_data([run, *compare])
    return write_plots(data[0], out_dir, data[1:], top=top)


def plot_data(runs: Sequence[StoredRun]) -> list:
    """The plots' ``RunData`` of each run. The plots module (matplotlib, most of a second to
    import) loads here, not with the report: a search's closing report draws nothing."""
    from nasps.views.plots import RunData, label_of, metric_scale
    return [RunData(label_of(r.run_dir, r.strategy), r.rows, r.rounds, metric_scale(r.evaluator or {})) for r in runs]
