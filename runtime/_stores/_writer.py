"""The group-commit writer: one thread that turns queued writes into transactions.

A store hands each write to :meth:`GroupCommitWriter.submit` and gets back a
:class:`Write`; the writer thread takes whatever has queued up while the last
transaction ran (up to ``batch`` writes) and gives the lot to the store's
``commit`` function, which runs them in one transaction and reports each
outcome through the write's ``done`` callback. A ``commit`` that returns
``False`` could not get the database's lock: the writes stay queued in memory
and the same batch is tried again, so nothing is lost while another process
holds the lock. ``idle`` is called after every commit, and every
``idle_interval`` seconds while nothing is queued, for the store's housekeeping
(a checkpoint while nothing waits). Leases are not the writer's business: a
store renews its worker's lease only when asked (``heartbeat()``).

A database that refuses every write for a reason an operator mends (a file made
read-only, privileges revoked from the store's role) is neither a fault of one
write nor a passing one: its writes wait and are tried again, as for a full
disk, and :class:`Refusals` keeps the time it has lasted, says it in the log
once, and tells the store's waiters once ``REFUSAL_PATIENCE`` has passed. A
write that admits something new (a start, a restart, a resume, a cancel, a
queue's limits, a worker's claim of runs) or that its caller asked for and waits on
(a delete, a prune, a worker's heartbeat: :data:`REFUSED_AT_ONCE`) is no such write:
nothing has committed it, and its caller can try again or shed load, so a refused
transaction fails it at once (:func:`refuse_at_once`) rather than keep its caller
waiting. So does a refused transaction to such a write queued behind it (the
writer's ``sift``): behind more refused writes than a batch takes, it never
got into a transaction to be refused.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, Literal

from runtime import _otel
from runtime._errors import StoreUnavailableError
from runtime._tracing import emit

__all__ = [
    "REFUSAL_PATIENCE",
    "REFUSED_AT_ONCE",
    "REFUSED_WAIT",
    "Done",
    "GroupCommitWriter",
    "Refusals",
    "Write",
    "WriteKind",
    "WriterStoppedError",
    "call",
    "committed",
    "ignore",
    "refuse_at_once",
    "refused_error",
    "resolve",
    "unrecorded",
]

WriteKind = Literal[
    "create",
    "save",
    "replace",
    "claim",
    "hand_back",
    "delete",
    "prune",
    "heartbeat",
    "join",
    "reap",
    "request_cancel",
    "request_resume",
    "drop_resume_request",
    "define_queue",
    "executing",
    "hint",
]
"""What a write does; the store's ``commit`` decides how."""

Done = Callable[[Any, BaseException | None], None]
"""How a write's outcome is reported: ``done(result, None)`` or ``done(None, error)``."""


class Write:
    """One queued write and how to report its outcome.

    A write its caller gave up waiting for is ``abandoned`` and skipped, so that
    a caller told "not recorded" is never recorded later. One the writer failed
    because the store refuses writes (see :func:`refuse_at_once`) is
    ``refused``: its error says so already, and its caller raises it as it is.
    """

    __slots__ = (
        "abandoned",
        "done",
        "earlier",
        "kind",
        "lock",
        "payload",
        "refused",
        "taken",
        "tried",
    )

    def __init__(self, kind: WriteKind, payload: Any, done: Done) -> None:
        self.kind: WriteKind = kind
        self.payload = payload
        self.done = done
        self.lock = threading.Lock()
        self.abandoned = False
        self.taken = False
        self.refused = False
        # A try of it failed as its transaction committed (the reply lost): it may have
        # happened, and a store tries it again knowing so (PostgreSQL's creates,
        # replaces, deletes and cancel requests then look for their own first try).
        self.tried = False
        # What a try of it did, for the try after one whose commit went unacknowledged
        # (``tried``): the runs a PostgreSQL prune deleted, which that try finds gone.
        self.earlier: Any = None

    def take(self) -> bool:
        """Called by the writer once its transaction committed: may it report success?"""
        with self.lock:
            self.taken = not self.abandoned
            return self.taken

    def abandon(self) -> bool:
        """Called by a caller that stops waiting: ``True`` if the write will not count."""
        with self.lock:
            self.abandoned = not self.taken
            return self.abandoned

    def release(self) -> None:
        """Called by the writer when the transaction that took the write did not commit."""
        with self.lock:
            self.taken = False


ABANDON_POLL: Final = 0.05
"""Seconds between two tries at abandoning a write that a transaction holds (``committed``)."""


def committed(
    write: Write, future: Future[Any], timeout: float, *, given_up: str, unfinished: str
) -> Any:
    """A write's outcome (its future's value, or its exception raised), waited for ``timeout``.

    For a write its caller must know committed, or not, before going on.
    Then the write is given up if it can be: not committed, and never to be.
    A transaction that holds it meanwhile gives it back if it fails, and it is
    given up then, at once, rather than waited for through its retries.

    Raises:
        StoreUnavailableError: ``given_up`` once the write was given up;
            ``unfinished`` if a transaction that took it still had not ended
            another ``timeout`` later (the write may yet commit).
    """
    try:
        return future.result(timeout)
    except TimeoutError:
        pass
    deadline = time.monotonic() + timeout
    while not write.abandon():
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailableError(unfinished)
        try:
            return future.result(min(ABANDON_POLL, left))
        except TimeoutError:
            continue
    raise StoreUnavailableError(given_up)


class WriterStoppedError(Exception):
    """A write handed to a writer once its stop was asked for: nothing will commit it.

    Internal: each store raises its own ``StoreError`` ("... is closed") instead.
    """


MAX_REST: Final = 0.005
"""The longest rest of a writer made with ``rest=True`` between two transactions, in seconds."""

_sleep = time.sleep  # a test replaces it to see the rests


class GroupCommitWriter:
    """A thread that commits queued writes in batches, through the store's functions.

    Args:
        name: The thread's name.
        commit: Runs a batch and reports each write's outcome; returns the
            writes it could not settle for a reason that passes (the database
            locked, the disk full), unreported, to be tried again after a pause
            that grows from ``retry_delay`` to ``max_retry_delay`` seconds.
        idle: Called after each committed batch with whether the queue is empty.
        give_up: Called at close with the writes that still could not commit.
        finish: Called last on the writer thread, to release what it holds.
        sift: Called after a batch could not be settled, before the pause, with
            the writes queued behind it (taken from the queue, in order): reports
            those the batch's failure settles too, and returns the others, in
            order, which wait their turn after the batch. For a store that
            refuses writes: the writes it fails at once are told so even while
            more writes than a batch wait before them. Without it, a write
            waits in the queue until a batch has room for it.
        idle_interval: Seconds between two calls of ``idle`` while nothing is
            queued (``None``: only after commits).
        batch: The most writes one transaction takes.
        retry_delay: The first pause before a batch is tried again.
        max_retry_delay: The longest pause between two tries.
        rest: After committing a batch of several writes (a sign of load), rest
            before the next transaction as long as that one took (at most
            ``MAX_REST`` seconds). For a store whose callers also take the
            database's lock (SQLite's creates on their own threads): under load
            the lock is then free at least half the time, where a writer that
            commits back to back would hold it almost always; writes that come
            meanwhile join the next batch. A run whose saves come one at a time
            never waits for it.
    """

    def __init__(
        self,
        *,
        name: str,
        commit: Callable[[list[Write]], list[Write]],
        idle: Callable[[bool], None],
        give_up: Callable[[list[Write]], None],
        finish: Callable[[], None],
        sift: Callable[[list[Write]], list[Write]] | None = None,
        idle_interval: float | None = None,
        batch: int,
        retry_delay: float = 0.01,
        max_retry_delay: float = 1.0,
        rest: bool = False,
    ) -> None:
        self._commit = commit
        self._rest = rest
        self._idle = idle
        self._give_up = give_up
        self._finish = finish
        self._sift = sift
        self._idle_interval = idle_interval
        self._batch = batch
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._wake = threading.Event()
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        # Writes taken from the queue by ``sift`` and kept, in order: they go into
        # batches before anything still queued. Only the writer thread touches it.
        self._behind: collections.deque[Write] = collections.deque()
        # Held to queue a write and to queue the stop: no write lands behind the stop,
        # where the thread, gone once it reached the stop, would leave it for ever.
        self._gate = threading.Lock()
        self._stopping = False
        self._writing = False  # writes taken from the queue and not yet settled
        self._committing_since = 0.0  # monotonic start of the commit under way; 0.0: none
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether writes are still taken: the thread runs and no stop was asked for."""
        return not self._stopping and self._thread.is_alive()

    def submit(self, kind: WriteKind, payload: Any, done: Done) -> Write:
        """Queue a write; its outcome reaches ``done`` from the writer thread.

        Raises:
            WriterStoppedError: if a stop was asked for: nothing is queued.
        """
        write = Write(kind, payload, done)
        with self._gate:
            if self._stopping:
                raise WriterStoppedError(kind)
            self._queue.put(write)
        return write

    def busy(self) -> bool:
        """Whether writes wait or are being committed (a test kit's time skipper waits then).

        A run's next step may wait for the commit of the snapshot announcing
        it: while the writer works, the run is not idle.
        """
        return self._writing or not self._queue.empty()

    def committing_for(self) -> float:
        """Seconds the commit under way has taken so far (``0.0`` while none is).

        A commit is one call of the store's ``commit`` function: a wait before
        trying again, after a lock that could not be had, is not one.
        """
        since = self._committing_since
        return time.monotonic() - since if since else 0.0

    def stop(self, timeout: float | None = None) -> None:
        """Commit what is queued, then end the thread (waiting up to ``timeout`` seconds)."""
        with self._gate:
            stopping, self._stopping = self._stopping, True
            if not stopping:
                self._queue.put(None)
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pending: list[Write] = []
        closing = False
        delay = self._retry_delay
        rest_until = 0.0  # no transaction before this (perf_counter), see ``rest``
        try:
            while not closing or pending or self._behind:
                if not pending and not self._behind and not closing:
                    try:
                        first = self._queue.get(timeout=self._idle_interval)
                    except queue.Empty:
                        self._idle(True)  # nothing came: housekeeping, no transaction
                        continue
                    if first is None:
                        closing = True
                    else:
                        self._writing = True
                        pending.append(first)
                if rest_until and not closing:
                    pause = rest_until - time.perf_counter()
                    if pause > 0:
                        _sleep(pause)
                closing = self._fill(pending) or closing
                if not pending:
                    continue
                meter = _otel.instruments()
                batch = len(pending)
                began = time.perf_counter()
                pending = self._timed_commit(pending)
                ended = time.perf_counter()
                rest_until = 0.0
                if self._rest and batch > 1:
                    rest_until = ended + min(ended - began, MAX_REST)
                if meter is not None:
                    # Writes left over could not get the database's lock: a busy try.
                    meter.commit_duration.record(
                        ended - began, {"callboard.store.busy": bool(pending)}
                    )
                if not pending:
                    delay = self._retry_delay
                    # Settled, and their callbacks called (those sifted out wait still).
                    self._writing = bool(self._behind)
                    self._idle(not self._behind and self._queue.empty())
                elif closing:
                    pending.extend(self._behind)
                    self._behind.clear()
                    self._give_up(pending)
                    pending = []
                else:
                    closing = self._sift_behind() or closing
                    # The writes left go first in the next try, after a pause.
                    self._wake.wait(delay)
                    delay = min(delay * 2, self._max_retry_delay)
        finally:
            self._finish()

    def _timed_commit(self, pending: list[Write]) -> list[Write]:
        """``commit(pending)``, its start kept for :meth:`committing_for`."""
        self._committing_since = time.monotonic()
        try:
            return self._commit(pending)
        finally:
            self._committing_since = 0.0

    def _sift_behind(self) -> bool:
        """Take what is queued through ``sift``, behind the batch; whether a stop was asked for.

        Each write goes through ``sift`` once: one it kept is of a kind it keeps
        (a save), and waits in ``_behind``, in order, for a batch with room.
        """
        if self._sift is None:
            return False
        queued: list[Write] = []
        stop = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True  # nothing is queued behind the stop (see ``_gate``)
                break
            queued.append(item)
        if queued:
            try:
                kept = self._sift(queued)
            except Exception:  # a fault of the store's: the writes not yet failed wait
                emit(logging.ERROR, "store_callback_failed", exc_info=True)
                kept = [write for write in queued if not write.refused]
            self._behind.extend(kept)
        return stop

    def _fill(self, pending: list[Write]) -> bool:
        """Add what waits to ``pending``, up to a batch; whether a stop was asked for.

        The writes that ``sift`` kept come first, then those still queued.
        """
        behind = self._behind
        while behind and len(pending) < self._batch:
            pending.append(behind.popleft())
        while len(pending) < self._batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            pending.append(item)
        return False


REFUSAL_PATIENCE: Final = 30.0
"""Seconds a store may refuse every write (or find no room for any) before those who wait
on its runs are told."""


REFUSED_WAIT: Final = 2.0
"""Seconds a caller waits on its write once a refusal outlasted the patience: a try or two."""


class Refusals:
    """How long a store has failed every write for a lasting reason, and who to tell.

    A lasting reason is a refusal (a read-only file or database, privileges
    revoked) or a full disk: either lasts until someone mends it. Used on the
    writer thread (``refused``, ``full``, ``failing``, ``accepted``);
    ``given_up`` may be read from any thread. Such a failure is said in the log
    when it begins (``store_write_refused``, ``store_disk_full``), once more
    when ``REFUSAL_PATIENCE`` has passed (``store_refuses_writes``,
    ``store_disk_stays_full``), and when writes are accepted again
    (``store_writes_accepted``): not at every try. From then on a caller's
    write waits ``REFUSED_WAIT`` at most (:meth:`patience`), and waits on runs
    are told (:meth:`listen`). A failure that passes by itself (the server
    unreachable, the file locked) shortens callers' waits alike once every
    write has failed for ``REFUSAL_PATIENCE``, but waits on runs wait it out.

    Args:
        store: The store as the log names it.
    """

    __slots__ = (
        "_failing_since",
        "_failure",
        "_full",
        "_given_up",
        "_listeners",
        "_listeners_lock",
        "_on_given_up",
        "_since",
        "_store",
    )

    def __init__(self, store: str) -> None:
        self._store = store
        self._since = 0.0  # monotonic start of the lasting failure under way; 0.0: none
        self._full = False  # whether its last try met a full disk, not a refusal
        self._failing_since = 0.0  # start of the failure of every write, for any reason
        self._failure = ""  # what the last failed try of it said
        self._given_up: str | None = None
        self._on_given_up: Callable[[], None] | None = None
        # Watches of runs (one each) told when a refusal outlasts the patience, as an
        # ordered set: one of thousands closed goes in O(1).
        self._listeners: dict[Callable[[str], None], None] = {}
        self._listeners_lock = threading.Lock()

    def set_on_given_up(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` (on the writer thread) when a refusal outlasts the patience."""
        self._on_given_up = callback

    def listen(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(why)`` (on the writer thread) each time a refusal outlasts the patience.

        For a watch of a run, which is woken to say it rather than wait on in
        silence. ``why`` is what :meth:`given_up` returns from then on.

        Returns:
            The call that stops it; calling it again does nothing.
        """
        with self._listeners_lock:
            self._listeners[listener] = None
        return functools.partial(self._forget, listener)

    def _forget(self, listener: Callable[[str], None]) -> None:
        with self._listeners_lock:
            self._listeners.pop(listener, None)

    def refused(self, reason: str, waiting: int) -> None:
        """The database refused a transaction of ``waiting`` writes for ``reason``."""
        self._failed(reason, waiting, full=False)

    def full(self, reason: str, waiting: int) -> None:
        """A transaction of ``waiting`` writes found no room for ``reason`` (the disk is full).

        Unlike a refusal, nothing is refused at once (:meth:`refusing` stays
        false): room may come back at the next try. Only once every try has
        failed so for ``REFUSAL_PATIENCE`` are callers and waits told.
        """
        self._failed(reason, waiting, full=True)

    def failing(self, reason: str = "") -> None:
        """A transaction failed for ``reason``, which passes by itself (the store says it).

        Once every try has failed for ``REFUSAL_PATIENCE``, a caller's write waits
        ``REFUSED_WAIT`` at most (:meth:`patience`): a start made through an outage
        is told within seconds, not after the whole timeout each; the runs, and
        waits on them, wait it out.
        """
        self._failure = reason
        if not self._failing_since:
            self._failing_since = time.monotonic()

    def committed_aside(self) -> None:
        """A caller committed a write of its own (a create on its thread): not every write fails.

        From any thread; the writer's refusal or full disk, if any, ends at its own next
        commit (:meth:`accepted`), which says so.
        """
        self._failing_since = 0.0

    def _failed(self, reason: str, waiting: int, *, full: bool) -> None:
        now = time.monotonic()
        self._full = full
        self._failure = reason
        if not self._failing_since:
            self._failing_since = now
        if not self._since:
            self._since = now
            emit(
                logging.WARNING,
                "store_disk_full" if full else "store_write_refused",
                store=self._store,
                waiting=waiting,
                error=reason,
                hint="the writes wait in memory and are tried again until "
                + ("there is room" if full else "the store takes them"),
            )
            return
        if self._given_up is None and now - self._since >= REFUSAL_PATIENCE:
            failing = "had no room for any write" if full else "refused every write"
            why = (
                f"the run store {self._store} has {failing} for "
                f"{now - self._since:.0f} s: {reason}; what it has not recorded waits in "
                "memory, and goes on once the store takes writes again"
            )
            self._given_up = why
            emit(
                logging.ERROR,
                "store_disk_stays_full" if full else "store_refuses_writes",
                store=self._store,
                waiting=waiting,
                error=reason,
                refused_for=round(now - self._since, 1),
            )
            callback = self._on_given_up
            if callback is not None:
                try:
                    callback()
                except Exception:
                    emit(logging.ERROR, "store_callback_failed", exc_info=True)
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(why)
                except Exception:
                    emit(logging.ERROR, "store_callback_failed", exc_info=True)

    def accepted(self) -> None:
        """A transaction committed: a refusal or full disk under way, if any, has ended."""
        self._failing_since = 0.0
        if self._since:
            emit(
                logging.WARNING,
                "store_writes_accepted",
                store=self._store,
                refused_for=round(time.monotonic() - self._since, 1),
            )
            self._since = 0.0
            self._full = False
            self._given_up = None

    def refusing(self) -> bool:
        """Whether a refusal is under way: the last transaction tried was refused.

        Not for a full disk, whose callers wait for room (up to :meth:`patience`).
        """
        return bool(self._since) and not self._full

    def patience(self, timeout: float) -> float:
        """How long a caller waits on its write: ``timeout``, or one more try once given up.

        A start made while the store has refused every write for long (or found
        no room for any, or failed every one for any reason) is told so within
        ``REFUSED_WAIT`` seconds, not after the whole ``timeout``.
        """
        since = self._failing_since
        if self._given_up is None and not (since and time.monotonic() - since >= REFUSAL_PATIENCE):
            return timeout
        return min(timeout, REFUSED_WAIT)

    def failing_for(self) -> str:
        """`` (every write has failed for N s)`` while every write has failed, else ``""``.

        For the error of a caller that gave up on its write: a wait shortened by
        :meth:`patience` says why it was short.
        """
        since = self._failing_since
        if not since:
            return ""
        return f" (every write has failed for {time.monotonic() - since:.0f} s)"

    def given_up(self) -> str | None:
        """Why waits on the store's runs are given up: its refusal outlasted the patience."""
        return self._given_up

    def lasting_failure(self) -> tuple[float, str] | None:
        """For how many seconds every write has failed, and what the last try said.

        ``None`` while writes go through.
        """
        since = self._failing_since
        return None if not since else (time.monotonic() - since, self._failure)


REFUSED_AT_ONCE: Final[frozenset[WriteKind]] = frozenset(
    {
        "create",
        "replace",
        "define_queue",
        "request_cancel",
        "request_resume",
        "delete",
        "prune",
        "claim",
        "hand_back",
        "reap",
        "heartbeat",
    }
)
"""Writes that a refused transaction fails at once: a start, a restart, a resume or a cancel
(a compare-and-set of a run's record, or a request to the worker that holds the run), and
a queue's limits kept for a start through it. Each admits something new that nothing has
committed, and its caller waits for it: told at once that the store refuses writes, it
can try again or shed load, where it waited the whole ``CREATE_TIMEOUT`` (a daemon's
request handler held 30 s). So are a run's delete and a prune's: their caller (a request
handler, ``callboard runs prune``, the pruner's pass) is told the same, nothing deleted,
where it waited that long to be told the delete was not done. So are a worker's claim and
hand-back of runs, and its reaping of dead workers' runs: its claimer waits on each, a
claim holding the lock that every start of the process takes to count its room (a claim
waiting out a refusal held each start that long), and a pass held up so long cancels no
run at its deadline meanwhile; told at once, the claimer tries again a second later.
So is a worker's heartbeat, where it goes through the writer (always on SQLite): its
lease thread waited out the write's timeout at each beat, a step's start that found the
lease old waited as long for its check, and a renewal came up to that late once the
refusal ended. Told at once, the lease thread tries again a second later, a step starts
as it does while the store is unreachable, and nothing is lost: the next heartbeat
stamps the time anew.
The runs' own writes (their snapshots) and a worker's join wait in memory instead, and
go on once the store takes writes again."""


def refuse_at_once(writes: list[Write], store: str, reason: str) -> list[Write]:
    """Fail the writes of :data:`REFUSED_AT_ONCE` of a refused transaction; return the others.

    Called on the writer thread once the transaction was rolled back (and its
    writes released): the writes failed here were not committed, and never
    will be. Their callers raise the error as it is (:attr:`Write.refused`).

    Args:
        writes: The writes of the refused transaction.
        store: The store as its errors name it.
        reason: What the database said.

    Returns:
        The writes to try again, in their order.
    """
    kept: list[Write] = []
    for write in writes:
        if write.kind in REFUSED_AT_ONCE:
            write.refused = True
            call(write.done, None, refused_error(store, reason, *unrecorded(write)))
        else:
            kept.append(write)
    return kept


def refused_error(
    store: str, reason: str, what: str, run_id: str | None = None
) -> StoreUnavailableError:
    """The error of a write that ``store`` refused for ``reason`` (the database's message).

    Args:
        store: The store as its errors name it ("the run store /srv/runs.db").
        reason: What the database said.
        what: What the write would have recorded, said as not recorded.
        run_id: The run the write was about, if any.
    """
    return StoreUnavailableError(
        f"{store} did not commit: it refuses writes for now (its last try: {reason}); "
        f"{what}: try again once it takes writes",
        run_id=run_id,
    )


def unrecorded(write: Write) -> tuple[str, str | None]:
    """What a write of :data:`REFUSED_AT_ONCE` failed at once leaves unrecorded, and its run."""
    payload = write.payload
    match write.kind:
        case "define_queue":
            return f"the limits of queue {payload.name!r} were not recorded", None
        case "request_cancel":
            return f"no cancel of run {payload!r} was recorded", payload
        case "request_resume":
            return f"no resume of run {payload[0]!r} was recorded", payload[0]
        case "create":
            return f"the run {payload[0].run_id!r} was not recorded", payload[0].run_id
        case "delete":
            return f"the run {payload!r} was not deleted", payload
        case "prune":
            return "the prune deleted no more runs (those it deleted before stay deleted)", None
        case "claim":
            return "no run was claimed", None
        case "hand_back":
            return "no run was handed back", None
        case "reap":
            return "no run of a dead worker was handed back", None
        case "heartbeat":
            return "the lease was not renewed", None
    return f"the new record of run {payload[0].run_id!r} was not stored", payload[0].run_id


def resolve(future: Future[Any]) -> Done:
    """A ``done`` callback that settles ``future`` with the write's outcome."""

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    return done


def ignore(_result: Any, _error: BaseException | None) -> None:
    """A ``done`` callback for writes nobody waits for."""
    return None


def call(done: Done, result: Any, error: BaseException | None) -> None:
    """Report an outcome; a failing callback is logged and the writer goes on."""
    try:
        done(result, error)
    except Exception:
        emit(logging.ERROR, "store_callback_failed", exc_info=True)
