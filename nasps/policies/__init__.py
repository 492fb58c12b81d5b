"""Policies: they sample choice indices and score them; they never know what a choice means."""

from typing import Sequence

from nasps.config import EvolutionStrategyConfig, RandomStrategyConfig, ReinforceStrategyConfig
from nasps.policies.base import Policy, SampledBatch
from nasps.policies.factorized import FactorizedPolicy
from nasps.policies.lstm import LSTMPolicy
from nasps.policies.uniform import UniformPolicy
from nasps.spaces import Decision


def build_policy(strategy, decisions: Sequence[Decision]) -> Policy:
    if isinstance(strategy, (RandomStrategyConfig, EvolutionStrategyConfig)):
        return UniformPolicy(decisions)  # evolution proposes from its population, not a policy
    if isinstance(strategy, ReinforceStrategyConfig) and strategy.policy == "factorized":
        return FactorizedPolicy(decisions)
    if isinstance(strategy, ReinforceStrategyConfig) and strategy.policy == "lstm":
        return LSTMPolicy(decisions, strategy.lstm)
    raise TypeError(f"no policy for {strategy!r}")


__all__ = ["Policy", "SampledBatch", "FactorizedPolicy", "LSTMPolicy", "UniformPolicy", "build_policy"]
