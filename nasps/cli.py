"""The ``nasps`` command: search, validate, report. The only module that prints.

Bad input of any kind ends with one line on stderr and exit status 2; nothing written before
is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from nasps import __version__
from nasps.config import load_config
from nasps.errors import SearchFailed, Terminated, UserInputError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
LOG_LEVELS = [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG]  # -qq, -q, the default, -v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"nasps: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasps", description="Neural architecture search with RL on Ray.")
    parser.add_argument("--version", action="version", version=f"nasps {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (-v: debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="fewer log lines (-q: warnings and errors only, -qq: errors only)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = sub.add_parser("search", help="run a search")
    search.add_argument("--config", metavar="FILE", help="YAML config of the search")
    search.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the search in RUN_DIR (its own config; --set may change "
                             "budget.* and cluster.* only)")
    search.add_argument("--run-dir", metavar="DIR", help="where results go (default runs/<time>)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set budget.children=50 (repeatable)")
    search.add_argument("--address", metavar="ADDR",
                        help="join this Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")

    validate = sub.add_parser("validate", help="check a config without running it")
    validate.add_argument("config", metavar="FILE")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")

    report = sub.add_parser("report", help="summarise a run directory")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--top", type=int, default=10, help="how many architectures to list")
    report.add_argument("--format", choices=["text", "json"], default="text",
                        help="text for people, json for scripts")
    report.add_argument("--compare", nargs="+", default=[], metavar="OTHER_RUN",
                        help="other run directories to compare with (a random search, say)")
    report.add_argument("--no-plots", action="store_true",
                        help="do not write the PNG plots to RUN_DIR/report/")

    export = sub.add_parser("export", help="write an architecture as JSON and as a standalone PyTorch file")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--rank", type=int, default=1, help="1 = the best child (by reward), 2 = the next...")
    export.add_argument("--out", required=True, metavar="DIR", help="folder for architecture.json and model.py")

    train = sub.add_parser("train", help="the final training of a searched architecture, with a small grid")
    train.add_argument("--arch", required=True, metavar="RUN_DIR[:RANK]",
                       help="the run directory, and the rank of its child (default 1, the best)")
    train.add_argument("--config", required=True, metavar="FILE", help="YAML config of the final training")
    train.add_argument("--out", metavar="DIR", help="where the weights and training.json go "
                                                    "(default RUN_DIR/final-rank<RANK>)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    train.add_argument("--address", metavar="ADDR",
                       help="join this Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    return parser


def log_level(verbose: int, quiet: int) -> int:
    """INFO by default; each -v one step more, each -q one step less, within ERROR..DEBUG."""
    step = LOG_LEVELS.index(logging.INFO) + verbose - quiet
    return LOG_LEVELS[max(0, min(len(LOG_LEVELS) - 1, step))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=log_level(args.verbose, args.quiet), format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        commands = {"search": _search, "validate": _validate, "report": _report, "export": _export,
                    "train": _train}
        return commands[args.command](args)
    except UserInputError as exc:
        print(f"nasps: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SearchFailed as exc:
        print(f"nasps: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _validate(args) -> int:
    config = load_config(args.config, args.overrides)
    _check_runnable(config, args.config)
    print(f"{args.config}: ok")
    return 0


def _check_runnable(config, path: str) -> None:
    """Checks that need more than the config's own text: the evaluator must import, the
    dataset must be there, MLflow must be installed when the search logs to it."""
    from nasps.config import ImageClassificationEvaluatorConfig, LanguageModelEvaluatorConfig, PythonEvaluatorConfig
    try:
        if config.logging.mlflow is not None:
            from nasps.mlflow_log import require_mlflow
            require_mlflow()
        if isinstance(config.evaluator, PythonEvaluatorConfig):
            from nasps.evaluators.python import resolve_target
            resolve_target(config.evaluator.target)
        elif isinstance(config.evaluator, ImageClassificationEvaluatorConfig):
            from nasps.data.images import check_available
            check_available(config.evaluator.dataset)
        elif isinstance(config.evaluator, LanguageModelEvaluatorConfig):
            from nasps.data.text import check_available as check_text
            check_text(config.evaluator.dataset)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None


class _NothingToDo(Exception):
    """A resumed search whose budget is already met."""


def _check_resume(config, run_dir: str) -> None:
    from nasps.rundir import trained_and_in_flight
    _check_runnable(config, run_dir)
    trained, in_flight = trained_and_in_flight(run_dir)
    if trained >= config.budget.children and not in_flight:
        raise _NothingToDo(f"{run_dir} has trained {trained} children and budget.children is "
                           f"{config.budget.children}; --set budget.children=N with a larger N continues it")


def _search(args) -> int:
    from nasps.report import format_report, summarize
    from nasps.rundir import default_run_dir, open_for_resume, prepare_run_dir

    if (args.config is None) == (args.resume is None):
        raise UserInputError("search: give --config FILE for a new search, or --resume RUN_DIR to continue one")
    if args.resume and args.run_dir:
        raise UserInputError("--run-dir: a resumed search stays in its own directory (--resume RUN_DIR)")
    if args.resume:
        try:
            config = open_for_resume(args.resume, args.overrides, check=lambda c: _check_resume(c, args.resume))
        except _NothingToDo as done:
            print(f"nasps: nothing to do: {done}")
            return 0
        run_dir = Path(args.resume)
    else:
        config = load_config(args.config, args.overrides)
        _check_runnable(config, args.config)
        run_dir = prepare_run_dir(args.run_dir or default_run_dir())

    from nasps.runtime.driver import run_search  # imports Ray: only once the input is known to be good

    c = config.cluster
    doing = "resuming" if args.resume else "searching into"
    print(f"nasps: {doing} {run_dir} (S={c.parameter_servers}, K={c.replicas}, m={c.children_per_replica}, "
          f"budget {config.budget.children} children)", flush=True)
    from nasps.spaces import build_space
    view = ProgressView(config.budget.children, build_space(config.space).depth_at)
    try:
        summary = run_search(config, run_dir, address=args.address, on_progress=view,
                             resume=args.resume is not None)
    except KeyboardInterrupt as exc:
        view.close()
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nnasps: {how}; finished children are kept in {run_dir}; "
              f"nasps search --resume {run_dir} continues", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    p = summary.progress
    view(p, final=True)
    if p.stop_reason == "failures":
        print(f"nasps: error: stopped after {p.failures_in_a_row} children in a row ended failed, diverged or "
              f"timeout (budget.max_consecutive_failures); the last: {p.last_error}; finished children are "
              f"kept, and nasps search --resume {run_dir} continues once it is fixed", file=sys.stderr)
        return EXIT_FAILED
    if p.stop_reason == "store":
        print(f"nasps: error: {p.last_error}; what was committed is kept", file=sys.stderr)
        return EXIT_FAILED
    if p.stop_reason == "sample_cap":
        print(f"nasps: stopped early: {p.samples} architectures sampled (budget.max_samples) "
              f"but only {p.trained} distinct ones trained; the policy keeps repeating itself")
    print()
    print(format_report(summarize(run_dir)))
    return 0


def _report(args) -> int:
    from nasps.report import format_comparison, format_report, load_run, report_json, summarize, write_report_plots
    if args.top < 0:
        raise UserInputError(f"--top {args.top}: must be 0 or more")
    run = load_run(args.run_dir)
    compare = [load_run(other) for other in args.compare]
    report = summarize(run, top=args.top)
    others = [summarize(other, top=args.top) for other in compare]
    plots = [] if args.no_plots else write_report_plots(run, compare)
    if args.format == "json":
        data = report_json(report)
        data["plots"] = [str(p) for p in plots]
        data["compare"] = [report_json(other) for other in others]
        print(json.dumps(data, indent=2, allow_nan=False))
        return 0
    print(format_report(report))
    if others:
        print()
        print(format_comparison([report, *others]))
    if plots:
        print()
        print(f"plots: {len(plots)} PNG files in {plots[0].parent}")
    return 0


def _export(args) -> int:
    from nasps.export import export
    for path in export(args.run_dir, args.rank, args.out):
        print(f"wrote {path}")
    return 0


def _train(args) -> int:
    from nasps.config import FinalTrainingConfig
    from nasps.final import check_out_dir, default_out, prepare, save
    training = load_config(args.config, args.overrides, root=FinalTrainingConfig)
    job = prepare(args.arch, training)
    out = check_out_dir(Path(args.out) if args.out else default_out(job))
    print(f"final training of child {job.child_id} (rank {job.rank}) of {job.run_dir}: "
          f"{len(job.trials)} grid point(s), {job.evaluator.epochs} epochs, "
          f"width x{training.width_multiplier}", flush=True)
    from nasps.runtime.final import run_grid
    records, best, weights = run_grid(job, args.address)
    for r in records:
        outcome = (f"validation {r['score']:.5g}" if r["score"] is not None else f"{r['status']}: {r['error']}")
        print(f"  trial {r['trial']} {r['settings']}: {outcome}{'  <- chosen' if r is best else ''}")
    test = {k: v for k, v in best.items() if k.startswith("test_")}
    print("test: " + (", ".join(f"{k[5:]} {v:.5g}" for k, v in test.items() if v is not None)
                      or "the dataset has no test split"))
    for path in save(out, job, records, best, weights):
        print(f"wrote {path}")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
