"""The conv builder: every architecture of the space builds and trains a step; the three rules."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasps.children import build_conv_net
from nasps.children.conv import pad_and_concatenate
from nasps.config import config_from_dict
from nasps.spaces import build_space

SPACE = build_space(config_from_dict({
    "space": {"type": "conv", "strides": [1, 2, 3], "layer_types": ["conv", "max_pool", "avg_pool"],
              "num_filters": [4, 6, 8], "curriculum": {"start_depth": 1, "add_layers": 1, "max_depth": 6}},
    "evaluator": {"target": "a:b"}}).space)


@st.composite
def conv_architectures(draw):
    depth = draw(st.integers(1, SPACE.max_depth))
    actions = [draw(st.integers(0, d.num_choices - 1)) for d in SPACE.decisions(depth)]
    return SPACE.decode(actions).as_dict()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=conv_architectures(), size=st.sampled_from([8, 32]))
def test_every_architecture_builds_and_runs_forward_and_backward(value, size):
    net = build_conv_net(value, in_channels=3, num_classes=10)
    images = torch.randn(2, 3, size, size)
    logits = net(images)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def capture(module, seen, key, output=False):
    """Keep a module's input (or output) in ``seen[key]``; the hook returns None so the forward
    pass is unchanged."""
    def hook(m, args, out):
        seen[key] = out if output else args[0]
    module.register_forward_hook(hook)


def layer(fh=3, fw=3, filters=4, stride=1, inputs=(), kind="conv"):
    return {"type": kind, "filter_height": fh, "filter_width": fw, "num_filters": filters,
            "stride": stride, "inputs": list(inputs)}


def test_a_layer_with_no_input_takes_the_image():
    value = {"layers": [layer(filters=4), layer(filters=6, inputs=[]), layer(filters=8, inputs=[0, 1])],
             "hyperparameters": {}}
    net = build_conv_net(value, in_channels=3, num_classes=5)
    convs = [m.op[0] for m in net.layers]
    assert [c.in_channels for c in convs] == [3, 3, 4 + 6]
    seen = {}
    capture(net.layers[1], seen, "input")
    image = torch.randn(2, 3, 8, 8)
    net(image)
    assert torch.equal(seen["input"], image)


def test_layers_that_feed_nothing_go_to_the_classifier():
    # 0 -> 1, 0 -> 2; 1 and 2 feed nothing; 3 takes the image and feeds nothing.
    value = {"layers": [layer(filters=4), layer(filters=6, inputs=[0]), layer(filters=8, inputs=[0]),
                        layer(filters=5, inputs=[])], "hyperparameters": {}}
    net = build_conv_net(value, in_channels=1, num_classes=3)
    assert net.sinks == (1, 2, 3)
    assert net.classifier.in_features == 6 + 8 + 5


def test_inputs_of_different_sizes_are_zero_padded_to_the_largest():
    # Layer 0 halves the 8x8 image to 4x4; layer 1 keeps 8x8; layer 2 reads both.
    value = {"layers": [layer(filters=4, stride=2), layer(filters=6, inputs=[]),
                        layer(filters=8, inputs=[0, 1])], "hyperparameters": {}}
    net = build_conv_net(value, in_channels=3, num_classes=2).eval()
    seen = {}
    capture(net.layers[2], seen, "input")
    capture(net.layers[0], seen, "small", output=True)
    net(torch.randn(1, 3, 8, 8))
    joined, small = seen["input"], seen["small"]
    assert small.shape == (1, 4, 4, 4) and joined.shape == (1, 10, 8, 8)
    torch.testing.assert_close(joined[:, :4, 2:6, 2:6], small)  # centred, zeros around it
    border = joined[:, :4].clone()
    border[:, :, 2:6, 2:6] = 0
    assert border.abs().sum() == 0


def test_pad_and_concatenate_pads_odd_differences_last():
    a, b = torch.ones(1, 1, 3, 2), torch.ones(1, 2, 4, 5)
    joined = pad_and_concatenate([a, b])
    assert joined.shape == (1, 3, 4, 5)
    assert joined[0, 0].sum() == 6 and joined[0, 0, 0:3, 1:3].sum() == 6


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
def test_pooling_keeps_channels_and_strides(kind):
    value = {"layers": [layer(filters=4), layer(fh=3, fw=3, stride=2, inputs=[0], kind=kind)],
             "hyperparameters": {}}
    net = build_conv_net(value, in_channels=3, num_classes=2)
    assert net.layers[1].out_channels == 4 and net.classifier.in_features == 4
    seen = {}
    capture(net.layers[1], seen, "out", output=True)
    net(torch.randn(2, 3, 8, 8))
    assert seen["out"].shape == (2, 4, 4, 4)


def test_width_multiplier_scales_conv_filters():
    value = {"layers": [layer(filters=4), layer(filters=6, inputs=[0])], "hyperparameters": {}}
    net = build_conv_net(value, in_channels=3, num_classes=2, width_multiplier=2.0)
    assert [m.out_channels for m in net.layers] == [8, 12]
