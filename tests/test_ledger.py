"""The ledger and the store: exact budget, cached repeats, waits, the sample cap, durable rows."""

import sqlite3

import pytest

from nasps.evaluators import ChildResult
from nasps.spaces import Architecture
from nasps.state.ledger import Ledger
from nasps.state.rundir import open_new_store
from nasps.state.store import ResultsStore
from tests.conftest import toy_config


def arch(i: int) -> Architecture:
    return Architecture.from_value("categorical", {"a": i})


def ok(reward: float) -> ChildResult:
    return ChildResult("ok", reward, {"val_accuracy": reward}, None, "w", 1.0, 3.5)


@pytest.fixture
def ledger(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    yield Ledger(store, budget_children=3, sample_cap=10)
    store.close()


def kinds(admissions):
    return [a.kind for a in admissions]


def test_tickets_never_exceed_the_budget(ledger):
    assert kinds(ledger.admit([arch(0), arch(1)])) == ["run", "run"]
    assert kinds(ledger.admit([arch(2), arch(3)])) == ["run", "drop"]
    assert not ledger.done
    for i in range(3):
        ledger.record(arch(i), ok(i / 10), replica=0, controller_version=0)
    assert ledger.done and ledger.progress.stop_reason == "budget"
    assert kinds(ledger.admit([arch(4)])) == ["drop"]
    assert kinds(ledger.admit([arch(0)])) == ["drop"]  # not even a free cached row
    assert ledger.store.count() == 3


def test_repeats_are_cached_or_wait_for_their_twin(ledger):
    assert kinds(ledger.admit([arch(0), arch(0)])) == ["run", "wait"]
    assert ledger.in_flight(arch(0).hash)
    first = ledger.record(arch(0), ok(0.7), replica=1, controller_version=4)
    twin = ledger.record_cached(arch(0), replica=1, controller_version=4)
    assert (twin.reward, twin.status, twin.cached) == (0.7, "ok", True)
    admissions = ledger.admit([arch(0)])
    assert kinds(admissions) == ["cached"] and admissions[0].child == first
    rows = ledger.store.children()
    assert [r.cached for r in rows] == [False, True]
    assert rows[1].metrics == {} and rows[0].metrics == {"val_accuracy": 0.7}
    assert ledger.progress.trained == 1 and ledger.progress.cached == 1


def test_sample_cap_stops_a_policy_that_repeats_itself(ledger):
    ledger.admit([arch(0)])
    ledger.record(arch(0), ok(0.5), 0, 0)
    admissions = ledger.admit([arch(0)] * 12)
    assert kinds(admissions) == ["cached"] * 9 + ["drop"] * 3
    assert ledger.progress.stop_reason == "sample_cap" and ledger.done


def test_failures_count_against_the_budget(ledger):
    ledger.admit([arch(0)])
    failed = ChildResult("failed", None, {}, "ValueError: boom", "w", 1.0, 2.0)
    outcome = ledger.record(arch(0), failed, 0, 0)
    assert outcome.status == "failed" and outcome.reward is None
    row = ledger.store.children()[0]
    assert (row.status, row.error, row.duration_s) == ("failed", "ValueError: boom", 1.0)


def failed(message: str = "ValueError: boom", status: str = "failed", at: float = 2.0) -> ChildResult:
    return ChildResult(status, None, {}, message, "w", at - 1.0, at)


def test_failures_are_reused_within_a_driver_run_and_oom_is_trained_again(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    ledger = Ledger(store, 10, 100, run_started_at=100.0)
    ledger.admit([arch(0), arch(1), arch(2)])
    ledger.record(arch(0), failed(at=101.0), 0, 0)
    ledger.record(arch(1), failed("CUDA out of memory", "oom", at=101.0), 0, 0)
    ledger.record(arch(2), failed("reward is nan", "diverged", at=101.0), 0, 0)
    assert kinds(ledger.admit([arch(0), arch(1), arch(2)])) == ["cached", "run", "cached"]
    ledger.record(arch(1), ok(0.5), 0, 0)  # the oom child again, now with the memory it lacked
    assert kinds(ledger.admit([arch(1)])) == ["cached"]
    assert ledger.finished(arch(1).hash).status == "ok"
    store.close()
    # A later driver run (a resume, perhaps with the evaluator fixed) trains earlier failures again.
    again = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 10, 100, run_started_at=200.0)
    assert kinds(again.admit([arch(0), arch(1), arch(2)])) == ["run", "cached", "run"]
    again.close()


def test_too_many_failures_in_a_row_stop_the_search(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    ledger = Ledger(store, 20, 100, max_consecutive_failures=3)
    ledger.admit([arch(i) for i in range(6)])
    ledger.record(arch(0), failed("ValueError: one"), 0, 0)
    ledger.record(arch(1), failed("ValueError: two"), 0, 0)
    ledger.record(arch(2), ok(0.5), 0, 0)  # an ok child ends the streak
    ledger.record(arch(3), failed("ValueError: three"), 0, 0)
    ledger.record(arch(4), failed("out of memory", "oom"), 0, 0)  # neither counts nor ends it
    ledger.record_cached(arch(3), 0, 0)  # a repeat of a failure fails too
    assert ledger.progress.stop_reason is None and ledger.progress.failures_in_a_row == 2
    ledger.record(arch(5), failed("TimeoutError: four", "timeout"), 0, 0)
    p = ledger.progress
    assert (p.stop_reason, p.failures_in_a_row, p.last_error) == ("failures", 3, "TimeoutError: four")
    assert kinds(ledger.admit([arch(6), arch(2)])) == ["drop", "drop"]
    store.close()
    # The streak belongs to a driver run: a resumed search starts it again, and goes on.
    again = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 20, 100, max_consecutive_failures=3)
    assert again.progress.stop_reason is None and again.progress.failures_in_a_row == 0
    assert kinds(again.admit([arch(6)])) == ["run"]
    again.close()


def test_a_rebuilt_ledger_knows_who_trains_what(tmp_path):
    """The pending table names the replica training each child: a ledger rebuilt mid-run (the
    recorder restarted) leaves them with their replicas until one dies; a ledger of a new
    driver run (a resume) has every one of them trained again."""
    store = open_new_store(tmp_path / "run", toy_config())
    ledger = Ledger(store, 10, 100)
    ledger.admit([arch(0), arch(1)], replica=0)
    ledger.admit([arch(2)], replica=1)
    ledger.record(arch(1), ok(0.5), 0, 0)
    store.close()
    path = tmp_path / "run" / "results.sqlite"
    restarted = Ledger(ResultsStore(path), 10, 100, pending_in_flight=True)
    assert restarted.recovered == [] and restarted.progress.in_flight == 2
    assert restarted.tickets_left == 7 and kinds(restarted.admit([arch(0)])) == ["wait"]
    assert restarted.reclaim(1) == [arch(2)] and restarted.take_recovered(4, 0) == [arch(2)]
    assert restarted.record(arch(2), ok(0.25), 0, 0).reward == 0.25
    restarted.close()
    resumed = Ledger(ResultsStore(path), 10, 100)
    assert resumed.recovered == [arch(0)] and resumed.progress.in_flight == 1
    resumed.close()


def test_a_second_result_of_a_child_keeps_the_first(ledger):
    ledger.admit([arch(0)], replica=0)
    first = ledger.record(arch(0), ok(0.3), 0, 0)
    assert ledger.record(arch(0), ok(0.9), 0, 0) == first  # a commit sent again after a lost reply
    assert ledger.store.count() == 1 and ledger.progress.trained == 1


def test_an_update_reported_twice_is_counted_once(ledger):
    from nasps.state.ledger import PushReport
    from nasps.state.store import PushRow, RoundStats
    ledger.admit([arch(0)], replica=0)
    child = ledger.record(arch(0), ok(0.3), 0, 0)
    report = PushReport(0, 1, (child.id,), 0, (PushRow(0, 1, 0, 0, 1, 0, True),),
                        RoundStats(0, 1, 0.3, 1.2, 0.3, 1, None))
    ledger.record_push(report)
    ledger.record_push(report)
    assert ledger.progress.updates == 1 and len(ledger.store.pushes()) == 1 and ledger.store.count_updates() == 1
    row = ledger.store.children()[0]
    assert (row.update_seq, row.staleness) == (1, 0)


def test_rows_are_durable_and_the_ledger_rebuilds_from_them(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    ledger = Ledger(store, 5, 100)
    ledger.admit([arch(0), arch(1)])
    ledger.record(arch(0), ok(0.25), 0, 0)
    # Another connection sees the committed row while the writer is still open (WAL).
    other = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    assert other.execute("SELECT reward, status, cached FROM children").fetchall() == [(0.25, "ok", 0)]
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    store.close()
    again = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 5, 100)
    assert again.progress.trained == 1
    assert kinds(again.admit([arch(0)])) == ["cached"]


def test_store_meta_keeps_the_config_and_version(tmp_path):
    store = open_new_store(tmp_path / "run", toy_config())
    meta = store.meta()
    assert meta["config"]["budget"]["children"] == 20
    assert meta["nasps_version"]
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("space:")


def test_the_store_keeps_its_schema_version_and_reads_an_older_store_by_column_name(tmp_path):
    from nasps.errors import UserInputError
    from nasps.state.store import SCHEMA_VERSION
    path = tmp_path / "run" / "results.sqlite"
    store = open_new_store(tmp_path / "run", toy_config())
    a = arch(0)
    store.add_child(arch_json=a.json_text, arch_hash=a.hash, status="ok", reward=0.5, metrics={"x": 1}, error=None,
                    cached_from=None, replica=0, controller_version=3, worker="w", started_at=1.0, finished_at=2.0)
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    # As a store from before versions and update_seq: version 0, the column gone.
    db.executescript("PRAGMA user_version = 0; ALTER TABLE children DROP COLUMN update_seq;")
    db.close()
    old = ResultsStore(path, readonly=True)  # read only: read as it is, by name, nothing written
    (row,) = old.children()
    assert (row.reward, row.controller_version, row.metrics, row.update_seq) == (0.5, 3, {"x": 1}, None)
    assert old.schema_version() == 0
    old.close()
    store = ResultsStore(path)  # to write: brought up to date
    assert store.schema_version() == SCHEMA_VERSION and store.children()[0].update_seq is None
    store.close()
    # A store from a newer nasps is refused in one line, and left as it was.
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    for readonly in (True, False):
        with pytest.raises(UserInputError, match=f"newer nasps \\(store schema {SCHEMA_VERSION + 1}; this nasps "
                                                 f"reads up to {SCHEMA_VERSION}\\)"):
            ResultsStore(path, readonly=readonly)
    assert path.read_bytes() == before


def test_a_commit_that_fails_stores_nothing_and_leaves_every_child_in_flight(ledger):
    """Children finished together are committed in one transaction: when one row cannot be
    written, none is, and the ledger counts none of them (they can still be committed)."""
    ledger.admit([arch(0), arch(1)], replica=0)
    unwritable = ChildResult("ok", 0.5, {"not json": {1, 2}}, None, "w", 1.0, 2.0)  # a set
    with pytest.raises(TypeError):
        ledger.record_all([(arch(0), ok(0.3), 0), (arch(1), unwritable, 0)], 0)
    assert ledger.store.count() == 0
    assert (ledger.progress.trained, ledger.progress.in_flight) == (0, 2)
    assert ledger.in_flight(arch(0).hash) and ledger.finished(arch(0).hash) is None
    outcomes = ledger.record_all([(arch(0), ok(0.3), 0), (arch(1), ok(0.4), 0)], 0)
    assert [o.reward for o in outcomes] == [0.3, 0.4] and ledger.store.count() == 2
    assert (ledger.progress.trained, ledger.progress.in_flight) == (2, 0)
