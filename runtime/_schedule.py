"""Cron schedules: the public :class:`Schedule` spec, what a listing shows, and tick arithmetic.

A schedule starts one run of its workflow at every time its cron expression
names, in its time zone. Each tick's run has an id made from the schedule's
id and the tick's time (:func:`tick_run_id`), so that however many runtimes
share a store, a tick makes one run: the others find the id taken. The cron
expressions are read by `cronsim <https://pypi.org/project/cronsim/>`_, the
extra ``callboard[cron]``; it walks time-zone-aware datetimes, so a daily
``0 9 * * *`` in ``Europe/Paris`` stays at 9:00 across daylight saving time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from runtime._errors import WorkflowDefinitionError
from runtime._model import RunStatus

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = [
    "ALL_AT_MOST",
    "ON_TIME",
    "CatchUp",
    "Overlap",
    "Schedule",
    "ScheduleInfo",
    "ScheduledRun",
    "check_schedule_id",
    "newest_tick",
    "next_tick",
    "tick_of",
    "tick_run_id",
    "ticks_after",
    "ticks_before",
    "utc",
]

CatchUp = Literal["skip", "latest", "all"]
"""What a schedule does with ticks missed while no runtime on the store could fire them."""

Overlap = Literal["skip", "allow", "buffer_one"]
"""What a tick does while the schedule's previous run has not ended."""

ON_TIME: Final = 60.0
"""Seconds after its time within which a tick still counts as on time, not missed.

A tick is fired when it is due; one that no runtime saw until later than this
(every runtime was down, or stopped) was missed, and its schedule's
``catch_up`` policy decides whether it still starts a run.
"""

ALL_AT_MOST: Final = 100
"""The most missed ticks ``catch_up="all"`` starts in one pass of the scheduler; the
next pass (at once) goes on with the rest, oldest first."""

_MAX_ID: Final = 200


def _cronsim() -> type[CronSim]:
    try:
        from cronsim import CronSim
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "cron schedules need the extra 'callboard[cron]' (the cronsim package): "
            "pip install 'callboard[cron]'"
        ) from exc
    return CronSim


_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The shorthands of Vixie cron and its heirs, as the five fields they stand for."""


def _expression(cron: str) -> str:
    """The fields cronsim reads for ``cron``: a shorthand (``@daily``) spelled out.

    A minute field that begins with ``*`` under a fixed hour (``*/30 1 * * *``)
    is spelled as the range it means (``0-59/30``): cronsim takes any ``*`` there
    for a job of every hour, which fires in both passes of the hour the end of
    daylight saving time repeats and not at all in the one spring skips, while
    ``0,30 1 * * *``, the same times, fires once and at 3:00. A fixed hour is a
    fixed hour however its minutes are written.
    """
    if cron.lstrip().startswith("@"):
        return _MACROS.get(cron.strip().lower(), cron)
    fields = cron.split()
    at = {5: 0, 6: 1}.get(len(fields))  # the minute's field (six: seconds first)
    if at is not None and fields[at].startswith("*") and not fields[at + 1].startswith("*"):
        fields[at] = "0-59" + fields[at][1:]
        return " ".join(fields)
    return cron


def _load_zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_schedule_id(schedule_id: object) -> str:
    """``schedule_id`` if it can name a schedule: a non-empty ``str`` of printable text.

    Raises:
        WorkflowDefinitionError: if it is not.
    """
    if not isinstance(schedule_id, str) or not schedule_id:
        raise WorkflowDefinitionError(f"schedule_id must be a non-empty str, got {schedule_id!r}")
    if len(schedule_id) > _MAX_ID or not schedule_id.isprintable():
        raise WorkflowDefinitionError(
            f"schedule_id must be printable text of at most {_MAX_ID} characters, "
            f"got {schedule_id!r}"
        )
    return schedule_id


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule for a workflow: start one run at every time the expression names.

    Give it to ``create_workflow(..., schedule=...)`` (it is registered with
    the workflow on a runtime), or use ``runtime.schedule(workflow, cron=...)``.
    Everything is checked here, when the schedule is made.

    Args:
        cron: A cron expression: five fields (minute, hour, day of month,
            month, day of week: ``"*/5 * * * *"``), six with seconds first
            (``"*/10 * * * * *"``), or a shorthand: ``@hourly``, ``@daily``
            (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``).
            Read by cronsim (the extra ``callboard[cron]``).
        input_data: Each run's input: a model of the workflow's input schema
            or a mapping; checked against the schema when the schedule is
            bound to its workflow.
        timezone: The IANA time zone the expression is read in
            (``"Europe/Paris"``); ``"UTC"`` by default.
        schedule_id: The schedule's id on the store; the workflow's id when
            omitted. Runs are named ``schedule:<schedule_id>:<tick in UTC>``.
        catch_up: Ticks missed while no runtime could fire them (every
            process down for longer than :data:`ON_TIME`): ``"latest"`` (the
            default) starts one run for the newest missed tick, ``"skip"``
            starts none, ``"all"`` starts one for each, oldest first.
        overlap: A tick that comes while the schedule's previous run has not
            ended (pending, running, waiting or suspended): ``"skip"`` (the
            default) starts no run for it, ``"allow"`` starts one anyway,
            ``"buffer_one"`` starts its run once the previous one ends (one
            tick waits at most: the ticks that come while one waits are
            skipped).

    Raises:
        WorkflowDefinitionError: for an invalid cron expression, an unknown
            time zone, an unknown policy or a bad schedule id.
        ImportError: if the extra ``callboard[cron]`` is not installed.
    """

    cron: str
    input_data: Any = None
    timezone: str = "UTC"
    schedule_id: str | None = None
    catch_up: CatchUp = "latest"
    overlap: Overlap = "skip"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.cron, str):
            raise WorkflowDefinitionError(f"cron must be a str, got {type(self.cron).__name__}")
        if not isinstance(self.timezone, str) or not self.timezone:
            raise WorkflowDefinitionError(
                f"timezone must be a time zone name, got {self.timezone!r}"
            )
        try:
            zone = _load_zone(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise WorkflowDefinitionError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'Europe/Paris' "
                "or 'UTC'"
            ) from exc
        object.__setattr__(self, "_zone", zone)
        cron_sim = _cronsim()
        from cronsim import CronSimError

        try:
            cron_sim(_expression(self.cron), datetime.now(zone))
        except CronSimError as exc:
            known = ", ".join(_MACROS)
            if self.cron.lstrip().startswith("@"):
                hint = f" (the shorthands are {known})"
            elif len(self.cron.split()) == 6:
                # A Quartz cron's year, last, was read as a day of the week.
                hint = " (six fields are read with seconds first; a year field is not taken)"
            else:
                hint = ""
            raise WorkflowDefinitionError(
                f"invalid cron expression {self.cron!r}: {exc}{hint}"
            ) from exc
        if self.catch_up not in get_args(CatchUp):
            raise WorkflowDefinitionError(
                f"catch_up must be one of {list(get_args(CatchUp))}, got {self.catch_up!r}"
            )
        if self.overlap not in get_args(Overlap):
            raise WorkflowDefinitionError(
                f"overlap must be one of {list(get_args(Overlap))}, got {self.overlap!r}"
            )
        if self.schedule_id is not None:
            check_schedule_id(self.schedule_id)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone, loaded."""
        return self._zone


def _moment(epoch: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(epoch, zone)


def _forward(cron: str, timezone: str, after: float) -> Iterator[float]:
    """The ticks strictly after ``after`` (epoch seconds), oldest first.

    cronsim walks wall-clock time: started in the second pass of an hour that
    the end of daylight saving time repeats, its first moments can be of the
    first pass, before ``after`` (a daily 01:30 in New York, from 01:15 EST,
    gave 01:30 EDT, an hour gone: a scheduler waiting for it spun). Those are
    left out.
    """
    for moment in _cronsim()(_expression(cron), _moment(after, _load_zone(timezone))):
        tick = moment.timestamp()
        if tick > after:
            yield tick


def next_tick(cron: str, timezone: str, after: float) -> float:
    """The first tick strictly after ``after`` (epoch seconds)."""
    return next(_forward(cron, timezone, after))


def ticks_after(cron: str, timezone: str, after: float, until: float, limit: int) -> list[float]:
    """The ticks in ``(after, until]``, oldest first, at most ``limit`` of them."""
    ticks: list[float] = []
    for tick in _forward(cron, timezone, after):
        if tick > until or len(ticks) >= limit:
            break
        ticks.append(tick)
    return ticks


def newest_tick(cron: str, timezone: str, until: float) -> float | None:
    """The newest tick at or before ``until``, or ``None`` (an expression that never matched)."""
    # A reverse walk yields ticks strictly before its start: start a whole second on,
    # past ``until`` but before the next tick (ticks fall on whole seconds).
    start = _moment(math.floor(until) + 1, _load_zone(timezone))
    newest = None
    for moment in _cronsim()(_expression(cron), start, reverse=True):
        tick = moment.timestamp()
        if tick <= until:
            newest = tick
            break
    if newest is None:
        return None
    # In the second pass of a repeated hour, a walk back by the wall clock passes over
    # the ticks of the first pass (01:15 EST back to yesterday's 01:30, past today's
    # 01:30 EDT): whatever lies between is the newest. Outside, this is one step.
    for tick in _forward(cron, timezone, newest):
        if tick > until:
            break
        newest = tick
    return newest


def ticks_before(cron: str, timezone: str, until: float, count: int) -> list[float]:
    """Up to ``count`` ticks at or before ``until``, newest first."""
    start = _moment(math.floor(until) + 1, _load_zone(timezone))
    ticks: list[float] = []
    for moment in _cronsim()(_expression(cron), start, reverse=True):
        tick = moment.timestamp()
        if tick > until:
            continue
        ticks.append(tick)
        if len(ticks) >= count:
            break
    # The newest may be one a walk back by the wall clock passed over (see newest_tick).
    newest = newest_tick(cron, timezone, until)
    if newest is not None and newest not in ticks:
        ticks = sorted({newest, *ticks}, reverse=True)[:count]
    return ticks


def tick_run_id(schedule_id: str, tick: float) -> str:
    """The id of the run a schedule starts for a tick: the same in every process."""
    moment = datetime.fromtimestamp(tick, UTC)
    return f"{tick_run_prefix(schedule_id)}{moment:%Y-%m-%dT%H:%M:%SZ}"


def tick_run_prefix(schedule_id: str) -> str:
    """What the ids of a schedule's runs begin with."""
    return f"schedule:{schedule_id}:"


def tick_of(schedule_id: str, run_id: str) -> datetime | None:
    """The tick a run of the schedule was started for, read from its id; ``None`` if not one."""
    prefix = tick_run_prefix(schedule_id)
    if not run_id.startswith(prefix):
        return None
    try:
        return datetime.strptime(run_id[len(prefix) :], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


_PUBLIC = ConfigDict(frozen=True, extra="forbid")


class ScheduledRun(BaseModel):
    """One of a schedule's recent runs, as :meth:`Runtime.schedules` lists them.

    Attributes:
        run_id: The run's id.
        tick_at: The tick it was started for (UTC).
        status: The run's status now.
    """

    model_config = _PUBLIC

    run_id: str
    tick_at: datetime
    status: RunStatus


class ScheduleInfo(BaseModel):
    """A schedule as the store keeps it, with when it fires next and its last runs.

    Attributes:
        schedule_id: The schedule's id.
        workflow_id: The workflow it starts.
        cron: Its cron expression.
        timezone: The time zone the expression is read in.
        input: Each run's input, as plain data.
        catch_up: Its policy for missed ticks.
        overlap: Its policy for a tick while the previous run goes on.
        paused: Whether it is paused (it fires nothing until resumed).
        next_fire_at: When it fires next (UTC); ``None`` while paused. A time
            already past is a tick due (missed, and fired by its ``catch_up``
            policy), which the next pass of a runtime that registers the
            workflow fires: one long past says no such runtime is running.
        last_tick_at: The newest tick handled: fired, or passed over by a
            policy (UTC); ``None`` before the first.
        last_runs: Its recent runs still in the store, newest first: those of
            its last few ticks, and the run of the newest tick that started
            one however long ago (the run the overlap policy waits for).
        buffered_tick_at: A tick whose run waits for the previous run to end
            (``overlap="buffer_one"``), else ``None``.
        error: Why this process cannot compute the schedule's ticks (a time
            zone its tz database lacks, say, or a cron its parser refuses),
            else ``None``; it fires none of them, and ``next_fire_at`` is ``None``.
    """

    model_config = _PUBLIC

    schedule_id: str
    workflow_id: str
    cron: str
    timezone: str
    input: Any = None
    catch_up: CatchUp
    overlap: Overlap
    paused: bool
    next_fire_at: datetime | None = None
    last_tick_at: datetime | None = None
    last_runs: list[ScheduledRun] = Field(default_factory=list)
    buffered_tick_at: datetime | None = None
    error: str | None = None


def utc(epoch: float | None) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (``None`` stays ``None``)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
