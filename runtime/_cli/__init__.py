"""The ``callboard`` command: look at the runs in a run store, start runs, and run workers.

::

    callboard runs list [--status S [S ...]] [--workflow W] [--limit N] [--offset N] [--json]
                        [--follow [--interval SECONDS]]
    callboard runs show RUN_ID [--json]
    callboard runs watch RUN_ID [--interval SECONDS] [--json]
    callboard runs cancel RUN_ID [--timeout SECONDS] [--json]
    callboard runs resume RUN_ID --data JSON [--step STEP] [--definition MODULE:ATTR] [--json]
    callboard runs delete RUN_ID [--json]
    callboard runs prune [--older-than AGE] [--keep N] [--status S] [--json]
    callboard start MODULE:ATTR [--input JSON] [--run-id ID] [--wait] [--timeout SECONDS] [--json]
    callboard worker MODULE:ATTR [MODULE:ATTR ...] [--concurrency N] [--lease SECONDS]
                     [--max-step-threads N] [--stop-timeout SECONDS]
                     [--health-port PORT [--health-host HOST]]
    callboard workers list [--json]
    callboard queues list [--json]
    callboard schedules list [--json]
    callboard schedules pause|resume|delete SCHEDULE_ID [--json]
    callboard backup DEST [--force] [--json]
    callboard restore BACKUP [--json]
    callboard check [--json]

Every command takes ``--db STORE``, by default ``$CALLBOARD_DB``, else ``./callboard.db``:
a SQLite file as a path or a ``sqlite:///path`` URL, or a ``postgresql://`` (or
``postgres://``) URL, which needs the extra ``callboard[postgres]``. The store is opened
in one place, :func:`~runtime._cli._commands.open_db`.

The reading commands (``runs list``, ``show``, ``watch``, ``workers list``, ``queues
list``, ``backup``) open the store read-only, so they never get in the way of the runtimes writing
to it. The commands that change it (``runs prune``, ``cancel``, ``resume``, ``delete``,
``schedules pause|resume|delete``) write between their transactions (see
:mod:`runtime._cli._actions`), and only to a store that exists: at a location with none
they say so as the reading commands do (exit 2), and create nothing. ``restore`` replaces
the file whole, refused while a runtime uses it. ``start`` runs a
workflow on a runtime of its own in this process; a run that outlives the command is not
lost: it stays in the store, and the next runtime on it that registers its workflow (a
``callboard worker``, say) resumes it.
``worker`` runs until SIGTERM, SIGINT or SIGHUP: a runtime with the role ``worker`` that takes
the queued runs of its workflows, whoever started them (see :mod:`runtime._cli._worker`).

Exit codes:

- 0: success (for ``runs show``: the run has neither failed nor been canceled; ``start
  --wait`` also returns 0 for a run that suspended, waiting for a resume); a worker
  stopped by SIGTERM or SIGHUP.
- 1: the run failed or was canceled, or ``start --wait`` gave up waiting (``--timeout``);
  a worker whose runtime stopped itself; an action the run's state refuses (resuming a
  run that is not suspended and has no suspension waiting, or a suspension another resume
  took first; deleting one that has not ended; a cancel not carried out within
  ``--timeout``).
- 2: a usage or input error: bad arguments, ``--input`` that is not JSON or does not fit
  the workflow's input schema, a workflow that cannot be imported, two workflows with
  one id for a worker, no usable run store at ``--db``. One line on stderr.
- 3: not found: no run (or schedule) with that id.
- 130: interrupted (Ctrl-C); a worker stopped by SIGINT.

The package: this module holds :func:`main` and the argument tree, and turns how a
command ended into its code; ``_commands`` holds the commands, the exit codes and the
opening of the store, ``_worker`` the worker and its signals, ``_loader`` the
``MODULE:ATTR`` loader, ``_render`` the tables, views and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn

from runtime._cli import _actions, _check, _commands, _schedules, _worker
from runtime._cli._commands import (
    DB_ENV,
    DEFAULT_DB,
    Command,
    ExitCode,
    InterruptedRunError,
    NotEndedError,
    RunNotFoundError,
    UsageError,
)
from runtime._cli._loader import LoadError
from runtime._cli._render import shown
from runtime._cli._schedules import ScheduleNotFoundError
from runtime._cli._worker import DEFAULT_CONCURRENCY
from runtime._errors import SnapshotFormatError, StoreError
from runtime._ids import check_run_id, unstorable_text
from runtime._model import TERMINAL_STATUSES, RunStatus
from runtime._queue import MAX_LIMIT
from runtime._runtime import DEFAULT_MAX_STEP_THREADS, DEFAULT_STOP_TIMEOUT
from runtime._stores.base import MAX_LEASE, MIN_LEASE

__all__ = ["DB_ENV", "DEFAULT_DB", "ExitCode", "main"]


_ERROR_EXIT_CODES: Final[Mapping[type[Exception], ExitCode]] = {
    UsageError: ExitCode.USAGE,
    LoadError: ExitCode.USAGE,
    StoreError: ExitCode.USAGE,
    SnapshotFormatError: ExitCode.USAGE,
    RunNotFoundError: ExitCode.NOT_FOUND,
    ScheduleNotFoundError: ExitCode.NOT_FOUND,
    NotEndedError: ExitCode.FAILED,
    _actions.RefusedError: ExitCode.FAILED,
    InterruptedRunError: ExitCode.INTERRUPTED,
}
"""The errors a command ends with, and the exit code of each; the message goes to stderr."""

_DID_NOT_SUCCEED: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELED})
"""Run statuses that a command returns with ``ExitCode.FAILED``."""

DEFAULT_INTERVAL: Final = 0.5
"""Seconds between two looks at a run that ``runs watch`` follows."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises instead of exiting, so ``main`` returns its code.

    A usage error is one line, as every error of the command is: the usage itself is
    ``--help``'s to show.
    """

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(shown(message))
        raise _ParserExit(status)

    def error(self, message: str) -> NoReturn:
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# --- entry ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``callboard`` command.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit code: 0 success, 1 the run failed or was canceled, 2 a usage
        or input error, 3 not found (130 when interrupted, 141 when the
        reader of the output went away).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _ParserExit as exc:
        return exc.status
    command: Command | None = getattr(args, "command", None)
    if command is None:  # "callboard" or "callboard runs" alone
        (args.parser_for_help if hasattr(args, "parser_for_help") else parser).print_help(
            sys.stderr
        )
        return int(ExitCode.USAGE)
    given = getattr(args, "db", None)
    if given is not None and not given.strip():
        # An unset shell variable (--db "$DB"): falling back to CALLBOARD_DB or
        # ./callboard.db would act on a store nobody named, deletes included.
        _error("--db is empty: name a SQLite file or a postgresql:// URL")
        return int(ExitCode.USAGE)
    args.db = _db_path(given)
    return int(_run(command, args))


def _run(command: Command, args: argparse.Namespace) -> ExitCode:
    """Run a command, and turn how it ended into the exit code (an error also into a line)."""
    try:
        status = command(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`callboard runs list | head`): stop quietly. Standard
        # output goes nowhere from now on, or flushing it at exit would raise again.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return ExitCode.OUTPUT_CLOSED
    except tuple(_ERROR_EXIT_CODES) as exc:
        _error(str(exc))
        return next(code for kind, code in _ERROR_EXIT_CODES.items() if isinstance(exc, kind))
    if isinstance(status, ExitCode):
        return status
    return ExitCode.FAILED if status in _DID_NOT_SUCCEED else ExitCode.OK


def _db_path(given: str | None) -> str:
    if given:
        return given
    return os.environ.get(DB_ENV) or DEFAULT_DB


_NEWLINES: Final = re.compile(r"[ \t]*\n[ \t\n]*")
"""A line break in an error message, with the blanks around it."""


def _error(message: str) -> None:
    # One line, whatever the message holds: a driver's (libpq's "...in URI: ...\n") or an
    # exception's from the user's module ("first line\nsecond line") left lines after it.
    # Only newlines go: any other control character is shown escaped, as ever.
    line = _NEWLINES.sub(" ", message.strip(" \t\n"))
    sys.stderr.write(f"callboard: error: {shown(line)}\n")
    sys.stderr.flush()


def _build_parser() -> argparse.ArgumentParser:
    # --db is accepted before or after the command; SUPPRESS keeps a subcommand's
    # absent --db from overwriting one given before it.
    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        "--store",  # the name Runtime(store=...) gives it
        dest="db",
        metavar="STORE",
        default=argparse.SUPPRESS,
        help=(
            "the run store: a SQLite file (a path or sqlite:///path), or a postgresql:// URL "
            f"(with callboard[postgres]) (default: ${DB_ENV}, else ./{DEFAULT_DB})"
        ),
    )
    parser = _Parser(
        prog="callboard",
        description=(
            "Look at the runs in a callboard run store, start runs, and run workers that "
            "take the runs others start."
        ),
        parents=[db],
        epilog=(
            "exit codes: 0 success, 1 the run failed or was canceled, 2 usage or input error, "
            "3 not found, 130 interrupted (worker: 0 after SIGTERM or SIGHUP, 130 after SIGINT)"
        ),
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    runs = commands.add_parser(
        "runs", help="list, show, watch, cancel, resume, delete and prune runs", parents=[db]
    )
    runs.set_defaults(parser_for_help=runs)
    run_commands = runs.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    _add_list(run_commands, db)

    prune = run_commands.add_parser(
        "prune",
        help="delete runs that have ended, by age or count",
        parents=[db],
        description=(
            "Delete runs that ended (success, failed, canceled) longer ago than --older-than, "
            "then all but the newest --keep of those left. Runs that are pending, running, "
            "waiting or suspended are never deleted. The file gives the space back."
        ),
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        metavar="AGE",
        help="e.g. 7d, 12h, 30m, 45s, or seconds",
    )
    prune.add_argument("--keep", type=_non_negative_int, metavar="N", help="keep the newest N")
    prune.add_argument(
        "--status",
        choices=sorted(str(status) for status in TERMINAL_STATUSES),
        help="only runs that ended with this status",
    )
    prune.add_argument("--json", action="store_true", help="print JSON")
    prune.set_defaults(command=_commands.runs_prune)

    show = run_commands.add_parser("show", help="one run: its steps, output or error", parents=[db])
    show.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=_commands.runs_show)

    watch = run_commands.add_parser(
        "watch",
        help="follow a run until it ends (succeeds, fails or is canceled)",
        parents=[db],
    )
    watch.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    watch.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two looks ({DEFAULT_INTERVAL})",
    )
    watch.add_argument(
        "--json",
        action="store_true",
        help="print one JSON event per line (a step's or the run's new status) instead",
    )
    watch.set_defaults(command=_actions.runs_watch)
    _add_actions(run_commands, db)

    start = commands.add_parser(
        "start",
        help="start a run of a workflow defined in a module",
        parents=[db],
        description=(
            "Import MODULE (the current folder is on the path, as for python -m; a path "
            "ending in .py works too), take the committed workflow at ATTR, and start a run "
            "on a runtime in this process. Without --wait, the run gets up to --timeout "
            f"seconds ({DEFAULT_STOP_TIMEOUT:g} by default) to end; if it has not, it stays "
            "in the store, and the next runtime on it that registers the workflow (a "
            "callboard worker, say) resumes it."
        ),
    )
    start.add_argument("target", metavar="MODULE:ATTR", help="e.g. myapp.flows:checkout")
    start.add_argument(
        "--input",
        metavar="JSON",
        help="the run's input, a JSON object; @PATH reads it from a file, - from standard input",
    )
    start.add_argument(
        "--run-id", metavar="ID", type=_run_id, help="the run's id (default: a new UUID)"
    )
    start.add_argument("--wait", action="store_true", help="show progress and the result")
    start.add_argument(
        "--timeout",
        type=_non_negative_timeout,
        metavar="SECONDS",
        help=(
            "the most seconds this command keeps the run going (default: until it ends "
            f"with --wait, {DEFAULT_STOP_TIMEOUT:g} without)"
        ),
    )
    start.add_argument("--json", action="store_true", help="print JSON")
    start.set_defaults(command=_commands.start)

    worker = commands.add_parser(
        "worker",
        help="run the runs of workflows from the store, whoever starts them, until stopped",
        parents=[db],
        description=(
            "Load each MODULE:ATTR workflow (as start does) and run, until SIGTERM, SIGINT or "
            "SIGHUP (unless started under nohup), "
            "a runtime with the role 'worker' on the store: it takes the queued runs of these "
            "workflows, whoever started them, up to --concurrency at once, and starts none. "
            "It says on stderr, in one line, its worker id, host, pid, workflows and "
            "concurrency. The first signal stops it taking runs and gives those in "
            "progress --stop-timeout seconds to end; those still going then, or at a second "
            "signal, go back to the queue, for any worker to resume from their last "
            "completed step. Exit code 0 after SIGTERM or SIGHUP, 130 after SIGINT (Ctrl-C)."
        ),
    )
    worker.add_argument(
        "targets",
        metavar="MODULE:ATTR",
        nargs="+",
        help=(
            "the workflows to run, e.g. myapp.flows:checkout (each once; several "
            "versions of one id are registered in the order given)"
        ),
    )
    worker.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"the most runs held at once; the others wait in the store ({DEFAULT_CONCURRENCY})",
    )
    worker.add_argument(
        "--lease",
        type=_lease,
        metavar="SECONDS",
        help=(
            "seconds without a heartbeat after which other workers take this one's runs "
            "(the store's default: 10)"
        ),
    )
    worker.add_argument(
        "--max-step-threads",
        type=_positive_int,
        default=DEFAULT_MAX_STEP_THREADS,
        metavar="N",
        help=f"the most threads running sync step bodies at once ({DEFAULT_MAX_STEP_THREADS})",
    )
    worker.add_argument(
        "--stop-timeout",
        type=_non_negative_timeout,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="SECONDS",
        help=(
            "at the first signal, the most seconds runs in progress get to end "
            f"({DEFAULT_STOP_TIMEOUT:g})"
        ),
    )
    worker.add_argument(
        "--health-port",
        type=_port,
        metavar="PORT",
        help=(
            "answer health probes over HTTP on this port: /livez (200 while it runs), "
            "/readyz (200 while it can record runs), 503 otherwise, with the health as "
            "JSON (0: a free port, named in the started line)"
        ),
    )
    worker.add_argument(
        "--health-host",
        default="0.0.0.0",
        metavar="HOST",
        help="the address the health port listens on (0.0.0.0: every one)",
    )
    worker.set_defaults(command=_worker.worker)

    workers = commands.add_parser("workers", help="list the workers on the store", parents=[db])
    workers.set_defaults(parser_for_help=workers)
    worker_commands = workers.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=_Parser
    )
    workers_listing = worker_commands.add_parser(
        "list",
        help="each worker: id, host, pid, role, workflows, concurrency, heartbeat, runs held",
        parents=[db],
        description=(
            "The runtimes registered on the store (callboard workers and every other "
            "runtime on it): id, host, pid, role, workflows, concurrency, seconds since "
            "their last heartbeat, and the runs they hold now."
        ),
    )
    workers_listing.add_argument("--json", action="store_true", help="print JSON")
    workers_listing.set_defaults(command=_commands.workers_list)

    _add_queues(commands, db)
    _add_schedules(commands, db)
    _add_backup(commands, db)
    return parser


def _add_backup(commands: Any, db: argparse.ArgumentParser) -> None:
    """``callboard backup``."""
    backup = commands.add_parser(
        "backup",
        help="copy a SQLite run store while it is in use",
        parents=[db],
        description=(
            "Copy the SQLite run store to DEST as it is at one moment, while runtimes go on "
            "writing to it (copying the file with cp may miss what its -wal file holds). "
            "The copy is checked and synced before it takes the name DEST, so a copy that "
            "fails leaves nothing there. A runtime opened on the copy goes on with its "
            "unfinished runs, running again the steps they ran after the moment of the "
            "copy. A PostgreSQL store is backed up with pg_dump."
        ),
    )
    backup.add_argument("destination", metavar="DEST", help="the new file (its folder must exist)")
    backup.add_argument("--force", action="store_true", help="replace a file at DEST (atomically)")
    backup.add_argument("--json", action="store_true", help="print JSON")
    backup.set_defaults(command=_commands.backup)

    restore = commands.add_parser(
        "restore",
        help="put a backup in the place of a SQLite run store nobody uses",
        parents=[db],
        description=(
            "Put a copy of BACKUP (a file callboard backup made) in the place of the SQLite "
            "run store --db names, once no runtime uses it: refused while a worker row's "
            "lease has not run out. The store's old -wal, -shm and -journal files go with "
            "it (SQLite would take them for the restored file's own); the copy is checked "
            "and synced before it takes the store's name. A runtime started on it goes on "
            "with the runs not ended. A PostgreSQL store is restored with pg_restore."
        ),
    )
    restore.add_argument("backup", metavar="BACKUP", help="the backup to restore")
    restore.add_argument("--json", action="store_true", help="print JSON")
    restore.set_defaults(command=_commands.restore)

    checking = commands.add_parser(
        "check",
        help="look a store over: its file, runs, unreadable runs and workers",
        parents=[db],
        description=(
            "Read the store and say what is wrong with it: for a SQLite file, whether "
            "SQLite finds it whole (PRAGMA quick_check) and whether it lies on a network "
            "file system; the runs by status; the runs that cannot be read (each decoded); "
            "workers past their lease that still hold runs; queued runs that no live worker "
            "registers the workflow of. Exit 0 if nothing is wrong, 1 if something is."
        ),
    )
    checking.add_argument("--json", action="store_true", help="print JSON")
    checking.set_defaults(command=_check.check)


def _add_queues(commands: Any, db: argparse.ArgumentParser) -> None:
    """``callboard queues list``."""
    queues = commands.add_parser(
        "queues", help="list the queues of the store and their limits", parents=[db]
    )
    queues.set_defaults(parser_for_help=queues)
    queue_commands = queues.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=_Parser
    )
    queues_listing = queue_commands.add_parser(
        "list",
        help="each queue and key: runs waiting, running, held, and the limits",
        parents=[db],
        description=(
            "Per queue and key: the runs waiting to execute, the runs executing now (held "
            "by a worker), the slots held by step bodies their runs let go of (cancelled "
            "or timed out, a sync body runs on until it returns), and the queue's limits: "
            "concurrency, per key, rate, max queued."
        ),
    )
    queues_listing.add_argument("--json", action="store_true", help="print JSON")
    queues_listing.set_defaults(command=_commands.queues_list)


def _add_list(run_commands: Any, db: argparse.ArgumentParser) -> None:
    """``runs list``."""
    listing = run_commands.add_parser("list", help="list runs, newest first", parents=[db])
    listing.add_argument(
        "--status",
        nargs="+",
        action="extend",
        metavar="STATUS",
        help=(
            "only runs with one of these statuses (several: --status failed canceled, or "
            f"failed,canceled): {', '.join(status.value for status in RunStatus)}"
        ),
    )
    listing.add_argument(
        "--workflow",
        type=_name("a workflow id"),
        metavar="WORKFLOW_ID",
        help="only runs of this workflow",
    )
    listing.add_argument(
        "--resource-id",
        type=_name("a resource id"),
        metavar="RESOURCE_ID",
        help="only runs started for this user or tenant",
    )
    listing.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help="only runs started at or after WHEN: an age (30m, 12h, 7d: that long ago) or a "
        "date and time (2026-12-01, 2026-12-01T09:30, in local time unless it has an offset)",
    )
    listing.add_argument(
        "--until",
        type=_moment,
        metavar="WHEN",
        help="only runs started at or before WHEN (as --since)",
    )
    listing.add_argument("--limit", type=_positive_int, default=50, help="at most N runs (50)")
    listing.add_argument("--offset", type=_non_negative_int, default=0, help="skip N runs")
    listing.add_argument(
        "--json", action="store_true", help="print JSON (with --follow: one run per line)"
    )
    listing.add_argument(
        "--follow",
        action="store_true",
        help="then keep looking, and print a line for each run that appears or changes, "
        "until interrupted",
    )
    listing.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"with --follow: seconds between two looks ({DEFAULT_INTERVAL})",
    )
    listing.set_defaults(command=_actions.runs_list)


def _add_actions(run_commands: Any, db: argparse.ArgumentParser) -> None:
    """The commands that act on one run: ``runs cancel``, ``resume`` and ``delete``."""
    cancel = run_commands.add_parser(
        "cancel",
        help="cancel a run (pending, running, waiting or suspended)",
        parents=[db],
        description=(
            "Cancel a run. One no runtime drives (suspended, queued, asleep) is cancelled "
            "here at once, without its workflow's hooks (this command does not load the "
            "workflow's code); one a runtime drives is asked to cancel, and that runtime "
            "carries it out (its hooks run there). Exit 0 once the run is canceled, or if it "
            "had already ended (it says so)."
        ),
    )
    cancel.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    cancel.add_argument(
        "--timeout",
        type=_positive_timeout,
        default=_actions.DEFAULT_CANCEL_TIMEOUT,
        metavar="SECONDS",
        help=(
            "the most seconds to wait for the runtime that drives the run to carry out the "
            f"cancel ({_actions.DEFAULT_CANCEL_TIMEOUT:g})"
        ),
    )
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(command=_actions.runs_cancel)

    resume = run_commands.add_parser(
        "resume",
        help="resume a suspended run (or a suspension that waits while its run runs on)",
        parents=[db],
        description=(
            "Record the resume of a suspended run (as run.resume() does: of two racing "
            "resumes one wins) and leave it queued: the next runtime on the store that "
            "registers its workflow (a callboard worker, say) runs it on. A suspension that "
            "waits while its run runs on (another foreach item or parallel member was "
            "resumed) gets a resume request instead, which the worker that drives the run "
            "carries out. With --definition the data is checked against the step's "
            "resume_schema first; without, data that does not fit fails the run when the "
            "step runs (a request's is refused by the worker, and the suspension waits on)."
        ),
    )
    resume.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    resume.add_argument(
        "--data",
        metavar="JSON",
        required=True,
        help="the resume data, as JSON; @PATH reads it from a file, - from standard input",
    )
    resume.add_argument(
        "--step", metavar="STEP", help="the suspended step (needed when several are)"
    )
    resume.add_argument(
        "--definition",
        metavar="MODULE:ATTR",
        help="the run's workflow, to check --data against the step's resume_schema",
    )
    resume.add_argument("--json", action="store_true", help="print JSON")
    resume.set_defaults(command=_actions.runs_resume)

    delete = run_commands.add_parser("delete", help="delete a run that has ended", parents=[db])
    delete.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    delete.add_argument("--json", action="store_true", help="print JSON")
    delete.set_defaults(command=_actions.runs_delete)


def _add_schedules(commands: Any, db: argparse.ArgumentParser) -> None:
    """``callboard schedules list|pause|resume|delete``."""
    schedules = commands.add_parser(
        "schedules", help="list, pause, resume and delete cron schedules", parents=[db]
    )
    schedules.set_defaults(parser_for_help=schedules)
    schedule_commands = schedules.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=_Parser
    )
    schedules_listing = schedule_commands.add_parser(
        "list",
        help="each schedule: workflow, cron, time zone, state, next fire time, last run",
        parents=[db],
    )
    schedules_listing.add_argument("--json", action="store_true", help="print JSON")
    schedules_listing.set_defaults(command=_schedules.schedules_list)
    for verb, command, what in (
        ("pause", _schedules.schedules_pause, "pause a schedule: no runtime fires it"),
        ("resume", _schedules.schedules_resume, "resume a schedule from its next tick"),
        ("delete", _schedules.schedules_delete, "delete a schedule (its runs are kept)"),
    ):
        changing = schedule_commands.add_parser(verb, help=what, parents=[db])
        changing.add_argument("schedule_id", metavar="SCHEDULE_ID", type=_name("a schedule id"))
        changing.add_argument("--json", action="store_true", help="print JSON")
        changing.set_defaults(command=command)


def _number(kind: Callable[[str], Any], check: Callable[[Any], bool], what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_MOST: Final = 2**63 - 1  # what a store can count to
_positive_int = _number(int, lambda value: 1 <= value <= _MOST, "a whole number from 1 to 2**63-1")
_non_negative_int = _number(
    int, lambda value: 0 <= value <= _MOST, "a whole number from 0 to 2**63-1"
)
# A worker's concurrency is kept in the store as its capacity (PostgreSQL's integer): the
# runtime refuses more, and past argparse that was a traceback with exit 1.
_concurrency = _number(
    int, lambda value: 1 <= value <= MAX_LIMIT, f"a whole number from 1 to {MAX_LIMIT:,}"
)


def _port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: one the system picks)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _run_id(text: str) -> str:
    """A run id as given on the command line: UTF-8 text, not empty, not too long to store."""
    try:
        return check_run_id(text)
    except ValueError:
        why = "is empty" if not text else unstorable_text(text)
        raise argparse.ArgumentTypeError(f"{_refused(text)} is not a run id: it {why}") from None


def _name(what: str) -> Callable[[str], str]:
    """A workflow, resource or schedule id on the command line: non-empty UTF-8 text."""

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        problem = unstorable_text(text)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{_refused(text)} is not {what}: it {problem}")
        return text

    return parse


def _refused(text: str) -> str:
    """An id the command refuses, as its one-line message shows it: cut short when long.

    Bytes that are not UTF-8 reach Python as lone surrogates: they are shown as bytes.
    A refused id is echoed whole no more: a 5,000-character one made a 5,000-character
    line that buried the reason (and said "not valid UTF-8" of one merely too long).
    """
    value: str | bytes = text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with contextlib.suppress(UnicodeEncodeError):  # a surrogate no byte decodes to
            value = text.encode("utf-8", "surrogateescape")
    if len(value) <= _SHOWN_ID:
        return repr(value)
    return f"{value[:_SHOWN_ID]!r}... ({len(text):,} characters)"


_SHOWN_ID: Final = 60
"""The most characters (or bytes) of a refused id its message shows."""


_A_DAY: Final = 86400.0
"""The most seconds an ``--interval`` or a ``--lease`` may be."""

# An interval or a lease is slept or waited on: it must be a finite number of seconds,
# and one that ``time.sleep`` takes (inf or 1e12 overflowed it, with a traceback).
_interval = _number(
    float,
    lambda value: 0 < value <= _A_DAY,
    f"a number of seconds above 0 and at most {_A_DAY:g} (a day)",
)
# A lease within the store's own bounds: past argparse, 0.1 was refused by the store
# with other words than 0 was here.
_lease = _number(
    float,
    lambda value: MIN_LEASE <= value <= MAX_LEASE,
    f"a number of seconds from {MIN_LEASE:g} to {MAX_LEASE:g} (a day)",
)
# A timeout may be inf: wait for ever. NaN is no number of seconds, and is refused.
_positive_timeout = _number(
    float, lambda value: value > 0, "a number of seconds above 0 (inf: no limit)"
)
_non_negative_timeout = _number(
    float, lambda value: value >= 0, "a number of seconds, 0 or more (inf: no limit)"
)

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _moment(text: str) -> datetime:
    """An age (``30m``: that long ago) or an ISO 8601 date and time (local without an offset)."""
    try:
        seconds = _duration(text)
    except argparse.ArgumentTypeError:
        pass
    else:
        try:
            return datetime.now(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise argparse.ArgumentTypeError(
                f"the age {text!r} reaches back before the year 1"
            ) from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an age such as 30m, 12h or 7d, or a date and time such as 2026-12-01 or "
            f"2026-12-01T09:30, got {text!r}"
        ) from None
    if moment.tzinfo is not None:
        return moment
    try:  # local time: a date at the very edge of the calendar has no local equivalent
        return moment.astimezone()
    except (OverflowError, ValueError):
        raise argparse.ArgumentTypeError(
            f"the date {text!r} is out of range: give a date between the years 2 and 9998"
        ) from None


def _duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` or plain seconds, as seconds above 0."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(
            f"expected an age such as 7d, 12h, 30m or 45s, got {text!r}"
        )
    return seconds
