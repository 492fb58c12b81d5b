"""A search logged to MLflow (``logging.mlflow``): one MLflow run per search, resumes included.

Like the TensorBoard board, the MLflow log follows the results store (``nasps.views.follow``): every
number it logs is in the store, which stays the record. Per child (step = its row id) the
board's scalars, the evaluator's numeric metrics (``evaluator/<name>``) and the count of
children so far with its status (``children/<status>``); per controller update (step = the
updates of all replicas) the round as the store keeps it. The run also gets the resolved
config (``config.yaml``), params to filter on, and at every stop the top architectures
(``top.json``, as ``nasps report`` ranks them); its status is FINISHED once the budget is
trained, KILLED when the search stopped before (``--resume`` continues it).

``RUN_DIR/mlflow.json`` holds the tracking URI, the run id and how far the run has been
logged, so a resumed search reopens the same run and never logs a step twice.

MLflow's client retries a server it cannot reach for minutes, so the log runs on a thread of
its own: the driver, which also checkpoints and replaces replicas, never waits on it, and a
server that is down costs a warning and the MLflow view, never the search.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

from nasps.config import Config, MlflowConfig, dump_config
from nasps.errors import ConfigError
from nasps.evaluators import STATUSES
from nasps.state.store import STORE_NAME
from nasps.views.follow import StoreFollower, read_json, write_json

log = logging.getLogger(__name__)

RUN_FILE = "mlflow.json"
TOP = 10  # architectures in top.json, as many as `nasps report` lists
BATCH = 1000  # metrics per log_batch call, MLflow's limit
CLOSE_DEADLINE_S = 60.0  # for the last metrics and top.json to reach a slow server
NOT_A_NAME = re.compile(r"[^\w./ :-]")  # characters MLflow refuses in a metric name


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("logging.mlflow: MLflow is not installed; pip install 'nasps[mlflow]'") from None


def mlflow_client(uri: Optional[str]):
    """A client of the tracking store at ``uri`` (None: MLflow's default). MLflow checks the URI
    when the client is made (a scheme it has no store for, a store it refuses); nothing is
    sent yet, so a server that is down is not found out here."""
    require_mlflow()
    import importlib.util

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    database = (uri or mlflow.get_tracking_uri()).split(":", 1)[0].split("+")[0]
    if database in ("sqlite", "postgresql", "mysql", "mssql") and importlib.util.find_spec("sqlalchemy") is None:
        # mlflow-skinny (the extra) has no database stores; MLflow's own message is about its model registry
        raise ConfigError(f"logging.mlflow.tracking_uri: {uri or 'the default, ' + mlflow.get_tracking_uri()} "
                          "needs sqlalchemy: pip install mlflow (the full package), or give a server's http:// URI")
    try:
        return MlflowClient(tracking_uri=uri)
    except MlflowException as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"logging.mlflow.tracking_uri: {uri or 'the default'}: {message}") from None


def check_mlflow(config: Config) -> None:
    """Before a search starts: MLflow is there and takes the tracking URI."""
    if config.logging.mlflow is not None:
        mlflow_client(config.logging.mlflow.tracking_uri)


def resolved_uri(uri: Optional[str]) -> str:
    """The URI the run lives at, whatever the directory or environment of a later resume."""
    import mlflow
    uri = uri or mlflow.get_tracking_uri()
    return Path(uri).resolve().as_uri() if not urlparse(uri).scheme else uri


class MlflowLog(StoreFollower):
    def __init__(self, run_dir: str | Path, settings: MlflowConfig, config: Config):
        super().__init__(Path(run_dir) / STORE_NAME)
        from mlflow.entities import Metric, Param, RunTag
        self._metric = Metric
        self.run_dir, self.run_file = Path(run_dir), Path(run_dir) / RUN_FILE
        self.budget = config.budget.children
        self.pending: list = []
        self._open_run(settings)
        self.statuses = Counter({s: self.store.count("id <= ? AND cached = 0 AND status = ?", (self.last_child, s))
                                 for s in STATUSES})
        self._save_position()
        # Params never change on a resume (only budget.* and cluster.* may); what may is a tag.
        params = {"space.type": config.space.type, "strategy.type": config.strategy.type,
                  "evaluator.type": config.evaluator.type, "seed": config.seed}
        tags = {"budget.children": config.budget.children, "nasps.run_dir": str(self.run_dir.resolve())}
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.log_text(self.run_id, dump_config(config), "config.yaml")

    def _open_run(self, settings: MlflowConfig) -> None:
        """The run this search logged to before (``mlflow.json``), or a new one."""
        from mlflow.exceptions import MlflowException
        known = read_json(self.run_file) or {}
        self.uri = known.get("tracking_uri") or resolved_uri(settings.tracking_uri)
        self.client = mlflow_client(self.uri)
        if known.get("run_id"):
            try:
                run = self.client.get_run(known["run_id"])
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
                self.client.update_run(self.run_id, status="RUNNING")
                self.start_at(int(known.get("child", 0)), int(known.get("round", 0)))
                return
            log.warning("MLflow: run %s of %s is gone; logging the search to a new run", known["run_id"], self.uri)
        experiment = self.client.get_experiment_by_name(settings.experiment)
        self.experiment_id = experiment.experiment_id if experiment is not None else \
            self.client.create_experiment(settings.experiment)
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_dir.name).info.run_id
        self.start_at(0, 0)

    def child_values(self, row) -> dict[str, float]:
        values = super().child_values(row)
        self.statuses[row.status] += 1
        values[f"children/{row.status}"] = self.statuses[row.status]
        for name, value in row.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values[NOT_A_NAME.sub("_", f"evaluator/{name}")[:250]] = value
        return values

    def update_values(self, stats, staleness: int) -> dict[str, float]:
        values = super().update_values(stats, staleness)
        values.update({"controller/scored": stats.scored, "controller/replica": stats.replica})
        if stats.depth is not None:
            values["controller/depth"] = stats.depth
        return values

    def write(self, values: dict[str, float], step: int, walltime: Optional[float]) -> None:
        ms = int(1000 * (walltime or time.time()))
        self.pending += [self._metric(key, float(value), ms, step) for key, value in values.items()]

    def commit(self) -> None:
        for start in range(0, len(self.pending), BATCH):
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + BATCH])
        self.pending = []
        self._save_position()

    def _save_position(self) -> None:
        write_json(self.run_file, {"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                                   "run_id": self.run_id, "child": self.last_child, "round": self.last_round})

    def close(self) -> None:
        """The rows left, the top architectures, and the run's status: this driver is done."""
        from nasps.views.report import report_json, summarize
        try:
            self.follow()
            top = report_json(summarize(self.run_dir, top=TOP))["top"]
            self.client.log_text(self.run_id, json.dumps(top, indent=2), "top.json")
            finished = self.store.count("cached = 0") >= self.budget
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
        finally:
            self.store.close()


class Background:
    """A log on a thread of its own: ``follow`` wakes it, ``close`` waits for its last round
    (up to CLOSE_DEADLINE_S). Whatever fails there costs the log only, with a warning."""

    def __init__(self, make: Callable[[], MlflowLog]):
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, args=(make,), name="nasps-mlflow", daemon=True)
        self._thread.start()

    def follow(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(CLOSE_DEADLINE_S)
        if self._thread.is_alive():
            log.warning("MLflow: the tracking server has not answered for %.0f s; the search is done "
                        "without it, and the results store has every row", CLOSE_DEADLINE_S)

    def _run(self, make: Callable[[], MlflowLog]) -> None:
        follower = None
        try:
            follower = make()
            while not self._closing:
                self._wake.wait()
                self._wake.clear()
                if not self._closing:
                    follower.follow()
            follower.close()
        except Exception as exc:  # a server that is down, a full disk: the rows are safe in the store
            log.warning("MLflow: stopped logging (%s: %s); the search goes on, and the results store "
                        "has every row", type(exc).__name__, " ".join(str(exc).split())[:300])
            if follower is not None:
                follower.store.close()


def open_mlflow(run_dir: str | Path, config: Config) -> Optional[Background]:
    """The MLflow log of a run whose store exists, or None when ``logging.mlflow`` is off."""
    settings = config.logging.mlflow
    if settings is None:
        return None
    return Background(lambda: MlflowLog(run_dir, settings, config))
