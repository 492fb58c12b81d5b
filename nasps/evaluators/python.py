"""The ``python`` evaluator: a user's function ``fn(arch)`` scores each child.

``arch`` is a dict {decision name: chosen value}. The function returns a number (the reward)
or a mapping with ``reward`` and optional ``metrics``. A function of two arguments,
``fn(arch, report)``, may call ``report(step, score)`` as it trains (score: higher is better);
with ``evaluator.early_stopping`` it answers True when the child should stop, and the function
should then return the reward it has (it always answers False without early stopping).

From Python, ``nasps.search(config, evaluator=fn)`` gives the function itself (a lambda or one
defined in a notebook included): Ray sends it to the workers (by value, or by name for a
function of an importable module, which the workers must then import), and ``target`` only
names it.
Otherwise the target is imported the way Python would from the directory the search was started in (and
PYTHONPATH); on a cluster, ship the code with ``cluster.runtime_env`` (``working_dir`` or
``py_modules``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import numbers
import os
import re
import sys
from typing import Any, Callable, Mapping, Optional

from nasps.config import PythonEvaluatorConfig
from nasps.errors import ConfigError
from nasps.evaluators.base import Report, Score
from nasps.spaces import Architecture

log = logging.getLogger(__name__)


def resolve_target(target: str, key: str = "evaluator.target") -> Callable[[dict], Any]:
    """Import ``module:function``; a clear ConfigError naming the key when that fails."""
    module_name, _, function_name = target.partition(":")
    if module_name == "__main__":  # a Ray worker's __main__ is Ray's own: never the session's
        raise ConfigError(f"{key}: {target} was a function of the Python session that started the search; "
                          "give it again from Python: nasps.resume(run_dir, evaluator=fn)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{key}: cannot import module {module_name!r} ({exc}); run from the "
                          "directory that holds it or add it to PYTHONPATH") from None
    except Exception as exc:
        raise ConfigError(f"{key}: importing {module_name!r} raised "
                          f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, function_name, None)
    if fn is None:
        raise ConfigError(f"{key}: module {module_name!r} has no attribute {function_name!r}")
    if not callable(fn):
        raise ConfigError(f"{key}: {target!r} is not callable")
    return fn


class PythonEvaluator:
    def __init__(self, config: PythonEvaluatorConfig):
        self.fn = config.function if config.function is not None else resolve_target(config.target)
        self.takes_report = _takes_two_arguments(self.fn)
        self.early_stopping = config.early_stopping is not None
        if self.early_stopping and not self.takes_report:
            log.warning("evaluator.early_stopping: %s takes one argument, so no child can be stopped early; "
                        "write it as fn(arch, report) and call report(step, score) as it trains", config.target)

    def evaluate(self, arch: Architecture, report: Optional[Report] = None) -> Score:
        if not self.takes_report:
            return score_from_return(self.fn(arch.as_dict()))
        if report is None or not self.early_stopping:
            report = _keep_going
        return score_from_return(self.fn(arch.as_dict(), report))


def target_of(fn: Callable) -> str:
    """The ``module:function`` target of a callable given from Python: where it can be imported
    from, when it is a module's function; otherwise a label, ``__main__:NAME``, that a resume
    without the callable recognises as one to give again."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None)
    if module and name and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", f"{module}:{name}"):
        try:
            if resolve_target(f"{module}:{name}") is fn:
                return f"{module}:{name}"
        except ConfigError:
            pass
    label = re.sub(r"\W+", "_", name or type(fn).__name__).strip("_") or "function"
    return f"__main__:{'_' + label if label[0].isdigit() else label}"


def _keep_going(step: int, score: float) -> bool:
    return False


def _takes_two_arguments(fn: Callable) -> bool:
    """Whether to call ``fn(arch, report)``: its second positional parameter has no default or
    is named report (``def f(arch, scale=2)`` is called as f(arch)), or it takes *args."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: called as fn(arch)
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        return positional[1].default is inspect.Parameter.empty or positional[1].name == "report"
    return any(p.kind == p.VAR_POSITIONAL for p in parameters)


def score_from_return(value: Any) -> Score:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return Score(float(value))
    if isinstance(value, Mapping) and "reward" in value:
        extra = set(value) - {"reward", "metrics"}
        if extra:
            raise TypeError(f"evaluator returned unknown keys {sorted(extra)}; "
                            "expected 'reward' and optional 'metrics'")
        reward, metrics = value["reward"], value.get("metrics") or {}
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
            raise TypeError(f"evaluator returned reward {reward!r}; expected a number")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"evaluator returned metrics {metrics!r}; expected a mapping")
        return Score(float(reward), dict(metrics))
    raise TypeError(f"evaluator returned {value!r}; expected a number or a mapping with 'reward'")
