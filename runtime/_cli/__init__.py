"""The ``callboard`` command: look at the runs in a run store, and start runs, from a shell.

::

    callboard runs list [--status S] [--workflow W] [--limit N] [--offset N] [--json]
    callboard runs show RUN_ID [--json]
    callboard runs watch RUN_ID [--interval SECONDS]
    callboard start MODULE:ATTR [--input JSON] [--run-id ID] [--wait] [--timeout SECONDS] [--json]

Every command takes ``--db PATH``: the SQLite run store, by default ``$CALLBOARD_DB``, else
``./callboard.db``. ``python -m runtime`` is the same command.

The reading commands open the store read-only (:class:`~runtime._queries.RunReader`), so
they never get in the way of the runtimes writing to it. ``start`` runs a workflow on a
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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from rich.console import Console
from rich.live import Live
from rich.text import Text

from runtime._cli._loader import LoadError, load_workflow
from runtime._cli._render import (
    console_for,
    left_behind,
    page_summary,
    plain,
    print_json,
    progress_line,
    run_view,
    runs_table,
    show,
    status_text,
)
from runtime._errors import (
    InvalidInputError,
    RunAlreadyStartedError,
    RunTimeoutError,
    SnapshotFormatError,
    StoreError,
)
from runtime._model import SETTLED_STATUSES, RunStatus, WorkflowResult
from runtime._queries import RunReader
from runtime._run import Run
from runtime._runtime import DEFAULT_STOP_TIMEOUT, Runtime
from runtime._stores.sqlite import path_from_url
from runtime._workflow import Workflow

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

EXIT_OK: Final = 0
"""The command did what it was asked, and the run (if any) has neither failed nor been canceled."""

EXIT_FAILED: Final = 1
"""The run failed or was canceled (or ``start --wait`` gave up waiting for it)."""

EXIT_USAGE: Final = 2
"""Bad arguments, bad input, an unusable workflow or run store."""

EXIT_NOT_FOUND: Final = 3
"""No run with that id."""

EXIT_INTERRUPTED: Final = 130
"""Ctrl-C, as shells report SIGINT."""

DB_ENV: Final = "CALLBOARD_DB"
"""The environment variable that names the run store when ``--db`` is not given."""

DEFAULT_DB: Final = "callboard.db"
"""The run store when neither ``--db`` nor ``$CALLBOARD_DB`` names one (in the current folder)."""

DEFAULT_INTERVAL: Final = 0.5
"""Seconds between two looks at a run that ``runs watch`` follows."""

_WAIT_INTERVAL: Final = 0.1
"""Seconds between two progress updates of ``start --wait`` (it wakes when the run ends)."""


_DID_NOT_SUCCEED: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELED})
"""Ended runs whose command exits with ``EXIT_FAILED``."""

# The pause between two looks at a run; a module attribute so that tests can
# step in between two polls without sleeping.
_sleep: Callable[[float], None] = time.sleep


class _Exit(Exception):
    """Leave the command with an exit code, after one line on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    command: Callable[[argparse.Namespace], int] | None = getattr(args, "command", None)
    if command is None:  # "callboard" or "callboard runs" alone
        (args.parser_for_help if hasattr(args, "parser_for_help") else parser).print_help(
            sys.stderr
        )
        return EXIT_USAGE
    args.db = _db_path(getattr(args, "db", None))
    try:
        return command(args)
    except _Exit as exc:
        _error(exc.message)
        return exc.code
    except (LoadError, StoreError, SnapshotFormatError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED


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
    listing.set_defaults(command=_runs_list)

    show = run_commands.add_parser("show", help="one run: its steps, output or error", parents=[db])
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=_runs_show)

    watch = run_commands.add_parser(
        "watch",
        help="follow a run until it ends (succeeds, fails or is canceled)",
        parents=[db],
    )
    watch.add_argument("run_id", metavar="RUN_ID")
    watch.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between two looks ({DEFAULT_INTERVAL})",
    )
    watch.set_defaults(command=_runs_watch)

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
    start.add_argument("--run-id", metavar="ID", help="the run's id (default: a new UUID)")
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
    start.set_defaults(command=_start)
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


_positive_int = _number(int, lambda value: value >= 1, "a whole number of at least 1")
_non_negative_int = _number(int, lambda value: value >= 0, "a whole number of at least 0")
_positive_float = _number(float, lambda value: value > 0, "a number of seconds above 0")
_non_negative_float = _number(float, lambda value: value >= 0, "a number of seconds")


# --- runs list, show, watch -----------------------------------------------------------


def _reader(db: str) -> RunReader:
    try:
        return RunReader(db)
    except ValueError as exc:  # a malformed sqlite:// URL
        raise _Exit(EXIT_USAGE, f"--db: {exc}") from exc
    except StoreError as exc:
        if path_from_url(db).exists():
            raise
        raise _Exit(EXIT_USAGE, f"{exc} (give the run store with --db PATH or ${DB_ENV})") from exc


def _runs_list(args: argparse.Namespace) -> int:
    with _reader(args.db) as reader:
        page = reader.list_runs(
            workflow_id=args.workflow, status=args.status, limit=args.limit, offset=args.offset
        )
    if page.unreadable:
        sys.stderr.write(
            f"callboard: warning: {len(page.unreadable)} run(s) could not be read and are "
            f"left out: {', '.join(page.unreadable)}\n"
        )
    if args.json:
        print_json(plain(page))
        return EXIT_OK
    console = console_for(sys.stdout)
    if page.runs:
        show(console, runs_table(page))
        show(console, Text(""))
    show(console, Text(page_summary(page, args.offset), style="dim"))
    return EXIT_OK


def _runs_show(args: argparse.Namespace) -> int:
    with _reader(args.db) as reader:
        try:
            result = reader.get_run(args.run_id)
        except SnapshotFormatError as exc:
            raise _Exit(
                EXIT_USAGE, f"run {args.run_id!r} in {args.db} cannot be read: {exc}"
            ) from exc
    if result is None:
        raise _Exit(EXIT_NOT_FOUND, f"no run {args.run_id!r} in {args.db}")
    if args.json:
        print_json(plain(result))
    else:
        show(console_for(sys.stdout), run_view(result))
    return _exit_code(result)


def _runs_watch(args: argparse.Namespace) -> int:
    with _reader(args.db) as reader:

        def fetch() -> WorkflowResult | None:
            return reader.get_run(args.run_id)

        if fetch() is None:
            raise _Exit(EXIT_NOT_FOUND, f"no run {args.run_id!r} in {args.db}")
        # A suspended run is followed too: a resume from anywhere drives it on.
        result = _follow(
            console_for(sys.stdout), fetch, lambda: _sleep(args.interval), None, _has_ended
        )
    assert result is not None  # no deadline: _follow returns once the run has ended
    return _exit_code(result)


def _has_ended(result: WorkflowResult) -> bool:
    return result.is_terminal


def _has_settled(result: WorkflowResult) -> bool:
    """Whether the run ended, or suspended (nothing moves it on until a resume)."""
    return result.status in SETTLED_STATUSES


def _exit_code(result: WorkflowResult) -> int:
    return EXIT_FAILED if result.status in _DID_NOT_SUCCEED else EXIT_OK


def _follow(
    console: Console,
    fetch: Callable[[], WorkflowResult | None],
    pause: Callable[[], None],
    deadline: float | None,
    done: Callable[[WorkflowResult], bool],
) -> WorkflowResult | None:
    """Show a run's progress until ``done`` (its last result) or ``deadline`` passes (``None``).

    On a terminal the run's view is redrawn in place; elsewhere a line is printed
    each time the run changes, and the full view once it is done.
    """
    if console.is_terminal:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                result = fetch()
                if result is None:
                    raise _Exit(EXIT_NOT_FOUND, "the run was deleted while being watched")
                live.update(run_view(result), refresh=True)
                if done(result):
                    return result
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                pause()
    shown: tuple[Any, ...] | None = None
    while True:
        result = fetch()
        if result is None:
            raise _Exit(EXIT_NOT_FOUND, "the run was deleted while being watched")
        if done(result):
            show(console, run_view(result))
            return result
        progress = (
            result.status,
            *((step, s.status, s.attempts) for step, s in result.steps.items()),
        )
        if progress != shown:
            show(console, progress_line(result))
            shown = progress
        if deadline is not None and time.monotonic() >= deadline:
            return None
        pause()


# --- start ------------------------------------------------------------------------------


def _start(args: argparse.Namespace) -> int:
    input_data = _parse_input(args.input)
    workflow = load_workflow(args.target)
    try:
        runtime = Runtime(store=args.db)
    except ValueError as exc:  # a malformed sqlite:// URL
        raise _Exit(EXIT_USAGE, f"--db: {exc}") from exc
    runtime.start()
    run: Run[Any, Any] | None = None
    try:
        bound = runtime.register(workflow)
        run = bound.create_run(args.run_id) if args.run_id else bound.create_run()
        try:
            run.start_async(input_data=input_data)
        except (InvalidInputError, RunAlreadyStartedError) as exc:
            run = None
            raise _Exit(EXIT_USAGE, str(exc)) from exc
        if args.wait:
            return _start_and_wait(args, bound, run, runtime)
        if not args.json:
            show(
                console_for(sys.stdout),
                Text(f"started run {run.run_id} of workflow {bound.id} in {args.db}"),
            )
        # The process is about to end, and its runs with it: give them the grace
        # period to finish; whatever is still going is halted, and stays in the
        # store for the next runtime that registers the workflow.
        runtime.stop(timeout=DEFAULT_STOP_TIMEOUT if args.timeout is None else args.timeout)
        result = bound.get_workflow_run_execution_result(run.run_id)
        assert result is not None, "a started run is always recorded"
        if args.json:
            print_json({"run_id": run.run_id, "status": result.status.value})
        elif result.is_terminal:
            show(
                console_for(sys.stdout),
                Text.assemble(f"run {run.run_id} ended: ", status_text(result.status)),
            )
        else:
            show(console_for(sys.stdout), Text(left_behind(result, args.db)))
        return EXIT_OK
    except KeyboardInterrupt:
        runtime.stop(timeout=0)  # Ctrl-C means now: halt, do not wait for the run
        if run is None:
            raise
        result = bound.get_workflow_run_execution_result(run.run_id)
        if result is None or result.is_terminal:
            raise
        raise _Exit(EXIT_INTERRUPTED, f"interrupted; {left_behind(result, args.db)}") from None
    finally:
        runtime.stop()


def _start_and_wait(
    args: argparse.Namespace, workflow: Workflow[Any, Any], run: Run[Any, Any], runtime: Runtime
) -> int:
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

    if args.json:
        result: WorkflowResult | None
        try:
            result = run.wait(args.timeout)
        except RunTimeoutError:
            result = None
    else:
        console = console_for(sys.stdout)
        show(console, Text(f"started run {run.run_id} of workflow {workflow.id} in {args.db}"))
        result = _follow(console, fetch, pause, deadline, _has_settled)
    if result is None:
        runtime.stop(timeout=0)
        now = fetch()
        assert now is not None
        if _has_settled(now):  # it ended (or suspended) just as the wait gave up
            result = now
        else:
            if args.json:
                print_json(plain(now))
            raise _Exit(
                EXIT_FAILED,
                f"run {run.run_id} did not end within {args.timeout:g} seconds; "
                + left_behind(now, args.db),
            )
    if args.json:
        print_json(plain(result))
    elif result.status == RunStatus.SUSPENDED:
        show(console_for(sys.stdout), Text(left_behind(result, args.db)))
    return _exit_code(result)


def _parse_input(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Exit(EXIT_USAGE, f"--input is not JSON: {exc}") from None
