"""The conv space's networks (Zoph & Le 2017, section 3.3): a ``conv`` architecture value in,
an ``nn.Module`` out.

Each layer is conv -> batch norm -> ReLU with "same" padding and its stride, or a max/avg
pooling of the same size and stride. The paper's three rules make every sampled graph
buildable:
1. a layer with no input takes the image;
2. every layer whose output feeds no other layer is concatenated into the classifier
   (then global average pooling and one linear layer);
3. inputs of different spatial sizes are zero-padded to the largest before they are
   concatenated on channels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pad_and_concatenate(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate feature maps on channels, zero-padding each to the largest height and width
    (rule 3). Padding is split evenly between the two sides, the odd pixel going last."""
    if len(maps) == 1:
        return maps[0]
    height = max(m.shape[2] for m in maps)
    width = max(m.shape[3] for m in maps)
    padded = []
    for m in maps:
        dh, dw = height - m.shape[2], width - m.shape[3]
        if dh or dw:
            m = F.pad(m, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        padded.append(m)
    return torch.cat(padded, dim=1)


class ConvLayer(nn.Module):
    """One layer of the value: conv -> BN -> ReLU, or pooling (which keeps its channels)."""

    def __init__(self, spec: dict, in_channels: int, width_multiplier: float = 1.0, bn_epsilon: float = 1e-5):
        super().__init__()
        kernel = (spec["filter_height"], spec["filter_width"])
        padding = (kernel[0] // 2, kernel[1] // 2)  # "same" for the odd sizes of the space
        stride = spec["stride"]
        kind = spec["type"]
        if kind == "conv":
            self.out_channels = max(1, round(spec["num_filters"] * width_multiplier))
            self.op = nn.Sequential(
                nn.Conv2d(in_channels, self.out_channels, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(self.out_channels, eps=bn_epsilon),
                nn.ReLU(inplace=True))
        elif kind == "max_pool":
            self.out_channels = in_channels
            self.op = nn.MaxPool2d(kernel, stride, padding)
        elif kind == "avg_pool":
            self.out_channels = in_channels
            self.op = nn.AvgPool2d(kernel, stride, padding, count_include_pad=False)
        else:
            raise ValueError(f"unknown layer type {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ConvNet(nn.Module):
    """The network of a value. With ``input_mean`` and ``input_std`` (per channel) it takes raw
    images and normalises them itself, as its training data was (an exported model); without,
    it takes images already normalised (a child in a search, whose data is)."""

    def __init__(self, value: dict, in_channels: int, num_classes: int, width_multiplier: float = 1.0,
                 bn_epsilon: float = 1e-5, input_mean: Optional[Sequence[float]] = None,
                 input_std: Optional[Sequence[float]] = None):
        super().__init__()
        self.normalises = input_mean is not None and input_std is not None
        if self.normalises:  # buffers outside the state dict: trained weights load either way
            self.register_buffer("input_mean", torch.tensor(input_mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("input_std", torch.tensor(input_std).view(1, -1, 1, 1), persistent=False)
        specs = value["layers"]
        self.inputs = [tuple(spec["inputs"]) for spec in specs]
        fed = {j for inputs in self.inputs for j in inputs}
        self.sinks = tuple(i for i in range(len(specs)) if i not in fed)  # rule 2
        channels: list[int] = []
        layers = []
        for spec, inputs in zip(specs, self.inputs):
            in_ch = sum(channels[j] for j in inputs) if inputs else in_channels  # rule 1
            layer = ConvLayer(spec, in_ch, width_multiplier, bn_epsilon)
            layers.append(layer)
            channels.append(layer.out_channels)
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(sum(channels[i] for i in self.sinks), num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.normalises:
            image = (image - self.input_mean) / self.input_std
        outputs: list[torch.Tensor] = []
        for layer, inputs in zip(self.layers, self.inputs):
            x = pad_and_concatenate([outputs[j] for j in inputs]) if inputs else image
            outputs.append(layer(x))
        features = pad_and_concatenate([outputs[i] for i in self.sinks])
        return self.classifier(features.mean(dim=(2, 3)))


def build_conv_net(value: dict, in_channels: int, num_classes: int,
                   width_multiplier: float = 1.0, bn_epsilon: float = 1e-5) -> ConvNet:
    """The network of a ``conv`` architecture value (as ``Architecture.as_dict()`` gives it)."""
    return ConvNet(value, in_channels, num_classes, width_multiplier, bn_epsilon)
