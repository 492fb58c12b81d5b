"""The LSTM controller: its gradients, its sampling, and that it learns."""

import math

import pytest
import torch

from nasps.config import config_from_dict
from nasps.method.serial import run_serial
from nasps.policies import LSTMPolicy, build_policy
from nasps.spaces import build_space
from nasps.state.store import ResultsStore
from tests.conftest import ROOT, toy_config
from tests.test_serial_search import best_probability

CONV = {"type": "conv", "strides": [1, 2], "hyperparameters": [{"name": "lr", "choices": [0.1, 0.01]}],
        "curriculum": {"start_depth": 4, "add_layers": 0}}
RNN = {"type": "rnn_cell", "base": 4}


def setup(space_raw, **lstm):
    cfg = config_from_dict({"space": space_raw, "evaluator": {"target": "tests.toys:conv_toy"},
                            "strategy": {"policy": "lstm", "lstm": lstm}})
    space = build_space(cfg.space)
    return space, build_policy(cfg.strategy, space.decisions())


@pytest.mark.parametrize("space_raw", [CONV, RNN], ids=["conv-with-anchors", "rnn_cell"])
def test_log_prob_gradient_matches_finite_differences(space_raw):
    space, policy = setup(space_raw)
    params = policy.initial_params(0).double() * 10
    batch = policy.sample(params, 5, torch.Generator().manual_seed(1))
    weights = torch.tensor([0.7, -1.3, 0.4, 2.0, -0.5], dtype=torch.float64)

    def objective(theta):
        log_prob, entropy = policy.log_probs(theta, batch.actions)
        return (weights * log_prob).sum() + 0.3 * entropy.sum()

    theta = params.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(theta), theta)
    eps = 1e-6
    directions = torch.randn(6, policy.num_params, generator=torch.Generator().manual_seed(2),
                             dtype=torch.float64)
    if space_raw["type"] == "conv":  # also probe the anchor attention parameters alone
        start, shape = policy._layout["attn_v"]
        only_attention = torch.zeros(policy.num_params, dtype=torch.float64)
        only_attention[start:start + shape[0]] = 1.0
        directions = torch.cat([directions, only_attention[None]])
        assert only_attention @ grad != 0  # the anchors' picks do reach the gradient
    for u in directions:
        numeric = (objective(params + eps * u) - objective(params - eps * u)) / (2 * eps)
        assert float(grad @ u) == pytest.approx(float(numeric), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("space_raw", [CONV, RNN])
def test_sampled_log_probs_are_the_recomputed_ones(space_raw):
    space, policy = setup(space_raw)
    params = policy.initial_params(3) * 5
    batch = policy.sample(params, 7, torch.Generator().manual_seed(0))
    log_prob, entropy = policy.log_probs(params, batch.actions)
    torch.testing.assert_close(log_prob, torch.tensor(batch.log_probs))
    torch.testing.assert_close(entropy, torch.tensor(batch.entropies))
    assert all(lp < 0 for lp in batch.log_probs) and all(e > 0 for e in batch.entropies)


def test_parameters_are_the_papers_and_do_not_grow_with_depth():
    space, policy = setup({"type": "conv"})  # curriculum up to 24 layers
    H = 35
    lstm = 2 * (4 * H * 2 * H + 4 * H)
    heads = sum((n * H + n) + n * H for n in (4, 4, 4))  # filter height, width, number of filters
    attention = 2 * H * H + H
    assert policy.num_params == lstm + H + heads + attention
    params = policy.initial_params(0)
    assert params.abs().max() <= 0.08 and params.std() > 0.04  # uniform in [-0.08, 0.08]
    shallow = build_policy(config_from_dict({"space": {"type": "conv", "curriculum": {"max_depth": 6}},
                                             "evaluator": {"target": "a:b"},
                                             "strategy": {"policy": "lstm"}}).strategy,
                           build_space(config_from_dict({"space": {"type": "conv", "curriculum": {
                               "max_depth": 6}}, "evaluator": {"target": "a:b"}}).space).decisions())
    assert shallow.num_params == policy.num_params
    # One policy samples every depth of the curriculum.
    for depth in (6, 14, 24):
        batch = policy.sample(params, 2, torch.Generator(), len(space.decisions(depth)))
        assert all(space.decode(a).depth == depth for a in batch.actions)


def test_tanh_constant_bounds_every_probability():
    _, free = setup(RNN)
    _, bounded = setup(RNN, tanh_constant=1.0, temperature=2.0)
    params = free.initial_params(0) * 400  # saturated: nearly deterministic without a bound
    steps = len(free.decisions)
    n = max(d.num_choices for d in free.decisions)
    floor = steps * math.log(math.exp(-1) / (math.exp(1) + (n - 1) * math.exp(-1)))
    worst_free = min(free.sample(params, 30, torch.Generator().manual_seed(0)).log_probs)
    bounded_log_probs = bounded.sample(params, 30, torch.Generator().manual_seed(0)).log_probs
    assert min(bounded_log_probs) >= floor
    free_entropy = free.sample(params, 30, torch.Generator().manual_seed(0)).entropies
    bounded_entropy = bounded.sample(params, 30, torch.Generator().manual_seed(0)).entropies
    assert min(bounded_entropy) > max(free_entropy) and worst_free > floor  # free: confident


def test_kinds_must_agree_on_their_choices():
    from nasps.config import LSTMPolicyConfig
    from nasps.spaces import Decision
    with pytest.raises(ValueError, match="kind 'x'"):
        LSTMPolicy([Decision("a", 3, "x"), Decision("b", 4, "x")], LSTMPolicyConfig())


def test_lstm_learns_the_toy_and_beats_random(tmp_path):
    """The paper's LSTM (raw logits): within 300 sampled architectures (m = 5, learning rate
    0.02) the best of the 144 rises from probability 1/144 to above 0.9; random search's samples
    stay near the mean reward."""
    strategy = {"type": "reinforce", "policy": "lstm", "learning_rate": 0.02, "baseline_decay": 0.9,
                "entropy_weight": 0.0, "lstm": {"temperature": None, "tanh_constant": None}}
    budget = {"children": 150, "max_samples": 300}
    cfg = toy_config(strategy=strategy, cluster={"children_per_replica": 5}, budget=budget)
    _, shard = run_serial(cfg, tmp_path / "lstm")
    policy = build_policy(cfg.strategy, build_space(cfg.space).decisions())
    assert best_probability(cfg, policy.initial_params(cfg.seed)) < 0.02
    assert best_probability(cfg, shard.pull()[0]) > 0.9
    run_serial(toy_config(strategy={"type": "random"}, budget=budget), tmp_path / "random")
    lstm = [r.reward for r in ResultsStore(tmp_path / "lstm" / "results.sqlite").children()]
    random = [r.reward for r in ResultsStore(tmp_path / "random" / "results.sqlite").children()]
    assert len(lstm) == len(random) == 300  # every sample is a row; repeats are cached rows
    assert max(lstm) == 1.0
    assert sum(lstm) / len(lstm) > 0.7 > 0.4 > sum(random) / len(random)


def test_the_lstm_with_no_other_key_learns_the_toy(tmp_path):
    """policy: lstm and nothing else (learning rate 0.01, temperature 5, tanh 2.5, entropy
    1e-3): within 300 samples it finds the best of the 144 and samples well above random."""
    budget = {"children": 150, "max_samples": 300}
    cfg = toy_config(strategy={"type": "reinforce", "policy": "lstm"}, cluster={"children_per_replica": 5},
                     budget=budget)
    run_serial(cfg, tmp_path / "lstm")
    lstm = [r.reward for r in ResultsStore(tmp_path / "lstm" / "results.sqlite").children()]
    run_serial(toy_config(strategy={"type": "random"}, budget=budget), tmp_path / "random")
    random = [r.reward for r in ResultsStore(tmp_path / "random" / "results.sqlite").children()]
    assert max(lstm) == 1.0
    assert sum(lstm[-100:]) / 100 > 0.7 > 0.4 > sum(random) / len(random)


def test_default_learning_rates():
    """The LSTM's default is 0.01 on every space, not the paper's 6e-4 (5e-4 on rnn_cell),
    which configs/cifar10.yaml and configs/ptb.yaml set."""
    from nasps.config import load_config
    from nasps.method.serial import adam_settings
    rates = {}
    for space in ({"type": "conv"}, {"type": "rnn_cell"}):
        for policy in ("lstm", "factorized"):
            cfg = config_from_dict({"space": space, "evaluator": {"target": "a:b"},
                                    "strategy": {"policy": policy}})
            rates[space["type"], policy] = adam_settings(cfg).learning_rate
    assert rates == {("conv", "lstm"): 0.01, ("rnn_cell", "lstm"): 0.01,
                     ("conv", "factorized"): 0.05, ("rnn_cell", "factorized"): 0.05}
    for name, paper in (("cifar10.yaml", 6e-4), ("ptb.yaml", 5e-4)):
        strategy = load_config(ROOT / "configs" / name).strategy
        assert strategy.learning_rate == paper and strategy.entropy_weight_in_force == 0.0
        assert strategy.lstm.temperature is None and strategy.lstm.tanh_constant is None
        assert strategy.screening.candidates == 1  # every sample trained, as in the paper
    cfg = config_from_dict({"space": {"type": "rnn_cell"}, "evaluator": {"target": "a:b"},
                            "strategy": {"policy": "lstm", "learning_rate": 0.01}})
    assert adam_settings(cfg).learning_rate == 0.01


def test_layers_without_choices_of_their_own_still_have_anchor_states():
    """With every per-layer list fixed, layer 0 makes no decision at all, yet layer 1's anchor
    attends to it."""
    fixed = {"type": "conv", "filter_heights": [3], "filter_widths": [3], "num_filters": [16],
             "curriculum": {"start_depth": 4, "add_layers": 0}}
    space, policy = setup(fixed)
    assert all(d.kind == "anchor" for d in space.decisions())
    assert [s.layer for s in policy.program(len(space.decisions()))] == [0, 1, 2, 3]
    batch = policy.sample(policy.initial_params(0), 6, torch.Generator().manual_seed(0))
    log_prob, _ = policy.log_probs(policy.initial_params(0), batch.actions)
    torch.testing.assert_close(log_prob, torch.tensor(batch.log_probs))
    assert all(len(space.decode(a).as_dict()["layers"]) == 4 for a in batch.actions)
