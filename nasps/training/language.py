"""Language-model training of one rnn_cell child: truncated BPTT over resident token columns.

SGD with gradient-norm clipping; the learning rate is divided by 4 after an epoch whose
validation perplexity did not improve. Failures are results: a non-finite loss, or a best
validation perplexity over twice the vocabulary size (worse than guessing), raises
``ChildFailure("diverged")``; running past the deadline ``ChildFailure("timeout")``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from nasps.children.rnn import CellLanguageModel
from nasps.data.text import TextSplits, batchify
from nasps.evaluators.base import ChildFailure

EVAL_BATCH = 10
WORSE_THAN_GUESSING = 2  # a child that ends above this many times the vocabulary size diverged


@dataclass(frozen=True)
class LMSettings:
    epochs: int
    batch_size: int
    bptt: int
    learning_rate: float
    clip: float
    max_tokens_per_epoch: Optional[int] = None


@dataclass
class LMRecord:
    val_perplexities: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    tokens: int = 0
    train_seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def _detach(state):
    return [(h.detach(), c.detach()) for h, c in state]


def perplexity(model: CellLanguageModel, tokens: torch.Tensor, bptt: int) -> float:
    """exp of the mean cross-entropy of predicting each next token."""
    columns = batchify(tokens, EVAL_BATCH)
    model.eval()
    state = model.initial_state(EVAL_BATCH, tokens.device)
    total, count = torch.zeros((), device=tokens.device), 0
    with torch.no_grad():
        for start in range(0, columns.shape[0] - 1, bptt):
            inputs = columns[start:start + bptt]
            targets = columns[start + 1:start + 1 + len(inputs)]
            inputs = inputs[:len(targets)]
            logits, state = model(inputs, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
            count += targets.numel()
    model.train()
    if count == 0:
        raise ValueError(f"the validation split has {len(tokens)} tokens, too few to score a child "
                         f"(at least {2 * EVAL_BATCH} are needed)")
    # Capped so that the reward c / ppl^2 stays a (tiny) float for a hopeless child.
    return math.exp(min(total.item() / count, 300.0))


def train_language_model(model: CellLanguageModel, data: TextSplits, settings: LMSettings,
                         device: torch.device, deadline: Optional[float] = None,
                         report: Optional[Callable[[int, float], bool]] = None) -> LMRecord:
    """Validation perplexity after each epoch, told to ``report(epoch, perplexity)``, which
    stops the training when it returns True."""
    model = model.to(device)
    columns = batchify(data.train, settings.batch_size)
    if columns.shape[0] < 2:
        raise ValueError(f"the training split has {len(data.train)} tokens, too few for batch_size "
                         f"{settings.batch_size} (at least {2 * settings.batch_size} are needed)")
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.learning_rate)
    record = LMRecord()
    best = math.inf
    for epoch in range(settings.epochs):
        start = time.perf_counter()
        state = model.initial_state(settings.batch_size, device)
        loss_sum, tokens = torch.zeros((), device=device), 0
        for begin in range(0, columns.shape[0] - 1, settings.bptt):
            inputs = columns[begin:begin + settings.bptt]
            targets = columns[begin + 1:begin + 1 + len(inputs)]
            inputs = inputs[:len(targets)]
            state = _detach(state)
            logits, state = model(inputs, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            loss_sum += loss.detach() * targets.numel()
            tokens += targets.numel()
            if deadline is not None and time.monotonic() > deadline:
                raise ChildFailure("timeout", f"still training in epoch {epoch + 1} at the evaluator's timeout_s")
            if settings.max_tokens_per_epoch is not None and tokens >= settings.max_tokens_per_epoch:
                break
        epoch_loss = loss_sum.item() / max(tokens, 1)
        if not math.isfinite(epoch_loss):
            raise ChildFailure("diverged", f"training loss is {epoch_loss} in epoch {epoch + 1}")
        record.train_losses.append(epoch_loss)
        record.tokens += tokens
        record.train_seconds += time.perf_counter() - start
        ppl = perplexity(model, data.valid, settings.bptt)
        if not math.isfinite(ppl):
            raise ChildFailure("diverged", f"validation perplexity is {ppl} in epoch {epoch + 1}")
        record.val_perplexities.append(ppl)
        if ppl >= best:
            for group in optimizer.param_groups:
                group["lr"] /= 4.0
        best = min(best, ppl)
        if report is not None and report(epoch + 1, ppl):
            break
    if best > WORSE_THAN_GUESSING * data.vocab_size:
        # Its reward c / ppl^2 would be a tiny number indistinguishable from a poor cell's.
        raise ChildFailure("diverged", f"validation perplexity {best:.4g} after "
                                       f"{len(record.val_perplexities)} epoch(s), "
                                       f"over {WORSE_THAN_GUESSING}x the {data.vocab_size} of guessing uniformly")
    return record
