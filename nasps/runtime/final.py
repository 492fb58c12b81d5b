"""The grid of ``nasps train`` on Ray: one task per grid point, all at once, as resources allow.

Each task returns its record and, as a second object, its weights; only the chosen trial's
weights are fetched, so a large grid does not pull every model to the driver.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import ray

from nasps.errors import UserInputError
from nasps.runtime.driver import connect
from nasps.training.final import TrainingJob, best_trial, train_trial

log = logging.getLogger(__name__)


@ray.remote(num_returns=2)
def _trial(job: TrainingJob, index: int):
    return train_trial(job, index)


def run_grid(job: TrainingJob, address: Optional[str] = None, poll_s: float = 5.0):
    """Train every grid point; returns (all records in grid order, the best record, its weights)."""
    started_ray = connect(address, {})
    try:
        options = {"num_cpus": job.training.cpus_per_trial, "num_gpus": job.training.gpus_per_trial}
        refs = [_trial.options(**options).remote(job, i) for i in range(len(job.trials))]
        records_refs = [r for r, _ in refs]
        pending, said_at, start = list(records_refs), 0.0, time.time()
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            if time.time() - said_at >= poll_s:
                said_at = time.time()
                log.info("final training: %d of %d grid points done (%.0f s)",
                         len(records_refs) - len(pending), len(records_refs), said_at - start)
        try:
            records = ray.get(records_refs)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserInputError):  # a dataset a worker could not read, say
                raise exc.cause from None
            raise
        best = best_trial(records)
        weights = ray.get(refs[best["trial"]][1])
        return records, best, weights
    finally:
        if started_ray:
            ray.shutdown()
