"""Image-classification training of one child, fast by construction.

The data is already a tensor on the training device: batches are index slices of it and
augmentation (random padded crops, horizontal flips) runs on the device, so there are no
DataLoader processes and no copies per step. On CUDA: channels_last, low-precision autocast
(``precision``) and cudnn benchmark. Failures are results: a non-finite loss raises
``ChildFailure("diverged")`` and running past the deadline ``ChildFailure("timeout")``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nasps.data.images import ImageSplits
from nasps.evaluators.base import ChildFailure
from nasps.training.devices import pick_precision


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    crop_padding: int
    flip: bool
    lr_decay_epoch: Optional[int] = None
    precision: str = "auto"  # see nasps.training.devices.pick_precision


@dataclass
class TrainRecord:
    val_accuracies: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    images: int = 0
    train_seconds: float = 0.0  # training steps only, validation excluded
    precision: str = "fp32"

    @property
    def images_per_s(self) -> float:
        return self.images / self.train_seconds if self.train_seconds > 0 else 0.0


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded batch, one offset per image, and random flips."""
    n, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(x.device)
        rows = (torch.arange(h, device=x.device)[None] + dy)[:, None, :, None]
        cols = (torch.arange(w, device=x.device)[None] + dx)[:, None, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flips, x.flip(3), x)
    return x


def _lr_factor(schedule: str, step: int, total: int, decay_step: Optional[int] = None) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    if schedule == "step":
        if decay_step is not None:  # the paper's final training: one 10x drop at a chosen epoch
            return 0.1 if step >= decay_step else 1.0
        return 0.01 if step >= 0.75 * total else 0.1 if step >= 0.5 * total else 1.0
    return 1.0


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad(), autocast():
        for start in range(0, len(x), max(batch_size, 512)):
            logits = model(x[start:start + max(batch_size, 512)])
            correct += (logits.argmax(1) == y[start:start + len(logits)]).sum()
    model.train()
    return correct.item() / len(x)


def train_classifier(model: nn.Module, data: ImageSplits, settings: TrainSettings, device: torch.device,
                     seed: int, deadline: Optional[float] = None,
                     report: Optional[Callable[[int, float], bool]] = None) -> TrainRecord:
    """Train ``model`` on ``data`` (already on ``device``); validation accuracy after each epoch,
    told to ``report(epoch, accuracy)``, which stops the training when it returns True."""
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    if cuda:
        torch.backends.cudnn.benchmark = True
    precision = pick_precision(settings.precision, device)
    autocast, scaler = precision.autocast, precision.scaler()
    record = TrainRecord(precision=precision.name)

    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate, momentum=settings.momentum,
                                nesterov=settings.nesterov and settings.momentum > 0,
                                weight_decay=settings.weight_decay)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    decay_step = settings.lr_decay_epoch * steps_per_epoch if settings.lr_decay_epoch is not None else None
    generator = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for _ in range(settings.epochs):
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        order = torch.randperm(n, generator=generator).to(device)
        for batch in order.split(settings.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate * _lr_factor(settings.schedule, step, total, decay_step)
            x = augment(data.train_x[batch], settings.crop_padding, settings.flip, generator)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                loss = F.cross_entropy(model(x), data.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
            scaler.update()
            loss_sum += loss.detach() * len(batch)
            step += 1
            if deadline is not None and time.monotonic() > deadline:
                raise ChildFailure("timeout", f"still training after epoch {len(record.val_accuracies)} "
                                              "at the evaluator's timeout_s")
        epoch_loss = loss_sum.item() / n  # one sync per epoch
        if not math.isfinite(epoch_loss):
            raise ChildFailure("diverged", f"training loss is {epoch_loss} in epoch "
                                           f"{len(record.val_accuracies) + 1}")
        record.train_losses.append(epoch_loss)
        record.images += n
        record.train_seconds += time.perf_counter() - start
        record.val_accuracies.append(accuracy(model, data.val_x, data.val_y, settings.batch_size, autocast))
        if report is not None and report(len(record.val_accuracies), record.val_accuracies[-1]):
            break
    return record

