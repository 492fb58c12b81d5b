"""nasps's controller as a Ray Tune searcher: Tune runs the user's trainable, with any
scheduler (ASHA, HyperBand, ...), and ``NaspsSearcher`` proposes each trial's architecture and
learns from the trials' results.

The pieces are the reference loop's (``nasps/method/serial.py``): a ``Controller`` samples m
architectures at a time from a ``ParameterShard``'s parameters; every m results become one
REINFORCE update (its ``feedback`` and ``gradient``) that the shard applies with Adam. Tune
calls a searcher from one thread, so the shard is a plain object here, not an actor, and this
searcher plays the ledger's part: it keeps the children that trained for screening and
evolution, and gives each result its status.

A trial's config is ``{"arch": value}``, merged into the Tuner's ``param_space``: ``value`` is
the architecture as the space writes it (``{decision: value}`` for a categorical space).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
import zipfile
from collections import deque
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Literal, Mapping, Optional, Union

import torch

try:
    from ray.tune.search import Searcher
except ImportError:
    from nasps.errors import MissingExtra
    raise MissingExtra("nasps.tune", "tune") from None

from nasps.config import (
    ReinforceStrategyConfig,
    SpaceConfig,
    StrategyConfig,
    config_from_dict,
    config_to_dict,
    option,
    required,
)
from nasps.errors import ConfigError, UserInputError
from nasps.evaluators import SCORED
from nasps.method.controller import Controller
from nasps.method.parameter_server import ParameterShard
from nasps.method.serial import adam_settings
from nasps.policies import build_policy
from nasps.spaces import Architecture, build_space
from nasps.state.checkpoint import as_tensors
from nasps.state.ledger import Member, Outcome

log = logging.getLogger(__name__)

FORMAT = 1  # of the file save() writes
REPLICA = "0"  # the shard's name for the one controller that pushes to it


@dataclass(frozen=True, kw_only=True)
class SearcherConfig:
    """What a ``NaspsSearcher`` is made of, checked by nasps's own config loader."""

    space: SpaceConfig = required("the search space, as the space section of a search config")
    strategy: StrategyConfig = field(default_factory=ReinforceStrategyConfig,
                                     metadata={"doc": "how architectures are chosen, as the strategy section"})
    children_per_update: int = option(1, "m: results that make one controller update", min=1)
    rounds: Literal["rolling", "barrier"] = option(
        "rolling", "rolling: a trial gets an architecture whenever Tune asks, and every m results make an "
                   "update; barrier: the paper's rounds of m, the next sampled once all m are back")
    max_trials: Union[int, None] = option(None, "architectures handed out before suggest says FINISHED "
                                                "(null = as many as Tune asks for)", min=1)
    seed: int = option(0, "seed of the policy's initial parameters and of its samples", min=0)


@dataclass
class _Child:
    """A sampled architecture on its way through Tune."""

    actions: tuple[int, ...]
    value: str  # the architecture's canonical JSON
    score: Union[float, str, None] = None  # the metric in the trial's last result (its repr: not a number)


class NaspsSearcher(Searcher):
    """Architectures for Tune trials from nasps's controller (``config["arch"]``), learnt from
    the trials' ``metric`` (negated for ``mode="min"``).

    ``space`` and ``strategy`` are the sections of a search config, as dicts (or the config
    dataclasses); ``strategy`` defaults to a search config's. A trial that a scheduler stopped
    early enters with its last reported metric; one that errored, reported no metric or a NaN
    enters with ``strategy.failure_reward`` (null: not at all), as a failed child does.
    """

    def __init__(self, space: Union[Mapping[str, Any], SpaceConfig],
                 strategy: Union[Mapping[str, Any], StrategyConfig, None] = None, *,
                 metric: Optional[str] = None, mode: Optional[str] = None, children_per_update: int = 1,
                 rounds: str = "rolling", max_trials: Optional[int] = None, seed: int = 0):
        raw = {"space": _plain(space), "children_per_update": children_per_update, "rounds": rounds,
               "max_trials": max_trials, "seed": seed}
        if strategy is not None:
            raw["strategy"] = _plain(strategy)
        self.config: SearcherConfig = config_from_dict(raw, SearcherConfig)
        _check_objective(metric, mode)
        super().__init__(metric=metric, mode=mode)
        self.space = build_space(self.config.space)
        self.policy = build_policy(self.config.strategy, self.space.decisions())
        self._start()

    def _start(self) -> None:
        """The learning state of a searcher that has handed out nothing yet."""
        self.shard = ParameterShard(0, self.policy.initial_params(self.config.seed), adam_settings(self.config))
        self.controller = Controller(0, self.space, self.policy, self.config.strategy,
                                     self.config.children_per_update, self.config.seed)
        self.queue: deque[_Child] = deque()  # sampled, not handed out yet
        self.running: dict[str, _Child] = {}  # trial id -> its architecture
        self.finished: list[tuple[_Child, Outcome]] = []  # results not in an update yet
        self.outcomes: dict[str, Outcome] = {}  # every trial's result as the controller took it
        # The children that trained, as the ledger keeps them for screening and evolution.
        self.recent: deque[Member] = deque(maxlen=max(1, self.config.strategy.recent_children))
        self.recent_end = 0
        self.samples = 0  # architectures sampled (they set the depth of a curriculum)
        self.suggested = 0

    # ------------------------------------------------------------------ what Tune calls

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        """Tune's ``TuneConfig(metric, mode)``. The search space is the searcher's own, so the
        answer is False: Tune then refuses a ``param_space`` with search-space values of its
        own, and passes constant keys through to every trial."""
        _check_objective(metric, mode)
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return False

    def suggest(self, trial_id: str) -> Union[dict, str, None]:
        if self._metric is None or self._mode is None:
            raise UserInputError("NaspsSearcher: no metric and mode to learn from; pass metric= and mode= to it "
                                 "(Tune passes TuneConfig's only along with a param_space)")
        budget = self.config.max_trials
        if budget is not None and self.suggested >= budget:
            return Searcher.FINISHED
        if not self.queue:
            if self.config.rounds == "barrier" and (self.running or self.finished):
                return None  # the round's results are not all back: Tune asks again later
            n = self.config.children_per_update if budget is None else \
                min(self.config.children_per_update, budget - self.suggested)
            batch, archs = self.controller.sample(self.shard.pull()[0], self.samples, n)
            self.samples += n
            self.queue.extend(_Child(a, arch.json_text) for a, arch in zip(batch.actions, archs))
        child = self.queue.popleft()
        self.running[trial_id] = child
        self.suggested += 1
        return {"arch": Architecture(self.space.type_name, child.value).as_dict()}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        child = self.running.get(trial_id)
        if child is not None and self._metric in result:
            child.score = _score(result[self._metric])

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        child = self.running.pop(trial_id, None)
        if child is None:  # not one of this searcher's trials, or told twice
            return
        if result and self._metric in result:
            child.score = _score(result[self._metric])
        outcome = self._outcome(child, error)
        self.outcomes[trial_id] = outcome
        if outcome.status in SCORED:
            member = Member(Architecture(self.space.type_name, child.value).as_dict(), outcome.reward)
            self.recent.append(member)
            self.recent_end += 1
            self.controller.observe([member], self.recent_end)
        self.finished.append((child, outcome))
        self._learn()

    # ------------------------------------------------------------------ learning

    def _outcome(self, child: _Child, error: bool) -> Outcome:
        """The trial as a child result. A trial a scheduler stopped early is ``ok`` with its last
        score, as the paper would count a child trained for less: Tune marks it done like a
        trial that ran to its end, so the two cannot be told apart here."""
        number = child.score
        trial = len(self.outcomes) + 1
        if error:
            return Outcome(trial, "failed", None, False, "the trial raised an error")
        if number is None:
            return Outcome(trial, "failed", None, False, f"no {self._metric!r} in its results")
        if isinstance(number, str):
            return Outcome(trial, "failed", None, False, f"{self._metric} is {number}, not a number")
        if not math.isfinite(number):
            return Outcome(trial, "diverged", None, False, f"{self._metric} is {number}")
        reward = number if self._mode == "max" else -number
        return Outcome(trial, "ok", reward, False)

    def _learn(self) -> None:
        """One update from the results that are back: every m in rolling rounds (fewer at the
        end of ``max_trials``), a whole round in barrier rounds."""
        m = self.config.children_per_update
        if self.config.rounds == "barrier":
            if self.queue or self.running:
                return
            batch, self.finished = self.finished, []
        else:
            over = self.config.max_trials is not None and self.suggested >= self.config.max_trials \
                and not self.running
            if len(self.finished) < m and not over:
                return
            batch, self.finished = self.finished[:m], self.finished[m:]
        scored = self.controller.feedback([c.actions for c, _ in batch], [o for _, o in batch])
        params, version = self.shard.pull()
        gradient = self.controller.gradient(params, scored)
        if gradient is not None:
            self.shard.push(REPLICA, self.controller.next_seq(), gradient, version)
            log.debug("update %d from %d results: baseline %.4g", self.updates, len(scored), self.controller.baseline)

    @property
    def updates(self) -> int:
        """Controller updates applied so far."""
        return self.shard.version

    @property
    def params(self) -> torch.Tensor:
        """The policy's parameters now (a copy)."""
        return torch.from_numpy(self.shard.pull()[0])

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything a restored searcher continues from: the policy and its Adam state, the
        controller, the architectures sampled or in flight and the results not learnt from yet."""
        return {"format": FORMAT, "config": config_to_dict(self.config), "metric": self._metric, "mode": self._mode,
                "shard": as_tensors(self.shard.state_dict()), "controller": self.controller.state_dict(),
                "queue": [_child_state(c) for c in self.queue],
                "running": {trial: _child_state(c) for trial, c in self.running.items()},
                "finished": [(_child_state(c), vars(o)) for c, o in self.finished],
                "outcomes": {trial: vars(o) for trial, o in self.outcomes.items()},
                "recent": [(m.arch, m.reward) for m in self.recent], "recent_end": self.recent_end,
                # What screening passes over besides the recent children (those in flight).
                "proposed": list(getattr(self.controller, "proposed", ())),
                "samples": self.samples, "suggested": self.suggested}

    def load_state_dict(self, state: dict) -> None:
        self._start()
        self.shard.load_state_dict(state["shard"])
        self.controller.load_state_dict(state["controller"])
        self._metric = self._metric or state["metric"]
        self._mode = self._mode or state["mode"]
        self.queue.extend(_child(s) for s in state["queue"])
        self.running = {trial: _child(s) for trial, s in state["running"].items()}
        self.finished = [(_child(s), Outcome(**o)) for s, o in state["finished"]]
        self.outcomes = {trial: Outcome(**o) for trial, o in state["outcomes"].items()}
        self.recent.extend(Member(arch, reward) for arch, reward in state["recent"])
        self.recent_end = state["recent_end"]
        self.controller.observe(tuple(self.recent), self.recent_end)
        if hasattr(self.controller, "proposed"):
            self.controller.proposed.extend(tuple(a) for a in state["proposed"])
        self.samples, self.suggested = state["samples"], state["suggested"]

    def save(self, checkpoint_path: str) -> None:
        """Written whole, then renamed over ``checkpoint_path``; read back with
        ``torch.load(weights_only=True)``."""
        tmp = f"{checkpoint_path}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        try:
            state = torch.load(checkpoint_path, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            raise UserInputError(f"{checkpoint_path}: not a readable NaspsSearcher checkpoint "
                                 f"({str(exc).splitlines()[0][:200]})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise UserInputError(f"{checkpoint_path}: not a NaspsSearcher checkpoint of format {FORMAT}")
        mine = config_to_dict(self.config)
        # A larger budget may continue a search; anything else would learn another policy.
        differs = _first_difference({**state["config"], "max_trials": None}, {**mine, "max_trials": None})
        if differs is not None:
            raise UserInputError(f"{checkpoint_path}: saved by a searcher with another {differs}; restore it into "
                                 "one made with the same space, strategy and settings")
        self.load_state_dict(state)


def _plain(section: Any) -> Any:
    """A config dataclass as the dict the loader reads (a dict passes as it is)."""
    return config_to_dict(section) if is_dataclass(section) and not isinstance(section, type) else section


def _check_objective(metric: Any, mode: Any) -> None:
    if metric is not None and not isinstance(metric, str):
        raise ConfigError(f"metric: must be the name of one reported metric, got {metric!r}")
    if mode not in (None, "min", "max"):
        raise ConfigError(f"mode: must be min or max, got {mode!r}")


def _score(value: Any) -> Union[float, str]:
    """A reported metric as a float (numpy's too), or its repr when it is not a number."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)


def _child_state(child: _Child) -> tuple:
    return child.actions, child.value, child.score


def _child(state: tuple) -> _Child:
    actions, value, score = state
    return _Child(tuple(actions), value, score)


def _first_difference(saved: Any, mine: Any, key: str = "") -> Optional[str]:
    """The first dotted key where two plain configs differ, with both values (None if equal)."""
    if isinstance(saved, dict) and isinstance(mine, dict):
        for name in {**saved, **mine}:
            found = _first_difference(saved.get(name), mine.get(name), f"{key}.{name}" if key else name)
            if found is not None:
                return found
        return None
    return None if saved == mine else f"{key} ({saved!r}, not {mine!r})"


__all__ = ["NaspsSearcher", "SearcherConfig"]
