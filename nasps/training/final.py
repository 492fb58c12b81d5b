"""``nasps train``: the final training of a searched architecture, as the paper does after the search.

A small grid over training settings (learning rate, weight decay, batch-norm epsilon, the epoch
of the learning-rate drop, or any other evaluator setting), each point trained on the training
split with more epochs and optionally a wider network. The point with the best validation score
is kept; only that one is scored on the test split, so the test split never chooses anything.
Its weights are saved (a state dict or safetensors) with a JSON record of how they were made.
The grid runs on Ray (``nasps.runtime.final``); one trial is ``train_trial`` here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

import nasps
from nasps.config import (
    FinalTrainingConfig,
    ImageClassificationEvaluatorConfig,
    LanguageModelEvaluatorConfig,
    config_from_dict,
    config_to_dict,
    trainer_of,
)
from nasps.errors import ConfigError, UserInputError
from nasps.evaluators import check_runnable
from nasps.evaluators.base import ChildFailure
from nasps.views.export import ranked_child

RECORD_FILE = "training.json"
WEIGHTS_FILES = {"state_dict": "weights.pt", "safetensors": "weights.safetensors"}


@dataclass(frozen=True)
class TrainingJob:
    """Everything a trial needs, resolved: what to train and the settings every trial shares."""

    run_dir: str
    rank: int
    child_id: int
    search_reward: Optional[float]
    space: str
    arch: dict
    evaluator: Any  # ImageClassificationEvaluatorConfig | LanguageModelEvaluatorConfig
    trials: list[dict]
    training: FinalTrainingConfig


def parse_arch(text: str) -> tuple[Path, int]:
    """``RUN_DIR`` or ``RUN_DIR:RANK`` (rank 1 = the best child)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head:
        return Path(head), int(tail)
    if sep and head and not Path(text).exists():
        raise UserInputError(f"--arch {text}: the rank after ':' must be a whole number")
    return Path(text), 1


def prepare(arch: str, training: FinalTrainingConfig) -> TrainingJob:
    """Read the child and the search's config from the run directory and resolve the trials."""
    run_dir, rank = parse_arch(arch)
    if rank < 1:
        raise UserInputError(f"--arch {arch}: ranks start at 1")
    row, config_raw = ranked_child(run_dir, rank)
    search = config_from_dict(config_raw)
    wanted = trainer_of(search.space.type)
    if wanted is None:
        raise UserInputError(f"--arch {arch}: a {search.space.type} architecture has no network for "
                             "nasps to train (final training is for conv and rnn_cell spaces)")
    evaluator = training.evaluator or search.evaluator
    if not isinstance(evaluator, wanted):
        raise ConfigError(f"evaluator.type: a {search.space.type} network trains with "
                          f"{wanted.__dataclass_fields__['type'].default}, not {evaluator.type}")
    # The child's own hyperparameter decisions are settings of its training, as in the search.
    searched = {k: v for k, v in row.arch.get("hyperparameters", {}).items()
                if k in {f.name for f in dataclasses.fields(evaluator)}}
    evaluator = dataclasses.replace(evaluator, **searched)
    check_runnable(evaluator, with_test=True)  # the one-line error for missing data, before any worker starts
    if training.epochs is not None:
        evaluator = dataclasses.replace(evaluator, epochs=training.epochs)
    return TrainingJob(str(run_dir), rank, row.id, row.reward, search.space.type, row.arch, evaluator,
                       training.trials(evaluator), training)


def train_trial(job: TrainingJob, index: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Train grid point ``index``; its record and its weights. The record's ``score`` (validation
    only) is what chooses; its test score is kept for the chosen trial alone."""
    settings = dataclasses.replace(job.evaluator, **job.trials[index])
    started = time.time()
    torch.manual_seed(job.training.seed)
    try:
        if job.space == "conv":
            model, record = _train_conv(job, settings)
        else:
            model, record = _train_cell(job, settings)
    except ChildFailure as exc:  # a diverging learning rate costs its grid point, not the grid
        return {"trial": index, "settings": job.trials[index], "status": exc.status, "error": str(exc),
                "score": None, "train_s": time.time() - started}, {}
    record.update({"trial": index, "settings": job.trials[index], "status": "ok",
                   "train_s": time.time() - started, "params": sum(p.numel() for p in model.parameters())})
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return record, weights


def _train_conv(job: TrainingJob, settings: ImageClassificationEvaluatorConfig):
    from nasps.children import build_conv_net
    from nasps.data.images import load_image_splits
    from nasps.evaluators.image import ImageClassificationEvaluator
    from nasps.training.image import accuracy, train_classifier

    evaluator = ImageClassificationEvaluator(settings)
    data = load_image_splits(settings.dataset, settings.validation_size, settings.seed, with_test=True)
    data = data.to(evaluator.device)
    model = build_conv_net(job.arch, data.channels, data.num_classes, job.training.width_multiplier,
                           settings.bn_epsilon)
    trained = train_classifier(model, data, evaluator.settings_for({}), evaluator.device, job.training.seed)
    test = None
    if data.test_x is not None:
        test = accuracy(model, data.test_x, data.test_y, settings.batch_size, contextlib.nullcontext)
    return model.cpu(), {"val_accuracy": trained.val_accuracies[-1], "val_accuracies": trained.val_accuracies,
                         "score": trained.val_accuracies[-1], "test_accuracy": test,
                         "in_channels": data.channels, "num_classes": data.num_classes,
                         "input": data.preprocessing}


def _train_cell(job: TrainingJob, settings: LanguageModelEvaluatorConfig):
    from nasps.children.rnn import CellLanguageModel
    from nasps.data.text import load_text_splits
    from nasps.training.devices import pick_device
    from nasps.training.language import LMSettings, perplexity, train_language_model

    device = pick_device(settings.device)
    data = load_text_splits(settings.dataset, settings.seed, with_test=True).to(device)
    hidden = max(1, round(settings.hidden_size * job.training.width_multiplier))
    model = CellLanguageModel(job.arch, data.vocab_size, hidden, settings.num_layers, settings.dropout,
                              settings.tie_weights)
    trained = train_language_model(model, data, LMSettings(
        epochs=settings.epochs, batch_size=settings.batch_size, bptt=settings.bptt,
        learning_rate=settings.learning_rate, clip=settings.clip,
        max_tokens_per_epoch=settings.max_tokens_per_epoch), device)
    test = perplexity(model, data.test, settings.bptt) if data.test is not None else None
    return model.cpu(), {"val_perplexity": trained.val_perplexities[-1],
                         "val_perplexities": trained.val_perplexities,
                         "score": -trained.val_perplexities[-1], "test_perplexity": test,
                         "vocab_size": data.vocab_size, "hidden_size": hidden}


def best_trial(records: list[dict]) -> dict:
    """Highest validation score (accuracy, or minus perplexity); the earlier trial on a tie."""
    finished = [r for r in records if r["score"] is not None]
    if not finished:
        raise UserInputError("every grid point failed: " + "; ".join(
            f"trial {r['trial']} {r['settings']}: {r['error']}" for r in records))
    return max(finished, key=lambda r: (r["score"], -r["trial"]))


def check_out_dir(out: Path) -> Path:
    """A folder that holds no earlier final training (nothing there is ever overwritten)."""
    taken = [name for name in (RECORD_FILE, *WEIGHTS_FILES.values()) if (out / name).exists()]
    if taken:
        raise UserInputError(f"--out {out}: already holds {', '.join(taken)}; choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    return out


def save(out: Path, job: TrainingJob, records: list[dict], best: dict,
         weights: dict[str, torch.Tensor]) -> list[Path]:
    """The chosen weights and the record of how they were made; written then renamed."""
    name = WEIGHTS_FILES[job.training.weights_format]
    tmp = out / (name + ".tmp")
    if job.training.weights_format == "safetensors":
        from safetensors.torch import save_file
        # Tied weights (embedding = decoder) are one tensor under two names; safetensors wants copies.
        save_file({k: v.clone() for k, v in weights.items()}, str(tmp))
    else:
        torch.save(weights, tmp)
    tmp.replace(out / name)
    digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
    record = {
        "architecture": job.arch, "space": job.space, "run_dir": job.run_dir, "rank": job.rank,
        "child_id": job.child_id, "search_reward": job.search_reward,
        "evaluator": config_to_dict(dataclasses.replace(job.evaluator, **best["settings"])),
        "width_multiplier": job.training.width_multiplier, "seed": job.training.seed,
        "grid": {k: list(v) for k, v in job.training.grid.items()},
        "trials": [{k: v for k, v in r.items() if not k.startswith("test_") and k != "input"} for r in records],
        "chosen_trial": best["trial"], "validation": {k: best[k] for k in best if k.startswith("val_")},
        "test": {k: best[k] for k in best if k.startswith("test_")},
        "weights": {"file": name, "format": job.training.weights_format, "sha256": digest},
        "model": {k: best[k] for k in ("in_channels", "num_classes", "vocab_size", "hidden_size") if k in best},
        "input": best.get("input"),  # conv: the raw images the weights expect, and their normalisation
        "nasps_version": nasps.__version__, "finished_at": time.time(),
    }
    tmp = out / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out / RECORD_FILE)
    return [out / name, out / RECORD_FILE]


def default_out(job: TrainingJob) -> Path:
    return Path(job.run_dir) / f"final-rank{job.rank}"
