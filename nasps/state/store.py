"""The results store: every finished child, durably, in ``RUN_DIR/results.sqlite``.

One row per sampled architecture that was trained or served from the cache of this run, written
(and committed) before its reward is used. SQLite in WAL mode, so a reader (``nasps report``)
never blocks the search, and a killed search loses nothing that was committed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from nasps.errors import UserInputError
from nasps.evaluators import SCORED

STORE_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS children (
    id                 INTEGER PRIMARY KEY,  -- order of finishing, from 1
    arch               TEXT NOT NULL,        -- JSON object: decision name -> value
    arch_hash          TEXT NOT NULL,
    reward             REAL,                 -- NULL unless status is ok or stopped
    status             TEXT NOT NULL,        -- ok, stopped, failed, diverged, oom, timeout, cancelled
    cached             INTEGER NOT NULL,     -- 1: result reused from an identical earlier child
    cached_from        INTEGER REFERENCES children(id),
    metrics            TEXT NOT NULL,        -- JSON object
    error              TEXT,
    replica            INTEGER,
    controller_version INTEGER,              -- policy updates the sampling replica had pulled
    staleness          INTEGER,              -- of the gradient this child fed; NULL if none
    worker             TEXT,
    started_at         REAL,
    finished_at        REAL,
    duration_s         REAL,
    depth              INTEGER,              -- layers in force when sampled (depth curriculum)
    update_seq         INTEGER               -- the sampling replica's update (pushes.seq) it fed; NULL if none
);
CREATE INDEX IF NOT EXISTS children_by_hash ON children(arch_hash);
CREATE TABLE IF NOT EXISTS pushes (
    replica        INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    shard          INTEGER NOT NULL,
    version_pulled INTEGER NOT NULL,
    version        INTEGER NOT NULL,        -- the shard's version after this push
    staleness      INTEGER NOT NULL,
    applied        INTEGER NOT NULL,        -- 0: a retried call the shard had applied already
    pushed_at      REAL NOT NULL,
    epoch          INTEGER NOT NULL DEFAULT 0,  -- the shard's restores before this push
    PRIMARY KEY (replica, seq, shard)
);
CREATE TABLE IF NOT EXISTS restores (       -- a shard reloaded from the checkpoint
    shard          INTEGER NOT NULL,
    epoch          INTEGER NOT NULL,        -- pushes after it carry this epoch
    version        INTEGER NOT NULL,        -- the version it was restored to
    cause          TEXT NOT NULL,           -- resume (the search restarted) or restart (the shard died)
    lost           INTEGER NOT NULL,        -- updates applied after the checkpoint, known when restored
    restored_at    REAL NOT NULL,
    PRIMARY KEY (shard, epoch)
);
CREATE TABLE IF NOT EXISTS pending (      -- admitted to train, not finished: re-run on resume
    id          INTEGER PRIMARY KEY,
    space       TEXT NOT NULL,
    arch        TEXT NOT NULL,
    arch_hash   TEXT NOT NULL,
    depth       INTEGER,
    admitted_at REAL NOT NULL,
    replica     INTEGER                  -- the replica training it; NULL: to be trained again
);
CREATE TABLE IF NOT EXISTS rounds (
    replica     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,        -- the push this round's gradient went out with
    baseline    REAL,                    -- the replica's reward baseline after this round
    entropy     REAL,                    -- mean entropy of the policy along the m samples
    mean_reward REAL,                    -- of the children that entered the gradient
    scored      INTEGER NOT NULL,        -- children that entered the gradient
    depth       INTEGER,
    staleness   INTEGER NOT NULL,        -- the largest over the shards
    pushed_at   REAL NOT NULL,
    PRIMARY KEY (replica, seq)
);
"""


# The schema's version, kept in PRAGMA user_version. A store made before versions were kept
# reads 0 and is brought up to this one (ADDED_COLUMNS) when opened to write; a store made by a
# newer nasps is refused in one line rather than misread.
SCHEMA_VERSION = 1

# Columns a store made by an earlier nasps may lack: added (empty) when it is opened to write.
# Rows are read by column name, so an added column's place in the table does not matter.
ADDED_COLUMNS = {"children": [("update_seq", "INTEGER")],
                 "pushes": [("epoch", "INTEGER NOT NULL DEFAULT 0")],
                 "pending": [("replica", "INTEGER")]}


@dataclass(frozen=True)
class ChildRow:
    """One child of a run as the store keeps it; ``nasps.Child`` to users of the Python API."""

    id: int
    arch: dict
    arch_hash: str
    reward: Optional[float]
    status: str
    cached: bool
    metrics: dict
    error: Optional[str]
    replica: Optional[int]
    controller_version: Optional[int]
    staleness: Optional[int]
    worker: Optional[str]
    started_at: Optional[float]
    finished_at: Optional[float]
    duration_s: Optional[float]
    depth: Optional[int] = None
    update_seq: Optional[int] = None

    @property
    def timings(self) -> dict[str, Optional[float]]:
        """When the child was sent and finished (Unix seconds), and how long it trained."""
        return {"started_at": self.started_at, "finished_at": self.finished_at, "duration_s": self.duration_s}


@dataclass(frozen=True)
class PushRow:
    """One gradient push to one shard, as the shard answered it."""

    replica: int
    seq: int  # the replica's update: one seq, one row per shard
    shard: int
    version_pulled: int  # the shard's version the gradient was computed from
    version: int  # the shard's version after this push
    staleness: int
    applied: bool  # False: a retried call the shard had applied already
    epoch: int = 0  # the shard's restores before this push


@dataclass(frozen=True)
class RoundStats:
    """One replica's update as the controller saw it: what TensorBoard and the report plot."""

    replica: int
    seq: int
    baseline: Optional[float]
    entropy: float
    mean_reward: Optional[float]
    scored: int
    depth: Optional[int]


@dataclass(frozen=True)
class PendingChild:
    """A child admitted to train that has not finished."""

    space: str
    arch_json: str
    depth: Optional[int]
    replica: Optional[int]  # the replica training it; None: it is to be trained again


def ranked_children(rows: Sequence[ChildRow]) -> list[ChildRow]:
    """Trained children with a reward (ok, or stopped early), best reward first (the earlier child first on a tie):
    the order of every "top" and "rank" nasps shows."""
    scored = (r for r in rows if r.status in SCORED and not r.cached and r.reward is not None)
    return sorted(scored, key=lambda r: (-r.reward, r.id))


class ResultsStore:
    """Writes and reads one run's ``results.sqlite``."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        """``readonly`` for readers (report, export, train): nothing is written (not even the
        journal mode, which would give an empty file a header), so a damaged or foreign file
        stays exactly as it was. It is not SQLite's mode=ro, which leaves -wal/-shm files behind."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserInputError(f"{self.path}: no results store here")
        self._db = None
        self._depth = 0  # open transactions: nested ones join the outermost
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            if create:
                self._db.executescript(SCHEMA)
            self._check_schema()
            if not readonly:
                self._add_missing_columns()
                if self.schema_version() < SCHEMA_VERSION:
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (sqlite3.DatabaseError, UserInputError) as exc:
            if self._db is not None:
                self._db.close()
            if isinstance(exc, UserInputError):
                raise
            raise UserInputError(f"{self.path}: not a readable nasps results store ({exc})") from None

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"meta", "children", "pushes"} - tables
        if missing:
            raise UserInputError(f"{self.path}: not a nasps results store "
                                 f"(missing tables: {', '.join(sorted(missing))})")
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise UserInputError(f"{self.path}: written by a newer nasps (store schema {version}; this nasps "
                                 f"reads up to {SCHEMA_VERSION}); upgrade nasps to read it")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if have and name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writing

    def set_meta(self, values: Mapping[str, Any]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])

    def add_child(self, *, arch_json: str, arch_hash: str, status: str, reward: Optional[float],
                  metrics: Mapping[str, Any], error: Optional[str], cached_from: Optional[int],
                  replica: Optional[int], controller_version: Optional[int], worker: Optional[str],
                  started_at: Optional[float], finished_at: Optional[float],
                  depth: Optional[int] = None) -> int:
        """Insert one finished child and commit; returns its id."""
        duration = (finished_at - started_at) if started_at is not None and finished_at is not None else None
        with self._transaction():
            if cached_from is None:  # a trained child is no longer pending, in the same commit
                self.remove_pending(arch_hash)
            cursor = self._db.execute(
                "INSERT INTO children(arch, arch_hash, reward, status, cached, cached_from, metrics,"
                " error, replica, controller_version, worker, started_at, finished_at, duration_s, depth)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (arch_json, arch_hash, reward, status, int(cached_from is not None), cached_from,
                 json.dumps(dict(metrics)), error, replica, controller_version, worker,
                 started_at, finished_at, duration, depth))
        return int(cursor.lastrowid)

    def add_pending(self, rows: Sequence[tuple[str, str, str, Optional[int]]], replica: Optional[int]) -> None:
        """Children admitted to train by ``replica``: rows of (space, arch JSON, arch hash, depth)."""
        if not rows:
            return
        now = time.time()
        with self._transaction():
            self._db.executemany("INSERT INTO pending(space, arch, arch_hash, depth, admitted_at, replica)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", [(*row, now, replica) for row in rows])

    def set_pending_replica(self, arch_hashes: Sequence[str], replica: Optional[int]) -> None:
        """Pending children change hands: taken by ``replica``, or (None) left to train again."""
        with self._transaction():
            self._db.executemany("UPDATE pending SET replica = ? WHERE arch_hash = ?",
                                 [(replica, h) for h in arch_hashes])

    def remove_pending(self, arch_hash: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM pending WHERE id = (SELECT MIN(id) FROM pending"
                             " WHERE arch_hash = ?)", (arch_hash,))

    def pending(self) -> list[PendingChild]:
        """Children admitted but not finished (in flight, or in flight when a search stopped), in
        order of admission."""
        try:
            rows = self._fetch("SELECT space, arch, depth, replica FROM pending ORDER BY id")
            return [PendingChild(*r) for r in rows]
        except sqlite3.OperationalError:  # a store from before the table existed
            return []

    def set_update(self, child_ids: Sequence[int], seq: int, staleness: int) -> None:
        """The children that fed the update ``seq`` of their replica, and its staleness."""
        with self._transaction():
            self._db.executemany("UPDATE children SET update_seq = ?, staleness = ? WHERE id = ?",
                                 [(seq, staleness, i) for i in child_ids])

    def add_pushes(self, rows: Iterable[PushRow]) -> None:
        """A push reported twice (a retried report) keeps its first rows."""
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO pushes(replica, seq, shard, version_pulled, version,"
                " staleness, applied, pushed_at, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.replica, r.seq, r.shard, r.version_pulled, r.version, r.staleness, int(r.applied), now,
                  r.epoch) for r in rows])

    def add_restore(self, shard: int, version: int, cause: str) -> tuple[int, int]:
        """Record a shard restored to ``version``; returns its new epoch and the updates lost (those
        its previous epoch applied beyond ``version``, as far as the store has seen them yet)."""
        with self._transaction():
            epoch = 1 + self._db.execute("SELECT COALESCE(MAX(epoch), 0) FROM restores WHERE shard = ?",
                                         (shard,)).fetchone()[0]
            lost = self._db.execute("SELECT COUNT(*) FROM pushes WHERE shard = ? AND epoch = ? AND applied = 1"
                                    " AND version > ?", (shard, epoch - 1, version)).fetchone()[0]
            self._db.execute("INSERT INTO restores(shard, epoch, version, cause, lost, restored_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (shard, epoch, version, cause, lost, time.time()))
        return epoch, lost

    def lost_updates(self) -> int:
        """Shard updates lost to restores: applied by an epoch beyond the version the next epoch
        was restored to (counted from every push the store holds, late reports included)."""
        try:
            return int(self._fetch(
                "SELECT COUNT(*) FROM restores r JOIN pushes p ON p.shard = r.shard AND p.epoch = r.epoch - 1"
                " AND p.applied = 1 AND p.version > r.version")[0][0])
        except sqlite3.OperationalError:  # a store from before restores existed
            return 0

    def add_round(self, stats: "RoundStats", staleness: int) -> bool:
        """One controller update; False when it was recorded already (a retried report)."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO rounds(replica, seq, baseline, entropy, mean_reward, scored,"
                " depth, staleness, pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stats.replica, stats.seq, stats.baseline, stats.entropy, stats.mean_reward,
                 stats.scored, stats.depth, staleness, time.time()))
        return cursor.rowcount == 1

    def _transaction(self):
        return _Transaction(self)

    def batch(self):
        """One transaction for every write inside it (the recorder's one commit per call):
        the rows are all durable when it ends, and a call costs one fsync, not one per write."""
        return _Transaction(self)

    # ------------------------------------------------------------------ reading

    def _fetch(self, sql: str, args: Sequence[Any] = (), named: bool = False) -> list:
        """Rows of a query (``named``: rows read by column name); a damaged file is a one-line
        error naming it, not a traceback."""
        try:
            cursor = self._db.cursor()
            if named:
                cursor.row_factory = sqlite3.Row
            return cursor.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "no such" in str(exc):
                raise  # a table or column an older store lacks: the caller knows what to do
            raise UserInputError(f"{self.path}: not a readable nasps results store ({exc})") from None

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._fetch("SELECT key, value FROM meta")}

    def children(self, order: str = "id") -> list[ChildRow]:
        orders = {"id": "id", "reward": "reward IS NULL, reward DESC, id"}
        return self._children(f"ORDER BY {orders[order]}")

    def _children(self, clause: str, args: Sequence[Any] = ()) -> list[ChildRow]:
        return [_row(r) for r in self._fetch(f"SELECT * FROM children {clause}", args, named=True)]

    def count(self, where: str = "1", args: Sequence[Any] = ()) -> int:
        return int(self._fetch(f"SELECT COUNT(*) FROM children WHERE {where}", args)[0][0])

    def rounds(self) -> list[tuple]:
        """(replica, seq, baseline, entropy, mean_reward, scored, depth, staleness, pushed_at)."""
        try:
            return self._fetch("SELECT replica, seq, baseline, entropy, mean_reward, scored, depth,"
                               " staleness, pushed_at FROM rounds ORDER BY pushed_at")
        except sqlite3.OperationalError:  # a store from before the table existed
            return []

    def count_updates(self) -> int:
        """Controller updates recorded (one row each in ``rounds``)."""
        try:
            return int(self._fetch("SELECT COUNT(*) FROM rounds")[0][0])
        except sqlite3.OperationalError:
            return 0

    # The board follows the store with these: rows committed after the last it wrote.

    def children_since(self, last_id: int) -> list[ChildRow]:
        return self._children("WHERE id > ? ORDER BY id", (last_id,))

    def rounds_since(self, last_rowid: int) -> list[tuple[int, "RoundStats", int, float]]:
        """(rowid, stats, staleness, pushed_at) of each update, in the order they were committed."""
        try:
            rows = self._fetch("SELECT rowid, replica, seq, baseline, entropy, mean_reward, scored, depth,"
                               " staleness, pushed_at FROM rounds WHERE rowid > ? ORDER BY rowid", (last_rowid,))
        except sqlite3.OperationalError:  # a store from before the table existed
            return []
        return [(r[0], RoundStats(*r[1:8]), r[8], r[9]) for r in rows]

    def best_reward(self, up_to: int) -> Optional[float]:
        """The best reward of a trained child with an id up to ``up_to``."""
        return self._fetch("SELECT MAX(reward) FROM children WHERE id <= ? AND status IN ('ok', 'stopped')"
                           " AND cached = 0", (up_to,))[0][0]

    def count_rounds(self, up_to: int) -> int:
        try:
            return int(self._fetch("SELECT COUNT(*) FROM rounds WHERE rowid <= ?", (up_to,))[0][0])
        except sqlite3.OperationalError:
            return 0

    def last_child_id(self) -> int:
        return int(self._fetch("SELECT COALESCE(MAX(id), 0) FROM children")[0][0])

    def last_round_rowid(self) -> int:
        try:
            return int(self._fetch("SELECT COALESCE(MAX(rowid), 0) FROM rounds")[0][0])
        except sqlite3.OperationalError:
            return 0

    def pushes(self) -> list[PushRow]:
        rows = self._fetch("SELECT * FROM pushes ORDER BY pushed_at, replica, seq, shard", named=True)
        return [PushRow(r["replica"], r["seq"], r["shard"], r["version_pulled"], r["version"], r["staleness"],
                        bool(r["applied"]), _column(r, "epoch", 0)) for r in rows]

    def last_seq(self, replica: int) -> int:
        """The last update a replica's pushes were recorded for (0 if none)."""
        return int(self._fetch("SELECT COALESCE(MAX(seq), 0) FROM pushes WHERE replica = ?", (replica,))[0][0])


class _Transaction:
    """BEGIN ... COMMIT; nested inside another, it joins the outer one."""

    def __init__(self, store: "ResultsStore"):
        self.store = store

    def __enter__(self):
        if self.store._depth == 0:
            self.store._db.execute("BEGIN IMMEDIATE")
        self.store._depth += 1
        return self.store._db

    def __exit__(self, exc_type, exc, tb):
        self.store._depth -= 1
        if self.store._depth == 0:
            try:
                if exc_type is None:
                    self.store._db.execute("COMMIT")
            finally:
                if self.store._db.in_transaction:  # the commit failed, or something inside did
                    self.store._db.execute("ROLLBACK")
        return False


def _column(row: sqlite3.Row, name: str, default: Any = None) -> Any:
    """A column an older store may lack (read only, it was never brought up to date)."""
    return row[name] if name in row.keys() else default


def _row(r: sqlite3.Row) -> ChildRow:
    return ChildRow(r["id"], json.loads(r["arch"]), r["arch_hash"], r["reward"], r["status"], bool(r["cached"]),
                    json.loads(r["metrics"]), r["error"], r["replica"], r["controller_version"], r["staleness"],
                    r["worker"], r["started_at"], r["finished_at"], r["duration_s"], _column(r, "depth"),
                    _column(r, "update_seq"))
