"""Random search as a policy: every decision uniform and independent, nothing to learn."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from nasps.policies.base import SampledBatch
from nasps.spaces import Decision


class UniformPolicy:
    learns = False
    num_params = 0

    def __init__(self, decisions: Sequence[Decision]):
        self.sizes = [d.num_choices for d in decisions]
        self._log_prob = -sum(math.log(n) for n in self.sizes)

    def initial_params(self, seed: int) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.float32)

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator) -> SampledBatch:
        columns = [torch.randint(n, (m,), generator=generator) for n in self.sizes]
        actions = tuple(tuple(int(c[k]) for c in columns) for k in range(m))
        return SampledBatch(actions, (self._log_prob,) * m, (-self._log_prob,) * m)

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        m = len(actions)
        return torch.full((m,), self._log_prob), torch.full((m,), -self._log_prob)
