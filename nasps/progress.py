"""What a search shows while it runs, on a terminal, in a log or in a notebook."""

from __future__ import annotations

import sys
import time
from typing import Optional


class ProgressView:
    """What a search shows while it runs: children done of budget, best reward, children per
    minute, ETA, counts by status and the depth in force.

    On a terminal it is one live line with a bar (rich); otherwise (a log file, a pipe, CI) a
    plain line every ``every_s`` seconds and a last one at the end.
    """

    def __init__(self, budget: int, depth_at=None, stream=None, every_s: float = 5.0):
        self.budget = budget
        self.depth_at = depth_at or (lambda samples: None)
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.start = time.time()
        self.last = 0.0
        self.first_trained: Optional[int] = None  # a resumed search starts with some trained
        self.training_since: Optional[float] = None
        self._live = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self._live = Progress(TextColumn("children"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                  TimeElapsedColumn(),
                                  TextColumn("{task.fields[info]}"), console=Console(file=self.stream),
                                  transient=False)
            self._task = self._live.add_task("search", total=budget, info="starting actors")
            self._live.start()

    def info(self, p) -> str:
        if self.first_trained is None:
            self.first_trained = p.trained
        done = p.trained - self.first_trained
        if self.training_since is None and (p.in_flight or done):
            self.training_since = time.time()
        # From the first child on, as the report counts: starting the actors is not throughput.
        elapsed = time.time() - self.training_since if self.training_since is not None else 0.0
        rate = 60.0 * done / elapsed if elapsed > 0 and done else 0.0
        eta = f"{(self.budget - p.trained) / rate:.1f} min" if rate else "-"
        best = f"{p.best_reward:.5g}" if p.best_reward is not None else "-"
        if p.best_metric:
            best += f" ({p.best_metric})"
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(p.by_status.items())) or "-"
        depth = self.depth_at(p.samples)
        depth_text = f"  depth {depth}" if depth is not None else ""
        return (f"best {best}  {rate:.1f}/min  ETA {eta}  cached {p.cached}  in flight {p.in_flight}"
                f"{depth_text}  ({statuses})")

    def __call__(self, p, final: bool = False) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=p.trained, info=self.info(p))
            if final:
                self.close()
            return
        now = time.time()
        if not final and now - self.last < self.every_s:
            return
        self.last = now
        print(f"[{now - self.start:7.1f}s] children {p.trained}/{self.budget}  {self.info(p)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def starting_line(config, run_dir, resume: bool) -> str:
    c = config.cluster
    return (f"nasps: {'resuming' if resume else 'searching into'} {run_dir} (S={c.parameter_servers}, "
            f"K={c.replicas}, m={c.children_per_replica}, budget {config.budget.children} children)")


def stop_problem(p, resume_with: str) -> Optional[str]:
    """Why a search ended before its budget, in one line, or None when it did not."""
    if p.stop_reason == "failures":
        return (f"stopped after {p.failures_in_a_row} children in a row ended failed, diverged or "
                f"timeout (budget.max_consecutive_failures); the last: {p.last_error}; finished children are "
                f"kept, and {resume_with} continues once it is fixed")
    if p.stop_reason == "store":
        return f"{p.last_error}; what was committed is kept"
    return None


def sample_cap_note(p) -> str:
    return (f"{p.samples} architectures sampled (budget.max_samples) but only {p.trained} distinct ones "
            "trained; the policy keeps repeating itself")
