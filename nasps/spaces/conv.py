"""The ``conv`` space: the paper's convolutional networks (Zoph & Le 2017, section 3.3).

An architecture is a list of layers; each has a type, a filter height and width, a number of
filters and a stride, and the list of earlier layers that feed it (its anchor decisions). A
layer fed by nothing takes the image. The value, as JSON::

    {"layers": [{"type": "conv", "filter_height": 3, "filter_width": 5, "num_filters": 36,
                 "stride": 1, "inputs": []}, ...],
     "hyperparameters": {"learning_rate": 0.1}}

Decisions come in this order: the hyperparameters, then layer by layer its anchors (does
layer j < i feed layer i?) followed by its type, filter height, filter width, filters and
stride. So the decisions of a shallower network are a prefix of a deeper one's, which is what
lets the depth curriculum grow the network under one policy.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from nasps.config import ConvSpaceConfig
from nasps.spaces.base import ANCHOR, Architecture, Decision
from nasps.spaces.choices import ChoiceList, Hyperparameters

LAYER_FIELDS = ("type", "filter_height", "filter_width", "num_filters", "stride")


class ConvSpace:
    type_name = "conv"

    def __init__(self, config: ConvSpaceConfig):
        self.config = config
        self.curriculum = config.curriculum
        self.skip_connections = config.skip_connections
        self.hyperparameters = Hyperparameters(config.hyperparameters)
        self.layer_lists = {
            "type": ChoiceList("layer_type", config.layer_types),
            "filter_height": ChoiceList("filter_height", config.filter_heights),
            "filter_width": ChoiceList("filter_width", config.filter_widths),
            "num_filters": ChoiceList("num_filters", config.num_filters),
            "stride": ChoiceList("stride", config.strides),
        }
        self.max_depth = self.curriculum.deepest
        self._decisions = self._make_decisions(self.max_depth)
        # Decisions at each depth: a prefix of the deepest list.
        self._length = {d: len(self._make_decisions(d)) for d in range(1, self.max_depth + 1)}
        self._depth_of_length = {n: d for d, n in self._length.items()}

    def _make_decisions(self, depth: int) -> list[Decision]:
        decisions = self.hyperparameters.decisions()
        for i in range(depth):
            if self.skip_connections:
                decisions += [Decision(f"layer{i}.input{j}", 2, ANCHOR, layer=i, source=j)
                              for j in range(i)]
            for name, choices in self.layer_lists.items():
                decisions += choices.decision(f"layer{i}.{name}", layer=i)
        return decisions

    def decisions(self, depth: Optional[int] = None) -> Sequence[Decision]:
        depth = self.max_depth if depth is None else depth
        if not 1 <= depth <= self.max_depth:
            raise ValueError(f"depth {depth} is outside 1..{self.max_depth}")
        return self._decisions[:self._length[depth]]

    def depth_at(self, samples: int) -> int:
        return self.curriculum.depth_at(samples)

    def decode(self, actions: Sequence[int]) -> Architecture:
        depth = self._depth_of_length.get(len(actions))
        if depth is None:
            raise ValueError(f"{len(actions)} actions make no depth of this space "
                             f"(lengths by depth: {self._length})")
        queue = [int(a) for a in actions]
        hyperparameters = self.hyperparameters.take(queue)
        layers = []
        for i in range(depth):
            if self.skip_connections:
                picks = [queue.pop(0) for _ in range(i)]
                if any(p not in (0, 1) for p in picks):
                    raise ValueError(f"layer {i}: anchor actions must be 0 or 1, got {picks}")
                inputs = [j for j, p in enumerate(picks) if p]
            else:
                inputs = [i - 1] if i else []
            layer: dict[str, Any] = {name: choices.take(queue, f"layer {i} {name}")
                                     for name, choices in self.layer_lists.items()}
            layer["inputs"] = inputs
            layers.append(layer)
        value = {"layers": layers, "hyperparameters": hyperparameters}
        return Architecture.from_value(self.type_name, value, depth=depth)

    def can_learn(self, arch: Architecture) -> bool:
        return True

    def encode(self, arch: Architecture) -> list[int]:
        value = self.validate(arch)
        actions = self.hyperparameters.indices(value["hyperparameters"])
        for i, layer in enumerate(value["layers"]):
            if self.skip_connections:
                actions += [int(j in layer["inputs"]) for j in range(i)]
            for name, choices in self.layer_lists.items():
                actions += choices.index(layer[name], f"layer {i} {name}")
        return actions

    def validate(self, arch: Architecture) -> dict:
        """The architecture's value, checked against this space (ValueError naming the problem)."""
        if arch.space != self.type_name:
            raise ValueError(f"a {arch.space} architecture is not a {self.type_name} one")
        value = arch.as_dict()
        if set(value) != {"layers", "hyperparameters"} or not isinstance(value["layers"], list):
            raise ValueError(f"a conv architecture has 'layers' and 'hyperparameters', got {sorted(value)}")
        layers = value["layers"]
        if not 1 <= len(layers) <= self.max_depth:
            raise ValueError(f"{len(layers)} layers: this space has 1 to {self.max_depth}")
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or set(layer) != {*LAYER_FIELDS, "inputs"}:
                raise ValueError(f"layer {i}: needs exactly the keys {[*LAYER_FIELDS, 'inputs']}")
            for name, choices in self.layer_lists.items():
                choices.index(layer[name], f"layer {i} {name}")
            inputs = layer["inputs"]
            chain = [i - 1] if i else []
            if not isinstance(inputs, list) or any(type(j) is not int for j in inputs):
                raise ValueError(f"layer {i}: inputs must be a list of layer indices")
            if inputs != sorted(set(inputs)) or any(not 0 <= j < i for j in inputs):
                raise ValueError(f"layer {i}: inputs {inputs} must be distinct earlier layers, in order")
            if not self.skip_connections and inputs != chain:
                raise ValueError(f"layer {i}: without skip connections its input is {chain}")
        if not isinstance(value["hyperparameters"], dict):
            raise ValueError("hyperparameters must be a mapping of name to value")
        self.hyperparameters.indices(value["hyperparameters"])
        return value


def describe_layers(value: dict) -> str:
    """A conv architecture on one line: per layer type, filter size, filters, stride, inputs.

    ``3x5/36 s2 <-0,2`` is a 3x5 conv with 36 filters and stride 2 fed by layers 0 and 2;
    ``<-img`` marks a layer fed by the image.
    """
    parts = []
    for layer in value["layers"]:
        size = f"{layer['filter_height']}x{layer['filter_width']}"
        text = f"{size}/{layer['num_filters']}" if layer["type"] == "conv" else f"{layer['type']} {size}"
        if layer["stride"] != 1:
            text += f" s{layer['stride']}"
        inputs = ",".join(map(str, layer["inputs"])) or "img"
        parts.append(f"{text} <-{inputs}")
    return f"{len(parts)} layers: " + " | ".join(parts)
