"""nasps: neural architecture search with reinforcement learning, distributed on Ray."""

__version__ = "0.1.0"
