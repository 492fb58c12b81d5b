"""The MLflow run of a search holds the numbers the results store holds, and a resume continues it.

MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set, and its SQLite store
needs SQLAlchemy, which mlflow-skinny leaves out: the tests log to a real file store under
tmp_path, with that setting, and read it back with MLflow's own client.
"""

import json
import logging
import sys
import time
from pathlib import Path

import pytest
import yaml

import nasps
from nasps.config import config_to_dict
from nasps.errors import ConfigError
from nasps.method.serial import run_serial
from nasps.state.rundir import open_for_resume
from nasps.state.store import ResultsStore
from nasps.views.mlflow_log import RUN_FILE, check_mlflow
from tests.conftest import toy_config
from tests.ray_nodes import free_port

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture(autouse=True)
def file_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def mlflow_config(tmp_path: Path, evaluator: str = "tests.toys:match_fraction", **sections):
    logging_section = {"tensorboard": False, "mlflow": {"tracking_uri": (tmp_path / "mlruns").as_uri(),
                                                        "experiment": "toys"}}
    return toy_config(evaluator={"type": "python", "target": evaluator}, logging=logging_section, **sections)


def logged_run(run_dir: Path):
    """The MLflow client and run of a search, from the run id it keeps in RUN_DIR."""
    known = json.loads((run_dir / RUN_FILE).read_text())
    client = MlflowClient(known["tracking_uri"])
    return client, client.get_run(known["run_id"])


def history(client, run, key: str) -> list[tuple[int, float]]:
    points = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
    assert len({step for step, _ in points}) == len(points), f"{key}: a step logged twice"
    return sorted(points)


def artifact(client, run, name: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run.info.run_id, name, str(tmp_path))).read_text()


def check_run_matches_store(run_dir: Path, tmp_path: Path) -> tuple:
    client, run = logged_run(run_dir)
    store = ResultsStore(run_dir / "results.sqlite", readonly=True)
    rows, rounds = store.children(), store.rounds()
    store.close()
    trained = [r for r in rows if not r.cached]
    ok = [r for r in trained if r.status == "ok"]
    assert history(client, run, "child/reward") == [(r.id, pytest.approx(r.reward)) for r in ok]
    assert [s for s, _ in history(client, run, "child/wall_time_s")] == [r.id for r in trained]
    for status in {r.status for r in trained}:
        with_it = [r.id for r in trained if r.status == status]
        assert history(client, run, f"children/{status}") == [(i, n) for n, i in enumerate(with_it, 1)]
    # One point per controller update, in the order the store committed them.
    assert len(rounds) > 0
    steps = list(range(1, len(rounds) + 1))
    assert history(client, run, "controller/entropy") == [(s, pytest.approx(r[3])) for s, r in zip(steps, rounds)]
    assert history(client, run, "controller/baseline") == [(s, pytest.approx(r[2])) for s, r in zip(steps, rounds)]
    assert history(client, run, "controller/scored") == [(s, r[5]) for s, r in zip(steps, rounds)]
    assert history(client, run, "controller/staleness") == [(s, r[7]) for s, r in zip(steps, rounds)]
    # The config it ran with, and the top architectures ranked as the report ranks them.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert yaml.safe_load(artifact(client, run, "config.yaml", tmp_path)) == config
    top = json.loads(artifact(client, run, "top.json", tmp_path))
    best = sorted(ok, key=lambda r: (-r.reward, r.id))[:10]
    assert [(t["rank"], t["id"], t["reward"], t["arch"]) for t in top] == \
        [(rank, r.id, r.reward, r.arch) for rank, r in enumerate(best, 1)]
    assert run.data.params == {"space.type": "categorical", "strategy.type": "reinforce", "evaluator.type": "python",
                               "seed": "0"}
    assert run.data.tags["budget.children"] == str(config["budget"]["children"])
    return client, run, trained


def test_serial_search_logs_the_store_numbers_to_mlflow(tmp_path):
    config = mlflow_config(tmp_path, "tests.toys:match_with_metrics", budget={"children": 15})
    run_serial(config, tmp_path / "run")
    client, run, trained = check_run_matches_store(tmp_path / "run", tmp_path)
    assert {r.status for r in trained} == {"ok", "failed"}  # both kinds of child are in the curves
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "toys"
    assert yaml.safe_load(artifact(client, run, "config.yaml", tmp_path)) == config_to_dict(config)
    # The evaluator's numbers, under names MLflow takes; its text, lists, flags and NaNs are not numbers to plot.
    ok = [r for r in trained if r.status == "ok"]
    assert history(client, run, "evaluator/matches") == [(r.id, r.metrics["matches"]) for r in ok]
    assert [s for s, _ in history(client, run, "evaluator/acc_1")] == [r.id for r in ok]
    assert not {"evaluator/note", "evaluator/curve", "evaluator/flag", "evaluator/missing"} & set(run.data.metrics)
    position = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert (position["child"], position["round"]) == (trained[-1].id, len(history(client, run, "controller/entropy")))


def test_a_resumed_search_continues_the_same_mlflow_run(ray_session, tmp_path):
    from nasps.runtime.driver import run_search
    # The sample cap stops the serial loop short of its budget: the run says so, with its top so far.
    config = mlflow_config(tmp_path, cluster={"children_per_replica": 2, "cpus_per_child": 0.25},
                           budget={"children": 10, "max_samples": 5})
    run_serial(config, tmp_path / "run")
    _, first, trained = check_run_matches_store(tmp_path / "run", tmp_path)
    assert len(trained) <= 5 and first.info.status == "KILLED"
    # The Ray driver resumes it (the serial loop keeps no checkpoint: the policy starts afresh).
    resumed = open_for_resume(tmp_path / "run", ["budget.children=12", "budget.max_samples=200"])
    run_search(resumed, tmp_path / "run", resume=True)
    client, run, trained = check_run_matches_store(tmp_path / "run", tmp_path)  # every step once
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert len(trained) == 12 and run.data.tags["budget.children"] == "12"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_tracking_server_that_is_down_costs_only_mlflow(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own setting: fail at once
    config = toy_config(budget={"children": 6},
                        logging={"tensorboard": False, "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"}})
    started = time.time()
    with caplog.at_level(logging.WARNING, logger="nasps.views.mlflow_log"):
        progress, _ = run_serial(config, tmp_path / "run")
    assert progress.trained == 6 and time.time() - started < 30
    assert any("MLflow: stopped logging" in m and "the search goes on" in m for m in caplog.messages)


@pytest.mark.parametrize("uri, needle", [("htp://nowhere", "htp://nowhere"), ("mlruns", "MLFLOW_ALLOW_FILE_STORE")])
def test_a_tracking_uri_mlflow_refuses_stops_the_search_before_it_starts(tmp_path, monkeypatch, uri, needle):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.chdir(tmp_path)
    config = toy_config(logging={"mlflow": {"tracking_uri": uri}})
    with pytest.raises(ConfigError, match="logging.mlflow.tracking_uri") as error:
        run_serial(config, tmp_path / "run")
    assert needle in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlruns").exists()


def test_a_sqlite_store_without_sqlalchemy_is_one_line_and_nasps_search_writes_nothing(tmp_path, monkeypatch):
    """MLflow 3's default store is sqlite, which mlflow-skinny (the extra) cannot open."""
    import importlib.util
    monkeypatch.chdir(tmp_path)
    config = toy_config(logging={"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    if importlib.util.find_spec("sqlalchemy") is not None:  # the full mlflow package: the store opens
        check_mlflow(config)
        return
    with pytest.raises(ConfigError, match=r"^logging.mlflow.tracking_uri: sqlite:.* needs sqlalchemy: pip"):
        nasps.search(config, run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_mlflow_missing_is_one_line_naming_the_extra(bad_input_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without MLflow imports
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(toy_config(logging={"mlflow": {}}))))
    for argv in (["validate", path], ["search", "--config", path, "--run-dir", tmp_path / "run"]):
        status, err = bad_input_cli(*argv)
        assert status == 2 and len(err.strip().splitlines()) == 1, err
        assert "logging.mlflow" in err and "pip install 'nasps[mlflow]'" in err
    assert not (tmp_path / "run").exists()
