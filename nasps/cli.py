"""The ``nasps`` command: search, validate, report. The only module that prints.

Bad input of any kind ends with one line on stderr and exit status 2; nothing written before
is touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from nasps import __version__
from nasps.config import load_config
from nasps.errors import ExportFailed, SearchFailed, Terminated, UserInputError

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

    schema = sub.add_parser("schema", help="print the JSON Schema of a config file, for editors")
    schema.add_argument("--final-training", action="store_true",
                        help="the schema of a `nasps train` config instead of a search's")

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
    export.add_argument("--format", choices=["pytorch", "onnx"], default="pytorch",
                        help="onnx: model.onnx as well, checked against PyTorch with onnxruntime")
    export.add_argument("--weights", metavar="FILE",
                        help="nasps train's weights.pt or weights.safetensors of this child, for model.onnx")

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
        commands = {"search": _search, "validate": _validate, "schema": _schema, "report": _report, "export": _export,
                    "train": _train}
        return commands[args.command](args)
    except UserInputError as exc:
        print(f"nasps: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SearchFailed, ExportFailed) as exc:
        print(f"nasps: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _validate(args) -> int:
    config = load_config(args.config, args.overrides)
    _check_search(config, args.config, connect=False)
    print(f"{args.config}: ok")
    return 0


def _schema(args) -> int:
    from nasps.config import Config, FinalTrainingConfig, json_schema
    print(json.dumps(json_schema(FinalTrainingConfig if args.final_training else Config), indent=2))
    return 0


def _check_search(config, path: str, connect: bool = True) -> None:
    from nasps.api import check_search
    try:
        check_search(config, connect=connect)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def _search(args) -> int:
    from nasps.state.rundir import BudgetMet, check_budget_left, default_run_dir, open_for_resume, prepare_run_dir
    from nasps.views.report import format_report, summarize

    if (args.config is None) == (args.resume is None):
        raise UserInputError("search: give --config FILE for a new search, or --resume RUN_DIR to continue one")
    if args.resume and args.run_dir:
        raise UserInputError("--run-dir: a resumed search stays in its own directory (--resume RUN_DIR)")
    if args.resume:
        def check(config) -> None:
            _check_search(config, args.resume)
            check_budget_left(args.resume, config.budget.children, "--set budget.children=N")
        try:
            config = open_for_resume(args.resume, args.overrides, check=check)
        except BudgetMet as done:
            print(f"nasps: nothing to do: {done}")
            return 0
        run_dir = Path(args.resume)
    else:
        config = load_config(args.config, args.overrides)
        _check_search(config, args.config)
        run_dir = prepare_run_dir(args.run_dir or default_run_dir())

    from nasps.progress import ProgressView, sample_cap_note, starting_line, stop_problem
    from nasps.runtime.driver import run_search  # imports Ray: only once the input is known to be good
    from nasps.spaces import build_space
    print(starting_line(config, run_dir, args.resume is not None), flush=True)
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
    problem = stop_problem(p, f"nasps search --resume {run_dir}")
    if problem:
        print(f"nasps: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    if p.stop_reason == "sample_cap":
        print(f"nasps: stopped early: {sample_cap_note(p)}")
    print()
    print(format_report(summarize(run_dir)))
    return 0


def _report(args) -> int:
    from nasps.views.report import (
        format_comparison,
        format_report,
        load_run,
        report_json,
        summarize,
        write_report_plots,
    )
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
    from nasps.views.export import ONNX_FILE, export
    for path in export(args.run_dir, args.rank, args.out, onnx=args.format == "onnx", weights=args.weights):
        if path.name != ONNX_FILE:
            print(f"wrote {path}")
        elif args.weights:
            print(f"wrote {path} (the trained weights of {args.weights})")
        else:
            print(f"wrote {path} (initial weights, those of torch.manual_seed(0); build_model(): "
                  "--weights FILE of nasps train puts trained ones in)")
    return 0


def _train(args) -> int:
    from nasps.config import FinalTrainingConfig
    from nasps.training.final import check_out_dir, default_out, prepare, save
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


if __name__ == "__main__":
    sys.exit(main())
