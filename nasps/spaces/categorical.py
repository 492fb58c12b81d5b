"""The ``categorical`` space: an ordered list of named decisions, each with its own choices.

Example, the NAS-Bench-201 cell: six decisions (one per edge), each one of five ops.
"""

from __future__ import annotations

from typing import Optional, Sequence

from nasps.config import CategoricalSpaceConfig
from nasps.spaces.base import Architecture, Decision


class CategoricalSpace:
    type_name = "categorical"

    def __init__(self, config: CategoricalSpaceConfig):
        self._names = tuple(d.name for d in config.decisions)
        self._choices = tuple(tuple(d.choices) for d in config.decisions)
        self._decisions = tuple(
            Decision(name, len(choices), kind=name) for name, choices in zip(self._names, self._choices))

    def decisions(self, depth: Optional[int] = None) -> Sequence[Decision]:
        return self._decisions

    def depth_at(self, samples: int) -> Optional[int]:
        return None

    @property
    def size(self) -> int:
        """How many distinct architectures the space holds."""
        total = 1
        for choices in self._choices:
            total *= len(choices)
        return total

    def decode(self, actions: Sequence[int]) -> Architecture:
        if len(actions) != len(self._names):
            raise ValueError(f"expected {len(self._names)} actions, got {len(actions)}")
        value = {}
        for name, choices, index in zip(self._names, self._choices, actions):
            if not 0 <= int(index) < len(choices):
                raise ValueError(f"decision {name!r}: index {index} out of range 0..{len(choices) - 1}")
            value[name] = choices[int(index)]
        return Architecture.from_value(self.type_name, value)

    def can_learn(self, arch: Architecture) -> bool:
        return True

    def encode(self, arch: Architecture) -> list[int]:
        value = arch.as_dict()
        if arch.space != self.type_name or set(value) != set(self._names):
            raise ValueError(f"not an architecture of this space: {arch.json_text}")
        indices = []
        for name, choices in zip(self._names, self._choices):
            matches = [i for i, c in enumerate(choices)
                       if c == value[name] and type(c) is type(value[name])]
            if not matches:
                raise ValueError(f"decision {name!r}: {value[name]!r} is not one of {list(choices)}")
            indices.append(matches[0])
        return indices
