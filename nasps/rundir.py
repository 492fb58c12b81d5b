"""A run directory: the resolved config, the results store, and nothing else nasps did not write.

``RUN_DIR/config.yaml`` is the config the search ran with (every default filled in) and
``RUN_DIR/results.sqlite`` holds its children. A directory that already holds a search is
never reused by a new one, so nothing already written is overwritten.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import nasps
from nasps.config import Config, config_to_dict, dump_config
from nasps.errors import UserInputError
from nasps.store import STORE_NAME, ResultsStore

CONFIG_NAME = "config.yaml"


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Create ``run_dir`` for a new search, or explain in one line why it cannot be used."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"--run-dir {run_dir}: exists and is not a directory")
    if (run_dir / STORE_NAME).exists() or (run_dir / CONFIG_NAME).exists():
        raise UserInputError(f"--run-dir {run_dir}: already holds a search; choose another directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--run-dir {run_dir}: cannot create ({exc.strerror})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UserInputError(f"--run-dir {run_dir}: not writable")
    return run_dir


def open_new_store(run_dir: str | Path, config: Config) -> ResultsStore:
    """Write the resolved config atomically and create the store with the run's provenance."""
    run_dir = prepare_run_dir(run_dir)
    tmp = run_dir / (CONFIG_NAME + ".tmp")
    tmp.write_text(dump_config(config), encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG_NAME)
    store = ResultsStore(run_dir / STORE_NAME, create=True)
    store.set_meta({"config": config_to_dict(config), "nasps_version": nasps.__version__,
                    "git_commit": _git_commit(), "created_at": time.time()})
    return store


def _git_commit() -> str | None:
    """The commit of the nasps checkout this runs from, when it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(nasps.__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
