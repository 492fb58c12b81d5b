"""Parameter-server shards: each owns a contiguous slice of the flat policy vector.

A shard applies each pushed gradient at once with Adam (its own moment estimates for its
slice) and bumps its version. Pushes carry (replica id, sequence number), so a call that was
retried after a lost reply is recognised and not applied twice. Plain Python on numpy float32
arrays, without torch: the runtime wraps this class in a Ray actor whose process then starts in
a second instead of three, and the serial search loop uses it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def shard_bounds(num_params: int, num_shards: int) -> list[tuple[int, int]]:
    """Split [0, num_params) into ``num_shards`` contiguous slices whose sizes differ by at most 1."""
    if num_shards < 1:
        raise ValueError("need at least one shard")
    base, extra = divmod(num_params, num_shards)
    bounds, start = [], 0
    for i in range(num_shards):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def as_floats(values) -> np.ndarray:
    """A float32 copy of a vector: a numpy array, a list or a torch tensor (taken by its
    ``numpy()``, so that this module needs no torch)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.array(values, dtype=np.float32).reshape(-1)


def split_params(flat, bounds: list[tuple[int, int]]) -> list[np.ndarray]:
    """Disjoint slices of one private copy of ``flat``."""
    flat = as_floats(flat)
    return [flat[start:stop] for start, stop in bounds]


def join_params(slices: list) -> np.ndarray:
    """One flat float32 array that owns its data, from arrays (read-only ones too) or tensors."""
    return np.concatenate([as_floats(s) for s in slices]) if slices else np.zeros(0, np.float32)


def to_wire(values) -> bytes:
    """A slice as bytes for a Ray call: for the small slices of a policy, Ray sends bytes for a
    fraction of what a numpy array's out-of-band path costs it (about 150 us less a call)."""
    return as_floats(values).tobytes()


def from_wire(data) -> np.ndarray:
    """A slice from ``to_wire`` bytes (or any float vector: tests and callers may pass arrays).
    Bytes come back as a read-only view: a shard only reads a gradient."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.float32)
    return np.asarray(data, dtype=np.float32)


@dataclass(frozen=True)
class AdamSettings:
    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class PushReceipt:
    """The answer to a push: the shard's version after it, and how stale the gradient was."""

    version: int
    staleness: int
    applied: bool
    epoch: int = 0  # restores of this shard so far (a checkpoint reloaded after a stop or crash)


class ParameterShard:
    """One slice of the policy's parameters with its Adam state and version."""

    def __init__(self, index: int, params, adam: AdamSettings):
        self.index = index
        self.adam = adam
        self.params = as_floats(params)
        self.exp_avg = np.zeros_like(self.params)
        self.exp_avg_sq = np.zeros_like(self.params)
        self.version = 0
        self.epoch = 0
        self._receipts: dict[str, tuple[int, PushReceipt]] = {}  # replica -> (last seq, receipt)

    def pull(self) -> tuple[np.ndarray, int]:
        return self.params.copy(), self.version

    def push(self, replica: str, seq: int, gradient, version_pulled: int) -> PushReceipt:
        """Apply one gradient unless this (replica, seq) was applied already."""
        last = self._receipts.get(replica)
        if last is not None and seq <= last[0]:
            previous = last[1]
            return PushReceipt(previous.version, previous.staleness, applied=False, epoch=self.epoch)
        gradient = as_floats(gradient)
        if gradient.shape != self.params.shape:
            raise ValueError(f"shard {self.index}: gradient of shape {tuple(gradient.shape)}, "
                             f"expected {tuple(self.params.shape)}")
        # A shard restored from a checkpoint is behind versions pulled before its restore.
        staleness = max(0, self.version - version_pulled)
        adam_step(self.params, self.exp_avg, self.exp_avg_sq, gradient, self.version + 1, self.adam)
        self.version += 1
        receipt = PushReceipt(self.version, staleness, applied=True, epoch=self.epoch)
        self._receipts[replica] = (seq, receipt)
        return receipt

    def push_and_pull(self, replica: str, seq: int, gradient,
                      version_pulled: int) -> tuple[PushReceipt, np.ndarray, int]:
        """A push whose reply is also the next pull: saves a replica one round trip per round."""
        receipt = self.push(replica, seq, gradient, version_pulled)
        return (receipt, *self.pull())

    def state_dict(self) -> dict:
        return {"index": self.index, "params": self.params.copy(), "exp_avg": self.exp_avg.copy(),
                "exp_avg_sq": self.exp_avg_sq.copy(), "version": self.version,
                "receipts": {r: (s, vars(rec)) for r, (s, rec) in self._receipts.items()}}

    def load_state_dict(self, state: dict, epoch: int = 0) -> None:
        """Restore a saved state; ``epoch`` numbers this restore, and tags the pushes after it
        (never lower than the epoch it has: a retried restore must not undo a newer one)."""
        epoch = max(epoch, self.epoch)
        self.epoch = epoch
        self.index = state["index"]
        self.params = as_floats(state["params"])
        self.exp_avg = as_floats(state["exp_avg"])
        self.exp_avg_sq = as_floats(state["exp_avg_sq"])
        self.version = state["version"]
        self._receipts = {r: (s, PushReceipt(**{**rec, "epoch": epoch})) for r, (s, rec) in state["receipts"].items()}


def adam_step(param: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
              grad: np.ndarray, step: int, adam: AdamSettings) -> None:
    """One Adam update in place (Kingma & Ba 2015, Algorithm 1), step counted from 1.

    Written in the same order of operations as ``torch.optim.Adam`` (float32 throughout) so
    the two agree to rounding.
    """
    exp_avg += (1.0 - adam.beta1) * (grad - exp_avg)  # torch's lerp_ for a weight below 0.5
    exp_avg_sq *= adam.beta2
    exp_avg_sq += (1.0 - adam.beta2) * (grad * grad)
    bias_correction1 = 1.0 - adam.beta1 ** step
    bias_correction2 = 1.0 - adam.beta2 ** step
    denom = np.sqrt(exp_avg_sq) / bias_correction2 ** 0.5 + adam.eps
    param += (-adam.learning_rate / bias_correction1) * (exp_avg / denom)
