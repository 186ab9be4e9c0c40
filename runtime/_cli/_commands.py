"""The commands of ``callboard``: ``runs ...``, ``start``, ``worker`` and ``workers list``.

Each command takes the parsed arguments (with ``args.db`` resolved), writes its output,
and returns the status of the run that decides its exit code, ``None`` when no run
does, or an :class:`ExitCode` when the command decides it itself (``worker``). A
command that cannot do what it was asked raises a :class:`CommandError` whose message is
the line for stderr; ``main`` turns the error's class into the exit code.

Every command opens the run store at ``--db`` through :func:`open_db`, the one place that
knows the kinds of location.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import select
import stat
import sys
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from runtime._cli._loader import load_workflow
from runtime._cli._render import (
    NO_TIME_LIMIT,
    TimeLimit,
    console_for,
    left_behind,
    one_line,
    page_summary,
    plain,
    print_json,
    progress_line,
    queue_plain,
    queues_summary,
    queues_table,
    run_view,
    runs_table,
    show,
    shown_text,
    status_text,
    suspended_line,
    terminal_safe,
    time_limit_plain,
    with_request,
    worker_plain,
    workers_summary,
    workers_table,
)
from runtime._errors import (
    InvalidInputError,
    RunAlreadyStartedError,
    RunTimeoutError,
    SnapshotFormatError,
    StoreError,
    StoreUnavailableError,
    summarize_errors,
)
from runtime._ids import check_run_id
from runtime._model import (
    SETTLED_STATUSES,
    UNFINISHED_STATUSES,
    RunStatus,
    WorkflowResult,
    WorkflowRunList,
)
from runtime._queries import get_run, list_runs
from runtime._run import Run
from runtime._run_input import validated_input
from runtime._runtime import DEFAULT_STOP_TIMEOUT, Runtime
from runtime._snapshot import decode, read_result, run_deadline, run_timeout_of
from runtime._stores._backup import restore_sqlite
from runtime._stores.base import (
    ResumeRequestStore,
    SharedStore,
    SnapshotRecord,
    SnapshotStore,
    provides,
    resumes_pending,
    served_workflows,
)
from runtime._stores.open import open_store
from runtime._stores.sqlite import SQLiteStore, path_from_url
from runtime._workflow import Workflow

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "Command",
    "CommandError",
    "ExitCode",
    "InterruptedRunError",
    "NotEndedError",
    "RunNotFoundError",
    "UsageError",
    "open_db",
    "print_page",
    "queues_list",
    "require_store",
    "runs_prune",
    "runs_show",
    "runs_watch",
    "shown_db",
    "start",
    "stop_if_no_reader",
    "workers_list",
]

DB_ENV: Final = "CALLBOARD_DB"
"""The environment variable that names the run store when ``--db`` is not given."""

DEFAULT_DB: Final = "callboard.db"
"""The run store when neither ``--db`` nor ``$CALLBOARD_DB`` names one (in the current folder)."""

_WAIT_INTERVAL: Final = 0.1
"""Seconds between two progress updates of ``start --wait`` (it wakes when the run ends)."""

_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")

_CONNINFO: Final = re.compile(
    r"\A\s*(host|hostaddr|port|dbname|user|password|service|sslmode|passfile)\s*=", re.IGNORECASE
)
"""The start of a libpq connection string of keywords, as psql takes (``host=db user=ada``)."""

# The pause between two looks at a run; a module attribute so that tests can
# step in between two polls without sleeping.
_sleep: Callable[[float], None] = time.sleep


class ExitCode(IntEnum):
    """The exit codes of the command."""

    OK = 0
    """The command did what it was asked; the run (if any) has neither failed nor been canceled."""

    FAILED = 1
    """The run failed or was canceled (or ``start --wait`` gave up waiting for it)."""

    USAGE = 2
    """Bad arguments, bad input, an unusable workflow or run store."""

    NOT_FOUND = 3
    """No run with that id."""

    INTERRUPTED = 130
    """Ctrl-C, as shells report SIGINT."""

    OUTPUT_CLOSED = 141
    """Whoever read the output stopped reading (``| head``), as shells report SIGPIPE."""


Command = Callable[[argparse.Namespace], RunStatus | ExitCode | None]
"""A command: the parsed arguments in; out, the status of the run that decides the exit
code, or the exit code itself."""


class CommandError(Exception):
    """A command cannot do what it was asked; the message is the line for stderr."""


class UsageError(CommandError):
    """Bad arguments or input, or no usable run store at ``--db``."""


class RunNotFoundError(CommandError):
    """No run with that id (or it was deleted while being watched)."""


class NotEndedError(CommandError):
    """``start --wait`` gave up: the run did not end within ``--timeout``."""


class InterruptedRunError(CommandError):
    """Ctrl-C stopped ``start`` while its run went on; the message says what becomes of it."""


# --- the run store -------------------------------------------------------------------


def open_db(location: str, *, readonly: bool, lease: float | None = None) -> SnapshotStore:
    """Open the run store that ``--db`` (or ``$CALLBOARD_DB``) names, for a command.

    The one place that knows the kinds of location: a SQLite file, as a path or a
    ``sqlite:///path`` URL; a ``postgresql://`` or ``postgres://`` URL, the
    PostgreSQL store of the extra ``callboard[postgres]``.

    Args:
        location: The path or URL.
        readonly: Open for reading only; the store must exist.
        lease: For a worker, the seconds without a heartbeat after which its runs
            go back to the queue (``None``: the store's default).

    Returns:
        The open store; the caller closes it (or hands it to a runtime, which does).

    Raises:
        UsageError: for a location of the wrong form, a lease the store refuses,
            or (reading) no run store there.
        StoreError: if the store exists but cannot be used (not a run store, a
            newer schema, not writable; a PostgreSQL server that cannot be
            reached, a failed login, the extra not installed).
    """
    if location == "memory":  # Runtime(store="memory"): a store no other process can see
        raise UsageError(
            "--db memory: a memory store lives and dies with its one process, so no command "
            "can reach it; give a SQLite file or a postgresql:// URL (a file named memory: "
            "./memory)"
        )
    if location.lower().startswith(_POSTGRES_SCHEMES):
        try:
            return open_store(location, readonly=readonly, lease=lease)
        except ValueError as exc:
            raise UsageError(f"--lease: {exc}") from exc
    if _CONNINFO.search(location):
        # psql's "host=db user=ada password=..." was taken for a file name: a reading
        # command echoed it (the password too), and start made a SQLite file so named.
        raise UsageError(
            "--db looks like a PostgreSQL connection string of keywords (host=... "
            "dbname=...), which names no file and is not read as one: give it as a URL, "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (a file of that name: ./NAME)"
        )
    try:
        path = path_from_url(location)
    except ValueError as exc:  # a malformed sqlite:// URL
        raise UsageError(f"--db: {exc}") from exc
    if readonly:
        try:
            return SQLiteStore(path, readonly=True)
        except StoreError as exc:
            if path.exists():
                raise
            raise UsageError(f"{exc} (give the run store with --db or ${DB_ENV})") from exc
    try:
        return SQLiteStore(path) if lease is None else SQLiteStore(path, lease=lease)
    except ValueError as exc:
        raise UsageError(f"--lease: {exc}") from exc


def shown_db(location: str) -> str:
    """The store's location as messages show it: without a URL's password.

    A URL of any scheme (a mistyped ``postgressql://`` too) is shown as the
    PostgreSQL store shows its own: a password with an unencoded ``@`` or ``/``
    is hidden whole.
    """
    try:
        urllib.parse.urlsplit(location)
    except ValueError:  # a URL too malformed to read a password from: show its scheme only
        return f"{location.partition(':')[0]}://..."
    if "://" not in location:
        return location
    from runtime._stores.postgres import redact

    return redact(location)


class _Reader:
    """The runs of a store opened read-only, as the reading commands look at them."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def __enter__(self) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._store.close()

    def get_run(self, run_id: str) -> WorkflowResult | None:
        return get_run(self._store, run_id)

    def resume_pending(self, run_id: str) -> bool:
        """Whether a resume request of the run waits in the store (one that takes them)."""
        if not provides(self._store, ResumeRequestStore):
            return False
        return cast("ResumeRequestStore", self._store).resume_pending(run_id)

    def resumes_pending(self, run_ids: Collection[str]) -> set[str]:
        """Which of the runs a resume request waits for, in one read of the store."""
        if not provides(self._store, ResumeRequestStore):
            return set()
        return resumes_pending(cast("ResumeRequestStore", self._store), run_ids)

    def awaits_a_worker(self, result: WorkflowResult) -> bool:
        """Whether the run waits for a worker that is not there: none live registers its workflow.

        Only for a run some runtime must drive on (pending, running, waiting), on a
        store whose runtimes keep worker rows: a worker whose lease ran out counts as
        gone, and a client runs nothing.
        """
        if result.status not in UNFINISHED_STATUSES or not isinstance(self._store, SharedStore):
            return False
        return result.workflow_id not in served_workflows(self._store.workers())

    def get_run_and_limit(self, run_id: str) -> tuple[WorkflowResult, TimeLimit] | None:
        """A run by id, and its time limit, from one read of its record."""
        check_run_id(run_id, lookup=True)
        record = self._store.load(run_id)
        result = None if record is None else read_result(record, record.workflow_id)
        if record is None or result is None:
            return None
        return result, time_limit(record)

    def list_runs(
        self,
        *,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        resource_id: str | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
    ) -> WorkflowRunList:
        return list_runs(
            self._store,
            workflow_id=workflow_id,
            status=status,
            limit=limit,
            offset=offset,
            resource_id=resource_id,
            from_date=from_date,
            to_date=to_date,
        )


def time_limit(record: SnapshotRecord) -> TimeLimit:
    """The run's ``run_timeout`` and deadline, as its snapshot keeps them.

    A value that is not a number of seconds (a damaged or foreign snapshot) is taken
    for none, as the runtime takes it.
    """
    snapshot = decode(record.data, record.run_id)
    deadline = run_deadline(snapshot)
    try:
        when = None if deadline is None else datetime.fromtimestamp(deadline, UTC)
    except (OverflowError, OSError, ValueError):  # past the calendar, or not a number
        when = None
    return TimeLimit(run_timeout_of(snapshot), when)


def _reader(db: str) -> _Reader:
    return _Reader(open_db(db, readonly=True))


def require_store(db: str) -> None:
    """Refuse a location that holds no run store, as the reading commands do.

    A command that writes calls it before it opens the store for writing, which
    would create one: a mistyped ``--db`` made an empty SQLite file (or the
    callboard tables in a PostgreSQL database), then said "no run" (exit 3).

    Raises:
        UsageError: if there is no run store at ``db`` (exit 2).
        StoreError: if there is one that cannot be used.
    """
    _reader(db).close()


@contextlib.contextmanager
def _opened(db: str, *, readonly: bool) -> Iterator[SnapshotStore]:
    store = open_db(db, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


# --- runs list (see _actions.runs_list), show, watch, prune ----------------------------


def requested_among(reader: Any, runs: Iterable[WorkflowResult]) -> set[str]:
    """Which of the suspended ``runs`` a resume request waits for: one read, none if none is."""
    suspended = [run.run_id for run in runs if run.status == RunStatus.SUSPENDED]
    if not suspended:
        return set()
    found: set[str] = reader.resumes_pending(suspended)
    return found


def print_page(
    page: WorkflowRunList, args: argparse.Namespace, requested: Collection[str] = ()
) -> None:
    """Print a page of runs as ``runs list`` does (a warning for unreadable ones on stderr).

    ``requested``: the suspended runs a resume request waits for (see
    :func:`plain_run`), which ``--json`` says as ``resume_requested``.
    """
    if page.unreadable:
        sys.stderr.write(
            f"callboard: warning: {len(page.unreadable)} run(s) could not be read and are "
            f"left out: {one_line(', '.join(page.unreadable))}\n"
        )
    if args.json:
        listed = plain(page)
        listed["runs"] = [
            with_request(shown, run, requested)
            for shown, run in zip(listed["runs"], page.runs, strict=True)
        ]
        print_json(listed)
        return
    console = console_for(sys.stdout)
    if page.runs:
        show(console, runs_table(page))
        show(console, Text(""))
    show(console, Text(page_summary(page, args.offset), style="dim"))


def runs_prune(args: argparse.Namespace) -> None:
    """``callboard runs prune``: delete ended runs by age and/or count; say how many."""
    if args.older_than is None and args.keep is None:
        raise UsageError("runs prune: give --older-than, --keep or both")
    require_store(args.db)  # the same checks and messages as the reading commands
    with _opened(args.db, readonly=False) as store:
        ended_before = None if args.older_than is None else time.time() - args.older_than
        deleted = store.prune(ended_before=ended_before, keep=args.keep, status=args.status)
    if args.json:
        print_json({"pruned": deleted})
        return
    show(console_for(sys.stdout), Text(f"pruned {deleted} run{'' if deleted == 1 else 's'}"))


def runs_show(args: argparse.Namespace) -> RunStatus:
    """``callboard runs show``: one run, its fields and steps, or JSON."""
    with _reader(args.db) as reader:
        try:
            found = reader.get_run_and_limit(args.run_id)
        except SnapshotFormatError as exc:
            # Its message may name the run already: said once, with where it is.
            why = str(exc).removeprefix(f"run {args.run_id!r} cannot be read: ")
            raise UsageError(
                f"run {args.run_id!r} in {shown_db(args.db)} cannot be read: {why}"
            ) from exc
        # A suspension a resume request waits for goes on once the worker takes it.
        requested = False
        if args.json and found is not None and found[0].status == RunStatus.SUSPENDED:
            requested = reader.resume_pending(args.run_id)
        unserved = found is not None and reader.awaits_a_worker(found[0])
    if found is None:
        raise RunNotFoundError(f"no run {args.run_id!r} in {shown_db(args.db)}")
    result, limit = found
    if args.json:
        shown = with_request(plain(result), result, {result.run_id} if requested else ())
        if result.status in UNFINISHED_STATUSES:
            shown["awaits_a_worker"] = unserved
        print_json({**shown, **time_limit_plain(limit)})
    else:
        show(console_for(sys.stdout), run_view(result, limit, awaits_a_worker=unserved))
    return result.status


_R = TypeVar("_R")


def stop_if_no_reader() -> None:
    """End a command that follows runs once whoever read its output went away.

    ``runs watch X | head -1`` of a suspended run, or ``runs list --follow | grep -m1``
    on a quiet store, wrote nothing more, so never met the closed pipe: it waited for
    ever. Between two looks, a pipe whose reader closed (the poll says so, as GNU
    ``tail -f`` asks it) ends the command as a write to it would, with exit 141.

    Raises:
        BrokenPipeError: if standard output is a pipe or socket no one reads any more.
    """
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's capture), no poll
        return
    poller.register(fd, 0)  # no event asked for: an error or a hang-up is told anyway
    if any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0)):
        raise BrokenPipeError("the reader of the output went away")


def through_outage(read: Callable[[], _R]) -> _R:
    """``read()``, tried again for as long as the store cannot be reached, as ``watch()`` does.

    For the commands that follow runs until they end (``runs watch``, ``runs list
    --follow``): a PostgreSQL server restarting under them is waited out (pauses
    doubling to a second), said once on standard error; Ctrl-C stops the wait.
    """
    pause = 0.05
    said = False
    while True:
        try:
            return read()
        except StoreUnavailableError as exc:
            if not said:
                print(
                    f"callboard: {exc}; reading again until it answers (Ctrl-C to stop)",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            _sleep(pause)
            pause = min(1.0, pause * 2)


def runs_watch(args: argparse.Namespace) -> RunStatus:
    """``callboard runs watch``: follow a run until it ends.

    A suspended run with a resume request waiting (recorded while it ran on) is
    said to wait for the worker that carries it out, not for a resume.
    """
    with _reader(args.db) as reader:
        limit = NO_TIME_LIMIT  # the last one read (a restart gives the run a new deadline)

        def fetch() -> WorkflowResult | None:
            nonlocal limit
            found = through_outage(lambda: reader.get_run_and_limit(args.run_id))
            if found is None:
                return None
            result, limit = found
            return result

        def pause() -> None:
            stop_if_no_reader()
            _sleep(args.interval)

        if fetch() is None:
            raise RunNotFoundError(f"no run {args.run_id!r} in {shown_db(args.db)}")
        # A suspended run is followed too: a resume from anywhere drives it on.
        result = _follow(
            console_for(sys.stdout),
            fetch,
            pause,
            None,
            _has_ended,
            view=lambda result: run_view(result, limit),
            requested=lambda result: through_outage(
                functools.partial(reader.resume_pending, result.run_id)
            ),
        )
    assert result is not None  # no deadline: _follow returns once the run has ended
    return result.status


def _has_ended(result: WorkflowResult) -> bool:
    return result.is_terminal


def _has_settled(result: WorkflowResult) -> bool:
    """Whether the run ended, or suspended (nothing moves it on until a resume)."""
    return result.status in SETTLED_STATUSES


def _follow(
    console: Console,
    fetch: Callable[[], WorkflowResult | None],
    pause: Callable[[], None],
    deadline: float | None,
    done: Callable[[WorkflowResult], bool],
    *,
    view: Callable[[WorkflowResult], RenderableType] = run_view,
    requested: Callable[[WorkflowResult], bool] = lambda _result: False,
) -> WorkflowResult | None:
    """Show a run's progress until ``done`` (its last result) or ``deadline`` passes (``None``).

    On a terminal the run's ``view`` is redrawn in place; elsewhere a line is printed
    each time the run changes, and the full view once it is done. ``requested`` tells
    whether a resume request of a run read suspended waits (a worker carries it out):
    asked only of a suspended run that is not ``done``.
    """
    if console.is_terminal:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                result = fetch()
                if result is None:
                    raise RunNotFoundError("the run was deleted while being watched")
                drawn: RenderableType = view(result)
                finished = done(result)
                if result.status == RunStatus.SUSPENDED:
                    # What it waits for, and the command that resumes it, as off a terminal.
                    asked = not finished and requested(result)
                    drawn = Group(drawn, suspended_line(result, requested=asked))
                live.update(terminal_safe(drawn), refresh=True)
                if finished:
                    return result
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                pause()
    last_progress: tuple[Any, ...] | None = None
    while True:
        result = fetch()
        if result is None:
            raise RunNotFoundError("the run was deleted while being watched")
        if done(result):
            show(console, view(result))
            return result
        suspended = result.status == RunStatus.SUSPENDED
        # A request dropped by its worker (its data refused) leaves the run as it was.
        asked = suspended and requested(result)
        progress = (
            result.status,
            asked,
            *((step, s.status, s.attempts) for step, s in result.steps.items()),
        )
        if progress != last_progress:
            # A suspended run waits for a person (or a worker): say so, and for what, once.
            line = suspended_line(result, requested=asked) if suspended else None
            show(console, progress_line(result) if line is None else line)
            last_progress = progress
        if deadline is not None and time.monotonic() >= deadline:
            return None
        pause()


# --- backup -------------------------------------------------------------------------


def backup(args: argparse.Namespace) -> None:
    """``callboard backup DEST``: a consistent copy of a SQLite store, while it is in use.

    See :meth:`runtime.SQLiteStore.backup`. A PostgreSQL store is PostgreSQL's to
    back up: the command says how, and copies nothing.
    """
    if args.db.lower().startswith(_POSTGRES_SCHEMES):
        raise UsageError(
            "callboard backup copies a SQLite run store; a PostgreSQL store is backed up "
            "with PostgreSQL's own tools, which copy it consistently while workers write: "
            "pg_dump --format=custom --file=FILE DBNAME (pg_restore puts it back), or "
            "pg_basebackup for the whole cluster"
        )
    with _opened(args.db, readonly=True) as store:
        assert isinstance(store, SQLiteStore)  # a location not PostgreSQL's is a file
        done = store.backup(args.destination, overwrite=args.force)
    if args.json:
        print_json(
            {
                "path": str(done.path),
                "runs": done.runs,
                "unfinished": done.unfinished,
                "bytes": done.size,
                "seconds": round(done.seconds, 3),
            }
        )
        return
    print(
        f"backed up {done.runs:,} run{'' if done.runs == 1 else 's'} "
        f"({done.unfinished:,} not ended) to {done.path}: {_size(done.size)} in "
        f"{done.seconds:.2f} s"
    )


def restore(args: argparse.Namespace) -> None:
    """``callboard restore BACKUP``: a backup put in the place of the store ``--db`` names.

    See :func:`runtime._stores._backup.restore_sqlite`. Refused while a runtime uses
    the store. A PostgreSQL store is restored with pg_restore.
    """
    if args.db.lower().startswith(_POSTGRES_SCHEMES):
        raise UsageError(
            "callboard restore puts a SQLite backup in place; a PostgreSQL store is "
            "restored with PostgreSQL's own tools: pg_restore --dbname DBNAME FILE (from "
            "pg_dump --format=custom)"
        )
    if args.db == "memory":
        open_db(args.db, readonly=True)  # says why no command reaches a memory store
    try:
        target = path_from_url(args.db)
    except ValueError as exc:
        raise UsageError(f"--db: {exc}") from exc
    done = restore_sqlite(Path(args.backup), target)
    if args.json:
        print_json(
            {
                "path": str(done.path),
                "runs": done.runs,
                "unfinished": done.unfinished,
                "removed": list(done.dropped),
                "seconds": round(done.seconds, 3),
            }
        )
        return
    removed = f" (removed the old {', '.join(done.dropped)})" if done.dropped else ""
    print(
        f"restored {done.runs:,} run{'' if done.runs == 1 else 's'} "
        f"({done.unfinished:,} not ended) from {args.backup} into {done.path}{removed}: "
        "a runtime started on it goes on with those not ended"
    )


def _size(count: int) -> str:
    """A file's size for a person: bytes, KB or MB (powers of 1,000, as ``ls -h --si``)."""
    if count < 1_000:
        return f"{count} bytes"
    if count < 1_000_000:
        return f"{count / 1_000:.1f} KB"
    return f"{count / 1_000_000:.1f} MB"


# --- workers list ---------------------------------------------------------------------


def workers_list(args: argparse.Namespace) -> None:
    """``callboard workers list``: the workers registered on the store, as a table or JSON.

    A store whose runtimes keep no worker rows (a SQLite file from before they did)
    has none to show: an empty list.
    """
    with _opened(args.db, readonly=True) as store:
        workers = store.workers() if isinstance(store, SharedStore) else []
    if args.json:
        print_json([worker_plain(worker) for worker in workers])
        return
    console = console_for(sys.stdout)
    if workers:
        show(console, workers_table(workers))
        show(console, Text(""))
    show(console, Text(workers_summary(workers), style="dim"))


# --- queues list ----------------------------------------------------------------------


def queues_list(args: argparse.Namespace) -> None:
    """``callboard queues list``: per queue and key, runs waiting, running and held; the limits.

    A store from before queues has none to show: an empty list.
    """
    with _opened(args.db, readonly=True) as store:
        stats = store.queue_stats() if isinstance(store, SharedStore) else []
    if args.json:
        print_json([queue_plain(stat) for stat in stats])
        return
    console = console_for(sys.stdout)
    if stats:
        show(console, queues_table(stats))
        show(console, Text(""))
    show(console, Text(queues_summary(stats), style="dim"))


# --- start ------------------------------------------------------------------------------


def start(args: argparse.Namespace) -> RunStatus | None:
    """``callboard start``: start a run of a workflow on a runtime in this process.

    Without ``--wait`` the command's job is done once the run has started, so no
    run status decides its exit code (``None``), whatever became of the run.

    With ``--json`` standard output carries the JSON and nothing else: whatever
    else is written to it while the command runs (a step's ``print()``, its
    ``ctx.logger`` lines under structlog's default configuration, the loaded
    module's own output) goes to standard error.
    """
    if not args.json:
        args.json_out = sys.stdout
        return _start(args)
    args.json_out = sys.stdout
    with _stdout_fd_to_stderr(args), contextlib.redirect_stdout(sys.stderr):
        return _start(args)


@contextlib.contextmanager
def _stdout_fd_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """While a ``--json`` command runs, file descriptor 1 is standard error's too.

    ``redirect_stdout`` moves Python's ``sys.stdout``; a child process a step starts
    writes to the descriptor itself, and its output came before the JSON. The JSON
    goes to the real standard output, kept aside meanwhile. (Where ``sys.stdout``
    has no descriptor, a test's capture, nothing but Python writes to it.)
    """
    try:
        real, errors = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        yield
        return
    sys.stdout.flush()
    kept = os.dup(real)
    json_out = open(kept, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    os.dup2(errors, real)
    args.json_out = json_out
    try:
        yield
    finally:
        json_out.flush()
        sys.stdout.flush()
        os.dup2(kept, real)
        os.close(kept)


def _start(args: argparse.Namespace) -> RunStatus | None:
    input_data = _parse_input(args.input)
    workflow = load_workflow(args.target)
    # Checked before the store is opened: input that does not fit made a store at a
    # mistyped --db, which no other command creates on a refusal.
    try:
        validated_input(workflow.plan.input_schema, input_data, "input_data", args.run_id or "")
    except InvalidInputError as exc:
        raise UsageError(
            f"--input does not fit {workflow.plan.input_schema.__name__}, the input schema of "
            f"workflow {workflow.id!r}: {summarize_errors(exc.errors)}"
        ) from exc
    store = open_db(args.db, readonly=False)
    try:
        runtime = Runtime(store=store).start()
    except BaseException:
        store.close()
        raise
    run: Run[Any, Any] | None = None
    try:
        bound = runtime.register(workflow)
        run = bound.create_run(args.run_id) if args.run_id else bound.create_run()
        try:
            run.start_async(input_data=input_data)
        except (InvalidInputError, RunAlreadyStartedError) as exc:
            run = None
            raise UsageError(str(exc)) from exc
        if args.wait:
            return _start_and_wait(args, bound, run, runtime)
        if not args.json:
            show(
                console_for(sys.stdout),
                shown_text(
                    f"started run {run.run_id} of workflow {bound.id} in {shown_db(args.db)}"
                ),
            )
        # The process is about to end, and its runs with it: give them the grace
        # period to finish; whatever is still going is halted, and stays in the
        # store for the next runtime that registers the workflow.
        runtime.stop(timeout=DEFAULT_STOP_TIMEOUT if args.timeout is None else args.timeout)
        result = bound.get_workflow_run_execution_result(run.run_id)
        assert result is not None, "a started run is always recorded"
        if args.json:
            print_json({"run_id": run.run_id, "status": result.status.value}, args.json_out)
        elif result.is_terminal:
            show(
                console_for(sys.stdout),
                Text.assemble(one_line(f"run {run.run_id} ended: "), status_text(result.status)),
            )
        else:
            show(console_for(sys.stdout), shown_text(left_behind(result, shown_db(args.db))))
        return None
    except KeyboardInterrupt:
        runtime.stop(timeout=0)  # Ctrl-C means now: halt, do not wait for the run
        if run is None:
            raise
        result = bound.get_workflow_run_execution_result(run.run_id)
        if result is None or result.is_terminal:
            raise
        raise InterruptedRunError(
            f"interrupted; {left_behind(result, shown_db(args.db))}"
        ) from None
    finally:
        runtime.stop()


def _start_and_wait(
    args: argparse.Namespace, workflow: Workflow[Any, Any], run: Run[Any, Any], runtime: Runtime
) -> RunStatus:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout

    def fetch() -> WorkflowResult | None:
        return workflow.get_workflow_run_execution_result(run.run_id)

    def pause() -> None:
        # Wakes as soon as the run ends or suspends, else after one interval.
        wait = _WAIT_INTERVAL
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        with contextlib.suppress(RunTimeoutError):
            run.wait(wait)

    def settled(result: WorkflowResult) -> bool:
        """Whether the run ended or suspended, as ``run.wait()`` (``--json``) judges it.

        A run read suspended while a resume request of it waits (recorded from another
        process while it ran on) goes on once this runtime's claimer takes the request.
        """
        if result.status != RunStatus.SUSPENDED:
            return _has_settled(result)
        try:
            run.wait(0)  # returns at once for a suspension no request waits for
        except RunTimeoutError:
            return False
        return True

    if args.json:
        result: WorkflowResult | None
        try:
            result = run.wait(args.timeout)
        except RunTimeoutError:
            result = None
    else:
        console = console_for(sys.stdout)
        show(
            console,
            shown_text(
                f"started run {run.run_id} of workflow {workflow.id} in {shown_db(args.db)}"
            ),
        )
        result = _follow(
            console,
            fetch,
            pause,
            deadline,
            settled,
            # Asked only of a suspension settled() said the run goes on from: a request waits.
            requested=lambda _result: True,
        )
    if result is None:
        runtime.stop(timeout=0)
        now = fetch()
        assert now is not None
        if _has_settled(now):  # it ended (or suspended) just as the wait gave up
            result = now
        else:
            if args.json:
                print_json(plain(now), args.json_out)
            raise NotEndedError(
                f"run {run.run_id} did not end within {args.timeout:g} seconds; "
                + left_behind(now, shown_db(args.db))
            )
    if args.json:
        print_json(plain(result), args.json_out)
    elif result.status == RunStatus.SUSPENDED:
        show(console_for(sys.stdout), shown_text(left_behind(result, shown_db(args.db))))
    return result.status


def _parse_input(text: str | None) -> Any:
    return None if text is None else read_json_argument(text, "--input")


def read_json_argument(text: str, option: str) -> Any:
    """The JSON an option gives: inline, ``@path`` for a file's, or ``-`` for standard input's.

    No JSON text begins with ``@`` or is ``-``, so neither form hides a value.

    Raises:
        UsageError: if the file cannot be read, or the text is not JSON.
    """
    where = option
    if text == "-":
        text, where = sys.stdin.read(), f"{option} - (standard input)"
    elif text.startswith("@"):
        path = text[1:]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"{option} @{path}: cannot read the file: {reason}") from None
        where = f"{option} @{path}"
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not JSON: {exc}") from None
    except _NotJSONError as exc:
        raise UsageError(f"{where}: {exc}") from None
    except RecursionError:
        raise UsageError(f"{where} is nested too deep to read") from None


class _NotJSONError(ValueError):
    """A value Python's ``json`` reads but JSON has not."""


def _no_constant(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: Python reads them, JSON has none.

    Taken, they reached the run as null (``{"value": NaN}`` ran with ``value`` null).
    """
    raise _NotJSONError(f"{name} is no JSON value (JSON has no NaN or Infinity)")


def _finite(text: str) -> float:
    """A JSON number as a float; one past a float's range (``1e999``) is refused, as NaN is."""
    number = float(text)
    if not math.isfinite(number):
        raise _NotJSONError(f"the number {text} is out of range (at most about 1.8e308)")
    return number
