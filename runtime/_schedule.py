"""Cron schedules: the public :class:`Schedule` spec, what a listing shows, and tick arithmetic.

A schedule starts one run of its workflow at every time its cron expression
names, in its time zone. Each tick's run has an id made from the schedule's
id and the tick's time (:func:`tick_run_id`), so that however many runtimes
share a store, a tick makes one run: the others find the id taken. The cron
expressions are read by `cronsim <https://pypi.org/project/cronsim/>`_, the
extra ``callboard[cron]``, and walked in the schedule's time zone, so a daily
``0 9 * * *`` in ``Europe/Paris`` stays at 9:00 across daylight saving time. The
rules for the hours the clocks skip or repeat are this module's (:func:`_wall_tick`),
the same for five fields and six.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


def _fixed_hour(expression: str) -> bool:
    """Whether the fields name fixed hours and minutes (``30 1 * * *``), not every hour's.

    Seconds first or not: the same rules of daylight saving time hold for both.
    """
    fields = expression.split()
    at = {5: 0, 6: 1}.get(len(fields))  # the minute's field (six: seconds first)
    return at is not None and not fields[at].startswith("*") and not fields[at + 1].startswith("*")


def _jump(wall: datetime, zone: ZoneInfo) -> int:
    """The moment (epoch seconds) the clocks jump over ``wall``, a local time spring skips.

    The zone's offset changes once between ``wall`` read with the offset after the
    jump and ``wall`` read with the one before: halve that span down to the second
    (the tz database puts its changes on whole seconds).
    """
    low, high = sorted(
        (
            int(wall.replace(tzinfo=zone, fold=1).timestamp()),
            int(wall.replace(tzinfo=zone, fold=0).timestamp()),
        )
    )
    after = _moment(high, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if _moment(middle, zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high


def _wall_tick(wall: datetime, zone: ZoneInfo) -> float:
    """The tick of a fixed hour's local time ``wall`` (naive), by the rules of the README.

    In an hour the end of daylight saving time repeats, the first pass (``fold=0``).
    In the hour spring skips, the moment the clocks jump (3:00 in New York) plus one
    microsecond for each second from the start of the gap to ``wall``, and one: each
    skipped time has a tick of its own, after a tick of 3:00 itself, in their order,
    and so a run id of its own (02:00 and 03:00 were one tick, and one run). Made
    from a whole number of microseconds, it reads back the same from a store.
    """
    first = wall.replace(tzinfo=zone)  # fold=0: the first pass of a repeated hour
    if _moment(first.timestamp(), zone).replace(tzinfo=None) == wall:
        return first.timestamp()
    jump = _jump(wall, zone)
    gap_start = _moment(jump - 1, zone).replace(tzinfo=None) + timedelta(seconds=1)
    late = round((wall - gap_start).total_seconds()) + 1
    return (jump * 1_000_000 + late) / 1_000_000


def _skipped(tick: float) -> bool:
    """Whether a tick stands for a time spring skipped: the only ticks off a whole second."""
    return tick != math.floor(tick)


def _walk(cron: str, timezone: str, start: float, *, reverse: bool = False) -> Iterator[float]:
    """The ticks after ``start`` (before, if ``reverse``) by the local wall clock.

    A fixed hour's ticks are walked as naive local times, each made a tick by
    :func:`_wall_tick`: cronsim applies its own rules of daylight saving time to
    five fields only, and six (seconds first) fired twice in a repeated hour and
    never in a skipped one. Every hour's ticks (``0 * * * *``) are walked in the
    zone's real time, both passes of a repeated hour and none of a skipped one.
    Near a jump of the clocks they may come slightly out of order (a tick of
    3:00 before the skipped times after it): :func:`_forward` orders them.
    """
    expression = _expression(cron)
    zone = _load_zone(timezone)
    if not _fixed_hour(expression):
        for moment in _cronsim()(expression, _moment(start, zone), reverse=reverse):
            yield moment.timestamp()
        return
    wall = _moment(start, zone).replace(tzinfo=None)
    for moment in _cronsim()(expression, wall, reverse=reverse):
        yield _wall_tick(moment, zone)


def _forward(cron: str, timezone: str, after: float) -> Iterator[float]:
    """The ticks strictly after ``after`` (epoch seconds), oldest first.

    The walk starts a second early: the skipped times of a spring gap tick in the
    second after the jump, behind their wall-clock start (from the tick of
    02:00, at 03:00 plus a microsecond, a walk from 03:00:00.000001 passed over
    02:30's). In the second pass of an hour the end of daylight saving time
    repeats, a wall-clock walk gives first moments of the first pass, before
    ``after`` (a daily 01:30 in New York, from 01:15 EST, gave 01:30 EDT, an hour
    gone: a scheduler waiting for it spun). Those are left out.
    """
    held: list[float] = []  # skipped times: a tick of 3:00 may come after them, and before
    for tick in _walk(cron, timezone, math.floor(after) - 1):
        if tick <= after:
            continue
        held.append(tick)
        if not _skipped(tick):
            # Any later tick is after this one, and after the skipped times before it.
            yield from sorted(held)
            held.clear()
    yield from sorted(held)


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


def _reaching_back(cron: str, timezone: str, until: float, count: int) -> float | None:
    """A tick at or before ``until`` with at least ``count - 1`` more between it and ``until``.

    The lowest of the first ``count`` ticks a walk back by the wall clock finds:
    those it passes over (the first pass of a repeated hour, from its second;
    the skipped times of a spring gap, behind 3:00) lie between, and a walk
    forward from it finds them. ``None`` if the expression never matched.
    """
    # A reverse walk yields ticks strictly before its start: start a whole second on,
    # past ``until`` (the ticks that are not whole seconds lie after one that is).
    found: list[float] = []
    for tick in _walk(cron, timezone, math.floor(until) + 1, reverse=True):
        if tick <= until:
            found.append(tick)
            if len(found) >= count:
                break
    return min(found, default=None)


def newest_tick(cron: str, timezone: str, until: float) -> float | None:
    """The newest tick at or before ``until``, or ``None`` (an expression that never matched)."""
    newest = _reaching_back(cron, timezone, until, 1)
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
    lowest = _reaching_back(cron, timezone, until, count)
    if lowest is None:
        return []
    ticks = [lowest]
    for tick in _forward(cron, timezone, lowest):
        if tick > until:
            break
        ticks.append(tick)
    return ticks[::-1][:count]


_TICK_SHAPE: Final = "%Y-%m-%dT%H:%M:%SZ"
_SKIPPED_SHAPE: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def tick_run_id(schedule_id: str, tick: float) -> str:
    """The id of the run a schedule starts for a tick: the same in every process.

    The tick's UTC time, to the second; with its microseconds for a time spring
    skipped, fired just after the jump (``2026-03-08T07:00:00.001801Z``).
    """
    moment = datetime.fromtimestamp(tick, UTC)
    shape = _SKIPPED_SHAPE if moment.microsecond else _TICK_SHAPE
    return f"{tick_run_prefix(schedule_id)}{moment.strftime(shape)}"


def tick_run_prefix(schedule_id: str) -> str:
    """What the ids of a schedule's runs begin with."""
    return f"schedule:{schedule_id}:"


def tick_of(schedule_id: str, run_id: str) -> datetime | None:
    """The tick a run of the schedule was started for, read from its id; ``None`` if not one."""
    prefix = tick_run_prefix(schedule_id)
    if not run_id.startswith(prefix):
        return None
    for shape in (_TICK_SHAPE, _SKIPPED_SHAPE):
        try:
            return datetime.strptime(run_id[len(prefix) :], shape).replace(tzinfo=UTC)
        except ValueError:
            pass
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
            (``overlap="buffer_one"``), or for room in its queue (``max_queued``),
            else ``None``.
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
