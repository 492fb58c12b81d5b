"""The parameter-server shard actor: a ``ParameterShard`` (one slice of the policy and its
Adam state) that Ray restarts from the checkpoint when its process dies. It imports no torch:
every search starts S of these processes."""

from __future__ import annotations

from typing import Optional

import numpy as np
import ray

from nasps.method.parameter_server import AdamSettings, ParameterShard, PushReceipt, from_wire
from nasps.runtime.recorder import was_restarted


@ray.remote
class ParameterServerShard:
    """A ``ParameterShard`` that speaks plain types on the wire: gradients come as bytes and
    parameters go back as numpy arrays."""

    def __init__(self, index: int, params, adam: AdamSettings, run_dir: Optional[str] = None,
                 recorder: Optional[str] = None):
        """``params``: the initial slice, or its length for a restartable shard (``run_dir``)
        whose state the driver loads next: a restart then needs no constructor argument from
        the object store, only the checkpoint, which the driver writes before any shard starts.
        ``recorder`` is the recorder actor's name (a handle would be an argument in the store)."""
        initial = np.zeros(params, np.float32) if isinstance(params, int) else params
        self.shard = ParameterShard(index, initial, adam)
        if run_dir is not None and was_restarted():
            # Ray restarted this shard after its process died: continue from the last checkpoint
            # and say how many updates that lost. (The checkpoint reader imports torch: only on
            # this rare path.)
            from nasps.state.checkpoint import load_checkpoint
            state = load_checkpoint(run_dir)["shards"][index]
            epoch = ray.get(ray.get_actor(recorder).shard_restored.remote(index, state["version"], "restart"))
            self.shard.load_state_dict(state, epoch)

    def pull(self) -> tuple[np.ndarray, int]:
        return self.shard.pull()

    def push(self, replica: str, seq: int, gradient, version_pulled: int) -> PushReceipt:
        return self.shard.push(replica, seq, from_wire(gradient), version_pulled)

    def push_and_pull(self, replica: str, seq: int, gradient,
                      version_pulled: int) -> tuple[PushReceipt, np.ndarray, int]:
        """Apply a gradient (``to_wire`` bytes) and reply with the parameters after it."""
        return self.shard.push_and_pull(replica, seq, from_wire(gradient), version_pulled)

    def state_dict(self) -> dict:
        return self.shard.state_dict()

    def load_state_dict(self, state: dict, epoch: int = 0) -> None:
        self.shard.load_state_dict(state, epoch)
