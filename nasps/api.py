"""nasps from Python: start, resume and read searches from a script or a notebook.

    import nasps
    run = nasps.search({"space": {"type": "categorical", "decisions": [...]}}, evaluator=score)
    run.best(), run.to_pandas(), run.figures()

A search here is the one ``nasps search`` runs: the same runtime (an embedded local Ray, or a
cluster at ``address``) and the same run directory, so the CLI reports, resumes and exports
what Python started, and Python reads what the CLI wrote. Bad input raises the CLI's one-line
``UserInputError`` before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from nasps.config import Config, config_from_dict, config_to_dict, load_config
from nasps.errors import MissingExtra, SearchFailed, Terminated, UserInputError
from nasps.evaluators import check_runnable
from nasps.state.rundir import BudgetMet, check_budget_left, default_run_dir, open_for_resume, prepare_run_dir
from nasps.state.store import STORE_NAME, ChildRow, ResultsStore, ranked_children

log = logging.getLogger(__name__)

Child = ChildRow
ConfigLike = Union[Config, Mapping[str, Any], str, Path]


def search(config: ConfigLike, *, run_dir: Union[str, Path, None] = None, evaluator: Optional[Callable] = None,
           address: Optional[str] = None, progress: bool = True) -> "Run":
    """Run a search to its budget and return it. ``config`` is a YAML file's path, the same
    content as a dict, or a ``Config``; ``evaluator`` a callable that scores an architecture
    (the python evaluator's ``fn(arch)`` or ``fn(arch, report)``), replacing ``evaluator.target``.
    ``run_dir`` defaults to ``runs/<time>``. Ctrl-C stops it with what finished kept, as in a
    terminal, and ``nasps.resume(run_dir)`` continues it."""
    config = resolve_config(config, evaluator)
    check_search(config)
    run_dir = prepare_run_dir(run_dir or default_run_dir())
    _run(config, run_dir, address, progress, resume=False)
    return Run(run_dir)


def resume(run_dir: Union[str, Path], *, evaluator: Optional[Callable] = None, address: Optional[str] = None,
           progress: bool = True, **overrides: Any) -> "Run":
    """Continue the search in ``run_dir``. ``overrides`` change its budget and cluster only, as
    sections or dotted keys: ``budget={"children": 200}`` or ``**{"budget.children": 200}``. A
    search started with a callable evaluator needs it again (``evaluator=fn``)."""
    run_dir = Path(run_dir)
    settings = [f"{key}={json.dumps(value, default=str)}" for key, value in _dotted(overrides)]

    def check(config: Config) -> None:
        check_search(_with_function(config, evaluator))
        check_budget_left(run_dir, config.budget.children, "nasps.resume(run_dir, budget={'children': N})")
    try:
        config = _with_function(open_for_resume(run_dir, settings, check=check), evaluator)
    except BudgetMet as met:
        log.warning("nasps: nothing to do: %s", met)
        return Run(run_dir)
    _run(config, run_dir, address, progress, resume=True)
    return Run(run_dir)


def load(run_dir: Union[str, Path]) -> "Run":
    """A run directory to read, also while its search is still writing it."""
    return Run(run_dir)


def resolve_config(config: ConfigLike, evaluator: Optional[Callable] = None) -> Config:
    """A validated ``Config`` from a path, a dict or a ``Config`` (checked when it was made),
    with ``evaluator`` as its python evaluator."""
    function = None
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if isinstance(config, Config):
        if evaluator is None:
            return config
        config = config_to_dict(config)
    if not isinstance(config, Mapping):
        raise UserInputError(f"config: must be a YAML path, a mapping or a nasps.Config, not {type(config).__name__}")
    raw = dict(config)
    if evaluator is not None:
        if not callable(evaluator):
            raise UserInputError(f"evaluator: must be a callable scoring an architecture, not {evaluator!r}")
        section = raw.get("evaluator") or {"type": "python"}
        if not isinstance(section, Mapping):
            raise UserInputError(f"evaluator: must be a mapping, got {section!r}")
        section = dict(section)
        _needs_python_evaluator(section.get("type", "python"))
        from nasps.evaluators.python import target_of
        raw["evaluator"] = {**section, "target": target_of(evaluator)}
        function = evaluator
    return _with_function(config_from_dict(raw), function)


def check_search(config: Config, *, connect: bool = True) -> None:
    """What a search needs beyond its config's own text, checked before its run directory is
    touched: the evaluator imports and its data is there, MLflow is installed and (``connect``)
    takes the tracking URI, and a callable evaluator can travel to the workers. ``nasps validate``
    does not connect: MLflow's client makes a file store's folders."""
    if config.logging.mlflow is not None:
        from nasps.views.mlflow_log import check_mlflow, require_mlflow
        if connect:
            check_mlflow(config)
        else:
            require_mlflow()
    check_runnable(config.evaluator)
    function = getattr(config.evaluator, "function", None)
    if function is not None:
        from nasps.runtime.worker import check_sendable  # Ray's pickler: only nasps.runtime imports Ray
        check_sendable(function)


def _with_function(config: Config, function: Optional[Callable]) -> Config:
    if function is None:
        return config
    _needs_python_evaluator(config.evaluator.type)
    return dataclasses.replace(config, evaluator=dataclasses.replace(config.evaluator, function=function))


def _needs_python_evaluator(evaluator_type: str) -> None:
    if evaluator_type != "python":
        raise UserInputError(f"evaluator: a callable replaces the target of a python evaluator; "
                             f"evaluator.type is {evaluator_type}")


def _dotted(overrides: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``budget={"children": 9}`` as ``budget.children``; a value below a section (a
    runtime_env mapping, say) replaces the key whole, as ``--set`` does."""
    items = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and "." not in key:
            items.extend((f"{key}.{name}", v) for name, v in value.items())
        else:
            items.append((key, value))
    return items


def _run(config: Config, run_dir: Path, address: Optional[str], progress: bool, resume: bool) -> None:
    from nasps.progress import ProgressView, sample_cap_note, starting_line, stop_problem
    from nasps.runtime.driver import run_search  # imports Ray: only once the input is known to be good
    from nasps.spaces import build_space
    view = None
    if progress:
        print(starting_line(config, run_dir, resume), flush=True)
        view = ProgressView(config.budget.children, build_space(config.space).depth_at)
    try:
        summary = run_search(config, run_dir, address=address, on_progress=view, resume=resume)
        if view is not None:
            view(summary.progress, final=True)
    except KeyboardInterrupt as exc:
        if view is not None:
            view.close()  # before the line, so that a live bar does not draw over it
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nnasps: {how}; finished children are kept in {run_dir}; "
              f"nasps.resume({str(run_dir)!r}) continues", file=sys.stderr)
        raise
    finally:
        if view is not None:
            view.close()
    problem = stop_problem(summary.progress, f"nasps.resume({str(run_dir)!r})")
    if problem:
        raise SearchFailed(problem)
    if summary.progress.stop_reason == "sample_cap":
        log.warning("nasps: stopped early: %s", sample_cap_note(summary.progress))


class Run:
    """A run directory, read from its results store each time it is asked (so a run another
    process is writing shows its newest children)."""

    def __init__(self, run_dir: Union[str, Path]):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / STORE_NAME).is_file():
            raise UserInputError(f"{self.run_dir}: not a nasps run directory (no {STORE_NAME})")

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    @property
    def config(self) -> Config:
        """The config the search runs with (a callable evaluator named by its target only)."""
        store = ResultsStore(self.run_dir / STORE_NAME, readonly=True)
        try:
            return config_from_dict(store.meta()["config"])
        finally:
            store.close()

    def children(self) -> list[Child]:
        """Every child in the order they finished, cached repeats included."""
        from nasps.views.report import load_run
        return load_run(self.run_dir).rows

    def best(self, k: int = 1) -> list[Child]:
        """The k best trained children by reward, best first (fewer while fewer have a reward)."""
        return ranked_children(self.children())[:k]

    @property
    def summary(self):
        """What ``nasps report`` prints, as data (a ``nasps.views.report.RunReport``)."""
        from nasps.views.report import summarize
        return summarize(self.run_dir)

    def to_pandas(self):
        """One row per child: its fields, ``arch.NAME`` for each decision of a flat architecture
        and ``metrics.NAME`` for each metric; the architecture itself in ``arch``."""
        try:
            import pandas
        except ImportError:
            raise MissingExtra("Run.to_pandas()", "pandas") from None
        records = []
        for child in self.children():
            record = {f.name: getattr(child, f.name) for f in dataclasses.fields(child)}
            record.update({f"arch.{k}": v for k, v in child.arch.items() if not isinstance(v, (list, dict))})
            record.update({f"metrics.{k}": v for k, v in child.metrics.items() if not isinstance(v, (list, dict))})
            records.append(record)
        return pandas.DataFrame.from_records(records, index="id") if records else pandas.DataFrame()

    def figures(self, compare: tuple["Run", ...] = (), top: int = 3) -> dict:
        """The report's plots by name (``rewards``, ``control``, ..., ``architecture_1``) as
        ``matplotlib.figure.Figure`` objects; the process's matplotlib backend stays as it was."""
        from nasps.views.plots import figures
        from nasps.views.report import load_run, plot_data
        data = plot_data([load_run(run.run_dir) for run in (self, *compare)])
        return figures(data[0], data[1:], top=top)

    def export(self, rank: int = 1, out: Union[str, Path, None] = None) -> list[Path]:
        """``nasps export``: the child at ``rank`` as architecture.json and a standalone
        model.py in ``out`` (default RUN_DIR/export-rank<RANK>); returns the files written."""
        from nasps.views.export import export
        return export(self.run_dir, rank, out if out is not None else self.run_dir / f"export-rank{rank}")
