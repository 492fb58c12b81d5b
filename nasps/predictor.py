"""A reward predictor that screens the controller's samples before they are trained.

The controller samples ``candidates`` architectures for each child; only the one the predictor
ranks best among those not yet trained is trained, and it enters REINFORCE as any sample does.
A trained child costs minutes to hours; screening costs milliseconds, up to about 0.2 s with
1,000 children of 60 decisions (the fit is redone on every call).

The predictor is kernel ridge regression on the children that trained ok. Two architectures
are alike by how many decisions they share: with s decisions equal (over their common prefix),

    k(a, b) = s + s(s - 1)/2,

the number of shared single decisions plus shared pairs of decisions. That is ridge regression
on one-hot features of every decision and every pair of decisions, without building the
features, so its cost depends on the number of children, not of decisions:

    alpha = (K + ridge * I)^-1 (y - mean y),    predict(x) = mean y + k(x, X) alpha.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

Encoded = tuple[tuple[int, ...], float]  # a trained child as its choice indices, and its reward


def _matches(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Decisions equal between each row of a (n, L) and each row of b (k, L'), over the
    shorter length (a depth curriculum makes earlier children shorter): a product of one-hot
    codes, so that a thousand children cost one small matrix product."""
    length = min(a.shape[1], b.shape[1])
    a, b = a[:, :length], b[:, :length]
    width = int(max(a.max(), b.max())) + 1 if a.numel() and b.numel() else 1
    one_hot = [torch.nn.functional.one_hot(x, width).flatten(1).to(torch.float64) for x in (a, b)]
    return one_hot[0] @ one_hot[1].T


def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    s = _matches(a, b)
    return s + s * (s - 1) / 2


class RewardPredictor:
    def __init__(self, children: Sequence[Encoded], ridge: float):
        groups: dict[int, list[Encoded]] = {}
        for actions, reward in children:
            groups.setdefault(len(actions), []).append((actions, reward))
        self.rows = [torch.tensor([a for a, _ in group], dtype=torch.long) for group in groups.values()]
        y = torch.tensor([r for group in groups.values() for _, r in group], dtype=torch.float64)
        self.mean = float(y.mean()) if len(y) else 0.0
        gram = torch.cat([torch.cat([kernel(a, b) for b in self.rows], dim=1) for a in self.rows]) \
            if self.rows else torch.zeros(0, 0, dtype=torch.float64)
        self.alpha = torch.linalg.solve(gram + ridge * torch.eye(len(y), dtype=torch.float64), y - self.mean)

    def predict(self, actions: Sequence[Sequence[int]]) -> list[float]:
        x = torch.tensor([list(a) for a in actions], dtype=torch.long).reshape(len(actions), -1)
        if not self.rows:
            return [self.mean] * len(actions)
        k = torch.cat([kernel(x, rows) for rows in self.rows], dim=1)
        return (self.mean + k @ self.alpha).tolist()


def screen(candidates: Sequence[tuple[int, ...]], n: int, children: Sequence[Encoded], ridge: float,
           also_trained: Iterable[tuple[int, ...]] = ()) -> list[int]:
    """The indices of the n candidates to train: those not trained yet (``children``, and
    ``also_trained``: sent to train, no result yet) and not repeated among the candidates, best
    predicted first; when fewer than n are new, the first of the rest, in the order they were
    sampled (they become cached repeats, as unscreened samples do)."""
    trained = {a for a, _ in children} | set(also_trained)
    new, rest, taken = [], [], set()
    for i, a in enumerate(candidates):
        (new if a not in trained and a not in taken else rest).append(i)
        taken.add(a)
    predicted = RewardPredictor(children, ridge).predict([candidates[i] for i in new]) if new else []
    ranked = [i for _, i in sorted(zip(predicted, new), key=lambda pair: (-pair[0], pair[1]))]
    return (ranked + rest)[:n]
