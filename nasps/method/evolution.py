"""Regularised (aging) evolution (Real et al. 2019) as a way to propose architectures.

The population is the last ``population`` children that trained ``ok``, across every replica,
in the order the store committed them: the oldest leaves when a new one comes, however good it
was. A proposal is a mutant of the best of ``sample_size`` members drawn at random: one
decision re-drawn to a different value. Until the population is full, proposals are random.

With a depth curriculum, a parent sampled at a shallower depth keeps its decisions as the
prefix of its mutant, and the decisions the deeper step adds are drawn at random first.

Nothing here is learned by gradient: the population lives in the results store (the ledger
keeps it), so it survives a resume, a recorder restart and a replica's death.
"""

from __future__ import annotations

from typing import Sequence

import torch

from nasps.spaces import Decision

Encoded = tuple[tuple[int, ...], float]  # a member as its choice indices, and its reward


class AgingEvolution:
    def __init__(self, decisions: Sequence[Decision], population: int, sample_size: int):
        self.sizes = [d.num_choices for d in decisions]
        self.population = population
        self.sample_size = sample_size

    def propose(self, members: Sequence[Encoded], n: int, length: int,
                generator: torch.Generator) -> list[tuple[int, ...]]:
        """n architectures of ``length`` decisions: random while fewer than ``population``
        members exist, otherwise tournament winners mutated."""
        if len(members) < self.population:
            return [self._random([], length, generator) for _ in range(n)]
        members = members[-self.population:]
        proposals = []
        for _ in range(n):
            drawn = torch.randperm(len(members), generator=generator)[:self.sample_size].tolist()
            parent = max(drawn, key=lambda i: (members[i][1], i))  # ties: the youngest
            proposals.append(self.mutate(self._random(members[parent][0], length, generator), generator))
        return proposals

    def mutate(self, actions: Sequence[int], generator: torch.Generator) -> tuple[int, ...]:
        """The same choices but one, re-drawn to a different value (decisions with a single
        choice are never picked)."""
        free = [i for i in range(len(actions)) if self.sizes[i] > 1]
        child = list(actions)
        if not free:
            return tuple(child)
        i = free[int(torch.randint(len(free), (1,), generator=generator))]
        other = int(torch.randint(self.sizes[i] - 1, (1,), generator=generator))
        child[i] = other + (other >= child[i])  # any value but the current one, uniformly
        return tuple(child)

    def _random(self, prefix: Sequence[int], length: int, generator: torch.Generator) -> tuple[int, ...]:
        """``prefix`` (cut to ``length``) completed with random choices up to ``length``."""
        tail = [int(torch.randint(n, (1,), generator=generator)) for n in self.sizes[len(prefix):length]]
        return tuple(prefix[:length]) + tuple(tail)
