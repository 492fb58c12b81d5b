"""REINFORCE maths against numbers worked out by hand, and against finite differences."""

import math

import pytest
import torch

from nasps.method.reinforce import advantages, policy_gradient, reinforce_loss, update_baseline
from nasps.policies import FactorizedPolicy, UniformPolicy
from nasps.spaces import Decision


def test_baseline_is_an_exponential_moving_average():
    assert update_baseline(None, [1.0], 0.9) == 1.0
    # b = 0.9*1 + 0.1*2 = 1.1, then 0.9*1.1 + 0.1*0 = 0.99
    assert update_baseline(None, [1.0, 2.0, 0.0], 0.9) == pytest.approx(0.99)
    assert update_baseline(0.5, [], 0.9) == 0.5


def test_advantages_by_hand():
    assert advantages([1.0, 0.0, 0.5], 0.25) == [0.75, -0.25, 0.25]
    assert advantages([1.0, 3.0], None) == [-1.0, 1.0]  # first batch: its own mean
    # normalized: [-1, 1] has std 1 -> unchanged; [0.75, -0.25] has std 0.5
    assert advantages([1.0, 0.0], 0.25, normalize=True) == [1.5, -0.5]
    assert advantages([], 0.3) == []


def test_loss_by_hand():
    log_probs = torch.tensor([-1.0, -2.0])
    adv = torch.tensor([0.5, -1.0])
    # -(0.5*-1 + -1*-2)/2 = -(−0.5 + 2)/2 = -0.75; entropy term -0.1*mean(1, 3) = -0.2
    loss = reinforce_loss(log_probs, adv, torch.tensor([1.0, 3.0]), entropy_weight=0.1)
    assert loss.item() == pytest.approx(-0.95)


def test_factorized_gradient_by_hand():
    # One decision with 3 choices at uniform logits; one sample took choice 0 with advantage A.
    # d(-A log p_0)/dz = -A (onehot_0 - p) = -A (2/3, -1/3, -1/3).
    policy = FactorizedPolicy([Decision("x", 3, "x")])
    update = policy_gradient(policy, torch.zeros(3), [(0,)], [1.0], 0.25, baseline_decay=0.5)
    a = 0.75
    assert update.gradient.tolist() == pytest.approx([-a * 2 / 3, a / 3, a / 3])
    assert update.baseline == pytest.approx(0.625)
    assert update.advantages == (0.75,)


def test_factorized_log_prob_gradient_matches_finite_differences():
    torch.manual_seed(0)
    policy = FactorizedPolicy([Decision("a", 4, "a"), Decision("b", 3, "b"), Decision("c", 2, "c")])
    params = torch.randn(policy.num_params, dtype=torch.float64)
    actions = [(3, 0, 1), (1, 2, 0), (0, 0, 0)]
    rewards, baseline = [0.9, 0.1, 0.4], 0.3

    def loss_at(p):
        lp, ent = policy.log_probs(p, actions)
        adv = torch.tensor(advantages(rewards, baseline), dtype=p.dtype)
        return reinforce_loss(lp, adv, ent, entropy_weight=0.05)

    grad = policy_gradient(policy, params, actions, rewards, baseline, baseline_decay=0.9,
                           entropy_weight=0.05).gradient
    eps = 1e-6
    for i in range(policy.num_params):
        step = torch.zeros_like(params)
        step[i] = eps
        numeric = (loss_at(params + step) - loss_at(params - step)).item() / (2 * eps)
        assert grad[i].item() == pytest.approx(numeric, abs=1e-7)


def test_sampling_is_seeded_and_in_range():
    policy = FactorizedPolicy([Decision("a", 4, "a"), Decision("b", 3, "b")])
    params = torch.tensor([3.0, 0, 0, 0, 0, 0, 0])
    first = policy.sample(params, 64, torch.Generator().manual_seed(1))
    again = policy.sample(params, 64, torch.Generator().manual_seed(1))
    assert first == again
    assert all(0 <= a < 4 and 0 <= b < 3 for a, b in first.actions)
    # logit 3 on choice 0 of `a`: p = e^3 / (e^3 + 3) = 0.87
    share = sum(a == 0 for a, _ in first.actions) / 64
    assert 0.7 < share < 0.98
    lp, _ = policy.log_probs(params, first.actions)
    assert lp.tolist() == pytest.approx(list(first.log_probs), abs=1e-5)


def test_uniform_policy_has_nothing_to_learn():
    policy = UniformPolicy([Decision("a", 4, "a"), Decision("b", 5, "b")])
    batch = policy.sample(torch.zeros(0), 200, torch.Generator().manual_seed(0))
    assert {a for a, _ in batch.actions} == set(range(4))
    assert {b for _, b in batch.actions} == set(range(5))
    assert batch.log_probs[0] == pytest.approx(-math.log(20))
    assert not policy.learns and policy.num_params == 0
