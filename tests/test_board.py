"""TensorBoard event files hold the numbers the results store holds."""

import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nasps.method.serial import run_serial
from nasps.runtime.driver import run_search
from nasps.state.rundir import open_for_resume
from nasps.state.store import ResultsStore
from nasps.views.report import summarize
from tests.conftest import toy_config


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    # Not purging: a step written twice (a resumed search drawing its curves again) shows.
    events = EventAccumulator(str(run_dir / "tb"), purge_orphaned_data=False)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def store_of(run_dir: Path):
    store = ResultsStore(run_dir / "results.sqlite")
    try:
        return store.children(), store.rounds()
    finally:
        store.close()


def check_board_matches_store(run_dir: Path) -> None:
    tags = scalars(run_dir)
    rows, rounds = store_of(run_dir)
    trained = [r for r in rows if not r.cached]
    ok = [r for r in trained if r.status == "ok"]
    assert tags["child/reward"] == [(r.id, pytest.approx(r.reward)) for r in ok]
    best, running = [], None
    for r in trained:
        if r.status == "ok":
            running = r.reward if running is None else max(running, r.reward)
        best.append((r.id, pytest.approx(running)))
    assert tags["child/best_reward"] == best
    assert [s for s, _ in tags["child/wall_time_s"]] == [r.id for r in trained]
    # One point per controller update, in the order the updates were committed.
    assert len(rounds) > 0
    assert [v for _, v in tags["controller/baseline"]] == [pytest.approx(r[2]) for r in rounds]
    assert [v for _, v in tags["controller/entropy"]] == [pytest.approx(r[3]) for r in rounds]
    assert [v for _, v in tags["controller/staleness"]] == [r[7] for r in rounds]
    assert [s for s, _ in tags["controller/entropy"]] == list(range(1, len(rounds) + 1))
    assert all(r[3] > 0 for r in rounds)  # an untrained policy is far from deterministic


def test_serial_search_writes_the_store_numbers_to_tensorboard(tmp_path):
    run_serial(toy_config(budget={"children": 15}), tmp_path / "run")
    check_board_matches_store(tmp_path / "run")
    rows, rounds = store_of(tmp_path / "run")
    # The baseline is the replica's moving average: its first value is the first reward.
    assert rounds[0][2] == pytest.approx(rows[0].reward)


def test_distributed_search_writes_tensorboard(ray_session, tmp_path):
    # A budget that one replica cannot spend alone before the other starts, on a loaded machine.
    config = toy_config(cluster={"parameter_servers": 2, "replicas": 2, "children_per_replica": 2,
                                 "cpus_per_child": 0.25}, budget={"children": 40})
    run_search(config, tmp_path / "run")
    check_board_matches_store(tmp_path / "run")
    assert {r[0] for r in store_of(tmp_path / "run")[1]} == {0, 1}  # both replicas' updates


def test_a_resumed_search_continues_its_curves(ray_session, tmp_path):
    config = toy_config(cluster={"children_per_replica": 2, "cpus_per_child": 0.25}, budget={"children": 8})
    run_search(config, tmp_path / "run")
    time.sleep(1.5)  # stopped a while before the resume
    # A finished search resumed with a larger budget goes on to exactly that budget.
    run_search(open_for_resume(tmp_path / "run", ["budget.children=16"]), tmp_path / "run", resume=True)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["budget"]["children"] == 16
    assert len(list((tmp_path / "run" / "tb").glob("*tfevents*"))) == 2  # one file per driver
    rows, _ = store_of(tmp_path / "run")
    trained = [r for r in rows if not r.cached]
    assert len(trained) == 16 and len({r.arch_hash for r in trained}) == 16  # none trained twice
    check_board_matches_store(tmp_path / "run")  # every child and update once, steps in order

    # The report's throughput counts each run from its first child to its last, not the pause.
    resumed_at = ResultsStore(tmp_path / "run" / "results.sqlite", readonly=True).meta()["resumed_at"][0]
    runs = [[r for r in trained if r.started_at < resumed_at], [r for r in trained if r.started_at >= resumed_at]]
    spans = [max(r.finished_at for r in run) - min(r.started_at for r in run) for run in runs]
    report = summarize(tmp_path / "run")
    assert report.wall_s == pytest.approx(sum(spans))
    assert report.wall_s < max(r.finished_at for r in trained) - min(r.started_at for r in trained) - 1.5
    assert report.trained_per_min == pytest.approx(60 * 16 / sum(spans))


def test_tensorboard_off_writes_no_event_files(tmp_path):
    run_serial(toy_config(budget={"children": 3}, logging={"tensorboard": False}), tmp_path / "run")
    assert not (tmp_path / "run" / "tb").exists()
    assert store_of(tmp_path / "run")[1]  # the rounds are still in the store
