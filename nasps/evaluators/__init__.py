"""Evaluators turn an architecture into a reward. Looked up by ``evaluator.type``."""

import importlib
from dataclasses import dataclass
from typing import Optional

from nasps.config import ImageClassificationEvaluatorConfig, LanguageModelEvaluatorConfig, PythonEvaluatorConfig
from nasps.evaluators.base import (
    SCORED,
    STATUSES,
    ChildFailure,
    ChildResult,
    Curve,
    Evaluator,
    Report,
    Score,
    headline,
    run_child,
)
from nasps.evaluators.python import PythonEvaluator

# The trainers end their own child at timeout_s, between two steps, and keep their worker (and
# the data on it); the runtime kills a worker only when that has not happened this long after.
TRAINER_GRACE_S = 30.0


@dataclass(frozen=True)
class EvaluatorType:
    """What the rest of nasps needs of one evaluator type: a new type is a module with its
    Evaluator, its config dataclass (in config.EvaluatorConfig) and one entry in TYPES."""

    evaluator: str  # "module:Class", imported where it is built: a python worker need not load torch
    data: Optional[str] = None  # the module whose check_available(dataset, with_test) checks the files
    stops_itself: bool = True  # ends a child at timeout_s on its own, between two steps


TYPES = {
    PythonEvaluatorConfig: EvaluatorType("nasps.evaluators.python:PythonEvaluator", stops_itself=False),
    ImageClassificationEvaluatorConfig: EvaluatorType("nasps.evaluators.image:ImageClassificationEvaluator",
                                                      data="nasps.data.images"),
    LanguageModelEvaluatorConfig: EvaluatorType("nasps.evaluators.language:LanguageModelEvaluator",
                                                data="nasps.data.text"),
}


def deadline_s(config) -> Optional[float]:
    """Seconds after a child is sent at which the runtime kills its worker and records the
    child as ``timeout`` (None: no deadline). A python function cannot stop itself, so for it
    that is ``timeout_s``; the trainers get ``TRAINER_GRACE_S`` more to stop on their own."""
    if config.timeout_s is None:
        return None
    return config.timeout_s + (TRAINER_GRACE_S if TYPES[type(config)].stops_itself else 0.0)


def check_runnable(config, with_test: bool = False) -> None:
    """What an evaluator needs beyond its config's own text, checked before Ray starts: the
    function imports, the dataset's files are there (``with_test``: its test split too, for
    final training)."""
    if isinstance(config, PythonEvaluatorConfig):
        if config.function is None:
            from nasps.evaluators.python import resolve_target
            resolve_target(config.target)
        return
    importlib.import_module(TYPES[type(config)].data).check_available(config.dataset, with_test=with_test)


def build_evaluator(config) -> Evaluator:
    module, _, name = TYPES[type(config)].evaluator.partition(":")
    return getattr(importlib.import_module(module), name)(config)


__all__ = ["SCORED", "STATUSES", "ChildFailure", "ChildResult", "Curve", "Evaluator", "Report", "Score", "headline",
           "run_child",
           "PythonEvaluator", "TYPES", "EvaluatorType", "build_evaluator", "check_runnable", "deadline_s"]
