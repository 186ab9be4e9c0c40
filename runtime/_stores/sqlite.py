"""The SQLite snapshot store: runs that survive the process, readable from others.

One file holds every run's newest snapshot (msgpack bytes) beside the fields
queries filter on. The database runs in WAL mode, so readers in this process
and in others never wait for the writer, and the writer never waits for them.

Step records: a snapshot a run actor encodes in parts (format 4, see
:class:`~runtime._stores.base.SnapshotParts`) is kept as its head in the
run's row and one row of ``run_parts`` per other part (a step record, a large
value, a finished foreach item), and each save writes only the head and the
parts that changed. So the bytes written for a run grow with its steps, not
with its steps squared. A read hands back the head and its parts concatenated,
which is the whole snapshot again; any other snapshot is kept whole in the row.

Writes go through one writer thread per store, with group commit: whatever
has queued up while a transaction ran goes into the next one. ``create`` and
``replace`` return once their transaction has committed; ``save`` returns at
once and calls ``on_commit`` when its records are committed. A commit that
cannot get the database lock is retried; the records stay in memory meanwhile,
so nothing is lost while another process holds the lock.

Durability: ``synchronous=NORMAL`` in WAL mode, so a committed run survives the
process being killed; a power failure may lose the last transactions.

Ownership: a store opened for writing registers an owner (this process) with a
heartbeat; runs record the owner that drives them. A run whose owner stopped
heartbeating (or whose process on this host is gone) is an orphan that another
runtime may claim and resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final, TypeVar

from runtime._errors import StoreError
from runtime._ids import new_id
from runtime._model import TERMINAL_STATUSES, UNFINISHED_STATUSES
from runtime._snapshot import is_parted, split_parts
from runtime._stores._writer import Done, GroupCommitWriter, Write, WriteKind, call, resolve
from runtime._stores.base import SnapshotRecord
from runtime._tracing import emit

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

HEARTBEAT_INTERVAL: Final = 2.0
"""Seconds between an owner's heartbeats."""

LEASE: Final = 10.0
"""Seconds without a heartbeat after which an owner's runs are orphans."""

LOCK_TIMEOUT: Final = 5.0
"""Seconds one attempt waits for another writer's lock (SQLite's busy timeout)."""

CREATE_TIMEOUT: Final = 30.0
"""Seconds ``create`` waits for its commit before giving up with a StoreError."""

CHECKPOINT_AT_LEAST_EVERY: Final = 2000
"""Transactions after which the WAL is checkpointed even while writes keep coming."""

BATCH: Final = 512
"""The most writes one transaction takes."""

_T = TypeVar("_T")

_UNFINISHED: Final = tuple(sorted(UNFINISHED_STATUSES))
_UNFINISHED_MARKS: Final = ", ".join("?" * len(_UNFINISHED))


def _sql_list(values: frozenset[str]) -> str:
    """A constant set of statuses as an SQL list of literals, for statements built once."""
    return ", ".join(f"'{value}'" for value in sorted(values))


_TERMINAL_SQL: Final = _sql_list(TERMINAL_STATUSES)

# Version 1, as every file starts: the migrations below take it on from there.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    trace_id    TEXT NOT NULL,
    owner_id    TEXT,
    snapshot    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS owners (
    owner_id     TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1 -> 2: step records. The parts of a snapshot kept in parts, beside its head in
    # the run's row. ``lineage`` names the encoder (one run actor) that wrote them: the
    # row's lineage says whose parts belong to its head (NULL: a snapshot kept whole,
    # no parts), and each encoder's changes go on top of its own parts only. A run's
    # parts go with it, whatever deletes it or stores it whole again.
    (
        "ALTER TABLE runs ADD COLUMN lineage INTEGER",
        """CREATE TABLE IF NOT EXISTS run_parts (
            run_id  TEXT NOT NULL,
            lineage INTEGER NOT NULL,
            key     TEXT NOT NULL,
            part    BLOB NOT NULL,
            PRIMARY KEY (run_id, lineage, key)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER IF NOT EXISTS run_parts_go_with_their_run AFTER DELETE ON runs
        BEGIN
            DELETE FROM run_parts WHERE run_id = old.run_id;
        END""",
        """CREATE TRIGGER IF NOT EXISTS run_parts_go_when_kept_whole
        AFTER UPDATE OF lineage ON runs
        WHEN old.lineage IS NOT NULL AND new.lineage IS NULL
        BEGIN
            DELETE FROM run_parts WHERE run_id = new.run_id;
        END""",
    ),
)
"""The steps that take a file from one schema version to the next, in order: step ``i``
takes version ``i + 1`` to ``i + 2``. A new file is made at version 1 and taken
through them all, so a file made new and one migrated in place are the same."""

SCHEMA_VERSION: Final = 1 + len(_MIGRATIONS)
"""The database schema this code writes (``PRAGMA user_version``)."""

_PARTS_FROM: Final = 2
"""The first schema version with the ``run_parts`` table."""

_PRUNE_INDEX: Final = "CREATE INDEX IF NOT EXISTS runs_by_end ON runs (status, updated_at)"
"""What pruning looks runs up by; made on every open, so that older files get it too."""

_INSERT_COLUMNS = (
    "run_id, workflow_id, status, seq, created_at, updated_at, trace_id, owner_id, snapshot, "
    "lineage"
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 500  # 10 variables a row, well under SQLite's limit of 32,766

# A newer snapshot replaces an older one, and nothing replaces a terminal one.
# Rows of one statement apply in order, so a run saved twice in a batch is fine.
_ON_CONFLICT_NEWER = f"""
ON CONFLICT (run_id) DO UPDATE SET
    status = excluded.status, seq = excluded.seq, updated_at = excluded.updated_at,
    snapshot = excluded.snapshot, lineage = excluded.lineage
WHERE excluded.seq > runs.seq AND runs.status NOT IN ({_TERMINAL_SQL})
"""

# The compare-and-set of replace(): the run's stored seq must be the one its
# caller read, its status not terminal, and the new seq above the stored one.
_REPLACE = f"""
UPDATE runs SET
    status = ?, seq = ?, updated_at = ?, snapshot = ?, owner_id = ?, lineage = NULL
WHERE run_id = ? AND seq = ? AND ? > seq AND status NOT IN ({_TERMINAL_SQL})
"""

_COLUMNS = (
    "r.run_id, r.workflow_id, r.seq, r.status, r.snapshot, r.created_at, r.updated_at, r.trace_id"
)
# A run's parts, those of its row's lineage, joined into one value: a read of runs is one
# statement with one row a run (one read transaction: a head and its parts always come
# from the same commit; and one step of the statement a run, not one a part).
_WITH_PARTS = (
    "CASE WHEN r.lineage IS NULL THEN NULL ELSE "  # kept whole: nothing to look up
    "(SELECT CAST(group_concat(p.part, x'') AS BLOB) FROM run_parts p "
    "WHERE p.run_id = r.run_id AND p.lineage = r.lineage) END"
)
_WITHOUT_PARTS = "NULL"
_RUNS = "runs r"


def _record(row: tuple[Any, ...]) -> SnapshotRecord:
    data = bytes(row[4])
    if row[-1] is not None and is_parted(data):
        data += row[-1]
    return SnapshotRecord(
        run_id=row[0],
        workflow_id=row[1],
        seq=row[2],
        status=row[3],
        data=data,
        created_at=row[5],
        updated_at=row[6],
        trace_id=row[7],
    )


class _PartWrites:
    """What one transaction does to a run's parts of one lineage: clear all first, then each."""

    __slots__ = ("clear", "parts")

    def __init__(self, clear: bool, parts: dict[str, bytes | None] | None = None) -> None:
        self.clear = clear
        self.parts: dict[str, bytes | None] = {} if parts is None else parts


def path_from_url(location: str | os.PathLike[str]) -> Path:
    """A database path from a path or a ``sqlite:///path`` URL."""
    text = os.fspath(location)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]  # sqlite:///relative or sqlite:////absolute
    elif text.startswith("sqlite://"):
        raise ValueError(
            f"a SQLite URL is sqlite:///relative/path or sqlite:////absolute: {text!r}"
        )
    if not text:
        raise ValueError("the SQLite store needs a file path")
    return Path(text)


class SQLiteStore:
    """Snapshots in a SQLite file, shared safely between threads and processes.

    Args:
        location: The database file, as a path or a ``sqlite:///path`` URL. It is
            created (mode 0600) if it does not exist.
        readonly: Open for reading only: no writer thread, no owner, and the file
            must exist.

    Raises:
        StoreError: if the file cannot be opened or created, is not a SQLite
            database, is a directory, cannot be written, or was written by a
            newer schema version (which is then never written).
    """

    durable = True

    def __init__(self, location: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = path_from_url(location)
        self.readonly = readonly
        self.owner_id = new_id()
        self._local = threading.local()
        self._closed = False
        self._writer: GroupCommitWriter | None = None
        self._reclaim = False  # pruned runs freed pages that the file may give back
        # On the writer thread: lineages a save of which was refused, so that their parts
        # in the file miss that save's changes: their next save writes every part. A
        # transaction works on a copy, kept once it commits (a retry starts again).
        self._broken: set[int] = set()
        self._broken_after: set[int] | None = None
        self._transactions = 0
        self._checkpointed_at = 0
        self._checkpoint_time = time.monotonic()
        self._parts_table = True
        if self.path.is_dir():
            raise StoreError(f"cannot use {self.path} as a run store: it is a directory")
        if self.path.exists() and not self.path.is_file():
            # A FIFO or a device would block the open, or read as garbage.
            raise StoreError(f"cannot use {self.path} as a run store: it is not a regular file")
        if readonly:
            if not self.path.exists():
                raise StoreError(f"no run store at {self.path}: the file does not exist")
            # A file not yet migrated has no parts to read (until a runtime migrates it).
            self._parts_table = self._check_schema(self._reader(), writable=False) >= _PARTS_FROM
            return
        self._create_file()
        connection = self._connect()
        try:
            self._prepare(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection  # the writer thread's alone
        self._writer = GroupCommitWriter(
            name="callboard-sqlite-writer",
            commit=lambda writes: self._commit(connection, writes),
            idle=self._checkpoint,
            give_up=self._give_up,
            finish=self._finish,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            batch=BATCH,
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    # --- opening --------------------------------------------------------------------

    def _create_file(self) -> None:
        if self.path.exists():
            # SQLite may reuse a descriptor this process already holds on the
            # file, so ask the operating system whether it can be written now.
            try:
                os.close(os.open(self.path, os.O_RDWR))
            except OSError as exc:
                raise StoreError(
                    f"cannot write to the run store {self.path}: {exc.strerror}"
                ) from exc
            return
        if not self.path.parent.exists():
            raise StoreError(
                f"cannot create the run store {self.path}: folder {self.path.parent} does not exist"
            )
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(f"cannot create the run store {self.path}: {exc.strerror}") from exc
        os.close(fd)

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rw'}"
        try:
            connection = sqlite3.connect(
                uri, uri=True, timeout=LOCK_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc
        return connection

    def _check_schema(self, connection: sqlite3.Connection, *, writable: bool) -> int:
        try:
            version: int = connection.execute("PRAGMA user_version").fetchone()[0]
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a callboard run store (SQLite says: {exc})"
            ) from exc
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store {self.path} was written by a newer callboard (schema version "
                f"{version}; this one knows version {SCHEMA_VERSION}); it is left untouched"
            )
        if not writable and version == 0:
            tables = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'runs'"
            ).fetchone()[0]
            if not tables:
                raise StoreError(f"{self.path} is not a callboard run store (it has no runs table)")
        return version

    def _prepare(self, connection: sqlite3.Connection) -> None:
        version = self._check_schema(connection, writable=True)
        try:
            if version == 0:
                # Before the first table: pruned runs give their pages back to the
                # file system (see _reclaim), instead of leaving the file at its peak.
                connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA journal_mode = WAL").fetchone()
            connection.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints run when the writer is idle (see _checkpoint), not inside
            # whichever commit happens to cross SQLite's page threshold.
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute("BEGIN IMMEDIATE")
            # Read again under the write lock: another process may have just made or
            # migrated the file.
            version = self._check_schema(connection, writable=True)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                version = 1
            for steps in _MIGRATIONS[version - 1 :]:
                for statement in steps:
                    connection.execute(statement)
            if version != SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute(_PRUNE_INDEX)
            connection.execute(
                "INSERT OR REPLACE INTO owners (owner_id, host, pid, heartbeat_at) "
                "VALUES (?, ?, ?, ?)",
                (self.owner_id, socket.gethostname(), os.getpid(), time.time()),
            )
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
                raise StoreError(f"cannot write to the run store {self.path}: {exc}") from exc
            raise StoreError(f"cannot prepare the run store {self.path}: {exc}") from exc

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect(readonly=True)
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._reader()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the run store {self.path}: {exc}") from exc

    # --- the store interface ------------------------------------------------------

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run, committed when this returns; ``False`` if its id is taken.

        Raises:
            StoreError: if the commit did not happen within ``CREATE_TIMEOUT``
                (the database stayed locked) or the store is read-only or closed.
        """
        future: Future[bool] = Future()
        write = self._submit("create", record, resolve(future))
        return self._committed(write, future, f"the run {record.run_id!r} was not recorded")

    def replace(self, record: SnapshotRecord, expected_seq: int) -> bool:
        """Store ``record`` if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set, committed when it returns ``True``: it fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs or is
        not below ``record.seq``, or its status is terminal. The run's owner
        becomes this store's owner: whoever replaced the run drives it on.

        Raises:
            StoreError: if the commit did not happen within ``CREATE_TIMEOUT``
                (the database stayed locked) or the store is read-only or closed.
        """
        future: Future[bool] = Future()
        write = self._submit("replace", (record, expected_seq), resolve(future))
        return self._committed(
            write, future, f"the new snapshot of run {record.run_id!r} was not stored"
        )

    def _committed(self, write: Write, future: Future[bool], not_done: str) -> bool:
        """Wait for a write that its caller must know committed (or not) before going on."""
        try:
            return future.result(CREATE_TIMEOUT)
        except TimeoutError as exc:
            if not write.abandon():  # taken by a commit just now: its outcome follows
                return future.result(CREATE_TIMEOUT)
            raise StoreError(
                f"the run store {self.path} stayed locked for {CREATE_TIMEOUT} s; {not_done}"
            ) from exc

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Queue newer snapshots of existing runs; ``on_commit`` runs once they are committed.

        A record older than the stored one (by ``seq``), or for a run already
        terminal, changes nothing. A save is never reported committed before it
        is: while the disk is full or the database locked it waits, and is
        tried again; one the database refuses calls ``on_error`` instead.
        """
        self._submit("save", list(records), _reporting(on_commit, on_error))

    def delete(self, run_id: str) -> bool:
        """Delete a run; return whether it existed."""
        future: Future[bool] = Future()
        self._submit("delete", run_id, resolve(future))
        return future.result(CREATE_TIMEOUT)

    def prune(
        self,
        *,
        ended_before: float | None = None,
        keep: int | None = None,
        status: str | None = None,
    ) -> int:
        """Delete ended runs older than ``ended_before``, then all but the newest ``keep``.

        Their space goes back to the file system (a file created before this
        version keeps its size, and reuses the pages freed).

        Raises:
            StoreError: if the store is read-only or closed, or stayed locked.
        """
        statuses = TERMINAL_STATUSES if status is None else TERMINAL_STATUSES & {status}
        if not statuses:
            return 0
        future: Future[int] = Future()
        self._submit("prune", (ended_before, keep, sorted(statuses)), resolve(future))
        return future.result(CREATE_TIMEOUT)

    def claim(self, run_id: str, previous_owner: str | None) -> bool:
        """Take over an orphaned run if its owner is still ``previous_owner``."""
        future: Future[bool] = Future()
        self._submit("claim", (run_id, previous_owner), resolve(future))
        return future.result(CREATE_TIMEOUT)

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest committed record of a run, or ``None``."""
        found = self._select(_RUNS, "WHERE r.run_id = ?", (run_id,))
        return found[0][0] if found else None

    def unfinished(self) -> list[SnapshotRecord]:
        """Records of runs that are ``pending``, ``running`` or ``waiting``, whoever drives them.

        A ``suspended`` run is not among them: it waits for a resume, not for a runtime.
        """
        found = self._select(_RUNS, f"WHERE r.status IN ({_UNFINISHED_MARKS})", _UNFINISHED)
        return [record for record, _ in found]

    def _select(
        self,
        source: str,
        where: str,
        params: Sequence[Any],
        *,
        extra: str = "",
        order: str = "",
    ) -> list[tuple[SnapshotRecord, tuple[Any, ...]]]:
        """Records of the runs ``r`` in ``source`` (a FROM clause) that ``where`` keeps.

        Each comes with its row. ``extra`` names more columns (after the
        record's eight), ``order`` orders the runs.
        """
        parts = _WITH_PARTS if self._parts_table else _WITHOUT_PARTS
        query = f"SELECT {_COLUMNS}{extra}, {parts} FROM {source} {where} {order}"
        with self._reading() as connection:
            rows = connection.execute(query, params).fetchall()
        if not self._parts_table and any(is_parted(row[4]) for row in rows):
            # Written in parts since this reader opened a file not yet migrated.
            self._parts_table = True
            return self._select(source, where, params, extra=extra, order=order)
        return [(_record(row), row) for row in rows]

    def orphans(
        self, workflow_ids: Sequence[str] | None = None
    ) -> list[tuple[SnapshotRecord, str | None]]:
        """Unfinished runs whose owner is gone, with that owner's id (to claim them by).

        Unfinished is ``pending``, ``running`` or ``waiting``; a ``suspended`` run
        is never an orphan, whoever owned it.

        An owner is gone when its heartbeat is older than ``LEASE`` seconds, or
        when it is a process on this host that no longer exists.
        """
        with self._reading() as connection:
            owners = connection.execute("SELECT owner_id, host, pid, heartbeat_at FROM owners")
            alive = {
                owner_id
                for owner_id, host, pid, heartbeat_at in owners.fetchall()
                if _alive(host, pid, heartbeat_at)
            }
        where = f"WHERE r.status IN ({_UNFINISHED_MARKS})"
        params: list[Any] = list(_UNFINISHED)
        if workflow_ids is not None:
            where += f" AND r.workflow_id IN ({', '.join('?' * len(workflow_ids))})"
            params.extend(workflow_ids)
        found = self._select(
            _RUNS, where, params, extra=", r.owner_id", order="ORDER BY r.created_at"
        )
        return [
            (record, row[8])
            for record, row in found
            if row[8] != self.owner_id and row[8] not in alive
        ]

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[SnapshotRecord], int]:
        """Runs, newest first, filtered; and how many match in all."""
        where, params = _filters(workflow_id, status, from_date, to_date)
        with self._reading() as connection:
            total: int = connection.execute(f"SELECT count(*) FROM runs{where}", params).fetchone()[
                0
            ]
        found = self._select(
            f"(SELECT * FROM runs{where} ORDER BY created_at DESC, run_id LIMIT ? OFFSET ?) r",
            "",
            [*params, -1 if limit is None else limit, offset],
            order="ORDER BY r.created_at DESC, r.run_id",
        )
        return [record for record, _ in found], total

    def close(self) -> None:
        """Finish the queued writes and end the writer thread; reads go on working."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.stop(CREATE_TIMEOUT)

    # --- the writer ---------------------------------------------------------------

    def _submit(self, kind: WriteKind, payload: Any, done: Done) -> Write:
        if self.readonly:
            raise StoreError(f"the run store {self.path} is open read-only")
        if self._closed or self._writer is None or not self._writer.is_alive():
            raise StoreError(f"the run store {self.path} is closed")
        return self._writer.submit(kind, payload, done)

    def _finish(self) -> None:
        """On the writer thread, last: leave the owners table and fold the WAL back in."""
        connection = self._connection
        with contextlib.suppress(sqlite3.Error):
            connection.execute("DELETE FROM owners WHERE owner_id = ?", (self.owner_id,))
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()

    def _give_up(self, writes: list[Write]) -> None:
        self._fail(writes, StoreError(f"the run store {self.path} stayed locked"))

    def _checkpoint(self, idle: bool) -> None:
        """Copy the WAL back into the database while nothing waits, or when it grew long.

        Pages that pruned runs freed are handed back first (an incremental
        vacuum), so that the checkpoint can shrink the file.
        """
        if self._reclaim and idle:
            self._reclaim = False
            with contextlib.suppress(sqlite3.Error):
                # executescript steps the pragma to its end; execute() would free one page.
                self._connection.executescript("PRAGMA incremental_vacuum;")
                self._transactions += 1
        since = self._transactions - self._checkpointed_at
        due = since >= CHECKPOINT_AT_LEAST_EVERY or (
            idle and since and (since >= 100 or time.monotonic() - self._checkpoint_time >= 1.0)
        )
        if due:
            with contextlib.suppress(sqlite3.Error):  # PASSIVE never blocks; a miss waits
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._checkpointed_at = self._transactions
            self._checkpoint_time = time.monotonic()

    def _commit(self, connection: sqlite3.Connection, writes: list[Write]) -> list[Write]:
        """Run the writes in one transaction and report each outcome; return those to try again.

        A batch that fails for a reason that passes (the database is locked, the
        disk is full, an I/O error) reports nothing and is tried again: no write
        is acknowledged before it is committed. A batch that fails for a reason
        of its own (a record the database rejects) is split, and each write
        tried alone, so that only the bad one fails.
        """
        try:
            results = self._transaction(connection, writes)
        except Exception as exc:  # sqlite3.Error, or a fault of ours: the writer lives on
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            for write in writes:
                write.release()  # not committed: a caller may still give up on it
            if _locked(exc):
                emit(logging.WARNING, "store_locked", path=str(self.path), waiting=len(writes))
                return writes
            if _passing(exc):
                emit(
                    logging.WARNING,
                    "store_write_retrying",
                    path=str(self.path),
                    waiting=len(writes),
                    error=str(exc),
                )
                return writes
            if len(writes) > 1:
                return self._commit_alone(connection, writes)
            self._fail(writes, StoreError(f"cannot write to the run store {self.path}: {exc}"))
            return []
        self._transactions += 1
        if self._broken_after is not None:
            self._broken = self._broken_after
        # Callers blocked in create() first; then the callbacks that tell actors.
        creates = [write for write in writes if write.kind == "create" and not write.abandoned]
        for write in creates:
            call(write.done, results[id(write)], None)
        for write in writes:
            if write.kind != "create":
                call(write.done, results.get(id(write)), None)
        return []

    def _commit_alone(self, connection: sqlite3.Connection, writes: list[Write]) -> list[Write]:
        """Commit each write in a transaction of its own; return those to try again."""
        for index, write in enumerate(writes):
            if self._commit(connection, [write]):
                # The failure passes: this write and the rest wait, in order, for the retry.
                return writes[index:]
        return []

    def _transaction(self, connection: sqlite3.Connection, writes: list[Write]) -> dict[int, Any]:
        """The writes in one committed transaction; each write's result by ``id``.

        Creates go first, then every save, each kind in one multi-row statement
        (the sqlite3 module releases and retakes the GIL around every call, which
        under load costs more than the SQL itself); then the other writes
        (replace, claim, delete) in the order they came.
        """
        creates = [write for write in writes if write.kind == "create" and not write.abandoned]
        saves = [record for write in writes if write.kind == "save" for record in write.payload]
        others = [write for write in writes if write.kind not in ("create", "save")]
        results: dict[int, Any] = {}
        self._broken_after = None
        connection.execute("BEGIN IMMEDIATE")
        inserted = self._insert(connection, [write.payload for write in creates])
        self._save(connection, saves)
        for write in others:
            results[id(write)] = self._apply(connection, write)
        # A create whose caller gave up meanwhile must not commit: take() decides.
        for write in creates:
            run_id = write.payload.run_id
            if not write.take() and run_id in inserted:
                connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            results[id(write)] = run_id in inserted
        connection.execute("COMMIT")
        return results

    def _insert(self, connection: sqlite3.Connection, records: list[SnapshotRecord]) -> set[str]:
        """Insert new runs; return the ids that were new (the others are taken)."""
        inserted: set[str] = set()
        for chunk in _chunks(records):
            rows = connection.execute(
                f"INSERT INTO runs ({_INSERT_COLUMNS}) VALUES "
                + ", ".join([_ROW] * len(chunk))
                + " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
                [value for record in chunk for value in self._row(record, record.data, None)],
            ).fetchall()
            inserted.update(row[0] for row in rows)
        return inserted

    def _save(self, connection: sqlite3.Connection, records: list[SnapshotRecord]) -> None:
        """Store newer snapshots: whole ones as they are, parted ones by what changed.

        Every record's row goes in one multi-row statement whose condition
        leaves out a record not newer than its run's row, or for an ended run
        (a trigger drops the parts of a row stored whole again). The parts of
        a record in parts are written whatever became of its row, under its
        lineage: they are what its encoder's next change goes on top of, and
        a read joins a row only with the parts of the row's own lineage, so a
        stale record's parts are never read. The parts of the batch take one
        more statement (and, rarely, one that deletes some).
        """
        if not records:
            return
        rows = [
            self._row(record, record.data, None)
            if record.parts is None
            else self._row(record, record.parts.head, record.parts.lineage)
            for record in records
        ]
        for chunk in _chunks(rows):
            connection.execute(
                f"INSERT INTO runs ({_INSERT_COLUMNS}) VALUES "
                + ", ".join([_ROW] * len(chunk))
                + _ON_CONFLICT_NEWER,
                [value for row in chunk for value in row],
            )
        writes: dict[tuple[str, int], _PartWrites] = {}
        broken = self._broken_after = set(self._broken)
        for record in records:
            change = record.parts
            if change is None:
                # Stored whole (unless stale): the parts of earlier records in this batch
                # would be the row's no longer. Their encoders write all parts next time.
                for key in [key for key in writes if key[0] == record.run_id]:
                    del writes[key]
                    broken.add(key[1])
                continue
            key = (record.run_id, change.lineage)
            if change.base_seq is not None and change.lineage not in broken:
                parts = writes.setdefault(key, _PartWrites(clear=False)).parts
                for part_key in change.dropped:
                    parts[part_key] = None
                parts.update(change.changed)
                continue
            if change.base_seq is None:
                every = list(change.changed)
            else:  # its lineage's parts missed a refused save: write them all
                every = split_parts(record.data, len(change.head))
                broken.discard(change.lineage)
            writes[key] = _PartWrites(clear=True, parts=dict(every))
        if writes:
            self._write_parts(connection, writes)

    def _write_parts(
        self, connection: sqlite3.Connection, writes: dict[tuple[str, int], _PartWrites]
    ) -> None:
        # Parts written anew replace those their lineage had, and those of every lineage
        # but the row's (whose head may be this very record, or a newer one's if this
        # record was stale): another writer's parts are left alone while its row reads them.
        cleared = [key for key, write in writes.items() if write.clear]
        for chunk in _chunks(cleared):
            marks = ", ".join("?" * len(chunk))
            connection.execute(
                f"DELETE FROM run_parts WHERE run_id IN ({marks}) AND (lineage IN ({marks}) "
                "OR lineage IS NOT "
                "(SELECT r.lineage FROM runs r WHERE r.run_id = run_parts.run_id))",
                [run_id for run_id, _ in chunk] + [lineage for _, lineage in chunk],
            )
        gone = [
            (run_id, lineage, key)
            for (run_id, lineage), write in writes.items()
            if not write.clear
            for key, part in write.parts.items()
            if part is None
        ]
        for triples in _chunks(gone):
            connection.execute(
                "DELETE FROM run_parts WHERE (run_id, lineage, key) IN (VALUES "
                + ", ".join(["(?, ?, ?)"] * len(triples))
                + ")",
                [value for triple in triples for value in triple],
            )
        new = [
            (run_id, lineage, key, part)
            for (run_id, lineage), write in writes.items()
            for key, part in write.parts.items()
            if part is not None
        ]
        for rows in _chunks(new):
            connection.execute(
                "INSERT OR REPLACE INTO run_parts (run_id, lineage, key, part) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(rows)),
                [value for row in rows for value in row],
            )

    def _row(self, r: SnapshotRecord, blob: bytes, lineage: int | None) -> tuple[Any, ...]:
        return (
            r.run_id,
            r.workflow_id,
            r.status,
            r.seq,
            r.created_at,
            r.updated_at,
            r.trace_id,
            self.owner_id,
            blob,
            lineage,
        )

    def _apply(self, connection: sqlite3.Connection, write: Write) -> Any:
        kind, payload = write.kind, write.payload
        if kind == "delete":
            return connection.execute("DELETE FROM runs WHERE run_id = ?", (payload,)).rowcount == 1
        if kind == "replace":
            record, expected_seq = payload
            # A replace whose caller gave up waiting must not happen: take() decides.
            if not write.take():
                return False
            cursor = connection.execute(
                _REPLACE,
                (
                    record.status,
                    record.seq,
                    record.updated_at,
                    record.data,
                    self.owner_id,
                    record.run_id,
                    expected_seq,
                    record.seq,
                ),
            )
            return cursor.rowcount == 1  # kept whole: a trigger drops the parts it had
        if kind == "claim":
            run_id, previous = payload
            cursor = connection.execute(
                "UPDATE runs SET owner_id = ? WHERE run_id = ? AND owner_id IS ? "
                f"AND status IN ({_UNFINISHED_MARKS})",
                (self.owner_id, run_id, previous, *_UNFINISHED),
            )
            return cursor.rowcount == 1
        if kind == "prune":
            ended_before, keep, statuses = payload
            marks = ", ".join("?" * len(statuses))
            deleted = 0
            if ended_before is not None:
                deleted += connection.execute(
                    f"DELETE FROM runs WHERE status IN ({marks}) AND updated_at < ?",
                    (*statuses, ended_before),
                ).rowcount
            if keep is not None:
                deleted += connection.execute(
                    "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs "
                    f"WHERE status IN ({marks}) ORDER BY updated_at DESC LIMIT -1 OFFSET ?)",
                    (*statuses, keep),
                ).rowcount
            self._reclaim = self._reclaim or deleted > 0
            return deleted
        if kind == "heartbeat":
            connection.execute(
                "UPDATE owners SET heartbeat_at = ? WHERE owner_id = ?",
                (time.time(), self.owner_id),
            )
            return None
        raise AssertionError(f"unknown write {kind!r}")

    def _fail(self, writes: list[Write], error: StoreError) -> None:
        emit(logging.ERROR, "store_write_failed", path=str(self.path), error=str(error))
        for write in writes:
            if write.kind == "save":
                # The parts of these lineages miss the changes of these records.
                self._broken.update(r.parts.lineage for r in write.payload if r.parts is not None)
        for write in writes:
            call(write.done, None, error)


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        yield items[start : start + _ROWS_PER_STATEMENT]


def _filters(
    workflow_id: str | None, status: str | None, from_date: float | None, to_date: float | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("workflow_id = ?", workflow_id),
        ("status = ?", status),
        ("created_at >= ?", from_date),
        ("created_at <= ?", to_date),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _alive(host: str, pid: int, heartbeat_at: float) -> bool:
    if time.time() - heartbeat_at > LEASE:
        return False
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


_PASSING_CODES: Final = frozenset(
    {
        5,  # SQLITE_BUSY: another connection writes
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        10,  # SQLITE_IOERR (and its extended codes)
        13,  # SQLITE_FULL: the disk (or max_page_count) is full
        14,  # SQLITE_CANTOPEN: a journal or WAL file cannot be opened just now
        15,  # SQLITE_PROTOCOL
    }
)


def _passing(exc: BaseException) -> bool:
    """Whether a failed transaction may succeed if tried again as it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _PASSING_CODES


def _reporting(
    on_commit: Callable[[], None] | None, on_error: Callable[[BaseException], None] | None
) -> Done:
    """A save's ``done``: ``on_commit`` once committed, ``on_error`` if it never will be."""

    def done(_result: Any, error: BaseException | None) -> None:
        if error is None:
            if on_commit is not None:
                on_commit()
        elif on_error is not None:
            on_error(error)

    return done


def _locked(exc: BaseException) -> bool:
    """Whether a transaction failed because another connection holds the database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )
