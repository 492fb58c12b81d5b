"""Search spaces: decisions in, architecture values out. Looked up by ``space.type``."""

from nasps.config import CategoricalSpaceConfig, ConvSpaceConfig, RnnCellSpaceConfig
from nasps.spaces.base import ANCHOR, Architecture, Decision, SearchSpace
from nasps.spaces.categorical import CategoricalSpace
from nasps.spaces.conv import ConvSpace, describe_layers
from nasps.spaces.rnn_cell import RnnCellSpace, cell_equations


def build_space(config) -> SearchSpace:
    if isinstance(config, CategoricalSpaceConfig):
        return CategoricalSpace(config)
    if isinstance(config, ConvSpaceConfig):
        return ConvSpace(config)
    if isinstance(config, RnnCellSpaceConfig):
        return RnnCellSpace(config)
    raise TypeError(f"no search space for {type(config).__name__}")


def shape_of(value: dict) -> str:
    """Which space an architecture value is from: ``conv``, ``rnn_cell`` or ``categorical``. By
    shape, not by key: a categorical space may have a decision named layers or nodes."""
    if isinstance(value.get("layers"), list):
        return "conv"
    if isinstance(value.get("nodes"), list):
        return "rnn_cell"
    return "categorical"


def describe(value: dict) -> list[str]:
    """An architecture value for people: its first line fits a table row; an rnn_cell's
    equations follow on further lines."""
    shape = shape_of(value)
    if shape == "categorical":
        return [", ".join(f"{k}={v}" for k, v in value.items())]
    hyperparameters = ", ".join(f"{k}={v}" for k, v in value.get("hyperparameters", {}).items())
    extra = f"; {hyperparameters}" if hyperparameters else ""
    if shape == "conv":
        return [describe_layers(value) + extra]
    return [f"base-{value['base']} cell{extra}", *cell_equations(value)]


__all__ = ["ANCHOR", "Architecture", "Decision", "SearchSpace", "CategoricalSpace", "ConvSpace",
           "RnnCellSpace", "build_space", "cell_equations", "describe", "shape_of"]
