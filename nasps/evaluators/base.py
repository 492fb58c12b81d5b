"""The evaluator interface and the child result every evaluator's work ends in.

An evaluator turns an architecture into a reward (and metrics). ``run_child`` calls it and
turns whatever happens into a ``ChildResult``: a failure is a value with a status, never an
exception that could stop the search.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

from nasps.spaces import Architecture

log = logging.getLogger(__name__)

STATUSES = ("ok", "stopped", "failed", "diverged", "oom", "timeout", "cancelled")
SCORED = ("ok", "stopped")  # the statuses of children with a reward: stopped ones trained part way


@dataclass(frozen=True)
class Score:
    """What an evaluator returns for a child it could score."""

    reward: float
    metrics: Mapping[str, Any] = field(default_factory=dict)


def headline(metrics: Mapping[str, Any]) -> Optional[str]:
    """The figure people read beside a child's reward: its best validation accuracy in %, or
    its best validation perplexity (None when the metrics have neither, as a python
    evaluator's may not)."""
    accuracy = metrics.get("best_val_accuracy", metrics.get("val_accuracy"))
    if isinstance(accuracy, (int, float)) and math.isfinite(accuracy):
        return f"val {100 * accuracy:.2f}%"
    perplexity = metrics.get("best_val_perplexity", metrics.get("val_perplexity"))
    if isinstance(perplexity, (int, float)) and math.isfinite(perplexity):
        return f"ppl {perplexity:.4g}"
    return None


class ChildFailure(Exception):
    """Raised by an evaluator to end a child with a given status (for example ``diverged``)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        if status not in STATUSES or status == "ok":
            raise ValueError(f"not a failure status: {status!r}")
        self.status = status


Report = Callable[[int, float], bool]


class Evaluator(Protocol):
    def evaluate(self, arch: Architecture, report: Report) -> Score:
        """Score one architecture; raise ChildFailure (or anything) when it cannot be scored.
        ``report(epoch, score)`` after each epoch (a validation score, higher is better) says
        whether to stop there; a child that stops is scored on the epochs it trained."""


class Curve:
    """A child's validation scores as it trains, each checked against the run's thresholds:
    {epoch: the score below which a child stops after that epoch} (early stopping)."""

    def __init__(self, thresholds: Mapping[int, float]):
        self.thresholds = thresholds
        self.points: list[list[float]] = []  # [epoch, score], as the store keeps them
        self.stopped = False  # the last report said stop

    def report(self, epoch: int, score: float) -> bool:
        epoch, score = int(epoch), float(score)
        self.points.append([epoch, score])
        self.stopped = epoch in self.thresholds and score < self.thresholds[epoch]
        return self.stopped


@dataclass(frozen=True)
class ChildResult:
    """How one child ended. ``reward`` is None unless ``status`` is ``ok``."""

    status: str
    reward: Optional[float]
    metrics: Mapping[str, Any]
    error: Optional[str]
    worker: str
    started_at: float
    finished_at: float

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_child(evaluator: Evaluator, arch: Architecture,
              thresholds: Optional[Mapping[int, float]] = None) -> ChildResult:
    """Evaluate one architecture; every outcome, failures included, becomes a ChildResult.
    ``thresholds``: where early stopping stops it (see Curve); its curve is kept in the
    metrics, and a child told to stop ends as ``stopped``, with the reward it has then."""
    started = time.time()
    status, reward, metrics, error = "ok", None, {}, None
    curve = Curve(thresholds or {})
    try:
        score = evaluator.evaluate(arch, curve.report)
        reward, metrics = float(score.reward), dict(score.metrics)
        if curve.points:
            metrics["curve"] = curve.points
        json.dumps(metrics, allow_nan=True)
        if curve.stopped:
            status = "stopped"
        if not math.isfinite(reward):
            status, error = "diverged", f"reward is {reward}"
            reward = None
    except ChildFailure as exc:
        status, error = exc.status, str(exc)
    except Exception as exc:  # the user's code may raise anything: it costs this child only
        status, error = "failed", _one_line(exc)
        log.warning("child %s failed: %s\n%s", arch.hash, error, traceback.format_exc())
    return ChildResult(status, reward, metrics, error, worker_name(), started, time.time())


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
