"""The factorized policy: one independent learnable logit vector per decision.

P(a) = prod_t softmax(logits_t)[a_t]. Parameters start at zero, the uniform distribution.
The decisions' logits are laid into one padded matrix (padding at -inf), so sampling and
scoring are a handful of tensor operations whatever the number of decisions.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from nasps.policies.base import SampledBatch, score_by_length
from nasps.spaces import Decision


class FactorizedPolicy:
    learns = True

    def __init__(self, decisions: Sequence[Decision]):
        self.sizes = [d.num_choices for d in decisions]
        self.num_params = sum(self.sizes)
        width = max(self.sizes, default=1)
        # Row t, column c of the padded matrix reads parameter index[t, c] (or padding).
        index = torch.full((len(self.sizes), width), self.num_params, dtype=torch.long)
        start = 0
        for t, n in enumerate(self.sizes):
            index[t, :n] = torch.arange(start, start + n)
            start += n
        self._index = index
        self._rows = torch.arange(len(self.sizes))

    def initial_params(self, seed: int) -> torch.Tensor:
        return torch.zeros(self.num_params, dtype=torch.float32)

    def _log_probs_matrix(self, params: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([params, params.new_full((1,), float("-inf"))])[self._index]
        return torch.log_softmax(padded, dim=1)

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator,
               length: Optional[int] = None) -> SampledBatch:
        n = len(self.sizes) if length is None else length
        with torch.no_grad():
            logp = self._log_probs_matrix(params)[:n]
            if n:
                actions = torch.multinomial(logp.exp(), m, replacement=True, generator=generator).T
            else:
                actions = torch.zeros(m, 0, dtype=torch.long)
            log_probs, entropies = self._score(logp, actions)
        return SampledBatch(tuple(map(tuple, actions.tolist())), tuple(log_probs.tolist()),
                            tuple(entropies.tolist()))

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        logp = self._log_probs_matrix(params)
        return score_by_length(actions, lambda rows: self._score(logp[:rows.shape[1]], rows))

    def _score(self, logp: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log P of each row of actions under the first len(row) decisions, and their entropy."""
        log_prob = logp[self._rows[:actions.shape[1]], actions].sum(dim=1)  # (m,)
        p = logp.exp()
        entropy = -(p * logp.masked_fill(p == 0, 0.0)).sum()
        return log_prob, entropy.expand(actions.shape[0])

    def probabilities(self, params: torch.Tensor) -> list[torch.Tensor]:
        """Each decision's distribution, for reports and tests."""
        p = self._log_probs_matrix(params).exp()
        return [p[t, :n] for t, n in enumerate(self.sizes)]
