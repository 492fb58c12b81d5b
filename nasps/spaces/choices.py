"""Pieces shared by the structured spaces: one named list of values, picked by index.

A list of one value is fixed: it makes no decision, so the policy spends no step on it, and
the value is still written into every architecture.
"""

from __future__ import annotations

from typing import Any, Sequence

from nasps.spaces.base import Decision


class ChoiceList:
    """One named list of values, e.g. the filter heights a layer may take."""

    def __init__(self, kind: str, values: Sequence[Any]):
        self.kind = kind
        self.values = tuple(values)

    @property
    def decides(self) -> bool:
        return len(self.values) > 1

    def decision(self, name: str, layer: int | None = None) -> list[Decision]:
        """The decision for one use of this list (none when the value is fixed)."""
        return [Decision(name, len(self.values), self.kind, layer=layer)] if self.decides else []

    def take(self, actions: list[int], where: str) -> Any:
        """The value picked by the next action (consumed from the front), or the fixed value."""
        if not self.decides:
            return self.values[0]
        index = int(actions.pop(0))
        if not 0 <= index < len(self.values):
            raise ValueError(f"{where}: index {index} out of range 0..{len(self.values) - 1}")
        return self.values[index]

    def index(self, value: Any, where: str) -> list[int]:
        """The action that gives ``value`` (none when the value is fixed)."""
        for i, v in enumerate(self.values):
            if v == value and type(v) is type(value):
                return [i] if self.decides else []
        raise ValueError(f"{where}: {value!r} is not one of {list(self.values)}")


class Hyperparameters:
    """Decisions made once per child (learning rate, say), before the architecture itself."""

    def __init__(self, decisions_config):
        self.lists = [(d.name, ChoiceList(f"hp.{d.name}", d.choices)) for d in decisions_config]

    def decisions(self) -> list[Decision]:
        return [d for name, choices in self.lists for d in choices.decision(f"hp.{name}")]

    def take(self, actions: list[int]) -> dict[str, Any]:
        return {name: choices.take(actions, f"hp.{name}") for name, choices in self.lists}

    def indices(self, values: dict[str, Any]) -> list[int]:
        if set(values) != {name for name, _ in self.lists}:
            raise ValueError(f"hyperparameters {sorted(values)} are not {[n for n, _ in self.lists]}")
        return [i for name, choices in self.lists for i in choices.index(values[name], f"hp.{name}")]
