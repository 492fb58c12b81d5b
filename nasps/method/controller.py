"""One controller replica's own logic: sample m architectures (screened by a reward predictor),
turn their rewards into a gradient (REINFORCE), or propose mutants of the population (evolution).

The serial search loop and the Ray replica actor both drive this class; neither re-implements
the maths. A replica's state is its random generator, its reward baseline and the sequence
number of its next push; the recent children it proposes from come from the ledger.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from nasps.config import EvolutionStrategyConfig, ReinforceStrategyConfig
from nasps.evaluators import SCORED
from nasps.method.evolution import AgingEvolution
from nasps.method.predictor import RewardPredictor, screen
from nasps.method.reinforce import policy_gradient
from nasps.policies import Policy, SampledBatch
from nasps.spaces import Architecture, SearchSpace
from nasps.state.ledger import Member, Outcome
from nasps.state.store import RoundStats

REFIT_CUBE = 25_000_000  # see Controller._fitted_predictor
REDRAWS = 20  # see Controller._draw_learners


def replica_seed(seed: int, replica: int) -> int:
    """Each replica gets its own stream, fixed by the run's seed."""
    return seed * 100_003 + replica


@dataclass(frozen=True)
class Scored:
    actions: tuple[int, ...]
    reward: float
    child_id: int


class Controller:
    def __init__(self, replica: int, space: SearchSpace, policy: Policy, strategy,
                 children_per_replica: int, seed: int):
        self.replica = replica
        self.space = space
        self.policy = policy
        self.strategy = strategy
        self.m = children_per_replica
        self.seed = seed
        self.generator = torch.Generator().manual_seed(replica_seed(seed, replica))
        self.baseline: Optional[float] = None
        self.seq = 0  # pushes made so far; the next push carries seq + 1
        self.evolution = None
        if isinstance(strategy, EvolutionStrategyConfig):
            self.evolution = AgingEvolution(space.decisions(), strategy.population, strategy.sample_size)
        self.screening = strategy.screening if isinstance(strategy, ReinforceStrategyConfig) \
            and strategy.screening.candidates > 1 else None
        # The ledger's recent children (choice indices, reward), and how many ever joined them.
        self.recent: deque[tuple[tuple[int, ...], float]] = deque(maxlen=max(1, strategy.recent_children))
        self.known = 0
        if self.screening is not None:
            # What this controller sent to train lately: screening passes over them too, as
            # their results may not have reached it yet.
            self.proposed: deque[tuple[int, ...]] = deque(maxlen=strategy.recent_children)
            self.predictor: Optional[RewardPredictor] = None
            self.fitted_at = 0  # self.known when the predictor was fitted

    @property
    def learns(self) -> bool:
        return self.policy.learns

    def observe(self, members: Sequence[Member], end: int) -> None:
        """Children that joined the ledger's recent ones: ``members`` are the last of the
        ``end`` that ever joined (a reply may repeat some this controller has seen)."""
        new = min(end - self.known, len(members))
        for m in members[len(members) - new:] if new > 0 else ():
            self.recent.append((tuple(self.space.encode(Architecture.from_value(self.space.type_name, m.arch))),
                                m.reward))
        self.known = max(self.known, end)

    def sample(self, params, samples: int = 0,
               n: Optional[int] = None) -> tuple[SampledBatch, list[Architecture]]:
        """n architectures (default m) from the policy's flat parameters ``params`` (a shard's
        numpy array, or a tensor); ``samples`` (children sampled so far, all replicas
        together) sets the depth in force when the space has a curriculum. Evolution proposes
        from its population (the recent children) instead of the policy."""
        length = len(self.space.decisions(self.space.depth_at(samples)))
        n = self.m if n is None else n
        params = torch.as_tensor(params)
        if self.evolution is not None:
            def draw(k):  # no policy: nothing to score
                return SampledBatch(tuple(self.evolution.propose(list(self.recent), k, length, self.generator)),
                                    (0.0,) * k, (0.0,) * k)
            batch = self._draw_learners(draw, n)
        elif self.screening is not None and len(self.recent) >= self.screening.warmup:
            drawn = self._draw_learners(lambda k: self.policy.sample(params, k, self.generator, length),
                                        n * self.screening.candidates)
            trained = {a for a, _ in self.recent}.union(self.proposed)
            picks = screen(drawn.actions, n, self._fitted_predictor(), trained)
            batch = SampledBatch(*(tuple(column[i] for i in picks)
                                   for column in (drawn.actions, drawn.log_probs, drawn.entropies)))
            self.proposed.extend(batch.actions)
        else:
            batch = self._draw_learners(lambda k: self.policy.sample(params, k, self.generator, length), n)
        return batch, [self.space.decode(a) for a in batch.actions]

    def _draw_learners(self, draw: Callable[[int], SampledBatch], n: int) -> SampledBatch:
        """n samples of ``draw(k)`` (k samples) that the space says can learn, the others drawn
        again; after REDRAWS rounds the rest is made up of those that cannot (they train, as
        they would with the space's check off), so sampling never stalls on it."""
        learners, others = [], []
        for _ in range(1 + REDRAWS):
            batch = draw(n - len(learners))
            for row in zip(batch.actions, batch.log_probs, batch.entropies):
                (learners if self.space.can_learn(self.space.decode(row[0])) else others).append(row)
            if len(learners) == n:
                break
        rows = learners + others[:n - len(learners)]
        return SampledBatch(*(tuple(column) for column in zip(*rows)))

    def _fitted_predictor(self) -> RewardPredictor:
        """The predictor, fitted again on every new child while that is cheap, and once every
        n^3 / REFIT_CUBE children beyond: a fit on n children costs O(n^3), some 30 ms at 1,000,
        so each child's share stays near a millisecond. Up to 290 children every fit is fresh; at
        1,000, predictions miss at most the newest 40 (which screening still passes over)."""
        if self.predictor is None or \
                self.known - self.fitted_at >= max(1, len(self.recent) ** 3 // REFIT_CUBE):
            self.predictor = RewardPredictor(self.recent, self.screening.ridge)
            self.fitted_at = self.known
        return self.predictor

    def feedback(self, actions: Sequence[tuple[int, ...]], outcomes: Sequence[Optional[Outcome]]) -> list[Scored]:
        """The (actions, reward) pairs that enter the gradient.

        A child that did not end ``ok`` or ``stopped`` enters with ``strategy.failure_reward``, or
        not at all when that is null (the default). A repeat of an architecture already trained (a cached
        row) enters unless ``strategy.learn_from_repeats`` is false.
        """
        failure_reward = getattr(self.strategy, "failure_reward", None)
        repeats = getattr(self.strategy, "learn_from_repeats", True)
        scored = []
        for a, outcome in zip(actions, outcomes):
            if outcome is None or (outcome.cached and not repeats):
                continue
            if outcome.status in SCORED and outcome.reward is not None:
                scored.append(Scored(tuple(a), outcome.reward, outcome.id))
            elif failure_reward is not None:
                scored.append(Scored(tuple(a), failure_reward, outcome.id))
        return scored

    def gradient(self, params, scored: Sequence[Scored]) -> Optional[torch.Tensor]:
        """The loss gradient for these rewards (None when there is nothing to learn from)."""
        if not scored or not self.learns:
            return None
        s: ReinforceStrategyConfig = self.strategy
        update = policy_gradient(self.policy, torch.as_tensor(params), [x.actions for x in scored],
                                 [x.reward for x in scored], self.baseline,
                                 baseline_decay=s.baseline_decay, entropy_weight=s.entropy_weight_in_force,
                                 normalize_advantages=s.normalize_advantages)
        self.baseline = update.baseline
        return update.gradient

    def round_stats(self, seq: int, entropies: Sequence[float], scored: Sequence[Scored],
                    depth: Optional[int]) -> RoundStats:
        """What an update looked like from the controller (call after ``gradient``):
        ``entropies`` are the policy's along each child's sample."""
        rewards = [x.reward for x in scored]
        return RoundStats(self.replica, seq, self.baseline, statistics.fmean(entropies),
                          statistics.fmean(rewards) if rewards else None, len(scored), depth)

    def new_stream(self, samples: int) -> None:
        """A random stream of its own for this point of the search (``samples`` sampled so far),
        for a replica that starts with no saved generator: seeded as at the start, it would
        sample the first run's architectures again, all of them cached repeats by now."""
        self.generator.manual_seed(replica_seed(self.seed, self.replica) + 1_000_003 * samples)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def state_dict(self) -> dict:
        # The generator's state as bytes: a replica sends this with every push report, and a
        # tensor costs Ray a torch (de)serialisation each way, a few hundred microseconds.
        return {"replica": self.replica, "baseline": self.baseline, "seq": self.seq,
                "generator": self.generator.get_state().numpy().tobytes()}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = state["baseline"]
        self.seq = state["seq"]
        generator = state.get("generator")
        if isinstance(generator, bytes):
            generator = torch.frombuffer(bytearray(generator), dtype=torch.uint8)
        if generator is not None:  # checkpoints written before this change hold a tensor
            self.generator.set_state(generator)
