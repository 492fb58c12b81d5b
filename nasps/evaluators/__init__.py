"""Evaluators turn an architecture into a reward. Looked up by ``evaluator.type``."""

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


def deadline_s(config) -> Optional[float]:
    """Seconds after a child is sent at which the runtime kills its worker and records the
    child as ``timeout`` (None: no deadline). A python function cannot stop itself, so for it
    that is ``timeout_s``; the trainers get ``TRAINER_GRACE_S`` more to stop on their own."""
    if config.timeout_s is None:
        return None
    return config.timeout_s + (0.0 if isinstance(config, PythonEvaluatorConfig) else TRAINER_GRACE_S)


def check_runnable(config) -> None:
    """What a search's evaluator needs beyond its config's own text, checked before Ray starts:
    the function imports, the dataset is there."""
    if isinstance(config, PythonEvaluatorConfig):
        if config.function is None:
            from nasps.evaluators.python import resolve_target
            resolve_target(config.target)
    elif isinstance(config, ImageClassificationEvaluatorConfig):
        from nasps.data.images import check_available
        check_available(config.dataset)
    elif isinstance(config, LanguageModelEvaluatorConfig):
        from nasps.data.text import check_available as check_text
        check_text(config.dataset)


def build_evaluator(config) -> Evaluator:
    if isinstance(config, PythonEvaluatorConfig):
        return PythonEvaluator(config)
    if isinstance(config, ImageClassificationEvaluatorConfig):
        # Imported here: workers of a python evaluator need not load the training stack.
        from nasps.evaluators.image import ImageClassificationEvaluator
        return ImageClassificationEvaluator(config)
    if isinstance(config, LanguageModelEvaluatorConfig):
        from nasps.evaluators.language import LanguageModelEvaluator
        return LanguageModelEvaluator(config)
    raise TypeError(f"no evaluator for {type(config).__name__}")


__all__ = ["SCORED", "STATUSES", "ChildFailure", "ChildResult", "Curve", "Evaluator", "Report", "Score", "headline",
           "run_child",
           "PythonEvaluator", "build_evaluator", "check_runnable", "deadline_s"]
