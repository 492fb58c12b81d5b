"""The parameter-server shard actor: a ``ParameterShard`` (one slice of the policy and its
Adam state) that Ray restarts from the checkpoint when its process dies."""

from __future__ import annotations

from typing import Optional

import numpy as np
import ray
import torch

from nasps.method.parameter_server import AdamSettings, ParameterShard, PushReceipt, from_wire
from nasps.runtime.recorder import was_restarted
from nasps.state.checkpoint import load_checkpoint


@ray.remote
class ParameterServerShard:
    """A ``ParameterShard`` that speaks plain types on the wire: gradients come as bytes and
    parameters go back as numpy arrays; torch tensors cost Ray a torch (de)serialisation."""

    def __init__(self, index: int, params, adam: AdamSettings, run_dir: Optional[str] = None,
                 recorder: Optional[str] = None):
        """``params``: the initial slice, or its length for a restartable shard (``run_dir``)
        whose state the driver loads next: a restart then needs no constructor argument from
        the object store, only the checkpoint, which the driver writes before any shard starts.
        ``recorder`` is the recorder actor's name (a handle would be an argument in the store)."""
        initial = torch.zeros(params) if isinstance(params, int) else torch.tensor(np.asarray(params))
        self.shard = ParameterShard(index, initial, adam)
        if run_dir is not None and was_restarted():
            # Ray restarted this shard after its process died: continue from the last checkpoint
            # and say how many updates that lost.
            state = load_checkpoint(run_dir)["shards"][index]
            epoch = ray.get(ray.get_actor(recorder).shard_restored.remote(index, state["version"], "restart"))
            self.shard.load_state_dict(state, epoch)

    def pull(self) -> tuple[np.ndarray, int]:
        params, version = self.shard.pull()
        return params.numpy(), version

    def push(self, replica: str, seq: int, gradient, version_pulled: int) -> PushReceipt:
        return self.shard.push(replica, seq, from_wire(gradient), version_pulled)

    def push_and_pull(self, replica: str, seq: int, gradient,
                      version_pulled: int) -> tuple[PushReceipt, np.ndarray, int]:
        """Apply a gradient (``to_wire`` bytes) and reply with the parameters after it."""
        receipt, params, version = self.shard.push_and_pull(replica, seq, from_wire(gradient), version_pulled)
        return receipt, params.numpy(), version

    def state_dict(self) -> dict:
        return self.shard.state_dict()

    def load_state_dict(self, state: dict, epoch: int = 0) -> None:
        self.shard.load_state_dict(state, epoch)
