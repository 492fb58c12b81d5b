"""REINFORCE with a moving-average baseline, as small pure functions (Zoph & Le 2017, eq. 2-3).

    grad J ~= (1/m) sum_k sum_t grad log P(a_t | a_1:t-1; theta) * (R_k - b)

b is an exponential moving average of earlier rewards: it lowers the variance of the estimate
without biasing it, because it does not depend on the actions it is subtracted from.
The parameter servers minimise, so these functions return the gradient of the loss -J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


def advantages(rewards: Sequence[float], baseline: Optional[float],
               normalize: bool = False) -> list[float]:
    """R_k - b for each reward. With no baseline yet, b is the batch mean.

    With ``normalize`` the advantages are divided by their standard deviation (when it is not 0).
    """
    if not rewards:
        return []
    b = baseline if baseline is not None else sum(rewards) / len(rewards)
    adv = [r - b for r in rewards]
    if normalize and len(adv) > 1:
        mean = sum(adv) / len(adv)
        std = math.sqrt(sum((a - mean) ** 2 for a in adv) / len(adv))
        if std > 0:
            adv = [a / std for a in adv]
    return adv


def update_baseline(baseline: Optional[float], rewards: Sequence[float], decay: float) -> Optional[float]:
    """b <- decay * b + (1 - decay) * R for each reward in order; starts at the first reward."""
    for r in rewards:
        baseline = r if baseline is None else decay * baseline + (1.0 - decay) * r
    return baseline


def reinforce_loss(log_probs: torch.Tensor, advantage: torch.Tensor, entropies: torch.Tensor,
                   entropy_weight: float = 0.0) -> torch.Tensor:
    """-(1/m) sum_k A_k log P(a_k) - w * mean entropy. Its gradient is -grad J."""
    return -(advantage * log_probs).mean() - entropy_weight * entropies.mean()


@dataclass(frozen=True)
class PolicyUpdate:
    """What one batch of rewards gives: the loss gradient and the baseline after the batch."""

    gradient: torch.Tensor
    baseline: Optional[float]
    advantages: tuple[float, ...]


def policy_gradient(policy, params: torch.Tensor, actions: Sequence[Sequence[int]],
                    rewards: Sequence[float], baseline: Optional[float], *, baseline_decay: float,
                    entropy_weight: float = 0.0, normalize_advantages: bool = False) -> PolicyUpdate:
    """The REINFORCE loss gradient for scored samples, at ``params``."""
    adv = advantages(rewards, baseline, normalize_advantages)
    theta = params.detach().clone().requires_grad_(True)
    log_probs, entropies = policy.log_probs(theta, actions)
    loss = reinforce_loss(log_probs, torch.tensor(adv, dtype=log_probs.dtype), entropies,
                          entropy_weight)
    (grad,) = torch.autograd.grad(loss, theta, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(theta)
    return PolicyUpdate(grad.detach(), update_baseline(baseline, rewards, baseline_decay), tuple(adv))
