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
``on_commit`` when its records are. A lost connection (a server restart, the
network) is a passing error: the writer reconnects with back-off and tries
the same writes again, and nothing is acknowledged before it commits. Reads
come from a small pool of autocommit connections, from any thread; a read
that loses its connection is tried once more on a new one.

Rows of several runs are always locked in ``run_id`` order, and the claim and
the reaper skip rows that others have locked, so concurrent workers never
deadlock. Time that matters (heartbeats, leases, wake-ups) is the database's
clock, never a client's.

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
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final, TypeVar

from runtime._errors import StoreError
from runtime._ids import new_id
from runtime._model import SETTLED_STATUSES, TERMINAL_STATUSES, UNFINISHED_STATUSES
from runtime._stores._writer import Done, GroupCommitWriter, Write, WriteKind, call, resolve
from runtime._stores.base import DEFAULT_LEASE, Claimed, RunFencedError, SnapshotRecord, WorkerInfo
from runtime._tracing import emit

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

__all__ = ["LEASE", "SCHEMA_VERSION", "PostgresStore", "redact"]

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 1
"""The database schema this code writes (``callboard_meta.schema_version``)."""

LEASE: Final = DEFAULT_LEASE
"""Seconds without a heartbeat after which a worker's runs go back to the queue."""

CALL_TIMEOUT: Final = 30.0
"""Seconds a call that waits for its commit (or a free read connection) waits at most."""

CONNECT_TIMEOUT: Final = 5
"""Seconds one connection attempt waits, unless the URL says ``connect_timeout``."""

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

LISTEN_POLL: Final = 0.25
"""Seconds the listener waits for a hint before it looks whether to stop."""

_SCHEMA_LOCK: Final = 0x63616C6C626F6172  # "callboar": the advisory lock of schema setup

_INSTALL_HINT: Final = "pip install 'callboard[postgres]'"


def _sql_list(values: frozenset[str]) -> str:
    """A constant set of statuses as an SQL list of literals, for statements built once."""
    return ", ".join(f"'{value}'" for value in sorted(values))


_TERMINAL_SQL: Final = _sql_list(TERMINAL_STATUSES)
_UNFINISHED_SQL: Final = _sql_list(UNFINISHED_STATUSES)
_QUEUED_SQL: Final = f"owner_id IS NULL AND status IN ({_UNFINISHED_SQL})"
"""Runs nobody holds that some worker must drive: the partial index's predicate, word for word."""
_NOW: Final = "(SELECT extract(epoch FROM clock_timestamp())::float8)"
"""The database's clock in epoch seconds, evaluated once a statement."""
_DUE: Final = f"(wake_at IS NULL OR wake_at <= {_NOW})"

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
    snapshot         bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS callboard_runs_by_created ON callboard_runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS callboard_runs_by_workflow ON callboard_runs (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS callboard_runs_by_status ON callboard_runs (status, created_at);
CREATE INDEX IF NOT EXISTS callboard_runs_by_end ON callboard_runs (status, updated_at);
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

_ADDED: Final = """
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
"""What came after the first schema, added to a database that lacks it on every open:
idempotency keys (one run per key and workflow: the unique index decides between two
starts that race) and schedules."""

_COLUMNS: Final = (
    "run_id, workflow_id, seq, status, snapshot, created_at, updated_at, trace_id, wake_at"
)

# Rows are handed over as arrays, one per column, and unnested: one statement
# (and one round trip) however many records a batch has.
_ROWS: Final = """(
    SELECT run_id, workflow_id, status, seq, owner_id, epoch, wake_at, created_at,
           updated_at, trace_id, decode(snapshot, 'base64') AS snapshot, idempotency_key
    FROM jsonb_to_recordset(%s::jsonb) AS j(
        run_id text, workflow_id text, status text, seq int8, owner_id text, epoch int8,
        wake_at float8, created_at float8, updated_at float8, trace_id text, snapshot text,
        idempotency_key text)
) AS v"""
"""A batch of records as rows: one JSON parameter, which ``json.dumps`` builds in C (eleven
array parameters cost psycopg's Python array dumper about a fifth of a worker's CPU)."""

_CREATE: Final = f"""
INSERT INTO callboard_runs (run_id, workflow_id, status, seq, owner_id, epoch, wake_at,
                            created_at, updated_at, trace_id, snapshot, idempotency_key)
SELECT v.run_id, v.workflow_id, v.status, v.seq, v.owner_id, v.epoch, v.wake_at,
       v.created_at, v.updated_at, v.trace_id, v.snapshot, v.idempotency_key
FROM {_ROWS}
ON CONFLICT DO NOTHING
RETURNING run_id
"""

# A save of runs this store holds: only while owner and epoch are still ours,
# the record is newer, and the run not ended. A release makes the run nobody's.
_SAVE_HELD: Final = f"""
UPDATE callboard_runs AS r SET
    status = v.status, seq = v.seq, updated_at = v.updated_at, snapshot = v.snapshot,
    wake_at = v.wake_at, owner_id = v.owner_id
FROM {_ROWS}
WHERE r.run_id = v.run_id AND r.owner_id = %s AND r.epoch = v.epoch
    AND v.seq > r.seq AND r.status NOT IN ({_TERMINAL_SQL})
RETURNING r.run_id
"""

# A save of runs this store does not hold: it applies only to runs nobody holds.
_SAVE_FREE: Final = f"""
INSERT INTO callboard_runs AS r (run_id, workflow_id, status, seq, owner_id, epoch, wake_at,
                                 created_at, updated_at, trace_id, snapshot)
SELECT v.run_id, v.workflow_id, v.status, v.seq, NULL, 0, v.wake_at,
       v.created_at, v.updated_at, v.trace_id, v.snapshot
FROM {_ROWS}
ON CONFLICT (run_id) DO UPDATE SET
    status = excluded.status, seq = excluded.seq, updated_at = excluded.updated_at,
    snapshot = excluded.snapshot, wake_at = excluded.wake_at
WHERE r.owner_id IS NULL AND excluded.seq > r.seq AND r.status NOT IN ({_TERMINAL_SQL})
RETURNING r.run_id
"""

_REPLACE: Final = f"""
UPDATE callboard_runs SET
    status = %(status)s, seq = %(seq)s, updated_at = %(updated_at)s, snapshot = %(snapshot)s,
    wake_at = %(wake_at)s, owner_id = %(new_owner)s, epoch = epoch + %(bump)s
WHERE run_id = %(run_id)s AND seq = %(expected)s AND %(seq)s > seq
    AND status NOT IN ({_TERMINAL_SQL}) AND {{holder}}
RETURNING epoch
"""

_CLAIM: Final = f"""
WITH picked AS (
    SELECT run_id FROM callboard_runs
    WHERE {_QUEUED_SQL} AND workflow_id = ANY(%(workflows)s) AND {_DUE}
    ORDER BY created_at, run_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE callboard_runs AS r SET owner_id = %(owner)s, epoch = r.epoch + 1
FROM picked WHERE r.run_id = picked.run_id
RETURNING r.run_id, r.workflow_id, r.seq, r.status, r.snapshot, r.created_at, r.updated_at,
          r.trace_id, r.wake_at, r.epoch, r.cancel_requested
"""

# Runs owned by this worker that it does not know it holds: a claim whose
# commit was sent but never acknowledged (the connection dropped) took them.
_ADOPT: Final = f"""
UPDATE callboard_runs SET epoch = epoch + 1
WHERE owner_id = %(owner)s AND NOT (run_id = ANY(%(known)s::text[]))
    AND status IN ({_UNFINISHED_SQL}) AND workflow_id = ANY(%(workflows)s)
RETURNING {_COLUMNS}, epoch, cancel_requested
"""

_DEAD_WORKERS: Final = """
SELECT worker_id FROM callboard_workers
WHERE heartbeat_at < clock_timestamp() - make_interval(secs => lease)
ORDER BY worker_id
FOR UPDATE SKIP LOCKED
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

_JOIN: Final = """
INSERT INTO callboard_workers (worker_id, host, pid, role, workflows, concurrency, lease)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (worker_id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, role = excluded.role,
    workflows = excluded.workflows, concurrency = excluded.concurrency,
    lease = excluded.lease, heartbeat_at = clock_timestamp()
RETURNING (xmax = 0)
"""

_SOLO: Final = frozenset({"prune", "reap"})
"""Writes that run in a transaction of their own: they lock rows the batch does not know of."""

_HOLDING: Final = frozenset({"create", "claim", "replace"})
"""Writes whose commit, if never acknowledged, may have left runs held here unknowingly."""


def _record(row: Sequence[Any]) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=row[0],
        workflow_id=row[1],
        seq=row[2],
        status=row[3],
        data=bytes(row[4]),
        created_at=row[5],
        updated_at=row[6],
        trace_id=row[7],
        wake_at=row[8],
    )


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


def _columns(
    records: Sequence[SnapshotRecord], owners: Sequence[str | None], epochs: Sequence[int]
) -> list[Any]:
    """The records as the one JSON parameter of :data:`_ROWS` (a key only where a run has one)."""
    return [
        json.dumps(
            [
                {
                    **({"idempotency_key": r.idempotency_key} if r.idempotency_key else {}),
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
                    "snapshot": base64.b64encode(r.data).decode("ascii"),
                }
                for r, owner, epoch in zip(records, owners, epochs, strict=True)
            ]
        )
    ]


def redact(url: str) -> str:
    """The URL with any password in it replaced by ``***``: what errors and reprs show."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return re.sub(r"(?i)(password\s*=\s*)\S*", r"\1***", url)
    end = next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{separator}{authority}{tail}"


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
    deadlock or serialization failure, a lock timeout, resources that ran out.
    Bad data, a missing table or a refused statement are for good.
    """
    import psycopg

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in {"08", "40", "53", "57", "58"} or state == "55P03"


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
    """

    def __init__(self, connect: Callable[[], Connection], size: int) -> None:
        self._connect = connect
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    def add(self, connection: Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    @contextlib.contextmanager
    def connection(self, describe: str) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=CALL_TIMEOUT):
            raise StoreError(f"no connection to {describe} came free within {CALL_TIMEOUT} s")
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._connect()
            good = False
            try:
                yield connection
                good = True
            finally:
                self._put_back(connection, good)
        finally:
            self._slots.release()

    def _put_back(self, connection: Connection, good: bool) -> None:
        import psycopg

        idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if good and idle and not connection.broken and not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    def discard_idle(self) -> None:
        """Close the idle connections: after one was lost, the others likely were too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        self._closed = True
        self.discard_idle()


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


class _Batch:
    """What one transaction changes of the store's own state, applied once it commits."""

    __slots__ = ("adopted", "fenced", "held", "hints", "reaped")

    def __init__(self, held: dict[str, int], fenced: frozenset[str], reaped: bool) -> None:
        self.held = dict(held)
        self.fenced = set(fenced)
        self.hints = _Hints()
        self.reaped = reaped  # this worker's row was found gone, and nobody was told yet
        self.adopted = False


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

    def __init__(self, url: str, *, lease: float = LEASE, readonly: bool = False) -> None:
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            shown = redact(url) if isinstance(url, str) else type(url).__name__
            raise StoreError(
                f"a PostgreSQL store needs a postgresql:// or postgres:// URL, got {shown!r}"
            )
        if not lease > 0:
            raise StoreError(f"a lease is a positive number of seconds, got {lease!r}")
        self._url = url  # never shown: it may hold the password
        self.lease = float(lease)
        self.readonly = readonly
        self.owner_id = new_id()
        self._shown = redact(url)
        self._password = ""
        self._closed = False
        self._writer: GroupCommitWriter | None = None
        self._wconn: Connection | None = None
        self._listener: _Listener | None = None
        self._hint: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # run_id -> epoch; replaced whole, by the writer only
        self._fenced: frozenset[str] = frozenset()  # held once, taken by others since
        self._reaped = False  # a heartbeat found this worker's row gone
        self._ambiguous = False  # a commit that might have held runs was never acknowledged
        self._role: tuple[str, list[str], int | None] = ("both", [], None)
        _require_psycopg()
        import psycopg

        try:
            settings = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"not a valid PostgreSQL URL {self._shown!r}: {exc}") from exc
        self._password = str(settings.get("password") or "")
        self._options: dict[str, Any] = {
            key: value
            for key, value in (
                ("connect_timeout", CONNECT_TIMEOUT),
                ("application_name", "callboard"),
                ("keepalives", 1),
                ("keepalives_idle", 10),
                ("keepalives_interval", 5),
                ("keepalives_count", 3),
            )
            if key not in settings
        }
        self._readers = _Readers(lambda: self._connect(autocommit=True), READERS)
        if readonly:
            connection = self._connect(autocommit=True)
            try:
                self._check_schema(connection, writable=False)
            except BaseException:
                connection.close()
                raise
            self._readers.add(connection)
            return
        connection = self._connect(autocommit=False)
        try:
            self._prepare(connection)
        except BaseException:
            connection.close()
            raise
        self._wconn = connection
        self._writer = GroupCommitWriter(
            name="callboard-postgres-writer",
            commit=self._commit,
            idle=lambda _empty: None,
            give_up=self._give_up,
            finish=self._finish,
            batch=BATCH,
        )

    @property
    def location(self) -> str:
        """The store's URL, with any password in it replaced by ``***``."""
        return self._shown

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r}{', readonly=True' if self.readonly else ''})"

    # --- connections --------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        """An error's message, on one line, with the password (if any) taken out."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _connect(self, *, autocommit: bool) -> Connection:
        """A new connection; a StoreError saying why there is none."""
        import psycopg

        try:
            return psycopg.connect(self._url, autocommit=autocommit, **self._options)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL store {self._shown}: {self._reason(exc)}"
            ) from exc

    def _check_schema(self, connection: Connection, *, writable: bool) -> int:
        """The schema version in the database (0: none); a StoreError if it is newer."""
        import psycopg

        try:
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
        return version

    def _prepare(self, connection: Connection) -> None:
        """Create the schema if it is absent, and this worker's row, in one transaction.

        The advisory lock makes two workers that start at once take turns.
        """
        import psycopg

        try:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            version = self._check_schema(connection, writable=True)
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(
                    "INSERT INTO callboard_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            self._add_missing(connection)
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

    def _add_missing(self, connection: Connection) -> None:
        """Add what :data:`_ADDED` makes, if the database lacks it.

        Looked up first, so that a database that has it takes no table lock.
        """
        row = connection.execute(
            "SELECT to_regclass('callboard_schedules') IS NOT NULL AND EXISTS (SELECT 1 FROM "
            "information_schema.columns WHERE table_name = 'callboard_runs' "
            "AND column_name = 'idempotency_key' AND table_schema = current_schema())"
        ).fetchone()
        if row is not None and row[0]:
            return
        for statement in _ADDED.split(";"):
            if statement.strip():
                connection.execute(statement)

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

    def _join_row(self, connection: Connection) -> bool:
        """Write this worker's row; return whether it was missing (made anew)."""
        role, workflows, concurrency = self._role
        row = connection.execute(
            _JOIN,
            (
                self.owner_id,
                socket.gethostname(),
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
                with self._readers.connection(self._shown) as connection:
                    return read(connection)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._readers.discard_idle()
                if attempt == 2:
                    raise StoreError(
                        f"cannot read the PostgreSQL store {self._shown}: {self._reason(exc)}"
                    ) from exc
            except psycopg.Error as exc:
                raise StoreError(
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
            StoreError: if the commit did not happen within ``CALL_TIMEOUT`` (the
                database stayed unreachable) or the store is read-only or closed.
        """
        future: Future[bool] = Future()
        write = self._submit("create", (record, hold), resolve(future))
        return bool(self._committed(write, future, f"the run {record.run_id!r} was not recorded"))

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

    def replace(self, record: SnapshotRecord, expected_seq: int, *, hold: bool = False) -> bool:
        """Store ``record`` if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set, committed when it returns ``True``. It fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs or is
        not below ``record.seq``, its status is terminal, or another worker
        holds it. With ``hold`` the run is then held here (its epoch bumped);
        without, it is left queued (an unfinished record) or released.

        Raises:
            StoreError: if the commit did not happen within ``CALL_TIMEOUT`` or
                the store is read-only or closed.
        """
        future: Future[bool] = Future()
        write = self._submit("replace", (record, expected_seq, hold), resolve(future))
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
        """Runs, newest first (by ``created_at``), filtered; and how many match in all."""
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("workflow_id = %s", workflow_id),
            ("status = %s", status),
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
        """Delete a run's record; return whether there was one."""
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
        ``status``, only runs of that status).

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        statuses = TERMINAL_STATUSES if status is None else TERMINAL_STATUSES & {status}
        if not statuses:
            return 0
        future: Future[int] = Future()
        write = self._submit("prune", (ended_before, keep, sorted(statuses)), resolve(future))
        return int(self._committed(write, future, "nothing was pruned"))

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

    def close(self) -> None:
        """Finish the queued writes, leave the workers, stop the listener; bounded in time.

        The runs this worker still holds go back to the queue, for other
        workers to take at once. Reads go on working, each on a connection
        of its own.
        """
        if self._closed:
            return
        self._closed = True
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
        """Renew this worker's lease, by the database's clock.

        Returns:
            ``False`` if its row was gone (reaped: its runs went back to the
            queue); the row is made again, and the runs it held are fenced off.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[bool] = Future()
        write = self._submit("heartbeat", None, resolve(future))
        return bool(self._committed(write, future, "the lease was not renewed"))

    def claim(self, workflow_ids: Sequence[str], limit: int) -> list[Claimed]:
        """Take up to ``limit`` queued runs of these workflows, oldest first.

        Each is then held here with its epoch bumped. Rows another worker has
        locked are skipped (``FOR UPDATE SKIP LOCKED``), never waited for.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        if limit <= 0 or not workflow_ids:
            return []
        future: Future[list[Claimed]] = Future()
        write = self._submit("claim", (sorted(set(workflow_ids)), limit), resolve(future))
        claimed: list[Claimed] = self._committed(write, future, "nothing was claimed")
        return claimed

    def next_wake(self, workflow_ids: Sequence[str]) -> float | None:
        """The earliest ``wake_at`` of queued sleeping runs of these workflows, or ``None``."""
        ids = sorted(set(workflow_ids))

        def read(connection: Connection) -> float | None:
            row = connection.execute(
                f"SELECT min(wake_at) FROM callboard_runs WHERE {_QUEUED_SQL} "
                "AND wake_at IS NOT NULL AND workflow_id = ANY(%s)",
                (ids,),
            ).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        result: float | None = self._read(read)
        return result

    def reap(self) -> int:
        """Hand back to the queue the runs of workers whose lease ran out; how many runs.

        A worker's lease ran out when its last heartbeat is older than its own
        lease, by the database's clock; its row is deleted. A worker that is
        renewing its lease at this very moment (its row locked) is skipped.
        Runs whose owner has no row at all go back too.

        Raises:
            StoreError: if the store is read-only or closed, or stayed unreachable.
        """
        future: Future[int] = Future()
        write = self._submit("reap", None, resolve(future))
        return int(self._committed(write, future, "nothing was reaped"))

    def request_cancel(self, run_id: str) -> bool:
        """Mark an unfinished run for cancel, for whoever holds it; ``False`` if none is.

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

    def held(self) -> int:
        """How many runs this worker holds now, by its own count."""
        return len(self._held)

    def holds(self, run_id: str) -> bool:
        """Whether this worker holds the run now, by its own count."""
        return run_id in self._held

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

    def workers(self) -> list[WorkerInfo]:
        """Every worker registered on the store, with its heartbeat age and the runs it holds."""

        def read(connection: Connection) -> list[WorkerInfo]:
            rows = connection.execute(
                "SELECT w.worker_id, w.host, w.pid, w.role, w.workflows, w.concurrency, "
                "extract(epoch FROM w.started_at)::float8, "
                "extract(epoch FROM clock_timestamp() - w.heartbeat_at)::float8, "
                "(SELECT count(*) FROM callboard_runs AS r WHERE r.owner_id = w.worker_id "
                f"AND r.status IN ({_UNFINISHED_SQL})) "
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
                )
                for row in rows
            ]

        result: list[WorkerInfo] = self._read(read)
        return result

    def set_hint(self, hint: Callable[[str, str], None] | None) -> None:
        """Call ``hint(kind, run_id)`` when this store or another one changed something.

        This store's own hints come from its writer thread once committed;
        other stores' arrive by ``NOTIFY`` (a store ignores its own).

        Kinds: ``"queued"`` (a run became claimable), ``"settled"`` (a run
        ended or suspended), ``"cancel"`` (a cancel was requested). The calls
        come from a listener thread, started on the first hint set; it
        reconnects after a lost connection. Hints only make things faster.
        """
        self._hint = hint
        with self._lock:
            if hint is None or self._listener is not None or self._closed:
                return
            self._listener = _Listener(
                lambda: self._connect(autocommit=True), self.owner_id, self._deliver
            )

    def _deliver(self, kind: str, run_id: str) -> None:
        hint = self._hint
        if hint is not None:
            hint(kind, run_id)

    # --- the writer ---------------------------------------------------------------

    def _submit(self, kind: WriteKind, payload: Any, done: Done) -> Write:
        if self.readonly:
            raise StoreError(f"the PostgreSQL store {self._shown} is open read-only")
        if self._closed or self._writer is None or not self._writer.is_alive():
            raise StoreError(f"the PostgreSQL store {self._shown} is closed")
        return self._writer.submit(kind, payload, done)

    def _committed(self, write: Write, future: Future[Any], not_done: str) -> Any:
        """Wait for a write that its caller must know committed (or not) before going on."""
        try:
            return future.result(CALL_TIMEOUT)
        except TimeoutError as exc:
            if not write.abandon():  # taken by a commit just now: its outcome follows
                return future.result(CALL_TIMEOUT)
            raise StoreError(
                f"the PostgreSQL store {self._shown} did not commit within {CALL_TIMEOUT} s; "
                f"{not_done}"
            ) from exc

    def _give_up(self, writes: list[Write]) -> None:
        self._fail(writes, StoreError(f"the PostgreSQL store {self._shown} stayed unreachable"))

    def _fail(self, writes: list[Write], error: StoreError) -> None:
        emit(logging.ERROR, "store_write_failed", store=self._shown, error=str(error))
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
            emit(logging.INFO, "store_reconnected", store=self._shown)
        return connection

    def _finish(self) -> None:
        """On the writer thread, last: hand back the runs held here, and leave the workers."""
        import psycopg

        connection = self._wconn
        self._wconn = None
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
            hints = _Hints()
            for run_id, status in rows:
                hints.add("queued" if status in UNFINISHED_STATUSES else None, run_id)
            self._notify(connection, hints)
        except psycopg.Error as exc:
            emit(logging.WARNING, "store_leave_failed", store=self._shown, error=self._reason(exc))
        finally:
            connection.close()

    def _commit(self, writes: list[Write]) -> list[Write]:
        """Commit the writes: the solo ones each alone, the rest together; return those to retry."""
        grouped = [write for write in writes if write.kind not in _SOLO]
        solo = [write for write in writes if write.kind in _SOLO]
        if grouped:
            left = self._commit_group(grouped)
            if left:
                return left + solo
        for index, write in enumerate(solo):
            if self._commit_group([write]):
                return solo[index:]
        return []

    def _commit_group(self, writes: list[Write]) -> list[Write]:
        """Run the writes in one transaction and report each outcome; return those to retry.

        A batch that fails for a passing reason (see :func:`_passing`) reports
        nothing and is tried again, on a new connection if the old one was
        lost. A batch that fails for a reason of its own is split, each write
        tried alone, so that only the bad one fails.
        """
        import psycopg

        batch = _Batch(self._held, self._fenced, self._reaped)
        committing = False
        try:
            connection = self._connection()
            results = self._transaction(connection, writes, batch)
            committing = True
            connection.commit()
        except Exception as exc:  # psycopg.Error, or a fault of ours: the writer lives on
            if self._wconn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._wconn.rollback()
            for write in writes:
                write.release()  # not committed: a caller may still give up on it
            if isinstance(exc, StoreError) or _passing(exc):
                if committing and any(write.kind in _HOLDING for write in writes):
                    self._ambiguous = True
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
        self._held = batch.held
        self._fenced = frozenset(batch.fenced)
        self._reaped = batch.reaped
        if batch.adopted:
            self._ambiguous = False
        # Callers blocked in create() first; then the callbacks that tell actors.
        for write in writes:
            if write.kind == "create":
                call(write.done, results.get(id(write)), None)
        for write in writes:
            if write.kind != "create":
                error = results.get(id(write)) if write.kind == "save" else None
                result = None if write.kind == "save" else results.get(id(write))
                call(write.done, result, error)
        self._tell_here(batch.hints)
        self._notify(connection, batch.hints)
        return []

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
        """Send the hints, coalesced, in a short transaction of their own; a failure is ignored."""
        import psycopg

        if not hints.items:
            return
        payloads: list[str] = []
        chunk: list[list[str]] = []
        size = 0
        for kind, run_id in hints.items:
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
            for payload in payloads:
                connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            connection.commit()
        except psycopg.Error as exc:
            emit(logging.INFO, "store_hint_not_sent", store=self._shown, error=self._reason(exc))
            with contextlib.suppress(psycopg.Error):
                connection.rollback()

    def _transaction(
        self, connection: Connection, writes: list[Write], batch: _Batch
    ) -> dict[int, Any]:
        """The writes in one transaction (not committed yet); each write's result by ``id``.

        This worker's own row first (a heartbeat, a join), then every run row
        the batch will change, locked in ``run_id`` order; then the creates and
        the saves, each kind in one statement; then the other writes in the
        order they came. A save's result is the :class:`RunFencedError` it
        earned, if any.
        """
        results: dict[int, Any] = {}
        for write in writes:
            if write.kind == "join":
                self._role = write.payload
                if self._join_row(connection):
                    # The row was gone: reaped. The next heartbeat says so.
                    batch.reaped = True
                results[id(write)] = None
            elif write.kind == "heartbeat":
                results[id(write)] = self._beat(connection, batch)
        touched = sorted(
            {record.run_id for write in writes if write.kind == "save" for record in write.payload}
            | {write.payload[0].run_id for write in writes if write.kind == "replace"}
            | {write.payload for write in writes if write.kind in ("delete", "request_cancel")}
        )
        if touched:
            connection.execute(
                "SELECT 1 FROM callboard_runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE",
                (touched,),
            ).fetchall()
        creates = sorted(
            (write for write in writes if write.kind == "create"),
            key=lambda write: write.payload[0].run_id,
        )
        if creates:
            self._create(connection, creates, batch, results)
        saves = [write for write in writes if write.kind == "save"]
        if saves:
            self._save(connection, saves, batch, results)
        for write in writes:
            if write.kind in ("create", "save", "join", "heartbeat"):
                continue
            results[id(write)] = self._apply(connection, write, batch)
        return results

    def _beat(self, connection: Connection, batch: _Batch) -> bool:
        row = connection.execute(
            "UPDATE callboard_workers SET heartbeat_at = clock_timestamp() "
            "WHERE worker_id = %s RETURNING 1",
            (self.owner_id,),
        ).fetchone()
        if row is not None and not batch.reaped:
            return True
        if row is None:
            self._join_row(connection)
        # Reaped: whatever this worker held went back to the queue, and is not ours.
        batch.fenced.update(batch.held)
        batch.held.clear()
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
        records = [write.payload[0] for write in live]
        holds = [write.payload[1] and not _releases(write.payload[0]) for write in live]
        owners = [self.owner_id if hold else None for hold in holds]
        epochs = [1 if hold else 0 for hold in holds]
        rows = connection.execute(
            _CREATE,
            _columns(records, owners, epochs),
        ).fetchall()
        inserted = {row[0] for row in rows}
        missed = [record.run_id for record in records if record.run_id not in inserted]
        if missed and self._ambiguous:
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
    ) -> None:
        """Apply every save of the batch, as if one after another.

        One statement cannot change a row twice, so a run saved twice in the
        batch is written in rounds: the first record of each run, then the
        second, and so on (nearly always a single round).
        """
        rounds: list[list[tuple[SnapshotRecord, Write]]] = []
        seen: dict[str, int] = {}
        for write in writes:
            for record in write.payload:
                index = seen.get(record.run_id, 0)
                seen[record.run_id] = index + 1
                if index == len(rounds):
                    rounds.append([])
                rounds[index].append((record, write))
        fenced: dict[int, list[str]] = {}
        for entries in rounds:
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
            written: set[str] = set()
            if held:
                records = [record for record, _ in held]
                owners = [None if _releases(r) else self.owner_id for r in records]
                epochs = [batch.held[r.run_id] for r in records]
                rows = connection.execute(
                    _SAVE_HELD,
                    [*_columns(records, owners, epochs), self.owner_id],
                ).fetchall()
                written.update(row[0] for row in rows)
            if free:
                records = [record for record, _ in free]
                rows = connection.execute(
                    _SAVE_FREE,
                    _columns(records, [None] * len(records), [0] * len(records)),
                ).fetchall()
                written.update(row[0] for row in rows)
            unwritten = [entry for entry in held + free if entry[0].run_id not in written]
            holders: dict[str, tuple[str | None, int]] = {}
            if unwritten:
                # Not newer, or not ours any more? The rows are locked: this is current.
                found = connection.execute(
                    "SELECT run_id, owner_id, epoch FROM callboard_runs WHERE run_id = ANY(%s)",
                    ([record.run_id for record, _ in unwritten],),
                ).fetchall()
                holders = {row[0]: (row[1], row[2]) for row in found}
            for record, write in held:
                run_id = record.run_id
                if run_id in written:
                    if _releases(record):
                        del batch.held[run_id]
                        batch.hints.add(
                            "settled" if record.status in SETTLED_STATUSES else "queued", run_id
                        )
                    continue
                owner, epoch = holders.get(run_id, (None, -1))
                if owner != self.owner_id or epoch != batch.held[run_id]:
                    del batch.held[run_id]
                    batch.fenced.add(run_id)
                    fenced.setdefault(id(write), []).append(run_id)
            for record, write in free:
                run_id = record.run_id
                if run_id in written:
                    batch.hints.add(_hint_kind(record), run_id)
                elif holders.get(run_id, (None, 0))[0] is not None:
                    fenced.setdefault(id(write), []).append(run_id)
        for write in writes:
            lost = fenced.get(id(write))
            if lost:
                results[id(write)] = RunFencedError(
                    f"run {lost[0]!r} is held by another worker: this one "
                    f"({self.owner_id}) may not write it",
                    run_id=lost[0],
                )

    def _apply(self, connection: Connection, write: Write, batch: _Batch) -> Any:
        kind, payload = write.kind, write.payload
        if kind == "replace":
            return self._replace(connection, write, batch)
        if kind == "claim":
            return self._claim(connection, write, batch)
        if kind == "delete":
            row = connection.execute(
                "DELETE FROM callboard_runs WHERE run_id = %s RETURNING 1", (payload,)
            ).fetchone()
            batch.held.pop(payload, None)
            batch.fenced.discard(payload)
            return row is not None
        if kind == "request_cancel":
            row = connection.execute(
                "UPDATE callboard_runs SET cancel_requested = true "
                f"WHERE run_id = %s AND status IN ({_UNFINISHED_SQL}) RETURNING 1",
                (payload,),
            ).fetchone()
            if row is not None:
                batch.hints.add("cancel", payload)
            return row is not None
        if kind == "reap":
            return self._reap(connection, batch)
        if kind == "prune":
            return self._prune(connection, payload)
        raise AssertionError(f"unknown write {kind!r}")

    def _replace(self, connection: Connection, write: Write, batch: _Batch) -> bool:
        record, expected_seq, hold = write.payload
        # A replace whose caller gave up waiting must not happen: take() decides.
        if not write.take():
            return False
        run_id = record.run_id
        epoch = batch.held.get(run_id)
        keeps = hold and not _releases(record)
        params = {
            "status": record.status,
            "seq": record.seq,
            "updated_at": record.updated_at,
            "snapshot": record.data,
            "wake_at": record.wake_at,
            "new_owner": self.owner_id if keeps else None,
            "bump": 1 if keeps else 0,
            "run_id": run_id,
            "expected": expected_seq,
            "owner": self.owner_id,
            "epoch": epoch,
        }
        holder = (
            "owner_id IS NULL" if epoch is None else "owner_id = %(owner)s AND epoch = %(epoch)s"
        )
        row = connection.execute(
            _REPLACE.format(holder=holder),
            params,
        ).fetchone()
        if row is None and self._ambiguous:
            # The same replace, committed by a try whose acknowledgement was lost?
            row = connection.execute(
                "SELECT epoch FROM callboard_runs WHERE run_id = %s AND seq = %s "
                "AND snapshot = %s AND owner_id IS NOT DISTINCT FROM %s",
                (run_id, record.seq, record.data, params["new_owner"]),
            ).fetchone()
        if row is None:
            return False
        if keeps:
            batch.held[run_id] = row[0]
            batch.fenced.discard(run_id)
        else:
            batch.held.pop(run_id, None)
            batch.hints.add(_hint_kind(record), run_id)
        return True

    def _claim(self, connection: Connection, write: Write, batch: _Batch) -> list[Claimed]:
        workflows, limit = write.payload
        # A claim whose caller gave up waiting must not take runs nobody would drive.
        if not write.take():
            return []
        rows: list[tuple[Any, ...]] = []
        if self._ambiguous:
            rows += connection.execute(
                _ADOPT,
                {"owner": self.owner_id, "known": sorted(batch.held), "workflows": workflows},
            ).fetchall()
            batch.adopted = True
        if len(rows) < limit:
            rows += connection.execute(
                _CLAIM, {"workflows": workflows, "limit": limit - len(rows), "owner": self.owner_id}
            ).fetchall()
        rows.sort(key=lambda row: (row[5], row[0]))  # oldest first
        claimed = []
        for row in rows:
            run_id = row[0]
            batch.held[run_id] = row[9]
            batch.fenced.discard(run_id)
            claimed.append(Claimed(record=_record(row), cancel_requested=bool(row[10])))
        return claimed

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

    def _prune(self, connection: Connection, payload: Any) -> int:
        ended_before, keep, statuses = payload
        doomed: list[str] = []
        if ended_before is not None:
            doomed += [
                row[0]
                for row in connection.execute(
                    "SELECT run_id FROM callboard_runs WHERE status = ANY(%s) AND updated_at < %s",
                    (statuses, ended_before),
                ).fetchall()
            ]
        if keep is not None:
            doomed += [
                row[0]
                for row in connection.execute(
                    "SELECT run_id FROM callboard_runs WHERE status = ANY(%s) "
                    "AND NOT (run_id = ANY(%s::text[])) ORDER BY updated_at DESC, run_id OFFSET %s",
                    (statuses, doomed, keep),
                ).fetchall()
            ]
        if not doomed:
            return 0
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
        return len(rows)


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
