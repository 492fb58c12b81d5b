"""The child worker actor: builds its evaluator once and trains one child per call.

The evaluator (and any dataset it loads) stays resident in the worker between children. This
module imports nothing heavy itself, so a worker whose evaluator only looks results up starts
fast and stays small; an evaluator that trains networks imports torch on its own.
"""

from __future__ import annotations

from typing import Optional

import ray

from nasps.evaluators import ChildResult, build_evaluator, run_child
from nasps.spaces import Architecture


@ray.remote
class ChildWorker:
    def __init__(self, evaluator_config):
        self.evaluator = build_evaluator(evaluator_config)

    def evaluate(self, arch: Architecture, admitted: Optional[tuple] = None, index: int = 0) -> Optional[ChildResult]:
        """Train one child. ``admitted`` is the recorder's reply to the admission of the batch
        (``Recorder.admit``): a replica sends the call before that reply is back, as an object
        ref that Ray resolves first. None when the child was not admitted to run."""
        if admitted is not None and admitted[0][index].kind != "run":
            return None
        return run_child(self.evaluator, arch)
