"""The commands of ``callboard``: ``runs list``, ``runs show``, ``runs watch`` and ``start``.

Each command takes the parsed arguments (with ``args.db`` resolved), writes its output,
and returns the status of the run that decides its exit code, or ``None`` when no run
does. A command that cannot do what it was asked raises a :class:`CommandError` whose
message is the line for stderr; ``main`` turns the error's class into the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console
from rich.live import Live
from rich.text import Text

from runtime._cli._loader import load_workflow
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
from runtime._stores.sqlite import SQLiteStore, path_from_url
from runtime._workflow import Workflow

__all__ = [
    "DB_ENV",
    "DEFAULT_DB",
    "Command",
    "CommandError",
    "InterruptedRunError",
    "NotEndedError",
    "RunNotFoundError",
    "UsageError",
    "runs_list",
    "runs_show",
    "runs_watch",
    "start",
]

DB_ENV: Final = "CALLBOARD_DB"
"""The environment variable that names the run store when ``--db`` is not given."""

DEFAULT_DB: Final = "callboard.db"
"""The run store when neither ``--db`` nor ``$CALLBOARD_DB`` names one (in the current folder)."""

_WAIT_INTERVAL: Final = 0.1
"""Seconds between two progress updates of ``start --wait`` (it wakes when the run ends)."""

# The pause between two looks at a run; a module attribute so that tests can
# step in between two polls without sleeping.
_sleep: Callable[[float], None] = time.sleep

Command = Callable[[argparse.Namespace], RunStatus | None]
"""A command: the parsed arguments in, the status of the run that decides the exit code out."""


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


# --- runs list, show, watch -----------------------------------------------------------


def _reader(db: str) -> RunReader:
    try:
        return RunReader(db)
    except ValueError as exc:  # a malformed sqlite:// URL
        raise UsageError(f"--db: {exc}") from exc
    except StoreError as exc:
        if path_from_url(db).exists():
            raise
        raise UsageError(f"{exc} (give the run store with --db PATH or ${DB_ENV})") from exc


def runs_list(args: argparse.Namespace) -> None:
    """``callboard runs list``: a page of runs, newest first, as a table or JSON."""
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
    _reader(args.db).close()  # the same checks and messages as the reading commands
    store = SQLiteStore(args.db)
    try:
        ended_before = None if args.older_than is None else time.time() - args.older_than
        deleted = store.prune(ended_before=ended_before, keep=args.keep, status=args.status)
    finally:
        store.close()
    if args.json:
        print_json({"pruned": deleted})
        return
    show(console_for(sys.stdout), Text(f"pruned {deleted} run{'' if deleted == 1 else 's'}"))


def runs_show(args: argparse.Namespace) -> RunStatus:
    """``callboard runs show``: one run, its fields and steps, or JSON."""
    with _reader(args.db) as reader:
        try:
            result = reader.get_run(args.run_id)
        except SnapshotFormatError as exc:
            raise UsageError(f"run {args.run_id!r} in {args.db} cannot be read: {exc}") from exc
    if result is None:
        raise RunNotFoundError(f"no run {args.run_id!r} in {args.db}")
    if args.json:
        print_json(plain(result))
    else:
        show(console_for(sys.stdout), run_view(result))
    return result.status


def runs_watch(args: argparse.Namespace) -> RunStatus:
    """``callboard runs watch``: follow a run until it ends."""
    with _reader(args.db) as reader:

        def fetch() -> WorkflowResult | None:
            return reader.get_run(args.run_id)

        if fetch() is None:
            raise RunNotFoundError(f"no run {args.run_id!r} in {args.db}")
        # A suspended run is followed too: a resume from anywhere drives it on.
        result = _follow(
            console_for(sys.stdout), fetch, lambda: _sleep(args.interval), None, _has_ended
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
                    raise RunNotFoundError("the run was deleted while being watched")
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
            raise RunNotFoundError("the run was deleted while being watched")
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


def start(args: argparse.Namespace) -> RunStatus | None:
    """``callboard start``: start a run of a workflow on a runtime in this process.

    Without ``--wait`` the command's job is done once the run has started, so no
    run status decides its exit code (``None``), whatever became of the run.
    """
    input_data = _parse_input(args.input)
    workflow = load_workflow(args.target)
    try:
        runtime = Runtime(store=args.db)
    except ValueError as exc:  # a malformed sqlite:// URL
        raise UsageError(f"--db: {exc}") from exc
    runtime.start()
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
        return None
    except KeyboardInterrupt:
        runtime.stop(timeout=0)  # Ctrl-C means now: halt, do not wait for the run
        if run is None:
            raise
        result = bound.get_workflow_run_execution_result(run.run_id)
        if result is None or result.is_terminal:
            raise
        raise InterruptedRunError(f"interrupted; {left_behind(result, args.db)}") from None
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
            raise NotEndedError(
                f"run {run.run_id} did not end within {args.timeout:g} seconds; "
                + left_behind(now, args.db)
            )
    if args.json:
        print_json(plain(result))
    elif result.status == RunStatus.SUSPENDED:
        show(console_for(sys.stdout), Text(left_behind(result, args.db)))
    return result.status


def _parse_input(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--input is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError("--input is nested too deep to read") from None
