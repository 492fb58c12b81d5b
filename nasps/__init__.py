"""nasps: neural architecture search with reinforcement learning, distributed on Ray.

From Python: ``nasps.search(config, evaluator=fn)`` runs a search and returns its ``Run``;
``nasps.resume(run_dir)`` continues one, ``nasps.load(run_dir)`` reads one (``nasps.api``).
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Loaded on first use: every Ray worker imports this package, and a worker scoring children with
# a plain Python function should not pay for torch.
_PUBLIC = {"search": "nasps.api", "resume": "nasps.api", "load": "nasps.api", "Run": "nasps.api",
           "Child": "nasps.api", "Config": "nasps.config", "UserInputError": "nasps.errors",
           "ConfigError": "nasps.errors", "SearchFailed": "nasps.errors"}
__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:
    from nasps.api import Child, Run, load, resume, search  # noqa: F401
    from nasps.config import Config  # noqa: F401
    from nasps.errors import ConfigError, SearchFailed, UserInputError  # noqa: F401


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nasps' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
