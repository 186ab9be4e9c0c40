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

Sharing: a store opened for writing is a worker of the file (see
:class:`~runtime._stores.base.SharedStore`): it registers a row with a
heartbeat, holds the runs it creates or claims, and conditions every write of
a held run on its owner and epoch, so that a process that stalled past its
lease and lost its runs to others changes nothing when it wakes. A worker is
dead once its heartbeat is older than its lease, or, on this host, once its
process is gone; any worker then hands its runs back to the queue, where the
next claim takes them. Heartbeats and that judgement read callboard's clock
(``runtime._clock``), so that a test kit's virtual clock moves leases too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final, TypeVar

from runtime import _clock
from runtime._errors import QueueFullError, StoreError, StoreUnavailableError
from runtime._ids import new_id
from runtime._model import SETTLED_STATUSES, TERMINAL_STATUSES, UNFINISHED_STATUSES, RunStatus
from runtime._queue import Admission, Bucket, QueueLimits, bucket_key, rank, restart_refused
from runtime._snapshot import is_parted
from runtime._stores._backup import StoreBackup, backup_sqlite
from runtime._stores._parts import PartWrites, plan_parts
from runtime._stores._writer import (
    Done,
    GroupCommitWriter,
    Refusals,
    Write,
    WriteKind,
    WriterStoppedError,
    call,
    committed,
    ignore,
    refuse_at_once,
    refused_error,
    resolve,
)
from runtime._stores.base import (
    DEFAULT_LEASE,
    PRUNE_CHUNK,
    RESUME_REQUESTS_READ,
    Claimed,
    QueueStats,
    ResumeRequest,
    ResumeRequested,
    RunFencedError,
    SnapshotRecord,
    WorkerInfo,
    check_lease,
    process_alive,
    queue_stats,
    refuse_upgrade_beside_older,
    status_set,
    supersedes,
    this_host,
)
from runtime._tracing import emit

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "read_uri"]

IDLE_INTERVAL: Final = 2.0
"""Seconds between two looks, while no write comes, at whether the WAL needs a checkpoint."""

LEASE: Final = DEFAULT_LEASE
"""Seconds without a heartbeat after which a worker's runs go back to the queue."""

LOCK_TIMEOUT: Final = 5.0
"""Seconds one attempt waits for another writer's lock (SQLite's busy timeout)."""

CREATE_TIMEOUT: Final = 30.0
"""Seconds ``create`` waits for its commit before giving up with a StoreError."""

MOVED_EVERY: Final = 1.0
"""Seconds between two looks at whether the file at the store's path is still the one it
opened (see ``SQLiteStore._moved``): a look is a ``stat``, which lets the interpreter lock go."""

RECLAIM_PAGES: Final = 2048
"""The most free pages one idle moment of the writer gives back to the file system (8 MiB
of 4 KiB pages), after a prune: the rest go at the next."""

CHECKPOINT_AT_LEAST_EVERY: Final = 200
"""Transactions after which the WAL is checkpointed even while writes keep coming.

Otherwise the writer checkpoints when it finds nothing queued after a commit. Since
a run's first step no longer waits for a commit, a stream of runs can keep the queue
from ever being empty for hundreds of transactions: at 2,000 the WAL grew to 20-43 MB
through 2,000 runs in bursts of 500 (``test_a_steady_stream_of_runs_keeps_the_wal_small``),
where it stays at 6-15 MB at 200, with no change in W2's runs/s. The checkpoint ends
under the store's write lock, so a create on its caller's thread cannot keep it from
folding the log back whole (its first pass goes beside them: ``_checkpoint_beside_writes``)."""

BATCH: Final = 512
"""The most writes one transaction takes."""

WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to when it starts over (SQLite's ``journal_size_limit``).

The WAL grows while something keeps a checkpoint from folding it back (a
reader holding a snapshot, another process's long transaction) and is then
reused from its start, but SQLite keeps the file at its peak size unless told
a limit: a burst beside a slow reader would hold that disk for the rest of the
runtime's life. Well above what it uses under load (8-17 MB through 30,000
runs started in bursts of 2,000, as W2 does), so that a busy store does not cut
and grow it over and over.
"""

_T = TypeVar("_T")

_UNFINISHED: Final = tuple(sorted(UNFINISHED_STATUSES))
_UNFINISHED_MARKS: Final = ", ".join("?" * len(_UNFINISHED))


def _sql_list(values: frozenset[str]) -> str:
    """A constant set of statuses as an SQL list of literals, for statements built once."""
    return ", ".join(f"'{value}'" for value in sorted(values))


_TERMINAL_SQL: Final = _sql_list(TERMINAL_STATUSES)
_SETTLED_SQL: Final = _sql_list(SETTLED_STATUSES)
_UNFINISHED_SQL: Final = _sql_list(UNFINISHED_STATUSES)
_UNFINISHED_OR_SUSPENDED_SQL: Final = _sql_list(UNFINISHED_STATUSES | {RunStatus.SUSPENDED.value})

_DEADLINE_KEPT: Final = "deadline IS NOT NULL AND owner_id IS NULL"
"""The predicate of the index of deadlines, word for word in the queries that read it."""
_BY_DEADLINE: Final = "INDEXED BY runs_by_deadline"
"""The runs, read through the index of deadlines: without statistics SQLite's planner took
the index by status, and read every run in progress, for the few nobody holds."""

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

_QUEUES_TABLE: Final = """CREATE TABLE IF NOT EXISTS queues (
    name            TEXT PRIMARY KEY,
    concurrency     INTEGER,
    key_concurrency INTEGER,
    rate_count      INTEGER,
    rate_period     REAL,
    max_queued      INTEGER,
    updated_at      REAL NOT NULL
)"""

_RESUME_REQUESTS_TABLE: Final = """CREATE TABLE IF NOT EXISTS resume_requests (
    run_id       TEXT NOT NULL,
    path         TEXT NOT NULL,
    data         BLOB NOT NULL,
    request_id   TEXT NOT NULL,
    requested_at REAL NOT NULL,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID"""

_EXECUTING_COLUMN: Final = "ALTER TABLE owners ADD COLUMN executing TEXT NOT NULL DEFAULT '[]'"

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
    # 2 -> 3: runs are held by a worker with an epoch, sleep until a
    # time any worker can see, and carry a cancel request; workers say what
    # they run. A run that has settled is nobody's.
    (
        "ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN wake_at REAL",
        "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE owners ADD COLUMN role TEXT NOT NULL DEFAULT 'both'",
        "ALTER TABLE owners ADD COLUMN workflows TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE owners ADD COLUMN concurrency INTEGER",
        f"ALTER TABLE owners ADD COLUMN lease REAL NOT NULL DEFAULT {LEASE}",
        "ALTER TABLE owners ADD COLUMN started_at REAL NOT NULL DEFAULT 0",
        f"UPDATE runs SET owner_id = NULL WHERE status NOT IN ({_UNFINISHED_SQL})",
        "CREATE INDEX runs_queued ON runs (created_at) "
        f"WHERE owner_id IS NULL AND status IN ({_UNFINISHED_SQL})",
        "CREATE INDEX runs_by_owner ON runs (owner_id) WHERE owner_id IS NOT NULL",
    ),
    # queues: a run's queue, key and priority, fixed at its start; its rank (its start
    # time less its priority's head start, see runtime._queue.rank), which claims go by;
    # when it first started executing (what rate limits count); and each queue's limits.
    (
        "ALTER TABLE runs ADD COLUMN queue TEXT",
        "ALTER TABLE runs ADD COLUMN queue_key TEXT",
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN rank REAL",
        "ALTER TABLE runs ADD COLUMN started_at REAL",
        "UPDATE runs SET rank = created_at",
        "CREATE INDEX runs_queued_by_rank ON runs (rank) "
        f"WHERE owner_id IS NULL AND status IN ({_UNFINISHED_SQL})",
        "CREATE INDEX runs_in_queue ON runs (queue, queue_key, started_at) WHERE queue IS NOT NULL",
        _QUEUES_TABLE,
    ),
    # resource ids. The user or tenant a run was started for, written with its
    # first row; listing by it (and by status) reads the index.
    (
        "ALTER TABLE runs ADD COLUMN resource_id TEXT",
        "CREATE INDEX runs_by_resource ON runs (resource_id, created_at) "
        "WHERE resource_id IS NOT NULL",
    ),
    # idempotent starts and schedules: a run remembers the idempotency key it was
    # started with, one run per key and workflow (the unique index decides between two
    # starts that race); schedules keep their definition and where they are.
    (
        "ALTER TABLE runs ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (workflow_id, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS schedules (
            schedule_id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL,
            cron        TEXT NOT NULL,
            timezone    TEXT NOT NULL,
            input       TEXT NOT NULL,
            catch_up    TEXT NOT NULL,
            overlap     TEXT NOT NULL,
            paused      INTEGER NOT NULL DEFAULT 0,
            created_at  REAL NOT NULL,
            last_tick   REAL,
            last_run_id TEXT,
            buffered    REAL
        )""",
    ),
    # 6 -> 7: snapshots in parts hold kinds of part an older callboard cannot read (a
    # foreach over a nested workflow's items and outputs, see runtime._snapshot.EACH_SCOPE;
    # the run's suspended steps, 64 to a part): no table changes, the version says so
    # and an older callboard refuses the file.
    (),
    # 7 -> 8: run deadlines (run_timeout). An unfinished run's deadline, once it began to
    # execute (NULL once it ended), so that whichever worker is alive cancels the runs
    # nobody holds whose time is up; the index holds only those nobody holds.
    (
        "ALTER TABLE runs ADD COLUMN deadline REAL",
        f"CREATE INDEX runs_by_deadline ON runs (deadline) WHERE {_DEADLINE_KEPT}",
    ),
    # 8 -> 9: resume requests. A resume of one suspension of a run that runs on, from a
    # process that does not drive it, waits here for the worker that does (see
    # ResumeRequestStore.request_resume); ``taken_seq`` is the seq of the run's last
    # record that resumed one of its suspensions (or of its last compare-and-set), which
    # a request is checked against. A run's requests go with it. Snapshots in parts also
    # hold a kind of part an older callboard cannot read: the ids of the run's suspensions
    # (runtime._snapshot.suspension_of), by which a request read of one is never carried
    # out on a later one at the same path.
    (
        "ALTER TABLE runs ADD COLUMN taken_seq INTEGER NOT NULL DEFAULT 0",
        _RESUME_REQUESTS_TABLE,
        """CREATE TRIGGER IF NOT EXISTS resume_requests_go_with_their_run AFTER DELETE ON runs
        BEGIN
            DELETE FROM resume_requests WHERE run_id = old.run_id;
        END""",
    ),
    # 9 -> 10: held queue slots. A worker names the runs whose step bodies, let go of by
    # their runs (cancelled, timed out), run on in it: each holds its run's slot in its
    # queue until it returns (see claim's ``executing``), which ``queue_stats`` shows.
    # And restarts count in their queues' rate windows: a run restarted and not yet
    # claimed is ``restarting``, and its claim counts its start as a first start's.
    (_EXECUTING_COLUMN, "ALTER TABLE runs ADD COLUMN restarting INTEGER NOT NULL DEFAULT 0"),
)
"""The steps that take a file from one schema version to the next, in order: step ``i``
takes version ``i + 1`` to ``i + 2``. A new file is made at version 1 and taken
through them all, so a file made new and one migrated in place are the same."""

SCHEMA_VERSION: Final = 1 + len(_MIGRATIONS)
"""The database schema this code writes (``PRAGMA user_version``)."""

_PARTS_FROM: Final = 2
"""The first schema version with the ``run_parts`` table."""

_SHARING_FROM: Final = 3
"""The first schema version with claims (``epoch``, ``wake_at``, worker columns)."""

_QUEUES_FROM: Final = 2 + next(
    index for index, steps in enumerate(_MIGRATIONS) if _QUEUES_TABLE in steps
)
"""The first schema version with queues (the ``queue`` columns, the ``queues`` table)."""

_EXECUTING_FROM: Final = 2 + next(
    index for index, steps in enumerate(_MIGRATIONS) if _EXECUTING_COLUMN in steps
)
"""The first schema version whose workers name the runs their let-go step bodies hold."""

_RESOURCES_FROM: Final = 2 + next(
    index
    for index, steps in enumerate(_MIGRATIONS)
    if "ALTER TABLE runs ADD COLUMN resource_id TEXT" in steps
)
"""The first schema version with the ``resource_id`` column."""

_REQUESTS_FROM: Final = 2 + next(
    index for index, steps in enumerate(_MIGRATIONS) if _RESUME_REQUESTS_TABLE in steps
)
"""The first schema version with resume requests (the ``resume_requests`` table)."""

_CLAIM_ROUNDS: Final = 16
"""The most rounds of one claim through queues (each round skips what filled in the last)."""

_PRUNE_INDEX: Final = "CREATE INDEX IF NOT EXISTS runs_by_end ON runs (status, updated_at)"
"""What pruning looks runs up by; made on every open, so that older files get it too."""

_INSERT_COLUMNS = (
    "run_id, workflow_id, status, seq, created_at, updated_at, trace_id, owner_id, snapshot, "
    "lineage, epoch, wake_at, resource_id, deadline"
)
# The sqlite3 module (3.11) puts every bound value but an int, float, str or bytearray
# through its adapter protocol, which raises and clears an AttributeError: some 3,000
# instructions a value, eight in a create. So a row binds no None and no bytes: a
# nullable column takes a value of a storage class it never holds, which NULLIF turns
# into NULL (SQLite never finds values of two storage classes equal), and a blob goes
# as a bytearray (see _row). ``lineage``, always NULL in a create, is written as NULL.
_NO_TEXT: Final = 0
"""What a row binds for NULL in a text column (owner_id, resource_id, queue, ...)."""
_NO_NUMBER: Final = ""
"""What a row binds for NULL in a number column (lineage, wake_at, deadline)."""
_ROW = "(" + ", ".join(["?"] * 14) + ")"
# What the rows of _ROW stand for, in the order of _INSERT_COLUMNS: a statement of
# several rows selects them from its VALUES. A NULLIF in each row was compiled as a
# constant SQLite hoists out of the loop, compared with each hoisted before it: a batch
# of 64 rows took twice as long to compile, and the cache of statements is small.
_ROW_VALUES = (
    "column1, column2, column3, column4, column5, column6, column7, NULLIF(column8, 0), "
    "column9, NULLIF(column10, ''), column11, NULLIF(column12, ''), NULLIF(column13, 0), "
    "NULLIF(column14, '')"
)
_CREATE_COLUMNS = _INSERT_COLUMNS + ", queue, queue_key, priority, rank, idempotency_key"
_CREATE_ROW = "(" + ", ".join(["?"] * 18) + ")"  # all of _CREATE_COLUMNS but lineage
_CREATE_VALUES = (
    "column1, column2, column3, column4, column5, column6, column7, NULLIF(column8, 0), "
    "column9, NULL, column10, NULLIF(column11, ''), NULLIF(column12, 0), "
    "NULLIF(column13, ''), NULLIF(column14, 0), NULLIF(column15, 0), column16, column17, "
    "NULLIF(column18, 0)"
)
_INSERT_ONE: Final = (
    f"INSERT INTO runs ({_CREATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), ?, "
    "NULL, ?, NULLIF(?, ''), NULLIF(?, 0), NULLIF(?, ''), NULLIF(?, 0), NULLIF(?, 0), ?, ?, "
    "NULLIF(?, 0)) ON CONFLICT DO NOTHING"
)
"""A create on its own (see ``SQLiteStore._insert_one``): one text, built once.

Its values are those of ``_CREATE_VALUES`` (one row: its NULLIFs cost less in place)."""
_ROWS_PER_STATEMENT = 64
"""The most rows a multi-row statement writes (19 variables a row at most, well under
SQLite's limit of 32,766). Each count of rows is a text of its own, compiled once and kept
in the connection's cache of 128 statements: with up to 500, the compiled copies of a
bursty load's batches held 23 to 35 MB of SQLite's heap; with 64, 14 to 17 MB, at the
same speed (``benchmarks/sqlite_heap.py``, bursts of 200 runs of 3 KB inputs)."""

# A newer snapshot replaces an older one, and nothing replaces a terminal one.
# Rows of one statement apply in order, so a run saved twice in a batch is fine.
# The row's owner_id and epoch say who the writer expects to hold the run: this
# worker at that epoch, or (both NULL and 0) nobody. A run that settles, or
# sleeps until a wake time, is released: nobody holds it any more. A record of a run
# deleted since, whose id a new run took, is that other run's (created at another time):
# it changes nothing.
_ON_CONFLICT_NEWER = f"""
ON CONFLICT (run_id) DO UPDATE SET
    status = excluded.status, seq = excluded.seq, updated_at = excluded.updated_at,
    snapshot = excluded.snapshot, lineage = excluded.lineage, wake_at = excluded.wake_at,
    deadline = excluded.deadline,
    owner_id = CASE
        WHEN excluded.status IN ({_SETTLED_SQL}) OR excluded.wake_at IS NOT NULL THEN NULL
        ELSE runs.owner_id END
WHERE excluded.seq > runs.seq AND runs.status NOT IN ({_TERMINAL_SQL})
    AND runs.created_at = excluded.created_at AND (
    (excluded.owner_id IS NULL AND runs.owner_id IS NULL)
    OR (runs.owner_id = excluded.owner_id AND runs.epoch = excluded.epoch))
RETURNING run_id, created_at
"""

# The compare-and-set of replace(): the run's stored seq must be the one its
# caller read, its status not terminal, the new seq above the stored one, and
# nobody may hold it (this worker neither: a run it holds is its actor's to change, and
# a cancel that read the run unheld just before this worker claimed it must not end it
# under the actor that claim starts), and the row must be of the run it read (created
# then: not a new run given the id after a delete). Parameters: status, seq, updated_at,
# snapshot, wake_at, deadline, new owner, epoch step, seq again (taken_seq: any
# compare-and-set may resume a suspension, see ResumeRequestStore.request_resume), run_id,
# expected seq, seq, created_at.
_REPLACE = f"""
UPDATE runs SET
    status = ?, seq = ?, updated_at = ?, snapshot = ?, wake_at = ?, deadline = ?, owner_id = ?,
    epoch = epoch + ?, lineage = NULL, taken_seq = ?
WHERE run_id = ? AND seq = ? AND ? > seq AND status NOT IN ({_TERMINAL_SQL})
    AND owner_id IS NULL AND created_at = ?
RETURNING epoch
"""

_REOPEN = _REPLACE.replace(
    f"status NOT IN ({_TERMINAL_SQL})", f"status IN ({_TERMINAL_SQL})"
).replace("lineage = NULL", "lineage = NULL, cancel_requested = 0, restarting = 1")
"""The compare-and-set of ``replace(reopen=True)``: only a run that has ended (a restart).

A cancel asked for earlier was carried out (or the run ended otherwise): it is forgotten,
or the restarted run was canceled again as soon as a worker took it. The run is
``restarting`` until a claim takes it: its start counts in its queue's rate window then,
as a first start's does, in the place of its earlier one."""

_REPLACE_CANCELING = _REPLACE.replace("lineage = NULL", "lineage = NULL, cancel_requested = 1")
"""The compare-and-set of ``replace(canceling=True)``: the cancel is asked for in the same write.

Should the worker that holds the run to call its hooks die before it records the end, the
run goes back to the queue with its cancel asked for, and whoever claims it ends it."""

_COLUMNS = (
    "r.run_id, r.workflow_id, r.seq, r.status, r.snapshot, r.created_at, r.updated_at, "
    "r.trace_id, r.wake_at"
)
_QUEUED = f"owner_id IS NULL AND status IN ({_UNFINISHED_SQL})"
"""A run nobody holds that is not settled: what claims take (once due)."""
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
        wake_at=row[8],
    )


_OTHER_URL: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")
"""A URL's scheme (of two characters or more: ``C://`` is a Windows path)."""


def path_from_url(location: str | os.PathLike[str]) -> Path:
    """A database path from a path or a ``sqlite:///path`` URL, made absolute.

    A relative path is taken from the working folder of this call, once: a
    daemon that changes folder later (``os.chdir("/")`` when it detaches)
    keeps using the same file, where every connection opened afterwards (a
    thread's reader, the scheduler's) would have looked for another. A
    leading ``~`` is the user's home folder, as in a shell.

    Raises:
        ValueError: for a malformed ``sqlite://`` URL, or a URL of another
            scheme (``memory://``, ``mysql://``...): taken for a path, it would
            name a file (a ``Path`` folds its ``//``), made in the working folder.
    """
    text = os.fspath(location)
    other = _OTHER_URL.match(text)
    if other is not None and other.group(1) != "sqlite":
        raise ValueError(
            f"unknown store URL scheme {other.group(1) + '://'!r} in {text!r}: use 'memory', "
            "a SQLite file path or sqlite:///path, or a postgresql:// URL"
        )
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]  # sqlite:///relative or sqlite:////absolute
    elif text.startswith("sqlite://"):
        raise ValueError(
            f"a SQLite URL is sqlite:///relative/path or sqlite:////absolute: {text!r}"
        )
    if not text:
        raise ValueError("the SQLite store needs a file path")
    if text == ":memory:" or text.startswith("file::memory:"):
        # SQLite's name for a database private to one connection: taken for a path, it
        # made a file named ":memory:" in the working folder.
        raise ValueError(
            f"{os.fspath(location)!r} is SQLite's in-memory database, which a runtime's "
            "several connections cannot share: use store='memory' to keep runs in memory, "
            "or give a file path"
        )
    path = Path(text)
    with contextlib.suppress(RuntimeError):  # no home folder to be found: left as it is
        path = path.expanduser()
    return path.absolute()


_NEAR_LIMIT: Final = 12
"""How few files short of RLIMIT_NOFILE a process counts as out of them (or 1/16 of it)."""


def _out_of_descriptors(exc: sqlite3.Error) -> str | None:
    """What to say if SQLite could not open a file because the process is out of descriptors.

    SQLite says only "unable to open database file" when ``open()`` fails with
    ``EMFILE``; each thread that reads a store opens a connection of its own,
    which holds the database, its ``-wal`` and its ``-shm`` open. ``None``
    for any other error, or a process with room to open files now.
    """
    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_CANTOPEN:
        return None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return None
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        probe = os.dup(2)
    except OSError as probed:
        if probed.errno != errno.EMFILE:
            return None
        open_now = limit
    else:
        try:
            open_now = len(os.listdir("/dev/fd")) - 2  # less the probe and the listing's own
        except OSError:
            open_now = limit
        finally:
            os.close(probe)
        # Near the limit still, or something else failed. Not "room for the three files
        # now": other threads close theirs between the failed open and this count, and
        # a thread that found a few files free here said "unable to open database file"
        # (StoreError) where its neighbours were told the limit was reached.
        if open_now < limit - max(_NEAR_LIMIT, limit // 16):
            return None
    return (
        f"the process has {open_now} files open, at or near its limit of {limit} "
        "(RLIMIT_NOFILE, `ulimit -n`); each thread that reads a SQLite store holds three of "
        "them (the file, its -wal and its -shm) while it lives: raise the limit, or read "
        "from fewer threads"
    )


class _Reader:
    """A thread's read-only connection: closed when the thread ends, or when the store goes.

    It lives in the store's ``threading.local``. A connection left to the
    garbage collector makes Python (3.13 on) warn about an unclosed database,
    once for every thread that read and ended, in the application's logs or its
    test run; and when the store goes in a collection of reference cycles, the
    collector finalizes the objects it frees in no particular order. So every
    reader is also listed in ``open_readers``, which a finalizer of the store
    closes (finalizers of weak references run before the collector's).
    """

    __slots__ = ("_lock", "_open", "_pid", "connection")

    def __init__(
        self,
        connection: sqlite3.Connection,
        open_readers: set[sqlite3.Connection],
        lock: threading.Lock,
    ) -> None:
        self.connection = connection
        self._open = open_readers
        self._lock = lock
        self._pid = os.getpid()
        with lock:
            open_readers.add(connection)

    def __del__(self) -> None:
        if os.getpid() != self._pid:
            # In a forked child, which frees the thread-locals of the parent's other
            # threads as it starts: their connections are the parent's, and closing one
            # here hung the child (SQLite's mutexes, held by a parent thread at the
            # fork), as could this lock. Left alone, as the parent's store is.
            return
        with self._lock:
            self._open.discard(self.connection)
        with contextlib.suppress(Exception):
            self.connection.close()


def _readers_of(
    store: object,
) -> tuple[threading.local, set[sqlite3.Connection], threading.Lock]:
    """Where a store keeps its threads' readers.

    A ``threading.local``, and the open readers listed under a lock, which a
    finalizer of ``store`` closes (see :class:`_Reader`).
    """
    open_readers: set[sqlite3.Connection] = set()
    lock = threading.Lock()
    weakref.finalize(store, _close_readers, open_readers, lock, os.getpid())
    return threading.local(), open_readers, lock


def _close_readers(open_readers: set[sqlite3.Connection], lock: threading.Lock, pid: int) -> None:
    """Close the readers of a store that is gone, from whichever thread frees it.

    Not in a forked child of the process that opened them (see :class:`_Reader`).
    """
    if os.getpid() != pid:
        return
    with lock:
        connections = list(open_readers)
        open_readers.clear()
    for connection in connections:
        with contextlib.suppress(Exception):
            connection.close()


class SQLiteStore:
    """Snapshots in a SQLite file, shared safely between threads and processes.

    Args:
        location: The database file, as a path or a ``sqlite:///path`` URL. It is
            created (mode 0600) if it does not exist.
        readonly: Open for reading only: no writer thread, no owner, and the file
            must exist.
        lease: Seconds without a heartbeat after which other workers hand this
            one's runs back to the queue (at least 0.2).

    Raises:
        StoreError: if the file cannot be opened or created, is not a SQLite
            database, is a directory, cannot be written, or was written by a
            newer schema version (which is then never written).
    """

    durable = True
    _abandoned = False  # closed as a killed process would be: nothing handed back

    def __init__(
        self, location: str | os.PathLike[str], *, readonly: bool = False, lease: float = LEASE
    ) -> None:
        lease = check_lease(lease)
        self.path = _new_store_path(self, location)
        self.readonly = readonly
        self.lease = float(lease)
        self.owner_id = new_id()
        # The runs this worker holds, each with the epoch its writes are conditioned
        # on; and those it lost to another worker, whose late writes change nothing.
        self._held: dict[str, int] = {}
        self._damage_said: set[tuple[str, str]] = set()  # queue rows said damaged
        self._fenced: set[str] = set()
        self._held_lock = threading.Lock()
        self._hint: Callable[[str, str], None] | None = None
        self._joined: tuple[str, list[str], int | None] = ("both", [], None)
        self._started_at = time.time()
        self._columns = _COLUMNS
        self._lost_row = False  # reaped, and a join made the row anew: heartbeat() says so
        # Each thread's reader, and all of them to close when this store is freed.
        self._local, self._readers, self._readers_lock = _readers_of(self)
        self._closed = False
        self._writer: GroupCommitWriter | None = None
        # Held around every transaction this process writes, the writer's and the
        # creates its callers commit themselves (see _create_now), and the caller's
        # connection for those. Reentrant only so that a caller can tell whether it
        # holds it (see _create_now); it is never taken twice.
        self._write_lock = threading.RLock()
        self._caller_connection: sqlite3.Connection | None = None
        self._finished = False
        self._reclaim = False  # pruned runs freed pages that the file may give back
        # On the writer thread: lineages a save of which was refused, so that their parts
        # in the file miss that save's changes: their next save writes every part. A
        # transaction works on a copy, kept once it commits (a retry starts again).
        self._broken: set[int] = set()
        self._broken_after: set[int] | None = None
        self._transactions = 0
        # Why the writer last had to try a batch again (``None``: it did not, or it then
        # committed): what a caller's give-up says, since it may not be a lock at all.
        self._retried_for: str | None = None
        # How long the file has refused every write (read-only, see _refused).
        self._refusals = Refusals(str(self.path))
        # What the file said when it refused the writer's last transaction for good
        # (``None``: that one was not refused so): the writes behind it are told too.
        self._refused_now: str | None = None
        self._checkpointed_at = 0
        self._checkpoint_time = time.monotonic()
        self._parts_table = True
        self._resources = True  # the file has the resource_id column (read-only: see below)
        self._requests_table = True  # and the resume_requests table
        if self.path.is_dir():
            raise StoreError(f"cannot use {self.path} as a run store: it is a directory")
        if self.path.exists() and not self.path.is_file():
            # A FIFO or a device would block the open, or read as garbage.
            raise StoreError(f"cannot use {self.path} as a run store: it is not a regular file")
        if readonly:
            self._open_readonly()
            return
        self._create_file()
        connection = self._connect()
        try:
            self._prepare(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection  # the writer thread's alone
        self._note_identity()
        _say_if_networked(self.path)
        self._caller_connection = self._connect_callers()
        self._writer = GroupCommitWriter(
            name="callboard-sqlite-writer",
            commit=lambda writes: self._commit(connection, writes),
            idle=self._locked_checkpoint,
            give_up=self._give_up,
            finish=self._finish,
            sift=self._sift,
            idle_interval=IDLE_INTERVAL,
            batch=BATCH,
            # Callers commit their creates between the writer's transactions: under load
            # it leaves them room (in a burst of starts beside 200 runs in progress, a
            # start's median went from 1.7 ms, mostly waiting for the lock, to 0.6 ms).
            rest=self._caller_connection is not None,
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    # --- opening --------------------------------------------------------------------

    def _open_readonly(self) -> None:
        """Check the file for reading only; a file not yet migrated is read as it is."""
        if not self.path.exists():
            raise StoreError(f"no run store at {self.path}: the file does not exist")
        # A file not yet migrated has no parts, nor claims, to read (until a runtime
        # migrates it).
        try:
            version = self._check_schema(self._reader(), writable=False)
        except BaseException:
            # Not at the collector's pace: the caller may unmount the file's media next.
            _close_readers(self._readers, self._readers_lock, os.getpid())
            raise
        self._parts_table = version >= _PARTS_FROM
        self._resources = version >= _RESOURCES_FROM
        self._requests_table = version >= _REQUESTS_FROM
        if version < _SHARING_FROM:
            self._columns = _COLUMNS.replace("r.wake_at", "NULL")

    def _create_file(self) -> None:
        if self.path.exists():
            # SQLite may reuse a descriptor this process already holds on the
            # file, so ask the operating system whether it can be written now:
            # with access(), never by opening it. Closing a descriptor of a file
            # drops every POSIX lock this process holds on it, SQLite's own
            # connections' included: another process would then take the file
            # for unused, and checkpoint and delete its WAL under them.
            refused = _unwritable(self.path)
            if refused is not None:
                raise StoreError(f"cannot write to the run store {self.path}: {refused}")
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
        uri = read_uri(self.path) if readonly else f"file:{self.path}?mode=rw"
        try:
            connection = sqlite3.connect(
                uri, uri=True, timeout=LOCK_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                in_memory_temp(connection)
            except sqlite3.Error:
                connection.close()
                raise
        except sqlite3.Error as exc:
            full = _out_of_descriptors(exc)
            if full is not None:  # it passes as files close: as a store out of reach
                raise StoreUnavailableError(
                    f"cannot open the run store {self.path}: {exc}: {full}"
                ) from exc
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc
        return connection

    def _connect_callers(self) -> sqlite3.Connection | None:
        """The connection creates commit on from their callers' threads (see _create_now)."""
        try:
            connection = self._connect()
        except StoreError:
            return None  # every create goes through the writer
        try:
            _set_for_writing(connection)
            # Another process's lock sends the create to the writer, which waits.
            connection.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error:
            connection.close()
            return None
        return connection

    def _check_schema(self, connection: sqlite3.Connection, *, writable: bool) -> int:
        try:
            version: int = connection.execute("PRAGMA user_version").fetchone()[0]
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            if _on_read_only_fs(self.path):
                raise StoreError(
                    f"cannot read the run store {self.path} (SQLite says: {exc}): it lies on "
                    "a read-only file system with a write-ahead log (-wal) beside it, which "
                    "SQLite can fold in only where it can write; copy the files to writable "
                    "storage"
                ) from exc
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
            _set_for_writing(connection)
            connection.execute("BEGIN IMMEDIATE")
            # Read again under the write lock: another process may have just made or
            # migrated the file.
            version = self._check_schema(connection, writable=True)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                version = 1
            if version < SCHEMA_VERSION:
                self._refuse_upgrade_beside_older(connection, version)
            for steps in _MIGRATIONS[version - 1 :]:
                for statement in steps:
                    _migrate(connection, statement)
            if version != SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute(_PRUNE_INDEX)
            self._write_worker_row(connection)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
                raise StoreError(f"cannot write to the run store {self.path}: {exc}") from exc
            raise StoreError(f"cannot prepare the run store {self.path}: {exc}") from exc
        except StoreError:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise

    def _refuse_upgrade_beside_older(self, connection: sqlite3.Connection, version: int) -> None:
        """Refuse to migrate the file while processes that opened it at ``version`` live."""
        lease = "lease" if version >= 3 else str(LEASE)  # a column of its own from version 3
        users = connection.execute(
            f"SELECT host, pid FROM owners WHERE heartbeat_at + {lease} >= ?", (_clock.time(),)
        ).fetchall()
        refuse_upgrade_beside_older(str(self.path), version, SCHEMA_VERSION, users)

    def _reader(self) -> sqlite3.Connection:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            connection = self._connect(readonly=True)
            reader = self._local.reader = _Reader(connection, self._readers, self._readers_lock)
        return reader.connection

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._reader()
        except sqlite3.DatabaseError as exc:
            full = _out_of_descriptors(exc)
            if full is not None:
                # Its connection may hold the file open without its -wal and -shm: closed,
                # so that threads stuck so do not keep each other from opening all three.
                self._local.reader = None
                raise StoreUnavailableError(
                    f"cannot read the run store {self.path}: {exc}: {full}"
                ) from exc
            error = StoreUnavailableError if _locked(exc) else StoreError
            raise error(f"cannot read the run store {self.path}: {exc}") from exc

    # --- the store interface ------------------------------------------------------

    def create(self, record: SnapshotRecord, *, hold: bool = True) -> bool:
        """Record a new run, committed when this returns; ``False`` if its id is taken.

        With ``hold`` (the default) this worker holds the run; without, it is
        queued for whichever worker claims it first.

        Raises:
            StoreUnavailableError: if the commit did not happen within
                ``CREATE_TIMEOUT`` (the database stayed locked, the disk full: the
                error says which); at once if the file refuses writes (read-only).
            StoreError: if the store is read-only or closed.
        """
        if self._fast_creates and not self.readonly and not self._closed:
            created = self._create_now(record, hold)
            if created is not None:
                return created
        future: Future[bool] = Future()
        write = self._submit("create", (record, hold), resolve(future))
        return bool(self._committed(write, future, f"the run {record.run_id!r} was not recorded"))

    _fast_creates: bool = True
    """Whether ``create`` commits on its caller's thread when it can (tests turn it off)."""

    def _create_now(self, record: SnapshotRecord, hold: bool) -> bool | None:
        """Commit a create on the caller's thread; ``None`` if it must go through the writer.

        The caller waits for the writer's transaction in progress, if any, not
        for the writes queued behind it, and commits its INSERT in a transaction
        of its own on a connection of its own: the same statements as a batch's
        creates (``_refuse_full``, ``_insert``), so a taken id, a taken
        idempotency key and a full queue come out the same. Whatever stands in
        the way (another process holds the file's lock, an error) sends the
        create to the writer instead, whose retries and timeouts then apply, as
        if this had not been tried: nothing was committed. But a file that refuses
        writes (read-only) fails the start at once, as the writer would
        (:func:`~runtime._stores._writer.refuse_at_once`): nothing was committed,
        and its caller is told without waiting for a refusal to pass.

        Raises:
            QueueFullError: if the run's queue has ``max_queued`` runs waiting.
            StoreUnavailableError: if the file refuses writes.
        """
        lock = self._write_lock
        try:
            # Inside the try: an interrupt (Ctrl-C, on the main thread) that Python raises
            # as the acquire returns, before a statement more, left the lock held for good:
            # the writer, and every create after, waited on it, and the stop that followed
            # took its whole timeout (37 s) and left the writes queued uncommitted.
            if not lock.acquire(timeout=LOCK_TIMEOUT):
                return None
            if self._finished:
                return None
            connection = self._caller_connection
            if connection is None:
                return None
            moved = self._moved()
            if moved is not None:
                # What earlier starts committed is in the file before this one is refused.
                self._fold_lost_log(connection)
                raise self._create_refused(record, self._moved_why or moved)
            try:
                if record.queue is None:
                    # One statement, its own transaction: the interpreter lock is let go
                    # once for the whole create, where BEGIN, INSERT ... RETURNING and
                    # COMMIT let it go (and wait to take it back) four times or more.
                    created = self._insert_one(connection, record, hold)
                else:
                    write = Write("create", (record, hold), ignore)
                    outcome = _Outcome()
                    connection.execute("BEGIN IMMEDIATE")
                    if self._refuse_full(connection, [write], outcome):
                        connection.execute("ROLLBACK")
                        raise outcome.errors[id(write)]
                    created = record.run_id in self._insert(connection, [(record, hold)])
                    connection.execute("COMMIT")
            except QueueFullError:  # rolled back: said at once, as the writer would
                raise
            except Exception as exc:  # the writer tries it again, and reports what it finds
                with contextlib.suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                if _refused_for_good(exc):
                    raise self._create_refused(record, str(exc)) from exc
                return None
            self._transactions += 1
            self._refusals.committed_aside()
        finally:
            if lock._is_owned():  # type: ignore[attr-defined]
                lock.release()
        if created:
            if hold:  # as _Outcome.apply holds a run, without building one for each start
                with self._held_lock:
                    self._held[record.run_id] = 1
                    self._fenced.discard(record.run_id)
            else:
                queued = _Outcome()
                queued.hint("queued", record.run_id)
                queued.send_hints(self._hint)
        return created

    def _create_refused(self, record: SnapshotRecord, reason: str) -> StoreUnavailableError:
        """The error of a create the file refused for ``reason``: nothing was recorded."""
        return refused_error(
            f"the run store {self.path}",
            reason,
            f"the run {record.run_id!r} was not recorded",
            record.run_id,
        )

    def replace(
        self,
        record: SnapshotRecord,
        expected_seq: int,
        *,
        hold: bool = False,
        reopen: bool = False,
        canceling: bool = False,
        requested: str | None = None,
    ) -> bool:
        """Store ``record`` if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set, committed when it returns ``True``: it fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs or is
        not below ``record.seq``, its status is terminal, or another worker
        holds it. With ``hold`` this worker holds the run from then on (its
        epoch bumped); without, an unfinished run is left queued for any
        worker, and a settled one is nobody's. With ``reopen`` it applies only
        to a run whose status is terminal (``run.restart()``). With
        ``canceling`` the run's cancel is asked for in the same write. A
        record that resumes suspensions (``record.taken``) fails while a
        resume request waits for one of them, unless it carries that request
        out (``requested``, its id: then it fails unless that very request
        still waits; see :meth:`request_resume`).

        Raises:
            StoreUnavailableError: if the commit did not happen within
                ``CREATE_TIMEOUT`` (the database stayed locked, the disk full: the
                error says which).
            StoreError: if the store is read-only or closed.
        """
        future: Future[bool] = Future()
        write = self._submit(
            "replace", (record, expected_seq, hold, reopen, canceling, requested), resolve(future)
        )
        return bool(
            self._committed(
                write, future, f"the new snapshot of run {record.run_id!r} was not stored"
            )
        )

    def _committed(self, write: Write, future: Future[Any], not_done: str) -> Any:
        """Wait for a write that its caller must know committed (or not) before going on.

        The error given up with says why the writer kept trying: the database
        stayed locked, or what its last try met (a full disk, an I/O error).
        """
        timeout = self._refusals.patience(CREATE_TIMEOUT)
        try:
            return committed(
                write,
                future,
                timeout,
                given_up=f"the run store {self.path} stayed locked for {timeout:g} s"
                f"{self._refusals.failing_for()}; {not_done}",
                unfinished=f"the run store {self.path} did not finish the transaction of this "
                f"write within {2 * timeout:g} s; it may still commit",
            )
        except StoreUnavailableError as exc:
            retried = self._retried_for
            if retried is None or write.refused:  # the writer's error says why already
                raise
            raise StoreUnavailableError(
                f"the run store {self.path} could not commit for {timeout:g} s"
                f"{self._refusals.failing_for()}; {not_done} (its last try: {retried})"
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
        """Delete the record of a run that has ended; return whether it did.

        ``False`` for a run that is not there, and for one that has not ended
        (``success``, ``failed`` or ``canceled``): the status is checked in the
        same step as the delete, so a run restarted meanwhile is never deleted
        under its actor.

        Raises:
            StoreUnavailableError: if the file refuses writes (made read-only),
                at the first try that meets it, nothing deleted; or if the delete
                did not commit within ``CREATE_TIMEOUT``.
        """
        future: Future[bool] = Future()
        write = self._submit("delete", run_id, resolve(future))
        return bool(self._committed(write, future, f"the run {run_id!r} was not deleted"))

    def prune(
        self,
        *,
        ended_before: float | None = None,
        keep: int | None = None,
        status: str | None = None,
    ) -> int:
        """Delete ended runs older than ``ended_before``, then all but the newest ``keep``.

        Their space goes back to the file system (a file created before this
        version keeps its size, and reuses the pages freed). At most
        :data:`~runtime._stores.base.PRUNE_CHUNK` runs go in one transaction:
        the runs' saves go on between two.

        Raises:
            StoreError: if the store is read-only or closed, or stayed locked
                (the runs deleted before stay deleted).
            StoreUnavailableError: if the file refuses writes (made read-only),
                at the first try that meets it: no more runs are deleted.
        """
        statuses = sorted(TERMINAL_STATUSES if status is None else TERMINAL_STATUSES & {status})
        if not statuses:
            return 0
        deleted = 0
        if ended_before is not None:
            while True:
                chunk = self._prune_chunk((ended_before, statuses, PRUNE_CHUNK), deleted)
                deleted += chunk
                if chunk < PRUNE_CHUNK:
                    break
        if keep is None:
            return self._pruned(statuses, deleted)
        cutoff = self._keep_cutoff(statuses, keep)
        while cutoff is not None:
            chunk = self._prune_chunk((cutoff, statuses, PRUNE_CHUNK), deleted)
            deleted += chunk
            if chunk < PRUNE_CHUNK:
                break
        return self._pruned(statuses, deleted)

    def _keep_cutoff(self, statuses: list[str], keep: int) -> float | None:
        """When the ``keep``-th newest ended run ended: those that ended before it go.

        ``None`` if there are no more than ``keep``. Read once a pass, on a reader,
        through the index by status (the newest ``keep`` of each, no sort of every
        run ended). Runs that end later only add to the newest, and deleting older
        ones leaves them be: deleting only what ended before this time never takes
        one of the newest ``keep``, whatever else deletes meanwhile (another
        worker's pass, ``callboard runs prune``). A pass that counted the runs to
        delete instead deleted that many however many others had: two workers'
        passes left none.
        """
        if keep == 0:
            return math.inf
        with self._reading() as reader:
            queues = reader.execute("PRAGMA user_version").fetchone()[0] >= _QUEUES_FROM
            counted, now = (_COUNTED_START, [_clock.time()]) if queues else ("0", [])
            newest = " UNION ALL ".join(
                "SELECT * FROM (SELECT updated_at FROM runs AS r WHERE status = ? "
                f"AND NOT {counted} ORDER BY updated_at DESC LIMIT ?)"
                for _ in statuses
            )
            row = reader.execute(
                f"SELECT updated_at FROM ({newest}) ORDER BY updated_at DESC LIMIT 1 OFFSET ?",
                (*[value for each in statuses for value in (each, *now, keep)], keep - 1),
            ).fetchone()
        return None if row is None else float(row[0])

    def _pruned(self, statuses: list[str], deleted: int) -> int:
        """End a pass that deleted ``deleted`` runs: the pages they freed go back once idle.

        Not after each chunk: the writer is idle between two, and giving pages back
        (an incremental vacuum) after each made a pass twice as long, and held saves.
        """
        if deleted:
            self._prune_chunk((None, statuses, 0), deleted)
        return deleted

    def _prune_chunk(self, payload: tuple[float | None, list[str], int], deleted: int) -> int:
        """Delete up to ``payload[2]`` runs that ended before ``payload[0]``; return how many.

        In one transaction. ``payload[2]`` 0: the pass is over (see :meth:`_pruned`).
        """
        future: Future[int] = Future()
        write = self._submit("prune", payload, resolve(future))
        return int(self._committed(write, future, f"{deleted} runs were pruned, and no more"))

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest committed record of a run, or ``None``."""
        found = self._select(_RUNS, "WHERE r.run_id = ?", (run_id,))
        return found[0][0] if found else None

    def run_for_key(self, workflow_id: str, key: str) -> str | None:
        """The run of ``workflow_id`` started with idempotency key ``key``, or ``None``."""
        with self._reading() as connection:
            row = connection.execute(
                "SELECT run_id FROM runs WHERE workflow_id = ? AND idempotency_key = ?",
                (workflow_id, key),
            ).fetchone()
        return None if row is None else str(row[0])

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
        connection: sqlite3.Connection | None = None,
    ) -> list[tuple[SnapshotRecord, tuple[Any, ...]]]:
        """Records of the runs ``r`` in ``source`` (a FROM clause) that ``where`` keeps.

        Each comes with its row. ``extra`` names more columns (after the
        record's nine), ``order`` orders the runs. Read with a reader, or on
        ``connection`` (the writer's, inside its transaction).
        """
        parts = _WITH_PARTS if self._parts_table else _WITHOUT_PARTS
        query = f"SELECT {self._columns}{extra}, {parts} FROM {source} {where} {order}"
        if connection is not None:
            rows = connection.execute(query, params).fetchall()
        else:
            with self._reading() as reader:
                rows = reader.execute(query, params).fetchall()
        if not self._parts_table and any(is_parted(row[4]) for row in rows):
            # Written in parts since this reader opened a file not yet migrated.
            self._parts_table = True
            return self._select(
                source, where, params, extra=extra, order=order, connection=connection
            )
        return [(_record(row), row) for row in rows]

    # --- sharing the file with other workers ----------------------------------------------

    def join(self, *, role: str, workflows: Sequence[str], concurrency: int | None) -> None:
        """Say in this worker's row what it runs (its role, workflows and capacity)."""
        self._joined = (role, sorted(workflows), concurrency)
        future: Future[None] = Future()
        write = self._submit("join", None, resolve(future))
        self._committed(write, future, "this worker did not join")

    def heartbeat(self) -> bool:
        """Renew this worker's lease now; ``False`` if its row was gone (it was reaped).

        Only this renews it: a runtime's claimer calls it every quarter lease (at
        most every 2 s), so a process that stalls stops renewing it.

        Raises:
            StoreUnavailableError: if the file refuses writes (read-only), at the
                writer's first try that meets it
                (:data:`~runtime._stores._writer.REFUSED_AT_ONCE`), or if the
                database stayed locked for ``CREATE_TIMEOUT``: nothing renewed.
            StoreError: if the store is closed or read-only.
        """
        future: Future[bool] = Future()
        write = self._submit("heartbeat", None, resolve(future))
        return bool(self._committed(write, future, "the lease was not renewed"))

    def claim(
        self,
        workflow_ids: Sequence[str],
        limit: int,
        skip: Collection[str] = (),
        busy: Collection[str] = (),
        executing: Collection[str] = (),
    ) -> list[Claimed]:
        """Take up to ``limit`` queued runs of these workflows that are due, oldest first.

        Runs named in ``skip`` are left, unless their cancel was requested, and so
        are those named in ``busy``, which count in their queues' limits whatever
        their status (a step body of theirs runs here). Those named in
        ``executing`` count so too (a step body their run let go of runs here), but
        are taken as any other: a run asleep or suspended meanwhile wakes and
        resumes. A run this store thought it
        held, which the claim found in the queue (reaped meanwhile), goes back to the queue
        instead, fenced off: its actor here may still be running a step.
        """
        if limit < 1 or not workflow_ids:
            return []
        skipping, skipped = _skipping(skip, busy)
        with self._reading() as connection:
            due = connection.execute(
                f"SELECT 1 FROM runs WHERE {_QUEUED} AND (wake_at IS NULL OR wake_at <= ?) "
                f"AND workflow_id IN {_AMONG}{skipping} LIMIT 1",
                (_clock.time(), _listed(workflow_ids), *skipped),
            ).fetchone()
        if due is None:
            return []  # the usual case, found with a read: no write transaction
        future: Future[list[Claimed]] = Future()
        payload = (list(workflow_ids), limit, skip, busy, executing)
        write = self._submit("claim", payload, resolve(future))
        claimed: list[Claimed] = self._committed(write, future, "nothing was claimed")
        return claimed

    def hand_back(self, run_ids: Sequence[str]) -> int:
        """Give runs held here back to the queue at once, as they are; how many were.

        For runs this worker cannot drive (no definition of their version is
        registered here): any worker may claim them next. A run this worker no
        longer holds is left alone. A run that never started is counted again
        as a first start by its queue's rate limit.
        """
        if not run_ids:
            return 0
        future: Future[int] = Future()
        write = self._submit("hand_back", list(run_ids), resolve(future))
        handed: int = self._committed(write, future, "no run was handed back")
        return handed

    def reap(self) -> int:
        """Hand the runs of dead workers back to the queue; how many runs.

        A worker is dead once its heartbeat is older than its lease, or, on this
        host, once its process is gone; a run whose owner has no row at all (a
        file from before workers had rows) is handed back too.
        """
        if not self._anyone_to_reap():
            return 0  # the usual case, found with a read: no write transaction
        future: Future[int] = Future()
        write = self._submit("reap", None, resolve(future))
        return int(self._committed(write, future, "nothing was reaped"))

    def _anyone_to_reap(self) -> bool:
        with self._reading() as connection:
            owners = connection.execute(
                "SELECT host, pid, heartbeat_at, lease FROM owners WHERE owner_id != ?",
                (self.owner_id,),
            ).fetchall()
            if any(_death(*owner) is not None for owner in owners):
                return True
            orphan = connection.execute(
                "SELECT 1 FROM runs WHERE owner_id IS NOT NULL AND owner_id != ? "
                f"AND status IN ({_UNFINISHED_SQL}) "
                "AND owner_id NOT IN (SELECT owner_id FROM owners) LIMIT 1",
                (self.owner_id,),
            ).fetchone()
        return orphan is not None

    def request_cancel(self, run_id: str) -> bool:
        """Mark an unfinished (or suspended) run for cancel.

        ``False`` if there is none, or its cancel was asked for already: of two
        callers, one is told it asked (the one whose cancel it then is).
        """
        future: Future[bool] = Future()
        write = self._submit("request_cancel", run_id, resolve(future))
        return bool(self._committed(write, future, f"no cancel of {run_id!r} was recorded"))

    def cancel_requests(self) -> list[str]:
        """Runs this worker holds whose cancel was requested."""
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT run_id FROM runs WHERE owner_id = ? AND cancel_requested = 1 "
                f"AND status IN ({_UNFINISHED_SQL})",
                (self.owner_id,),
            ).fetchall()
        return [row[0] for row in rows]

    def request_resume(
        self, run_id: str, path: str, data: bytes, *, seq: int, created_at: float
    ) -> ResumeRequested:
        """Record a resume of the suspension ``path`` of a run that runs on, for its driver.

        Committed when this returns ``"recorded"``; see
        :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`.

        Raises:
            StoreUnavailableError: if the commit did not happen within
                ``CREATE_TIMEOUT`` (the database stayed locked).
            StoreError: if the store is read-only or closed.
        """
        future: Future[ResumeRequested] = Future()
        write = self._submit(
            "request_resume", (run_id, path, data, new_id(), seq, created_at), resolve(future)
        )
        said: ResumeRequested = self._committed(
            write, future, f"the resume of {path!r} of run {run_id!r} was not recorded"
        )
        return said

    def resume_requests(self, workflows: Collection[str] | None = None) -> list[ResumeRequest]:
        """Resume requests of runs held here, of suspended runs (of ``workflows``), of runs ended.

        Those of runs held here first, then the oldest first; see
        :meth:`~runtime._stores.base.ResumeRequestStore.resume_requests`.
        """
        if workflows is None:
            suspended, names = f"r.status IN ({_SETTLED_SQL})", []
        else:
            names = sorted(workflows)
            suspended = (
                f"r.status IN ({_TERMINAL_SQL}) OR (r.status = '{RunStatus.SUSPENDED.value}' "
                f"AND r.workflow_id IN ({', '.join('?' * len(names))}))"
            )
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT q.run_id, q.path, q.data, q.request_id, r.workflow_id, r.status, "
                "r.owner_id IS ? AS held FROM resume_requests AS q LEFT JOIN runs AS r "
                f"ON r.run_id = q.run_id WHERE r.run_id IS NULL OR r.owner_id = ? OR {suspended} "
                "ORDER BY held DESC, q.requested_at LIMIT ?",
                (self.owner_id, self.owner_id, *names, RESUME_REQUESTS_READ),
            ).fetchall()
        return [
            ResumeRequest(run_id, path, bytes(data), request_id, workflow, status, bool(held))
            for run_id, path, data, request_id, workflow, status, held in rows
        ]

    def resume_pending(self, run_id: str) -> bool:
        """Whether a resume request of the run waits (a worker carries it out soon)."""
        if not self._requests_table:
            return False  # a file not yet migrated, opened read-only: none was ever made
        with self._reading() as connection:
            found = connection.execute(
                "SELECT 1 FROM resume_requests WHERE run_id = ? LIMIT 1", (run_id,)
            ).fetchone()
        return found is not None

    def resumes_pending(self, run_ids: Collection[str]) -> set[str]:
        """Which of the runs a resume request waits for, in one read."""
        ids = list(dict.fromkeys(run_ids))
        if not self._requests_table or not ids:
            return set()
        found: set[str] = set()
        with self._reading() as connection:
            for chunk in _chunks(ids):
                rows = connection.execute(
                    "SELECT DISTINCT run_id FROM resume_requests "
                    f"WHERE run_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update(run_id for (run_id,) in rows)
        return found

    def drop_resume_request(self, request: ResumeRequest) -> None:
        """Forget a resume request, that one (queued, not waited for)."""
        self._submit(
            "drop_resume_request", (request.run_id, request.path, request.request_id), ignore
        )

    def held(self) -> int:
        """How many runs this worker holds now."""
        return len(self._held)

    def holds(self, run_id: str) -> bool:
        """Whether this worker holds the run now."""
        return run_id in self._held

    def fenced(self) -> frozenset[str]:
        """The runs this worker held and lost (reaped, taken over) and has not taken again."""
        with self._held_lock:
            return frozenset(self._fenced)

    def next_wake(self, workflow_ids: Sequence[str], skip: Collection[str] = ()) -> float | None:
        """The earliest wake time of queued sleeping runs of these workflows (but ``skip``'s)."""
        if not workflow_ids:
            return None
        skipping, skipped = _skipping(skip)
        with self._reading() as connection:
            row = connection.execute(
                f"SELECT min(wake_at) FROM runs WHERE {_QUEUED} AND wake_at IS NOT NULL "
                f"AND workflow_id IN {_AMONG}{skipping}",
                (_listed(workflow_ids), *skipped),
            ).fetchone()
        return None if row is None else row[0]

    def next_deadline(
        self, workflow_ids: Sequence[str], skip: Collection[str] = ()
    ) -> float | None:
        """The soonest deadline of a run nobody holds, of these workflows (but ``skip``'s)."""
        if not workflow_ids:
            return None
        with self._reading() as connection:
            row = connection.execute(
                f"SELECT min(deadline) FROM runs {_BY_DEADLINE} WHERE {_DEADLINE_KEPT} "
                f"AND status IN ({_UNFINISHED_OR_SUSPENDED_SQL}) "
                f"AND workflow_id IN {_AMONG} AND run_id NOT IN {_AMONG}",
                (_listed(workflow_ids), _listed(sorted(skip))),
            ).fetchone()
        return None if row is None else row[0]

    def expired(
        self, workflow_ids: Sequence[str], limit: int, skip: Collection[str] = ()
    ) -> list[SnapshotRecord]:
        """Runs nobody holds, of these workflows, whose deadline passed (soonest first)."""
        if not workflow_ids:
            return []
        where = (
            f"WHERE {_DEADLINE_KEPT} AND deadline <= ? "
            f"AND status IN ({_UNFINISHED_OR_SUSPENDED_SQL}) "
            f"AND workflow_id IN {_AMONG} AND r.run_id NOT IN {_AMONG}"
        )
        params = [_clock.time(), _listed(workflow_ids), _listed(sorted(skip)), limit]
        found = self._select(
            f"runs AS r {_BY_DEADLINE}", where, params, order="ORDER BY deadline LIMIT ?"
        )
        return [record for record, _ in found]

    def next_lapse(self, alive: Collection[str] = ()) -> float | None:
        """When the soonest lease runs out of a worker that holds runs (but ``alive`` ones)."""
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT owner_id, heartbeat_at + lease FROM owners WHERE EXISTS (SELECT 1 "
                "FROM runs WHERE runs.owner_id = owners.owner_id "
                f"AND runs.status IN ({_UNFINISHED_SQL}))"
            ).fetchall()
        return min((lapse for owner, lapse in rows if owner not in alive), default=None)

    def next_opening(self, workflow_ids: Sequence[str]) -> float | None:
        """When a rate window next frees a start in a queue where runs of these workflows wait."""
        if not workflow_ids:
            return None
        with self._reading() as connection:
            if self._check_schema(connection, writable=False) < _QUEUES_FROM:
                return None
            row = connection.execute(
                "SELECT min(s.started_at + q.rate_period) FROM runs AS s "
                "JOIN queues AS q ON q.name = s.queue "
                "WHERE q.rate_period IS NOT NULL AND s.started_at > ? - q.rate_period "
                "AND EXISTS (SELECT 1 FROM runs AS w WHERE w.queue = s.queue "
                "AND w.queue_key IS s.queue_key AND (w.started_at IS NULL OR w.restarting) "
                f"AND {_QUEUED} "
                f"AND w.workflow_id IN {_AMONG})",
                (_clock.time(), _listed(workflow_ids)),
            ).fetchone()
        return None if row is None else row[0]

    def load_many(self, run_ids: Sequence[str]) -> list[SnapshotRecord]:
        """The newest records of these runs; unknown ones are left out."""
        records: list[SnapshotRecord] = []
        for chunk in _chunks(list(run_ids)):
            found = self._select(_RUNS, f"WHERE r.run_id IN ({', '.join('?' * len(chunk))})", chunk)
            records.extend(record for record, _ in found)
        return records

    def seqs(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The ``seq`` of each of these runs' newest record; unknown ones are left out."""
        found: dict[str, int] = {}
        with self._reading() as reader:
            for chunk in _chunks(list(run_ids)):
                marks = ", ".join("?" * len(chunk))
                query = f"SELECT run_id, seq FROM runs WHERE run_id IN ({marks})"
                found.update(reader.execute(query, chunk).fetchall())
        return found

    def queued(self, workflow_ids: Sequence[str] | None = None) -> list[SnapshotRecord]:
        """Queued runs (nobody holds them; a sleeping one once due), oldest first."""
        where = f"WHERE {_QUEUED} AND (r.wake_at IS NULL OR r.wake_at <= ?)"
        params: list[Any] = [_clock.time()]
        if workflow_ids is not None:
            where += f" AND r.workflow_id IN {_AMONG}"
            params.append(_listed(workflow_ids))
        found = self._select(_RUNS, where, params, order="ORDER BY r.created_at")
        return [record for record, _ in found]

    def awaiting_others(
        self, workflow_ids: Sequence[str], limit: int
    ) -> list[tuple[str, str, str]]:
        """Queued runs of other workflows than these, oldest first: id, workflow, status."""
        ids = sorted(set(workflow_ids))
        with self._reading() as connection:
            if self._check_schema(connection, writable=False) < 2:
                return []
            rows = connection.execute(
                f"SELECT r.run_id, r.workflow_id, r.status FROM runs AS r WHERE {_QUEUED} "
                "AND (r.wake_at IS NULL OR r.wake_at <= ?) "
                f"AND r.workflow_id NOT IN {_AMONG} "
                "ORDER BY r.created_at LIMIT ?",
                [_clock.time(), _listed(ids), limit],
            ).fetchall()
        return [(run_id, workflow_id, status) for run_id, workflow_id, status in rows]

    def workers(self) -> list[WorkerInfo]:
        """Every worker with a row in the file, and the runs it holds."""
        with self._reading() as connection:
            version = self._check_schema(connection, writable=False)
            if version < 2:
                return []
            rows = connection.execute(
                "SELECT owner_id, host, pid, role, workflows, concurrency, started_at, "
                "heartbeat_at, (SELECT count(*) FROM runs WHERE runs.owner_id = owners.owner_id "
                f"AND runs.status IN ({_UNFINISHED_SQL})), lease FROM owners ORDER BY started_at"
            ).fetchall()
        now = _clock.time()
        return [
            WorkerInfo(
                worker_id=row[0],
                host=row[1],
                pid=row[2],
                role=row[3],
                workflows=tuple(_workflows(row[4])),
                concurrency=row[5],
                started_at=row[6],
                heartbeat_age=max(0.0, now - row[7]),
                held=row[8],
                lease=float(row[9]),
            )
            for row in rows
        ]

    def define_queue(self, limits: QueueLimits) -> None:
        """Keep a queue's limits in the file, for every worker's claims (replacing the old)."""
        future: Future[bool] = Future()
        write = self._submit("define_queue", limits, resolve(future))
        self._committed(write, future, f"the queue {limits.name!r} was not defined")

    def note_executing(self, run_ids: Sequence[str]) -> None:
        """Name the runs whose step bodies, let go of by their runs, still run in this worker.

        Each holds its run's slot in its queue until it returns (see
        :meth:`claim`'s ``executing``); kept in this worker's row for
        :meth:`queue_stats`, replacing the runs named before. Not waited for.
        """
        self._submit("executing", sorted(run_ids), ignore)

    def queue_stats(self) -> list[QueueStats]:
        """Every queue and key with runs waiting, running or held, and every queue defined.

        Held: runs no worker holds (ended, asleep, suspended, or waiting again) whose
        step body, let go of, runs on in a worker, holding the run's slot in its queue.
        """
        with self._reading() as connection:
            version = self._check_schema(connection, writable=False)
            if version < _QUEUES_FROM:
                return []
            limits = self._queue_limits(connection)
            held = []
            if version >= _EXECUTING_FROM:
                held = connection.execute(
                    "SELECT queue, queue_key, count(*) FROM runs WHERE queue IS NOT NULL "
                    "AND run_id IN (SELECT j.value FROM owners AS o, json_each(o.executing) AS j) "
                    f"AND NOT (owner_id IS NOT NULL AND status IN ({_UNFINISHED_SQL})) "
                    "GROUP BY queue, queue_key"
                ).fetchall()
            rows = connection.execute(
                "SELECT queue, queue_key, "
                "sum(CASE WHEN owner_id IS NULL AND (wake_at IS NULL OR wake_at <= ?) "
                "THEN 1 ELSE 0 END), sum(CASE WHEN owner_id IS NOT NULL THEN 1 ELSE 0 END) "
                f"FROM runs WHERE queue IS NOT NULL AND status IN ({_UNFINISHED_SQL}) "
                "GROUP BY queue, queue_key",
                (_clock.time(),),
            ).fetchall()
        return queue_stats(rows, limits, held)

    def set_hint(self, hint: Callable[[str, str], None] | None) -> None:
        """Call ``hint(kind, run_id)`` after this store's own commits that others wait on.

        SQLite cannot hear other processes: their changes are seen by polling.
        """
        self._hint = hint

    def set_on_refusal(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` once the file has refused every write for ``REFUSAL_PATIENCE`` s."""
        self._refusals.set_on_given_up(callback)

    def writes_refused(self) -> str | None:
        """Why runs cannot be recorded here: the file refused every write too long (or ``None``)."""
        return self._refusals.given_up()

    def writes_failing(self) -> tuple[float, str] | None:
        """For how many seconds every write has failed, and what the last try said.

        ``None`` while writes go through. Read from memory, without a call to the
        database: for a health check.
        """
        return self._refusals.lasting_failure()

    def listen_for_refusal(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(why)`` each time writes are refused for ``REFUSAL_PATIENCE`` s.

        ``why`` is what :meth:`writes_refused` says from then on. For a watch of
        a run, woken to say it rather than wait on in silence.

        Returns:
            The call that stops it (calling it again does nothing).
        """
        return self._refusals.listen(listener)

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | Sequence[str] | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> tuple[list[SnapshotRecord], int]:
        """Runs, newest first, filtered; and how many match in all."""
        if resource_id is not None and not self._resources:
            return [], 0  # a file older than resource ids, read without migrating it
        where, params = _filters(workflow_id, status, from_date, to_date, resource_id)
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

    def backup(
        self, destination: str | os.PathLike[str], *, overwrite: bool = False
    ) -> StoreBackup:
        """Copy the store, as it is at one moment, to a new SQLite file, while it is in use.

        Runtimes (this one and others, in other processes) go on writing meanwhile:
        the copy holds what one read transaction sees, a moment between two
        commits, as a crash at that moment would have left the file. It is written
        beside ``destination`` under a temporary name, checked, synced, and only
        then named ``destination``, so a copy that fails half-way (a full disk, a
        kill) leaves nothing there. Copying the file with ``cp`` instead may miss
        what the ``-wal`` file beside it holds.

        The copy keeps no worker of the original: a runtime opened on it takes its
        unfinished runs at once, once their workflows are registered, and runs
        again the steps they ran after the moment of the copy.

        Args:
            destination: The new file. Its folder must exist.
            overwrite: Replace a file at ``destination`` (atomically: it is the old
                file or the whole copy, never a mix).

        Returns:
            What was written: the copy's path, its runs, how many of them had not
            ended, its size and how long it took.

        Raises:
            StoreError: if ``destination`` is this store's own file, exists (without
                ``overwrite``), has a ``-wal``, ``-journal`` or ``-shm`` file beside
                it (a database there is in use or was not closed, and SQLite would
                apply that file to the copy), is in a folder that does not exist, or
                if the copy cannot be written (a full disk: nothing is left behind).
            TypeError: if ``destination`` is not a path.
        """
        if not isinstance(destination, str | os.PathLike):
            raise TypeError(
                f"destination must be a path (str or os.PathLike), not {type(destination).__name__}"
            )
        if not str(os.fspath(destination)).strip():
            raise StoreError("cannot back up to an empty path")
        return backup_sqlite(
            self.path, read_uri(self.path), Path(os.fspath(destination)), overwrite=overwrite
        )

    def abandon(self) -> None:
        """Close as a killed process would: this worker's row and held runs stay as they are.

        Writes already queued still commit (a process killed a moment later
        would have committed them); then nothing. The lease runs out, and
        another worker's reaper hands the runs back, as after a ``SIGKILL``.
        """
        self._abandoned = True
        self.close()

    def close(self) -> None:
        """Finish the queued writes and end the writer thread; reads go on working.

        A store opened read-only (a ``RunReader``) closes its threads' read
        connections too, so that its file can go (its media unmounted) at once;
        a read after that opens a new one.
        """
        if self.readonly:
            _close_readers(self._readers, self._readers_lock, os.getpid())
            self._local = threading.local()
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
        try:
            return self._writer.submit(kind, payload, done)
        except WriterStoppedError:  # closed since the look above
            raise StoreError(f"the run store {self.path} is closed") from None

    def _locked_checkpoint(self, idle: bool) -> None:
        if idle and self._moved() is not None:
            # A log deleted from beside the file: folded in without waiting for a write.
            self._fold_lost_log(self._connection)
            return
        # The lock only when there is something to do: after every commit, a caller
        # committing its create would otherwise make the writer wait for it (a burst of
        # starts kept the writer waiting about 11 ms a commit for nothing).
        if self._checkpoint_due(idle):
            if self._wal_due(idle):
                self._checkpoint_beside_writes()
            with self._write_lock:
                self._checkpoint(idle)

    def _checkpoint_beside_writes(self) -> None:
        """Copy most of the WAL back before taking the write lock for the rest.

        A checkpoint copies the log's pages into the database and syncs both
        files: 25 to 45 ms on a shared 2-core machine, ten times in a burst of
        2,000 starts, every create on its callers' threads waiting behind it. A
        PASSIVE checkpoint never blocks writers, so this first one goes beside
        them; the one under the lock (``_checkpoint``) then copies only what was
        committed meanwhile, which folds the log back whole, so that it starts
        over (``test_a_steady_stream_of_runs_keeps_the_wal_small``).
        """
        with contextlib.suppress(sqlite3.Error):  # a miss is retried under the lock
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _finish(self) -> None:
        """On the writer thread, last: hand back held runs, leave, fold the WAL back in.

        Runs this worker still holds (halted at a stop) go back to the queue at
        once, for the next claim by any worker, rather than after the lease.
        """
        with self._write_lock:
            # No create commits on its caller's thread from now on.
            self._finished = True
            if self._caller_connection is not None:
                self._caller_connection.close()
        connection = self._connection
        if self._abandoned:
            connection.close()
            return
        with contextlib.suppress(sqlite3.Error):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "UPDATE runs SET owner_id = NULL WHERE owner_id = ? "
                f"AND status IN ({_UNFINISHED_SQL})",
                (self.owner_id,),
            )
            connection.execute("DELETE FROM owners WHERE owner_id = ?", (self.owner_id,))
            connection.execute("COMMIT")
            if self._reclaim:  # what is left of a prune's pages, now that no save waits
                connection.executescript("PRAGMA incremental_vacuum;")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()

    def _give_up(self, writes: list[Write]) -> None:
        retried = self._retried_for
        why = "stayed locked" if retried is None else f"could not commit (its last try: {retried})"
        self._fail(writes, StoreUnavailableError(f"the run store {self.path} {why}"))

    def _checkpoint(self, idle: bool) -> None:
        """Copy the WAL back into the database while nothing waits, or when it grew long.

        Pages that pruned runs freed are handed back first (an incremental
        vacuum), so that the checkpoint can shrink the file.
        """
        if self._reclaim and idle:
            self._reclaim = False
            with contextlib.suppress(sqlite3.Error):
                # executescript steps the pragma to its end; execute() would free one page.
                # A few pages at a time: the pages of 20,000 runs held the writer 0.5 s.
                free = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
                self._connection.executescript(f"PRAGMA incremental_vacuum({RECLAIM_PAGES});")
                self._transactions += 1
                left = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
                # The rest at the next idle moment; none if none went (a file made before
                # auto_vacuum was set keeps its free pages for reuse: tried at every idle
                # moment, for as long as the store was open).
                self._reclaim = 0 < left < free
        if self._checkpoint_due(idle):
            with contextlib.suppress(sqlite3.Error):  # PASSIVE never blocks; a miss waits
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._checkpointed_at = self._transactions
            self._checkpoint_time = time.monotonic()

    def _checkpoint_due(self, idle: bool) -> bool:
        """Whether :meth:`_checkpoint` has work: pages to reclaim, or a WAL to fold back."""
        return bool(self._reclaim and idle) or self._wal_due(idle)

    def _wal_due(self, idle: bool) -> bool:
        """Whether the WAL is to be folded back into the database (see ``_checkpoint_due``)."""
        since = self._transactions - self._checkpointed_at
        return since >= CHECKPOINT_AT_LEAST_EVERY or bool(
            idle and since and (since >= 100 or time.monotonic() - self._checkpoint_time >= 1.0)
        )

    def _note_identity(self) -> None:
        """Note which file the store opened, as its path names it now: see :meth:`_moved`."""
        self._where = os.path.abspath(self.path)
        self._identity = _identity(self._where)
        # The WAL and its index beside it, as the store's connections opened them.
        self._sides: dict[str, tuple[int, int]] = {}
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                self._sides[suffix] = _identity(self._where + suffix)
        self._sides_lost = False  # one of them was deleted or replaced since
        self._log_folded = False  # and what the lost log held was folded into the file
        self._moved_at = time.monotonic()
        self._moved_why: str | None = None

    def _moved(self) -> str | None:
        """Why the file at the store's path is no longer the one it writes to, or ``None``.

        A file deleted, moved away or replaced (a new file in its place) while the
        store has it open is still written to, in WAL mode without a word from
        SQLite (in a rollback-journal mode it refuses: ``SQLITE_READONLY_DBMOVED``),
        and what is written is lost: no process opens that file again. Such writes
        are refused instead, as a read-only file's are, until the file is back at
        its path. Looked at once every ``MOVED_EVERY`` seconds at most; a look that
        fails for another reason (a permission) keeps the last answer.
        """
        now = time.monotonic()
        if now - self._moved_at < MOVED_EVERY:
            return self._moved_why
        self._moved_at = now
        was = why = self._moved_why
        try:
            identity = _identity(self._where)
        except FileNotFoundError:
            why = (
                "the file was deleted or moved away while the store had it open, and what "
                f"is written to it is lost once this process ends; put it back at "
                f"{self._where}, or start the process again"
            )
        except OSError:
            pass
        else:
            why = (
                self._side_lost()
                if identity == self._identity
                else f"another file took its place at {self._where} while the store had the "
                "first one open, and what is written to that one is lost once this process "
                "ends; put the first back, or start the process again"
            )
        if why != was:
            # Said when it is seen, whether or not a write meets it (an idle runtime's
            # starts are refused on their callers' threads), and when the file is back.
            if why is None:
                emit(logging.WARNING, "store_file_back", path=self._where)
            elif self._sides_lost:
                emit(logging.ERROR, "store_wal_removed", path=self._where, error=why)
            else:
                emit(logging.ERROR, "store_file_moved", path=self._where, error=why)
        self._moved_why = why
        return why

    def _side_lost(self) -> str | None:
        """Why the WAL (or its index) this store writes through is not the one at its path.

        SQLite deletes a database's ``-wal`` only when the last connection to it
        closes, so while the store is open a ``-wal`` or ``-shm`` gone from beside
        the file, or another file there, was deleted by hand (``rm runs.db-*``,
        a clean-up job): the commits still go to the log this process holds open,
        which no other process reads, and are lost if it is killed. Once lost, for
        good: such a log cannot be put back. What it holds is folded into the file
        at once (see :meth:`_fold_lost_log`), and writes are refused from then on.
        """
        if not self._sides_lost:
            for suffix, known in self._sides.items():
                try:
                    found = _identity(self._where + suffix)
                except FileNotFoundError:
                    found = None
                except OSError:
                    continue
                if found != known:
                    self._sides_lost = True
                    break
            else:
                return None
        name = Path(self._where).name
        folded = (
            "what was committed has been folded back into the file"
            if self._log_folded
            else "what was committed is being folded back into the file"
        )
        return (
            f"its write-ahead log ({name}-wal or {name}-shm) was deleted or replaced while "
            "the store had it open, so that what this process commits would go to a log no "
            f"other process reads, and be lost if it were killed; {folded}, and writes "
            "are refused until the process starts again (stop it gracefully). Never "
            "delete the -wal or -shm file of a database in use"
        )

    def _fold_lost_log(self, connection: sqlite3.Connection) -> None:
        """Fold the log lost from beside the file into the file, once, through ``connection``.

        A checkpoint copies the commits the unlinked ``-wal`` holds into the
        database file, which is still the one at the store's path: a kill after
        this loses nothing that was acknowledged. On the writer's thread with its
        connection, or on a caller's, holding the write lock, with the callers'
        one (before its start is refused); tried again at each look until no
        reader holds it back.
        """
        if not self._sides_lost or self._log_folded:
            return
        with self._write_lock, contextlib.suppress(sqlite3.Error):
            # Waiting for readers to let go as a write waits for a lock (the callers'
            # connection waits for none: see _connect_callers).
            patience = connection.execute("PRAGMA busy_timeout").fetchone()[0]
            connection.execute(f"PRAGMA busy_timeout = {int(LOCK_TIMEOUT * 1000)}")
            try:
                deadline = time.monotonic() + LOCK_TIMEOUT
                while True:
                    busy, frames, _ = connection.execute(
                        "PRAGMA wal_checkpoint(TRUNCATE)"
                    ).fetchone()
                    # Busy at once, no frame counted: another checkpoint was under way
                    # (the writer's beside the writes, which takes no lock of ours).
                    if not (busy and frames < 0) or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(patience)}")
            if not busy:
                self._log_folded = True
                self._moved_why = self._side_lost()
                emit(logging.WARNING, "store_wal_folded_back", path=self._where)

    def _refuse(self, writes: list[Write], reason: str) -> list[Write]:
        """The file refuses every write for ``reason``: the writes that can wait are returned.

        A start (or a restart, a resume, a cancel) is told at once: nothing
        committed it, and its caller, a daemon's request handler say, can try
        again or shed load rather than wait the whole ``CREATE_TIMEOUT``.
        """
        self._retried_for = reason
        self._refusals.refused(reason, len(writes))
        self._refused_now = reason
        return refuse_at_once(writes, f"the run store {self.path}", reason)

    def _commit(self, connection: sqlite3.Connection, writes: list[Write]) -> list[Write]:
        """Run the writes in one transaction and report each outcome; return those to try again.

        A batch that fails for a reason that passes (the database is locked, the
        disk is full, an I/O error) reports nothing and is tried again: no write
        is acknowledged before it is committed. A batch that fails for a reason
        of its own (a record the database rejects) is split, and each write
        tried alone, so that only the bad one fails.
        """
        self._refused_now = None
        moved = self._moved()
        if moved is not None:
            # Refused as a read-only file is: the writes wait here and the starts are
            # told, until the file is back at its path.
            self._fold_lost_log(connection)
            return self._refuse(writes, self._moved_why or moved)
        try:
            # The lock for the statements only: a create committing on its caller's
            # thread waits for it, and need not wait for the callbacks below as well.
            with self._write_lock:
                if self._sides_lost:
                    # A caller's look found the log lost since this one, and folded it:
                    # nothing more goes into it.
                    raise _LostLog
                try:
                    outcome = self._transaction(connection, writes)
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                    raise
                self._transactions += 1
                if self._broken_after is not None:
                    self._broken = self._broken_after
        except _LostLog:
            self._fold_lost_log(connection)
            return self._refuse(writes, self._moved_why or "its write-ahead log was deleted")
        except Exception as exc:  # sqlite3.Error, or a fault of ours: the writer lives on
            for write in writes:
                write.release()  # not committed: a caller may still give up on it
            if _locked(exc):
                emit(logging.WARNING, "store_locked", path=str(self.path), waiting=len(writes))
                self._retried_for = None  # "stayed locked" says it
                self._refusals.failing("another process holds the file's write lock")
                return writes
            if _refused(exc):
                # Read-only for now (a file or a file system made so): every write is
                # refused alike, and each goes through once it is writable again. Failed
                # instead, a run's failure was refused too and nobody heard of its end.
                if not _refused_for_good(exc):
                    self._retried_for = str(exc)
                    self._refusals.refused(str(exc), len(writes))
                    return writes
                return self._refuse(writes, str(exc))
            if _passing(exc):
                self._retried_for = str(exc)
                if _full(exc):
                    # Said when it begins, after REFUSAL_PATIENCE and when it ends, not at
                    # every try (a log on the same full disk fails at each line); once it
                    # has lasted, starts and waits are told, as for a refusal.
                    self._refusals.full(str(exc), len(writes))
                    return writes
                self._refusals.failing(str(exc))
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
            self._fail(writes, StoreError(self._refusal(connection, writes, exc)))
            return []
        self._retried_for = None
        self._refusals.accepted()
        outcome.apply(self)
        # Callers blocked in create() first; then the callbacks that tell actors.
        results, errors = outcome.results, outcome.errors
        creates = [write for write in writes if write.kind == "create" and not write.abandoned]
        for write in creates:
            error = errors.get(id(write))
            call(write.done, None if error else results.get(id(write), False), error)
        for write in writes:
            if write.kind != "create":
                error = errors.get(id(write))
                call(write.done, None if error else results.get(id(write)), error)
        outcome.send_hints(self._hint)
        return []

    def _sift(self, writes: list[Write]) -> list[Write]:
        """The writes queued behind a batch to be tried again that are not failed at once.

        While the file refuses writes for good, those it fails at once (a start, a
        claim, a heartbeat: :func:`~runtime._stores._writer.refuse_at_once`) are
        told so now, not once a batch has room for them: behind more refused saves
        than a batch takes, they waited out their whole timeout. The others (the
        runs' saves) wait in order.
        """
        reason = self._refused_now
        if reason is None:
            return writes
        return refuse_at_once(writes, f"the run store {self.path}", reason)

    def _refusal(
        self, connection: sqlite3.Connection, writes: list[Write], exc: BaseException
    ) -> str:
        """What to tell the caller of a write the database refused for good."""
        message = f"cannot write to the run store {self.path}: {exc}"
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_TOOBIG:
            runs = ", ".join(sorted({repr(run_id) for w in writes for run_id in _run_ids(w)}))
            try:
                limit = f"{connection.getlimit(sqlite3.SQLITE_LIMIT_LENGTH):,} bytes"
            except sqlite3.Error:
                limit = "its length limit"
            holder = f"run {runs} holds" if runs else "the write holds"
            message += (
                f" ({holder} a value larger than SQLite stores in one field, {limit}: "
                "keep large data outside the run and pass a reference to it)"
            )
        return message

    def _commit_alone(self, connection: sqlite3.Connection, writes: list[Write]) -> list[Write]:
        """Commit each write in a transaction of its own; return those to try again."""
        for index, write in enumerate(writes):
            if self._commit(connection, [write]):
                # The failure passes: this write and the rest wait, in order, for the retry.
                return writes[index:]
        return []

    def _transaction(self, connection: sqlite3.Connection, writes: list[Write]) -> _Outcome:
        """The writes in one committed transaction, and what came of each.

        Creates go first, then every save, each kind in one multi-row statement
        (the sqlite3 module releases and retakes the GIL around every call, which
        under load costs more than the SQL itself); then the other writes
        (replace, claim, delete, ...) in the order they came. What changes this
        worker's held runs is applied only once the transaction has committed.
        """
        outcome = _Outcome()
        creates = [write for write in writes if write.kind == "create" and not write.abandoned]
        saves = [write for write in writes if write.kind == "save"]
        others = [write for write in writes if write.kind not in ("create", "save")]
        self._broken_after = None
        connection.execute("BEGIN IMMEDIATE")
        refused = self._refuse_full(connection, creates, outcome)
        if refused:
            creates = [write for write in creates if id(write) not in refused]
        inserted = self._insert(connection, [write.payload for write in creates])
        self._upsert(connection, saves, outcome)
        for write in others:
            outcome.results[id(write)] = self._apply(connection, write, outcome)
        # A create whose caller gave up meanwhile must not commit: take() decides.
        for write in creates:
            record, hold = write.payload
            run_id = record.run_id
            if not write.take() and run_id in inserted:
                connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                inserted.discard(run_id)
            outcome.results[id(write)] = run_id in inserted
            if run_id in inserted:
                if hold:
                    outcome.hold[run_id] = 1
                else:
                    outcome.hint("queued", run_id)
        connection.execute("COMMIT")
        return outcome

    def _insert(
        self, connection: sqlite3.Connection, creates: list[tuple[SnapshotRecord, bool]]
    ) -> set[str]:
        """Insert new runs; return the ids that were new (the others are taken)."""
        inserted: set[str] = set()
        rows = [self._create_row(record, hold) for record, hold in creates]
        for chunk in _chunks(rows):
            # No conflict target: a taken run id and a taken idempotency key both
            # leave the row out (its create returns False).
            found = connection.execute(
                _inserts(len(chunk)), [value for row in chunk for value in row]
            ).fetchall()
            inserted.update(row[0] for row in found)
        return inserted

    def _insert_one(
        self, connection: sqlite3.Connection, record: SnapshotRecord, hold: bool
    ) -> bool:
        """Insert one new run in a statement of its own (autocommit); whether it was new.

        The same row and conflict rule as :meth:`_insert`: a taken run id or
        idempotency key leaves it out.
        """
        cursor = connection.execute(_INSERT_ONE, self._create_row(record, hold))
        return cursor.rowcount == 1

    def _create_row(self, record: SnapshotRecord, hold: bool) -> tuple[Any, ...]:
        """The values of a new run's row, as ``_CREATE_ROW`` binds them (see ``_NO_TEXT``)."""
        r = record
        return (
            r.run_id,
            r.workflow_id,
            r.status,
            r.seq,
            r.created_at,
            r.updated_at,
            r.trace_id,
            self.owner_id if hold else _NO_TEXT,
            bytearray(r.data),
            1 if hold else 0,
            _NO_NUMBER if r.wake_at is None else r.wake_at,
            _NO_TEXT if r.resource_id is None else r.resource_id,
            _NO_NUMBER if r.deadline is None else r.deadline,
            _NO_TEXT if r.queue is None else r.queue,
            _NO_TEXT if r.queue_key is None else r.queue_key,
            r.priority,
            rank(r.created_at, r.priority),
            _NO_TEXT if r.idempotency_key is None else r.idempotency_key,
        )

    def _upsert(
        self, connection: sqlite3.Connection, saves: list[Write], outcome: _Outcome
    ) -> None:
        """Store the saved records of runs this worker holds (or nobody does); note the fenced.

        A record of a run this worker holds is written only if the run is still
        its own at the same epoch; one of a run it holds not is written only if
        nobody holds the run. A run whose record was not written because
        another worker holds it now is fenced: the writes that carried it fail
        with :class:`RunFencedError`.
        """
        rows: list[tuple[SnapshotRecord, tuple[Any, ...]]] = []
        stored: list[SnapshotRecord] = []  # the records written or tried: their parts go too
        expected: dict[str, int] = {}
        carriers: dict[str, list[Write]] = {}
        unheld: dict[str, list[Write]] = {}
        # Which run each id names, by its creation time: a record of a run deleted since
        # whose id a new run took is not the new run's to write, fence or release.
        saved_made: dict[str, float] = {}
        releases: dict[str, tuple[str, float]] = {}
        held = self._held
        for write in saves:
            for record in write.payload:
                run_id = record.run_id
                if run_id in self._fenced:
                    outcome.errors[id(write)] = _fenced(run_id)
                    continue
                stored.append(record)
                saved_made[run_id] = record.created_at
                epoch = held.get(run_id)
                if epoch is None:
                    rows.append((record, self._row(record, *_stored(record), None, 0)))
                    unheld.setdefault(run_id, []).append(write)
                else:
                    rows.append((record, self._row(record, *_stored(record), self.owner_id, epoch)))
                    expected[run_id] = epoch
                    carriers.setdefault(run_id, []).append(write)
                if record.status in SETTLED_STATUSES or record.wake_at is not None:
                    releases[run_id] = (record.status, record.created_at)
        written: set[str] = set()
        made: dict[str, float] = {}  # the creation time of each saved id's row, as it is now
        for chunk in _chunks(_without_superseded(rows)):
            # Only runs that have a row: a save still on its way when its run was
            # deleted must not bring it back (the INSERT is for the upsert's
            # multi-row update; only create() records a run).
            found = connection.execute(
                _upserts(len(chunk)), [value for row in chunk for value in row]
            ).fetchall()
            for run_id, created_at in found:
                written.add(run_id)
                made[run_id] = created_at
        # Runs not written: a run with no row any more (deleted while the save was on
        # its way) or another run of that id is left alone; one another worker holds
        # now is fenced.
        unwritten = [run_id for run_id in expected if run_id not in written]
        for ids in _chunks(unwritten):
            found = connection.execute(
                "SELECT run_id, owner_id, epoch, created_at, status FROM runs WHERE run_id IN "
                f"({', '.join('?' * len(ids))})",
                ids,
            ).fetchall()
            for run_id, owner_id, epoch, created_at, status in found:
                made[run_id] = created_at
                if created_at == saved_made[run_id] and (
                    owner_id != self.owner_id or epoch != expected[run_id]
                ):
                    outcome.fenced.add(run_id)
                    if owner_id is None and status in TERMINAL_STATUSES:
                        outcome.ended.add(run_id)  # a cancel ended it: no worker took it
                    for write in carriers[run_id]:
                        outcome.errors[id(write)] = _fenced(run_id)
        taken = [run_id for run_id in unheld if run_id not in written]
        taken_by_others: set[str] = set()
        for ids in _chunks(taken):
            found = connection.execute(
                "SELECT run_id, owner_id, created_at FROM runs WHERE run_id IN "
                f"({', '.join('?' * len(ids))})",
                ids,
            ).fetchall()
            for run_id, owner_id, created_at in found:
                made[run_id] = created_at
                if owner_id is not None and created_at == saved_made[run_id]:
                    # Another worker holds it: not this one's to write.
                    taken_by_others.add(run_id)
                    for write in unheld[run_id]:
                        outcome.errors[id(write)] = _fenced(run_id)
        for run_id, (status, created_at) in releases.items():
            if run_id in written and made[run_id] == created_at:
                outcome.releasing[run_id] = status
                outcome.hint("settled" if status in SETTLED_STATUSES else "queued", run_id)
        # Parts of records another worker's row holds are never read, and those of a
        # run that is gone (or is another run now) would outlive it: leave them out.
        lost = outcome.fenced | taken_by_others
        self._save_parts(
            connection,
            [r for r in stored if r.run_id not in lost and made.get(r.run_id) == r.created_at],
            expected,
        )

    def _save_parts(
        self,
        connection: sqlite3.Connection,
        records: list[SnapshotRecord],
        epochs: dict[str, int],
    ) -> None:
        """Write the parts of the saved records kept in parts: what changed, or all of them.

        See :func:`~runtime._stores._parts.plan_parts`. The parts of the batch
        take one more statement (and, rarely, one that deletes some). Records
        of runs held here (``epochs``) that resume suspensions carry out their
        resume requests too (see :meth:`_take_requests`).
        """
        if any(record.taken for record in records):
            self._take_requests(connection, records, epochs)
        broken = self._broken_after = set(self._broken)
        writes = plan_parts(records, broken)
        if writes:
            self._write_parts(connection, writes)

    def _write_parts(
        self, connection: sqlite3.Connection, writes: dict[tuple[str, int], PartWrites]
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
        if gone:
            # One probe of the primary key a part. SQLite searched a row-value IN (VALUES
            # ...) by run_id alone (one triple) or scanned the table (several): a part
            # dropped cost a read of every part of the run, or of every run, and an item
            # of a foreach over a nested workflow drops one.
            connection.executemany(
                "DELETE FROM run_parts WHERE run_id = ? AND lineage = ? AND key = ?", gone
            )
        new = [
            (run_id, lineage, key, bytearray(part))  # see _NO_TEXT
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

    def _row(
        self,
        r: SnapshotRecord,
        blob: bytes,
        lineage: int | None,
        owner_id: str | None,
        epoch: int,
    ) -> tuple[Any, ...]:
        """The values of a saved record's row, as ``_ROW`` binds them (see ``_NO_TEXT``)."""
        return (
            r.run_id,
            r.workflow_id,
            r.status,
            r.seq,
            r.created_at,
            r.updated_at,
            r.trace_id,
            _NO_TEXT if owner_id is None else owner_id,
            bytearray(blob),
            _NO_NUMBER if lineage is None else lineage,
            epoch,
            _NO_NUMBER if r.wake_at is None else r.wake_at,
            _NO_TEXT if r.resource_id is None else r.resource_id,
            _NO_NUMBER if r.deadline is None else r.deadline,
        )

    def _row_exists(self, connection: sqlite3.Connection) -> bool:
        found = connection.execute(
            "SELECT 1 FROM owners WHERE owner_id = ?", (self.owner_id,)
        ).fetchone()
        return found is not None

    def _write_worker_row(self, connection: sqlite3.Connection) -> None:
        role, workflows, concurrency = self._joined
        connection.execute(
            "INSERT OR REPLACE INTO owners (owner_id, host, pid, heartbeat_at, role, workflows, "
            "concurrency, lease, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.owner_id,
                this_host(),
                os.getpid(),
                _clock.time(),  # a lease is judged by callboard's clock (virtual in a test)
                role,
                json.dumps(workflows),
                concurrency,
                self.lease,
                self._started_at,
            ),
        )

    def _apply(self, connection: sqlite3.Connection, write: Write, outcome: _Outcome) -> Any:
        kind, payload = write.kind, write.payload
        if kind != "replace" and not write.take():
            # Its caller gave up waiting, and was told it did not happen: it must not.
            return None
        if kind == "delete":
            return (
                connection.execute(
                    f"DELETE FROM runs WHERE run_id = ? AND status IN ({_TERMINAL_SQL})",
                    (payload,),
                ).rowcount
                == 1
            )
        if kind == "replace":
            return self._replace(connection, write, outcome)
        if kind == "claim":
            return self._claim(connection, payload, outcome)
        if kind == "hand_back":
            return self._hand_back(connection, payload, outcome)
        if kind == "reap":
            return self._reap(connection, outcome)
        if kind == "request_cancel":
            cursor = connection.execute(
                "UPDATE runs SET cancel_requested = 1 WHERE run_id = ? "
                f"AND status IN ({_UNFINISHED_SQL}) AND NOT cancel_requested",
                (payload,),
            )
            if cursor.rowcount == 1:
                outcome.hint("cancel", payload)
            return cursor.rowcount == 1
        if kind == "request_resume":
            return self._request_resume(connection, payload, outcome)
        if kind == "drop_resume_request":
            connection.execute(
                "DELETE FROM resume_requests WHERE run_id = ? AND path = ? AND request_id = ?",
                payload,
            )
            return None
        if kind == "prune":
            ended_before, statuses, most = payload
            if not most:  # the pass is over (see _pruned)
                self._reclaim = True
                return 0
            # A run whose start its queue's rate window still counts is kept: pruned, it
            # would free a start in that window.
            queues = connection.execute("PRAGMA user_version").fetchone()[0] >= _QUEUES_FROM
            counted, now = (_COUNTED_START, [_clock.time()]) if queues else ("0", [])
            marks = ", ".join("?" * len(statuses))
            deleted = connection.execute(
                "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs AS r "
                f"WHERE status IN ({marks}) AND updated_at < ? AND NOT {counted} LIMIT ?)",
                (*statuses, ended_before, *now, most),
            ).rowcount
            return int(deleted)
        if kind == "heartbeat":
            cursor = connection.execute(
                "UPDATE owners SET heartbeat_at = ? WHERE owner_id = ?",
                (_clock.time(), self.owner_id),
            )
            if cursor.rowcount == 1 and not self._lost_row:
                return True
            # Reaped while it did not beat (stopped, or starved): its runs went back to
            # the queue, and the writes of those it still thinks it holds are fenced.
            emit(logging.WARNING, "worker_lease_lost", path=str(self.path), worker=self.owner_id)
            if cursor.rowcount != 1:
                self._write_worker_row(connection)
            self._lost_row = False  # said once
            outcome.fence_all = True
            # A run claimed after the row was deleted (the worker woke, and claimed before
            # it beat) is still its own at the epoch it knows: nobody else took it, and
            # with the row back nobody hands it back. It stays held (see _Outcome.apply).
            with self._held_lock:
                held = dict(self._held)
            for chunk in _chunks(sorted(held)):
                marks = ", ".join("?" * len(chunk))
                outcome.kept.update(
                    run_id
                    for run_id, epoch in connection.execute(
                        f"SELECT run_id, epoch FROM runs WHERE owner_id = ? "
                        f"AND run_id IN ({marks})",
                        (self.owner_id, *chunk),
                    )
                    if held.get(run_id) == epoch
                )
            return False
        if kind == "define_queue":
            limits: QueueLimits = payload
            connection.execute(
                "INSERT OR REPLACE INTO queues (name, concurrency, key_concurrency, rate_count, "
                "rate_period, max_queued, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*limits, time.time()),
            )
            return None
        if kind == "executing":
            connection.execute(
                "UPDATE owners SET executing = ? WHERE owner_id = ?",
                (json.dumps(payload), self.owner_id),
            )
            return None
        if kind == "join":
            if not self._row_exists(connection):
                # Reaped before this join made the row anew: the next heartbeat says so.
                self._lost_row = True
                outcome.fence_all = True
            self._write_worker_row(connection)
            return None
        raise AssertionError(f"unknown write {kind!r}")

    def _replace(self, connection: sqlite3.Connection, write: Write, outcome: _Outcome) -> bool:
        record, expected_seq, hold, reopen, canceling, requested = write.payload
        # A replace whose caller gave up waiting must not happen: take() decides.
        if not write.take():
            return False
        if reopen and record.queue is not None:
            full = self._restart_full(connection, record)
            if full is not None:  # refused as a start into a full queue is: nothing changes
                outcome.errors[id(write)] = full
                return False
        settles = record.status in SETTLED_STATUSES
        keep = hold and not settles
        statement = _REOPEN if reopen else _REPLACE_CANCELING if canceling else _REPLACE
        taken = list(record.taken)
        condition: list[Any] = []
        if taken:
            paths = ", ".join("?" * len(taken))
            if requested is None:
                # Not while a resume request waits for a suspension it resumes: that one won.
                statement = statement.replace(
                    "RETURNING epoch",
                    "AND NOT EXISTS (SELECT 1 FROM resume_requests AS q WHERE "
                    f"q.run_id = runs.run_id AND q.path IN ({paths})) RETURNING epoch",
                )
            else:
                # Only while the request it carries out waits: one read before another
                # worker carried it out must not resume a later suspension of that path.
                statement = statement.replace(
                    "RETURNING epoch",
                    "AND EXISTS (SELECT 1 FROM resume_requests AS q WHERE q.run_id = runs.run_id "
                    f"AND q.request_id = ? AND q.path IN ({paths})) RETURNING epoch",
                )
                condition.append(requested)
            condition += taken
        row = connection.execute(
            statement,
            (
                record.status,
                record.seq,
                record.updated_at,
                record.data,
                record.wake_at,
                record.deadline,
                self.owner_id if keep else None,
                1 if keep else 0,
                record.seq,
                record.run_id,
                expected_seq,
                record.seq,
                record.created_at,  # the run read, not a new one given its id since
                *condition,
            ),
        ).fetchone()
        if row is None:
            return False
        if reopen:  # restarted: what waited for the run before is not the new run's
            connection.execute("DELETE FROM resume_requests WHERE run_id = ?", (record.run_id,))
        elif taken:
            _drop_requests(connection, record.run_id, taken)
        if keep:
            outcome.hold[record.run_id] = row[0]
        else:
            outcome.releasing[record.run_id] = record.status
            outcome.hint("settled" if settles else "queued", record.run_id)
        return True

    def _request_resume(
        self, connection: sqlite3.Connection, payload: Any, outcome: _Outcome
    ) -> ResumeRequested:
        run_id, path, data, request_id, seq, created_at = payload
        recorded = connection.execute(
            "INSERT INTO resume_requests (run_id, path, data, request_id, requested_at) "
            "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ? "
            f"AND created_at = ? AND status NOT IN ({_TERMINAL_SQL}) AND taken_seq <= ?) "
            "ON CONFLICT DO NOTHING",
            (run_id, path, data, request_id, time.time(), run_id, created_at, seq),
        ).rowcount
        if recorded:
            outcome.hint("resume", run_id)
            return "recorded"
        waiting = connection.execute(
            "SELECT request_id FROM resume_requests WHERE run_id = ? AND path = ?", (run_id, path)
        ).fetchone()
        if waiting is None:
            return "changed"
        return "recorded" if waiting[0] == request_id else "requested"

    def _take_requests(
        self, connection: sqlite3.Connection, records: list[SnapshotRecord], epochs: dict[str, int]
    ) -> None:
        """Carry out the resume requests the saved records took (see ``SnapshotRecord.taken``).

        A record that resumes suspensions is a running run's, held here (its run
        actor took a request): written, the run's row holds it (or a later record
        of this worker's) at the same epoch. Its requests go, and its seq is the
        run's ``taken_seq`` from now on (see :meth:`request_resume`).
        """
        for record in records:
            if not record.taken or record.run_id not in epochs:
                continue
            written = connection.execute(
                "UPDATE runs SET taken_seq = max(taken_seq, ?) WHERE run_id = ? AND seq >= ? "
                "AND owner_id = ? AND epoch = ? AND created_at = ?",
                (
                    record.seq,
                    record.run_id,
                    record.seq,
                    self.owner_id,
                    epochs[record.run_id],
                    record.created_at,
                ),
            ).rowcount
            if written:
                _drop_requests(connection, record.run_id, record.taken)

    def _claim(
        self, connection: sqlite3.Connection, payload: Any, outcome: _Outcome
    ) -> list[Claimed]:
        workflow_ids, limit, skip, busy, executing = payload
        now = _clock.time()
        admission = self._admission(connection, now, [*busy, *executing])
        limited = admission is not None and admission.limited()
        skipping, skipped = _skipping(skip, busy)
        taken: list[str] = []
        for _ in range(_CLAIM_ROUNDS if limited else 1):
            want = limit - len(taken)
            where = (
                f"WHERE {_QUEUED} AND (wake_at IS NULL OR wake_at <= ?) "
                f"AND workflow_id IN {_AMONG}{skipping}"
            )
            params: list[Any] = [now, _listed(workflow_ids), *skipped]
            if limited and admission is not None:
                closed = admission.closed_queues()
                if closed:
                    where += (
                        f" AND (queue IS NULL OR queue NOT IN ({', '.join('?' * len(closed))}))"
                    )
                    params.extend(closed)
                buckets = admission.closed_buckets()
                if buckets:
                    where += (
                        " AND (queue IS NULL OR (queue || char(31) || coalesce(queue_key, '')) "
                        f"NOT IN ({', '.join('?' * len(buckets))}))"
                    )
                    params.extend(bucket_key(bucket) for bucket in buckets)
                rated = admission.rated_buckets()
                if rated:  # a run that started before (and woke, or was recovered) may go
                    where += (
                        " AND (queue IS NULL OR (started_at IS NOT NULL AND NOT restarting) "
                        "OR (queue || char(31) || "
                        f"coalesce(queue_key, '')) NOT IN ({', '.join('?' * len(rated))}))"
                    )
                    params.extend(bucket_key(bucket) for bucket in rated)
            rows = connection.execute(
                f"SELECT run_id, queue, queue_key, started_at, restarting FROM runs {where} "
                "ORDER BY rank LIMIT ?",
                (*params, want),
            ).fetchall()
            chosen = [
                run_id
                for run_id, queue, key, started_at, restarting in rows
                if admission is None
                or admission.admit(queue, key, first=started_at is None or bool(restarting))
            ][:want]
            if chosen:
                chosen_marks = ", ".join("?" * len(chosen))
                connection.execute(
                    "UPDATE runs SET owner_id = ?, epoch = epoch + 1, "
                    "started_at = CASE WHEN restarting THEN ? ELSE coalesce(started_at, ?) END, "
                    f"restarting = 0 WHERE run_id IN ({chosen_marks}) AND {_QUEUED}",
                    (self.owner_id, now, now, *chosen),
                )
                taken.extend(chosen)
            if len(taken) >= limit or len(rows) < want:
                break  # enough, or nothing more waits: a round skips only what filled up
        taken = self._retaken(connection, taken, outcome)
        if not taken:
            return []
        claimed = []
        for ids in _chunks(taken):
            marks = ", ".join("?" * len(ids))
            # Read in this transaction, on this connection: the rows as just claimed.
            found = self._select(
                _RUNS,
                f"WHERE r.run_id IN ({marks}) AND r.owner_id = ?",
                (*ids, self.owner_id),
                extra=", r.epoch, r.cancel_requested, r.queue",
                order="ORDER BY r.created_at",
                connection=connection,
            )
            for record, row in found:  # oldest first, as selected
                outcome.hold[record.run_id] = row[9]
                claimed.append(
                    Claimed(record=record._replace(queue=row[11]), cancel_requested=bool(row[10]))
                )
        return claimed

    def _retaken(
        self, connection: sqlite3.Connection, taken: list[str], outcome: _Outcome
    ) -> list[str]:
        """The claimed runs but those this store thought it held, which go back to the queue.

        A claim finds a run it holds in the queue only if this worker was reaped
        (its lease ran out while it stalled) and has not heard so yet: the run's
        actor here may still be in a step. Claimed again, the run would get a
        second actor beside it, and both would write under the new epoch. It
        goes back at once, fenced off here: its actor's next write is refused,
        the actor lets go, and then the run is claimed anew.
        """
        with self._held_lock:
            # Not one an earlier write of this transaction let go of (put to sleep, due).
            retaken = sorted(
                run_id
                for run_id in taken
                if run_id in self._held and run_id not in outcome.releasing
            )
        if not retaken:
            return taken
        for ids in _chunks(retaken):
            connection.execute(
                f"UPDATE runs SET owner_id = NULL WHERE run_id IN ({', '.join('?' * len(ids))}) "
                "AND owner_id = ?",
                (*ids, self.owner_id),
            )
        for run_id in retaken:
            outcome.fenced.add(run_id)
            outcome.hint("queued", run_id)
        emit(logging.WARNING, "runs_lost_while_stalled", path=str(self.path), runs=retaken)
        gone = set(retaken)
        return [run_id for run_id in taken if run_id not in gone]

    def _queue_limits(self, connection: sqlite3.Connection) -> dict[str, QueueLimits]:
        rows = connection.execute(
            "SELECT name, concurrency, key_concurrency, rate_count, rate_period, max_queued "
            "FROM queues"
        ).fetchall()
        limits = {}
        for row in rows:
            damage = _queue_damage(row)
            if damage is None:
                limits[row[0]] = QueueLimits(*row)
                continue
            # Written by hand: its limits are unknown, so none of its runs starts (a
            # limit may guard a service), and the other queues go on.
            limits[str(row[0])] = QueueLimits(str(row[0]), concurrency=0)
            said = (str(row[0]), damage)
            if said not in self._damage_said:
                self._damage_said.add(said)
                emit(
                    logging.ERROR,
                    "queue_damaged",
                    path=str(self.path),
                    queue=str(row[0]),
                    error=f"the store's row is damaged: {damage}",
                    hint="none of its runs starts until the queue is defined again",
                )
        return limits

    def _hand_back(
        self, connection: sqlite3.Connection, run_ids: list[str], outcome: _Outcome
    ) -> int:
        with self._held_lock:
            held = {run_id: self._held[run_id] for run_id in run_ids if run_id in self._held}
        handed = 0
        for run_id, epoch in sorted(held.items()):
            cursor = connection.execute(
                "UPDATE runs SET owner_id = NULL, started_at = CASE WHEN status = 'pending' "
                "THEN NULL ELSE started_at END WHERE run_id = ? AND owner_id = ? AND epoch = ? "
                f"AND status IN ({_UNFINISHED_SQL})",
                (run_id, self.owner_id, epoch),
            )
            outcome.releasing[run_id] = "queued"  # or not its own any more: held no longer
            if cursor.rowcount == 1:
                handed += 1
                outcome.hint("queued", run_id)
        return handed

    def _admission(
        self, connection: sqlite3.Connection, now: float, busy: Collection[str] = ()
    ) -> Admission | None:
        """What runs of limited queues execute, and started within their windows, right now.

        Read inside the claim's transaction, which holds the file's write lock:
        no other worker claims meanwhile, so the counts stay true until it commits.
        A run held by a worker executes until it ends; so does a ``busy`` one,
        whatever its status, until its step body here returns: this worker lost it
        while it stalled, or its run let go of the body (cancelled, timed out), which
        runs on.
        """
        limits = self._queue_limits(connection)
        if not limits:
            return None
        running: dict[Bucket, int] = {
            (queue, key): count
            for queue, key, count in connection.execute(
                "SELECT queue, queue_key, count(*) FROM runs WHERE queue IS NOT NULL AND "
                f"((owner_id IS NOT NULL AND status IN ({_UNFINISHED_SQL})) "
                "OR run_id IN (SELECT value FROM json_each(?))) "
                "GROUP BY queue, queue_key",
                (json.dumps(sorted(busy)),),
            ).fetchall()
        }
        started: dict[Bucket, int] = {}
        for name, queue_limits in limits.items():
            if queue_limits.rate_count is None or queue_limits.rate_period is None:
                continue
            for key, count in connection.execute(
                "SELECT queue_key, count(*) FROM runs WHERE queue = ? AND started_at > ? "
                "GROUP BY queue_key",
                (name, now - queue_limits.rate_period),
            ).fetchall():
                started[(name, key)] = count
        return Admission(limits, running, started)

    def _refuse_full(
        self, connection: sqlite3.Connection, creates: list[Write], outcome: _Outcome
    ) -> set[int]:
        """The creates (by ``id``) into a queue whose ``max_queued`` runs wait: refused."""
        into_queues = [write for write in creates if write.payload[0].queue is not None]
        if not into_queues:
            return set()
        limits = self._queue_limits(connection)
        waiting: dict[str, int] = {}
        refused: set[int] = set()
        now = _clock.time()
        for write in into_queues:
            record = write.payload[0]
            queue_limits = limits.get(record.queue)
            if queue_limits is None or queue_limits.max_queued is None:
                continue
            if record.queue not in waiting:
                waiting[record.queue] = connection.execute(
                    f"SELECT count(*) FROM runs WHERE queue = ? AND {_QUEUED} "
                    "AND (wake_at IS NULL OR wake_at <= ?)",
                    (record.queue, now),
                ).fetchone()[0]
            if waiting[record.queue] >= queue_limits.max_queued:
                refused.add(id(write))
                outcome.errors[id(write)] = _queue_full(record, queue_limits.max_queued)
            else:
                waiting[record.queue] += 1
        return refused

    def _restart_full(
        self, connection: sqlite3.Connection, record: SnapshotRecord
    ) -> QueueFullError | None:
        """The error of a restart into a queue whose ``max_queued`` runs wait, if it is full.

        Counted as :meth:`_refuse_full` counts for a start, in the same write transaction.
        """
        queue_limits = self._queue_limits(connection).get(record.queue or "")
        if queue_limits is None or queue_limits.max_queued is None:
            return None
        waiting = connection.execute(
            f"SELECT count(*) FROM runs WHERE queue = ? AND {_QUEUED} "
            "AND (wake_at IS NULL OR wake_at <= ?)",
            (record.queue, _clock.time()),
        ).fetchone()[0]
        if waiting < queue_limits.max_queued:
            return None
        return restart_refused(queue_limits.name, queue_limits.max_queued, record.run_id)

    def _reap(self, connection: sqlite3.Connection, outcome: _Outcome) -> int:
        owners = connection.execute(
            "SELECT owner_id, host, pid, heartbeat_at, lease FROM owners WHERE owner_id != ?",
            (self.owner_id,),
        ).fetchall()
        dead = {
            owner_id: reason
            for owner_id, host, pid, heartbeat_at, lease in owners
            if (reason := _death(host, pid, heartbeat_at, lease)) is not None
        }
        for owner_id, reason in dead.items():
            connection.execute("DELETE FROM owners WHERE owner_id = ?", (owner_id,))
            emit(
                logging.WARNING,
                "worker_reaped",
                path=str(self.path),
                worker=owner_id,
                reason=reason,
            )
        rows = connection.execute(
            "UPDATE runs SET owner_id = NULL WHERE owner_id IS NOT NULL AND owner_id != ? "
            f"AND status IN ({_UNFINISHED_SQL}) "
            "AND owner_id NOT IN (SELECT owner_id FROM owners) RETURNING run_id",
            (self.owner_id,),
        ).fetchall()
        for (run_id,) in rows:
            outcome.hint("queued", run_id)
        if rows:
            # Runs of the workers reaped just now, or of workers with no row at all (their
            # row was deleted: reaped by another worker before it could hand them back).
            emit(
                logging.WARNING,
                "runs_handed_back",
                path=str(self.path),
                runs=len(rows),
                reaped=sorted(dead),
                first=[run_id for (run_id,) in rows[:5]],
            )
        return len(rows)

    def _fail(self, writes: list[Write], error: StoreError) -> None:
        emit(logging.ERROR, "store_write_failed", path=str(self.path), error=str(error))
        for write in writes:
            if write.kind == "save":
                # The parts of these lineages miss the changes of these records.
                self._broken.update(r.parts.lineage for r in write.payload if r.parts is not None)
        for write in writes:
            call(write.done, None, error)


class _Outcome:
    """What one transaction did: each write's result or error, and what to do once committed."""

    __slots__ = (
        "ended",
        "errors",
        "fence_all",
        "fenced",
        "hints",
        "hold",
        "kept",
        "releasing",
        "results",
    )

    def __init__(self) -> None:
        self.results: dict[int, Any] = {}
        self.errors: dict[int, BaseException] = {}
        self.hold: dict[str, int] = {}  # runs this worker holds from now, with their epochs
        self.releasing: dict[str, str] = {}  # runs it holds no more (settled, asleep, queued)
        self.fenced: set[str] = set()  # runs another worker took, or that ended meanwhile
        self.ended: set[str] = set()  # of those, runs a compare-and-set ended (a cancel)
        self.fence_all = False  # this worker was reaped: every run it held went back
        self.kept: set[str] = set()  # but these: still its own, at its epoch (claimed since)
        self.hints: list[tuple[str, str]] = []

    def hint(self, kind: str, run_id: str) -> None:
        self.hints.append((kind, run_id))

    def apply(self, store: SQLiteStore) -> None:
        """Once committed: change the store's held runs."""
        if not (self.hold or self.releasing or self.fenced or self.fence_all):
            return
        with store._held_lock:
            held = store._held
            if self.fence_all:
                self.fenced.update(run_id for run_id in held if run_id not in self.kept)
            for run_id in self.releasing:
                held.pop(run_id, None)
            for run_id in self.fenced:
                held.pop(run_id, None)
                store._fenced.add(run_id)
                if run_id in self.ended:
                    # Canceled while this worker's actor had just taken it (a wake, a
                    # claim): the cancel won; the actor stops, and nothing is wrong.
                    emit(logging.INFO, "run_ended_meanwhile", run_id=run_id)
                else:
                    emit(logging.WARNING, "run_fenced", run_id=run_id, worker=store.owner_id)
            for run_id, epoch in self.hold.items():
                held[run_id] = epoch
                store._fenced.discard(run_id)

    def send_hints(self, hint: Callable[[str, str], None] | None) -> None:
        if hint is None:
            return
        for kind, run_id in self.hints:
            try:
                hint(kind, run_id)
            except Exception:
                emit(logging.ERROR, "store_hint_failed", kind=kind, run_id=run_id, exc_info=True)


def _queue_full(record: SnapshotRecord, limit: int) -> QueueFullError:
    return QueueFullError(
        f"queue {record.queue!r} has {limit} runs waiting (max_queued); run {record.run_id!r} "
        "was not recorded: start it again once the queue has drained",
        queue=record.queue or "",
        limit=limit,
        run_id=record.run_id,
    )


def _fenced(run_id: str) -> RunFencedError:
    return RunFencedError(
        f"run {run_id!r} is held by another worker now (this one's lease ran out, or it "
        "never held it): this worker's write was not applied",
        run_id=run_id,
    )


_COUNTED_START: Final = (
    "(r.queue IS NOT NULL AND r.started_at IS NOT NULL AND EXISTS (SELECT 1 FROM queues AS q "
    "WHERE q.name = r.queue AND q.rate_period IS NOT NULL AND r.started_at > ? - q.rate_period))"
)
"""A run whose start its queue's rate window still counts (``?``: now)."""

_AMONG: Final = "(SELECT value FROM json_each(?))"
"""A list of values as one parameter (:func:`_listed`), for ``IN``: one statement whatever
its length. A ``?`` per value made new SQL text for each length, and each connection keeps
128 compiled statements: a daemon registering workflow after workflow kept a copy of each
query per length, about 20 KB per workflow id, for good (42 MB at 2,000 ids)."""


def _listed(values: Iterable[str]) -> str:
    """``values`` as the one parameter of :data:`_AMONG`."""
    return json.dumps(list(values))


_LIMIT_COLUMNS: Final = (
    "concurrency",
    "key_concurrency",
    "rate_count",
    "rate_period",
    "max_queued",
)


def _queue_damage(row: tuple[Any, ...]) -> str | None:
    """What of a ``queues`` row is not a limit (SQLite keeps what a hand writes), or ``None``."""
    if not isinstance(row[0], str):
        return f"its name is {row[0]!r}"
    for column, value in zip(_LIMIT_COLUMNS, row[1:], strict=True):
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if column != "rate_period":
            number = number and float(value).is_integer()
        if not number or not 0 < value < math.inf:
            return f"its {column} is {value!r}"
    return None


def _skipping(skip: Collection[str], busy: Collection[str] = ()) -> tuple[str, tuple[str, ...]]:
    """The condition (and its parameters) that leaves ``skip``'s and ``busy``'s runs out of a claim.

    A skipped run whose cancel was requested is claimed all the same: it ends on
    its claim. A busy one is not: its actor here still runs.
    """
    condition = ""
    params: tuple[str, ...] = ()
    if skip:
        condition = " AND (cancel_requested = 1 OR run_id NOT IN (SELECT value FROM json_each(?)))"
        params = (json.dumps(sorted(skip)),)
    if busy:
        condition += " AND run_id NOT IN (SELECT value FROM json_each(?))"
        params = (*params, json.dumps(sorted(busy)))
    return condition, params


def _workflows(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


_opened: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
"""The SQLite stores this process has made (a forked child checks them: ``_after_fork``)."""

_forked_from: int | None = None
"""In a forked child of a process that had SQLite stores open: its parent's pid."""


def _new_store_path(store: SQLiteStore, location: str | os.PathLike[str]) -> Path:
    """The path of a store being made, noted for ``_after_fork``; refused in a forked child.

    Raises:
        StoreError: in a fork of a process that had SQLite stores open.
    """
    if _forked_from is not None:
        raise StoreError(
            f"this process is a fork of process {_forked_from}, which had SQLite run "
            "stores open when it forked: SQLite's locks and internal state do not "
            "survive a fork (a store opened here could wait for ever on a lock another "
            "thread held at the fork, or share the parent's lock state for the file). "
            "Start this process with multiprocessing's 'spawn' or 'forkserver' method, "
            "or fork before opening any store"
        )
    _opened.add(store)
    return path_from_url(location)


def _after_fork() -> None:
    # SQLite keeps process-wide state (a list of open files and their locks, mutexes)
    # that a fork copies as it was: held by threads that are not in the child, and
    # counting locks the child does not hold. A store opened in the child is refused.
    global _forked_from  # noqa: PLW0603
    # A store still being made (no _closed yet) counts as open.
    if any(not getattr(store, "_closed", False) for store in list(_opened)):
        _forked_from = os.getppid()
    _opened.clear()


os.register_at_fork(after_in_child=_after_fork)


def _migrate(connection: sqlite3.Connection, statement: str) -> None:
    """Run one statement of a migration step; a column it adds that is there already is no fault.

    As PostgreSQL's steps are (``IF NOT EXISTS``): a file whose version was set back
    by hand (to stand for an older callboard's) is taken on again through steps it had.
    SQLite has no ``ADD COLUMN IF NOT EXISTS``; its tables, indexes and triggers are
    made ``IF NOT EXISTS``.
    """
    try:
        connection.execute(statement)
    except sqlite3.OperationalError as exc:
        if not (statement.startswith("ALTER TABLE") and "duplicate column" in str(exc)):
            raise


def _drop_requests(connection: sqlite3.Connection, run_id: str, paths: Sequence[str]) -> None:
    """Delete the resume requests of these suspensions of a run: a record carried them out."""
    connection.execute(
        f"DELETE FROM resume_requests WHERE run_id = ? AND path IN ({', '.join('?' * len(paths))})",
        (run_id, *paths),
    )


# Built once for each count of rows: the statement cache of a connection finds a text
# it was given before by the hash the text keeps, where one built anew is hashed again.
@functools.cache
def _inserts(rows: int) -> str:
    """The INSERT of ``rows`` new runs that returns the ids that were new (see ``_insert``)."""
    return (
        f"INSERT INTO runs ({_CREATE_COLUMNS}) SELECT {_CREATE_VALUES} FROM (VALUES "
        + ", ".join([_CREATE_ROW] * rows)
        + ") WHERE true ON CONFLICT DO NOTHING RETURNING run_id"
    )


@functools.cache
def _upserts(rows: int) -> str:
    """The upsert of ``rows`` saved records into the rows of their runs (see ``_upsert``)."""
    return (
        f"INSERT INTO runs ({_INSERT_COLUMNS}) SELECT {_ROW_VALUES} FROM (VALUES "
        + ", ".join([_ROW] * rows)
        + ") WHERE EXISTS (SELECT 1 FROM runs AS e WHERE e.run_id = column1)"
        + _ON_CONFLICT_NEWER
    )


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), _ROWS_PER_STATEMENT):
        yield items[start : start + _ROWS_PER_STATEMENT]


def in_memory_temp(connection: sqlite3.Connection) -> None:
    """Keep SQLite's temporary files (statement journals, sorts) in memory.

    By default SQLite opens them as files in ``/var/tmp`` when a statement needs
    one. In a process at its limit of open files (threads that read the store
    hold three each), that open failed with "unable to open database file", and
    the writer's batch with it, try after try, for as long as the readers lived:
    every run waited on a writer that could not write.
    """
    connection.execute("PRAGMA temp_store = MEMORY")


def _set_for_writing(connection: sqlite3.Connection) -> None:
    """What each of a store's two writing connections (the writer's, the callers') sets.

    Both commit, and either may be the one that starts the WAL over, so they must
    agree: commits synced as ``NORMAL`` (they survive the process being killed, as
    the README says, not always a power failure), no checkpoint inside whichever
    commit crosses SQLite's page threshold (the writer checkpoints when idle, see
    ``SQLiteStore._checkpoint``), and the WAL cut back to :data:`WAL_SIZE_LIMIT`
    when it starts over.
    """
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").fetchall()


def _without_superseded(
    rows: list[tuple[SnapshotRecord, tuple[Any, ...]]],
) -> list[tuple[Any, ...]]:
    """The rows of a batch's saves, less those the next record of their run supersedes.

    See :func:`~runtime._stores.base.supersedes`.
    """
    kept: list[tuple[Any, ...] | None] = []
    last: dict[str, tuple[SnapshotRecord, int]] = {}  # run -> its last record, its row's place
    for record, row in rows:
        before = last.get(record.run_id)
        if before is not None and supersedes(record, before[0]):
            kept[before[1]] = None
        last[record.run_id] = (record, len(kept))
        kept.append(row)
    return [row for row in kept if row is not None]


def _stored(record: SnapshotRecord) -> tuple[bytes, int | None]:
    """What a record's row holds: its whole snapshot, or its head and its parts' lineage."""
    if record.parts is None:
        return record.data, None
    return record.parts.head, record.parts.lineage


def _filters(
    workflow_id: str | None,
    status: str | Sequence[str] | None,
    from_date: float | None,
    to_date: float | None,
    resource_id: str | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    statuses = status_set(status)
    if statuses is not None:
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
        params.extend(sorted(statuses))
    for clause, value in (
        ("workflow_id = ?", workflow_id),
        ("resource_id = ?", resource_id),
        ("created_at >= ?", from_date),
        ("created_at <= ?", to_date),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _death(host: str, pid: int, heartbeat_at: float, lease: float) -> str | None:
    """Why a worker is dead, for the log; ``None`` while it is alive."""
    age = _clock.time() - heartbeat_at
    if age > lease:
        return f"its lease ran out: last heartbeat {age:.1f} s ago, lease {lease:g} s"
    if not process_alive(host, pid):
        return f"its process {pid} on this host is gone"
    return None


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


_SQLITE_TOOBIG: Final = 18
"""SQLite's result code for a string or blob longer than its length limit."""


def _run_ids(write: Write) -> list[str]:
    """The runs a write records (none for a write that records no run)."""
    payload = write.payload
    if write.kind == "save":
        return [record.run_id for record in payload]
    if write.kind in ("create", "replace"):  # (record, ...)
        return [payload[0].run_id]
    return []


_REFUSING_CODES: Final = frozenset(
    {
        3,  # SQLITE_PERM: access permission denied
        8,  # SQLITE_READONLY (and its extended codes): the file, or its folder, is read-only
    }
)


def _refused(exc: BaseException) -> bool:
    """Whether the database refused a transaction as it will refuse every write until mended."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _REFUSING_CODES


_READONLY_FOR_A_MOMENT: Final = frozenset(
    {
        264,  # SQLITE_READONLY_RECOVERY: another connection recovers the WAL just now
        1288,  # SQLITE_READONLY_CANTINIT: the WAL's shared memory is being set up
    }
)


def _refused_for_good(exc: BaseException) -> bool:
    """:func:`_refused`, but not a read-only moment that passes without anyone mending it.

    A start meeting such a moment goes through the writer's retries, which see
    it through, rather than be told the store refuses writes.
    """
    return _refused(exc) and getattr(exc, "sqlite_errorcode", None) not in _READONLY_FOR_A_MOMENT


def _passing(exc: BaseException) -> bool:
    """Whether a failed transaction may succeed if tried again as it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _PASSING_CODES


def _identity(path: str) -> tuple[int, int]:
    """The device and inode of the file at ``path``: which file it is."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _full(exc: BaseException) -> bool:
    """Whether a transaction failed for want of room (``SQLITE_FULL``: the disk is full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_FULL


_SQLITE_FULL: Final = 13


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


class _LostLog(Exception):
    """The writer found, under the write lock, that the store's log was lost meanwhile."""


_MOUNTINFO = Path("/proc/self/mountinfo")
"""Where Linux lists this process's mounts, with each one's file system type."""

_NETWORK_FILESYSTEMS: Final = frozenset(
    {
        "9p",
        "afs",
        "ceph",
        "cifs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.sshfs",
        "glusterfs",
        "gpfs",
        "lustre",
        "nfs",
        "nfs4",
        "smb3",
        "smbfs",
    }
)
"""File systems whose files other hosts may open too: SQLite's WAL cannot be shared so."""


def network_filesystem(folder: Path) -> str | None:
    """The type of the network file system ``folder`` lies on; ``None`` if local or unknown.

    Found by the folder's device in ``/proc/self/mountinfo`` (Linux): the last
    mount of that device listed is the one on top.
    """
    try:
        device = os.stat(folder).st_dev
        listed = _MOUNTINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux, or no /proc: nothing to say
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}"
    kind = None
    for line in listed.splitlines():
        fields = line.split()
        if len(fields) < 9 or fields[2] != wanted or "-" not in fields[6:]:
            continue
        after = fields.index("-", 6) + 1
        if after < len(fields):
            kind = fields[after]
    return kind if kind in _NETWORK_FILESYSTEMS else None


def _say_if_networked(path: Path) -> None:
    """Warn once, at open, that a store on a network file system must stay on one host."""
    kind = network_filesystem(path.parent)
    if kind is None:
        return
    emit(
        logging.WARNING,
        "store_on_network_filesystem",
        path=str(path),
        filesystem=kind,
        hint=(
            "SQLite's WAL mode shares memory between the processes that use the file, "
            "which a network file system cannot carry from one host to another: every "
            "runtime and command on this file must run on this host (where locks over "
            f"{kind} may still not hold). Share runs between hosts with PostgreSQL "
            "(PostgresStore), or keep the file on a local disk"
        ),
    )


def _on_read_only_fs(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs on this system
        return False


def read_uri(path: Path) -> str:
    """The URI a read-only connection opens the database at ``path`` with.

    On read-only media SQLite cannot make the -shm file a WAL database needs
    ("unable to open database file"): a database there with no log left to fold
    in is opened as immutable, since nothing can change it.
    """
    uri = f"file:{path}?mode=ro"
    if _unchangeable(path):
        uri += "&immutable=1"
    return uri


def _unchangeable(path: Path) -> bool:
    """Whether nothing can change the database at ``path``: read-only media, no WAL to fold in."""
    if not _on_read_only_fs(path):
        return False
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _unwritable(path: Path) -> str | None:
    """Why this process may not open ``path`` for writing (asked without opening it), if so."""
    effective = os.access in os.supports_effective_ids
    if os.access(path, os.W_OK, effective_ids=effective):
        return None
    return os.strerror(errno.EROFS if _on_read_only_fs(path) else errno.EACCES)


def _locked(exc: BaseException) -> bool:
    """Whether a transaction failed because another connection holds the database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )
