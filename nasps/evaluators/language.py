"""The ``language_model`` evaluator: an rnn_cell child as a 2-layer language model.

The worker builds this once; the text is tokenised on the first child and stays resident on the
training device. Reward: c / (best validation perplexity)^2, c = 80 as in the paper. An
rnn_cell space's ``hyperparameters`` named learning_rate, dropout, batch_size or epochs override
the evaluator's value for that child.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from nasps.children.rnn import CellLanguageModel
from nasps.config import LM_HYPERPARAMETERS, LanguageModelEvaluatorConfig
from nasps.data.text import TextSplits, load_text_splits
from nasps.evaluators.base import ChildFailure, Report, Score
from nasps.spaces import Architecture
from nasps.training.devices import is_out_of_memory, pick_device, release_memory
from nasps.training.language import LMSettings, train_language_model


class LanguageModelEvaluator:
    def __init__(self, config: LanguageModelEvaluatorConfig):
        self.config = config
        self.device = pick_device(config.device)
        self._data: Optional[TextSplits] = None

    @property
    def data(self) -> TextSplits:
        if self._data is None:
            self._data = load_text_splits(self.config.dataset, self.config.seed).to(self.device)
        return self._data

    def evaluate(self, arch: Architecture, report: Optional[Report] = None) -> Score:
        value = arch.as_dict()
        c = self.config
        chosen = {k: v for k, v in value.get("hyperparameters", {}).items() if k in LM_HYPERPARAMETERS}
        settings = LMSettings(epochs=int(chosen.get("epochs", c.epochs)),
                              batch_size=int(chosen.get("batch_size", c.batch_size)), bptt=c.bptt,
                              learning_rate=float(chosen.get("learning_rate", c.learning_rate)), clip=c.clip,
                              max_tokens_per_epoch=c.max_tokens_per_epoch)
        dropout = float(chosen.get("dropout", c.dropout))
        data = self.data
        deadline = time.monotonic() + c.timeout_s if c.timeout_s else None
        torch.manual_seed(c.seed)
        model = None
        try:
            model = CellLanguageModel(value, data.vocab_size, c.hidden_size, c.num_layers, dropout, c.tie_weights)
            # Early stopping compares the reward each epoch would give: higher is better.
            scored = (lambda epoch, ppl: report(epoch, c.reward_constant / ppl ** 2)) \
                if report is not None and c.early_stopping else None
            record = train_language_model(model, data, settings, self.device, deadline, scored)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            message = str(exc).splitlines()[0][:300]
        else:
            best = min(record.val_perplexities)
            metrics = {"val_perplexity": record.val_perplexities[-1], "best_val_perplexity": best,
                       "val_perplexities": record.val_perplexities, "train_loss": record.train_losses[-1],
                       "epochs": len(record.val_perplexities), "planned_epochs": settings.epochs,
                       "params": sum(p.numel() for p in model.parameters()),
                       "tokens_per_s": record.tokens_per_s, "train_s": record.train_seconds}
            return Score(c.reward_constant / best ** 2, metrics)
        del model
        release_memory(self.device)
        raise ChildFailure("oom", f"out of memory: {message}")
