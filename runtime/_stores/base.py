"""The store protocol: what every store of runs offers, and the record it keeps.

The registry actor is the store's writer for a run's updates; a run's first
(``pending``) record is created by ``start_async`` itself, so that the run is
recorded before the call returns. Reads may come from any thread. The stores
are :mod:`runtime._stores.memory` and :mod:`runtime._stores.sqlite`.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Final, Literal, NamedTuple, Protocol, runtime_checkable

from runtime._errors import StoreError
from runtime._model import SETTLED_STATUSES, TERMINAL_STATUSES
from runtime._queue import QueueLimits

__all__ = [
    "DEFAULT_LEASE",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_LEASE",
    "MIN_LEASE",
    "PRUNE_CHUNK",
    "RESUME_REQUESTS_READ",
    "Claimed",
    "DeadlineStore",
    "KeyedStore",
    "QueueStats",
    "ResumeRequest",
    "ResumeRequestStore",
    "ResumeRequested",
    "RunFencedError",
    "SharedStore",
    "SnapshotParts",
    "SnapshotRecord",
    "SnapshotStore",
    "WorkerInfo",
    "check_lease",
    "process_alive",
    "provides",
    "queue_stats",
    "refuse_upgrade_beside_older",
    "status_set",
    "supersedes",
]


class SnapshotParts(NamedTuple):
    """How a snapshot kept in parts changed since the record before it.

    A run actor encodes its snapshots in parts (format 4, see
    :class:`runtime._snapshot.IncrementalEncoder`): a head, one part per step
    record, per large value (input, carry, state...) and per finished foreach
    item, each checksummed on its own. A store that keeps parts apart writes
    only the head and the parts that changed; one that does not ignores this
    and stores :attr:`SnapshotRecord.data`, which always holds every part.

    Attributes:
        lineage: The encoder that made the record: a change is relative to
            that encoder's records only.
        base_seq: The ``seq`` of the record the change is relative to (the
            encoder's previous one), or ``None`` when every part is new: a
            store must then write them all.
        head: The first bytes of ``data``: the format's marker and the head
            part (the run's small fields and how many parts it has).
        changed: ``(key, part)`` of each part written or rewritten since
            ``base_seq`` (every part, without one), as it appears in ``data``.
        dropped: The keys of the parts gone since ``base_seq``.
    """

    lineage: int
    base_seq: int | None
    head: bytes
    changed: tuple[tuple[str, bytes], ...] = ()
    dropped: tuple[str, ...] = ()


class SnapshotRecord(NamedTuple):
    """One stored snapshot: the encoded bytes and the fields queries filter on.

    A named tuple rather than a dataclass: one is built at every transition of
    every run, and a tuple is the cheapest immutable value to build.

    Attributes:
        run_id: The run's id.
        workflow_id: The run's workflow.
        seq: The snapshot's sequence number within its run; higher is newer.
        status: The run's status in this snapshot.
        data: The snapshot as encoded by :func:`runtime._snapshot.encode`.
        created_at: When the run was started (epoch seconds).
        updated_at: When this snapshot was taken (epoch seconds).
        trace_id: The run's trace id.
        wake_at: When a ``waiting`` run's sleep ends (epoch seconds), else ``None``.
        parts: How the snapshot changed since the run's record before, for a
            store that writes only what changed (``None``: keep ``data`` whole).
        resource_id: The user or tenant the run belongs to (``create_run(resource_id=...)``),
            for the store's index: a store writes it with the run's first row and
            filters on it. Records read back from a SQL store leave it ``None``
            (the snapshot in ``data`` holds it).
        idempotency_key: The key the run was started with (see
            :class:`KeyedStore`); read by ``create`` only, ``None`` elsewhere.
        deadline: When a run that has not ended is canceled for its
            ``run_timeout`` (epoch seconds), once it began to execute; else
            ``None``. A shared store keeps it in a column of its own, so that
            whichever worker is alive finds the runs nobody drives whose time
            is up (see :class:`DeadlineStore`).
        taken: The suspensions (paths) this record resumes, on a shared store
            (see :meth:`ResumeRequestStore.request_resume`): written, it carries out
            their resume requests, which go with it, in the same transaction.
            A ``replace`` of such a record is refused while another caller's
            request waits for one of them (unless it carries that one out:
            ``requested``, the request's id). Read by shared stores only; empty
            elsewhere.
    """

    run_id: str
    workflow_id: str
    seq: int
    status: str
    data: bytes
    created_at: float
    updated_at: float
    trace_id: str
    wake_at: float | None = None
    parts: SnapshotParts | None = None
    queue: str | None = None
    queue_key: str | None = None
    priority: int = 0
    resource_id: str | None = None
    idempotency_key: str | None = None
    deadline: float | None = None
    taken: tuple[str, ...] = ()


def status_set(status: str | Sequence[str] | None) -> frozenset[str] | None:
    """The statuses a ``list_runs`` filter keeps: one, several, or ``None`` for any."""
    if status is None:
        return None
    if isinstance(status, str):
        return frozenset((status,))
    return frozenset(status)


_LETS_GO: Final = TERMINAL_STATUSES | SETTLED_STATUSES
"""Statuses of a record that ends its run or lets go of it (as a ``wake_at`` does too)."""


def supersedes(later: SnapshotRecord, earlier: SnapshotRecord) -> bool:
    """Whether a store's save may write ``later`` alone where ``earlier`` came just before it.

    Both are records of one run (``run_id``), saved one after the other in a
    batch. A store writes a saved record over the run's row only if it is newer
    (``seq``), of the same run (``created_at``: not one deleted since whose id
    another took), the row is not terminal, and the worker holding the row at
    that epoch wrote it (or nobody holds it). If ``later`` is newer, of the same
    run, and ``earlier`` neither ends the run nor lets go of it (a settled
    status, a ``wake_at``), writing ``earlier`` then ``later`` leaves the row as
    writing ``later`` alone does, and both or neither are written: ``earlier``
    need not be. A run saved again before its store's writer took the last save
    (a first step does not wait for a commit) then costs one row write, not two.
    A record left out is reported as the one that stands in for it is: it is
    never tried on its own, so a record the database would refuse on its own
    is not told so when a newer one of its run is written in its place.
    """
    return (
        later.seq > earlier.seq
        and later.created_at == earlier.created_at
        and earlier.status not in _LETS_GO
        and earlier.wake_at is None
        and not earlier.taken  # it carries out resume requests: see SnapshotRecord.taken
    )


@runtime_checkable
class SnapshotStore(Protocol):
    """What the runtime needs from a snapshot store.

    Attributes:
        durable: Whether records outlive the process. With a durable store a
            run waits for each snapshot to be committed before its next step,
            and runs left unfinished are resumed by the next runtime.
    """

    durable: bool

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; return ``False`` (and change nothing) if its id is taken.

        On a durable store the record is committed when this returns.
        """
        ...

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Store newer snapshots of existing runs; call ``on_commit`` once they are stored.

        A record whose ``seq`` is not above the stored one's, or for a run whose
        stored status is terminal, changes nothing: a run never goes back.
        ``on_commit`` is never called for records that are not stored: a write
        that fails for a passing reason (a full disk) is tried again until it
        is stored; one the store refuses for good calls ``on_error`` instead.
        """
        ...

    def replace(self, record: SnapshotRecord, expected_seq: int, *, reopen: bool = False) -> bool:
        """Store ``record`` only if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set for changes that race (two resumes of one suspended
        run, a resume and a cancel): exactly one caller wins. It fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs, or
        its stored status is terminal. With ``reopen`` (``run.restart()``) it
        is the other way round: it applies only to a run whose stored status
        is terminal, the one exception to a terminal status being final. On a
        durable store the record is committed when this returns ``True``.
        """
        ...

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``. Safe from any thread."""
        ...

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
        """Records newest first (by ``created_at``), filtered, and how many match in all.

        ``status`` is one status or several (a run matches any of them);
        ``resource_id`` keeps the runs started with that resource id.
        """
        ...

    def delete(self, run_id: str) -> bool:
        """Delete the record of a run that has ended; return whether it did.

        ``False`` for a run that is not there, and for one that has not ended
        (``success``, ``failed`` or ``canceled``): the status is checked in the
        same step as the delete, so a run restarted meanwhile is never deleted
        under its actor.
        """
        ...

    def prune(
        self,
        *,
        ended_before: float | None = None,
        keep: int | None = None,
        status: str | None = None,
    ) -> int:
        """Delete runs that have ended; return how many.

        Only ``success``, ``failed`` and ``canceled`` runs are ever deleted
        (with ``status``, only runs of that status): a run that is pending,
        running, waiting or suspended is kept whatever its age.

        Args:
            ended_before: Delete those whose last change is older than this
                epoch time.
            keep: Then keep at most this many of those left, the newest.
            status: Only runs of this terminal status.
        """
        ...

    def unfinished(self) -> list[SnapshotRecord]:
        """The newest records of runs that are ``pending``, ``running`` or ``waiting``."""
        ...

    def close(self) -> None:
        """Stop writing; records stay readable."""
        ...


PRUNE_CHUNK: Final = 1_000
"""The most runs a store's prune deletes in one transaction: a pass over a backlog of
100,000 ended runs held a SQLite store's writer 2.3 s in one, and every save waited."""


MAX_IDEMPOTENCY_KEY: Final = 512
"""The most characters an idempotency key may have (an index entry, not a payload)."""


@runtime_checkable
class KeyedStore(Protocol):
    """A store that remembers the idempotency key each run was started with.

    ``create`` of a record whose ``idempotency_key`` another run of the same
    workflow already holds changes nothing and returns ``False``, as for a
    taken run id; two creates racing with one key make one run (a unique
    index does the deciding on SQLite and PostgreSQL). The key is forgotten
    with its run, when the run is deleted or pruned.
    """

    def run_for_key(self, workflow_id: str, key: str) -> str | None:
        """The id of the run of ``workflow_id`` started with ``key``, or ``None``."""
        ...


MIN_LEASE: Final = 0.2
"""The shortest lease a store takes (seconds): a heartbeat must come within it."""

MAX_LEASE: Final = 86_400.0
"""The longest lease a store takes (seconds, a day): a worker killed with a longer one would
hold its runs past any wait worth having, and the stores compute with it."""


def check_lease(lease: float) -> float:
    """``lease`` as a float, if it is between :data:`MIN_LEASE` and :data:`MAX_LEASE` seconds.

    Raises:
        ValueError: if it is not (NaN and infinity included).
    """
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise ValueError(f"lease must be a number of seconds, got {lease!r}")
    if not MIN_LEASE <= lease <= MAX_LEASE:  # also refuses NaN
        raise ValueError(
            f"lease must be at least {MIN_LEASE:g} seconds and at most a day "
            f"({MAX_LEASE:g}), got {lease!r}"
        )
    return float(lease)


DEFAULT_LEASE: Final = 10.0
"""Seconds without a heartbeat after which a worker's runs go back to the queue, unless a
store is given another lease."""


class RunFencedError(StoreError):
    """A write of a run this store no longer holds: another worker claimed it since.

    Handed to a save's ``on_error``. The run's actor here must stop at once
    and record nothing: whoever holds the run now drives it on.
    """


class Claimed(NamedTuple):
    """A run :meth:`SharedStore.claim` took: its record, and whether a cancel waits for it."""

    record: SnapshotRecord
    cancel_requested: bool


class ResumeRequest(NamedTuple):
    """A resume of one suspension of a run, recorded for whoever drives the run.

    See :meth:`ResumeRequestStore.request_resume`. ``workflow_id`` and ``status`` are
    the run's as the store holds it now (``None``: the run is gone), and
    ``held`` whether this worker holds it.
    """

    run_id: str
    path: str
    data: bytes
    request_id: str
    workflow_id: str | None
    status: str | None
    held: bool


ResumeRequested = Literal["recorded", "requested", "changed"]
"""What :meth:`ResumeRequestStore.request_resume` says: the request is recorded; another request
for that suspension waits already; or the run changed since it was read (read it again)."""

RESUME_REQUESTS_READ: Final = 1_000
"""The most resume requests one look at them reads (the oldest first)."""


class WorkerInfo(NamedTuple):
    """One runtime registered on a shared store, as ``callboard workers list`` shows it.

    Attributes:
        worker_id: The runtime's owner id on the store.
        host: Its host name; in a PID namespace of its own (a container), with
            the namespace, as ``web-1[pidns:4026532201]`` (see :func:`this_host`).
        pid: Its process id (in that namespace).
        role: ``"both"``, ``"worker"`` or ``"client"``.
        workflows: The workflows it executes.
        concurrency: Its ``max_concurrent_runs`` (``None``: no limit).
        started_at: When it joined (epoch seconds).
        heartbeat_age: Seconds since its last heartbeat, by the store's clock.
        held: How many unfinished runs it holds now.
        lease: Its lease, in seconds: past it without a heartbeat, it is taken
            for dead, and the next reaper hands its runs to other workers.
    """

    worker_id: str
    host: str
    pid: int
    role: str
    workflows: tuple[str, ...]
    concurrency: int | None
    started_at: float
    heartbeat_age: float
    held: int
    lease: float

    @property
    def expired(self) -> bool:
        """Whether its lease has run out: it stopped renewing it (killed, stalled, cut off)."""
        return self.heartbeat_age > self.lease


class QueueStats(NamedTuple):
    """One queue and key of a store, as ``callboard queues list`` shows it.

    Attributes:
        queue: The queue's name.
        key: The partition (``None``: the queue's runs without a key).
        waiting: Runs waiting to execute (nobody holds them; due, if asleep).
        running: Runs executing now (held by a worker).
        limits: The queue's limits as last defined (``None``: never defined here).
        held: Runs no worker holds (their run ended, sleeps, is suspended or waits
            again) whose step body, let go of after a cancel or a timeout, runs on
            in a worker: each holds a slot of the queue, as a running one does,
            until the body returns.
    """

    queue: str
    key: str | None
    waiting: int
    running: int
    limits: QueueLimits | None
    held: int = 0


@runtime_checkable
class SharedStore(SnapshotStore, Protocol):
    """A durable store that several runtimes share: runs are claimed, held and fenced.

    Every runtime on the store is a worker with a row of its own, renewed by
    :meth:`heartbeat`; it holds a run from its claim (or from creating it
    held) until the run settles. A claim bumps the run's ``epoch``, and every
    later write of the run by this store is conditioned on its owner and
    epoch still being this store's: a worker that stalled past its lease, and
    whose runs :meth:`reap` handed to others meanwhile, changes nothing when
    it wakes (its saves fail with :class:`RunFencedError`).

    A run nobody holds is *queued*: pending, running or waiting (and, if
    waiting, due: its ``wake_at`` has passed), it is what :meth:`claim` takes.
    A save that settles a run (terminal or suspended) or puts it to sleep
    with a ``wake_at`` releases it: it becomes nobody's, and the sleeping one
    is claimable again once due. A save of a run this store does not hold
    applies only to a run nobody holds.

    Attributes:
        owner_id: This runtime's worker id on the store.
        lease: Seconds without a heartbeat after which this worker's runs go
            back to the queue.
    """

    owner_id: str
    lease: float

    def create(self, record: SnapshotRecord, *, hold: bool = True) -> bool:
        """Record a new run, held by this worker (epoch 1) or, with ``hold=False``, queued.

        A run with a queue whose ``max_queued`` runs wait is not recorded:
        :class:`~runtime._errors.QueueFullError`.
        """
        ...

    def define_queue(self, limits: QueueLimits) -> None:
        """Keep a queue's limits (replacing those it had), for every worker's claims."""
        ...

    def queue_stats(self) -> list[QueueStats]:
        """Every queue and key with runs waiting, running or held, and every queue defined."""
        ...

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
        """The compare-and-set of :meth:`SnapshotStore.replace`, also on a run nobody holds.

        It applies only if nobody holds the run, this worker neither: a run a
        worker holds is changed by its actor there (a cancel asks that worker;
        see :meth:`request_cancel`). With
        ``hold`` the run is then held here (its epoch bumped); without, it is
        left queued (an unfinished ``record``) or released (a settled one).
        With ``canceling`` the run's cancel is asked for in the same write (as
        :meth:`request_cancel` asks): a run this worker holds to call its hooks
        before it records the end, and that whoever takes over ends, should
        this worker die first. A record that resumes suspensions
        (:attr:`SnapshotRecord.taken`) is refused while a resume request waits
        for one of them, unless it carries that request out: ``requested`` is
        its ``request_id``, and then the record applies only while that very
        request still waits (it goes with it), not once it was carried out
        or dropped, nor for a later request of the same path. Every replace
        that applies counts as a change of
        the suspensions that :meth:`request_resume` looks at; one with
        ``reopen`` drops the run's resume requests.
        """
        ...

    def join(self, *, role: str, workflows: Sequence[str], concurrency: int | None) -> None:
        """Register (or update) this worker's row: what it runs, and its first heartbeat."""
        ...

    def heartbeat(self) -> bool:
        """Renew this worker's lease, by the store's clock.

        Returns ``False`` if its row was gone (reaped: its runs went back to
        the queue); the row is made again, and the runs it held are fenced off.
        """
        ...

    def claim(
        self,
        workflow_ids: Sequence[str],
        limit: int,
        skip: Collection[str] = (),
        busy: Collection[str] = (),
    ) -> list[Claimed]:
        """Take up to ``limit`` queued runs of these workflows, by rank (oldest first).

        Each is then held by this worker with its epoch bumped. Runs another
        claimer has locked are skipped, never waited for, and so are runs
        named in ``skip`` (ones this worker handed back, unable to drive them),
        unless their cancel was requested: those end on their claim. Runs
        named in ``busy`` are never taken: their actors still run in this
        process (a worker that was reaped while it stalled, and woke, waits
        for its actors of the runs it lost to let go of them first); each
        counts in its queue's limits, whatever its status. A store may take
        ``executing`` too (callboard's do; the claimer names it only to a
        ``claim`` that takes it): runs whose step body here outlived their
        hold on it (cancelled, timed out), which count so as well, but are
        taken as any other (one asleep meanwhile wakes). A run
        this store thought it held, which the claim found in the queue (this
        worker was reaped, and has not heard so yet), goes back to the queue
        instead, fenced off here. A run with a queue is taken only while its
        queue's limits allow (counted over every worker, inside the claim's
        transaction), and the runs of a queue go by :func:`~runtime._queue.rank`.
        """
        ...

    def hand_back(self, run_ids: Sequence[str]) -> int:
        """Give runs held here back to the queue at once, unchanged; how many were.

        For runs this worker cannot drive (no definition of their version is
        registered here), so that a worker that has it takes them, and their
        queue counts them as waiting, not executing. Runs this worker does not
        hold are left alone. A pending run's start is forgotten: its queue's
        rate limit counts its next claim as its first start.
        """
        ...

    def next_wake(self, workflow_ids: Sequence[str], skip: Collection[str] = ()) -> float | None:
        """The earliest ``wake_at`` of queued sleeping runs of these workflows (but ``skip``'s)."""
        ...

    def next_lapse(self, alive: Collection[str] = ()) -> float | None:
        """When the soonest lease runs out (epoch s) of a worker that holds runs, or ``None``.

        Workers named in ``alive`` are left out: a test kit's time skipper
        jumps to the lease of a worker that stopped renewing, never to that of
        one that renews at each jump.
        """
        ...

    def next_opening(self, workflow_ids: Sequence[str]) -> float | None:
        """When a rate window next frees a start (epoch s) in a queue where runs wait, or ``None``.

        Only queues where runs of these workflows wait to start count.
        """
        ...

    def reap(self) -> int:
        """Hand back to the queue the runs of workers whose lease ran out; how many runs.

        The dead workers' rows are deleted. A run's epoch is not changed here:
        the next claim bumps it.
        """
        ...

    def request_cancel(self, run_id: str) -> bool:
        """Mark an unfinished run for cancel, for whoever holds it; ``False`` if none is."""
        ...

    def cancel_requests(self) -> list[str]:
        """Runs held by this worker whose cancel was requested."""
        ...

    def held(self) -> int:
        """How many runs this worker holds now (by its own count)."""
        ...

    def holds(self, run_id: str) -> bool:
        """Whether this worker holds the run now (by its own count)."""
        ...

    def load_many(self, run_ids: Sequence[str]) -> list[SnapshotRecord]:
        """The newest records of these runs (unknown ones left out)."""
        ...

    def seqs(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The ``seq`` of each of these runs' newest record (unknown ones left out).

        A few bytes a run: what a poller reads to learn which runs changed
        before it loads their records.
        """
        ...

    def queued(self, workflow_ids: Sequence[str] | None = None) -> list[SnapshotRecord]:
        """Queued runs (nobody holds them), of these workflows or of all; oldest first."""
        ...

    def awaiting_others(
        self, workflow_ids: Sequence[str], limit: int
    ) -> list[tuple[str, str, str]]:
        """Queued runs of workflows other than these, oldest first: id, workflow and status.

        At most ``limit`` of them, and only those three fields: what a worker
        reads to say which runs wait for a workflow it does not run, however
        many wait.
        """
        ...

    def workers(self) -> list[WorkerInfo]:
        """Every worker registered on the store, with its heartbeat age and the runs it holds."""
        ...

    def abandon(self) -> None:
        """Close as a killed process would: the worker's row and held runs stay as they are.

        Its lease then runs out, and another worker's reaper hands its runs
        back. For a test kit's simulated crash; :meth:`close` is the orderly
        way, which hands them back at once.
        """
        ...

    def set_hint(self, hint: Callable[[str, str], None] | None) -> None:
        """Call ``hint(kind, run_id)`` when this store, or another process, changed something.

        Kinds: ``"queued"`` (a run became claimable), ``"settled"`` (a run
        ended or suspended), ``"cancel"`` (a cancel was requested),
        ``"resume"`` (a resume was requested, see
        :meth:`ResumeRequestStore.request_resume`). This
        store's own come once its commit is done; other processes' come as
        the store hears them (PostgreSQL: ``NOTIFY``; SQLite hears none).
        Hints only make things faster: whoever polls sees the same a little
        later.
        """
        ...


@runtime_checkable
class DeadlineStore(Protocol):
    """A shared store that finds the runs nobody drives whose ``run_timeout`` is up.

    The stores here keep each unfinished run's deadline (``SnapshotRecord.deadline``)
    in an indexed column, so that whichever worker is alive cancels a suspended,
    sleeping or queued run at its deadline, or one a dead worker left. A store of
    the user's without these methods still works: its runs nobody drives are
    then canceled only once a worker takes them (woken, resumed, recovered).
    """

    def next_deadline(
        self, workflow_ids: Sequence[str], skip: Collection[str] = ()
    ) -> float | None:
        """The soonest deadline of a run nobody holds, of these workflows (but ``skip``'s)."""
        ...

    def expired(
        self, workflow_ids: Sequence[str], limit: int, skip: Collection[str] = ()
    ) -> list[SnapshotRecord]:
        """Up to ``limit`` runs nobody holds, of these workflows, whose deadline has passed.

        Not ended (pending, running, waiting or suspended), soonest deadline
        first, by the store's clock; ``skip``'s left out.
        """
        ...


@runtime_checkable
class ResumeRequestStore(SharedStore, Protocol):
    """A shared store that records resumes for the worker that drives a run (``callboard``'s).

    A resume of one suspension of a run that runs on (another of its
    suspensions was resumed) is taken by the run's actor; from a process where
    no actor drives the run, it is recorded here as a *request*, which the
    worker that drives the run (or takes it over, or runs it once there is
    room) carries out. A shared store of the user's written before requests
    existed is not one: a resume of such a run from another process raises
    ``ResumeConflictError`` there, as it did.
    """

    def request_resume(
        self, run_id: str, path: str, data: bytes, *, seq: int, created_at: float
    ) -> ResumeRequested:
        """Record a resume of the suspension ``path`` of an unfinished run, for its driver.

        For a run that runs on while ``path`` waits, which a worker drives (or
        will, once claimed): that worker carries the request out (see
        :attr:`SnapshotRecord.taken`). ``seq`` and ``created_at`` are those of
        the record its caller read ``path`` waiting in; committed when this
        returns ``"recorded"``. Nothing is recorded if a request for ``path``
        waits already (``"requested"``), or if since that record the run ended,
        is gone, or any of its suspensions was resumed (``"changed"``).
        """
        ...

    def resume_requests(self, workflows: Collection[str] | None = None) -> list[ResumeRequest]:
        """Resume requests that a worker here may act on: of runs it holds first, then oldest.

        Those of runs this worker holds, of suspended runs (of ``workflows``,
        those this worker registers; ``None``: of any), and of runs that ended
        or are gone (at most :data:`RESUME_REQUESTS_READ`). Those of runs held
        here come first, and those of suspended runs no worker here can resume
        are left out: however many of them wait, they never crowd out those a
        worker here carries out.
        """
        ...

    def resume_pending(self, run_id: str) -> bool:
        """Whether a resume request of the run waits (a worker carries it out soon).

        A suspended run with one is as good as resumed: a wait goes on waiting.
        """
        ...

    def drop_resume_request(self, request: ResumeRequest) -> None:
        """Forget a resume request (that one, not a later one for the same suspension).

        Queued, not waited for: a request left is looked at again, and dropped again.
        """
        ...


def queue_stats(
    rows: Sequence[Sequence[Any]],
    limits: dict[str, QueueLimits],
    held: Sequence[Sequence[Any]] = (),
) -> list[QueueStats]:
    """Per queue and key: waiting, running, held and limits; a defined queue with no runs too.

    Args:
        rows: ``(queue, key, waiting, running)`` per queue and key.
        limits: Each queue's limits.
        held: ``(queue, key, held)`` per queue and key (see :class:`QueueStats`).
    """
    held_in = {(queue, key): int(count) for queue, key, count in held}
    stats = [
        QueueStats(
            queue=queue,
            key=key,
            waiting=int(waiting),
            running=int(running),
            limits=limits.get(queue),
            held=held_in.pop((queue, key), 0),
        )
        for queue, key, waiting, running in rows
    ]
    stats.extend(
        QueueStats(queue=queue, key=key, waiting=0, running=0, limits=limits.get(queue), held=n)
        for (queue, key), n in held_in.items()
    )
    seen = {stat.queue for stat in stats}
    stats.extend(
        QueueStats(queue=name, key=None, waiting=0, running=0, limits=queue_limits)
        for name, queue_limits in limits.items()
        if name not in seen
    )
    stats.sort(key=lambda stat: (stat.queue, stat.key or ""))
    return stats


def refuse_upgrade_beside_older(
    location: str, version: int, target: int, users: Sequence[tuple[str, int]]
) -> None:
    """Refuse to upgrade a store's schema while processes of an older callboard use it.

    Such a process read the schema when it opened the store, and never again:
    once upgraded, it would misread what this version writes (and fail runs it
    cannot read). ``users`` are the host and pid of each process whose lease
    has not run out; one on this host whose pid is gone does not count.

    Raises:
        StoreError: naming them, if any is left.
    """
    live = [(host, pid) for host, pid in users if process_alive(host, pid)]
    if not live:
        return
    shown = ", ".join(f"{host}:{pid}" for host, pid in live[:5])
    if len(live) > 5:
        shown += f" and {len(live) - 5} more"
    raise StoreError(
        f"the run store {location} has schema version {version} and is in use by "
        f"{len(live)} process(es) of an older callboard ({shown}); this callboard would "
        f"upgrade it to version {target}, which those cannot read: stop them first (one "
        "killed without a stop counts until its lease runs out), then start this one; it "
        "is left untouched"
    )


INITIAL_PID_NAMESPACE: Final = 0xEFFFFFFC
"""The inode of Linux's initial PID namespace (the kernel's ``PROC_PID_INIT_INO``): the
host's own, outside any container."""


def this_host() -> str:
    """This process's host as worker rows name it, so that its pids can be asked about here.

    The host name; in a PID namespace of its own (a container), the namespace too,
    as ``web-1[pidns:4026532201]``. Two containers can share a host name (both on
    the host's network, say) and a SQLite file, while each sees only its own
    processes: the other's pid, asked about here, would read as gone, and a live
    worker would be reaped and its runs run twice. Rows of another namespace are
    judged by their lease alone, as those of another host are.
    """
    name = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux, or no /proc: the host name alone, as ever
        return name
    return name if namespace == INITIAL_PID_NAMESPACE else f"{name}[pidns:{namespace}]"


def served_workflows(workers: Iterable[WorkerInfo]) -> set[str]:
    """The workflows some live worker among ``workers`` runs.

    A client runs nothing, and a worker whose lease ran out counts as gone: a run
    of any other workflow waits for a worker that is not there.
    """
    return {
        workflow_id
        for worker in workers
        if worker.role != "client" and not worker.expired
        for workflow_id in worker.workflows
    }


def process_alive(host: str, pid: int) -> bool:
    """Whether a worker's process may be alive: ``False`` only for one on this host that is gone.

    A process on another host (or in another PID namespace, see :func:`this_host`)
    cannot be asked; one here that another user owns is alive.
    """
    if host != this_host():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def resumes_pending(store: ResumeRequestStore, run_ids: Collection[str]) -> set[str]:
    """Which of the runs a resume request waits for, for a page of runs (``runs list``).

    One read on callboard's stores, which have ``resumes_pending``; one a run
    (:meth:`ResumeRequestStore.resume_pending`) on a store of the user's, which
    the protocol does not ask for it (a store written before it stays one).
    """
    many = getattr(store, "resumes_pending", None)
    if many is not None:
        return set(many(run_ids))
    return {run_id for run_id in dict.fromkeys(run_ids) if store.resume_pending(run_id)}


def provides(obj: object, protocol: type) -> bool:
    """Whether ``obj`` has every member of ``protocol`` (one of the store protocols here).

    As ``isinstance(obj, protocol)`` answers on Python 3.11, on every version:
    from 3.12 on, ``isinstance`` against a runtime-checkable protocol looks
    members up statically, so a store that hands them on through
    ``__getattr__`` (a wrapper that times or logs every call, say) would be
    refused there, or taken for a store of another kind, and accepted on 3.11.
    """
    return all(hasattr(obj, name) for name in _members(protocol))


@functools.cache
def _members(protocol: type) -> frozenset[str]:
    names: set[str] = set()
    for base in protocol.__mro__:
        if base is object or base.__module__ == "typing":
            continue
        declared = [*vars(base), *inspect.get_annotations(base)]
        names.update(name for name in declared if not name.startswith("_"))
    return frozenset(names)
