"""The conv and rnn_cell spaces: decisions, values, validation, the curriculum, cell equations."""

import json

import pytest
import torch

from nasps.config import config_from_dict
from nasps.errors import ConfigError
from nasps.method.controller import Controller
from nasps.policies import build_policy
from nasps.spaces import ANCHOR, Architecture, build_space, cell_equations

CONV = {"type": "conv", "strides": [1, 2, 3], "layer_types": ["conv", "max_pool"],
        "hyperparameters": [{"name": "learning_rate", "choices": [0.1, 0.05]}],
        "curriculum": {"start_depth": 2, "add_layers": 2, "every_children": 10, "max_depth": 7}}
RNN = {"type": "rnn_cell", "base": 8, "combinations": ["add", "elem_mult", "max"],
       "activations": ["identity", "tanh", "sigmoid", "relu", "sin"]}


def config(space, **strategy):
    return config_from_dict({"space": space, "evaluator": {"target": "tests.toys:conv_toy"},
                             "strategy": {"policy": "lstm", **strategy}})


def sampled(space_raw, samples_at=(0,), m=16, seed=0):
    """Architectures sampled by a randomly initialised LSTM controller at several points of the
    curriculum: (samples, arch) pairs."""
    cfg = config(space_raw)
    space = build_space(cfg.space)
    policy = build_policy(cfg.strategy, space.decisions())
    controller = Controller(0, space, policy, cfg.strategy, m, seed)
    params = policy.initial_params(seed) * 20  # far from uniform, so picks are not all alike
    out = []
    for samples in samples_at:
        batch, archs = controller.sample(params, samples)
        for actions, arch in zip(batch.actions, archs):
            out.append((samples, actions, arch))
    return space, out


def test_conv_decisions_are_prefixes_and_anchors_point_backward():
    space = build_space(config(CONV).space)
    deepest = list(space.decisions())
    for depth in range(1, 8):
        assert list(space.decisions(depth)) == deepest[:len(space.decisions(depth))]
    anchors = [d for d in deepest if d.kind == ANCHOR]
    assert len(anchors) == sum(range(7))  # layer i has one per earlier layer
    assert all(d.source < d.layer and d.num_choices == 2 for d in anchors)
    assert deepest[0].name == "hp.learning_rate"


def test_curriculum_depth_is_respected_and_recorded():
    space, archs = sampled(CONV, samples_at=(0, 9, 10, 25, 1000))
    expected = {0: 2, 9: 2, 10: 4, 25: 6, 1000: 7}
    for samples, actions, arch in archs:
        depth = expected[samples]
        assert arch.depth == depth and len(arch.as_dict()["layers"]) == depth
        decisions = space.decisions(depth)
        assert len(actions) == len(decisions)
        assert all(0 <= a < d.num_choices for a, d in zip(actions, decisions))


@pytest.mark.parametrize("space_raw", [CONV, RNN, {**CONV, "skip_connections": False}])
def test_every_sample_validates_and_round_trips_through_json(space_raw):
    space, archs = sampled(space_raw, samples_at=(0, 30, 200), m=40)
    skips = 0
    for _, actions, arch in archs:
        value = space.validate(arch)
        again = Architecture.from_value(arch.space, json.loads(json.dumps(value)))
        assert again == arch and again.hash == arch.hash
        assert space.encode(again) == list(actions)
        if arch.space == "conv":
            for i, layer in enumerate(value["layers"]):
                assert all(0 <= j < i for j in layer["inputs"])  # anchors only point backward
                skips += len(layer["inputs"]) > (1 if i else 0)
    if space_raw.get("skip_connections", True) and space_raw["type"] == "conv":
        assert skips > 0  # the controller does sample skip connections


def test_conv_values_are_checked():
    space = build_space(config(CONV).space)
    _, [(_, _, arch)] = sampled(CONV, m=1)
    value = arch.as_dict()

    def with_change(change):
        v = json.loads(json.dumps(value))
        change(v)
        return Architecture.from_value("conv", v)

    bad = {
        "forward input": lambda v: v["layers"][0].__setitem__("inputs", [1]),
        "unknown filter": lambda v: v["layers"][1].__setitem__("filter_height", 4),
        "missing key": lambda v: v["layers"][1].pop("stride"),
        "unknown hyperparameter": lambda v: v["hyperparameters"].__setitem__("momentum", 0.9),
    }
    for change in bad.values():
        with pytest.raises(ValueError):
            space.validate(with_change(change))
    with pytest.raises(ValueError):
        space.validate(Architecture.from_value("rnn_cell", value))


def test_paper_example_cell_renders_as_its_equations():
    """The base-2 cell of the paper's figure 5."""
    space = build_space(config({"type": "rnn_cell", "base": 2}).space)
    # node0 add tanh, node1 elem_mult relu, node2 elem_mult sigmoid; inject at 0 add relu; c_t from 1
    arch = space.decode([0, 1, 1, 3, 1, 2, 0, 0, 3, 1])
    assert cell_equations(arch.as_dict()) == [
        "a0 = tanh(W0·x_t + U0·h_{t-1})",
        "a0 ← relu(a0 + c_{t-1})",
        "a1 = relu((W1·x_t) ⊙ (U1·h_{t-1}))",
        "a2 = sigmoid(a0 ⊙ a1)",
        "c_t = (W1·x_t) ⊙ (U1·h_{t-1})",
        "h_t = a2",
    ]


def test_rnn_cell_of_base_8_has_the_papers_decisions():
    space = build_space(config(RNN).space)
    decisions = space.decisions()
    assert len(decisions) == 15 * 2 + 3 + 1  # 15 nodes x (combine, activation), inject, c_t
    assert {d.kind for d in decisions} == {"combine", "activation", "inject_node", "cell_output"}
    assert [d.num_choices for d in decisions if d.kind == "inject_node"] == [14]


@pytest.mark.parametrize("space_raw, message", [
    ({"type": "rnn_cell", "base": 3}, "space.base: must be one of 2, 4, 8, 16; got 3"),
    ({"type": "rnn_cell", "activations": ["tanh", "gelu"]},
     "space.activations[1]: must be one of identity, tanh, sigmoid, relu, sin; got 'gelu'"),
    ({"type": "conv", "layer_types": ["conv", "dilated"]},
     "space.layer_types[1]: must be one of conv, max_pool, avg_pool; got 'dilated'"),
    ({"type": "conv", "num_filters": [24, 24]}, "space.num_filters: 24 is listed twice"),
    ({"type": "conv", "filter_heights": [0, 3]}, "space.filter_heights[0]: must be >= 1, got 0"),
    ({"type": "conv", "curriculum": {"start_depth": 8, "max_depth": 6}},
     "space.curriculum.start_depth: 8 is above max_depth 6"),
    ({"type": "conv", "filter_heights": [3], "filter_widths": [3], "num_filters": [16], "skip_connections": False},
     "space.curriculum.add_layers: the layers make no decision (each list has one value and "
     "skip_connections is false), so the depth cannot grow; set it to 0"),
    ({"type": "conv", "curriculum": {"every_child": 5}},
     "space.curriculum.every_child: unknown key (did you mean 'space.curriculum.every_children'?)"),
])
def test_bad_space_configs_name_the_key(space_raw, message):
    with pytest.raises(ConfigError) as info:
        config(space_raw)
    assert str(info.value) == message


def test_sampling_is_deterministic_for_a_seed():
    _, first = sampled(CONV, samples_at=(0, 30), seed=5)
    _, again = sampled(CONV, samples_at=(0, 30), seed=5)
    _, other = sampled(CONV, samples_at=(0, 30), seed=6)
    assert [a for _, a, _ in first] == [a for _, a, _ in again]
    assert [a for _, a, _ in first] != [a for _, a, _ in other]
    torch.testing.assert_close(build_policy(config(CONV).strategy, []).initial_params(1),
                               build_policy(config(CONV).strategy, []).initial_params(1))


def test_report_shows_layers_and_cell_equations(tmp_path):
    from nasps.method.serial import run_serial
    from nasps.views.report import format_report, summarize
    runs = {"conv": ({"type": "conv", "curriculum": {"start_depth": 3, "add_layers": 0}}, "conv_toy"),
            "rnn_cell": ({"type": "rnn_cell", "base": 2}, "cell_toy")}
    for name, (space_raw, toy) in runs.items():
        cfg = config_from_dict({"space": space_raw, "evaluator": {"target": f"tests.toys:{toy}"},
                                "strategy": {"policy": "lstm"}, "budget": {"children": 6}})
        run_serial(cfg, tmp_path / name)
        report = summarize(tmp_path / name, top=2)
        text = format_report(report)
        best = report.top[0].arch
        if name == "conv":
            assert f"3 layers: {best['layers'][0]['filter_height']}x" in text and "<-img" in text
        else:
            assert all(line in text for line in cell_equations(best))
            assert "h_t = a2" in text


def test_a_fixed_depth_may_exceed_the_unused_max_depth():
    """With add_layers 0 the curriculum never grows, so max_depth is not used: every child has
    start_depth layers."""
    space = build_space(config({"type": "conv", "curriculum": {"start_depth": 8, "add_layers": 0,
                                                               "max_depth": 6}}).space)
    assert space.depth_at(0) == space.depth_at(10_000) == 8 == space.max_depth
