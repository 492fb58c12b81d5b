"""The policy interface: sample decisions, and give log-probabilities to differentiate.

A policy sees only the decisions and how many choices each has. Its parameters are one flat
float32 vector, so the parameter-server shards can split it into contiguous slices without
knowing what the parameters are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


@dataclass(frozen=True)
class SampledBatch:
    """m sampled architectures as choice indices, with what the policy knew when sampling."""

    actions: tuple[tuple[int, ...], ...]
    log_probs: tuple[float, ...]
    entropies: tuple[float, ...]


class Policy(Protocol):
    num_params: int
    learns: bool

    def initial_params(self, seed: int) -> torch.Tensor:
        """A fresh flat parameter vector (float32)."""

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator) -> SampledBatch:
        """Sample m architectures from the policy given by ``params``."""

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable log P(actions) and the policy's entropy along each, both shape (m,)."""
