"""Random search as a policy: every decision uniform and independent, nothing to learn."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from nasps.policies.base import SampledBatch
from nasps.spaces import Decision


class UniformPolicy:
    learns = False
    num_params = 0

    def __init__(self, decisions: Sequence[Decision]):
        self.sizes = [d.num_choices for d in decisions]

    def initial_params(self, seed: int) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.float32)

    def _log_prob(self, length: int) -> float:
        return -sum(math.log(n) for n in self.sizes[:length])

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator,
               length: Optional[int] = None) -> SampledBatch:
        sizes = self.sizes if length is None else self.sizes[:length]
        columns = [torch.randint(n, (m,), generator=generator) for n in sizes]
        actions = tuple(tuple(int(c[k]) for c in columns) for k in range(m))
        log_prob = self._log_prob(len(sizes))
        return SampledBatch(actions, (log_prob,) * m, (-log_prob,) * m)

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob = torch.tensor([self._log_prob(len(a)) for a in actions])
        return log_prob, -log_prob
