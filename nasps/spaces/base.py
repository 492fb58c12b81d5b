"""What every search space provides, and the architecture value it produces.

A search space is the only part of nasps that knows what a decision means. It tells the policy
how many decisions there are and how many choices each has (``Decision``), and turns the
policy's choice indices into an ``Architecture``: a frozen, JSON-serialisable value with a
canonical hash and no torch inside.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence


@dataclass(frozen=True)
class Decision:
    """One step of the policy: pick one of ``num_choices``.

    ``kind`` groups decisions that mean the same thing (all filter heights, say), so a policy may
    share one output head between them; the policy never learns what the choices stand for.

    Spaces made of layers say which layer a decision belongs to. A skip connection is a
    two-choice decision of kind ``ANCHOR``: does layer ``source`` (earlier) feed ``layer``? The
    LSTM policy answers it by attention between the two layers' anchor states; other policies
    treat it as any other yes/no decision.
    """

    name: str
    num_choices: int
    kind: str
    layer: Optional[int] = None
    source: Optional[int] = None


ANCHOR = "anchor"


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces. Equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


@dataclass(frozen=True)
class Architecture:
    """A sampled architecture: the space's type and its JSON value.

    ``value`` is kept as canonical JSON text so the object stays immutable and hashable;
    ``as_dict()`` gives a fresh copy to read.
    """

    space: str
    json_text: str
    # Layers of a space with a depth curriculum (the depth in force when it was sampled).
    depth: Optional[int] = field(default=None, compare=False)

    @classmethod
    def from_value(cls, space: str, value: Mapping[str, Any], depth: Optional[int] = None) -> "Architecture":
        return cls(space, canonical_json(value), depth)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.json_text)

    @property
    def hash(self) -> str:
        """Canonical hash: equal architectures of the same space hash the same."""
        digest = hashlib.sha256(f"{self.space}\n{self.json_text}".encode("utf-8"))
        return digest.hexdigest()[:16]


class SearchSpace(Protocol):
    """Decisions in, architecture out.

    A space with a depth curriculum grows over the search. ``decisions(depth)`` at a smaller
    depth is a prefix of the decisions at a larger one, so a policy built for the largest depth
    samples any smaller one by stopping early.
    """

    type_name: str

    def decisions(self, depth: Optional[int] = None) -> Sequence[Decision]:
        """The decisions the policy makes for one architecture, in order (largest depth if None)."""

    def depth_at(self, samples: int) -> Optional[int]:
        """The depth in force once ``samples`` children have been sampled (None: no curriculum)."""

    def decode(self, actions: Sequence[int]) -> Architecture:
        """Turn one choice index per decision into an architecture (validated)."""

    def encode(self, arch: Architecture) -> list[int]:
        """The choice indices that give ``arch``; inverse of ``decode``."""

    def can_learn(self, arch: Architecture) -> bool:
        """False for an architecture that cannot learn from its input, whatever its weights: a
        strategy draws another instead of training it."""
