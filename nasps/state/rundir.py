"""A run directory: the resolved config, the results store, and nothing else nasps did not write.

``RUN_DIR/config.yaml`` is the config the search ran with (every default filled in) and
``RUN_DIR/results.sqlite`` holds its children. A directory that already holds a search is
never reused by a new one, so nothing already written is overwritten.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable

import nasps
from nasps.config import Config, config_to_dict, dump_config, load_config
from nasps.errors import UserInputError
from nasps.state.checkpoint import CHECKPOINT_NAME, check_resumable, load_checkpoint
from nasps.state.store import STORE_NAME, ResultsStore

CONFIG_NAME = "config.yaml"


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Create ``run_dir`` for a new search, or explain in one line why it cannot be used."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"--run-dir {run_dir}: exists and is not a directory")
    if any((run_dir / name).exists() for name in (STORE_NAME, CONFIG_NAME, CHECKPOINT_NAME)):
        raise UserInputError(f"--run-dir {run_dir}: already holds a search; choose another directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--run-dir {run_dir}: cannot create ({exc.strerror})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UserInputError(f"--run-dir {run_dir}: not writable")
    return run_dir


def open_new_store(run_dir: str | Path, config: Config) -> ResultsStore:
    """Write the resolved config and create the store with the run's provenance, each atomically."""
    run_dir = prepare_run_dir(run_dir)
    tmp = run_dir / (CONFIG_NAME + ".tmp")
    tmp.write_text(dump_config(config), encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG_NAME)
    # Made whole under another name, then renamed: a reader (nasps.load, nasps report) that
    # finds the store always finds its tables and its config.
    tmp = run_dir / (STORE_NAME + ".tmp")
    tmp.unlink(missing_ok=True)
    store = ResultsStore(tmp, create=True)
    store.set_meta({"config": config_to_dict(config), "nasps_version": nasps.__version__,
                    "git_commit": _git_commit(), "created_at": time.time()})
    store.close()
    os.replace(tmp, run_dir / STORE_NAME)
    return ResultsStore(run_dir / STORE_NAME, create=True)


RESUMABLE_SECTIONS = ("budget.", "cluster.")


def open_for_resume(run_dir: str | Path, overrides: list[str],
                    check: Callable[[Config], None] = lambda config: None) -> Config:
    """The config of the search in ``run_dir``, with ``--set`` changes to its budget and cluster
    only; checks the store opens. ``check`` (the evaluator imports, the data is there, there is
    something left to do) runs before anything is written. The new config replaces ``config.yaml`` (written, then
    renamed) and the store's meta keeps every earlier one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"--resume {run_dir}: no such run directory")
    for name in (CONFIG_NAME, STORE_NAME):
        if not (run_dir / name).is_file():
            raise UserInputError(f"--resume {run_dir}: no {name} there (not a nasps run directory)")
    for item in overrides:
        key = item.partition("=")[0]
        if not key.startswith(RESUMABLE_SECTIONS):
            raise UserInputError(f"--set {key}: a resumed search may change only budget.* and cluster.* keys")
    config = load_config(run_dir / CONFIG_NAME, overrides)
    check_resumable(config, load_checkpoint(run_dir))
    probe = ResultsStore(run_dir / STORE_NAME, readonly=True)  # a damaged store stops here, untouched
    try:
        probe.children()
    finally:
        probe.close()
    check(config)
    store = ResultsStore(run_dir / STORE_NAME, create=True)  # adds tables a newer nasps has
    try:
        store.children()
        meta = store.meta()
        history = meta.get("earlier_configs", []) + [meta.get("config")]
        store.set_meta({"config": config_to_dict(config), "earlier_configs": history,
                        "resumed_at": meta.get("resumed_at", []) + [time.time()]})
    except sqlite3.DatabaseError as exc:
        raise UserInputError(f"{run_dir / STORE_NAME}: not a readable nasps results store ({exc})") from None
    finally:
        store.close()
    tmp = run_dir / (CONFIG_NAME + ".tmp")
    tmp.write_text(dump_config(config), encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG_NAME)
    return config


def _git_commit() -> str | None:
    """The commit of the nasps checkout this runs from, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(nasps.__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class BudgetMet(Exception):
    """A resumed search whose budget is already trained: there is nothing to do."""


def check_budget_left(run_dir: str | Path, children: int, how_to_raise: str) -> None:
    """Raise BudgetMet when the search in ``run_dir`` has trained ``children`` and left none in
    flight; ``how_to_raise`` tells the user how to give it a larger budget."""
    store = ResultsStore(Path(run_dir) / STORE_NAME, readonly=True)
    try:
        trained, in_flight = store.count("cached = 0"), len(store.pending())
    finally:
        store.close()
    if trained >= children and not in_flight:
        raise BudgetMet(f"{run_dir} has trained {trained} children and budget.children is {children}; "
                        f"{how_to_raise} with a larger N continues it")
