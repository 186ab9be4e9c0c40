"""The ``callboard`` command: look at the runs in a run store, and start runs, from a shell.

::

    callboard runs list [--status S] [--workflow W] [--limit N] [--offset N] [--json]
    callboard runs show RUN_ID [--json]
    callboard runs watch RUN_ID [--interval SECONDS]
    callboard runs prune [--older-than AGE] [--keep N] [--status S] [--json]
    callboard start MODULE:ATTR [--input JSON] [--run-id ID] [--wait] [--timeout SECONDS] [--json]

Every command takes ``--db PATH``: the SQLite run store, by default ``$CALLBOARD_DB``, else
``./callboard.db``. ``python -m runtime`` is the same command.

The reading commands open the store read-only (:class:`~runtime._queries.RunReader`), so
they never get in the way of the runtimes writing to it; ``runs prune`` writes, between
their transactions. ``start`` runs a workflow on a
runtime of its own in this process; a run that outlives the command is not lost: it stays
in the store, and the next runtime on the file that registers its workflow resumes it.

Exit codes:

- 0: success (for ``runs show``: the run has neither failed nor been canceled; ``start
  --wait`` also returns 0 for a run that suspended, waiting for a resume).
- 1: the run failed or was canceled, or ``start --wait`` gave up waiting (``--timeout``).
- 2: a usage or input error: bad arguments, ``--input`` that is not JSON or does not fit
  the workflow's input schema, a workflow that cannot be imported, no readable run store
  at ``--db``.
- 3: not found: no run with that id.
- 130: interrupted (Ctrl-C).

The package: this module holds :func:`main`, the argument tree and the exit codes, and
turns how a command ended into its code; ``_commands`` holds the commands, ``_loader``
the ``MODULE:ATTR`` loader of ``start``, ``_render`` the tables, views and JSON.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import Any, Final, NoReturn

from runtime._cli import _commands
from runtime._cli._commands import (
    DB_ENV,
    DEFAULT_DB,
    Command,
    InterruptedRunError,
    NotEndedError,
    RunNotFoundError,
    UsageError,
)
from runtime._cli._loader import LoadError
from runtime._errors import SnapshotFormatError, StoreError
from runtime._ids import check_run_id
from runtime._model import TERMINAL_STATUSES, RunStatus
from runtime._runtime import DEFAULT_STOP_TIMEOUT

__all__ = ["DB_ENV", "DEFAULT_DB", "ExitCode", "main"]


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


_ERROR_EXIT_CODES: Final[Mapping[type[Exception], ExitCode]] = {
    UsageError: ExitCode.USAGE,
    LoadError: ExitCode.USAGE,
    StoreError: ExitCode.USAGE,
    SnapshotFormatError: ExitCode.USAGE,
    RunNotFoundError: ExitCode.NOT_FOUND,
    NotEndedError: ExitCode.FAILED,
    InterruptedRunError: ExitCode.INTERRUPTED,
}
"""The errors a command ends with, and the exit code of each; the message goes to stderr."""

_DID_NOT_SUCCEED: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELED})
"""Run statuses that a command returns with ``ExitCode.FAILED``."""

DEFAULT_INTERVAL: Final = 0.5
"""Seconds between two looks at a run that ``runs watch`` follows."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises instead of exiting, so ``main`` returns its code."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


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
        or input error, 3 not found (130 when interrupted).
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
    args.db = _db_path(getattr(args, "db", None))
    return int(_run(command, args))


def _run(command: Command, args: argparse.Namespace) -> ExitCode:
    """Run a command, and turn how it ended into the exit code (an error also into a line)."""
    try:
        status = command(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return ExitCode.INTERRUPTED
    except tuple(_ERROR_EXIT_CODES) as exc:
        _error(str(exc))
        return next(code for kind, code in _ERROR_EXIT_CODES.items() if isinstance(exc, kind))
    return ExitCode.FAILED if status in _DID_NOT_SUCCEED else ExitCode.OK


def _db_path(given: str | None) -> str:
    if given:
        return given
    return os.environ.get(DB_ENV) or DEFAULT_DB


def _error(message: str) -> None:
    sys.stderr.write(f"callboard: error: {message}\n")
    sys.stderr.flush()


def _build_parser() -> argparse.ArgumentParser:
    # --db is accepted before or after the command; SUPPRESS keeps a subcommand's
    # absent --db from overwriting one given before it.
    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the SQLite run store (default: ${DB_ENV}, else ./{DEFAULT_DB})",
    )
    parser = _Parser(
        prog="callboard",
        description="Look at the runs in a callboard run store, and start runs.",
        parents=[db],
        epilog=(
            "exit codes: 0 success, 1 the run failed or was canceled, 2 usage or input error, "
            "3 not found"
        ),
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    runs = commands.add_parser("runs", help="list, show and watch runs", parents=[db])
    runs.set_defaults(parser_for_help=runs)
    run_commands = runs.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    listing = run_commands.add_parser("list", help="list runs, newest first", parents=[db])
    listing.add_argument("--status", choices=[status.value for status in RunStatus])
    listing.add_argument("--workflow", metavar="WORKFLOW_ID", help="only runs of this workflow")
    listing.add_argument("--limit", type=_positive_int, default=50, help="at most N runs (50)")
    listing.add_argument("--offset", type=_non_negative_int, default=0, help="skip N runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(command=_commands.runs_list)

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
        choices=sorted(TERMINAL_STATUSES),
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
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two looks ({DEFAULT_INTERVAL})",
    )
    watch.set_defaults(command=_commands.runs_watch)

    start = commands.add_parser(
        "start",
        help="start a run of a workflow defined in a module",
        parents=[db],
        description=(
            "Import MODULE (the current folder is on the path, as for python -m; a path "
            "ending in .py works too), take the committed workflow at ATTR, and start a run "
            "on a runtime in this process. Without --wait, the run gets up to --timeout "
            f"seconds ({DEFAULT_STOP_TIMEOUT:g} by default) to end; if it has not, it stays "
            "in the store, and the next runtime on the file that registers the workflow "
            "resumes it."
        ),
    )
    start.add_argument("target", metavar="MODULE:ATTR", help="e.g. myapp.flows:checkout")
    start.add_argument("--input", metavar="JSON", help="the run's input, a JSON object")
    start.add_argument(
        "--run-id", metavar="ID", type=_run_id, help="the run's id (default: a new UUID)"
    )
    start.add_argument("--wait", action="store_true", help="show progress and the result")
    start.add_argument(
        "--timeout",
        type=_non_negative_float,
        metavar="SECONDS",
        help=(
            "the most seconds this command keeps the run going (default: until it ends "
            f"with --wait, {DEFAULT_STOP_TIMEOUT:g} without)"
        ),
    )
    start.add_argument("--json", action="store_true", help="print JSON")
    start.set_defaults(command=_commands.start)
    return parser


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


def _run_id(text: str) -> str:
    """A run id as given on the command line: it must be text (UTF-8), and not empty."""
    try:
        return check_run_id(text)
    except ValueError:
        # Bytes that are not UTF-8 reach Python as lone surrogates: show them as bytes.
        shown = text.encode("utf-8", "surrogateescape") if text else text
        why = "it is empty" if not text else "it is not valid UTF-8 text"
        raise argparse.ArgumentTypeError(f"{shown!r} is not a run id: {why}") from None


_positive_float = _number(float, lambda value: value > 0, "a number of seconds above 0")
_non_negative_float = _number(float, lambda value: value >= 0, "a number of seconds")

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
