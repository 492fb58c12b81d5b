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


def describe(value: dict) -> list[str]:
    """An architecture value for people: its first line fits a table row; an rnn_cell's
    equations follow on further lines."""
    hyperparameters = ", ".join(f"{k}={v}" for k, v in value.get("hyperparameters", {}).items())
    extra = f"; {hyperparameters}" if hyperparameters else ""
    if "layers" in value:
        return [describe_layers(value) + extra]
    if "nodes" in value:
        return [f"base-{value['base']} cell{extra}", *cell_equations(value)]
    return [", ".join(f"{k}={v}" for k, v in value.items())]


__all__ = ["ANCHOR", "Architecture", "Decision", "SearchSpace", "CategoricalSpace", "ConvSpace",
           "RnnCellSpace", "build_space", "cell_equations", "describe"]
