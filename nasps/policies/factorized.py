"""The factorized policy: one independent learnable logit vector per decision.

P(a) = prod_t softmax(logits_t)[a_t]. Parameters start at zero, the uniform distribution.
"""

from __future__ import annotations

from typing import Sequence

import torch

from nasps.policies.base import SampledBatch
from nasps.spaces import Decision


class FactorizedPolicy:
    learns = True

    def __init__(self, decisions: Sequence[Decision]):
        self.sizes = [d.num_choices for d in decisions]
        self.num_params = sum(self.sizes)

    def initial_params(self, seed: int) -> torch.Tensor:
        return torch.zeros(self.num_params, dtype=torch.float32)

    def _log_softmaxes(self, params: torch.Tensor) -> list[torch.Tensor]:
        return [torch.log_softmax(chunk, dim=0) for chunk in torch.split(params, self.sizes)]

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator) -> SampledBatch:
        with torch.no_grad():
            logps = self._log_softmaxes(params)
            columns = [torch.multinomial(lp.exp(), m, replacement=True, generator=generator)
                       for lp in logps]
            actions = torch.stack(columns, dim=1) if columns else torch.zeros(m, 0, dtype=torch.long)
            log_probs, entropies = self._score(logps, actions)
        return SampledBatch(tuple(tuple(int(a) for a in row) for row in actions),
                            tuple(log_probs.tolist()), tuple(entropies.tolist()))

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._score(self._log_softmaxes(params), torch.as_tensor(actions, dtype=torch.long))

    @staticmethod
    def _score(logps: list[torch.Tensor], actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = actions.shape[0]
        log_prob = torch.zeros(m)
        entropy = torch.zeros(())
        for t, lp in enumerate(logps):
            log_prob = log_prob + lp[actions[:, t]]
            entropy = entropy - (lp.exp() * lp).sum()
        return log_prob, entropy.expand(m)

    def probabilities(self, params: torch.Tensor) -> list[torch.Tensor]:
        """Each decision's distribution, for reports and tests."""
        return [lp.exp() for lp in self._log_softmaxes(params)]
