"""A reward predictor that screens the controller's samples before they are trained.

The controller samples ``candidates`` architectures for each child; only the one the predictor
ranks best among those not yet trained is trained, and it enters REINFORCE as any sample does.
A trained child costs minutes to hours; a prediction costs about a millisecond, a fit on
1,000 children some 30 ms, which is why the controller refits only as its children grow.

The predictor is kernel ridge regression on the children that trained ok. Two architectures
are alike by how many decisions they share: with s decisions equal (over their common prefix),

    k(a, b) = s + s(s - 1)/2,

the number of shared single decisions plus shared pairs of decisions. That is ridge regression
on one-hot features of every decision and every pair of decisions, without building the pair
features, so its cost depends on the number of children, not of decisions:

    alpha = (K + ridge * I)^-1 (y - mean y),    predict(x) = mean y + k(x, X) alpha.
"""

from __future__ import annotations

from typing import Collection, Sequence

import torch

Encoded = tuple[tuple[int, ...], float]  # a trained child as its choice indices, and its reward


def _one_hot(actions: torch.Tensor, width: int) -> torch.Tensor:
    """(n, L) choice indices as (n, L * width) one-hot codes, so that a product of codes counts
    equal decisions. A choice of width or more codes as zeros: it matches nothing. (Counts are
    exact in float32, whose products cost half those of float64.)"""
    codes = torch.nn.functional.one_hot(actions.clamp(max=width), width + 1)[..., :width]
    return codes.flatten(1).to(torch.float32)


def _similarity(shared: torch.Tensor) -> torch.Tensor:
    """s + s(s - 1)/2 = s(s + 1)/2 for s shared decisions, in float64 for the solve."""
    s = shared.to(torch.float64)
    return s.mul_(s + 1).div_(2)


def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k between each row of a (n, L) and each row of b (k, L'), over the shorter length (a
    depth curriculum makes earlier children shorter)."""
    length = min(a.shape[1], b.shape[1])
    width = int(max(a.max(), b.max())) + 1 if a.numel() and b.numel() else 1
    return _similarity(_one_hot(a[:, :length], width) @ _one_hot(b[:, :length], width).T)


class RewardPredictor:
    def __init__(self, children: Sequence[Encoded], ridge: float):
        groups: dict[int, list[Encoded]] = {}
        for actions, reward in children:
            groups.setdefault(len(actions), []).append((actions, reward))
        self.width = 1 + max((max(a, default=0) for a, _ in children), default=0)
        # Children of one depth share a code matrix; codes are what every prediction reuses.
        self.codes = [(length, _one_hot(torch.tensor([a for a, _ in group], dtype=torch.long)
                                        .reshape(len(group), length), self.width))
                      for length, group in groups.items()]
        y = torch.tensor([r for group in groups.values() for _, r in group], dtype=torch.float64)
        self.mean = float(y.mean()) if len(y) else 0.0
        gram = torch.cat([self._kernel(codes, length) for length, codes in self.codes]) \
            if self.codes else torch.zeros(0, 0, dtype=torch.float64)
        gram.diagonal().add_(ridge)  # positive definite: the kernel is an inner product
        self.alpha = torch.cholesky_solve((y - self.mean)[:, None], torch.linalg.cholesky(gram))[:, 0]

    def _kernel(self, codes: torch.Tensor, length: int) -> torch.Tensor:
        """k between rows coded as ``codes`` (of ``length`` decisions) and every child fitted."""
        return torch.cat([_similarity(codes[:, :min(length, other) * self.width]
                                      @ fitted[:, :min(length, other) * self.width].T)
                          for other, fitted in self.codes], dim=1)

    def predict(self, actions: Sequence[Sequence[int]]) -> list[float]:
        if not self.codes:
            return [self.mean] * len(actions)
        x = torch.tensor([list(a) for a in actions], dtype=torch.long).reshape(len(actions), -1)
        return (self.mean + self._kernel(_one_hot(x, self.width), x.shape[1]) @ self.alpha).tolist()


def screen(candidates: Sequence[tuple[int, ...]], n: int, predictor: RewardPredictor,
           trained: Collection[tuple[int, ...]]) -> list[int]:
    """The indices of the n candidates to train: those not in ``trained`` (trained, or sent to
    train with no result yet) and not repeated among the candidates, best predicted first; when
    fewer than n are new, the first of the rest, in the order they were sampled (they become
    cached repeats, as unscreened samples do)."""
    new, rest, taken = [], [], set()
    for i, a in enumerate(candidates):
        (new if a not in trained and a not in taken else rest).append(i)
        taken.add(a)
    predicted = predictor.predict([candidates[i] for i in new]) if new else []
    ranked = [i for _, i in sorted(zip(predicted, new), key=lambda pair: (-pair[0], pair[1]))]
    return (ranked + rest)[:n]
