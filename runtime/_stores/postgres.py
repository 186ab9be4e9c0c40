"""The PostgreSQL store: runs that several processes and hosts share, claimed under a lease.

One database holds every run's newest snapshot (msgpack bytes) beside the
fields queries filter on, in tables prefixed ``callboard_``. Each store opened
for writing is a *worker* with a row of its own; it holds the runs it created
or claimed until they settle. Every write of a held run is conditioned on the
run's owner and ``epoch`` still being this store's, so a worker that stalled
past its lease changes nothing once another has claimed its runs (the write
fails with :class:`~runtime._stores.base.RunFencedError`).

Writes go through one writer thread with group commit (as on SQLite), over a
connection of its own: ``create``, ``replace`` and the lease calls return once
their transaction has committed; ``save`` returns at once and calls
``on_commit`` when its records are. A heartbeat is the exception: it renews the
lease in one autocommit statement on a connection of its own, so that it never
waits behind a batch that waits for a lock (a paused worker's), and a live
worker is never reaped for that. A lost connection (a server restart, the
network) is a passing error: the writer reconnects with back-off and tries
the same writes again, and nothing is acknowledged before it commits. Reads
come from a small pool of autocommit connections, from any thread; a read
that loses its connection is tried once more on a new one.

Rows of several runs are always locked in ``run_id`` order, and the claim and
the reaper skip rows that others have locked, so concurrent workers never
deadlock. A worker whose lease ran out while its session was inside a
transaction would hold its locks until it woke: the reaper ends that session.
Time that matters (heartbeats, leases, wake-ups) is the database's
clock, never a client's; only under a test kit's virtual clock is it that
clock's, told to each session (:data:`_NOW`).

After a commit the writer sends what changed as coalesced ``pg_notify`` hints
in a short transaction of their own (never inside the writing one); a
listener thread hands other processes' hints to :meth:`PostgresStore.set_hint`.
Hints only make things faster: polling sees the same.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runtime import _clock
from runtime._errors import QueueFullError, StoreError, StoreUnavailableError
from runtime._ids import new_id
from runtime._model import SETTLED_STATUSES, TERMINAL_STATUSES, UNFINISHED_STATUSES, RunStatus
from runtime._queue import Admission, Bucket, QueueLimits, bucket_key, rank, restart_refused
from runtime._snapshot import is_parted
from runtime._stores._parts import plan_parts
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
    MAX_LEASE,
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
    queue_stats,
    refuse_upgrade_beside_older,
    status_set,
    supersedes,
    this_host,
)
from runtime._tracing import emit

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

__all__ = ["DATABASE_NOW", "LEASE", "SCHEMA_VERSION", "PostgresStore", "redact"]

_T = TypeVar("_T")

LEASE: Final = DEFAULT_LEASE
"""Seconds without a heartbeat after which a worker's runs go back to the queue."""

CALL_TIMEOUT: Final = 30.0
"""Seconds a call that waits for its commit (or a free read connection) waits at most."""

CONNECT_TIMEOUT: Final = 5
"""Seconds one connection attempt waits, unless the URL says ``connect_timeout``."""

LOCK_TIMEOUT: Final = 5.0
"""Seconds one statement waits for a lock another session holds (``lock_timeout``).

A ``LOCK TABLE``, a long migration or a stuck session held every read, start
and write for as long as it held its lock, past every timeout a caller gave.
A statement that gives up fails for a passing reason: a read raises
:class:`StoreUnavailableError` (a wait reads again), a write is tried again.
Opening the store waits as long as another process's migration takes.
Unless the URL's ``options`` set ``lock_timeout`` themselves.
"""

CLOSE_TIMEOUT: Final = 10.0
"""Seconds ``close`` waits for the queued writes to commit."""

BATCH: Final = 512
"""The most writes one transaction takes."""

READERS: Final = 4
"""The most connections reads use at once."""

CHANNEL: Final = "callboard"
"""The ``LISTEN``/``NOTIFY`` channel of hints."""

NOTIFY_BYTES: Final = 7000
"""The most bytes of one hint payload (PostgreSQL takes up to 8000)."""

PIPELINE_BYTES: Final = 64 * 1024
"""The most snapshot bytes a batch may carry to be sent in pipeline mode (see _commit_group)."""

PREPARE_TRIES: Final = 3
"""How many times opening the store prepares it (schema, worker row) when cut off meanwhile."""

PREPARE_PAUSE: Final = 0.2
"""Seconds before the second try at preparing the store (twice that before the third)."""

HINT_DELAY: Final = 0.05
"""Seconds the writer lets hints wait while more writes keep coming: under load, the hints
of several commits go out in one ``pg_notify`` transaction (each costs a commit and a wake-up
of every listener); once the writer has nothing left to do, they go at once."""

LISTEN_POLL: Final = 0.25
"""Seconds the listener waits for a hint before it looks whether to stop."""

CROWDED_PAUSE: Final = 30.0
"""Seconds the read connections stay as many as they were when the server refused one more."""

PREPARE_THRESHOLD: Final = 5
"""On a direct connection, how many runs of a statement psycopg waits for before preparing it
(its default); through a pooler none is prepared (see ``PostgresStore._set_up``)."""

TERMINATE_WAIT: Final = 1.0
"""Seconds a reaper waits for a stalled worker's session it ended to be gone (and its locks)."""

_NAME_BYTES: Final = 63
"""The most bytes of an ``application_name`` the server keeps (``NAMEDATALEN - 1``)."""

_SCHEMA_LOCK: Final = 0x63616C6C626F6172  # "callboar": the advisory lock of schema setup

_INSTALL_HINT: Final = "pip install 'callboard[postgres]'"


def _sql_list(values: frozenset[str]) -> str:
    """A constant set of statuses as an SQL list of literals, for statements built once."""
    return ", ".join(f"'{value}'" for value in sorted(values))


_TERMINAL_SQL: Final = _sql_list(TERMINAL_STATUSES)
_SETTLED_SQL: Final = _sql_list(SETTLED_STATUSES)
_UNFINISHED_SQL: Final = _sql_list(UNFINISHED_STATUSES)
_UNFINISHED_OR_SUSPENDED_SQL: Final = _sql_list(UNFINISHED_STATUSES | {RunStatus.SUSPENDED.value})
_DEADLINE_KEPT: Final = "deadline IS NOT NULL AND owner_id IS NULL"
"""The predicate of the index of deadlines, word for word in the queries that read it."""
_QUEUED_SQL: Final = f"owner_id IS NULL AND status IN ({_UNFINISHED_SQL})"
"""Runs nobody holds that some worker must drive: the partial index's predicate, word for word."""
_NOW: Final = (
    "(SELECT coalesce(nullif(current_setting('callboard.now', true), '')::float8, "
    "extract(epoch FROM clock_timestamp())::float8))"
)
"""The database's clock in epoch seconds, evaluated once a statement.

Under a test kit's virtual clock, the session's ``callboard.now`` instead (see
:func:`_virtual_now`): sleeping runs fall due, queues' rate windows pass, and
heartbeats are stamped and leases judged, by the clock the runs' timers read.
"""
DATABASE_NOW: Final = _NOW
"""The database's clock as an SQL expression, for statements beside the runs (schedules)."""
_NOW_AT: Final = f"to_timestamp({_NOW})"
""":data:`_NOW` as a ``timestamptz``: what heartbeats are stamped with and leases judged by."""
_DUE: Final = f"(wake_at IS NULL OR wake_at <= {_NOW})"


_TOLD: weakref.WeakSet[Any] = weakref.WeakSet()
"""Sessions told a virtual time: told to forget it once the virtual clock is gone."""


def _virtual_now(connection: Connection) -> None:
    """Under a virtual clock (a test kit's), tell the session its time for :data:`_NOW`.

    Outside one, nothing but a comparison and a look-up, unless the session was
    told a virtual time before: then it is told to read the database's clock
    again (a store that outlives a test kit judges leases by the real clock).
    Set at the start of every read and transaction, as the virtual clock may
    have jumped since the last.
    """
    if _clock.time is not time.time:
        connection.execute("SELECT set_config('callboard.now', %s, false)", (repr(_clock.time()),))
        _TOLD.add(connection)
    elif _TOLD and connection in _TOLD:
        connection.execute("SELECT set_config('callboard.now', '', false)")
        _TOLD.discard(connection)


@contextlib.contextmanager
def _autocommit(connection: Connection) -> Iterator[None]:
    """The writer's connection in autocommit for one statement that is its own transaction.

    Back to transactions after it, unless the connection was lost (a lost one is
    made anew, never left in autocommit).
    """
    connection.autocommit = True
    try:
        yield
    finally:
        if not connection.broken and not connection.closed:
            connection.autocommit = False


_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS callboard_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS callboard_runs (
    run_id           text PRIMARY KEY,
    workflow_id      text NOT NULL,
    status           text NOT NULL,
    seq              bigint NOT NULL,
    epoch            bigint NOT NULL DEFAULT 0,
    owner_id         text,
    wake_at          double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    trace_id         text NOT NULL,
    snapshot         bytea NOT NULL,
    lineage          bigint
);
CREATE INDEX IF NOT EXISTS callboard_runs_by_created ON callboard_runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS callboard_runs_by_workflow ON callboard_runs (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS callboard_runs_by_status ON callboard_runs (status, created_at);
CREATE INDEX IF NOT EXISTS callboard_runs_queued ON callboard_runs (created_at, run_id)
    WHERE {_QUEUED_SQL};
CREATE INDEX IF NOT EXISTS callboard_runs_held ON callboard_runs (owner_id)
    WHERE owner_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS callboard_workers (
    worker_id    text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    role         text NOT NULL,
    workflows    text[] NOT NULL DEFAULT '{{}}',
    concurrency  integer,
    lease        double precision NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# Queues, schema version 3 (each statement harmless where it is already done):
# a run's queue, key and priority, its rank (runtime._queue.rank: what claims go by),
# when it first started executing (what rate limits count), and each queue's limits.
_QUEUES_DDL: Final = f"""
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS queue text;
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS queue_key text;
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0;
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS rank double precision;
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS started_at double precision;
UPDATE callboard_runs SET rank = created_at WHERE rank IS NULL;
CREATE INDEX IF NOT EXISTS callboard_runs_queued_by_rank ON callboard_runs (rank, run_id)
    WHERE {_QUEUED_SQL};
CREATE INDEX IF NOT EXISTS callboard_runs_in_queue
    ON callboard_runs (queue, queue_key, started_at) WHERE queue IS NOT NULL;
CREATE TABLE IF NOT EXISTS callboard_queues (
    name            text PRIMARY KEY,
    concurrency     integer,
    key_concurrency integer,
    rate_count      integer,
    rate_period     double precision,
    max_queued      integer,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

_QUEUE_LOCK: Final = 0x63616C6C71756575  # "callqueu": claims through limited queues take turns
"""The advisory lock that claims of queued runs, and creates into a bounded queue, hold
until they commit: the counts they read stay true until then, across every worker."""

_CLAIM_ROUNDS: Final = 16
"""The most rounds of one claim through queues (each round skips what filled in the last)."""

_KEYS_AND_SCHEDULES_DDL: Final = """
ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS idempotency_key text;
CREATE UNIQUE INDEX IF NOT EXISTS callboard_runs_by_idempotency_key
    ON callboard_runs (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS callboard_schedules (
    schedule_id text PRIMARY KEY,
    workflow_id text NOT NULL,
    cron        text NOT NULL,
    timezone    text NOT NULL,
    input       text NOT NULL,
    catch_up    text NOT NULL,
    overlap     text NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    created_at  double precision NOT NULL,
    last_tick   double precision,
    last_run_id text,
    buffered    double precision
)
"""
"""Schema version 5: idempotency keys (one run per key and workflow: the unique index
decides between two starts that race) and schedules."""

_PARTS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS callboard_run_parts (
    run_id  text NOT NULL REFERENCES callboard_runs (run_id) ON DELETE CASCADE,
    lineage bigint NOT NULL,
    key     text NOT NULL,
    part    bytea NOT NULL,
    PRIMARY KEY (run_id, lineage, key)
)"""

_ENDED_DDL: Final = (
    # Room on each page for the next version of every row on it: a batch saves runs
    # claimed together, neighbours on a page (at 80, a save of 800-byte rows in batches
    # of 20 was HOT 56 % of the time, at 70 75 %, at 50 always; benchmarks/pg_saves.py).
    # Set first: the rewrite that adding the column makes packs the rows there by it.
    "ALTER TABLE callboard_runs SET (fillfactor = 50)",
    "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS ended_at double precision "
    f"GENERATED ALWAYS AS (CASE WHEN status IN ({_TERMINAL_SQL}) THEN updated_at END) STORED",
    "CREATE INDEX IF NOT EXISTS callboard_runs_ended ON callboard_runs (status, ended_at) "
    "WHERE ended_at IS NOT NULL",
    "DROP INDEX IF EXISTS callboard_runs_by_end",
)
"""Schema version 6: when a run ended, indexed in a column of its own (retention reads it).

Every save changes ``updated_at``; while an index held it (``callboard_runs_by_end``),
no save could be a HOT update (PostgreSQL writes the new row version on the same page
and no index entry when no indexed column changed), so each save of a run in progress
wrote an entry into every index of the table. ``ended_at`` is ``updated_at`` once the
status is terminal and NULL before, so a save that keeps the run's status, owner and
rank changes no indexed column; with free room on the page (``fillfactor``) it is HOT."""

# What retention's prune deletes: runs that ended before a time, and those beyond the
# newest ``keep`` (by when they ended), both through ``callboard_runs_ended``.
_COUNTED_START: Final = (
    "(r.queue IS NOT NULL AND r.started_at IS NOT NULL AND EXISTS (SELECT 1 FROM "
    "callboard_queues AS q WHERE q.name = r.queue AND q.rate_period IS NOT NULL "
    f"AND r.started_at > {_NOW} - q.rate_period))"
)
"""A run whose start its queue's rate window still counts: pruning it would free a start."""
_ENDED_BEFORE: Final = (
    "SELECT run_id FROM callboard_runs AS r WHERE status = ANY(%s) AND ended_at < %s "
    f"AND NOT {_COUNTED_START} LIMIT %s"
)
_NEWEST_OF: Final = (
    "(SELECT ended_at FROM callboard_runs AS r WHERE status = %s "
    f"AND ended_at IS NOT NULL AND NOT {_COUNTED_START} ORDER BY ended_at DESC LIMIT %s)"
)
"""When the newest ended runs of one status ended, in the index's order (see _keep_cutoff)."""

_RESUME_REQUEST_IDS_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS callboard_resume_request_ids (
        run_id      text NOT NULL REFERENCES callboard_runs (run_id) ON DELETE CASCADE,
        request_id  text NOT NULL,
        recorded_at double precision NOT NULL,
        PRIMARY KEY (run_id, request_id)
    )""",
    "CREATE INDEX IF NOT EXISTS callboard_resume_request_ids_by_age "
    "ON callboard_resume_request_ids (recorded_at)",
)
"""The ids of resume requests recorded (see :data:`_RESUME_REQUESTS_DDL`): part of version 9,
and added at a writable open to a database that reached 9 before they were (never released)."""

_RESUME_REQUESTS_DDL: Final = (
    # No rewrite: a constant default is kept in the catalog (PostgreSQL 11 on).
    "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS taken_seq bigint NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS callboard_resume_requests (
        run_id       text NOT NULL REFERENCES callboard_runs (run_id) ON DELETE CASCADE,
        path         text NOT NULL,
        data         bytea NOT NULL,
        request_id   text NOT NULL,
        requested_at double precision NOT NULL,
        PRIMARY KEY (run_id, path)
    )""",
    *_RESUME_REQUEST_IDS_DDL,
)
"""Schema version 9: resume requests. A resume of one suspension of a run that runs on, from
a process that does not drive it, waits in ``callboard_resume_requests`` for the worker
that does (see ``ResumeRequestStore.request_resume``); ``taken_seq`` is the seq of the run's last
record that resumed one of its suspensions (or of its last compare-and-set), which a
request is checked against. ``callboard_resume_request_ids`` keeps the ids of the requests
recorded, for :data:`REQUEST_IDS_KEPT` seconds, after they were carried out or dropped: a
try of a request whose acknowledgement was lost, made again, answers as the first did.
A run's requests and ids go with it."""

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1 -> 2: step records. A snapshot kept in parts has its head in the run's row and
    # its parts here, by the lineage (the encoder, one run actor) that wrote them; the
    # row's lineage says whose parts belong to its head (NULL: kept whole). A run's
    # parts go with it.
    (
        "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS lineage bigint",
        _PARTS_TABLE,
        # A row stored whole again (a replace, a whole record) keeps no parts: checked in
        # the trigger's WHEN, so that the usual save (whole to whole) costs nothing more.
        """CREATE OR REPLACE FUNCTION callboard_parts_go_when_kept_whole() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM callboard_run_parts WHERE run_id = NEW.run_id;
            RETURN NULL;
        END $$""",
        "DROP TRIGGER IF EXISTS callboard_parts_go_when_kept_whole ON callboard_runs",
        """CREATE TRIGGER callboard_parts_go_when_kept_whole
        AFTER UPDATE OF lineage ON callboard_runs FOR EACH ROW
        WHEN (OLD.lineage IS NOT NULL AND NEW.lineage IS NULL)
        EXECUTE FUNCTION callboard_parts_go_when_kept_whole()""",
    ),
    # 2 -> 3: queues (see _QUEUES_DDL).
    tuple(statement for statement in _QUEUES_DDL.split(";") if statement.strip()),
    # 3 -> 4: resource ids: the user or tenant a run was started for, set with its first row.
    (
        "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS resource_id text",
        "CREATE INDEX IF NOT EXISTS callboard_runs_by_resource ON callboard_runs "
        "(resource_id, created_at) WHERE resource_id IS NOT NULL",
    ),
    # 4 -> 5: idempotency keys and schedules (see _KEYS_AND_SCHEDULES_DDL).
    tuple(statement for statement in _KEYS_AND_SCHEDULES_DDL.split(";") if statement.strip()),
    # 5 -> 6: saves of a run in progress write no index (see _ENDED_DDL).
    _ENDED_DDL,
    # 6 -> 7: snapshots in parts hold kinds of part an older callboard cannot read (a
    # foreach over a nested workflow's items and outputs, see runtime._snapshot.EACH_SCOPE;
    # the run's suspended steps, 64 to a part): no table changes, the version says so
    # and an older callboard refuses the database.
    (),
    # 7 -> 8: run deadlines (run_timeout). An unfinished run's deadline, once it began to
    # execute (NULL once it ended), so that whichever worker is alive cancels the runs
    # nobody holds whose time is up; the index holds only those nobody holds. A column
    # without a default: no rewrite of the table. A save that keeps it, the status and
    # the owner as they were changes no indexed column still (a HOT update).
    (
        "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS deadline double precision",
        "CREATE INDEX IF NOT EXISTS callboard_runs_by_deadline ON callboard_runs (deadline) "
        f"WHERE {_DEADLINE_KEPT}",
    ),
    # 8 -> 9: resume requests (see _RESUME_REQUESTS_DDL); snapshots in parts hold the ids
    # of the run's suspensions, a kind of part an older callboard cannot read.
    _RESUME_REQUESTS_DDL,
    # 9 -> 10: held queue slots. A worker names the runs whose step bodies, let go of by
    # their runs (cancelled, timed out), run on in it: each holds its run's slot in its
    # queue until it returns (see claim's ``executing``), which ``queue_stats`` shows.
    # And restarts count in their queues' rate windows: a run restarted and not yet
    # claimed is ``restarting``, and its claim counts its start as a first start's. (A
    # constant default: no rewrite of the table.)
    (
        "ALTER TABLE callboard_workers ADD COLUMN IF NOT EXISTS executing text[] "
        "NOT NULL DEFAULT '{}'",
        "ALTER TABLE callboard_runs ADD COLUMN IF NOT EXISTS restarting boolean "
        "NOT NULL DEFAULT false",
    ),
)
"""The steps that take a database from one schema version to the next: step ``i`` takes
version ``i + 1`` to ``i + 2``. A new database gets :data:`_SCHEMA` and then every step
(each written to be harmless where it is already done), so new and migrated are the same."""

SCHEMA_VERSION: Final = 1 + len(_MIGRATIONS)
"""The database schema this code writes (``callboard_meta.schema_version``)."""

_PARTS_OF: Final = (
    "(SELECT string_agg(p.part, ''::bytea) FROM callboard_run_parts AS p "
    "WHERE p.run_id = {table}.run_id AND p.lineage = {table}.lineage)"
)
"""A run's parts, those of its row's lineage, joined (in any order: each names itself);
NULL for a snapshot kept whole. Read in the same statement as the head, so both come from
one snapshot of the database."""

_COLUMNS: Final = (
    "run_id, workflow_id, seq, status, snapshot, created_at, updated_at, trace_id, wake_at, "
    + _PARTS_OF.format(table="callboard_runs")
)

# Rows are handed over as arrays, one per column, and unnested: one statement
# (and one round trip) however many records a batch has.
_ROWS_SELECT: Final = """
    SELECT run_id, workflow_id, status, seq, owner_id, epoch, wake_at, created_at,
           updated_at, trace_id, decode(snapshot, 'base64') AS snapshot, lineage, resource_id,
           deadline
    FROM jsonb_to_recordset(%s::jsonb) AS j(
        run_id text, workflow_id text, status text, seq int8, owner_id text, epoch int8,
        wake_at float8, created_at float8, updated_at float8, trace_id text, snapshot text,
        lineage int8, resource_id text, deadline float8)"""
_ROWS: Final = f"({_ROWS_SELECT}) AS v"
"""A batch of records as rows: one JSON parameter, which ``json.dumps`` builds in C (eleven
array parameters cost psycopg's Python array dumper about a fifth of a worker's CPU)."""

_CREATE: Final = """
INSERT INTO callboard_runs (run_id, workflow_id, status, seq, owner_id, epoch, wake_at,
                            created_at, updated_at, trace_id, snapshot,
                            queue, queue_key, priority, rank, resource_id, idempotency_key,
                            deadline)
SELECT v.run_id, v.workflow_id, v.status, v.seq, v.owner_id, v.epoch, v.wake_at,
       v.created_at, v.updated_at, v.trace_id, decode(v.snapshot, 'base64'),
       v.queue, v.queue_key, coalesce(v.priority, 0), coalesce(v.rank, v.created_at),
       v.resource_id, v.idempotency_key, v.deadline
FROM jsonb_to_recordset(%s::jsonb) AS v(
    run_id text, workflow_id text, status text, seq int8, owner_id text, epoch int8,
    wake_at float8, created_at float8, updated_at float8, trace_id text, snapshot text,
    queue text, queue_key text, priority int4, rank float8, resource_id text,
    idempotency_key text, deadline float8)
ON CONFLICT DO NOTHING
RETURNING run_id
"""

# One new run, by its caller's thread (see PostgresStore._create_now): the same row as
# _CREATE makes, with plain parameters, which costs the server about half as much as
# one row through jsonb_to_recordset.
_CREATE_ONE: Final = """
INSERT INTO callboard_runs (run_id, workflow_id, status, seq, owner_id, epoch, wake_at,
                            created_at, updated_at, trace_id, snapshot,
                            queue, queue_key, priority, rank, resource_id, idempotency_key,
                            deadline)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
RETURNING run_id
"""

# Both saves answer, for every record, whether its row was written, and the row's
# owner and epoch as they were (a row not written is as it was): all the writer needs
# to tell a stale record from a fenced one, without a statement more. And whether the
# row holds this very record already (same seq, same bytes): a try whose commit reply
# was lost wrote it, and a release then left the run nobody's (or another worker's
# since), which is no fence. The bytes are compared only where the seq is the same
# (never for a row this statement writes: it reads the row as it was). The row is looked
# up by its key, one record at a time (the LIMIT keeps the planner from making it a join):
# the planner takes jsonb_to_recordset for 100 rows, and joined it by a scan of the whole
# table at every save (a save's cost grew with the number of runs stored).
_SAVED: Final = """
SELECT v.run_id, w.run_id IS NOT NULL, c.owner_id, c.epoch, coalesce(c.same, false)
FROM v LEFT JOIN written AS w ON w.run_id = v.run_id
    LEFT JOIN LATERAL (SELECT c.owner_id, c.epoch,
                              c.seq = v.seq AND c.snapshot = v.snapshot AS same
                       FROM callboard_runs AS c
                       WHERE c.run_id = v.run_id LIMIT 1) AS c ON true
"""

# The rows of a save of held runs: only what it writes or checks, and the snapshots apart,
# in one bytes parameter (sent as it is) that each row cuts its own out of, by offset
# and length. In the JSON, base64 snapshots and the fields the update does not need
# (two floats among them) were about half of the writer's CPU in json.dumps.
_HELD_ROWS_SELECT: Final = """
    SELECT run_id, status, seq, owner_id, epoch, wake_at, updated_at, created_at,
           substring(%(blob)b FROM off FOR len) AS snapshot, lineage, deadline
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS j(
        run_id text, status text, seq int8, owner_id text, epoch int8, wake_at float8,
        updated_at float8, created_at float8, off int4, len int4, lineage int8,
        deadline float8)"""

# A save of runs this store holds: only while owner and epoch are still ours,
# the record is newer, and the run not ended. A release makes the run nobody's.
# The ids again as an array: rows found by key, not among all the rows this worker holds.
# (An array taken from v on the server: a Python list parameter costs psycopg's array
# dumper, in Python, more than the rest of the statement's parameters.)
_SAVE_HELD_TEMPLATE: Final = f"""
WITH v AS MATERIALIZED ({_HELD_ROWS_SELECT}){{locked}}, written AS (
    UPDATE callboard_runs AS r SET
        status = v.status, seq = v.seq, updated_at = v.updated_at, snapshot = v.snapshot,
        wake_at = v.wake_at, owner_id = v.owner_id, lineage = v.lineage,
        deadline = v.deadline
    FROM v
    WHERE r.run_id = ANY(ARRAY(SELECT run_id FROM {{keys}})) AND r.run_id = v.run_id
        AND r.owner_id = %(me)s AND r.epoch = v.epoch AND r.created_at = v.created_at
        AND v.seq > r.seq AND r.status NOT IN ({_TERMINAL_SQL})
    RETURNING r.run_id
)
{_SAVED}"""

_SAVE_HELD: Final = _SAVE_HELD_TEMPLATE.format(locked="", keys="v")
"""The save of held runs in a transaction that locked their rows already (see _transaction)."""

_SAVE_HELD_ALONE: Final = _SAVE_HELD_TEMPLATE.format(
    locked=(
        ", locked AS MATERIALIZED (SELECT run_id FROM callboard_runs "
        "WHERE run_id = ANY(ARRAY(SELECT run_id FROM v)) ORDER BY run_id FOR UPDATE)"
    ),
    keys="locked",
)
"""The save of held runs as a transaction of its own (see _save_alone): it locks its rows
in ``run_id`` order first, as every transaction here does, and writes only rows it locked.
The keys it looks up come from the lock (an InitPlan, so all locks are taken before the
first row is written); a join of the lock with ``v`` was planned as a nested loop that
scanned the batch again for every row (three times the server time of a batch of 18)."""

# A save of runs this store does not hold: it applies only to runs nobody holds, and
# only to runs that exist: a save still on its way when its run was deleted inserts no
# row (the INSERT is for ON CONFLICT's multi-row update, never a new run), nor changes
# a new run given that id since (created at another time).
_SAVE_FREE: Final = f"""
WITH v AS MATERIALIZED ({_ROWS_SELECT}), written AS (
    INSERT INTO callboard_runs AS r (run_id, workflow_id, status, seq, owner_id, epoch,
                                     wake_at, created_at, updated_at, trace_id, snapshot,
                                     lineage, resource_id, deadline)
    SELECT v.run_id, v.workflow_id, v.status, v.seq, NULL, 0, v.wake_at,
           v.created_at, v.updated_at, v.trace_id, v.snapshot, v.lineage, v.resource_id,
           v.deadline
    FROM v
    WHERE EXISTS (SELECT 1 FROM callboard_runs AS e WHERE e.run_id = v.run_id)
    ON CONFLICT (run_id) DO UPDATE SET
        status = excluded.status, seq = excluded.seq, updated_at = excluded.updated_at,
        snapshot = excluded.snapshot, wake_at = excluded.wake_at, lineage = excluded.lineage,
        deadline = excluded.deadline
    WHERE r.owner_id IS NULL AND excluded.seq > r.seq AND r.status NOT IN ({_TERMINAL_SQL})
        AND r.created_at = excluded.created_at
    RETURNING r.run_id
)
{_SAVED}"""

# What a batch does to the parts of its saved records (see runtime._stores._parts):
# parts written anew replace those their lineage had and those of every lineage but
# the row's; then single parts go, then new ones are written. One JSON parameter each.
# Parts of a run another worker holds are left alone: that worker's row never reads
# them (the check is here, in the same round trip as the saves that may have fenced).
# The rows come with their number as a LIMIT (%(n)s, all of them): the planner takes
# jsonb_to_recordset for 100 rows, and without it joined a batch of a few by scanning
# every run and every part.
_MINE: Final = (
    "EXISTS (SELECT 1 FROM callboard_runs AS r WHERE r.run_id = {run} "
    "AND (r.owner_id IS NULL OR r.owner_id = %(me)s))"
)

_CLEAR_PARTS: Final = f"""
DELETE FROM callboard_run_parts AS p
USING (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS c(run_id text, lineage int8) LIMIT %(n)s
) AS c
WHERE p.run_id = c.run_id AND (p.lineage = c.lineage OR p.lineage IS DISTINCT FROM
    (SELECT r.lineage FROM callboard_runs AS r WHERE r.run_id = p.run_id))
    AND {_MINE.format(run="c.run_id")}
"""

_DROP_PARTS: Final = f"""
DELETE FROM callboard_run_parts AS p
USING (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS g(run_id text, lineage int8, key text)
    LIMIT %(n)s
) AS g
WHERE p.run_id = g.run_id AND p.lineage = g.lineage AND p.key = g.key
    AND {_MINE.format(run="g.run_id")}
"""

_WRITE_PARTS: Final = f"""
INSERT INTO callboard_run_parts (run_id, lineage, key, part)
SELECT n.run_id, n.lineage, n.key, decode(n.part, 'base64')
FROM (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS n(run_id text, lineage int8, key text, part text)
    LIMIT %(n)s
) AS n
WHERE {_MINE.format(run="n.run_id")}
ON CONFLICT (run_id, lineage, key) DO UPDATE SET part = excluded.part
"""

_LOCK_ROWS: Final = (
    "SELECT 1 FROM callboard_runs WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text("
    "%s::jsonb))) ORDER BY run_id FOR UPDATE"
)
"""Lock the rows of these runs (a JSON array: a list costs psycopg's array dumper, in Python),
in ``run_id`` order."""

_REPLACE: Final = f"""
UPDATE callboard_runs SET
    status = %(status)s, seq = %(seq)s, updated_at = %(updated_at)s, snapshot = %(snapshot)s,
    wake_at = %(wake_at)s, deadline = %(deadline)s, owner_id = %(new_owner)s,
    epoch = epoch + %(bump)s, lineage = NULL, taken_seq = %(seq)s
WHERE run_id = %(run_id)s AND seq = %(expected)s AND %(seq)s > seq
    AND status NOT IN ({_TERMINAL_SQL}) AND owner_id IS NULL AND created_at = %(created_at)s
RETURNING epoch
"""
"""The compare-and-set of ``replace()``: on the seq its caller read, of a run nobody holds
(this worker neither: a run it holds is its actor's to change). Any may resume a
suspension: its seq is the run's ``taken_seq`` (see ``ResumeRequestStore.request_resume``)."""

_VACANT: Final = (
    "AND NOT EXISTS (SELECT 1 FROM callboard_resume_requests AS q "
    "WHERE q.run_id = callboard_runs.run_id AND q.path = ANY(%(taken)s::text[])) RETURNING epoch"
)
"""What a compare-and-set that resumes suspensions adds: no resume request waits for one."""

_REQUESTED: Final = (
    "AND EXISTS (SELECT 1 FROM callboard_resume_requests AS q "
    "WHERE q.run_id = callboard_runs.run_id AND q.request_id = %(request_id)s "
    "AND q.path = ANY(%(taken)s::text[])) RETURNING epoch"
)
"""What a compare-and-set that carries out a resume request adds: that request still waits."""

_RECORD_REQUEST: Final = f"""
WITH recorded AS (
    INSERT INTO callboard_resume_requests (run_id, path, data, request_id, requested_at)
    SELECT %s, %s, %s, %s, extract(epoch FROM clock_timestamp())::float8
    WHERE EXISTS (SELECT 1 FROM callboard_runs WHERE run_id = %s AND created_at = %s
        AND status NOT IN ({_TERMINAL_SQL}) AND taken_seq <= %s)
        AND NOT EXISTS (SELECT 1 FROM callboard_resume_request_ids
            WHERE run_id = %s AND request_id = %s)
    ON CONFLICT DO NOTHING
    RETURNING run_id, request_id, requested_at
)
INSERT INTO callboard_resume_request_ids (run_id, request_id, recorded_at)
SELECT run_id, request_id, requested_at FROM recorded
RETURNING 1
"""
"""Record a resume request, and keep its id: only if the run is as its caller read it, and
that request was not recorded before (by a try whose acknowledgement was lost)."""

REQUEST_IDS_KEPT: Final = 3600.0
"""Seconds the id of a resume request is kept once recorded (no longer than its run): far
longer than its caller waits for the answer (``2 * CALL_TIMEOUT`` at most), through which
the writer may try it again."""

REQUEST_IDS_PRUNED_EVERY: Final = 60.0
"""Seconds between two prunings of the kept request ids by one store's writer (by a request
it records): the ids of many requests at once are not one delete each."""

_TAKE_REQUESTS: Final = """
WITH t AS (
    UPDATE callboard_runs AS r SET taken_seq = greatest(r.taken_seq, v.seq)
    FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS v(run_id text, seq int8, epoch int8, created_at float8, paths jsonb)
    WHERE r.run_id = v.run_id AND r.seq >= v.seq AND r.owner_id = %(me)s AND r.epoch = v.epoch
        AND r.created_at = v.created_at
    RETURNING r.run_id, v.paths
)
DELETE FROM callboard_resume_requests AS q USING t
WHERE q.run_id = t.run_id AND q.path IN (SELECT jsonb_array_elements_text(t.paths))
"""
"""Saved records of held runs that resumed suspensions carry out their resume requests: each
written (the row holds it, or a later record of this worker's, at its epoch) makes its seq
the run's ``taken_seq`` and deletes its requests, in the save's transaction."""

_REOPEN: Final = _REPLACE.replace(
    f"status NOT IN ({_TERMINAL_SQL})", f"status IN ({_TERMINAL_SQL})"
).replace("lineage = NULL", "lineage = NULL, cancel_requested = false, restarting = true")
"""The compare-and-set of ``replace(reopen=True)``: only a run that has ended (a restart).

A cancel asked for earlier was carried out (or the run ended otherwise): it is forgotten,
or the restarted run was canceled again as soon as a worker took it. The run is
``restarting`` until a claim takes it: its start counts in its queue's rate window then,
as a first start's does, in the place of its earlier one."""

_REPLACE_CANCELING: Final = _REPLACE.replace(
    "lineage = NULL", "lineage = NULL, cancel_requested = true"
)
"""The compare-and-set of ``replace(canceling=True)``: the cancel is asked for in the same write.

Should the worker that holds the run to call its hooks die before it records the end, the
run goes back to the queue with its cancel asked for, and whoever claims it ends it."""

_CLAIM: Final = f"""
WITH picked AS (
    SELECT run_id FROM callboard_runs
    WHERE {_QUEUED_SQL} AND workflow_id = ANY(%(workflows)s) AND {_DUE} AND queue IS NULL
    ORDER BY created_at, run_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE callboard_runs AS r SET owner_id = %(owner)s, epoch = r.epoch + 1
FROM picked WHERE r.run_id = picked.run_id
RETURNING r.run_id, r.workflow_id, r.seq, r.status, r.snapshot, r.created_at, r.updated_at,
          r.trace_id, r.wake_at, {_PARTS_OF.format(table="r")}, r.epoch, r.cancel_requested
"""

_CLAIM_ALONE: Final = _CLAIM.replace(
    "AND queue IS NULL",
    "AND queue IS NULL AND NOT EXISTS (SELECT 1 FROM callboard_queues)",
)
"""The claim as a transaction of its own, while no queue is defined (see _claim_alone)."""

_SKIPPING: Final = "(cancel_requested OR NOT (run_id = ANY(%(skip)s::text[])))"
"""Leaves out of a claim the runs this worker skips, but those whose cancel was requested."""

_NOT_BUSY: Final = "NOT (run_id = ANY(%(busy)s::text[]))"
"""Leaves out of a claim the runs whose actors still run in this process, cancel or not."""

_CLAIM_SKIPPING: Final = _CLAIM.replace(
    "AND queue IS NULL", f"AND queue IS NULL AND {_SKIPPING} AND {_NOT_BUSY}"
)
_CLAIM_ALONE_SKIPPING: Final = _CLAIM_ALONE.replace(
    "AND queue IS NULL", f"AND queue IS NULL AND {_SKIPPING} AND {_NOT_BUSY}"
)

# Runs owned by this worker that it does not know it holds: a claim whose
# commit was sent but never acknowledged (the connection dropped) took them.
_ADOPT: Final = f"""
UPDATE callboard_runs SET epoch = epoch + 1
WHERE owner_id = %(owner)s AND NOT (run_id = ANY(%(known)s::text[])) AND {_NOT_BUSY}
    AND status IN ({_UNFINISHED_SQL}) AND workflow_id = ANY(%(workflows)s)
RETURNING {_COLUMNS}, epoch, cancel_requested
"""

_ADOPTABLE_BUSY: Final = f"""
SELECT 1 FROM callboard_runs
WHERE owner_id = %(owner)s AND NOT (run_id = ANY(%(known)s::text[]))
    AND run_id = ANY(%(busy)s::text[]) AND status IN ({_UNFINISHED_SQL})
LIMIT 1
"""
"""A run _ADOPT left for later: its actor here has yet to let go of it."""

_DEAD_WORKERS: Final = f"""
SELECT worker_id FROM callboard_workers
WHERE heartbeat_at < {_NOW_AT} - make_interval(secs => least(lease, {MAX_LEASE}))
ORDER BY worker_id
FOR UPDATE SKIP LOCKED
"""

_STALLED_SESSIONS: Final = f"""
WITH stalled AS (
    SELECT worker_id, {_NOW} - extract(epoch FROM heartbeat_at)::float8 AS lapsed
    FROM callboard_workers
    WHERE heartbeat_at < {_NOW_AT} - make_interval(secs => least(lease, {MAX_LEASE}))
    UNION
    SELECT DISTINCT owner_id, NULL::float8 FROM callboard_runs AS r
    WHERE owner_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM callboard_workers AS w WHERE w.worker_id = r.owner_id)
)
SELECT a.pid, s.worker_id, s.lapsed
FROM stalled AS s
JOIN pg_stat_activity AS a ON a.datname = current_database()
    AND right(a.application_name, length(s.worker_id) + 1) = ' ' || s.worker_id
WHERE s.worker_id <> %(me)s AND a.pid <> pg_backend_pid()
    AND (
        a.state IS NULL  -- another role's session: this role may not see its state
        OR (
            a.xact_start IS NOT NULL
            AND (a.state LIKE 'idle in transaction%%' OR a.wait_event = 'ClientRead')
        )
    )
ORDER BY a.pid
"""
"""Sessions inside a transaction of other workers the reaper reaps: lease run out, or reaped.

Only a session waiting on its client inside a transaction (idle in it, or, pipelined,
reading the client's next message): a paused process. One running a statement (a long
prune: its worker's heartbeats wait behind it) or waiting for a lock (behind a paused
worker's) is a live worker's, and is left to its statement timeout and lock timeout.

Such a session (its process stopped, or cut off) may hold its worker's row or
runs locked, which the reaper skips, or the queue lock every claim and start
into a limited queue waits for: held until it ends. A worker reaped already
(its row deleted while its runs were locked) is known by the runs it still
holds. A session named with a worker's id (see :func:`_application_name`) is
that worker's. One whose state this role may not see (another role's) is
taken too: ending it is refused if this role may not end it either.
"""

# Runs whose owner has no worker row: reaped just now, or gone before.
_HAND_BACK: Final = """
WITH lost AS (
    SELECT run_id FROM callboard_runs AS r
    WHERE owner_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM callboard_workers AS w WHERE w.worker_id = r.owner_id)
    ORDER BY run_id
    FOR UPDATE SKIP LOCKED
)
UPDATE callboard_runs AS r SET owner_id = NULL
FROM lost WHERE r.run_id = lost.run_id
RETURNING r.run_id, r.status
"""

_JOIN: Final = f"""
INSERT INTO callboard_workers
    (worker_id, host, pid, role, workflows, concurrency, lease, heartbeat_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW_AT})
ON CONFLICT (worker_id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, role = excluded.role,
    workflows = excluded.workflows, concurrency = excluded.concurrency,
    lease = excluded.lease, heartbeat_at = excluded.heartbeat_at
RETURNING (xmax = 0)
"""

_RENEW: Final = f"""
UPDATE callboard_workers SET heartbeat_at = {_NOW_AT} WHERE worker_id = %s RETURNING 1
"""
"""A heartbeat, alone in its transaction: it locks this worker's row for one statement only."""

_SESSION_STATE: Final = """
SELECT state, extract(epoch FROM clock_timestamp() - state_change)::float8
FROM pg_stat_activity WHERE """

_WRITER_STATE: Final = _SESSION_STATE + "pid = %s"
"""What the server says the writer's session does, and for how long (``_writer_gets_through``)."""

_WRITER_SESSIONS: Final = _SESSION_STATE + "application_name = %s AND datname = current_database()"
"""The same of the sessions named as the writer's, through a pooler (see ``_set_up``)."""

_BEFORE_SAVES: Final = frozenset({"create", "save", "join", "heartbeat"})
"""Writes a transaction applies before (or as) its saves; the others come after them."""

ADOPT_EVERY: Final = 5.0
"""Seconds between two claims that look for runs this worker holds in the database unknowingly.

Such a run has no actor here, and no other worker takes it while this one is alive. A
claim whose commit was never acknowledged leaves one (the next claim adopts it then: see
``_ambiguous``), and so did a server restart in the middle of a storm of calls, by a way
not found (``tests/test_races.py``, about once in twenty rounds of its PostgreSQL tests,
on the code before this: a sleeping run, woken, stayed ``waiting`` under a worker's id).
However such a run came about, a claim this often finds it and drives it: one statement
more over this worker's own rows (the index of held runs), counted from the last claim
that adopted (``tests/test_pg_unknown_holds.py``)."""

_SOLO: Final = frozenset({"prune", "reap"})
"""Writes that run in a transaction of their own: they lock rows the batch does not know of."""

_HOLDING: Final = frozenset({"create", "claim", "replace"})
"""Writes whose commit, if never acknowledged, may have left runs held here unknowingly."""


def _record(row: Sequence[Any]) -> SnapshotRecord:
    data = bytes(row[4])
    if row[9] is not None and is_parted(data):
        data += bytes(row[9])
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


def _exists(connection: Connection, run_id: str) -> bool:
    """Whether the store has a row for ``run_id``."""
    row = connection.execute("SELECT 1 FROM callboard_runs WHERE run_id = %s", (run_id,))
    return row.fetchone() is not None


def _releases(record: SnapshotRecord) -> bool:
    """Whether a write of this record lets go of its run: it settled, or sleeps until a time."""
    return record.status in SETTLED_STATUSES or record.wake_at is not None


def _hint_kind(record: SnapshotRecord) -> str | None:
    """The hint for a run nobody holds after this record was written."""
    if record.status in SETTLED_STATUSES:
        return "settled"
    if record.status in UNFINISHED_STATUSES:
        return "queued"
    return None


def _fields(r: SnapshotRecord, owner: str | None, epoch: int, *, whole: bool) -> dict[str, Any]:
    """A record as one row of the JSON parameter of :data:`_ROWS` and :data:`_CREATE`.

    A record kept in parts gives its row its head and lineage (its parts are
    written apart), unless ``whole``: then the row holds all of it.
    """
    return {
        "run_id": r.run_id,
        "workflow_id": r.workflow_id,
        "status": r.status,
        "seq": r.seq,
        "owner_id": owner,
        "epoch": epoch,
        "wake_at": r.wake_at,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "trace_id": r.trace_id,
        "snapshot": base64.b64encode(r.data if whole or r.parts is None else r.parts.head).decode(
            "ascii"
        ),
        "lineage": None if whole or r.parts is None else r.parts.lineage,
        "resource_id": r.resource_id,
        "deadline": r.deadline,
    }


def _columns(
    records: Sequence[SnapshotRecord], owners: Sequence[str | None], epochs: Sequence[int]
) -> list[Any]:
    """Saved records as the one JSON parameter of :data:`_ROWS`."""
    return [
        json.dumps(
            [
                _fields(r, owner, epoch, whole=False)
                for r, owner, epoch in zip(records, owners, epochs, strict=True)
            ]
        )
    ]


def _held_rows(
    records: Sequence[SnapshotRecord], owners: Sequence[str | None], epochs: Sequence[int]
) -> dict[str, Any]:
    """Saved records of held runs as the parameters of :data:`_HELD_ROWS_SELECT`.

    A record kept in parts gives its row its head and lineage (its parts are
    written apart). Fields that are NULL are left out of the JSON.
    """
    rows: list[dict[str, Any]] = []
    snapshots: list[bytes] = []
    offset = 1  # substring() counts from 1
    for r, owner, epoch in zip(records, owners, epochs, strict=True):
        data = r.data if r.parts is None else r.parts.head
        row: dict[str, Any] = {
            "run_id": r.run_id,
            "status": r.status,
            "seq": r.seq,
            "epoch": epoch,
            "updated_at": r.updated_at,
            "created_at": r.created_at,
            "off": offset,
            "len": len(data),
        }
        if owner is not None:
            row["owner_id"] = owner
        if r.wake_at is not None:
            row["wake_at"] = r.wake_at
        if r.deadline is not None:
            row["deadline"] = r.deadline
        if r.parts is not None:
            row["lineage"] = r.parts.lineage
        rows.append(row)
        snapshots.append(data)
        offset += len(data)
    return {"rows": json.dumps(rows), "blob": b"".join(snapshots)}


def _create_columns(
    records: Sequence[SnapshotRecord], owners: Sequence[str | None], epochs: Sequence[int]
) -> list[Any]:
    """New runs as the one JSON parameter of :data:`_CREATE`: whole, with their queue fields."""
    return [
        json.dumps(
            [
                {
                    **_fields(r, owner, epoch, whole=True),
                    "queue": r.queue,
                    "queue_key": r.queue_key,
                    "priority": r.priority,
                    "rank": rank(r.created_at, r.priority),
                    **({"idempotency_key": r.idempotency_key} if r.idempotency_key else {}),
                }
                for r, owner, epoch in zip(records, owners, epochs, strict=True)
            ]
        )
    ]


def _create_row(r: SnapshotRecord, owner: str | None) -> tuple[Any, ...]:
    """A new run as the parameters of :data:`_CREATE_ONE`: held by ``owner`` (epoch 1) or queued."""
    priority = r.priority or 0
    return (
        r.run_id,
        r.workflow_id,
        r.status,
        r.seq,
        owner,
        0 if owner is None else 1,
        r.wake_at,
        r.created_at,
        r.updated_at,
        r.trace_id,
        r.data,
        r.queue,
        r.queue_key,
        priority,
        rank(r.created_at, priority),
        r.resource_id,
        r.idempotency_key or None,
        r.deadline,
    )


def _queue_full(record: SnapshotRecord, limit: int) -> QueueFullError:
    return QueueFullError(
        f"queue {record.queue!r} has {limit} runs waiting (max_queued); run {record.run_id!r} "
        "was not recorded: start it again once the queue has drained",
        queue=record.queue or "",
        limit=limit,
        run_id=record.run_id,
    )


def _url_settings(url: str, shown: str) -> dict[str, Any]:
    """The connection settings a URL holds; a StoreError (naming it as ``shown``) if it is bad.

    A user name or password with an unencoded ``@`` or ``/`` is refused before
    libpq reads it: libpq ends the user info at the first ``@`` and the host at
    the first ``/``, so the rest of the password became the host or the database,
    and its "cannot translate host name" message showed it.
    """
    import psycopg

    rest = url.partition("://")[2]
    at = _userinfo_end(rest)
    if at >= 0 and ("@" in rest[:at] or "/" in rest[:at]):
        raise StoreError(
            f"the user name or password in the PostgreSQL URL {shown!r} holds an '@' or '/' "
            "that is not percent-encoded (write '@' as %40 and '/' as %2F): libpq would read "
            "part of it as the host or the database"
        )
    try:
        return psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        reason = _scrubbed(str(exc), _secrets(url, {}))
        raise StoreError(f"not a valid PostgreSQL URL {shown!r}: {reason}") from exc


def _userinfo_end(rest: str) -> int:
    """Where a URL's user info ends, after its ``://``: its last ``@`` before the query; -1.

    Not libpq's first ``@``: a password with an unencoded ``@`` or ``/`` ends here.
    """
    query = rest.find("?")
    return rest.rfind("@", 0, query if query >= 0 else len(rest))


def _password_span(rest: str) -> tuple[int, int] | None:
    """Where a password lies in a URL's part after ``://``: past the first ``:``, up to an ``@``.

    The ``@`` is the last one before the query: libpq's reading (the first
    ``@``) left the tail of a password with an unencoded ``@`` or ``/`` to show
    as the host or the database. With no ``@`` before a ``?``, the password may
    hold that ``?``: then the last ``@`` of all, and a query value with an
    ``@`` in it may be hidden with it, in what is only ever shown.
    """
    at = _userinfo_end(rest)
    if at < 0:
        at = rest.rfind("@")
    colon = rest.find(":", 0, at) if at > 0 else -1
    return (colon + 1, at) if colon >= 0 else None


def _secrets(url: str, settings: dict[str, Any]) -> tuple[str, ...]:
    """What an error message must not show of the password: whole, decoded, and its pieces.

    A password that libpq misread (one with an unencoded ``?`` or ``#``) comes
    back in its messages in pieces, as a port, a host or a query parameter.
    Pieces of one character are left: hiding every ``a`` would hide the message.
    """
    rest = url.partition("://")[2]
    span = _password_span(rest)
    typed = rest[span[0] : span[1]] if span else ""
    pieces = {typed, urllib.parse.unquote(typed), str(settings.get("password") or "")}
    pieces.update(re.split(r"[@/?#:&=]", typed))
    return tuple(sorted((piece for piece in pieces if len(piece) > 1), key=len, reverse=True))


def _scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` in it replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _application_name(settings: dict[str, Any], owner_id: str, *, writer: bool = False) -> str:
    """The name this store's sessions show the server: the URL's (or ours), then the id.

    A reaper finds a stalled worker's sessions by it (see :data:`_STALLED_SESSIONS`).
    The server keeps 63 bytes of printable ASCII (others it replaces, or escapes
    into more bytes): the name is cut and cleaned here, so that the id stays whole.
    The writer's session has ``/w`` after the name (``callboard/w <id>``): through
    a pooler, the heartbeat finds it by that (see ``_writer_gets_through``).
    """
    given = str(settings.get("application_name") or "callboard")
    printable = "".join(char if " " <= char <= "~" else "?" for char in given)
    mark = _WRITER_MARK if writer else ""
    return f"{printable[: _NAME_BYTES - len(owner_id) - 1 - len(mark)]}{mark} {owner_id}"


_WRITER_MARK: Final = "/w"


def _connection_options(settings: dict[str, Any], owner_id: str) -> dict[str, Any]:
    """Our defaults for what the URL's ``settings`` leave out: timeouts, keepalives; a name.

    The name is always set: the URL's ``application_name`` (or ``callboard``),
    then this store's ``owner_id``.
    """
    options = {
        key: value
        for key, value in (
            ("connect_timeout", CONNECT_TIMEOUT),
            ("keepalives", 1),
            ("keepalives_idle", 10),
            ("keepalives_interval", 5),
            ("keepalives_count", 3),
            # Text goes to and from the server as UTF-8 whatever PGCLIENTENCODING says
            # (a LATIN1 one turned any other character into an encoding error).
            ("client_encoding", "UTF8"),
        )
        if key not in settings
    }
    options["application_name"] = _application_name(settings, owner_id)
    return options


def redact(url: str) -> str:
    """The URL with any password in it replaced by ``***``: what errors and reprs show.

    ``sslpassword`` (the pass phrase of the client's SSL key) is one too.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return re.sub(r"(?i)(password\s*=\s*)\S*", r"\1***", url)
    span = _password_span(rest)
    if span is not None:
        rest = f"{rest[: span[0]]}***{rest[span[1] :]}"
    rest = re.sub(r"(?i)([?&](?:ssl)?password=)[^&#]*", r"\1***", rest)
    return f"{scheme}{separator}{rest}"


_in_pipeline_exit = threading.local()


class _PipelineExitFilter(logging.Filter):
    """Drops psycopg's "error ignored terminating" warning for the writer's own pipeline.

    A connection lost in a batch fails the pipeline's exit too, and psycopg logged
    that on its own logger beside the writer's ``store_write_retrying``: a second
    warning, naming an object, for one failure. Only this thread's, while
    :func:`_pipeline_exit_unlogged` is in effect: psycopg's other records pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            getattr(_in_pipeline_exit, "on", False)
            and str(record.msg).startswith("error ignored terminating")
        )


logging.getLogger("psycopg").addFilter(_PipelineExitFilter())


@contextlib.contextmanager
def _pipeline_exit_unlogged() -> Iterator[None]:
    """While in effect, this thread's pipeline exits log nothing through psycopg."""
    _in_pipeline_exit.on = True
    try:
        yield
    finally:
        _in_pipeline_exit.on = False


def _left_stuck(connection: Connection) -> bool:
    """Close the connection if a failure left it neither idle nor lost; whether it did.

    A cut in a pipelined batch can fail the pipeline's exit and leave the
    connection open in the middle of a command (``ACTIVE``), not broken: every
    later batch then failed on it ("can't change 'autocommit' now"), and with
    it the runs whose snapshots it carried. Closed, it is made anew for the
    next try, as a lost one is.
    """
    import psycopg

    if connection.closed or connection.broken:
        return False
    if connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return False
    with contextlib.suppress(psycopg.Error):
        connection.close()
    return True


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise StoreError(
            f"the PostgreSQL store needs psycopg, which is not installed: {_INSTALL_HINT}"
        ) from exc


def _passing(exc: BaseException) -> bool:
    """Whether a failed transaction may succeed if tried again as it is.

    A lost or refused connection, a server shutting down or starting, a
    deadlock or serialization failure, a lock timeout, resources that ran out,
    a database read-only for now (a standby a failover reconnected to before
    its promotion, ``default_transaction_read_only`` set for a while). Bad
    data, a missing table or a refused statement are for good.

    An error the server sent is judged by its SQLSTATE alone: psycopg makes
    ``OperationalError`` of classes that never pass, such as 54 (a value too
    large for an index: tried again, it held up every write of the runtime
    for as long as the retries lasted). One raised on the client's side (a
    connection lost or refused) carries none.
    """
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    if not state:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in {"08", "40", "53", "57", "58"} or state in _PASSING_STATES


_PASSING_STATES: Final = frozenset({"55P03", "25006"})
"""lock_not_available; read_only_sql_transaction."""


_REFUSING_STATES: Final = frozenset({"42501", "25006"})
"""insufficient_privilege; read_only_sql_transaction: every write is refused until mended."""


def _refused(exc: BaseException) -> bool:
    """Whether the server refused a transaction as it will refuse every write until mended."""
    return getattr(exc, "sqlstate", None) in _REFUSING_STATES


def _disk_full(exc: BaseException) -> bool:
    """Whether the server found no room for a transaction (``disk_full``: its disk is full)."""
    return getattr(exc, "sqlstate", None) == "53100"


class _Hints:
    """Hints gathered during one transaction, sent once it committed."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], None] = {}  # ordered, without repeats

    def add(self, kind: str | None, run_id: str) -> None:
        if kind is not None:
            self.items[(kind, run_id)] = None


class _Readers:
    """A small pool of autocommit connections for reads, made on demand.

    Kept simple on purpose: a read takes a connection (or makes one) and puts
    it back unless it broke, so a failed connection attempt reports its own
    reason, and closing leaves no thread behind. After :meth:`close` every
    read uses a connection of its own, closed at once: records stay readable.

    A server that refuses one more connection (``max_connections``, a role's or
    a database's ``CONNECTION LIMIT``) while this pool has others open leaves the
    reads to share those: the pool opens no more than it has for
    :data:`CROWDED_PAUSE` seconds, and a read waits for one to come free. It
    raised the refusal before (eight threads reading at once, a role limited to
    five connections: one of them raised).
    """

    def __init__(self, connect: Callable[[], Connection], size: int, shown: str) -> None:
        self._connect = connect
        self._size = size
        self._shown = shown
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)  # a connection is idle, or closed
        self._open = 0  # connections made and not closed: lent or idle
        self._cap = size  # the most it opens: fewer while the server is crowded
        self._crowded_at = 0.0
        # The slots free, under a condition of their own. Not a semaphore: a Ctrl-C on the
        # main thread lands as the call that took a slot returns, and a semaphore cannot
        # say whether it was taken then; the pool stayed a connection smaller for good.
        self._slots = threading.Condition(threading.Lock())
        self._free = size
        self._closed = False

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._idle.append(connection)
            self._open += 1

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection, given back when done, waiting up to ``CALL_TIMEOUT`` for one."""
        taken = [False]
        try:
            if not self._take(taken, CALL_TIMEOUT):
                raise StoreUnavailableError(
                    f"no connection to {self._shown} came free within {CALL_TIMEOUT} s"
                )
            connection = self._obtain(wait=True)
            assert connection is not None
            with self._lent(connection) as lent:
                yield lent
        finally:
            if taken[0]:
                self._give()

    @contextlib.contextmanager
    def spare(self) -> Iterator[Connection | None]:
        """A connection if one is free now (given back when done), else ``None``."""
        taken = [False]
        try:
            if not self._take(taken, 0.0):
                yield None
                return
            connection = self._obtain(wait=False)
            if connection is None:
                yield None
                return
            with self._lent(connection) as lent:
                yield lent
        finally:
            if taken[0]:
                self._give()

    def _take(self, taken: list[bool], timeout: float) -> bool:
        """Take a slot within ``timeout`` seconds, noting it in ``taken[0]``.

        The count and the note change in two statements between which Python runs
        no signal handler (no call, no jump back): an interrupt comes before both
        or after both, and the caller's ``finally`` gives back what ``taken`` says.
        """
        with self._slots:
            if self._free <= 0 and not self._slots.wait_for(lambda: self._free > 0, timeout):
                return False
            self._free -= 1
            taken[0] = True
        return True

    def _give(self) -> None:
        with self._slots:
            self._free += 1
            self._slots.notify()

    def _obtain(self, *, wait: bool) -> Connection | None:
        """An idle connection, or a new one; while the server is crowded, one come free.

        ``None`` when none is free now and ``wait`` is false.

        Raises:
            StoreError: the connection attempt's (a StoreUnavailableError once the
                store has opened), unless the server only refused one more beside
                those open here; or none came free within ``CALL_TIMEOUT``.
        """
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            with self._returned:
                while True:
                    if self._idle:
                        return self._idle.pop()
                    now = time.monotonic()
                    if self._cap < self._size and now - self._crowded_at >= CROWDED_PAUSE:
                        self._cap = self._size  # try for more again
                    if self._open < self._cap or self._open == 0:
                        self._open += 1
                        break
                    if not wait:
                        return None
                    if now >= deadline:
                        raise StoreUnavailableError(
                            f"no connection to {self._shown} came free within {CALL_TIMEOUT} s "
                            f"(the server refuses more than the {self._open} open)"
                        )
                    self._returned.wait(deadline - now)
            try:
                return self._connect()
            except StoreError as exc:
                with self._returned:
                    self._open -= 1
                    crowded = self._open > 0 and _crowded(exc)
                    told = crowded and self._cap == self._size  # said once a pause
                    if crowded:
                        self._cap, self._crowded_at = self._open, time.monotonic()
                    self._returned.notify()
                if not crowded:
                    raise
                if told:
                    emit(
                        logging.WARNING,
                        "store_connections_crowded",
                        store=self._shown,
                        open=self._open,
                        error=str(exc),
                        hint=f"the server refuses more connections: reads share the ones "
                        f"open for {CROWDED_PAUSE:g} s, then one more is tried (raise "
                        "max_connections, or put a pooler in between)",
                    )

    @contextlib.contextmanager
    def _lent(self, connection: Connection) -> Iterator[Connection]:
        """The connection obtained for the slot taken; given back when done."""
        good = False
        try:
            yield connection
            good = True
        finally:
            self._put_back(connection, good)

    def _put_back(self, connection: Connection, good: bool) -> None:
        import psycopg

        idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._returned:
            if good and idle and not connection.broken and not self._closed:
                self._idle.append(connection)
                self._returned.notify()
                return
            self._open -= 1
            self._returned.notify()
        connection.close()

    def discard_idle(self) -> None:
        """Close the idle connections: after one was lost, the others likely were too."""
        with self._returned:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._returned.notify_all()
        for connection in idle:
            connection.close()

    def close(self) -> None:
        self._closed = True
        self.discard_idle()


def _crowded(exc: BaseException) -> bool:
    """Whether a connection was refused as one too many (the server's message, in English)."""
    text = str(exc)
    return any(sign in text for sign in _CROWDED_SIGNS)


_CROWDED_SIGNS: Final = (
    "too many connections",  # for role "...", for database "..."
    "too many clients",  # sorry, too many clients already (max_connections)
    "connection slots are reserved",  # the last ones, kept for superusers
)
"""What libpq's message says when the server refuses a connection as one too many (it gives
no SQLSTATE for a refused connection)."""


class _Listener:
    """A daemon thread that listens for hints and hands other stores' to a callback.

    It reconnects after a lost connection, and looks every :data:`LISTEN_POLL`
    seconds whether to stop, so that it never holds up a shutdown.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        owner_id: str,
        deliver: Callable[[str, str], None],
    ) -> None:
        self._connect = connect
        self._owner_id = owner_id
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="callboard-postgres-listener", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        delay = 0.05
        while not self._stop.is_set():
            try:
                connection = self._connect()
            except (psycopg.Error, StoreError):
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            try:
                with connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    delay = 0.05
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=LISTEN_POLL):
                            self._heard(notice.payload)
            except psycopg.Error as exc:
                emit(logging.INFO, "store_listener_reconnecting", error=str(exc).strip())
                self._stop.wait(delay)

    def _heard(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("from") == self._owner_id:
                return
            hints = [(str(kind), str(run_id)) for kind, run_id in message["hints"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # someone else's notification on our channel
        for kind, run_id in hints:
            try:
                self._deliver(kind, run_id)
            except Exception:
                emit(logging.ERROR, "store_hint_failed", exc_info=True)


_UNBOUNDED: Final = QueueLimits(name="")


def _queue_limits(connection: Connection) -> dict[str, QueueLimits]:
    """Every queue's limits, as the table holds them now."""
    rows = connection.execute(
        "SELECT name, concurrency, key_concurrency, rate_count, rate_period, max_queued "
        "FROM callboard_queues"
    ).fetchall()
    return {row[0]: QueueLimits(*row) for row in rows}


def _replaced(connection: Connection, record: SnapshotRecord, owner: str | None) -> Any:
    """The row (its epoch) if the run's row holds ``record`` as a replace for ``owner`` left it.

    What a replace tried again looks for: its first try, committed, whose reply was lost.
    """
    return connection.execute(
        "SELECT epoch FROM callboard_runs WHERE run_id = %s AND seq = %s "
        "AND snapshot = %s AND owner_id IS NOT DISTINCT FROM %s",
        (record.run_id, record.seq, record.data, owner),
    ).fetchone()


def _restart_full(connection: Connection, record: SnapshotRecord) -> QueueFullError | None:
    """The error of a restart into a queue whose ``max_queued`` runs wait, if it is full.

    Counted under the queue lock, as a start's create counts (``_refuse_full``): a
    restart and a start cannot both take the last place.
    """
    queue_limits = _queue_limits(connection).get(record.queue or "")
    if queue_limits is None or queue_limits.max_queued is None:
        return None
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_QUEUE_LOCK,))
    row = connection.execute(
        f"SELECT count(*) FROM callboard_runs WHERE queue = %s AND {_QUEUED_SQL} AND {_DUE}",
        (record.queue,),
    ).fetchone()
    if row is None or int(row[0]) < queue_limits.max_queued:
        return None
    return restart_refused(queue_limits.name, queue_limits.max_queued, record.run_id)


class _Unacknowledged(Exception):
    """A create on its caller's thread failed: its commit may have happened all the same."""


class _CallerCreates:
    """Creates committed on their callers' threads, for :class:`PostgresStore`.

    ``held`` is what those of runs held here hold (run id to epoch, always 1) until the writer
    takes it into its own count; under ``lock``, which the store's ``held()``
    also takes, so a run is counted once at every moment. The creates under
    way are counted, so that the writer's last act (handing back what this
    worker holds) waits for them, and none begins after it.
    """

    __slots__ = ("_closed", "_count", "_done", "held", "lock", "under_way")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, int] = {}
        self.under_way: dict[str, int] = {}  # run id -> creates of it under way
        self._done = threading.Condition(self.lock)
        self._count = 0
        self._closed = False

    def begin(self, run_id: str) -> bool:
        """Count a create under way; ``False`` (nothing counted) once closed."""
        with self.lock:
            if self._closed:
                return False
            self._count += 1
            self.under_way[run_id] = self.under_way.get(run_id, 0) + 1
            return True

    def end(self, run_id: str, *, held: bool, unsure: bool = False) -> None:
        """A create ended; ``held``: it committed the run, held here.

        ``unsure``: it failed, maybe after its commit; the run stays under way until
        :meth:`settled` (the writer's create of it has ended): adopted meanwhile, it
        would get an actor of its own beside the one its caller starts.
        """
        with self.lock:
            if held:
                self.held[run_id] = 1
            if not unsure:
                self._forget(run_id)
            self._count -= 1
            self._done.notify_all()

    def settled(self, run_id: str) -> None:
        """The writer's create of a run whose create here was ``unsure`` has ended."""
        with self.lock:
            self._forget(run_id)

    def _forget(self, run_id: str) -> None:
        left = self.under_way.pop(run_id) - 1
        if left:
            self.under_way[run_id] = left

    def close(self, timeout: float) -> None:
        """Let no create begin, and wait up to ``timeout`` seconds for those under way."""
        with self.lock:
            self._closed = True
            self._done.wait_for(lambda: self._count == 0, timeout)


class _Batch:
    """What one transaction changes of the store's own state, applied once it commits."""

    __slots__ = ("adopted", "broken", "fenced", "held", "hints", "reaped", "replacing")

    def __init__(
        self, held: dict[str, int], fenced: frozenset[str], reaped: bool, broken: set[int]
    ) -> None:
        self.held = dict(held)
        self.fenced = set(fenced)
        self.broken = set(broken)  # lineages whose parts missed a refused save
        self.hints = _Hints()
        self.reaped = reaped  # this worker's row was found gone, and nobody was told yet
        self.adopted = False
        # The runs a replace of this batch is for: a try whose commit was never
        # acknowledged may have made one this worker's (see PostgresStore._claim).
        self.replacing: frozenset[str] = frozenset()


class PostgresStore:
    """Snapshots in a PostgreSQL database that several runtimes share as workers.

    Implements :class:`~runtime._stores.base.SnapshotStore` and
    :class:`~runtime._stores.base.SharedStore`. The lease is renewed only by
    :meth:`heartbeat`: whoever uses the store as a worker calls it more often
    than every ``lease`` seconds, and a worker that stops calling it loses its
    runs to :meth:`reap` (its later writes of them are fenced off).

    Args:
        url: A ``postgresql://`` (or ``postgres://``) URL, as libpq takes it:
            ``postgresql://user:password@host:5432/dbname``, or
            ``postgresql:///dbname?host=/run/postgresql`` for a local socket.
        lease: Seconds without a heartbeat after which this worker's runs go
            back to the queue.
        readonly: Open for reading only: no writer thread, no worker row, and
            the schema must exist.

    Raises:
        StoreError: if psycopg is not installed, the URL is not a PostgreSQL
            URL, the server cannot be reached, the database does not exist,
            authentication fails, a read-only store finds no schema, or the
            schema was written by a newer callboard (it is then left
            untouched). Nothing is left running: no thread, no connection.
    """

    durable = True
    _abandoned = False  # closed as a killed process would be: nothing handed back
    _bconn: Connection | None = None  # the heartbeat's own connection (see heartbeat)
    _writer_pid: int | None = None  # the server process of the writer's connection
    _pid_of: Connection | None = None  # the connection it is the process of
    _ids_pruned_at: float | None = None  # when the writer last pruned the kept request ids
    _pooled = False  # a connection went through a pooler (see _set_up)

    def __init__(  # noqa: PLR0915 - one attribute a line, each with why it is kept
        self, url: str, *, lease: float = LEASE, readonly: bool = False
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            shown = redact(url) if isinstance(url, str) else type(url).__name__
            raise StoreError(
                f"a PostgreSQL store needs a postgresql:// or postgres:// URL, got {shown!r}"
            )
        try:
            lease = check_lease(lease)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        self._url = url  # never shown: it may hold the password
        self.lease = float(lease)
        self.readonly = readonly
        self.owner_id = new_id()
        self._shown = redact(url)
        self._secrets: tuple[str, ...] = ()
        self._closed = False
        self._writer: GroupCommitWriter | None = None
        self._wconn: Connection | None = None
        self._listener: _Listener | None = None
        self._hint: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # run_id -> epoch; replaced whole, by the writer only
        self._callers = _CallerCreates()
        self._fenced: frozenset[str] = frozenset()  # held once, taken by others since
        self._broken: set[int] = set()  # lineages whose parts missed a refused save
        self._unsent = _Hints()  # committed, not yet sent to other processes (HINT_DELAY)
        self._unsent_since = 0.0
        self._reaped = False  # a heartbeat found this worker's row gone
        self._beat_lock = threading.Lock()  # over _bconn
        self._ambiguous = False  # a commit that might have held runs was never acknowledged
        # When a claim next adopts, doubt or not (ADOPT_EVERY); none is held by a new id.
        self._next_adopt = time.monotonic() + ADOPT_EVERY
        self._retried_for: str | None = None  # why the writer last had to try again, if it did
        self._refusals = Refusals(self._shown)  # how long every write has been refused
        self._refused_now = False  # the writer's last transaction was refused (_sift)
        self._opened = False  # connected once: a lost connection is an outage, not a bad URL
        self._role: tuple[str, list[str], int | None] = ("both", [], None)
        self._unended: set[str] = set()  # stalled workers this role may not end: told once
        _require_psycopg()
        settings = _url_settings(url, self._shown)
        self._secrets = _secrets(url, settings)
        self._options = _connection_options(settings, self.owner_id)
        self._writer_name = _application_name(settings, self.owner_id, writer=True)
        # Whether connections set lock_timeout (LOCK_TIMEOUT): unless the URL's options do.
        self._lock_timeout = "lock_timeout" not in str(settings.get("options") or "")
        self._readers = _Readers(lambda: self._connect(autocommit=True), READERS, self._shown)
        if readonly:
            connection = self._connect(autocommit=True)
            try:
                self._check_schema(connection, writable=False)
            except BaseException:
                connection.close()
                raise
            self._readers.add(connection)
            self._opened = True
            return
        self._wconn = self._prepared()
        self._opened = True
        self._writer = GroupCommitWriter(
            name="callboard-postgres-writer",
            commit=self._commit,
            idle=self._writer_idle,
            give_up=self._give_up,
            finish=self._finish,
            sift=self._sift,
            batch=BATCH,
        )

    def _prepared(self) -> Connection:
        """The writer's connection, once the schema is made (or migrated) and this worker joined.

        Connected, then cut off (the server restarting, a terminated backend, a
        deadlock with another process's migration): it tries again. A server
        that cannot be reached at all fails in ``_connect``, at once.
        """
        attempt = 1
        while True:
            connection = self._connect(autocommit=False)
            try:
                self._prepare(connection)
            except StoreError as exc:
                connection.close()
                if attempt == PREPARE_TRIES or not _passing(exc.__cause__ or exc):
                    raise
                time.sleep(PREPARE_PAUSE * attempt)
                attempt += 1
                continue
            except BaseException:
                connection.close()
                raise
            self._writer_pid, self._pid_of = connection.info.backend_pid, connection
            return connection

    @property
    def location(self) -> str:
        """The store's URL, with any password in it replaced by ``***``."""
        return self._shown

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r}{', readonly=True' if self.readonly else ''})"

    # --- connections --------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        """An error's message, on one line, with the password (if any) taken out."""
        return _scrubbed(" ".join(str(exc).split()) or type(exc).__name__, self._secrets)

    def _connect(self, *, autocommit: bool) -> Connection:
        """A new connection; a StoreError saying why there is none.

        Once the store has opened (its URL, login and database were good), a
        connection refused or lost for a passing reason is a
        :class:`StoreUnavailableError`: the server is down or restarting, or
        the network is gone. Before, it is a plain ``StoreError``: libpq gives
        no code that tells an unreachable server from a wrong password.
        """
        import psycopg

        try:
            options = self._options
            if not autocommit:  # the writer's: the one connection that holds transactions
                options = {**options, "application_name": self._writer_name}
            # No prepared statement until the session is known to be the server's own.
            connection = psycopg.connect(
                self._url, autocommit=autocommit, prepare_threshold=None, **options
            )
            try:
                self._set_up(connection)
                if not autocommit:
                    connection.commit()
            except BaseException:
                connection.close()
                raise
            return connection
        except psycopg.Error as exc:
            error = StoreUnavailableError if self._opened and _passing(exc) else StoreError
            raise error(
                f"cannot connect to the PostgreSQL store {self._shown}: {self._reason(exc)}"
            ) from exc

    def _check_schema(self, connection: Connection, *, writable: bool) -> int:
        """The schema version in the database (0: none); a StoreError if it is newer."""
        import psycopg

        try:
            encoding = connection.execute("SHOW server_encoding").fetchone()
            if encoding is not None and encoding[0] != "UTF8":
                # SQL_ASCII (initdb's default under LANG=C): every text came back as
                # bytes, and no run could be read. LATIN1 and the like: a workflow id
                # outside it stopped every claim.
                raise StoreError(
                    f"the database of the PostgreSQL store {self._shown} has encoding "
                    f"{encoding[0]}; callboard keeps text as UTF-8 and needs a UTF8 database "
                    "(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
                )
            row = connection.execute("SELECT to_regclass('callboard_meta') IS NOT NULL").fetchone()
            version = 0
            if row is not None and row[0]:
                found = connection.execute(
                    "SELECT value FROM callboard_meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(found[0]) if found is not None else 0
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(
                f"cannot read the schema of the PostgreSQL store {self._shown}: {self._reason(exc)}"
            ) from exc
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the PostgreSQL store {self._shown} was written by a newer callboard (schema "
                f"version {version}; this one knows version {SCHEMA_VERSION}); it is left untouched"
            )
        if not writable and version == 0:
            raise StoreError(
                f"{self._shown} has no callboard schema: no store was opened for writing there"
            )
        if not writable and version < SCHEMA_VERSION:
            raise StoreError(
                f"the PostgreSQL store {self._shown} has schema version {version}, older than "
                f"this callboard's {SCHEMA_VERSION}: open it once for writing (a worker or a "
                "runtime) to migrate it in place"
            )
        return version

    def _set_up(self, connection: Connection) -> None:
        """Tell a new connection through a pooler from a direct one, and set it up for it.

        A pooler (PgBouncer, Supavisor, a cloud's proxy) answers the login
        itself, with a process id of its own: the server's, read by a query,
        differs. In transaction mode it lends a server connection for one
        transaction at a time, so what a session keeps between transactions is
        left on a connection the next transaction may not get: a prepared
        statement is unknown there (``prepared statement "_pg3_0" does not
        exist``), or one of another client's is found under the same name and
        run in its place, and a ``SET`` stays behind for whoever gets that
        connection next. On a direct connection, psycopg prepares the
        statements run often (planned once: a fleet of workers took about a third
        less of the server's CPU per run than without) and ``lock_timeout`` is
        set for the session. Through a pooler, no statement is prepared and
        ``lock_timeout`` is set in each write transaction instead (see
        :meth:`_transaction`); hints by ``LISTEN`` are not listened for (a
        ``LISTEN`` stays on a server connection the listener does not keep),
        polling finds what they would have told; and the heartbeat finds the
        writer's sessions by their name, not by a process id
        (:meth:`_writer_gets_through`).
        """
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        pooled = row is None or row[0] != connection.info.backend_pid
        if pooled:
            if not self._pooled:
                self._pooled = True
                emit(
                    logging.INFO,
                    "store_behind_pooler",
                    store=self._shown,
                    hint="the connection goes through a pooler: no prepared statements, "
                    "lock_timeout set per transaction, no LISTEN (workers poll instead)",
                )
            return
        connection.prepare_threshold = PREPARE_THRESHOLD
        if self._lock_timeout:
            connection.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT * 1000)}")

    def _prepare(self, connection: Connection) -> None:
        """Create the schema if it is absent, and this worker's row, in one transaction.

        The advisory lock makes two workers that start at once take turns.
        """
        import psycopg

        try:
            # However long another process's migration holds the schema lock.
            connection.execute("SET LOCAL lock_timeout = 0")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            version = self._check_schema(connection, writable=True)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                version = 1
            if version < SCHEMA_VERSION:
                if version >= 1:
                    # Processes that opened it at the older version read the schema then,
                    # never again: they would misread what this version writes.
                    users = connection.execute(
                        "SELECT host, pid FROM callboard_workers "
                        f"WHERE heartbeat_at >= {_NOW_AT} "
                        f"- make_interval(secs => least(lease, {MAX_LEASE}))"
                    ).fetchall()
                    refuse_upgrade_beside_older(self._shown, version, SCHEMA_VERSION, users)
                for steps in _MIGRATIONS[version - 1 :]:
                    for statement in steps:
                        connection.execute(statement)
                connection.execute(
                    "INSERT INTO callboard_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            row = connection.execute(
                "SELECT to_regclass('callboard_resume_request_ids') IS NULL"
            ).fetchone()
            if row is not None and row[0]:
                # Version 9 as main had it before the ids of requests were kept (never
                # released): what the migration adds now, added once.
                for statement in _RESUME_REQUEST_IDS_DDL:
                    connection.execute(statement)
            self._join_row(connection)
            connection.commit()
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                connection.rollback()
            raise StoreError(
                f"cannot prepare the PostgreSQL store {self._shown}: {self._reason(exc)}"
            ) from exc
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                connection.rollback()
            raise

    def run_for_key(self, workflow_id: str, key: str) -> str | None:
        """The run of ``workflow_id`` started with idempotency key ``key``, or ``None``."""

        def read(connection: Connection) -> str | None:
            row = connection.execute(
                "SELECT run_id FROM callboard_runs WHERE workflow_id = %s AND idempotency_key = %s",
                (workflow_id, key),
            ).fetchone()
            return None if row is None else str(row[0])

        result: str | None = self._read(read)
        return result

    def read_with(self, read: Callable[[Connection], _T]) -> _T:
        """Run ``read`` on one of the store's autocommit connections (a write is one statement).

        For what keeps its own table beside the runs (schedules).

        Raises:
            StoreError: if the database cannot be reached or refuses the statement.
        """
        result: _T = self._read(read)
        return result

    def database_time(self) -> float:
        """The database server's clock now (epoch seconds): the one every runtime on it shares.

        A test kit's virtual clock instead, while one is installed (see :data:`_NOW`).

        Raises:
            StoreError: if the database cannot be reached.
        """

        def read(connection: Connection) -> float:
            row = connection.execute(f"SELECT {_NOW}").fetchone()
            assert row is not None
            return float(row[0])

        return self.read_with(read)

    def _join_row(self, connection: Connection) -> bool:
        """Write this worker's row; return whether it was missing (made anew)."""
        role, workflows, concurrency = self._role
        row = connection.execute(
            _JOIN,
            (
                self.owner_id,
                this_host(),
                os.getpid(),
                role,
                workflows,
                concurrency,
                self.lease,
            ),
        ).fetchone()
        return bool(row is not None and row[0])

    def _read(self, read: Callable[[Connection], Any]) -> Any:
        """Run ``read`` on a pooled connection; once more on a new one if the first was lost."""
        import psycopg

        for attempt in (1, 2):
            try:
                with self._readers.connection() as connection:
                    _virtual_now(connection)
                    return read(connection)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if getattr(exc, "sqlstate", None) == "55P03":  # lock_timeout: not a lost line
                    raise StoreUnavailableError(
                        f"cannot read the PostgreSQL store {self._shown}: {self._reason(exc)} "
                        f"(another session held a lock on its tables for {LOCK_TIMEOUT} s)"
                    ) from exc
                self._readers.discard_idle()
                if attempt == 2:
                    raise StoreUnavailableError(
                        f"cannot read the PostgreSQL store {self._shown}: {self._reason(exc)}"
                    ) from exc
            except psycopg.Error as exc:
                error = StoreUnavailableError if _passing(exc) else StoreError
                raise error(
                    f"cannot read the PostgreSQL store {self._shown}: {self._reason(exc)}"
                ) from exc
            except StoreError:
                if attempt == 2:
                    raise
                self._readers.discard_idle()
        raise AssertionError("unreachable")

    # --- the snapshot store ---------------------------------------------------------

    def create(self, record: SnapshotRecord, *, hold: bool = True) -> bool:
        """Record a new run, committed when this returns; ``False`` if its id is taken.

        Args:
            record: The run's first record.
            hold: Hold the run here (epoch 1), or leave it queued for any worker.

        Raises:
            StoreUnavailableError: if the commit did not happen within
                ``CALL_TIMEOUT`` (the database stayed unreachable); at once if the
                server refuses writes (privileges revoked, a read-only database).
            StoreError: if the store is read-only or closed.
        """
        began = time.monotonic()
        maybe = False  # whether a try on this thread may have committed it, unacknowledged
        if record.queue is None and self._fast_creates and not _releases(record):
            try:
                created = self._create_now(record, hold)
            except _Unacknowledged:
                maybe = True
            else:
                if created is not None:
                    return created
        try:
            future: Future[bool] = Future()
            write = self._submit("create", (record, hold, maybe), resolve(future))
            # The try on this thread (a lock may have held it) counts against the wait.
            left = max(0.0, CALL_TIMEOUT - (time.monotonic() - began))
            return bool(
                self._committed(write, future, f"the run {record.run_id!r} was not recorded", left)
            )
        finally:
            if maybe:
                self._callers.settled(record.run_id)

    _fast_creates: bool = True
    """Whether ``create`` commits on its caller's thread when it can (tests turn it off)."""

    def _create_now(self, record: SnapshotRecord, hold: bool) -> bool | None:
        """Commit a create on the caller's thread; ``None``: not tried.

        One ``INSERT`` in autocommit on a pooled connection: its own transaction,
        one round trip, and no wait behind the writer's batches of saves (a burst
        of starts on a runtime running runs waited about 5 ms each). Only a run
        with no queue (a queue's limits are counted by the writer, under the
        queue lock), and only with a connection free at once: when many callers
        create together, one transaction of the writer's takes them all, more
        cheaply than one each. A run held here is this worker's at epoch 1 from
        the commit on; the writer takes it into its count at its next
        transaction, before any save of the run, which comes after this
        returns. One left queued is announced as the writer's creates are: to
        this store's hint at once, and to other processes by the writer's next
        ``NOTIFY``.

        Raises:
            _Unacknowledged: if it failed, maybe after its commit.
            StoreUnavailableError: if the server refused it (privileges revoked,
                a read-only database): nothing was committed.
        """
        import psycopg

        if self._closed or self.readonly or not self._callers.begin(record.run_id):
            return None
        created: bool | None = None
        unsure = False
        try:
            with self._readers.spare() as connection:
                if connection is None:
                    return None
                # No _virtual_now: the statement reads no clock of the database's.
                owner = self.owner_id if hold else None
                created = bool(
                    connection.execute(_CREATE_ONE, _create_row(record, owner)).fetchall()
                )
            self._refusals.committed_aside()
        except (psycopg.Error, StoreError) as exc:
            if _refused(exc):
                # The server refused the statement (privileges revoked, a read-only
                # database): nothing committed, and the caller is told at once, as the
                # writer would tell it (refuse_at_once), not after the whole CALL_TIMEOUT.
                raise refused_error(
                    f"the PostgreSQL store {self._shown}",
                    self._reason(exc),
                    f"the run {record.run_id!r} was not recorded",
                    record.run_id,
                ) from exc
            self._readers.discard_idle()
            unsure = True  # the caller's create() settles it once the writer's try ends
            raise _Unacknowledged from exc
        finally:
            self._callers.end(record.run_id, held=bool(created and hold), unsure=unsure)
        if created and not hold:
            hints = _Hints()
            hints.add(_hint_kind(record), record.run_id)
            self._tell_here(hints)
            with contextlib.suppress(StoreError):  # closed meanwhile: workers poll too
                self._submit("hint", hints, ignore)
        return created

    def _take_held_new(self) -> None:
        """On the writer thread: count as held the runs that callers' creates hold."""
        with self._callers.lock:
            new = self._callers.held
            if new:
                self._held = {**self._held, **new}
                self._fenced = self._fenced.difference(new)
                self._callers.held = {}

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Queue newer snapshots; ``on_commit`` runs once they are committed.

        A record older than the stored one (by ``seq``), or for a run already
        terminal, changes nothing. A record of a run this store holds is
        written only while the run's owner and epoch are still this store's;
        one of a run it does not hold, only while nobody holds the run. A
        record that settles its run, or puts it to sleep with a ``wake_at``,
        lets go of the run. If a record is refused because another worker
        holds its run, ``on_error`` gets a :class:`RunFencedError` (the other
        records of the call are stored); while the database is unreachable
        the records wait and are tried again.
        """
        self._submit("save", list(records), _reporting(on_commit, on_error))

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

        A compare-and-set, committed when it returns ``True``. It fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs or is
        not below ``record.seq``, its status is terminal, or a worker (this one
        included) holds it. With ``hold`` the run is then held here (its epoch bumped);
        without, it is left queued (an unfinished record) or released. With
        ``canceling`` the run's cancel is asked for in the same write. A
        record that resumes suspensions (``record.taken``) fails while a
        resume request waits for one of them, unless it carries that request
        out (``requested``, its id: then it fails unless that very request
        still waits; see :meth:`request_resume`).

        Raises:
            StoreUnavailableError: if the commit did not happen within ``CALL_TIMEOUT``.
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

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest committed record of a run, or ``None``. Safe from any thread."""

        def read(connection: Connection) -> SnapshotRecord | None:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM callboard_runs WHERE run_id = %s", (run_id,)
            ).fetchone()
            return None if row is None else _record(row)

        result: SnapshotRecord | None = self._read(read)
        return result

    def load_many(self, run_ids: Sequence[str]) -> list[SnapshotRecord]:
        """The newest records of these runs (unknown ones left out)."""
        ids = list(run_ids)

        def read(connection: Connection) -> list[SnapshotRecord]:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM callboard_runs WHERE run_id = ANY(%s)", (ids,)
            ).fetchall()
            return [_record(row) for row in rows]

        result: list[SnapshotRecord] = self._read(read)
        return result

    def seqs(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The ``seq`` of each of these runs' newest record (unknown ones left out)."""
        ids = list(run_ids)

        def read(connection: Connection) -> dict[str, int]:
            rows = connection.execute(
                "SELECT run_id, seq FROM callboard_runs WHERE run_id = ANY(%s)", (ids,)
            ).fetchall()
            return dict(rows)

        result: dict[str, int] = self._read(read)
        return result

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
        """Runs, newest first (by ``created_at``), filtered; and how many match in all."""
        clauses: list[str] = []
        params: list[Any] = []
        statuses = status_set(status)
        for clause, value in (
            ("workflow_id = %s", workflow_id),
            ("status = ANY(%s)", None if statuses is None else sorted(statuses)),
            ("resource_id = %s", resource_id),
            ("created_at >= %s", from_date),
            ("created_at <= %s", to_date),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""

        def read(connection: Connection) -> tuple[list[SnapshotRecord], int]:
            counted = connection.execute(
                f"SELECT count(*) FROM callboard_runs{where}",
                params,
            ).fetchone()
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM callboard_runs{where} "
                "ORDER BY created_at DESC, run_id LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
            return [_record(row) for row in rows], int(counted[0]) if counted else 0

        result: tuple[list[SnapshotRecord], int] = self._read(read)
        return result

    def delete(self, run_id: str) -> bool:
        """Delete the record of a run that has ended; return whether it did.

        ``False`` for a run that is not there, and for one that has not ended
        (``success``, ``failed`` or ``canceled``): the status is checked in the
        same step as the delete, so a run restarted meanwhile is never deleted
        under its actor.

        Raises:
            StoreUnavailableError: if the server refuses writes (privileges
                revoked, a read-only database), at the first try that meets it,
                nothing deleted; or if the delete did not commit within ``CALL_TIMEOUT``.
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

        Only ``success``, ``failed`` and ``canceled`` runs are deleted (with
        ``status``, only runs of that status), at most
        :data:`~runtime._stores.base.PRUNE_CHUNK` in one transaction: the runs'
        saves go on between two.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable
                (the runs deleted before stay deleted).
            StoreUnavailableError: if the server refuses writes (privileges
                revoked), at the first try that meets it: no more runs are deleted.
        """
        statuses = TERMINAL_STATUSES if status is None else TERMINAL_STATUSES & {status}
        if not statuses:
            return 0
        ordered = sorted(statuses)
        deleted = 0
        if ended_before is not None:
            while True:
                chunk = self._prune_chunk((ended_before, ordered, PRUNE_CHUNK), deleted)
                deleted += chunk
                if chunk < PRUNE_CHUNK:
                    break
        if keep is None:
            return deleted
        cutoff = self._keep_cutoff(ordered, keep)
        while cutoff is not None:
            chunk = self._prune_chunk((cutoff, ordered, PRUNE_CHUNK), deleted)
            deleted += chunk
            if chunk < PRUNE_CHUNK:
                break
        return deleted

    def _keep_cutoff(self, statuses: list[str], keep: int) -> float | None:
        """When the ``keep``-th newest ended run ended: those that ended before it go.

        ``None`` if there are no more than ``keep``. Read once a pass, through the
        index by status (the newest ``keep`` of each, no sort of every run ended).
        Runs that end later only add to the newest, and deleting older ones leaves
        them be: deleting only what ended before this time never takes one of the
        newest ``keep``, whatever else deletes meanwhile (another worker's pass,
        ``callboard runs prune``). A pass that counted the runs to delete instead
        deleted that many however many others had: two workers' passes left none.
        """
        if keep == 0:
            return math.inf
        newest = " UNION ALL ".join(_NEWEST_OF for _ in statuses)

        def cutoff(connection: Connection) -> float | None:
            row = connection.execute(
                f"SELECT ended_at FROM ({newest}) AS n ORDER BY ended_at DESC LIMIT 1 OFFSET %s",
                (*[value for each in statuses for value in (each, keep)], keep - 1),
            ).fetchone()
            return None if row is None else float(row[0])

        found: float | None = self._read(cutoff)
        return found

    def _prune_chunk(self, payload: tuple[float | None, list[str], int], deleted: int) -> int:
        """Delete up to ``payload[2]`` runs that ended before ``payload[0]``; return how many.

        In one transaction.
        """
        future: Future[int] = Future()
        write = self._submit("prune", payload, resolve(future))
        return int(self._committed(write, future, f"{deleted} runs were pruned, and no more"))

    def unfinished(self) -> list[SnapshotRecord]:
        """Records of runs that are ``pending``, ``running`` or ``waiting``, whoever holds them."""

        def read(connection: Connection) -> list[SnapshotRecord]:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM callboard_runs WHERE status IN ({_UNFINISHED_SQL}) "
                "ORDER BY created_at, run_id"
            ).fetchall()
            return [_record(row) for row in rows]

        result: list[SnapshotRecord] = self._read(read)
        return result

    def abandon(self) -> None:
        """Close as a killed process would: this worker's row and held runs stay as they are.

        Writes already queued still commit (a process killed a moment later
        would have committed them); then nothing. The lease runs out, and
        another worker's reaper hands the runs back, as after a ``SIGKILL``.
        """
        self._abandoned = True
        self.close()

    def close(self) -> None:
        """Finish the queued writes, leave the workers, stop the listener; bounded in time.

        The runs this worker still holds go back to the queue, for other
        workers to take at once. Reads go on working, each on a connection
        of its own.
        """
        if self._closed:
            return
        self._closed = True
        # A heartbeat under way past this wait closes the connection itself once done.
        if self._beat_lock.acquire(timeout=CLOSE_TIMEOUT):
            try:
                beats, self._bconn = self._bconn, None
            finally:
                self._beat_lock.release()
            if beats is not None:
                beats.close()
        if self._writer is not None:
            self._writer.stop(CLOSE_TIMEOUT)
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(LISTEN_POLL * 4 + CONNECT_TIMEOUT)
        self._readers.close()

    # --- the shared store -------------------------------------------------------------

    def join(self, *, role: str, workflows: Sequence[str], concurrency: int | None) -> None:
        """Register (or update) this worker's row: what it runs, and a heartbeat.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[None] = Future()
        payload = (role, sorted(set(workflows)), concurrency)
        write = self._submit("join", payload, resolve(future))
        self._committed(write, future, "this worker did not join")

    def heartbeat(self) -> bool:
        """Renew this worker's lease, by the database's clock (a test kit's virtual one in a test).

        The lease is renewed in one autocommit statement on a connection of its
        own, beside the writer, so that it never waits with a batch that waits
        for a lock (a paused worker's): the live worker would be reaped. A
        worker whose writes wait still renews its lease (they are fenced by
        owner and epoch all the same); a paused process does not. A row found
        gone goes through the writer, which fences off what was held.

        Returns:
            ``False`` if its row was gone (reaped: its runs went back to the
            queue); the row is made again, and the runs it held are fenced off.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
            StoreUnavailableError: at once if the server refuses writes (privileges
                revoked, a read-only database), through the writer too
                (:data:`~runtime._stores._writer.REFUSED_AT_ONCE`): nothing renewed.
        """
        if self._renewed():
            return True
        future: Future[bool] = Future()
        write = self._submit("heartbeat", None, resolve(future))
        return bool(self._committed(write, future, "the lease was not renewed"))

    def _renewed(self) -> bool:
        """Renew the lease beside the writer; ``False`` if the row was gone or reaped meanwhile.

        Raises:
            StoreError: as :meth:`heartbeat` does.
        """
        with self._beat_lock:
            try:
                return self._renew()
            finally:
                if self._closed and self._bconn is not None:  # closed meanwhile
                    self._bconn.close()
                    self._bconn = None

    def _renew(self) -> bool:
        """What :meth:`_renewed` does, under its lock."""
        import psycopg

        self._live_writer()  # a store closed, or whose writer died, renews nothing
        for attempt in (1, 2):
            connection = self._bconn
            try:
                if connection is None or connection.closed or connection.broken:
                    if connection is not None:
                        connection.close()
                    self._bconn = None
                    connection = self._bconn = self._connect(autocommit=True)
                self._writer_gets_through(connection)
                _virtual_now(connection)
                row = connection.execute(_RENEW, (self.owner_id,)).fetchone()
            except psycopg.Error as exc:
                lost = isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
                timed_out = getattr(exc, "sqlstate", None) == "55P03"
                if lost and not timed_out and attempt == 1:
                    # A connection the server dropped: once more, on a new one.
                    if connection is not None:
                        connection.close()
                    continue
                if _refused(exc):
                    # Said as the writer says a refused write (refuse_at_once), so that
                    # the lease thread's log names the refusal as the claimer's does.
                    raise refused_error(
                        f"the PostgreSQL store {self._shown}",
                        self._reason(exc),
                        "the lease was not renewed",
                    ) from exc
                error = StoreUnavailableError if _passing(exc) else StoreError
                raise error(
                    f"cannot renew the lease on the PostgreSQL store {self._shown}: "
                    f"{self._reason(exc)}"
                ) from exc
            # Read after the row: a join that found the row gone (and made it anew)
            # says so before its commit, so a renewed row is never taken for ours.
            return row is not None and not self._reaped
        raise AssertionError("unreachable")

    def _writer_gets_through(self, connection: Connection) -> None:
        """Refuse to renew the lease for a writer whose commit the server does not see.

        A commit that waits for a lock (a paused worker's) or runs long (a large
        prune) is still this worker's work: its session is ``active`` on the
        server, and the lease is renewed; between two of its statements, which a
        slow network makes long, the session is idle for a round trip. A commit
        under way for half a lease whose session the server has found idle for
        half a lease too, or gone, is not getting through (a connection cut off
        in the network): renewing the lease beside it would
        keep this worker's runs held for as long as that lasts, where a reap
        hands them to a worker whose writes get through.

        Raises:
            StoreUnavailableError: if the writer's commit does not get through.
        """
        writer, pid = self._writer, self._writer_pid
        if writer is None or (pid is None and not self._pooled):
            return
        waited = writer.committing_for()
        if waited <= self.lease / 2:
            return
        if self._pooled:
            # The pooler's process id is not the server's (see _set_up): the sessions
            # that bear the writer's name are the server connections it was lent; a
            # commit waiting in the pooler for one has none working on it.
            rows = connection.execute(_WRITER_SESSIONS, (self._writer_name,)).fetchall()
            shown = f"named {self._writer_name!r}"
        else:
            rows = connection.execute(_WRITER_STATE, (pid,)).fetchall()
            shown = f"process {pid}"
        for state, since in rows:
            if state is None or state == "active" or since is None or since < self.lease / 2:
                # Working on it; or between two statements of the commit, which a slow
                # network makes long (a state not shown to this role is taken as working).
                return
        state, since = min(rows, key=lambda row: row[1]) if rows else (None, None)
        raise StoreUnavailableError(
            f"the lease on the PostgreSQL store {self._shown} is not renewed: this "
            f"worker's writes have waited {waited:.1f} s for a server that finds their "
            f"session {state or 'gone'}"
            + ("" if since is None else f" for {since:.1f} s")
            + f" ({shown}): its connection does not get through"
        )

    def claim(
        self,
        workflow_ids: Sequence[str],
        limit: int,
        skip: Collection[str] = (),
        busy: Collection[str] = (),
        executing: Collection[str] = (),
    ) -> list[Claimed]:
        """Take up to ``limit`` queued runs of these workflows, oldest first.

        Each is then held here with its epoch bumped. Rows another worker has
        locked are skipped (``FOR UPDATE SKIP LOCKED``), never waited for, and
        so are runs named in ``skip``, unless their cancel was requested, and
        those named in ``busy``. Runs named in ``busy`` or ``executing`` count in
        their queues' limits whatever their status (a step body of theirs runs
        here); those in ``executing`` only are taken as any other (a step body
        their run let go of runs here: a run asleep meanwhile wakes). A run this
        store thought it held, which the claim found in the queue (reaped
        meanwhile), goes back to the queue instead, fenced off: its actor here
        may still be running a step.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        if limit <= 0 or not workflow_ids:
            return []
        future: Future[list[Claimed]] = Future()
        payload = (sorted(set(workflow_ids)), limit, sorted(skip), sorted(busy), sorted(executing))
        write = self._submit("claim", payload, resolve(future))
        claimed: list[Claimed] = self._committed(write, future, "nothing was claimed")
        return claimed

    def hand_back(self, run_ids: Sequence[str]) -> int:
        """Give runs held here back to the queue at once, as they are; how many were.

        For runs this worker cannot drive (no definition of their version is
        registered here): any worker may claim them next. A run this worker no
        longer holds is left alone. A run that never started is counted again
        as a first start by its queue's rate limit.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        if not run_ids:
            return 0
        future: Future[int] = Future()
        write = self._submit("hand_back", sorted(set(run_ids)), resolve(future))
        handed: int = self._committed(write, future, "no run was handed back")
        return handed

    def next_wake(self, workflow_ids: Sequence[str], skip: Collection[str] = ()) -> float | None:
        """The earliest ``wake_at`` of queued sleeping runs of these workflows, or ``None``.

        Runs named in ``skip`` are left out.
        """
        ids = sorted(set(workflow_ids))
        skipped = sorted(skip)

        def read(connection: Connection) -> float | None:
            row = connection.execute(
                f"SELECT min(wake_at) FROM callboard_runs WHERE {_QUEUED_SQL} "
                "AND wake_at IS NOT NULL AND workflow_id = ANY(%(workflows)s)"
                + (f" AND {_SKIPPING}" if skipped else ""),
                {"workflows": ids, "skip": skipped},
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        result: float | None = self._read(read)
        return result

    def next_deadline(
        self, workflow_ids: Sequence[str], skip: Collection[str] = ()
    ) -> float | None:
        """The soonest deadline of a run nobody holds, of these workflows (but ``skip``'s)."""
        ids = sorted(set(workflow_ids))
        if not ids:
            return None

        def read(connection: Connection) -> float | None:
            row = connection.execute(
                f"SELECT min(deadline) FROM callboard_runs WHERE {_DEADLINE_KEPT} "
                f"AND status IN ({_UNFINISHED_OR_SUSPENDED_SQL}) "
                "AND workflow_id = ANY(%(workflows)s) AND NOT (run_id = ANY(%(skip)s::text[]))",
                {"workflows": ids, "skip": sorted(skip)},
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        result: float | None = self._read(read)
        return result

    def expired(
        self, workflow_ids: Sequence[str], limit: int, skip: Collection[str] = ()
    ) -> list[SnapshotRecord]:
        """Runs nobody holds, of these workflows, whose deadline passed (soonest first).

        By this process's clock (a test kit's virtual one under a harness), as
        run actors set deadlines by theirs, not the database's.
        """
        ids = sorted(set(workflow_ids))
        if not ids:
            return []

        def read(connection: Connection) -> list[SnapshotRecord]:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM callboard_runs WHERE {_DEADLINE_KEPT} "
                f"AND deadline <= %(now)s AND status IN ({_UNFINISHED_OR_SUSPENDED_SQL}) "
                "AND workflow_id = ANY(%(workflows)s) AND NOT (run_id = ANY(%(skip)s::text[])) "
                "ORDER BY deadline, run_id LIMIT %(limit)s",
                {"workflows": ids, "skip": sorted(skip), "limit": limit, "now": _clock.time()},
            ).fetchall()
            return [_record(row) for row in rows]

        result: list[SnapshotRecord] = self._read(read)
        return result

    def next_lapse(self, alive: Collection[str] = ()) -> float | None:
        """When the soonest lease runs out of a worker that holds runs (but ``alive`` ones)."""

        def read(connection: Connection) -> float | None:
            row = connection.execute(
                "SELECT min(extract(epoch FROM w.heartbeat_at)::float8 "
                f"+ least(w.lease, {MAX_LEASE})) "
                "FROM callboard_workers AS w WHERE NOT (w.worker_id = ANY(%s::text[])) "
                "AND EXISTS (SELECT 1 FROM callboard_runs AS r WHERE r.owner_id = w.worker_id "
                f"AND r.status IN ({_UNFINISHED_SQL}))",
                (sorted(alive),),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        result: float | None = self._read(read)
        return result

    def next_opening(self, workflow_ids: Sequence[str]) -> float | None:
        """When a rate window next frees a start in a queue where runs of these workflows wait."""
        ids = sorted(set(workflow_ids))

        def read(connection: Connection) -> float | None:
            row = connection.execute(
                "SELECT min(s.started_at + q.rate_period) FROM callboard_runs AS s "
                "JOIN callboard_queues AS q ON q.name = s.queue "
                f"WHERE q.rate_period IS NOT NULL AND s.started_at > {_NOW} - q.rate_period "
                "AND EXISTS (SELECT 1 FROM callboard_runs AS w WHERE w.queue = s.queue "
                "AND w.queue_key IS NOT DISTINCT FROM s.queue_key "
                "AND (w.started_at IS NULL OR w.restarting) "
                f"AND w.owner_id IS NULL AND w.status IN ({_UNFINISHED_SQL}) "
                "AND w.workflow_id = ANY(%s))",
                (ids,),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        result: float | None = self._read(read)
        return result

    def reap(self) -> int:
        """Hand back to the queue the runs of workers whose lease ran out; how many runs.

        A worker's lease ran out when its last heartbeat is older than its own
        lease, by the database's clock (a test kit's virtual one in a test); its
        row is deleted. Its sessions that are inside a transaction are ended
        first (``pg_terminate_backend``): paused there, a worker held its row
        or runs locked, which the reap skips, until it woke (a role that may
        not end them logs ``store_stalled_worker_not_ended`` once, and they are
        skipped). Runs whose owner has no row at all go back too.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[int] = Future()
        write = self._submit("reap", None, resolve(future))
        return int(self._committed(write, future, "nothing was reaped"))

    def request_cancel(self, run_id: str) -> bool:
        """Mark an unfinished run for cancel, for whoever holds it.

        ``False`` if there is none, or its cancel was asked for already: of two
        callers, one is told it asked (the one whose cancel it then is).

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[bool] = Future()
        write = self._submit("request_cancel", run_id, resolve(future))
        return bool(self._committed(write, future, f"no cancel of {run_id!r} was recorded"))

    def cancel_requests(self) -> list[str]:
        """Runs held by this worker whose cancel was requested."""

        def read(connection: Connection) -> list[str]:
            rows = connection.execute(
                "SELECT run_id FROM callboard_runs WHERE owner_id = %s AND cancel_requested "
                f"AND status IN ({_UNFINISHED_SQL}) ORDER BY run_id",
                (self.owner_id,),
            ).fetchall()
            return [row[0] for row in rows]

        result: list[str] = self._read(read)
        return result

    def request_resume(
        self, run_id: str, path: str, data: bytes, *, seq: int, created_at: float
    ) -> ResumeRequested:
        """Record a resume of the suspension ``path`` of a run that runs on, for its driver.

        Committed when this returns ``"recorded"``; see
        :meth:`~runtime._stores.base.ResumeRequestStore.request_resume`.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
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
            suspended = f"r.status IN ({_SETTLED_SQL})"
        else:
            suspended = (
                f"r.status IN ({_TERMINAL_SQL}) OR (r.status = '{RunStatus.SUSPENDED.value}' "
                "AND r.workflow_id = ANY(%(workflows)s::text[]))"
            )
        params = {
            "me": self.owner_id,
            "workflows": sorted(workflows or ()),
            "limit": RESUME_REQUESTS_READ,
        }

        def read(connection: Connection) -> list[ResumeRequest]:
            rows = connection.execute(
                "SELECT q.run_id, q.path, q.data, q.request_id, r.workflow_id, r.status, "
                "r.owner_id IS NOT DISTINCT FROM %(me)s AS held "
                "FROM callboard_resume_requests AS q "
                "LEFT JOIN callboard_runs AS r ON r.run_id = q.run_id "
                f"WHERE r.run_id IS NULL OR r.owner_id = %(me)s OR {suspended} "
                "ORDER BY held DESC, q.requested_at LIMIT %(limit)s",
                params,
            ).fetchall()
            return [
                ResumeRequest(run_id, path, bytes(data), request_id, workflow, status, bool(held))
                for run_id, path, data, request_id, workflow, status, held in rows
            ]

        result: list[ResumeRequest] = self._read(read)
        return result

    def resume_pending(self, run_id: str) -> bool:
        """Whether a resume request of the run waits (a worker carries it out soon)."""

        def read(connection: Connection) -> bool:
            found = connection.execute(
                "SELECT 1 FROM callboard_resume_requests WHERE run_id = %s LIMIT 1", (run_id,)
            ).fetchone()
            return found is not None

        result: bool = self._read(read)
        return result

    def resumes_pending(self, run_ids: Collection[str]) -> set[str]:
        """Which of the runs a resume request waits for, in one read."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return set()

        def read(connection: Connection) -> set[str]:
            rows = connection.execute(
                "SELECT DISTINCT run_id FROM callboard_resume_requests WHERE run_id = ANY(%s)",
                (ids,),
            ).fetchall()
            return {run_id for (run_id,) in rows}

        result: set[str] = self._read(read)
        return result

    def drop_resume_request(self, request: ResumeRequest) -> None:
        """Forget a resume request, that one (queued, not waited for)."""
        self._submit(
            "drop_resume_request", (request.run_id, request.path, request.request_id), ignore
        )

    def held(self) -> int:
        """How many runs this worker holds now, by its own count."""
        with self._callers.lock:
            return len(self._held) + len(self._callers.held)

    def fenced(self) -> frozenset[str]:
        """The runs this worker held and lost (reaped, taken over) and has not taken again."""
        return self._fenced

    def holds(self, run_id: str) -> bool:
        """Whether this worker holds the run now, by its own count."""
        with self._callers.lock:
            return run_id in self._held or run_id in self._callers.held

    def queued(self, workflow_ids: Sequence[str] | None = None) -> list[SnapshotRecord]:
        """Queued runs (nobody holds them; a sleeping one once due), oldest first."""
        query = f"SELECT {_COLUMNS} FROM callboard_runs WHERE {_QUEUED_SQL} AND {_DUE}"
        params: list[Any] = []
        if workflow_ids is not None:
            query += " AND workflow_id = ANY(%s)"
            params.append(sorted(set(workflow_ids)))

        def read(connection: Connection) -> list[SnapshotRecord]:
            rows = connection.execute(
                query + " ORDER BY created_at, run_id",
                params,
            ).fetchall()
            return [_record(row) for row in rows]

        result: list[SnapshotRecord] = self._read(read)
        return result

    def awaiting_others(
        self, workflow_ids: Sequence[str], limit: int
    ) -> list[tuple[str, str, str]]:
        """Queued runs of other workflows than these, oldest first: id, workflow, status."""

        def read(connection: Connection) -> list[tuple[str, str, str]]:
            rows = connection.execute(
                f"SELECT run_id, workflow_id, status FROM callboard_runs WHERE {_QUEUED_SQL} "
                f"AND {_DUE} AND NOT (workflow_id = ANY(%s::text[])) "
                "ORDER BY created_at, run_id LIMIT %s",
                (sorted(set(workflow_ids)), limit),
            ).fetchall()
            return [(str(a), str(b), str(c)) for a, b, c in rows]

        result: list[tuple[str, str, str]] = self._read(read)
        return result

    def workers(self) -> list[WorkerInfo]:
        """Every worker registered on the store, with its heartbeat age and the runs it holds."""

        def read(connection: Connection) -> list[WorkerInfo]:
            rows = connection.execute(
                "SELECT w.worker_id, w.host, w.pid, w.role, w.workflows, w.concurrency, "
                "extract(epoch FROM w.started_at)::float8, "
                f"{_NOW} - extract(epoch FROM w.heartbeat_at)::float8, "
                "(SELECT count(*) FROM callboard_runs AS r WHERE r.owner_id = w.worker_id "
                f"AND r.status IN ({_UNFINISHED_SQL})), w.lease "
                "FROM callboard_workers AS w ORDER BY w.started_at, w.worker_id"
            ).fetchall()
            return [
                WorkerInfo(
                    worker_id=row[0],
                    host=row[1],
                    pid=row[2],
                    role=row[3],
                    workflows=tuple(row[4]),
                    concurrency=row[5],
                    started_at=row[6],
                    heartbeat_age=max(0.0, row[7]),
                    held=int(row[8]),
                    lease=float(row[9]),
                )
                for row in rows
            ]

        result: list[WorkerInfo] = self._read(read)
        return result

    def define_queue(self, limits: QueueLimits) -> None:
        """Keep a queue's limits in the database, for every worker's claims (replacing the old).

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[None] = Future()
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

        def read(connection: Connection) -> list[QueueStats]:
            found = connection.execute("SELECT to_regclass('callboard_queues')").fetchone()
            if found is None or found[0] is None:
                return []
            limits = _queue_limits(connection)
            rows = connection.execute(
                "SELECT queue, queue_key, "
                f"count(*) FILTER (WHERE owner_id IS NULL AND {_DUE}), "
                "count(*) FILTER (WHERE owner_id IS NOT NULL) "
                f"FROM callboard_runs WHERE queue IS NOT NULL AND status IN ({_UNFINISHED_SQL}) "
                "GROUP BY queue, queue_key"
            ).fetchall()
            held = connection.execute(
                "SELECT queue, queue_key, count(*) FROM callboard_runs WHERE queue IS NOT NULL "
                "AND run_id IN (SELECT unnest(executing) FROM callboard_workers) "
                f"AND NOT (owner_id IS NOT NULL AND status IN ({_UNFINISHED_SQL})) "
                "GROUP BY queue, queue_key"
            ).fetchall()
            return queue_stats(rows, limits, held)

        result: list[QueueStats] = self._read(read)
        return result

    def set_on_refusal(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` once the server refused every write ``REFUSAL_PATIENCE`` s."""
        self._refusals.set_on_given_up(callback)

    def writes_refused(self) -> str | None:
        """Why runs cannot be recorded here: the server refused writes too long (or ``None``)."""
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

    def set_hint(self, hint: Callable[[str, str], None] | None) -> None:
        """Call ``hint(kind, run_id)`` when this store or another one changed something.

        This store's own hints come from its writer thread once committed;
        other stores' arrive by ``NOTIFY`` (a store ignores its own).

        Kinds: ``"queued"`` (a run became claimable), ``"settled"`` (a run
        ended or suspended), ``"cancel"`` (a cancel was requested),
        ``"resume"`` (a resume was requested). The calls
        come from a listener thread, started on the first hint set; it
        reconnects after a lost connection. Hints only make things faster.
        """
        self._hint = hint
        with self._lock:
            if hint is None or self._listener is not None or self._closed or self._pooled:
                return  # through a pooler a LISTEN is not kept (see _set_up): polls find it
            self._listener = _Listener(
                lambda: self._connect(autocommit=True), self.owner_id, self._deliver
            )

    def _deliver(self, kind: str, run_id: str) -> None:
        hint = self._hint
        if hint is not None:
            hint(kind, run_id)

    # --- the writer ---------------------------------------------------------------

    def _submit(self, kind: WriteKind, payload: Any, done: Done) -> Write:
        try:
            return self._live_writer().submit(kind, payload, done)
        except WriterStoppedError:  # closed since the look in _live_writer
            raise StoreError(f"the PostgreSQL store {self._shown} is closed") from None

    def _live_writer(self) -> GroupCommitWriter:
        """The writer; a StoreError if the store is read-only, closed, or its writer is gone."""
        if self.readonly:
            raise StoreError(f"the PostgreSQL store {self._shown} is open read-only")
        if self._closed or self._writer is None or not self._writer.is_alive():
            raise StoreError(f"the PostgreSQL store {self._shown} is closed")
        return self._writer

    def _committed(
        self, write: Write, future: Future[Any], not_done: str, timeout: float | None = None
    ) -> Any:
        """Wait for a write that its caller must know committed (or not) before going on.

        ``timeout``: ``CALL_TIMEOUT`` unless given (read at the call, not at definition).
        """
        timeout = self._refusals.patience(CALL_TIMEOUT if timeout is None else timeout)
        try:
            return committed(
                write,
                future,
                timeout,
                given_up=f"the PostgreSQL store {self._shown} did not commit within "
                f"{timeout:g} s{self._refusals.failing_for()}; {not_done}",
                unfinished=f"the PostgreSQL store {self._shown} did not finish the transaction "
                f"of this write within {2 * timeout:g} s; it may still commit",
            )
        except StoreUnavailableError as exc:
            # Why the writer kept trying: said only in its log lines, the error read as
            # if the server had said nothing (too many connections, a statement timeout).
            retried = self._retried_for
            if retried is None or write.refused:  # the writer's error says why already
                raise
            raise StoreUnavailableError(f"{exc} (its last try: {retried})") from exc

    def _give_up(self, writes: list[Write]) -> None:
        self._fail(
            writes, StoreUnavailableError(f"the PostgreSQL store {self._shown} stayed unreachable")
        )

    def _fail(self, writes: list[Write], error: StoreError) -> None:
        emit(logging.ERROR, "store_write_failed", store=self._shown, error=str(error))
        for write in writes:
            if write.kind == "save":
                # The parts of these lineages miss the changes of these records.
                self._broken.update(r.parts.lineage for r in write.payload if r.parts is not None)
        for write in writes:
            call(write.done, None, error)

    def _connection(self) -> Connection:
        """The writer's connection, made again if it was lost."""
        connection = self._wconn
        if connection is None or connection.closed or connection.broken:
            if connection is not None:
                connection.close()
            self._wconn = None
            connection = self._connect(autocommit=False)
            self._wconn = connection
            # A server that crashed may have lost commits it had acknowledged (with
            # synchronous_commit off, or after a failover to an asynchronous standby):
            # a run let go of here may be ours again in the database, with no actor. The
            # next claim adopts any such run, as after a commit never acknowledged.
            self._ambiguous = True
            emit(logging.INFO, "store_reconnected", store=self._shown)
        if self._writer_pid is None or connection is not self._pid_of:
            # Read here, on the writer's thread: the heartbeat asks after this process.
            self._writer_pid, self._pid_of = connection.info.backend_pid, connection
        return connection

    def _finish(self) -> None:
        """On the writer thread, last: hand back the runs held here, and leave the workers."""
        import psycopg

        # No create commits on its caller's thread from now on; those under way end
        # first (each is one statement), so that what they hold is handed back too.
        self._callers.close(CALL_TIMEOUT)
        self._take_held_new()
        connection = self._wconn
        self._wconn = None
        if self._abandoned:
            if connection is not None:
                connection.close()
            return
        for attempt in (1, 2):
            if connection is None or connection.closed or connection.broken:
                with contextlib.suppress(StoreError, psycopg.Error):
                    connection = self._connect(autocommit=False)
            if connection is None or connection.closed:
                return
            try:
                rows = connection.execute(
                    "UPDATE callboard_runs SET owner_id = NULL WHERE owner_id = %s "
                    "RETURNING run_id, status",
                    (self.owner_id,),
                ).fetchall()
                connection.execute(
                    "DELETE FROM callboard_workers WHERE worker_id = %s", (self.owner_id,)
                )
                connection.commit()
                self._held = {}
                hints, self._unsent = self._unsent, _Hints()
                for run_id, status in rows:
                    hints.add("queued" if status in UNFINISHED_STATUSES else None, run_id)
                self._notify(connection, hints)
                return
            except psycopg.Error as exc:
                # An idle connection the server dropped (a restart since the last write)
                # is found out only now: once more on a new one.
                if attempt == 1 and _passing(exc):
                    continue  # closed below; a new one is made above
                emit(
                    logging.WARNING,
                    "store_leave_failed",
                    store=self._shown,
                    error=self._reason(exc),
                )
                return
            finally:
                connection.close()

    def _commit(self, writes: list[Write]) -> list[Write]:
        """Commit the writes: joins, the rest together, each solo one alone; return any to retry.

        A batch of saves and a claim (what a worker's writer has when its claimer
        asks for runs) is two transactions, the saves first: each is then one
        statement (see :meth:`_alone` and :meth:`_claim_alone`), which costs the
        worker less than one transaction of both in a pipeline.
        """
        if any(write.kind == "hint" for write in writes):
            for write in writes:
                if write.kind == "hint":  # committed on a caller's thread: to send on
                    self._hold_hints(write.payload)
                    call(write.done, None, None)
            writes = [write for write in writes if write.kind != "hint"]
        # A join locks this worker's row: alone, never held while a batch waits for a
        # lock another session has, which a heartbeat (see heartbeat) then waited for.
        joins = [write for write in writes if write.kind == "join"]
        grouped = [write for write in writes if write.kind not in _SOLO and write.kind != "join"]
        solo = [write for write in writes if write.kind in _SOLO]
        groups = [grouped] if grouped else []
        if any(w.kind == "claim" for w in grouped) and all(
            w.kind in ("save", "claim") for w in grouped
        ):
            saves = [write for write in grouped if write.kind == "save"]
            groups = ([saves] if saves else []) + [[w] for w in grouped if w.kind == "claim"]
        if joins:
            groups.insert(0, joins)
        for index, group in enumerate(groups):
            left = self._commit_group(group)
            if left:
                rest = [write for later in groups[index + 1 :] for write in later] + solo
                if self._refusals.refusing():
                    # The writes behind the refused group wait here untried. Those whose
                    # callers wait to be told (a prune, a claim, a start: REFUSED_AT_ONCE)
                    # are told at once, as in a transaction of their own (refuse_at_once),
                    # not after CALL_TIMEOUT: a claim behind refused saves held the
                    # claimer's room lock, and with it every start of this process.
                    rest = refuse_at_once(
                        rest, f"the PostgreSQL store {self._shown}", self._retried_for or ""
                    )
                return left + rest
        for index, write in enumerate(solo):
            if write.kind == "reap" and self._wconn is not None:
                # Rows a stalled worker's open transaction holds are skipped by the
                # reaper: freed first, they are reaped with the rest.
                self._end_stalled(self._wconn)
            if self._commit_group([write]):
                return solo[index:]
        return []

    def _sift(self, writes: list[Write]) -> list[Write]:
        """The writes queued behind a batch to be tried again that are not failed at once.

        While the server refuses writes, those it fails at once (a start, a claim,
        a prune: :func:`~runtime._stores._writer.refuse_at_once`) are told so now,
        as those behind a refused group of the batch are (see :meth:`_commit`), not
        once a batch has room for them: behind more refused saves than a batch
        takes, they waited out CALL_TIMEOUT. The others (the runs' saves) wait in
        order.
        """
        if not self._refused_now:
            return writes
        shown = f"the PostgreSQL store {self._shown}"
        return refuse_at_once(writes, shown, self._retried_for or "")

    def _commit_group(self, writes: list[Write]) -> list[Write]:
        """Run the writes in one transaction and report each outcome; return those to retry.

        A batch that fails for a passing reason (see :func:`_passing`) reports
        nothing and is tried again, on a new connection if the old one was
        lost. A batch that fails for a reason of its own is split, each write
        tried alone, so that only the bad one fails.
        """
        self._take_held_new()
        self._refused_now = False
        batch = _Batch(self._held, self._fenced, self._reaped, self._broken)
        committing = False
        try:
            connection = self._connection()
            # Through a pooler, every write is a transaction that sets its lock_timeout.
            alone = None if self._pooled else self._one_statement(connection, writes, batch)
            results, settle = alone, None
            if results is None:
                # Pipeline mode: statements go out without waiting for each other's
                # results; the writer waits only where it reads one (and at the commit).
                # Not for big batches: psycopg 3.3 was seen to hang here sending a 2 MiB
                # one (large values in pipeline mode: psycopg issues 604 and 685).
                pipelined = _payload_bytes(writes) <= PIPELINE_BYTES
                with (
                    _pipeline_exit_unlogged(),
                    connection.pipeline() if pipelined else contextlib.nullcontext(),
                ):
                    results, settle = self._transaction(connection, writes, batch)
                    committing = True
                    connection.commit()
            if settle is not None:
                settle()  # the statements all succeeded: this only reads their rows
        except Exception as exc:  # psycopg.Error, or a fault of ours: the writer lives on
            stuck = self._rolled_back()
            for write in writes:
                write.release()  # not committed: a caller may still give up on it
            refused = _refused(exc)
            if isinstance(exc, StoreError) or _passing(exc) or stuck or refused:
                if committing:
                    if any(write.kind in _HOLDING for write in writes):
                        self._ambiguous = True
                    for write in writes:
                        write.tried = True
                self._retried_for = self._reason(exc)
                if refused:
                    # Every write is refused alike until an operator mends it (privileges
                    # revoked, a database made read-only): they wait and go through then.
                    # Failed instead, a run's failure was refused too, and its waiters
                    # waited for ever.
                    self._refusals.refused(self._retried_for, len(writes))
                    self._refused_now = True
                    # But a start (or a restart, a resume, a cancel) is told at once: see
                    # refuse_at_once. Its caller can try again or shed load.
                    return refuse_at_once(
                        writes, f"the PostgreSQL store {self._shown}", self._retried_for
                    )
                if _disk_full(exc):
                    # Said when it begins, after REFUSAL_PATIENCE and when it ends, not at
                    # every try; once it has lasted, starts and waits are told.
                    self._refusals.full(self._reason(exc), len(writes))
                    return writes
                self._refusals.failing(self._reason(exc))
                emit(
                    logging.WARNING,
                    "store_write_retrying",
                    store=self._shown,
                    waiting=len(writes),
                    error=self._reason(exc),
                )
                return writes
            if len(writes) > 1:
                for index, write in enumerate(writes):
                    if self._commit_group([write]):
                        return writes[index:]
                return []
            self._fail(
                writes,
                StoreError(
                    f"cannot write to the PostgreSQL store {self._shown}: {self._reason(exc)}"
                ),
            )
            return []
        self._retried_for = None
        self._refusals.accepted()
        self._held = batch.held
        self._fenced = frozenset(batch.fenced)
        self._broken = batch.broken
        self._reaped = batch.reaped
        if batch.adopted:
            self._ambiguous = False
            self._next_adopt = time.monotonic() + ADOPT_EVERY
        _report_committed(writes, results)
        self._tell_here(batch.hints)
        self._hold_hints(batch.hints)
        return []

    def _rolled_back(self) -> bool:
        """Roll a failed batch back; whether that left the connection stuck (then closed)."""
        import psycopg

        connection = self._wconn
        if connection is None:
            return False
        with contextlib.suppress(psycopg.Error):
            connection.rollback()
        return _left_stuck(connection)

    def _hold_hints(self, hints: _Hints) -> None:
        """Keep committed hints for the next ``NOTIFY`` (see :meth:`_writer_idle`)."""
        if hints.items:
            if not self._unsent.items:
                self._unsent_since = time.monotonic()
            self._unsent.items.update(hints.items)

    def _writer_idle(self, empty: bool) -> None:
        """After each commit: send the hints gathered if the writer is idle or they waited."""
        if not self._unsent.items:
            return
        if not empty and time.monotonic() - self._unsent_since < HINT_DELAY:
            return
        connection = self._wconn
        if connection is None or connection.closed or connection.broken:
            return  # sent after the next commit, on the new connection
        hints, self._unsent = self._unsent, _Hints()
        self._notify(connection, hints)

    def _tell_here(self, hints: _Hints) -> None:
        """This store's own hints go to its callback at once; other stores hear NOTIFY."""
        hint = self._hint
        if hint is None:
            return
        for kind, run_id in hints.items:
            try:
                hint(kind, run_id)
            except Exception:
                emit(logging.ERROR, "store_hint_failed", kind=kind, run_id=run_id, exc_info=True)

    def _notify(self, connection: Connection, hints: _Hints) -> None:
        """Send the hints, coalesced, in a short transaction of their own; a failure is ignored.

        The transaction is one statement in autocommit (one round trip, no pipeline).
        """
        import psycopg

        if not hints.items:
            return
        payloads: list[str] = []
        chunk: list[list[str]] = []
        size = 0
        whole = json.dumps({"from": self.owner_id, "hints": list(hints.items)})
        if len(whole) <= NOTIFY_BYTES:  # nearly always: no need to measure each hint
            payloads.append(whole)
            chunk, items = [], {}
        else:
            items = hints.items
        for kind, run_id in items:
            entry = [kind, run_id]
            length = len(json.dumps(entry)) + 1
            if chunk and size + length > NOTIFY_BYTES:
                payloads.append(json.dumps({"from": self.owner_id, "hints": chunk}))
                chunk, size = [], 0
            if length <= NOTIFY_BYTES:
                chunk.append(entry)
                size += length
        if chunk:
            payloads.append(json.dumps({"from": self.owner_id, "hints": chunk}))
        try:
            with _autocommit(connection):
                connection.execute(
                    "SELECT pg_notify(%s, p) FROM jsonb_array_elements_text(%s::jsonb) AS p",
                    (CHANNEL, json.dumps(payloads)),
                )
        except psycopg.Error as exc:
            emit(logging.INFO, "store_hint_not_sent", store=self._shown, error=self._reason(exc))

    def _transaction(
        self, connection: Connection, writes: list[Write], batch: _Batch
    ) -> tuple[dict[int, Any], Callable[[], None] | None]:
        """The writes in one transaction (not committed yet); each write's result by ``id``.

        With it, what reads the saves' answers once the transaction committed
        (``None`` when they were read already): results are complete only then.

        This worker's own row first (a heartbeat, a join), then every run row
        the batch will change, locked in ``run_id`` order; then the creates and
        the saves, each kind in one statement; then the other writes in the
        order they came. A save's result is the :class:`RunFencedError` it
        earned, if any.
        """
        results: dict[int, Any] = {}
        if self._pooled and self._lock_timeout:  # the session's own is not ours (_set_up)
            connection.execute(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT * 1000)}")
        _virtual_now(connection)
        for write in writes:
            if write.kind == "join":
                self._role = write.payload
                if self._join_row(connection):
                    # The row was gone: reaped. The next heartbeat says so, through the
                    # writer: told now, not at the commit, so that no heartbeat beside
                    # the writer finds the row made anew in between and takes it for
                    # ours (rolled back, the row stays gone: reaped all the same).
                    batch.reaped = self._reaped = True
                results[id(write)] = None
            elif write.kind == "heartbeat":
                results[id(write)] = self._beat(connection, batch)
        batch.replacing = frozenset(
            write.payload[0].run_id for write in writes if write.kind == "replace"
        )
        touched = sorted(
            {record.run_id for write in writes if write.kind == "save" for record in write.payload}
            | batch.replacing
            | {write.payload for write in writes if write.kind in ("delete", "request_cancel")}
            | {write.payload[0] for write in writes if write.kind == "request_resume"}
        )
        if touched:
            connection.execute(  # its rows are not read: the locks are what it is for
                _LOCK_ROWS, (json.dumps(touched),)
            )
        creates = sorted(
            (write for write in writes if write.kind == "create"),
            key=lambda write: write.payload[0].run_id,
        )
        if creates:
            self._create(connection, creates, batch, results)
        saves = [write for write in writes if write.kind == "save"]
        others = [write for write in writes if write.kind not in _BEFORE_SAVES]
        settle = None
        if saves:
            # With nothing after them that reads what they changed, the saves are read
            # after the commit: the batch is then one round trip.
            settle = self._save(connection, saves, batch, results, defer=not others)
        for write in others:
            results[id(write)] = self._apply(connection, write, batch)
        return results, settle

    def _end_stalled(self, connection: Connection) -> None:
        """End the sessions of other workers stuck in a transaction past their lease.

        A worker paused inside a transaction (SIGSTOP, a long GC pause, a lost
        network) holds its locks until it wakes, if ever: its own row and runs,
        which the reaper skips, or the queue lock, which every claim and start
        into a limited queue waits for. Ended (``pg_terminate_backend``), its
        transaction rolls back and its locks go; when it wakes it connects
        again, finds itself reaped, and its epochs fence off what it held. The
        lease is judged by the database's clock, as the reaper judges it.
        Where this role may not end another role's sessions, a warning says
        once what stays stuck and why. A failure here is left to the writes
        that follow: they meet it again, or get on.
        """
        import psycopg

        if connection.closed or connection.broken:
            return
        # Waits until the session is gone, and its locks with it (PostgreSQL 14 and
        # later; before, the reap that follows may still skip them: the next one not).
        wait = f", {int(TERMINATE_WAIT * 1000)}" if connection.info.server_version >= 140000 else ""
        refused: dict[str, list[int]] = {}
        try:
            with _autocommit(connection):
                _virtual_now(connection)
                stalled = connection.execute(_STALLED_SESSIONS, {"me": self.owner_id}).fetchall()
                for pid, worker_id, lapsed in stalled:
                    try:
                        row = connection.execute(
                            f"SELECT pg_terminate_backend(%s{wait})", (pid,)
                        ).fetchone()
                    except psycopg.errors.InsufficientPrivilege:
                        refused.setdefault(worker_id, []).append(pid)
                        continue
                    if row is not None and row[0]:  # else gone already, or not yet
                        emit(
                            logging.WARNING,
                            "store_stalled_worker_ended",
                            store=self._shown,
                            worker=worker_id,
                            pid=pid,
                            lapsed=None if lapsed is None else round(float(lapsed), 1),
                        )
        except psycopg.Error:
            return
        for worker_id, pids in refused.items():
            if worker_id not in self._unended:
                self._unended.add(worker_id)
                emit(
                    logging.WARNING,
                    "store_stalled_worker_not_ended",
                    store=self._shown,
                    worker=worker_id,
                    pids=pids,
                    reason="its lease ran out, and a session of it that may be inside a "
                    "transaction keeps what that locks (its runs, or a queue) held until it "
                    "ends; this role may not end it: pg_terminate_backend needs membership in "
                    "the worker's role, or pg_signal_backend (and a superuser's, a superuser)",
                )

    def _beat(self, connection: Connection, batch: _Batch) -> bool:
        row = connection.execute(_RENEW, (self.owner_id,)).fetchone()
        if row is not None and not batch.reaped:
            return True
        if row is None:
            self._join_row(connection)
        # Reaped: what this worker held then went back to the queue, and is not ours. But
        # a run it claimed after its row was deleted (it woke, and claimed before it beat)
        # is still its own, at the epoch it knows: nobody else took it, and with the row
        # back nobody hands it back. Fencing that one too would leave it held by a live
        # worker that never drives it. The rows are locked (in run_id order) until this
        # commits, so that no claim or hand-back slips in between.
        kept: set[str] = set()
        if batch.held:
            for run_id, epoch in connection.execute(
                "SELECT run_id, epoch FROM callboard_runs WHERE run_id = ANY(%s) "
                "AND owner_id = %s ORDER BY run_id FOR UPDATE",
                (sorted(batch.held), self.owner_id),
            ).fetchall():
                if batch.held.get(run_id) == epoch:
                    kept.add(run_id)
        batch.fenced.update(run_id for run_id in batch.held if run_id not in kept)
        batch.held = {run_id: batch.held[run_id] for run_id in kept}
        batch.reaped = False
        return False

    def _create(
        self,
        connection: Connection,
        writes: list[Write],
        batch: _Batch,
        results: dict[int, Any],
    ) -> None:
        # A create whose caller gave up waiting must not happen: take() decides.
        live = [write for write in writes if write.take()]
        for write in writes:
            results[id(write)] = False
        if not live:
            return
        live = self._refuse_full(connection, live, results)
        if not live:
            return
        records = [write.payload[0] for write in live]
        holds = [write.payload[1] and not _releases(write.payload[0]) for write in live]
        owners = [self.owner_id if hold else None for hold in holds]
        epochs = [1 if hold else 0 for hold in holds]
        rows = connection.execute(
            _CREATE,
            _create_columns(records, owners, epochs),
        ).fetchall()
        inserted = {row[0] for row in rows}
        missed = [record.run_id for record in records if record.run_id not in inserted]
        # Only those whose try on their caller's thread failed, or whose batch failed at
        # its commit (Write.tried), may be in already.
        maybe = {write.payload[0].run_id for write in live if write.payload[2] or write.tried}
        missed = [run_id for run_id in missed if run_id in maybe]
        if missed:
            # The same create, committed by a try whose acknowledgement was lost?
            same = connection.execute(
                "SELECT run_id, seq, snapshot, created_at, epoch FROM callboard_runs "
                "WHERE run_id = ANY(%s)",
                (missed,),
            ).fetchall()
            mine = {row[0]: row for row in same}
            for record, owner in zip(records, owners, strict=True):
                row = mine.get(record.run_id)
                if (
                    row is not None
                    and row[1] == record.seq
                    and bytes(row[2]) == record.data
                    and row[3] == record.created_at
                ):
                    inserted.add(record.run_id)
                    if owner is not None:
                        batch.held[record.run_id] = row[4]
        for write, record, hold in zip(live, records, holds, strict=True):
            new = record.run_id in inserted
            results[id(write)] = new
            if not new:
                continue
            if hold:
                batch.held.setdefault(record.run_id, 1)
                batch.fenced.discard(record.run_id)
            else:
                batch.hints.add(_hint_kind(record), record.run_id)

    def _save(
        self,
        connection: Connection,
        writes: list[Write],
        batch: _Batch,
        results: dict[int, Any],
        *,
        defer: bool,
    ) -> Callable[[], None] | None:
        """Apply every save of the batch, as if one after another.

        One statement cannot change a row twice, so a run saved twice in the
        batch is written in rounds: the first record of each run, then the
        second, and so on (nearly always a single round). Each statement
        answers for every record whether it was written and who held its row,
        and the parts go out right behind it, so with ``defer`` the last round
        is read only after the commit: the whole transaction takes one round
        trip. Then this returns what reads it (and reports the fenced); it must
        run before ``batch`` or ``results`` are used.
        """
        fenced: dict[int, list[str]] = {}
        rounds = _rounds(writes)
        last: list[tuple[Any, bool, list[tuple[SnapshotRecord, Write]]]] = []
        for index, entries in enumerate(rounds):
            entries.sort(key=lambda entry: entry[0].run_id)
            held = [entry for entry in entries if entry[0].run_id in batch.held]
            free = [
                entry
                for entry in entries
                if entry[0].run_id not in batch.held and entry[0].run_id not in batch.fenced
            ]
            for record, write in entries:
                if record.run_id in batch.fenced:
                    fenced.setdefault(id(write), []).append(record.run_id)
            sent: list[tuple[Any, bool, list[tuple[SnapshotRecord, Write]]]] = []
            if held:
                records = [record for record, _ in held]
                owners = [None if _releases(r) else self.owner_id for r in records]
                epochs = [batch.held[r.run_id] for r in records]
                cursor = connection.execute(
                    _SAVE_HELD, {**_held_rows(records, owners, epochs), "me": self.owner_id}
                )
                sent.append((cursor, True, held))
                taking = [
                    {"run_id": r.run_id, "seq": r.seq, "epoch": e, "created_at": r.created_at}
                    | {"paths": list(r.taken)}
                    for r, e in zip(records, epochs, strict=True)
                    if r.taken
                ]
                if taking:  # rare: a run actor took resume requests
                    connection.execute(
                        _TAKE_REQUESTS, {"rows": json.dumps(taking), "me": self.owner_id}
                    )
            if free:
                records = [record for record, _ in free]
                cursor = connection.execute(
                    _SAVE_FREE, _columns(records, [None] * len(records), [0] * len(records))
                )
                sent.append((cursor, False, free))
            if defer and index == len(rounds) - 1:
                last = sent
            else:
                self._saved(sent, batch, fenced)
        # Parts of records another worker's row holds are never read: leave them out.
        self._save_parts(
            connection,
            [r for write in writes for r in write.payload if r.run_id not in batch.fenced],
            batch,
        )

        def settle() -> None:
            self._saved(last, batch, fenced)
            self._report_fenced(writes, fenced, results)

        if defer:
            return settle
        settle()
        return None

    def _report_fenced(
        self, writes: list[Write], fenced: dict[int, list[str]], results: dict[int, Any]
    ) -> None:
        """Each save that had a record fenced off gets its :class:`RunFencedError` as result."""
        for write in writes:
            lost = fenced.get(id(write))
            if lost:
                results[id(write)] = RunFencedError(
                    f"run {lost[0]!r} is held by another worker: this one "
                    f"({self.owner_id}) may not write it",
                    run_id=lost[0],
                )

    def _alone(
        self, writes: list[Write], batch: _Batch
    ) -> tuple[list[tuple[SnapshotRecord, Write]], list[tuple[SnapshotRecord, Write]]] | None:
        """The saved records, if one statement can be the whole transaction; else ``None``.

        So it is for a batch of saves only (nothing else to write, nothing to read
        first), of runs held here or fenced off (those are not sent), none kept in
        parts (their parts are more statements): what a worker's writer nearly
        always has. A run saved more than once goes in once, with its last record,
        if each of its records supersedes the one before (see
        :func:`~runtime._stores.base.supersedes`). Returns the records to send,
        sorted by ``run_id``, and those left out for a later one.
        """
        entries: dict[str, tuple[SnapshotRecord, Write]] = {}
        superseded: list[tuple[SnapshotRecord, Write]] = []
        held = False
        for write in writes:
            if write.kind != "save":
                return None
            for record in write.payload:
                run_id = record.run_id
                if record.parts is not None or record.taken:
                    return None
                before = entries.get(run_id)
                if before is not None:
                    if not supersedes(record, before[0]):
                        return None
                    superseded.append(before)
                if run_id in batch.held:
                    held = True
                elif run_id not in batch.fenced:
                    return None
                entries[run_id] = (record, write)
        if not held:
            return None
        return sorted(entries.values(), key=lambda entry: entry[0].run_id), superseded

    def _save_alone(
        self,
        connection: Connection,
        writes: list[Write],
        alone: tuple[list[tuple[SnapshotRecord, Write]], list[tuple[SnapshotRecord, Write]]],
        batch: _Batch,
    ) -> dict[int, Any]:
        """Save the batch :meth:`_alone` chose in one statement, its own transaction.

        The connection is in autocommit for it: the statement, its commit and
        its answer take one round trip, with no ``BEGIN``, no pipeline, no lock
        statement (:data:`_SAVE_HELD_ALONE` locks its rows itself, in order). A
        record left out for a later one of its run fares as that one does: it
        is fenced off if the run is.
        """
        entries, superseded = alone
        results: dict[int, Any] = {}
        fenced: dict[int, list[str]] = {}
        held: list[tuple[SnapshotRecord, Write]] = []
        for record, write in entries:
            if record.run_id in batch.held:
                held.append((record, write))
            else:  # fenced off before: not this one's to write
                fenced.setdefault(id(write), []).append(record.run_id)
        records = [record for record, _ in held]
        owners = [None if _releases(r) else self.owner_id for r in records]
        epochs = [batch.held[r.run_id] for r in records]
        with _autocommit(connection):
            cursor = connection.execute(
                _SAVE_HELD_ALONE, {**_held_rows(records, owners, epochs), "me": self.owner_id}
            )
        self._saved([(cursor, True, held)], batch, fenced)
        for record, write in superseded:
            if record.run_id in batch.fenced:
                fenced.setdefault(id(write), []).append(record.run_id)
        self._report_fenced(writes, fenced, results)
        return results

    def _saved(
        self,
        sent: list[tuple[Any, bool, list[tuple[SnapshotRecord, Write]]]],
        batch: _Batch,
        fenced: dict[int, list[str]],
    ) -> None:
        """Read what the save statements answered: releases, hints, and the fenced records."""
        for cursor, held, entries in sent:
            rows = {row[0]: row for row in cursor.fetchall()}
            for record, write in entries:
                run_id = record.run_id
                _, written, owner, epoch, same = rows.get(
                    run_id, (run_id, False, None, None, False)
                )
                if same and _releases(record):
                    # Its release committed already, by a try whose reply was lost: the
                    # run is nobody's since (or another worker's), not taken from it.
                    written = True
                if held:
                    if written:
                        if _releases(record):
                            del batch.held[run_id]
                            batch.hints.add(
                                "settled" if record.status in SETTLED_STATUSES else "queued",
                                run_id,
                            )
                    elif owner != self.owner_id or epoch != batch.held[run_id]:
                        # Not ours any more (a record merely not newer leaves it held).
                        del batch.held[run_id]
                        batch.fenced.add(run_id)
                        fenced.setdefault(id(write), []).append(run_id)
                elif written:
                    batch.hints.add(_hint_kind(record), run_id)
                elif owner is not None:  # another worker holds it: not this one's to write
                    fenced.setdefault(id(write), []).append(run_id)

    def _save_parts(
        self, connection: Connection, records: list[SnapshotRecord], batch: _Batch
    ) -> None:
        """Write the parts of the saved records kept in parts: what changed, or all of them.

        A row stored whole again loses its parts by a trigger (see :data:`_MIGRATIONS`).
        """
        writes = plan_parts(records, batch.broken)
        if not writes:
            return
        cleared = [
            {"run_id": run_id, "lineage": lineage}
            for (run_id, lineage), write in writes.items()
            if write.clear
        ]
        if cleared:
            connection.execute(
                _CLEAR_PARTS,
                {"rows": json.dumps(cleared), "n": len(cleared), "me": self.owner_id},
            )
        gone = [
            {"run_id": run_id, "lineage": lineage, "key": key}
            for (run_id, lineage), write in writes.items()
            if not write.clear
            for key, part in write.parts.items()
            if part is None
        ]
        if gone:
            connection.execute(
                _DROP_PARTS, {"rows": json.dumps(gone), "n": len(gone), "me": self.owner_id}
            )
        new = [
            {
                "run_id": run_id,
                "lineage": lineage,
                "key": key,
                "part": base64.b64encode(part).decode("ascii"),
            }
            for (run_id, lineage), write in sorted(writes.items())
            for key, part in write.parts.items()
            if part is not None
        ]
        if new:
            connection.execute(
                _WRITE_PARTS, {"rows": json.dumps(new), "n": len(new), "me": self.owner_id}
            )

    def _apply(self, connection: Connection, write: Write, batch: _Batch) -> Any:
        kind, payload = write.kind, write.payload
        if kind not in ("replace", "claim") and not write.take():
            # Its caller gave up waiting, and was told it did not happen: it must not.
            return None
        if kind == "replace":
            return self._replace(connection, write, batch)
        if kind == "claim":
            return self._claim(connection, write, batch)
        if kind == "hand_back":
            return self._hand_back(connection, payload, batch)
        if kind == "delete":
            row = connection.execute(
                f"DELETE FROM callboard_runs WHERE run_id = %s AND status IN ({_TERMINAL_SQL}) "
                "RETURNING 1",
                (payload,),
            ).fetchone()
            # Not there, or not ended (a run still held stays held): not deleted, unless
            # it is gone since a try of this delete whose commit reply was lost (its
            # caller read the run ended before it asked).
            if row is None and (not write.tried or _exists(connection, payload)):
                return False
            batch.held.pop(payload, None)
            batch.fenced.discard(payload)
            return True
        if kind == "request_cancel":
            row = connection.execute(
                "UPDATE callboard_runs SET cancel_requested = true "
                f"WHERE run_id = %s AND status IN ({_UNFINISHED_SQL}) "
                "AND NOT cancel_requested RETURNING 1",
                (payload,),
            ).fetchone()
            if row is None and write.tried:
                # Asked for already: by a try of this request whose commit reply was lost,
                # most likely (told False, its caller took the cancel for another's). Only
                # another cancel in the same moment makes both callers told they asked.
                row = connection.execute(
                    "SELECT 1 FROM callboard_runs WHERE run_id = %s "
                    f"AND status IN ({_UNFINISHED_SQL}) AND cancel_requested",
                    (payload,),
                ).fetchone()
            if row is not None:
                batch.hints.add("cancel", payload)
            return row is not None
        if kind == "request_resume":
            return self._request_resume(connection, payload, batch)
        if kind == "drop_resume_request":
            connection.execute(
                "DELETE FROM callboard_resume_requests "
                "WHERE run_id = %s AND path = %s AND request_id = %s",
                payload,
            )
            return None
        if kind == "reap":
            return self._reap(connection, batch)
        if kind == "prune":
            return self._prune(connection, write)
        if kind == "executing":
            connection.execute(
                "UPDATE callboard_workers SET executing = %s WHERE worker_id = %s",
                (list(payload), self.owner_id),
            )
            return None
        if kind == "define_queue":
            connection.execute(
                "INSERT INTO callboard_queues (name, concurrency, key_concurrency, rate_count, "
                "rate_period, max_queued) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
                "key_concurrency = excluded.key_concurrency, rate_count = excluded.rate_count, "
                "rate_period = excluded.rate_period, max_queued = excluded.max_queued, "
                "updated_at = clock_timestamp()",
                tuple(payload),
            )
            return None
        raise AssertionError(f"unknown write {kind!r}")

    def _replace(
        self, connection: Connection, write: Write, batch: _Batch
    ) -> bool | QueueFullError:
        record, expected_seq, hold, reopen, canceling, requested = write.payload
        # A replace whose caller gave up waiting must not happen: take() decides.
        if not write.take():
            return False
        run_id = record.run_id
        keeps = hold and not _releases(record)
        new_owner = self.owner_id if keeps else None
        if (
            reopen
            and record.queue is not None
            # Not for its own place: a try whose commit's reply was lost took it.
            and not (write.tried and _replaced(connection, record, new_owner) is not None)
        ):
            full = _restart_full(connection, record)
            if full is not None:  # refused as a start into a full queue is: nothing changes
                return full
        params = {
            "status": record.status,
            "seq": record.seq,
            "updated_at": record.updated_at,
            "snapshot": record.data,
            "wake_at": record.wake_at,
            "deadline": record.deadline,
            "new_owner": new_owner,
            "bump": 1 if keeps else 0,
            "run_id": run_id,
            "expected": expected_seq,
            "created_at": record.created_at,  # the run read, not a new one of its id since
            "taken": list(record.taken),
        }
        statement = _REOPEN if reopen else _REPLACE_CANCELING if canceling else _REPLACE
        if record.taken and requested is None:
            # Not while a resume request waits for a suspension it resumes: that one won.
            statement = statement.replace("RETURNING epoch", _VACANT)
        elif record.taken:
            # Only while the request it carries out waits: one read before another worker
            # carried it out must not resume a later suspension of that path.
            statement = statement.replace("RETURNING epoch", _REQUESTED)
            params["request_id"] = requested
        row = connection.execute(statement, params).fetchone()
        if row is None and write.tried:
            # The same replace, committed by a try whose acknowledgement was lost?
            row = _replaced(connection, record, new_owner)
        if row is None:
            return False
        if reopen:  # restarted: what waited for the run before is not the new run's
            connection.execute("DELETE FROM callboard_resume_requests WHERE run_id = %s", (run_id,))
        elif record.taken:
            connection.execute(
                "DELETE FROM callboard_resume_requests WHERE run_id = %s AND path = ANY(%s)",
                (run_id, list(record.taken)),
            )
        if keeps:
            batch.held[run_id] = row[0]
            batch.fenced.discard(run_id)
        else:
            batch.held.pop(run_id, None)
            batch.hints.add(_hint_kind(record), run_id)
        return True

    def _request_resume(self, connection: Connection, payload: Any, batch: _Batch) -> str:
        """Record a resume request, the run's row locked (see _transaction): not beside a take.

        Its id is kept too (see :data:`_RESUME_REQUESTS_DDL`): a try made again after
        the reply to one that committed was lost finds it, however the request went
        since (carried out, dropped, the run ended), and answers ``"recorded"``, as
        the first try would have: ``"changed"`` told its caller that another's resume
        came first, when it was its own.
        """
        run_id, path, data, request_id, seq, created_at = payload
        row = connection.execute(
            _RECORD_REQUEST,
            (run_id, path, data, request_id, run_id, created_at, seq, run_id, request_id),
        ).fetchone()
        if row is not None:
            now = time.monotonic()
            last = self._ids_pruned_at
            if last is None or now - last >= REQUEST_IDS_PRUNED_EVERY:
                self._ids_pruned_at = now  # rolled back, it waits for the next time: bounded
                connection.execute(
                    "DELETE FROM callboard_resume_request_ids WHERE recorded_at < "
                    "extract(epoch FROM clock_timestamp())::float8 - %s",
                    (REQUEST_IDS_KEPT,),
                )
            batch.hints.add("resume", run_id)
            return "recorded"
        found = connection.execute(
            "SELECT (SELECT request_id FROM callboard_resume_requests "
            "WHERE run_id = %s AND path = %s), EXISTS (SELECT 1 FROM callboard_resume_request_ids "
            "WHERE run_id = %s AND request_id = %s)",
            (run_id, path, run_id, request_id),
        ).fetchone()
        assert found is not None  # one row, always
        waiting, known = found
        if known or waiting == request_id:
            # Its own, committed by a try whose acknowledgement was lost: recorded.
            return "recorded"
        return "changed" if waiting is None else "requested"

    def _hand_back(self, connection: Connection, run_ids: list[str], batch: _Batch) -> int:
        held = {run_id: batch.held[run_id] for run_id in run_ids if run_id in batch.held}
        if not held:
            return 0
        rows = connection.execute(
            "UPDATE callboard_runs AS r SET owner_id = NULL, started_at = CASE "
            "WHEN r.status = 'pending' THEN NULL ELSE r.started_at END "
            "FROM unnest(%s::text[], %s::bigint[]) AS h(run_id, epoch) "
            "WHERE r.run_id = h.run_id AND r.owner_id = %s AND r.epoch = h.epoch "
            f"AND r.status IN ({_UNFINISHED_SQL}) RETURNING r.run_id",
            (list(held), list(held.values()), self.owner_id),
        ).fetchall()
        for run_id in held:  # handed back, or not its own any more: held no longer
            batch.held.pop(run_id, None)
        for (run_id,) in rows:
            batch.hints.add("queued", run_id)
        return len(rows)

    def _claim(self, connection: Connection, write: Write, batch: _Batch) -> list[Claimed]:
        workflows, limit, skip, busy, executing = write.payload
        # A claim whose caller gave up waiting must not take runs nobody would drive.
        if not write.take():
            return []
        rows: list[tuple[Any, ...]] = []
        if self._adopting():
            callers = self._callers
            # No create begins on a caller's thread meanwhile, and those under way or
            # committed since the batch began are left alone: they are held here, by
            # the actors their callers start (adopted, each would have two). So are the
            # runs a replace of this batch is for: tried again after a commit never
            # acknowledged, a replace (a resume, a restart) finds its first try's row
            # and holds the run for its caller's actor; adopted too, it had two.
            replacing = batch.replacing
            with callers.lock:
                adopting = {
                    "owner": self.owner_id,
                    "known": sorted({*batch.held, *callers.held, *callers.under_way, *replacing}),
                    "workflows": workflows,
                    "busy": busy,
                }
                rows += connection.execute(_ADOPT, adopting).fetchall()
            # Still unsure while a run of its own is left for its actor here to let go of,
            # or for a replace after this claim (its caller may yet give it up, and leave
            # the run this worker's with no actor: the next claim looks again).
            batch.adopted = not replacing and (
                not busy or connection.execute(_ADOPTABLE_BUSY, adopting).fetchone() is None
            )
            if rows:  # said once found (the claim may yet fail, and find them again)
                emit(
                    logging.INFO,
                    "store_runs_held_unknowingly",
                    store=self._shown,
                    runs=sorted(row[0] for row in rows),
                )
        if len(rows) < limit:
            if _queue_limits(connection):
                rows += self._claim_through_queues(
                    connection,
                    workflows,
                    limit - len(rows),
                    skip,
                    busy,
                    counted=[*busy, *executing],
                )
            else:
                # No queue defined: no run has one (a queue is defined before its first run).
                rows += connection.execute(
                    _CLAIM_SKIPPING if skip or busy else _CLAIM,
                    {
                        "workflows": workflows,
                        "limit": limit - len(rows),
                        "owner": self.owner_id,
                        "skip": skip,
                        "busy": busy,
                    },
                ).fetchall()
        rows = self._retaken(connection, rows, batch)
        return self._claimed(rows, batch)

    def _retaken(
        self, connection: Connection, rows: list[tuple[Any, ...]], batch: _Batch
    ) -> list[tuple[Any, ...]]:
        """The claimed rows but those of runs this store thought it held, which go back.

        A claim finds a run it holds in the queue only if this worker was reaped
        (its lease ran out while it stalled) and has not heard so yet: the run's
        actor here may still be in a step. Claimed again, the run would get a
        second actor beside it, and both would write under the new epoch. It
        goes back to the queue at once, fenced off here: its actor's next write
        is refused, the actor lets go, and then the run is claimed anew.
        """
        retaken = {row[0] for row in rows if row[0] in batch.held}
        if not retaken:
            return rows
        connection.execute(
            "UPDATE callboard_runs SET owner_id = NULL WHERE run_id = ANY(%s) AND owner_id = %s",
            (sorted(retaken), self.owner_id),
        )
        for run_id in sorted(retaken):
            del batch.held[run_id]
            batch.fenced.add(run_id)
            batch.hints.add("queued", run_id)
        emit(logging.WARNING, "runs_lost_while_stalled", store=self._shown, runs=sorted(retaken))
        return [row for row in rows if row[0] not in retaken]

    def _claimed(self, rows: list[tuple[Any, ...]], batch: _Batch) -> list[Claimed]:
        """The claimed rows (oldest first), now held here."""
        rows.sort(key=lambda row: (row[5], row[0]))  # oldest first
        claimed = []
        for row in rows:
            run_id = row[0]
            batch.held[run_id] = row[10]
            batch.fenced.discard(run_id)
            record = _record(row)
            if len(row) > 12:  # claimed through a queue: say which
                record = record._replace(queue=row[12])
            claimed.append(Claimed(record=record, cancel_requested=bool(row[11])))
        return claimed

    def _one_statement(
        self, connection: Connection, writes: list[Write], batch: _Batch
    ) -> dict[int, Any] | None:
        """The batch as one statement in autocommit, if it can be; each write's result by ``id``.

        ``None``: it cannot (or a claim took nothing), and the batch is still to
        do as a transaction of several statements. The statement, its commit and
        its answer take one round trip, with no ``BEGIN`` and no pipeline.
        """
        alone = self._alone(writes, batch)
        if alone is not None:
            return self._save_alone(connection, writes, alone, batch)
        if len(writes) == 1 and writes[0].kind == "claim" and not self._adopting():
            claimed = self._claim_alone(connection, writes[0], batch)
            return None if claimed is None else {id(writes[0]): claimed}
        return None

    def _adopting(self) -> bool:
        """Whether the next claim adopts runs held here unknowingly: in doubt, or ADOPT_EVERY on."""
        return self._ambiguous or time.monotonic() >= self._next_adopt

    def _claim_alone(
        self, connection: Connection, write: Write, batch: _Batch
    ) -> list[Claimed] | None:
        """A claim as one statement, its own transaction; ``None`` if it took nothing.

        :data:`_CLAIM_ALONE` claims only while no queue is defined; when it took
        nothing (none waits, or runs wait in queues) the claim is made again as
        :meth:`_claim` makes it, which looks at the queues.
        """
        workflows, limit, skip, busy, _executing = write.payload  # no queue: not counted
        # A claim whose caller gave up waiting must not take runs nobody would drive.
        if not write.take():
            return []
        rows: list[tuple[Any, ...]] = []
        try:
            with _autocommit(connection):
                _virtual_now(connection)
                rows = connection.execute(
                    _CLAIM_ALONE_SKIPPING if skip or busy else _CLAIM_ALONE,
                    {
                        "workflows": workflows,
                        "limit": limit,
                        "owner": self.owner_id,
                        "skip": skip,
                        "busy": busy,
                    },
                ).fetchall()
                kept = self._retaken(connection, rows, batch) if rows else rows
        except Exception:
            # Its commit may have happened unacknowledged: runs held here unknowingly.
            self._ambiguous = True
            # Claimed (committed) but not handed back: the store owns them at the new
            # epoch. Known no more, the next claim adopts them once nothing of them is
            # left here; known at their old epoch, it would pass them over for ever.
            lost = {row[0] for row in rows if row[0] in self._held}
            if lost:
                self._held = {key: at for key, at in self._held.items() if key not in lost}
                self._fenced = self._fenced | lost
            raise
        # Took some, even if all of them went back (none is claimed again in this batch).
        return self._claimed(kept, batch) if rows else None

    def _claim_through_queues(
        self,
        connection: Connection,
        workflows: list[str],
        limit: int,
        skip: list[str],
        busy: list[str],
        *,
        counted: list[str],
    ) -> list[tuple[Any, ...]]:
        """Claim by rank, each run of a queue only while its limits allow, under the queue lock.

        The lock is held until the batch commits: the counts read here stay
        true for every other worker's claim, which waits for its turn. ``busy``
        runs are left out; ``counted`` ones (``busy`` and ``executing``) count in
        their queues whatever their status.
        """
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_QUEUE_LOCK,))
        limits = _queue_limits(connection)
        now_row = connection.execute(f"SELECT {_NOW}").fetchone()
        now = float(now_row[0]) if now_row is not None else 0.0
        running: dict[Bucket, int] = {
            (queue, key): int(count)
            for queue, key, count in connection.execute(
                # A busy run executes too, whatever its status, until its step body here
                # returns: this worker lost it while it stalled, or its run let go of the
                # body (cancelled, timed out), which runs on.
                "SELECT queue, queue_key, count(*) FROM callboard_runs "
                "WHERE queue IS NOT NULL AND ((owner_id IS NOT NULL "
                f"AND status IN ({_UNFINISHED_SQL})) OR run_id = ANY(%s)) "
                "GROUP BY queue, queue_key",
                (counted,),
            ).fetchall()
        }
        started: dict[Bucket, int] = {}
        for name, queue_limits in limits.items():
            if queue_limits.rate_count is None or queue_limits.rate_period is None:
                continue
            for key, count in connection.execute(
                "SELECT queue_key, count(*) FROM callboard_runs WHERE queue = %s "
                "AND started_at > %s GROUP BY queue_key",
                (name, now - queue_limits.rate_period),
            ).fetchall():
                started[(name, key)] = int(count)
        admission = Admission(limits, running, started)
        taken: list[tuple[Any, ...]] = []
        for _ in range(_CLAIM_ROUNDS):
            want = limit - len(taken)
            rows = connection.execute(
                "SELECT run_id, queue, queue_key, started_at, restarting FROM callboard_runs "
                f"WHERE {_QUEUED_SQL} AND workflow_id = ANY(%(workflows)s) AND {_DUE} "
                f"AND {_SKIPPING} AND {_NOT_BUSY} "
                "AND (queue IS NULL OR NOT (queue = ANY(%(closed)s) "
                "OR queue || chr(31) || coalesce(queue_key, '') = ANY(%(buckets)s) "
                "OR ((started_at IS NULL OR restarting) "
                "AND queue || chr(31) || coalesce(queue_key, '') = ANY(%(rated)s)))) "
                "ORDER BY rank, run_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
                {
                    "workflows": workflows,
                    "closed": admission.closed_queues(),
                    "buckets": [bucket_key(bucket) for bucket in admission.closed_buckets()],
                    "rated": [bucket_key(bucket) for bucket in admission.rated_buckets()],
                    "limit": want,
                    "skip": skip,
                    "busy": busy,
                },
            ).fetchall()
            chosen = [
                run_id
                for run_id, queue, key, started_at, restarting in rows
                if admission.admit(queue, key, first=started_at is None or restarting)
            ][:want]
            if chosen:
                taken += connection.execute(
                    "UPDATE callboard_runs AS r SET owner_id = %s, epoch = r.epoch + 1, "
                    "started_at = CASE WHEN r.restarting THEN %s ELSE coalesce(r.started_at, %s) "
                    "END, restarting = false WHERE r.run_id = ANY(%s) "
                    "RETURNING r.run_id, r.workflow_id, r.seq, r.status, r.snapshot, "
                    "r.created_at, r.updated_at, r.trace_id, r.wake_at, "
                    f"{_PARTS_OF.format(table='r')}, r.epoch, r.cancel_requested, r.queue",
                    (self.owner_id, now, now, chosen),
                ).fetchall()
            if len(taken) >= limit or len(rows) < want:
                break  # enough, or nothing more waits: a round skips only what filled up
        return taken

    def _refuse_full(
        self, connection: Connection, creates: list[Write], results: dict[int, Any]
    ) -> list[Write]:
        """The creates left once those into a queue whose ``max_queued`` runs wait are refused.

        Counted under the queue lock, so that two creates cannot both take the last place.
        """
        bounded = [write for write in creates if write.payload[0].queue is not None]
        if not bounded:
            return creates
        limits = _queue_limits(connection)
        if not any(
            limits.get(write.payload[0].queue, _UNBOUNDED).max_queued is not None
            for write in bounded
        ):
            return creates
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_QUEUE_LOCK,))
        # A create whose first try may have committed (see _create's "maybe") and whose
        # run is in: the queue counts it already, and it is not refused for its own place
        # (told QueueFullError, "not recorded", its run ran). _create tells whether the
        # row is that try's.
        maybe = [write.payload[0].run_id for write in bounded if write.payload[2] or write.tried]
        present: set[str] = set()
        if maybe:
            found = connection.execute(
                "SELECT run_id FROM callboard_runs WHERE run_id = ANY(%s)", (maybe,)
            )
            present = {row[0] for row in found.fetchall()}
        waiting: dict[str, int] = {}
        kept: list[Write] = []
        for write in creates:
            record = write.payload[0]
            queue_limits = limits.get(record.queue) if record.queue is not None else None
            if queue_limits is None or queue_limits.max_queued is None:
                kept.append(write)
                continue
            if record.run_id in present:
                kept.append(write)
                continue
            if record.queue not in waiting:
                row = connection.execute(
                    f"SELECT count(*) FROM callboard_runs WHERE queue = %s AND {_QUEUED_SQL} "
                    f"AND {_DUE}",
                    (record.queue,),
                ).fetchone()
                waiting[record.queue] = int(row[0]) if row is not None else 0
            if waiting[record.queue] >= queue_limits.max_queued:
                results[id(write)] = _queue_full(record, queue_limits.max_queued)
            else:
                waiting[record.queue] += 1
                kept.append(write)
        return kept

    def _reap(self, connection: Connection, batch: _Batch) -> int:
        dead = [row[0] for row in connection.execute(_DEAD_WORKERS).fetchall()]
        if dead:
            connection.execute("DELETE FROM callboard_workers WHERE worker_id = ANY(%s)", (dead,))
            if self.owner_id in dead:
                batch.reaped = True
        rows = connection.execute(_HAND_BACK).fetchall()
        for run_id, status in rows:
            batch.hints.add("queued" if status in UNFINISHED_STATUSES else None, run_id)
        if dead or rows:
            emit(logging.INFO, "store_reaped", store=self._shown, workers=dead, runs=len(rows))
        return len(rows)

    def _prune(self, connection: Connection, write: Write) -> int:
        ended_before, statuses, most = write.payload
        # Tried again after a commit whose reply was lost, the runs the first try deleted
        # are gone: counted still, as the first try's (those it did not delete, as its
        # commit did not happen, this try deletes and counts once).
        earlier: frozenset[str] = write.earlier if write.tried and write.earlier else frozenset()
        found = connection.execute(_ENDED_BEFORE, (statuses, ended_before, most))
        doomed: list[str] = [row[0] for row in found.fetchall()]
        if not doomed:
            return len(earlier)
        doomed.sort()
        connection.execute(
            "SELECT 1 FROM callboard_runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE",
            (doomed,),
        ).fetchall()
        rows = connection.execute(
            "DELETE FROM callboard_runs WHERE run_id = ANY(%s) AND status = ANY(%s) "
            "RETURNING run_id",
            (doomed, statuses),
        ).fetchall()
        deleted = earlier.union(row[0] for row in rows)
        write.earlier = deleted
        return len(deleted)


def _payload_bytes(writes: list[Write]) -> int:
    """The snapshot bytes a batch of writes carries."""
    size = 0
    for write in writes:
        if write.kind == "save":
            for record in write.payload:
                change = record.parts
                if change is None or change.base_seq is None:
                    size += len(record.data)
                else:  # what goes out: the head and the parts that changed
                    size += len(change.head) + sum(len(part) for _, part in change.changed)
        elif write.kind in ("create", "replace"):
            size += len(write.payload[0].data)
    return size


def _rounds(writes: list[Write]) -> list[list[tuple[SnapshotRecord, Write]]]:
    """The saved records in rounds: each run's first record, then each one's second, and so on."""
    rounds: list[list[tuple[SnapshotRecord, Write]]] = []
    seen: dict[str, int] = {}
    for write in writes:
        for record in write.payload:
            index = seen.get(record.run_id, 0)
            seen[record.run_id] = index + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append((record, write))
    return rounds


def _reporting(
    on_commit: Callable[[], None] | None, on_error: Callable[[BaseException], None] | None
) -> Done:
    """A save's ``done``: ``on_commit`` once committed, ``on_error`` if fenced or refused."""

    def done(_result: Any, error: BaseException | None) -> None:
        if error is None:
            if on_commit is not None:
                on_commit()
        elif on_error is not None:
            on_error(error)

    return done


def _report_committed(writes: list[Write], results: dict[int, Any]) -> None:
    """Tell each write of a committed batch its outcome.

    Callers blocked in ``create()`` first; then the callbacks that tell actors.
    A ``QueueFullError`` in place of a result (a start, or a restart, into a
    full queue) is told as the write's error.
    """
    for write in writes:
        if write.kind == "create":
            result = results.get(id(write))
            if isinstance(result, QueueFullError):
                call(write.done, None, result)
            else:
                call(write.done, result, None)
    for write in writes:
        if write.kind != "create":
            error = results.get(id(write)) if write.kind == "save" else None
            result = None if write.kind == "save" else results.get(id(write))
            if isinstance(result, QueueFullError):  # a restart into a full queue
                result, error = None, result
            call(write.done, result, error)
