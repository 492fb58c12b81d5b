"""Checkpoints of a search's learning state, so ``nasps search --resume RUN_DIR`` continues it.

``RUN_DIR/checkpoint.pt`` holds each shard (parameters, Adam moments, version, the last push
receipt of each replica) and each replica's controller (baseline, push counter, random
generator). Children are not in it: the results store already holds every finished one, and
its ``pending`` table the ones in flight. The file is written whole and then renamed over the
old one, so a crash mid-write leaves the previous checkpoint; it is read with
``torch.load(weights_only=True)``, which builds tensors and plain data only.
"""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nasps.errors import UserInputError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def as_tensors(state: dict) -> dict:
    """A state dict with its numpy arrays (a shard's) as tensors, which
    ``torch.load(weights_only=True)`` reads back; loading a shard accepts either."""
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def save_checkpoint(run_dir: str | Path, shards: list[dict], replicas: dict[int, dict], updates: int) -> Path:
    path = Path(run_dir) / CHECKPOINT_NAME
    tmp = path.with_name(CHECKPOINT_NAME + ".tmp")
    torch.save({"format": FORMAT, "shards": [as_tensors(s) for s in shards],
                "replicas": {str(k): v for k, v in replicas.items()}, "updates": updates, "saved_at": time.time()}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str | Path) -> Optional[dict]:
    """The run's checkpoint, None when it has none yet; a damaged one is a one-line error."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"{path}: not a readable nasps checkpoint ({str(exc).splitlines()[0][:200]}); "
                             "move it away to resume from the store alone (the policy restarts)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "shards" not in state:
        raise UserInputError(f"{path}: not a nasps checkpoint of format {FORMAT}")
    state["replicas"] = {int(k): v for k, v in state["replicas"].items()}
    return state


def check_resumable(config, checkpoint: Optional[dict]) -> None:
    """The checkpoint fits this config: its shards split the policy the same way."""
    if checkpoint is None:
        return
    from nasps.policies import build_policy
    from nasps.spaces import build_space
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    shards = config.cluster.parameter_servers if policy.learns else 0
    if len(checkpoint["shards"]) != shards:
        raise UserInputError(f"cluster.parameter_servers: the checkpoint's policy is split in "
                             f"{len(checkpoint['shards'])} shards; a resumed search keeps that number")


def resume_seq(replica: int, controller: Optional[dict], shards: list[dict], stored: int = 0) -> int:
    """Where a replica's push counter continues: past the counter of its controller's last
    state, every receipt a shard holds for it, and ``stored``, the last of its pushes the store
    recorded (pushes lost to a restore keep their rows). A lower one would have its next pushes
    taken for retries, or replace rows."""
    seqs = [seq for s in shards for name, (seq, _) in s["receipts"].items()
            if name == str(replica) or name.startswith(f"{replica}.")]
    return max([controller["seq"] if controller else 0, stored, *seqs])


class CheckpointClock:
    """When to save: every ``every_updates`` controller updates or ``every_s`` seconds, whichever
    comes first, and only when something changed."""

    def __init__(self, every_s: float, every_updates: int, updates: int = 0):
        self.every_s = every_s
        self.every_updates = every_updates
        self.saved_updates = updates
        self.saved_at = time.monotonic()

    def due(self, updates: int) -> bool:
        if updates == self.saved_updates:
            return False
        return (updates - self.saved_updates >= self.every_updates
                or time.monotonic() - self.saved_at >= self.every_s)

    def saved(self, updates: int) -> None:
        self.saved_updates = updates
        self.saved_at = time.monotonic()
