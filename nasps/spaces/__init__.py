"""Search spaces: decisions in, architecture values out. Looked up by ``space.type``."""

from nasps.config import CategoricalSpaceConfig
from nasps.spaces.base import Architecture, Decision, SearchSpace
from nasps.spaces.categorical import CategoricalSpace


def build_space(config) -> SearchSpace:
    if isinstance(config, CategoricalSpaceConfig):
        return CategoricalSpace(config)
    raise TypeError(f"no search space for {type(config).__name__}")


__all__ = ["Architecture", "Decision", "SearchSpace", "CategoricalSpace", "build_space"]
