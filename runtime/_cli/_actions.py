"""The commands that act on runs, and the ones that follow them: cancel, resume, delete, watch.

They work on the store alone, without the workflows' code, so an operator can act on any
run from any shell:

- ``runs cancel`` cancels a run nobody drives (suspended, queued, asleep) with a
  compare-and-set in the store; a run a runtime drives gets a cancel request that
  runtime carries out (its hooks run there). A run cancelled here while no runtime held
  it has no hooks run: they are the workflow's code, which this command does not load.
- ``runs resume`` records the resume (a compare-and-set, as ``run.resume()`` does) and
  leaves the run queued: the next runtime on the store that registers the workflow (a
  ``callboard worker``, say) runs it on. A suspension that waits while its run runs on
  (another foreach item or parallel member was resumed) gets a resume request instead,
  as ``run.resume_async()`` records one from a process that does not drive the run: the
  worker that drives it carries it out. With ``--definition MODULE:ATTR`` the data is
  checked against the step's ``resume_schema`` first; without, a mismatch fails the run
  when the step runs (a request's is refused by that worker: the suspension waits on).
  A run that changed between the read and the write is read again, as
  ``run.resume_async()`` reads it (a few times at most): what refuses the resume then
  refuses it. A suspended run past its deadline (``run_timeout``) is refused, and left
  for a worker of its workflow to cancel (its hooks run there).
- ``runs delete`` deletes a run that has ended.
- ``runs watch --json`` and ``runs list --follow`` poll the store and print a line for
  each change (JSON lines with ``--json``); a suspended run with a resume request
  waiting is said to wait for the worker, not for a resume.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, NoReturn, cast

from rich.text import Text

from runtime._cli import _commands
from runtime._cli._commands import (
    CommandError,
    RunNotFoundError,
    UsageError,
    open_db,
    require_store,
    shown_db,
)
from runtime._cli._loader import load_workflow
from runtime._cli._render import (
    console_for,
    one_line,
    plain,
    print_json,
    print_json_line,
    show,
    shown_text,
    status_text,
    suspended_line,
    with_request,
)
from runtime._errors import (
    InvalidInputError,
    ResumeConflictError,
    ResumeTargetError,
    RunDeletedError,
    RunNotSuspendedError,
    SnapshotFormatError,
    WorkflowError,
)
from runtime._model import (
    TERMINAL_STATUSES,
    ErrorInfo,
    RunStatus,
    WorkflowResult,
    WorkflowRunList,
)
from runtime._plan import split_item_path
from runtime._run import (
    _deleted,
    _not_waiting,
    _past_deadline,
    _resume_conflict,
    _resume_lost,
    _resume_target,
    _same_suspension,
    _still_waiting,
    _waiting_target,
)
from runtime._run_input import validated_resume_data
from runtime._snapshot import (
    Snapshot,
    canceled_record,
    decode,
    next_record,
    resume_request_bytes,
    run_deadline,
    run_timeout_of,
    stand_in_record,
)
from runtime._stores.base import (
    ResumeRequested,
    ResumeRequestStore,
    SharedStore,
    SnapshotRecord,
    SnapshotStore,
    provides,
)
from runtime._versions import matching_plan, started_on
from runtime._workflow import Workflow

__all__ = [
    "RefusedError",
    "runs_cancel",
    "runs_delete",
    "runs_list",
    "runs_resume",
    "runs_watch",
]

DEFAULT_CANCEL_TIMEOUT: Final = 30.0
"""Seconds ``runs cancel`` waits for the runtime that drives a run to carry out the cancel."""

# The pause between two looks at the store; a module attribute so that tests can step in.
_sleep: Callable[[float], None] = time.sleep


class RefusedError(CommandError):
    """The run is not in a state that allows the action (not suspended, not ended, ...)."""


def _shared(db: str) -> SharedStore:
    """The store at ``db`` opened for writing; there must be one (none is created)."""
    require_store(db)
    store = open_db(db, readonly=False)
    if not isinstance(store, SharedStore):  # pragma: no cover - the command opens only these
        store.close()
        raise UsageError(f"{shown_db(db)} is not a store this command can act on")
    return store


def _load(store: SnapshotStore, run_id: str, db: str) -> SnapshotRecord:
    record = store.load(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r} in {shown_db(db)}")
    return record


def _say(args: argparse.Namespace, value: dict[str, Any], line: Text | str) -> None:
    if args.json:
        print_json(value)
    else:
        show(console_for(sys.stdout), line if isinstance(line, Text) else shown_text(line))


# --- cancel ---------------------------------------------------------------------------


def runs_cancel(args: argparse.Namespace) -> RunStatus | None:
    """``callboard runs cancel``: cancel a run, wherever it is; exit 0 once it is canceled."""
    run_id = args.run_id
    store = _shared(args.db)
    try:
        deadline = time.monotonic() + args.timeout
        asked = requested = False  # asked: by this call or another; requested: by this call
        ended_before = None  # whether the run had ended when first read
        next_reap = 0.0
        while True:
            record = _load(store, run_id, args.db)
            if ended_before is None:
                ended_before = record.status in TERMINAL_STATUSES
            if record.status in TERMINAL_STATUSES:
                canceled = requested and record.status == RunStatus.CANCELED
                break
            try:
                ended = canceled_record(decode(record.data, record.run_id), time.time())
            except SnapshotFormatError as exc:
                # Nobody can run it on, nor read it: it ends canceled all the same (its
                # bytes kept), so that it can be deleted, rather than stay for ever.
                error = ErrorInfo.from_exception(exc, run_id=run_id, with_traceback=False)
                ended = stand_in_record(
                    record,
                    error.model_dump(),
                    time.time(),
                    keep_bytes=True,
                    status=RunStatus.CANCELED.value,
                )
            # Nobody holds it (suspended, queued, asleep): cancel it here. The store
            # refuses if a runtime holds it, or it changed since it was read.
            if store.replace(ended, record.seq):
                canceled = True
                record = _load(store, run_id, args.db)
                break
            if time.monotonic() >= next_reap:
                # Held by a worker that died? Its runs go back to the queue (as any live
                # runtime's reaper would do), and the next look cancels it here.
                next_reap = time.monotonic() + 1.0
                if store.reap():
                    continue
            if not asked:
                # False: asked for already, by another (whose cancel it then is, as an
                # application's cancel() that took the run to call its hooks).
                requested = store.request_cancel(run_id)
                asked = True
                continue
            if time.monotonic() >= deadline:
                raise RefusedError(
                    f"run {run_id!r} is {record.status}: the runtime that drives it did not "
                    f"carry out the cancel within {args.timeout:g} s; the cancel stays asked "
                    "for, and is carried out when it next looks, or by whoever takes the run over"
                )
            _sleep(0.1)
    finally:
        store.close()
    status = RunStatus(record.status)
    if canceled:
        _say(
            args,
            {"run_id": run_id, "canceled": True, "status": status.value},
            f"canceled run {run_id}",
        )
        return None
    if ended_before:
        line = Text.assemble(f"run {one_line(run_id)} had already ended: ", status_text(status))
    else:
        # It ended meanwhile, by a cancel asked for before this one (an earlier
        # `runs cancel` that gave up waiting, an application's cancel()), or otherwise.
        line = Text.assemble(
            f"run {one_line(run_id)} ended: ",
            status_text(status),
            " (its cancel had been asked for already, not by this command)"
            if status == RunStatus.CANCELED
            else "",
        )
    _say(args, {"run_id": run_id, "canceled": False, "status": status.value}, line)
    return None


# --- resume ---------------------------------------------------------------------------

RESUME_TRIES: Final = 5
"""How many times ``runs resume`` reads a run that changed under it before it gives up."""


def runs_resume(args: argparse.Namespace) -> RunStatus | None:
    """``callboard runs resume``: record a resume; the workflow's next runtime runs it on.

    A suspension that waits while its run runs on (another foreach item or
    ``parallel`` member was resumed) gets a resume request instead, as
    ``run.resume_async()`` records from a process that does not drive the run:
    the worker that drives it carries it out.

    With ``--json`` standard output carries the JSON and nothing else: what the
    ``--definition``'s module (or its schemas' validators) writes to it goes to
    standard error, as with ``start --json``.
    """
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            path, workflow_id, requested = _resume(args)
    else:
        path, workflow_id, requested = _resume(args)
    if requested:
        line = (
            f"asked for the resume of run {args.run_id} at {path}, which runs on: a resume "
            f"request, recorded in {shown_db(args.db)}, which the worker that drives the run "
            f"(one that registers workflow {workflow_id!r}) carries out with this data"
        )
    else:
        line = (
            f"resumed run {args.run_id} at {path}: the next runtime on {shown_db(args.db)} "
            f"that registers workflow {workflow_id!r} (a callboard worker, say) runs it on"
        )
    _say(
        args,
        {
            "run_id": args.run_id,
            "resumed": path,
            "status": RunStatus.RUNNING.value,
            "requested": requested,
        },
        line,
    )
    return None


def _resume(args: argparse.Namespace) -> tuple[str, str, bool]:
    """Record the resume of ``args.run_id``; the suspension's path, the workflow's id, and more.

    The third value says whether it is a resume request (the run runs on), not the
    resume itself. A run that changed since it was read is read again, as
    ``run.resume_async()`` reads it again, at most :data:`RESUME_TRIES` times.
    """
    run_id = args.run_id
    data = _commands.read_json_argument(args.data, "--data")
    workflow = load_workflow(args.definition) if args.definition else None
    store = _shared(args.db)
    read: int | None = None  # the seq the suspension was first read at, as resume_async()
    try:
        record = _load(store, run_id, args.db)
        for _ in range(RESUME_TRIES):
            snapshot = _decoded(record)
            if snapshot["status"] == RunStatus.RUNNING and snapshot["suspended"]:
                # Running on after another of its suspensions was resumed: a request, as
                # run.resume_async() records it from a process that does not drive the run.
                path = _target(_waiting_target, snapshot, args.step, run_id)
                read = _first_read(read, snapshot, path)
                checked = _checked_data(args, workflow, record, snapshot, path=path, data=data)
                said = _request(store, record, snapshot, path, checked)
                if said == "recorded":
                    return path, record.workflow_id, True
                if said == "requested":  # another's request for that suspension came first
                    waiting = [other for other in _still_waiting(snapshot) if other != path]
                    raise RefusedError(str(_resume_conflict(run_id, snapshot["status"], waiting)))
                # Changed since it was read (it suspended, ended, or a suspension was
                # resumed): read again, as run.resume_async() does.
                current = _reload(store, run_id)
                if current.seq == record.seq:
                    raise RefusedError(str(_resume_conflict(run_id, current.status)))
                record = current
                continue
            if snapshot["status"] != RunStatus.SUSPENDED:
                # A step it has not suspended at lately is named by mistake (exit 2), as
                # while the run is suspended; else another resume came first, or none can.
                refusal = _not_waiting(snapshot, args.step, run_id, None)
                if isinstance(refusal, ResumeTargetError):
                    raise UsageError(str(refusal))
                raise RefusedError(str(refusal))
            if _past_deadline(snapshot):
                # Resumed, it would be canceled by the worker that takes it. Left as it is:
                # a worker that registers the workflow cancels it, with its hooks.
                raise RefusedError(_past_its_deadline(snapshot, args.db))
            path = _target(_resume_target, snapshot, args.step, run_id)
            read = _first_read(read, snapshot, path)
            checked = _checked_data(args, workflow, record, snapshot, path=path, data=data)
            snapshot["status"] = RunStatus.RUNNING.value
            snapshot["resume"] = {path: checked}
            snapshot["resumed"] = True
            # Left queued (not held here): whichever runtime registers the workflow takes it.
            # Taken: refused while a resume request of that suspension waits (it came first).
            resumed = next_record(snapshot, time.time())._replace(taken=(path,))
            if store.replace(resumed, record.seq, hold=False):
                return path, record.workflow_id, False
            current = _reload(store, run_id)
            if current.seq == record.seq:
                # Refused unchanged: a resume request of that suspension waits (it came first).
                _refuse(_resume_lost(run_id, current))
            # Changed since it was read: another process wrote it (another of its
            # suspensions resumed, a request taken, a cancel, its deadline). Read as it is
            # now: what refuses the resume refuses it then; a change that leaves the
            # suspension waiting does not.
            record = current
        raise RefusedError(
            f"run {run_id!r} changed {RESUME_TRIES} times while it was being resumed (other "
            "processes keep writing it); this resume changed nothing: try again"
        )
    finally:
        store.close()


def _first_read(read: int | None, snapshot: Snapshot, path: str) -> int:
    """As ``run.resume_async()``: a run read again must wait in the suspension first read.

    Raises:
        RefusedError: if ``path`` waits in a later suspension (another resume took
            the one first read), with the API's wording.
    """
    try:
        return _same_suspension(read, snapshot, path)
    except ResumeConflictError as exc:
        _refuse(exc)


def _reload(store: SnapshotStore, run_id: str) -> SnapshotRecord:
    """The run's record read again, once a resume found it changed.

    Raises:
        RunNotFoundError: if it was deleted meanwhile, with the API's wording.
    """
    current = store.load(run_id)
    if current is None:
        _refuse(_deleted(run_id))
    return current


def _refuse(error: WorkflowError) -> NoReturn:
    """End the command with the API's ``error``: exit 3 for a run deleted, else 1."""
    if isinstance(error, RunDeletedError):
        raise RunNotFoundError(str(error)) from error
    raise RefusedError(str(error)) from error


def _past_its_deadline(snapshot: Snapshot, db: str) -> str:
    """Why a suspended run whose deadline (``run_timeout``) passed is not resumed."""
    run_id = snapshot["run_id"]
    timeout = run_timeout_of(snapshot)
    limit = "" if timeout is None else f" of {timeout:g} s"
    deadline = run_deadline(snapshot)
    try:
        when = "" if deadline is None else f" (its deadline was {_local(deadline)})"
    except (OverflowError, OSError, ValueError):  # past the calendar
        when = ""
    return str(
        RunNotSuspendedError(
            f"run {run_id!r} exceeded its timeout{limit}{when}: it is canceled, not resumed, "
            f"by the next runtime on {shown_db(db)} that registers workflow "
            f"{snapshot['workflow_id']!r} (its hooks run there); only a suspended run within "
            "its time can be resumed; this resume changed nothing",
            status=snapshot["status"],
            run_id=run_id,
        )
    )


def _local(moment: float) -> str:
    return datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S")


def _decoded(record: SnapshotRecord) -> Snapshot:
    try:
        return decode(record.data, record.run_id)
    except SnapshotFormatError as exc:
        raise UsageError(f"run {record.run_id!r} cannot be read: {exc}") from exc


def _target(
    find: Callable[[Snapshot, Any, str, None], str], snapshot: Snapshot, step: Any, run_id: str
) -> str:
    """The suspension ``--step`` names (``find``: among all, or among those that still wait).

    Raises:
        UsageError: if it names none (or several, or none was named and several wait).
        RefusedError: if another resume took the one it names, or none waits.
    """
    try:
        return find(snapshot, step, run_id, None)
    except ResumeTargetError as exc:
        raise UsageError(str(exc)) from exc
    except (ResumeConflictError, RunNotSuspendedError) as exc:
        raise RefusedError(str(exc)) from exc


def _checked_data(
    args: argparse.Namespace,
    workflow: Workflow[Any, Any] | None,
    record: SnapshotRecord,
    snapshot: Snapshot,
    *,
    path: str,
    data: Any,
) -> Any:
    """``--data``, checked against the step's ``resume_schema`` when ``--definition`` names it.

    Raises:
        UsageError: if the definition is not the run's (another workflow, another
            version, no such step), or the data does not fit.
    """
    if workflow is None:
        return data
    run_id = record.run_id
    if workflow.id != record.workflow_id:
        raise UsageError(
            f"run {run_id!r} is a run of workflow {record.workflow_id!r}, "
            f"not of {workflow.id!r} ({args.definition})"
        )
    if matching_plan(snapshot, workflow.plan, {}) is None:
        # Another version: its step's resume schema is not the one the run's
        # definition checks the data against when it goes on.
        raise UsageError(
            f"run {run_id!r} started on {started_on(snapshot)}, not on "
            f"{workflow.plan.label} ({args.definition}): its resume data is checked "
            "against the definition it started on; pass that one"
        )
    by_id = workflow.plan.by_id
    definition = by_id.get(path) or by_id.get(split_item_path(path)[0])  # a foreach's item
    if definition is None:
        raise UsageError(
            f"workflow {workflow.id!r} ({args.definition}) has no step {path!r}: it is "
            "not the definition the run was started with"
        )
    try:
        return validated_resume_data(definition, data, path, run_id)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from exc


def _request(
    store: SharedStore, record: SnapshotRecord, snapshot: Snapshot, path: str, data: Any
) -> ResumeRequested:
    """Record a resume request of ``path``, read waiting in ``record``, for the run's worker.

    With where it was read, as ``run.resume_async()`` records one (see
    :func:`~runtime._snapshot.resume_request_bytes`): a worker does not carry it out on a
    later suspension at that path.

    Raises:
        RefusedError: if the store takes no requests (a store of the user's).
    """
    if not provides(store, ResumeRequestStore):  # pragma: no cover - the command opens only ours
        raise RefusedError(
            f"run {record.run_id!r} is running, and this store takes no resume requests: "
            "resume it once it has suspended again"
        )
    requests = cast("ResumeRequestStore", store)
    blob = resume_request_bytes(data, snapshot)
    return requests.request_resume(
        record.run_id, path, blob, seq=record.seq, created_at=record.created_at
    )


# --- delete ---------------------------------------------------------------------------


def runs_delete(args: argparse.Namespace) -> None:
    """``callboard runs delete``: delete a run that has ended."""
    run_id = args.run_id
    store = _shared(args.db)
    try:
        record = _load(store, run_id, args.db)
        if record.status not in TERMINAL_STATUSES:
            raise RefusedError(
                f"run {run_id!r} is {record.status}; only a run that has ended can be deleted "
                f"(cancel it first: callboard runs cancel {run_id})"
            )
        deleted = store.delete(run_id)
        # The store deletes only a run that has ended: one restarted meanwhile stays.
        after = None if deleted else store.load(run_id)
    finally:
        store.close()
    if after is not None:
        raise RefusedError(
            f"run {run_id!r} is {after.status} now (restarted meanwhile); only a run that has "
            "ended can be deleted"
        )
    if not deleted:
        raise RunNotFoundError(f"no run {run_id!r} in {shown_db(args.db)}")
    _say(args, {"run_id": run_id, "deleted": True}, f"deleted run {run_id}")


# --- following ------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def run_events(
    previous: WorkflowResult | None,
    result: WorkflowResult,
    *,
    requested: bool = False,
    was_requested: bool = False,
) -> list[dict[str, Any]]:
    """The events that lead from ``previous`` (``None``: nothing seen yet) to ``result``.

    Args:
        previous: The run as last seen, ``None`` for nothing seen yet.
        result: The run as it is now.
        requested: Whether a resume request of the run, read suspended, waits in the
            store (recorded while it ran on): the worker carries it out, so nobody
            need resume it. The suspended status event says so as ``resume_requested``.
        was_requested: ``requested`` as it was at ``previous``: a request that its
            worker dropped (its data refused) leaves the run suspended, and its status
            event is told again, ``resume_requested`` false: now it waits for a resume.
    """
    events: list[dict[str, Any]] = []
    base = {"run_id": result.run_id, "workflow_id": result.workflow_id}
    before = {} if previous is None else previous.steps
    for path, step in result.steps.items():
        seen = before.get(path)
        if seen is None or (seen.status, seen.attempts) != (step.status, step.attempts):
            event: dict[str, Any] = {
                **base,
                "type": "step",
                "step": path,
                "status": step.status.value,
                "attempts": step.attempts,
                "time": _now(),
            }
            if step.error is not None:
                event["error"] = step.error.model_dump(mode="json")
            events.append(event)
    suspended = result.status == RunStatus.SUSPENDED
    if (
        previous is None
        or previous.status != result.status
        or (suspended and requested != was_requested)
    ):
        event = {**base, "type": "status", "status": result.status.value, "time": _now()}
        if suspended:
            event["suspended"] = json.loads(json.dumps(result.suspended, default=str))
            event["resume_requested"] = requested
        if result.status == RunStatus.WAITING and result.waiting_until is not None:
            event["waiting_until"] = result.waiting_until.isoformat()
        if result.is_terminal:
            event["result"] = plain(result)
        events.append(event)
    return events


def watch_json(db: str, run_id: str, interval: float) -> RunStatus:
    """``runs watch --json``: one JSON event per line until the run ends."""
    with _commands._reader(db) as reader:
        previous: WorkflowResult | None = None
        was_requested = False
        while True:
            result = _commands.through_outage(lambda: reader.get_run(run_id))
            if result is None:
                if previous is None:
                    raise RunNotFoundError(f"no run {run_id!r} in {shown_db(db)}")
                raise RunNotFoundError("the run was deleted while being watched")
            # A suspension a resume request waits for goes on once the worker takes it.
            requested = result.status == RunStatus.SUSPENDED and _commands.through_outage(
                functools.partial(reader.resume_pending, run_id)
            )
            for event in run_events(
                previous, result, requested=requested, was_requested=was_requested
            ):
                print_json_line(event)
            if result.is_terminal:
                return result.status
            previous, was_requested = result, requested
            _commands.stop_if_no_reader()
            _sleep(interval)


def _statuses(given: Iterable[str] | None) -> list[str] | None:
    if not given:
        return None
    found: list[str] = []
    for value in given:
        for part in value.split(","):
            status = part.strip()
            if status and status not in found:
                found.append(status)
    return found or None


def list_page(
    reader: Any,
    *,
    workflow_id: str | None,
    statuses: list[str] | None,
    limit: int,
    offset: int,
    resource_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> WorkflowRunList:
    """A page of runs newest first, of one status, several or all, started within the dates."""
    status = statuses[0] if statuses is not None and len(statuses) == 1 else statuses
    page: WorkflowRunList = reader.list_runs(
        workflow_id=workflow_id,
        status=status,
        limit=limit,
        offset=offset,
        resource_id=resource_id,
        from_date=since,
        to_date=until,
    )
    return page


def runs_list(args: argparse.Namespace) -> None:
    """``callboard runs list``: a page of runs (of one status, several or all), or follow them."""
    statuses = _statuses(args.status)
    known = {status.value for status in RunStatus}
    if args.status and statuses is None:  # --status '' or ',': a filter that names nothing
        raise UsageError(f"--status: name at least one run status ({', '.join(sorted(known))})")
    for status in statuses or ():
        if status not in known:
            raise UsageError(
                f"--status: {status!r} is not a run status (one of {', '.join(sorted(known))})"
            )
    if args.follow:
        runs_list_follow(args, statuses)
        return
    with _commands._reader(args.db) as reader:
        page = _asked_page(reader, args, statuses)
        requested = _commands.requested_among(reader, page.runs) if args.json else set()
    _commands.print_page(page, args, requested)


def _asked_page(
    reader: Any, args: argparse.Namespace, statuses: list[str] | None
) -> WorkflowRunList:
    """The page ``runs list`` asked for, by its arguments."""
    return list_page(
        reader,
        workflow_id=args.workflow,
        statuses=statuses,
        limit=args.limit,
        offset=args.offset,
        resource_id=args.resource_id,
        since=args.since,
        until=args.until,
    )


def runs_watch(args: argparse.Namespace) -> RunStatus:
    """``callboard runs watch``: follow a run until it ends; JSON lines with ``--json``."""
    if args.json:
        return watch_json(args.db, args.run_id, args.interval)
    return _commands.runs_watch(args)


FOLLOWED_OFF_PAGE: Final = 1000
"""The most runs ``runs list --follow`` keeps reading once they left its page unfinished."""


def runs_list_follow(args: argparse.Namespace, statuses: list[str] | None) -> None:
    """``runs list --follow``: the page, then a line for each run that appears or changes.

    A run told before that leaves the page (its status left the filter, newer runs
    pushed it past ``--limit``) is read by itself: its change is told once more, and it
    is followed on until it ends (or goes), at most :data:`FOLLOWED_OFF_PAGE` of them.
    """
    # Each run told, by id: its status, when it changed last, and whether a resume
    # request of it waits (for a suspended run, read for a page's runs at once).
    seen: dict[str, tuple[str, Any, bool]] = {}
    console = console_for(sys.stdout)

    def tell(run: WorkflowResult, requested: bool) -> None:
        if args.json:
            shown = with_request(plain(run), run, {run.run_id} if requested else ())
            print_json_line(shown)
        elif run.status == RunStatus.SUSPENDED:
            show(console, suspended_line(run, requested=requested))
        else:
            when = datetime.now().strftime("%H:%M:%S")
            header = one_line(f"{when}  run {run.run_id}  {run.workflow_id}  ")
            show(console, Text.assemble(header, status_text(run.status)))
        sys.stdout.flush()

    def told(run: WorkflowResult, requested: set[str]) -> None:
        """Tell ``run`` if it changed since it was last told (a request dropped too)."""
        mark = (run.status.value, run.updated_at, run.run_id in requested)
        if seen.get(run.run_id) != mark:
            seen[run.run_id] = mark
            tell(run, mark[2])

    with _commands._reader(args.db) as reader:
        while True:
            page = _commands.through_outage(lambda: _asked_page(reader, args, statuses))
            runs = list(reversed(page.runs))  # oldest first, as they happened
            requested = _commands.through_outage(
                functools.partial(_commands.requested_among, reader, runs)
            )
            for run in runs:
                told(run, requested)
            on_page = {run.run_id for run in runs}
            off_page = [run_id for run_id in seen if run_id not in on_page]
            for run_id in off_page[: len(off_page) - FOLLOWED_OFF_PAGE]:
                del seen[run_id]  # the oldest told: followed no more
            followed: list[WorkflowResult] = []
            for run_id in off_page[-FOLLOWED_OFF_PAGE:]:
                off = _commands.through_outage(functools.partial(reader.get_run, run_id))
                if off is None:  # deleted or pruned
                    del seen[run_id]
                else:
                    followed.append(off)
            requested = _commands.through_outage(
                functools.partial(_commands.requested_among, reader, followed)
            )
            for run in followed:
                told(run, requested)
                if run.is_terminal:
                    del seen[run.run_id]
            _commands.stop_if_no_reader()
            _sleep(args.interval)
