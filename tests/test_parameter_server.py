"""Parameter shards: Adam equal to torch.optim.Adam, sharding round trip, idempotent pushes."""

import numpy as np
import pytest
import torch

from nasps.method.parameter_server import AdamSettings, ParameterShard, join_params, shard_bounds, split_params


def test_shard_adam_equals_torch_adam():
    torch.manual_seed(0)
    start = torch.randn(10)
    adam = AdamSettings(learning_rate=0.01, beta1=0.8, beta2=0.99, eps=1e-8)
    shard = ParameterShard(0, start, adam)
    reference = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([reference], lr=0.01, betas=(0.8, 0.99), eps=1e-8)
    for step in range(1, 21):
        grad = torch.randn(10)
        shard.push("r", step, grad, shard.version)
        reference.grad = grad.clone()
        optimizer.step()
    params, version = shard.pull()
    assert version == 20 and params.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(params), reference.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n, s", [(10, 1), (10, 3), (7, 7), (3, 5), (0, 2), (1000, 20)])
def test_sharding_round_trip(n, s):
    flat = torch.arange(n, dtype=torch.float32)
    bounds = shard_bounds(n, s)
    assert len(bounds) == s and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert np.array_equal(join_params(split_params(flat, bounds)), flat.numpy())


def test_retried_push_is_not_applied_twice():
    shard = ParameterShard(0, torch.zeros(3), AdamSettings(learning_rate=0.1))
    first = shard.push("replica-0", 1, torch.ones(3), 0)
    after_first = shard.pull()[0]
    again = shard.push("replica-0", 1, torch.ones(3), 0)
    assert first.applied and not again.applied
    assert again.version == first.version == 1
    assert np.array_equal(shard.pull()[0], after_first)
    # Another replica's seq 1 is its own, and a later seq of the first replica applies.
    assert shard.push("replica-1", 1, torch.ones(3), 0).applied
    assert shard.push("replica-0", 2, torch.ones(3), 1).applied
    assert shard.version == 3


def test_staleness_is_versions_since_the_pull():
    shard = ParameterShard(0, torch.zeros(2), AdamSettings(learning_rate=0.1))
    shard.push("a", 1, torch.ones(2), 0)
    shard.push("b", 1, torch.ones(2), 0)
    receipt = shard.push("c", 1, torch.ones(2), 0)  # pulled at version 0, two pushes since
    assert receipt.staleness == 2 and receipt.version == 3


def test_state_dict_round_trip():
    shard = ParameterShard(2, torch.randn(4), AdamSettings(learning_rate=0.1))
    shard.push("a", 1, torch.ones(4), 0)
    copy = ParameterShard(0, torch.zeros(4), AdamSettings(learning_rate=0.1))
    copy.load_state_dict(shard.state_dict())
    assert copy.version == 1 and copy.index == 2
    assert np.array_equal(copy.pull()[0], shard.pull()[0])
    assert not copy.push("a", 1, torch.ones(4), 0).applied
    g = torch.randn(4)
    shard.push("a", 2, g, 1)
    copy.push("a", 2, g, 1)
    assert np.array_equal(copy.pull()[0], shard.pull()[0])


def test_slices_cross_the_wire_as_bytes_unchanged():
    from nasps.method.parameter_server import from_wire, to_wire
    values = torch.randn(37)  # a replica's gradient slice
    assert np.array_equal(from_wire(to_wire(values)), values.numpy())
    assert from_wire(to_wire(torch.zeros(0))).shape == (0,)  # a shard with an empty slice
    assert np.array_equal(from_wire(values.numpy()), values.numpy())  # numpy is accepted too
