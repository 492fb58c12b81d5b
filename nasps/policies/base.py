"""The policy interface: sample decisions, and give log-probabilities to differentiate.

A policy sees only the decisions and how many choices each has. Its parameters are one flat
float32 vector, so the parameter-server shards can split it into contiguous slices without
knowing what the parameters are.

A policy is built for a space's full list of decisions. With a depth curriculum the space asks
for fewer of them (a prefix): ``sample(..., length=n)`` makes only the first n, and
``log_probs`` scores action sequences of any of those lengths.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

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

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator,
               length: Optional[int] = None) -> SampledBatch:
        """Sample m architectures (their first ``length`` decisions) from the policy."""

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable log P(actions) and the policy's entropy along each, both shape (m,)."""


Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def score_by_length(actions: Sequence[Sequence[int]], score: Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``score`` (a batch of equal-length action rows -> (log_prob, entropy)) to action
    sequences of possibly different lengths, one call per length, results in input order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for k, a in enumerate(actions):
        groups[len(a)].append(k)
    if len(groups) <= 1:
        return score(torch.as_tensor([list(a) for a in actions], dtype=torch.long).reshape(len(actions), -1))
    log_probs: list = [None] * len(actions)
    entropies: list = [None] * len(actions)
    for rows in groups.values():
        lp, ent = score(torch.as_tensor([list(actions[k]) for k in rows], dtype=torch.long))
        for j, k in enumerate(rows):
            log_probs[k], entropies[k] = lp[j], ent[j]
    return torch.stack(log_probs), torch.stack(entropies)
