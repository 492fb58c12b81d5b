"""The child worker actor: builds its evaluator once and trains one child per call.

The evaluator (and any dataset it loads) stays resident in the worker between children. This
module imports nothing heavy itself, so a worker whose evaluator only looks results up starts
fast and stays small; an evaluator that trains networks imports torch on its own.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import ray

from nasps.errors import UserInputError
from nasps.evaluators import ChildResult, build_evaluator, run_child
from nasps.spaces import Architecture


@ray.remote
class ChildWorker:
    def __init__(self, evaluator_config):
        self.evaluator = build_evaluator(evaluator_config)

    def evaluate(self, arch: Architecture, thresholds: Optional[Mapping[int, float]] = None) -> ChildResult:
        """Train one child (one the ledger admitted to run); early stopping's ``thresholds``
        come with it."""
        return run_child(self.evaluator, arch, thresholds)


def check_sendable(function: Callable) -> None:
    """A callable evaluator that Ray cannot pickle (it holds a lock, an open file, a
    connection) fails here in one line, before anything is written."""
    try:
        ray.cloudpickle.dumps(function)
    except Exception as exc:
        raise UserInputError(f"evaluator: {function!r} cannot be sent to the Ray workers "
                             f"({type(exc).__name__}: {exc})") from None
