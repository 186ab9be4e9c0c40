"""How the ``callboard`` command shows runs and workers: rich tables and views, JSON, and words.

Times are shown in the local time zone to the second, durations in the largest unit
that reads well, statuses in their colour, errors as ``Name: message``. On a terminal
rich draws as usual; written to a pipe or a file, lines are wide and carry no trailing
blanks, so that a table row stays whole for grep and friends.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TextIO

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from runtime._model import ErrorInfo, RunStatus, StepResult, WorkflowResult, WorkflowRunList
from runtime._stores.base import QueueStats, WorkerInfo

__all__ = [
    "NO_TIME_LIMIT",
    "TimeLimit",
    "console_for",
    "left_behind",
    "one_line",
    "page_summary",
    "plain",
    "print_json",
    "progress_line",
    "queue_plain",
    "queues_summary",
    "queues_table",
    "run_view",
    "runs_table",
    "show",
    "shown",
    "shown_text",
    "status_text",
    "terminal_safe",
    "time_limit_plain",
    "worker_plain",
    "workers_summary",
    "workers_table",
]

_PLAIN_WIDTH: Final = 10_000
"""Columns for tables written to a pipe or file, where rich would otherwise assume 80: a
row never cut, whatever its longest value (a 250-character run id hid every column but
two at 200), and no line longer than what it shows (a table is as wide as its cells)."""

_STATUS_STYLES: Final = {
    "pending": "yellow",
    "running": "cyan",
    "waiting": "blue",
    "suspended": "magenta",
    "success": "green",
    "failed": "bold red",
    "canceled": "bright_black",
}


# --- consoles and JSON -------------------------------------------------------------------


def console_for(stream: TextIO) -> Console:
    """A console that writes to ``stream``, as wide as a terminal or ``_PLAIN_WIDTH`` columns."""
    # A pipe or a file gets wide lines rather than rich's 80 columns (or
    # $COLUMNS, which describes a terminal), so that a table row stays on one
    # line for grep and friends.
    return Console(
        file=stream,
        width=None if stream.isatty() else _PLAIN_WIDTH,
        highlight=False,
        emoji=False,
    )


_UNSAFE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal obeys instead of showing: every control character but a newline
and a tab (an escape sequence can clear the screen, retitle the window or hide the text
after it), and the marks that reorder bidirectional text (which make a run id read as
another)."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    r"""``text`` safe for a terminal: the characters it would obey written as ``\x1b`` escapes.

    Run ids, workflow ids, error messages and outputs come from programs and
    their users; the command shows them, never lets them drive the terminal.
    """
    return _UNSAFE.sub(_escaped, text)


class _Shown:
    """A renderable whose text is :func:`shown`; rich's own styles and cursor moves stay.

    Rich makes its colours from each segment's style when it writes, not from the
    segment's text, so escaping the text alone keeps them.
    """

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for segment in console.render(self.inner, options):
            if segment.control or not _UNSAFE.search(segment.text):
                yield segment
            else:
                yield Segment(shown(segment.text), segment.style)


def terminal_safe(renderable: RenderableType) -> RenderableType:
    """``renderable`` with its text :func:`shown`, for what prints it without :func:`show`."""
    return _Shown(renderable)


def show(console: Console, renderable: RenderableType) -> None:
    """Print to the console; off a terminal, without the trailing blanks rich pads lines with.

    A line of text is not wrapped (the terminal wraps it, and a pipe wants it whole).
    What the terminal would obey in the text is shown escaped (:func:`shown`).
    """
    soft_wrap = isinstance(renderable, Text)
    renderable = terminal_safe(renderable)
    if console.is_terminal:
        console.print(renderable, soft_wrap=soft_wrap)
        return
    with console.capture() as capture:
        console.print(renderable, soft_wrap=soft_wrap)
    lines = capture.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))
    console.file.flush()


_JSON_CHUNK: Final = 16384
"""Characters written at a time: one large write that a closed pipe takes in part raises
nothing, so ``| head`` exited 0 where the table's lines exit 141."""


def print_json(value: Any, file: TextIO | None = None) -> None:
    """Write ``value`` to ``file`` (by default stdout) as indented JSON."""
    out = file or sys.stdout
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    for start in range(0, len(text), _JSON_CHUNK):
        out.write(text[start : start + _JSON_CHUNK])
        out.flush()


def print_json_line(value: Any, file: TextIO | None = None) -> None:
    """Write ``value`` to ``file`` (by default stdout) as one line of JSON, and flush it."""
    out = file or sys.stdout
    out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()


def plain(model: WorkflowResult | WorkflowRunList) -> Any:
    """A model as JSON-ready data; bytes that are not UTF-8 are written escaped."""
    try:
        return model.model_dump(mode="json")
    except ValueError:  # pydantic writes bytes as UTF-8, and these are not
        return json.loads(json.dumps(model.model_dump(), default=_json_default))


def with_request(
    shown: dict[str, Any], run: WorkflowResult, requested: Collection[str]
) -> dict[str, Any]:
    """``shown`` (the run as :func:`plain` made it), marked for a suspended run.

    A suspended run's ``resume_requested`` says whether a resume request of it
    waits (its id is in ``requested``): the worker that drives it carries it out,
    and nobody need resume it.
    """
    if run.status == RunStatus.SUSPENDED:
        shown["resume_requested"] = run.run_id in requested
    return shown


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


# --- words: statuses, times, errors ------------------------------------------------------


def shown_text(value: str, style: str = "", *, lines: bool = False) -> Text:
    r"""``value`` as rich text, :func:`one_line` first (:func:`shown` with ``lines``).

    Rich drops some control characters (``\r``, ``\x07``, ``\x08``, ``\x0b``,
    ``\x0c``) from the text it is given, before :func:`show` could escape them: run
    ids ``order-1\r`` and ``order-1`` read the same. Every value a run or a user
    gave becomes text through this (or :func:`one_line`, before ``append``). Only
    an error's message may span lines (``lines``): an id's newline made a row of
    its own in a table, one that read as another run's.
    """
    return Text(shown(value) if lines else one_line(value), style=style)


def one_line(text: str) -> str:
    r"""``text`` as :func:`shown` makes it, with a newline or a tab in it escaped too.

    For what is one line whatever it holds: ids, and the lines that name them.
    """
    return shown(text).replace("\n", "\\x0a").replace("\t", "\\x09")


def status_text(status: str) -> Text:
    """A run's or a step's status in its colour."""
    return Text(str(status), style=_STATUS_STYLES.get(str(status), ""))


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


def _error_text(name: str, message: str) -> str:
    return f"{name}: {message}"


def left_behind(result: WorkflowResult, db: str) -> str:
    """What becomes of a run that has not ended when the command does."""
    if result.status == RunStatus.SUSPENDED:
        steps = ", ".join(result.suspended) or "a step"
        return (
            f"run {result.run_id} is suspended at {steps}: it stays in {db} until it is "
            f"resumed, with `callboard runs resume {result.run_id} --data JSON` or run.resume() "
            f"in a program that registers workflow {result.workflow_id!r}"
        )
    sleeping = ""
    if result.status == RunStatus.WAITING and result.waiting_until is not None:
        sleeping = f" (asleep until {_when(result.waiting_until)})"
    return (
        f"run {result.run_id} is still {result.status}{sleeping}: it stays in {db}, and the "
        f"next runtime on that store that registers workflow {result.workflow_id!r} (a "
        "callboard worker, say) resumes it from its last completed step"
    )


# --- a page of runs -----------------------------------------------------------------------


def _progress(result: WorkflowResult) -> str:
    """Where a run stands, in a few words: its steps done, or the step it is at."""
    if not result.steps:
        return "-"
    done = sum(step.status == "success" for step in result.steps.values())
    if result.status == RunStatus.SUCCESS:
        return f"{done} done"
    last_id, last = list(result.steps.items())[-1]
    return f"{done} done, {last_id} {last.status}" if done else f"{last_id} {last.status}"


def runs_table(page: WorkflowRunList) -> Table:
    """A page of runs, one row each: id, workflow, status, progress, created, took."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("RUN ID", no_wrap=True)
    table.add_column("WORKFLOW", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("STEPS")
    table.add_column("CREATED", no_wrap=True)
    table.add_column("TOOK", no_wrap=True, justify="right")
    versions = any(result.version is not None for result in page.runs)
    if versions:  # only on a page with labelled runs: a fingerprint alone says little here
        table.add_column("VERSION", no_wrap=True)
    queues = any(result.queue is not None for result in page.runs)
    if queues:  # only on a page with runs of queues: other pages look as they always did
        table.add_column("QUEUE", no_wrap=True)
    for result in page.runs:
        cells = [
            shown_text(result.run_id),
            shown_text(result.workflow_id),
            status_text(result.status),
            shown_text(_progress(result)),
            Text(_when(result.created_at)),
            Text(_took(result.created_at, result.updated_at) if result.is_terminal else "-"),
        ]
        if versions:
            cells.append(shown_text(result.version or "-"))
        if queues:
            cells.append(shown_text(_queue_text(result)))
        table.add_row(*cells)
    return table


def _version_text(result: WorkflowResult) -> str:
    """A run's version label and plan fingerprint: ``v2 (fingerprint 0123abcd...)``."""
    if result.version is None:
        return f"fingerprint {result.fingerprint}"
    if result.fingerprint is None:
        return result.version
    return f"{result.version} (fingerprint {result.fingerprint})"


def _queue_text(result: WorkflowResult) -> str:
    """A run's queue, key and priority in a few words (``-`` for a run in no queue)."""
    if result.queue is None:
        return "-"
    text = result.queue
    if result.queue_key is not None:
        text += f" key {result.queue_key}"
    if result.priority:
        text += f" priority {result.priority}"
    return text


def page_summary(page: WorkflowRunList, offset: int) -> str:
    """Which runs of how many a page shows (it starts ``offset`` runs in)."""
    if page.total == 0:
        return "no runs"
    shown = len(page.runs) + len(page.unreadable)
    if shown == page.total:
        return f"{page.total} run{'s' if page.total != 1 else ''}"
    if shown == 0:
        return f"no runs past the first {offset} of {page.total}"
    return f"runs {offset + 1}-{offset + shown} of {page.total}"


# --- one run ------------------------------------------------------------------------------


class TimeLimit(NamedTuple):
    """A run's time limit, as its snapshot keeps it (see ``run_timeout``)."""

    run_timeout: float | None
    """Seconds the run may take (``None``: no limit)."""

    deadline: datetime | None
    """When they are up: fixed when the run began to execute (``None``: not yet, or no limit)."""


NO_TIME_LIMIT: Final = TimeLimit(None, None)


def time_limit_plain(limit: TimeLimit) -> dict[str, Any]:
    """The run's time limit as ``runs show --json`` adds it: only what the run has."""
    found: dict[str, Any] = {}
    if limit.run_timeout is not None:
        found["run_timeout"] = limit.run_timeout
    if limit.deadline is not None:
        # As pydantic writes the run's other times: ISO 8601 in UTC, with a Z.
        found["deadline"] = limit.deadline.isoformat().replace("+00:00", "Z")
    return found


def _timeout_text(seconds: float) -> str:
    """A ``run_timeout`` in its largest whole unit: ``7 d``, ``90 min``, ``2.5 s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _time_limit_row(fields: Table, limit: TimeLimit) -> None:
    """The run's deadline and its ``run_timeout``; a limit alone before the run executes."""
    if limit.deadline is not None:
        timeout = (
            ""
            if limit.run_timeout is None
            else f" (run_timeout {_timeout_text(limit.run_timeout)})"
        )
        fields.add_row("deadline", Text(_when(limit.deadline) + timeout))
    elif limit.run_timeout is not None:
        fields.add_row(
            "run timeout",
            Text(f"{_timeout_text(limit.run_timeout)}, from when the run begins to execute"),
        )


def _origin_rows(fields: Table, result: WorkflowResult) -> None:
    """Who the run is for, and where it came from (a time travel, restarts)."""
    if result.resource_id is not None:
        fields.add_row("resource", shown_text(result.resource_id))
    if result.time_traveled_from is not None:
        origin = result.time_traveled_from
        fields.add_row("time travel of", shown_text(f"run {origin.run_id} from step {origin.step}"))
    if result.restarts:
        fields.add_row("restarts", Text(str(result.restarts)))


def _cause_rows(fields: Table, error: ErrorInfo) -> None:
    """An error's attributes, then the chain of exceptions it was raised from."""
    if error.attributes:
        fields.add_row("attributes", shown_text(_json_text(error.attributes)))
    cause = error.cause
    while cause is not None:  # the chain is bounded (MAX_CAUSES)
        fields.add_row("caused by", shown_text(_error_text(cause.name, cause.message), lines=True))
        cause = cause.cause


def run_view(
    result: WorkflowResult, limit: TimeLimit = NO_TIME_LIMIT, *, awaits_a_worker: bool = False
) -> RenderableType:
    """One run: its fields (``limit``: its time limit, if it has one), then a table of its steps.

    ``awaits_a_worker``: no live worker on the store registers the run's workflow,
    which the view says under the status, with what starts one.
    """
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("run", shown_text(result.run_id))
    fields.add_row("workflow", shown_text(result.workflow_id))
    fields.add_row("status", status_text(result.status))
    if awaits_a_worker:
        fields.add_row(
            "",
            Text(
                "no live worker on the store registers this workflow: the run waits for one "
                "(callboard worker MODULE:ATTR; callboard workers list)",
                style="yellow",
            ),
        )
    if result.version is not None or result.fingerprint is not None:
        fields.add_row("version", shown_text(_version_text(result)))
    _origin_rows(fields, result)
    fields.add_row("created", Text(_when(result.created_at)))
    updated = _when(result.updated_at)
    if result.is_terminal:
        updated += f" (took {_took(result.created_at, result.updated_at)})"
    fields.add_row("updated", Text(updated))
    if result.trace_id:
        fields.add_row("trace id", shown_text(result.trace_id))
    if result.queue is not None:
        fields.add_row("queue", shown_text(_queue_text(result)))
    if result.idempotency_key is not None:
        fields.add_row("idempotency key", shown_text(result.idempotency_key))
    fields.add_row("input", shown_text(_json_text(result.input)))
    _time_limit_row(fields, limit)
    if result.status == RunStatus.WAITING and result.waiting_until is not None:
        fields.add_row("waiting until", Text(_when(result.waiting_until)))
    # Each suspended step with what it passed to ctx.suspend(): what a resume answers.
    for index, (path, payload) in enumerate(result.suspended.items()):
        fields.add_row(
            "suspended" if index == 0 else "", shown_text(f"{path}: {_json_text(payload)}")
        )
    if result.status == RunStatus.SUCCESS:
        fields.add_row("result", shown_text(_json_text(result.result)))
    if result.error is not None:
        fields.add_row(
            "error", shown_text(_error_text(result.error.name, result.error.message), lines=True)
        )
        step_id = result.error.details.get("step_id")
        if step_id:
            fields.add_row("in step", shown_text(str(step_id)))
        _cause_rows(fields, result.error)
    if result.state is not None:
        fields.add_row("state", shown_text(_json_text(result.state)))
    if not result.steps:
        return Group(fields, Text("no step has started yet", style="dim"))
    return Group(fields, Text(""), _steps_table(result))


def _steps_table(result: WorkflowResult) -> Table:
    """A run's steps, a row each: status, when it started, how long it took, output or error."""
    steps = Table(box=box.SIMPLE_HEAD, show_edge=False)
    steps.add_column("STEP", no_wrap=True)
    steps.add_column("STATUS", no_wrap=True)
    steps.add_column("STARTED", no_wrap=True)
    steps.add_column("TOOK", no_wrap=True, justify="right")
    steps.add_column("OUTPUT OR ERROR")
    for step_id, step in result.steps.items():
        if step.error is not None:
            outcome = shown_text(
                _error_text(step.error.name, step.error.message), style="red", lines=True
            )
        elif step.status == "success":
            outcome = shown_text(_json_text(step.output))
        else:
            outcome = Text("")
        steps.add_row(
            shown_text(step_id),
            _step_status(step),
            _started(step),
            Text(_took(step.started_at, step.ended_at)),
            outcome,
        )
    return steps


def _started(step: StepResult) -> Text:
    """When a step first started, and when it was resumed, if it was."""
    text = Text(_when(step.started_at))
    if step.resumed_at is not None:
        text.append(f" (resumed {step.resumed_at.astimezone().strftime('%H:%M:%S')})", style="dim")
    return text


def _step_status(step: StepResult) -> Text:
    """A step's status, and how many times its body ran when it was retried."""
    text = status_text(step.status)
    if step.attempts > 1:
        text.append(f" ({step.attempts} attempts)", style="dim")
    return text


def suspended_line(result: WorkflowResult, *, requested: bool = False) -> Text:
    """One line for a suspended run: what it waits for, and how to resume it.

    Args:
        result: The run, read suspended.
        requested: Whether a resume request of it waits in the store (recorded while
            it ran on), which a worker carries out: the line says so rather than how
            to resume it (the store tells of a request for the run, not for which of
            its suspensions: with several, the others may still wait).
    """
    line = Text.assemble(
        one_line(f"{datetime.now().strftime('%H:%M:%S')}  run {result.run_id} "),
        status_text(result.status),
        ", a resume was asked for and waits for the worker"
        if requested
        else ", waiting for a resume",
    )
    for index, (path, payload) in enumerate(result.suspended.items()):
        line.append(": " if index == 0 else "; ")
        line.append(one_line(f"{path} asked {_json_text(payload)}"))
    if not requested:
        hint = f" (callboard runs resume {result.run_id} --data JSON)"
    else:
        hint = f" (a worker that registers workflow {result.workflow_id} carries it out"
        if len(result.suspended) > 1:
            hint += (
                f"; a suspension it does not name: callboard runs resume {result.run_id} "
                "--step STEP --data JSON"
            )
        hint += ")"
    line.append(one_line(hint), style="dim")
    return line


def progress_line(result: WorkflowResult) -> Text:
    """One line for a run that moved on: the time, its status, and each step's status."""
    line = Text.assemble(
        one_line(f"{datetime.now().strftime('%H:%M:%S')}  run {result.run_id} "),
        status_text(result.status),
    )
    if result.steps:
        line.append(": ")
        for index, (step_id, step) in enumerate(result.steps.items()):
            if index:
                line.append(", ")
            line.append(one_line(f"{step_id} "))
            line.append_text(_step_status(step))
    return line


# --- workers --------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    return f"{seconds:.1f} s"


def workers_table(workers: list[WorkerInfo]) -> Table:
    """The workers on a store, one row each: id, host, pid, role, workflows, capacity, liveness."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("WORKER ID", no_wrap=True)
    table.add_column("HOST", no_wrap=True)
    table.add_column("PID", no_wrap=True, justify="right")
    table.add_column("ROLE", no_wrap=True)
    table.add_column("WORKFLOWS")
    table.add_column("CONCURRENCY", no_wrap=True, justify="right")
    table.add_column("HEARTBEAT", no_wrap=True, justify="right")
    table.add_column("HELD", no_wrap=True, justify="right")
    table.add_column("STARTED", no_wrap=True)
    for worker in workers:
        table.add_row(
            shown_text(worker.worker_id),
            shown_text(worker.host),
            Text(str(worker.pid)),
            shown_text(worker.role),
            shown_text(", ".join(worker.workflows) or "-"),
            Text("-" if worker.concurrency is None else str(worker.concurrency)),
            Text(
                f"{_age(worker.heartbeat_age)} ago"
                + (f", lease ({_age(worker.lease)}) expired" if worker.expired else "")
            ),
            Text(str(worker.held)),
            Text(_when(datetime.fromtimestamp(worker.started_at, UTC))),
        )
    return table


def worker_plain(worker: WorkerInfo) -> dict[str, Any]:
    """A worker as JSON-ready data; ``heartbeat_age`` in seconds, ``started_at`` in ISO 8601."""
    return {
        "worker_id": worker.worker_id,
        "host": worker.host,
        "pid": worker.pid,
        "role": worker.role,
        "workflows": list(worker.workflows),
        "concurrency": worker.concurrency,
        "heartbeat_age": round(worker.heartbeat_age, 3),
        "lease": worker.lease,
        "expired": worker.expired,
        "held": worker.held,
        "started_at": datetime.fromtimestamp(worker.started_at, UTC).isoformat(),
    }


def workers_summary(workers: list[WorkerInfo]) -> str:
    """How many workers, and how many runs they hold."""
    if not workers:
        return "no workers"
    held = sum(worker.held for worker in workers)
    return (
        f"{len(workers)} worker{'s' if len(workers) != 1 else ''}, "
        f"holding {held} run{'s' if held != 1 else ''}"
    )


# --- queues ---------------------------------------------------------------------------------


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def queues_table(stats: list[QueueStats]) -> Table:
    """Each queue and key: runs waiting, running and held, and the queue's limits.

    Held: runs whose step body, let go of after a cancel or a timeout, runs on
    in a worker and keeps the run's slot (see :class:`QueueStats`).
    """
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("QUEUE", no_wrap=True)
    table.add_column("KEY", no_wrap=True)
    table.add_column("WAITING", no_wrap=True, justify="right")
    table.add_column("RUNNING", no_wrap=True, justify="right")
    table.add_column("HELD", no_wrap=True, justify="right")
    table.add_column("CONCURRENCY", no_wrap=True, justify="right")
    table.add_column("PER KEY", no_wrap=True, justify="right")
    table.add_column("RATE", no_wrap=True, justify="right")
    table.add_column("MAX QUEUED", no_wrap=True, justify="right")
    for stat in stats:
        limits = stat.limits
        rate = "-"
        if limits is not None and limits.rate_count is not None:
            rate = f"{limits.rate_count}/{limits.rate_period:g} s"
        table.add_row(
            shown_text(stat.queue),
            shown_text("-" if stat.key is None else stat.key),
            Text(str(stat.waiting)),
            Text(str(stat.running)),
            Text(str(stat.held)),
            Text(_limit(None if limits is None else limits.concurrency)),
            Text(_limit(None if limits is None else limits.key_concurrency)),
            Text(rate),
            Text(_limit(None if limits is None else limits.max_queued)),
        )
    return table


def queue_plain(stat: QueueStats) -> dict[str, Any]:
    """A queue and key as JSON-ready data, with the queue's limits (``null``: none)."""
    limits = stat.limits
    return {
        "queue": stat.queue,
        "key": stat.key,
        "waiting": stat.waiting,
        "running": stat.running,
        "held": stat.held,
        "concurrency": None if limits is None else limits.concurrency,
        "key_concurrency": None if limits is None else limits.key_concurrency,
        "rate_limit": None
        if limits is None or limits.rate_count is None
        else [limits.rate_count, limits.rate_period],
        "max_queued": None if limits is None else limits.max_queued,
    }


def queues_summary(stats: list[QueueStats]) -> str:
    """How many queues, and how many runs wait, run and hold slots in them."""
    names = {stat.queue for stat in stats}
    if not names:
        return "no queues"
    waiting = sum(stat.waiting for stat in stats)
    running = sum(stat.running for stat in stats)
    held = sum(stat.held for stat in stats)
    summary = (
        f"{len(names)} queue{'s' if len(names) != 1 else ''}, "
        f"{waiting} run{'s' if waiting != 1 else ''} waiting, {running} running"
    )
    if held:
        summary += (
            f", {held} slot{'s' if held != 1 else ''} held by step bodies their runs let go of"
        )
    return summary
