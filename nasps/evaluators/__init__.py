"""Evaluators turn an architecture into a reward. Looked up by ``evaluator.type``."""

from nasps.config import ImageClassificationEvaluatorConfig, LanguageModelEvaluatorConfig, PythonEvaluatorConfig
from nasps.evaluators.base import STATUSES, ChildFailure, ChildResult, Evaluator, Score, run_child
from nasps.evaluators.python import PythonEvaluator


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


__all__ = ["STATUSES", "ChildFailure", "ChildResult", "Evaluator", "Score", "run_child",
           "PythonEvaluator", "build_evaluator"]
