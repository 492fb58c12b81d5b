"""The ``image_classification`` evaluator: build the conv child, train it, score it.

The worker builds this once; the dataset is loaded on the first child and stays resident on
the training device for every child after it. A conv space's ``hyperparameters`` named like a
trainer setting (learning_rate, momentum, weight_decay, batch_size, epochs) override the
evaluator's value for that child. Out of memory (CUDA, or a CPU allocation that fails) frees
what the child held and ends it as ``oom``; the worker lives on.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

import torch

from nasps.children import build_conv_net
from nasps.config import TRAINER_HYPERPARAMETERS, ImageClassificationEvaluatorConfig
from nasps.data.images import ImageSplits, load_image_splits
from nasps.evaluators.base import ChildFailure, Report, Score
from nasps.spaces import Architecture
from nasps.training.devices import is_out_of_memory, pick_device, release_memory
from nasps.training.image import TrainSettings, train_classifier


def reward_of(kind: str, accuracies: list[float]) -> float:
    if kind == "accuracy_cubed_last5":
        return max(accuracies[-5:]) ** 3
    if kind == "best_accuracy":
        return max(accuracies)
    return accuracies[-1]


class ImageClassificationEvaluator:
    def __init__(self, config: ImageClassificationEvaluatorConfig):
        self.config = config
        self.device = pick_device(config.device)
        self.settings = TrainSettings(
            epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
            momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay,
            schedule=config.schedule, crop_padding=config.crop_padding, flip=config.flip,
            lr_decay_epoch=config.lr_decay_epoch, precision=config.precision)
        self._data: Optional[ImageSplits] = None

    @property
    def data(self) -> ImageSplits:
        if self._data is None:
            splits = load_image_splits(self.config.dataset, self.config.validation_size, self.config.seed)
            self._data = splits.to(self.device)
        return self._data

    def settings_for(self, hyperparameters: dict) -> TrainSettings:
        chosen = {k: v for k, v in hyperparameters.items() if k in TRAINER_HYPERPARAMETERS}
        for name in ("batch_size", "epochs"):
            if name in chosen:
                chosen[name] = int(chosen[name])
        return replace(self.settings, **chosen)

    def evaluate(self, arch: Architecture, report: Optional[Report] = None) -> Score:
        value = arch.as_dict()
        data = self.data
        settings = self.settings_for(value.get("hyperparameters", {}))
        deadline = time.monotonic() + self.config.timeout_s if self.config.timeout_s else None
        torch.manual_seed(self.config.seed)
        model = None
        try:
            model = build_conv_net(value, data.channels, data.num_classes, bn_epsilon=self.config.bn_epsilon)
            if self.config.compile:
                model = torch.compile(model)
            record = train_classifier(model, data, settings, self.device, self.config.seed, deadline,
                                      report if self.config.early_stopping else None)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            message = str(exc).splitlines()[0][:300]
        else:
            params = sum(p.numel() for p in model.parameters())
            metrics = {"val_accuracy": record.val_accuracies[-1],
                       "best_val_accuracy": max(record.val_accuracies),
                       "val_accuracies": record.val_accuracies, "train_loss": record.train_losses[-1],
                       "epochs": len(record.val_accuracies), "planned_epochs": settings.epochs, "params": params,
                       "images_per_s": record.images_per_s, "train_s": record.train_seconds,
                       "precision": record.precision}
            return Score(reward_of(self.config.reward, record.val_accuracies), metrics)
        # Out of memory: drop everything the child held before the next one starts.
        del model
        release_memory(self.device)
        raise ChildFailure("oom", f"out of memory: {message}")
