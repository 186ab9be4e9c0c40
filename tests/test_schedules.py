"""Cron schedules under a virtual clock: one run per tick across runtimes, catch-up, overlap."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import itertools
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
import structlog
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from rich.console import Console

from runtime import (
    InvalidInputError,
    Queue,
    Runtime,
    RuntimeStoppedError,
    Schedule,
    WorkflowDefinitionError,
    _clock,
    create_step,
    create_workflow,
)
from runtime import _schedule as schedule_module
from runtime._cli import main
from runtime._cli._schedules import schedules_table
from runtime._schedule import newest_tick, next_tick, tick_run_id
from runtime._stores import sqlite as sqlite_module
from runtime._stores.memory import MemoryStore
from runtime._stores.open import open_store
from runtime._stores.schedules import ScheduleRow, book_for, close_book
from runtime.testing import Harness, VirtualClock
from tests._support import wait_for_no_callboard_threads

START = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC).timestamp()
"""Half a minute past noon, UTC: the next */5 tick is 12:05."""

FIVE_MINUTES = 300.0


class Value(BaseModel):
    value: str


shout = create_step(
    id="shout",
    input_schema=Value,
    output_schema=Value,
    execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
)
report = create_workflow(id="report", input_schema=Value, output_schema=Value).then(shout).commit()

GATE = threading.Event()


def _held(ctx: Any) -> Value:
    GATE.wait(20)
    return Value(value="done")


held_step = create_step(id="held", input_schema=Value, output_schema=Value, execute=_held)
held = create_workflow(id="held", input_schema=Value, output_schema=Value).then(held_step).commit()


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    virtual = VirtualClock(START)
    _clock.install(virtual.now)
    try:
        yield virtual
    finally:
        _clock.uninstall()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    yield GATE
    GATE.set()


@pytest.fixture
def started() -> Iterator[list[Runtime]]:
    runtimes: list[Runtime] = []
    yield runtimes
    GATE.set()
    for rt in runtimes:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads(10)
    assert not left, [thread.name for thread in left]


def start(started: list[Runtime], store: Any, **options: Any) -> Runtime:
    rt = Runtime(store=store, **options).start()
    started.append(rt)
    return rt


def caught_up(clock: VirtualClock, *runtimes: Runtime) -> None:
    """Wait until every runtime's scheduler has looked at the schedules since the clock moved."""
    for rt in runtimes:
        scheduler = rt._scheduler
        assert scheduler is not None
        assert scheduler.caught_up(10), "the scheduler did not look in time"


def step(clock: VirtualClock, seconds: float, *runtimes: Runtime, settle: bool = True) -> None:
    """Move the clock, let the schedulers look, and (with ``settle``) let the runs end.

    Runs end in real time, not on the virtual clock: without waiting for them, the next
    tick could find the last run still going (and skip, by the default overlap policy).
    """
    clock.advance(seconds)
    caught_up(clock, *runtimes)
    if settle:
        for rt in runtimes:
            runs_end(rt)


def runs_end(rt: Runtime) -> None:
    store = rt.store
    assert store is not None
    deadline = time.monotonic() + 10
    while store.unfinished():
        assert time.monotonic() < deadline, "runs did not end"
        time.sleep(0.005)


def run_ids(rt: Runtime, workflow_id: str = "report") -> list[str]:
    store = rt.store
    assert store is not None
    records, _total = store.list_runs(workflow_id=workflow_id, limit=None)
    return sorted(record.run_id for record in records)


def tick(minutes_past_noon: int) -> float:
    return datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp() + 60 * minutes_past_noon


# --- definitions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "*/5 * * *"}, "invalid cron expression"),
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "* * * * *", "timezone": ""}, "time zone"),
        ({"cron": "* * * * *", "catch_up": "some"}, "catch_up must be one of"),
        ({"cron": "* * * * *", "overlap": "queue"}, "overlap must be one of"),
        ({"cron": "* * * * *", "overlap": "buffer_all"}, "overlap must be one of"),
        ({"cron": "* * * * *", "schedule_id": ""}, "schedule_id"),
        ({"cron": 5}, "cron must be a str"),
        ({"cron": "0 0 1 1 * 2030"}, "six fields are read with seconds first"),
    ],
)
def test_a_bad_schedule_is_refused_when_it_is_made(options: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=message):
        Schedule(**options)


def test_a_bad_schedule_is_refused_by_runtime_schedule_before_anything_is_stored(
    runtime: Runtime,
) -> None:
    with pytest.raises(WorkflowDefinitionError, match="invalid cron"):
        runtime.schedule(report, cron="every day")
    with pytest.raises(InvalidInputError, match="schedule 'report'"):
        runtime.schedule(report, cron="* * * * *", input_data={"value": 3})
    assert runtime.schedules() == []


class _Loose(BaseModel):
    value: Any


@pytest.mark.parametrize(
    ("value", "named"), [(2**64, "out of 64-bit range"), ("\ud800", "surrogate")]
)
def test_a_schedule_input_no_snapshot_can_hold_is_refused_when_it_is_made(
    runtime: Runtime, value: Any, named: str
) -> None:
    # JSON takes both, so the schedule was stored, and every tick failed to start a run
    # (a log line each; the schedule itself said nothing wrong).
    loose = runtime.register(
        create_workflow(id="loose", input_schema=_Loose, output_schema=_Loose)
        .then(create_step(id="keep", input_schema=_Loose, output_schema=_Loose, execute=_keep))
        .commit()
    )
    with pytest.raises(InvalidInputError, match=f"(?s){named}.*schedule 'loose'"):
        runtime.schedule(loose, cron="* * * * *", input_data={"value": value})
    assert runtime.schedules() == []


def _keep(ctx: Any) -> Any:
    return ctx.input_data


def test_a_workflow_schedule_input_is_checked_at_definition() -> None:
    with pytest.raises(InvalidInputError, match="input_data of schedule 'x'"):
        create_workflow(
            id="x",
            input_schema=Value,
            output_schema=Value,
            schedule=Schedule(cron="* * * * *", input_data={"nope": 1}),
        )
    with pytest.raises(WorkflowDefinitionError, match="share an id"):
        create_workflow(
            id="y",
            input_schema=Value,
            output_schema=Value,
            schedule=[
                Schedule(cron="* * * * *", input_data={"value": "a"}),
                Schedule(cron="*/2 * * * *", input_data={"value": "b"}),
            ],
        )
    with pytest.raises(TypeError, match="must be a Schedule"):
        create_workflow(id="z", input_schema=Value, output_schema=Value, schedule="* * * * *")  # type: ignore[arg-type]


def test_without_the_cron_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)
    with pytest.raises(ImportError, match=r"callboard\[cron\]"):
        Schedule(cron="* * * * *")


def test_ticks_follow_the_time_zone_across_daylight_saving_time() -> None:
    winter = datetime(2026, 1, 5, 0, 0, tzinfo=UTC).timestamp()
    summer = datetime(2026, 7, 6, 0, 0, tzinfo=UTC).timestamp()
    assert next_tick("0 9 * * *", "Europe/Paris", winter) == winter + 8 * 3600  # UTC+1
    assert next_tick("0 9 * * *", "Europe/Paris", summer) == summer + 7 * 3600  # UTC+2
    assert newest_tick("*/5 * * * *", "UTC", tick(5)) == tick(5)
    assert newest_tick("*/5 * * * *", "UTC", tick(5) - 1) == tick(0)
    assert tick_run_id("nightly", tick(5)) == "schedule:nightly:2026-01-05T12:05:00Z"


def test_in_the_repeated_hour_the_next_tick_is_ahead_and_the_newest_is_behind() -> None:
    # New York falls back at 02:00 EDT on 2025-11-02: 01:00-01:59 comes twice. From
    # 01:15 EST the next tick of a daily 01:30 was 01:30 EDT, an hour gone (a scheduler
    # waiting for it spun for the hour), and the newest was yesterday's.
    zone = "America/New_York"
    first_pass = datetime(2025, 11, 2, 5, 30, tzinfo=UTC).timestamp()  # 01:30 EDT
    second_pass = datetime(2025, 11, 2, 6, 15, tzinfo=UTC).timestamp()  # 01:15 EST
    tomorrow = datetime(2025, 11, 3, 6, 30, tzinfo=UTC).timestamp()  # 01:30 EST
    assert next_tick("30 1 * * *", zone, second_pass) == tomorrow
    assert newest_tick("30 1 * * *", zone, second_pass) == first_pass


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("America/New_York", (2025, 11, 2, 4)),  # falls back at 06:00 UTC
        ("America/New_York", (2025, 3, 9, 5)),  # springs forward at 07:00 UTC
        ("Europe/Berlin", (2025, 10, 26, 0)),  # falls back at 01:00 UTC
        ("Europe/Berlin", (2025, 3, 30, 0)),  # springs forward at 01:00 UTC
        ("Australia/Lord_Howe", (2025, 4, 5, 14)),  # falls back half an hour at 15:00 UTC
    ],
)
def test_ticks_around_daylight_saving_time_are_ordered(
    zone: str, day: tuple[int, int, int, int]
) -> None:
    # Every 5 minutes of 6 hours around a change of the clocks: the next tick is after
    # the moment, the newest at or before it, and none lies between.
    begin = datetime(*day, tzinfo=UTC).timestamp()
    for cron in ("30 1 * * *", "30 2 * * *", "0 * * * *", "*/20 * * * *", "15 1,2 * * *"):
        for minutes in range(0, 6 * 60, 5):
            now = begin + minutes * 60 + 7.5
            following, newest = next_tick(cron, zone, now), newest_tick(cron, zone, now)
            assert following > now, (cron, now)
            assert newest is not None and newest <= now, (cron, now)
            assert next_tick(cron, zone, newest) == following, (cron, now)


@pytest.mark.parametrize(
    ("shorthand", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@Annually", "0 0 1 1 *"),
    ],
)
def test_the_cron_shorthands_tick_as_the_fields_they_stand_for(shorthand: str, fields: str) -> None:
    # "@daily" was "invalid cron expression '@daily': Wrong number of fields".
    Schedule(cron=shorthand)
    start = datetime(2027, 3, 10, 12, 30, tzinfo=UTC).timestamp()
    later = next_tick(shorthand, "Europe/Paris", start)

    assert later == next_tick(fields, "Europe/Paris", start)
    assert newest_tick(shorthand, "UTC", later + 1) == newest_tick(fields, "UTC", later + 1)


def test_a_shorthand_cron_does_not_know_is_refused_naming_those_it_does() -> None:
    with pytest.raises(WorkflowDefinitionError, match="the shorthands are @yearly"):
        Schedule(cron="@reboot")


# --- firing -----------------------------------------------------------------------------


def test_a_schedule_starts_one_run_per_tick(clock: VirtualClock, started: list[Runtime]) -> None:
    rt = start(started, "memory")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "hi"})
    step(clock, 200, rt)  # 12:03:50: no tick yet
    assert run_ids(rt) == []
    step(clock, 70, rt)  # 12:05:00
    assert run_ids(rt) == [tick_run_id("report", tick(5))]
    step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt) == [tick_run_id("report", tick(5)), tick_run_id("report", tick(10))]
    result = rt.register(report).create_run(tick_run_id("report", tick(5))).wait(10)
    assert result.result == {"value": "HI"}
    [info] = rt.schedules()
    assert info.next_fire_at == datetime.fromtimestamp(tick(15), UTC)
    assert info.last_tick_at == datetime.fromtimestamp(tick(10), UTC)
    assert [run.run_id for run in info.last_runs] == [
        tick_run_id("report", tick(10)),
        tick_run_id("report", tick(5)),
    ]


def _three_runtimes_make_one_run_per_tick(
    clock: VirtualClock, started: list[Runtime], store: Any
) -> None:
    fleet = [start(started, store) for _ in range(3)]
    for rt in fleet:
        rt.schedule(report, cron="*/5 * * * *", input_data={"value": "fleet"})
    step(clock, 270, *fleet)  # 12:05
    for _ in range(5):
        step(clock, FIVE_MINUTES, *fleet)
    expected = sorted(tick_run_id("report", tick(minute)) for minute in range(5, 31, 5))
    assert run_ids(fleet[0]) == expected
    for run_id in expected:
        assert fleet[0].register(report).create_run(run_id).wait(10).status == "success"
    assert len(fleet[0].schedules()) == 1


def test_three_runtimes_on_one_sqlite_file_make_one_run_per_tick(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path
) -> None:
    _three_runtimes_make_one_run_per_tick(clock, started, tmp_path / "runs.db")


@pytest.mark.postgres
def test_three_runtimes_on_one_postgres_store_make_one_run_per_tick(
    clock: VirtualClock, started: list[Runtime], postgres_url: str
) -> None:
    _three_runtimes_make_one_run_per_tick(clock, started, postgres_url)


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("latest", [5, 30]), ("skip", [5]), ("all", [5, 10, 15, 20, 25, 30])],
)
def test_ticks_missed_while_every_runtime_was_down_follow_the_catch_up_policy(
    clock: VirtualClock,
    started: list[Runtime],
    tmp_path: Path,
    catch_up: str,
    expected: list[int],
) -> None:
    path = tmp_path / "runs.db"
    first = start(started, path)
    first.schedule(
        report,
        cron="*/5 * * * *",
        input_data={"value": "x"},
        catch_up=catch_up,  # type: ignore[arg-type]
        # With "all", each missed tick's run starts while the one before still goes on.
        overlap="allow" if catch_up == "all" else "skip",
    )
    step(clock, 270, first)  # 12:05 fires
    first.stop()
    clock.advance(27 * 60)  # 12:32: 12:10 ... 12:30 were missed, 12:30 by two minutes
    second = start(started, path)
    second.register(report)  # the schedule is in the store: registering the workflow is enough
    caught_up(clock, second)
    assert run_ids(second) == sorted(tick_run_id("report", tick(minute)) for minute in expected)
    runs_end(second)
    step(clock, 3 * 60, second)  # 12:35 fires on time, whatever the policy
    assert tick_run_id("report", tick(35)) in run_ids(second)


@pytest.mark.parametrize("catch_up", ["latest", "skip"])
def test_ticks_less_than_a_minute_late_each_get_their_run_whatever_the_policy(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path, catch_up: str
) -> None:
    # A schedule every 10 s whose runtimes were down (or held up) for 40 s: those ticks
    # were not missed (the README: a tick is missed once more than a minute past), yet
    # only the newest ran, and none with "skip" once it too was a little late.
    path = tmp_path / "runs.db"
    first = start(started, path)
    first.schedule(
        report,
        cron="*/10 * * * * *",
        input_data={"value": "x"},
        catch_up=catch_up,  # type: ignore[arg-type]
        overlap="allow",
    )
    step(clock, 10, first)  # 12:00:40 fires
    first.stop()
    clock.advance(46)  # 12:01:26: 12:00:50, 12:01:00, 12:01:10 and 12:01:20 are due
    second = start(started, path)
    second.register(report)
    caught_up(clock, second)
    expected = [tick(0) + 40, tick(0) + 50, tick(1), tick(1) + 10, tick(1) + 20]
    assert run_ids(second) == sorted(tick_run_id("report", moment) for moment in expected)
    runs_end(second)


def test_a_tick_while_the_previous_run_goes_on_is_skipped_by_default(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event
) -> None:
    rt = start(started, "memory")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"})
    step(clock, 270, rt, settle=False)
    step(clock, FIVE_MINUTES, rt, settle=False)  # the 12:05 run still holds: 12:10 is skipped
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5))]
    gate.set()
    rt.register(held).create_run(tick_run_id("held", tick(5))).wait(10)
    step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5)), tick_run_id("held", tick(15))]


@pytest.mark.usefixtures("_structlog_reset")
def test_a_tick_into_a_full_queue_says_so_and_starts_its_run_once_there_is_room(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event
) -> None:
    narrow = Queue("narrow", concurrency=1, max_queued=1)
    queued = (
        create_workflow(id="queued", input_schema=Value, output_schema=Value, queue=narrow)
        .then(held_step)
        .commit()
    )
    rt = start(started, "memory")
    workflow = rt.register(queued)
    others = [workflow.create_run() for _ in range(2)]  # one executes, one waits: full
    others[0].start_async(input_data={"value": "x"})
    deadline = time.monotonic() + 10
    while (now := workflow.get_workflow_run_execution_result(others[0].run_id)) is None or (
        now.status != "running"
    ):
        assert time.monotonic() < deadline, "the first run did not begin"
        time.sleep(0.005)
    others[1].start_async(input_data={"value": "x"})
    rt.schedule(queued, cron="*/5 * * * *", input_data={"value": "x"})
    with structlog.testing.capture_logs() as logs:
        step(clock, 270, rt, settle=False)
    tick_run = tick_run_id("queued", tick(5))
    assert tick_run not in run_ids(rt, "queued")
    [deferred] = [log for log in logs if log["event"] == "schedule_tick_deferred"]
    assert deferred["queue"] == "narrow" and deferred["run_id"] == tick_run
    assert "later pass" in deferred["hint"] and "start it again" not in str(deferred)
    assert not [log for log in logs if log["event"] == "schedule_tick_failed"]
    gate.set()
    for run in others:
        run.wait(10)
    caught_up(clock, rt)  # the next pass, once the queue has room: the tick is not lost
    assert workflow.create_run(tick_run).wait(10).status == "success"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_location(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A location of a store that several runtimes share, of each kind."""
    if request.param == "sqlite":
        return tmp_path / "runs.db"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("catch_up", ["skip", "latest"])
def test_a_tick_deferred_by_a_full_queue_keeps_its_run_past_a_minute_and_a_restart(
    clock: VirtualClock, started: list[Runtime], shared_location: Any, catch_up: str
) -> None:
    # Left due, a deferred tick became a missed one once the queue stayed full for more
    # than a minute: catch_up="skip" dropped it, and "latest" fired the next tick instead.
    # And a runtime that never saw the deferral (the first one stopped) knew nothing of it.
    path = shared_location
    narrow = Queue("narrow", max_queued=1)
    queued = (
        create_workflow(id="queued", input_schema=Value, output_schema=Value, queue=narrow)
        .then(shout)
        .commit()
    )
    # A run of a workflow no runtime here runs holds the queue's one place.
    filler = (
        create_workflow(id="filler", input_schema=Value, output_schema=Value, queue=narrow)
        .then(shout)
        .commit()
    )
    client = start(started, path, role="client")
    waiting = client.register(filler).create_run()
    waiting.start_async(input_data={"value": "x"})
    first = start(started, path)
    first.schedule(queued, cron="*/5 * * * *", input_data={"value": "x"}, catch_up=catch_up)  # type: ignore[arg-type]
    step(clock, 270, first, settle=False)  # 12:05: the queue is full, the tick deferred
    tick_run = tick_run_id("queued", tick(5))
    assert tick_run not in run_ids(first, "queued")
    first.stop()
    clock.advance(7 * 60)  # 12:12: 12:05 is seven minutes old, and 12:10 came meanwhile
    second = start(started, path)
    second.register(queued)
    caught_up(clock, second)
    assert run_ids(second, "queued") == []  # still full: still deferred, and listed so
    [info] = second.schedules()
    assert info.buffered_tick_at == datetime.fromtimestamp(tick(5), UTC)
    assert waiting.cancel()  # the place is free
    caught_up(clock, second)
    assert second.register(queued).create_run(tick_run).wait(10).status == "success"


def test_overlap_allow_starts_a_run_while_the_previous_one_goes_on(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event
) -> None:
    rt = start(started, "memory")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, overlap="allow")
    step(clock, 270, rt, settle=False)
    step(clock, FIVE_MINUTES, rt, settle=False)
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5)), tick_run_id("held", tick(10))]


def test_overlap_buffer_one_starts_one_waiting_tick_once_the_previous_run_ends(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event, location: Any
) -> None:
    rt = start(started, location)
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, overlap="buffer_one")
    step(clock, 270, rt, settle=False)  # 12:05 starts and holds
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:10 waits
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:15 is dropped: one waits already
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5))]
    [info] = rt.schedules()
    assert info.buffered_tick_at == datetime.fromtimestamp(tick(10), UTC)
    gate.set()  # 12:05 ends: its end wakes the scheduler, which starts 12:10's run
    buffered = rt.register(held).create_run(tick_run_id("held", tick(10)))
    deadline = time.monotonic() + 10
    while rt.store is not None and rt.store.load(buffered.run_id) is None:
        assert time.monotonic() < deadline, "the buffered tick never started"
        time.sleep(0.01)
    assert buffered.wait(10).status == "success"
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5)), tick_run_id("held", tick(10))]
    [info] = rt.schedules()
    assert info.buffered_tick_at is None
    step(clock, FIVE_MINUTES, rt)  # 12:20 fires as usual
    assert tick_run_id("held", tick(20)) in run_ids(rt, "held")


def test_a_pause_drops_a_buffered_tick_so_the_resume_starts_nothing_for_it(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event, location: Any
) -> None:
    # The tick buffered before the pause started its run at the resume: a pause that
    # stopped nothing it had promised to stop.
    rt = start(started, location)
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, overlap="buffer_one")
    step(clock, 270, rt, settle=False)  # 12:05 starts and holds
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:10 waits
    assert rt.pause_schedule("held")
    [info] = rt.schedules()
    assert info.paused and info.buffered_tick_at is None
    gate.set()
    assert rt.register(held).create_run(tick_run_id("held", tick(5))).wait(10).status == "success"
    assert rt.resume_schedule("held")
    step(clock, 60, rt)  # 12:11: the resume's pass
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5))]
    step(clock, 4 * 60, rt)  # 12:15 fires as usual
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5)), tick_run_id("held", tick(15))]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A store location of each kind."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return tmp_path / "runs.db"
    return request.getfixturevalue("postgres_url")


def test_a_schedule_deleted_and_defined_again_still_skips_a_tick_while_its_run_goes_on(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event, location: Any
) -> None:
    # Defined again (a redeploy, `callboard schedules delete`), it had no last run: the
    # run its first definition started, still going, held nothing back, and two ran.
    rt = start(started, location)
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"})
    step(clock, 270, rt, settle=False)  # 12:05 starts and holds
    assert rt.delete_schedule("held")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"})
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:10: the 12:05 run still holds
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5))]
    gate.set()
    rt.register(held).create_run(tick_run_id("held", tick(5))).wait(10)
    step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5)), tick_run_id("held", tick(15))]


def test_pause_resume_and_delete(
    clock: VirtualClock, started: list[Runtime], location: Any
) -> None:
    rt = start(started, location)
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="every5")
    assert rt.pause_schedule("every5")
    [info] = rt.schedules()
    assert info.paused and info.next_fire_at is None
    step(clock, 270 + 2 * FIVE_MINUTES, rt)  # 12:15: three ticks while paused
    assert run_ids(rt) == []
    assert rt.resume_schedule("every5")
    caught_up(clock, rt)
    assert run_ids(rt) == []  # the ticks of the pause are skipped, not caught up
    step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt) == [tick_run_id("every5", tick(20))]
    assert rt.delete_schedule("every5")
    assert rt.schedules() == []
    step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt) == [tick_run_id("every5", tick(20))]  # its runs are kept
    assert not rt.pause_schedule("every5")
    assert not rt.resume_schedule("every5")
    assert not rt.delete_schedule("every5")


def test_a_workflow_defined_with_a_schedule_fires_once_registered(
    clock: VirtualClock, started: list[Runtime]
) -> None:
    nightly = (
        create_workflow(
            id="nightly",
            input_schema=Value,
            output_schema=Value,
            schedule=Schedule(cron="0 1 * * *", timezone="Europe/Paris", input_data={"value": "n"}),
        )
        .then(shout)
        .commit()
    )
    rt = start(started, "memory")
    rt.register(nightly)
    [info] = rt.schedules()
    assert info.schedule_id == "nightly" and info.timezone == "Europe/Paris"
    assert info.next_fire_at == datetime(2026, 1, 6, 0, 0, tzinfo=UTC)  # 1:00 in Paris
    step(clock, datetime(2026, 1, 6, 0, 0, tzinfo=UTC).timestamp() - clock.now(), rt)
    assert run_ids(rt, "nightly") == ["schedule:nightly:2026-01-06T00:00:00Z"]


def test_a_client_fires_nothing_and_a_worker_fires_what_it_defined(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    client = start(started, path, role="client")
    client.schedule(report, cron="*/5 * * * *", input_data={"value": "c"})
    assert client._scheduler is None
    clock.advance(270)
    worker = start(started, path, role="worker")
    worker.register(report)
    caught_up(clock, worker)
    assert run_ids(client) == [tick_run_id("report", tick(5))]
    assert client.register(report).create_run(tick_run_id("report", tick(5))).wait(10).status == (
        "success"
    )


@pytest.mark.parametrize(
    ("catch_up", "fires"),
    [("latest", tick(60)), ("all", tick(5)), ("skip", tick(65))],
)
def test_a_due_tick_that_no_runtime_fires_shows_as_a_past_next_fire_marked_overdue(
    catch_up: str, fires: float, clock: VirtualClock, started: list[Runtime], tmp_path: Path
) -> None:
    # It showed "now", an hour later as at once: no sign that nobody fires it.
    client = start(started, tmp_path / "runs.db", role="client")
    client.schedule(report, cron="*/5 * * * *", input_data={"value": "c"}, catch_up=catch_up)
    clock.advance(3750)  # 13:03:00: the 13:00 tick is past, and not on time any more
    [info] = client.schedules()
    assert info.next_fire_at == datetime.fromtimestamp(fires, UTC)

    console = Console(file=io.StringIO(), width=200)
    console.print(schedules_table([info], clock.now()))
    rendered = console.file.getvalue()  # type: ignore[attr-defined]
    assert ("overdue" in rendered) == (fires < clock.now())


# --- the command line ---------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_lists_pauses_resumes_and_deletes_schedules(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    rt = start(started, db)
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="five")
    step(clock, 270, rt)
    rt.stop()

    code, out, _ = cli(capsys, "schedules", "list", "--db", db)
    assert code == 0
    assert "five" in out and "*/5 * * * *" in out and "active" in out
    assert tick_run_id("five", tick(5)) in out and "success" in out
    code, out, _ = cli(capsys, "schedules", "list", "--db", db, "--json")
    [listed] = json.loads(out)
    assert listed["schedule_id"] == "five" and listed["last_runs"][0]["status"] == "success"

    assert cli(capsys, "schedules", "pause", "five", "--db", db)[:2] == (
        0,
        "schedule five paused\n",
    )
    assert json.loads(cli(capsys, "schedules", "list", "--db", db, "--json")[1])[0]["paused"]
    assert cli(capsys, "schedules", "resume", "five", "--db", db)[0] == 0
    assert not json.loads(cli(capsys, "schedules", "list", "--db", db, "--json")[1])[0]["paused"]
    assert cli(capsys, "schedules", "delete", "five", "--db", db)[0] == 0
    code, out, _ = cli(capsys, "schedules", "list", "--db", db)
    assert code == 0 and "0 schedules" in out
    code, _, err = cli(capsys, "schedules", "delete", "five", "--db", db)
    assert code == 3 and "no schedule 'five'" in err


def test_the_cli_lists_no_schedules_in_a_file_from_before_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(sqlite_module._SCHEMA)
    for steps in sqlite_module._MIGRATIONS[:2]:
        for statement in steps:
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 3")
    connection.close()
    code, out, _ = cli(capsys, "schedules", "list", "--db", str(path))
    assert code == 0 and "0 schedules" in out


# --- faults -------------------------------------------------------------------------------


def test_a_schedule_fires_on_the_runtime_that_recovers_from_a_crash(tmp_path: Path) -> None:
    with Harness(store=tmp_path / "runs.db", time_skipping=False) as harness:
        harness.register(report)
        harness.runtime.schedule(report, cron="*/5 * * * *", input_data={"value": "x"})
        harness.clock.advance(FIVE_MINUTES)
        harness.fire_schedules()
        runs_end(harness.runtime)
        harness.crash_and_recover()
        harness.clock.advance(FIVE_MINUTES)
        harness.fire_schedules()
        runs_end(harness.runtime)
        assert len(run_ids(harness.runtime)) == 2


class Other(BaseModel):
    other: int


def test_a_stored_input_the_workflow_no_longer_takes_skips_the_tick_and_says_so(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path, _structlog_reset: None
) -> None:
    path = tmp_path / "runs.db"
    first = start(started, path)
    first.schedule(report, cron="*/5 * * * *", input_data={"value": "x"})
    first.stop()
    changed = (
        create_workflow(id="report", input_schema=Other, output_schema=Other)
        .then(
            create_step(
                id="same", input_schema=Other, output_schema=Other, execute=lambda c: c.input_data
            )
        )
        .commit()
    )
    second = start(started, path)
    second.register(changed)
    with structlog.testing.capture_logs() as logs:
        step(clock, 270, second)
        step(clock, FIVE_MINUTES, second)
    assert run_ids(second) == []
    refused = [log for log in logs if log["event"] == "schedule_input_invalid"]
    assert len(refused) == 2 and "other" in refused[0]["error"]
    [info] = second.schedules()
    assert info.last_tick_at == datetime.fromtimestamp(tick(10), UTC)  # not stuck on 12:05


def test_a_new_cron_fires_from_its_next_tick_with_nothing_caught_up(
    clock: VirtualClock, started: list[Runtime], location: Any, _structlog_reset: None
) -> None:
    # A redeploy changes a stored schedule's cron: the new cron's ticks from before the
    # change were never due, even with catch_up="all" (12:05 and 12:10 here).
    rt = start(started, location)
    rt.schedule(report, cron="0 0 * * *", input_data={"value": "x"}, catch_up="all")
    step(clock, 780, rt)  # 12:13:30
    with structlog.testing.capture_logs() as logs:
        rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, catch_up="all")
        step(clock, 1, rt)
    assert run_ids(rt) == []
    [said] = [log for log in logs if log["event"] == "schedule_redefined"]
    assert (said["before"], said["after"]) == ("report 0 0 * * * UTC", "report */5 * * * * UTC")
    [info] = rt.schedules()
    assert info.next_fire_at == datetime.fromtimestamp(tick(15), UTC)
    step(clock, 90, rt)  # 12:15:01
    assert run_ids(rt) == [tick_run_id("report", tick(15))]
    with structlog.testing.capture_logs() as logs:  # the same definition again: no news
        rt.schedule(report, cron="*/5 * * * *", input_data={"value": "y"}, catch_up="all")
    assert [log for log in logs if log["event"] == "schedule_redefined"] == []


def test_the_run_a_tick_got_is_recorded_though_another_process_passed_over_that_tick(
    location: Any,
) -> None:
    # Two processes at one tick, overlap="skip": A read the last run going and passed
    # over the tick; B read it ended and started the tick's run. The schedule must wait
    # for B's run at the next tick, so B's run is the last run even though A moved first.
    store = MemoryStore() if location == "memory" else open_store(location)
    try:
        book = book_for(store)
        book.put(ScheduleRow("s", "report", "*/5 * * * *", "UTC", "{}", "skip", "skip", False, 0.0))
        assert book.advance("s", 300.0, "run-at-0")
        assert book.advance("s", 600.0, None)  # A: passed over
        assert book.advance("s", 600.0, "run-at-600")  # B: started it
        assert not book.advance("s", 600.0, None)  # a pass over it changes nothing more
        assert not book.advance("s", 300.0, "run-at-0")  # nor an older tick
        row = book.get("s")
        assert row is not None and (row.last_tick, row.last_run_id) == (600.0, "run-at-600")
    finally:
        close_book(store)
        store.close()


@pytest.mark.usefixtures("_structlog_reset")
def test_a_schedule_this_process_cannot_read_leaves_the_others_firing(
    clock: VirtualClock, started: list[Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process wrote a time zone this one's tz database lacks (an older tzdata):
    # that schedule fires nothing here, says why once, and the others go on.
    rt = start(started, "memory")
    rt.schedule(
        report,
        cron="*/5 * * * *",
        input_data={"value": "x"},
        schedule_id="a-kyiv",
        timezone="Europe/Kyiv",
    )
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="b-utc")
    real = schedule_module._load_zone

    def older_tzdata(name: str) -> Any:
        if name == "Europe/Kyiv":
            raise ZoneInfoNotFoundError(f"No time zone found with key {name}")
        return real(name)

    monkeypatch.setattr(schedule_module, "_load_zone", older_tzdata)
    with structlog.testing.capture_logs() as logs:
        step(clock, 270, rt)
        step(clock, FIVE_MINUTES, rt)
    assert run_ids(rt) == [tick_run_id("b-utc", tick(5)), tick_run_id("b-utc", tick(10))]
    [said] = [log for log in logs if log["event"] == "schedule_unusable"]
    assert said["schedule_id"] == "a-kyiv" and "Europe/Kyiv" in said["error"]
    kyiv, utc_one = rt.schedules()
    assert kyiv.error is not None and "Europe/Kyiv" in kyiv.error
    assert kyiv.next_fire_at is None
    assert utc_one.error is None and utc_one.next_fire_at == datetime.fromtimestamp(tick(15), UTC)


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [("overlap", "queue_all", "cannot read"), ("input", "{not json", "not JSON")],
)
def test_a_schedule_row_with_values_this_process_cannot_read_is_listed_as_such(
    clock: VirtualClock,
    started: list[Runtime],
    tmp_path: Path,
    *,
    column: str,
    value: str,
    said: str,
) -> None:
    # A policy a newer callboard wrote (or a damaged input) raised out of the listing, and
    # `callboard schedules list` showed a traceback and none of the schedules.
    rt = start(started, tmp_path / "runs.db")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="a-odd")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="b-fine")
    with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as raw, raw:
        raw.execute(f"UPDATE schedules SET {column} = ? WHERE schedule_id = 'a-odd'", (value,))

    odd, fine = rt.schedules()

    assert odd.schedule_id == "a-odd" and odd.error is not None and said in odd.error
    assert fine.schedule_id == "b-fine" and fine.error is None


@pytest.mark.usefixtures("_structlog_reset")
@pytest.mark.parametrize("column", ["created_at", "last_tick", "buffered"])
def test_a_schedule_whose_stored_time_is_not_a_number_is_listed_fires_nothing_and_is_mended(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path, column: str
) -> None:
    # A time written by hand into the SQLite file made every read of the schedules raise:
    # `schedules list` showed a traceback, and no schedule of the store fired at all.
    rt = start(started, tmp_path / "runs.db")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="a-odd")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="b-fine")
    with structlog.testing.capture_logs() as logs:
        with contextlib.closing(sqlite3.connect(tmp_path / "runs.db")) as raw, raw:
            raw.execute(f"UPDATE schedules SET {column} = 'x' WHERE schedule_id = 'a-odd'")
        # A pass that read the row before the damage (the schedule() calls poke one) is over
        # before the clock moves: it would fire the tick, as it found the row readable.
        caught_up(clock, rt)
        step(clock, 270, rt)
        step(clock, FIVE_MINUTES, rt)
    odd, fine = rt.schedules()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        listed = main(["schedules", "list", "--db", str(tmp_path / "runs.db")])

    assert run_ids(rt) == [tick_run_id("b-fine", tick(5)), tick_run_id("b-fine", tick(10))]
    [said] = [log for log in logs if log["event"] == "schedule_damaged"]  # once
    assert said["schedule_id"] == "a-odd" and f"its {column} is 'x'" in said["error"]
    assert odd.error is not None and column in odd.error and odd.next_fire_at is None
    assert fine.error is None
    assert listed == 0 and "a-odd" in out.getvalue() and "unreadable" in out.getvalue()
    # Defined again, it is mended, and fires from its next tick.
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="a-odd")
    step(clock, FIVE_MINUTES, rt)
    assert rt.schedules()[0].error is None
    assert tick_run_id("a-odd", tick(15)) in run_ids(rt)


def test_a_long_run_stays_listed_while_later_ticks_pass_it_over(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event
) -> None:
    rt = start(started, "memory")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"})
    step(clock, 270, rt, settle=False)  # 12:05 starts and holds
    for _ in range(6):  # six ticks passed over
        step(clock, FIVE_MINUTES, rt, settle=False)
    [info] = rt.schedules()
    assert [(run.run_id, run.status) for run in info.last_runs] == [
        (tick_run_id("held", tick(5)), "running")
    ]
    assert info.last_runs[0].tick_at == datetime.fromtimestamp(tick(5), UTC)


# --- the awaitable twins --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["schedule", "schedules", "pause_schedule", "resume_schedule", "delete_schedule"]
)
def test_every_schedule_call_has_an_awaitable_twin(name: str) -> None:
    twin = getattr(Runtime, "a" + name)
    assert inspect.iscoroutinefunction(twin)
    sync_params = list(inspect.signature(getattr(Runtime, name)).parameters)
    assert list(inspect.signature(twin).parameters) == sync_params


def test_schedules_are_managed_with_the_twins(runtime: Runtime) -> None:
    async def main() -> list[bool]:
        made = await runtime.aschedule(report, cron="0 * * * *", input_data={"value": "a"})
        assert made.schedule_id == "report"
        [info] = await runtime.aschedules()
        assert info.cron == "0 * * * *"
        return [
            await runtime.apause_schedule("report"),
            await runtime.aresume_schedule("report"),
            await runtime.adelete_schedule("report"),
            await runtime.adelete_schedule("report"),
        ]

    assert asyncio.run(main()) == [True, True, True, False]


@settings(max_examples=200, deadline=None)
@given(
    cron=st.text(alphabet=" */-,0123456789LW#?abcdefghijklmnopqrstuvwxyzJANFEBMONSUN", max_size=30),
    timezone=st.sampled_from(["UTC", "Europe/Paris", "", "Nowhere/City", "../etc", "utc"]),
)
def test_any_cron_and_zone_make_a_schedule_or_a_definition_error(cron: str, timezone: str) -> None:
    try:
        schedule = Schedule(cron=cron, timezone=timezone)
    except WorkflowDefinitionError:
        return
    # One that is made can say when it fires next (or that it never does).
    with contextlib.suppress(StopIteration):
        next_tick(schedule.cron, schedule.timezone, START)


def test_a_six_field_cron_fires_by_the_second(clock: VirtualClock, started: list[Runtime]) -> None:
    rt = start(started, "memory")
    rt.schedule(report, cron="*/10 * * * * *", input_data={"value": "s"}, schedule_id="secs")
    step(clock, 10, rt)  # 12:00:40
    step(clock, 10, rt)  # 12:00:50
    assert run_ids(rt) == [
        tick_run_id("secs", tick(0) + 40),
        tick_run_id("secs", tick(0) + 50),
    ]


# --- found by a helper probing schedules ---------------------------------------------------


def test_a_schedule_whose_id_begins_another_ones_is_not_held_back_by_its_runs(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event
) -> None:
    # "report" took the going runs of "report:eu" (ids "schedule:report:eu:...") for its
    # own previous run, and skipped every tick while one went on.
    rt = start(started, "memory")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="held:eu")
    step(clock, 270, rt, settle=False)  # 12:05: held:eu's run starts and holds
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"})  # "held", no last run
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:10
    assert tick_run_id("held", tick(10)) in run_ids(rt, "held")


def test_buffer_one_after_a_redeploy_waits_for_the_run_the_old_definition_left_going(
    clock: VirtualClock, started: list[Runtime], gate: threading.Event, location: Any
) -> None:
    # The tick was buffered, but nothing recorded the run it waited for: the next pass
    # started it at once, beside the old run.
    rt = start(started, location)
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, overlap="buffer_one")
    step(clock, 270, rt, settle=False)  # 12:05 starts and holds
    assert rt.delete_schedule("held")
    rt.schedule(held, cron="*/5 * * * *", input_data={"value": "x"}, overlap="buffer_one")
    step(clock, FIVE_MINUTES, rt, settle=False)  # 12:10 is buffered behind 12:05's run
    caught_up(clock, rt)  # and the next pass leaves it buffered
    assert run_ids(rt, "held") == [tick_run_id("held", tick(5))]
    [info] = rt.schedules()
    assert info.buffered_tick_at == datetime.fromtimestamp(tick(10), UTC)
    gate.set()  # 12:05 ends: 12:10's run starts
    buffered = rt.register(held).create_run(tick_run_id("held", tick(10)))
    deadline = time.monotonic() + 10
    while rt.store is not None and rt.store.load(buffered.run_id) is None:
        assert time.monotonic() < deadline, "the buffered tick never started"
        time.sleep(0.01)
    assert buffered.wait(10).status == "success"


def test_a_buffered_tick_another_process_started_no_longer_holds_the_slot(location: Any) -> None:
    # Two processes at one tick, overlap="buffer_one": A buffered it behind the last run,
    # B (reading that run ended) started its run. The slot stayed taken by a tick that
    # had its run: the next tick was dropped for it, and it started nothing.
    store = MemoryStore() if location == "memory" else open_store(location)
    try:
        book = book_for(store)
        book.put(
            ScheduleRow("s", "report", "*/5 * * * *", "UTC", "{}", "skip", "buffer_one", False, 0.0)
        )
        assert book.advance("s", 300.0, "run-at-300")
        assert book.advance("s", 600.0, None, buffer=True)  # A: buffered
        assert book.advance("s", 600.0, "run-at-600")  # B: started it
        row = book.get("s")
        assert row is not None
        assert (row.last_tick, row.last_run_id, row.buffered) == (600.0, "run-at-600", None)
        assert book.advance("s", 900.0, None, buffer=True)  # the next tick has the slot
        row = book.get("s")
        assert row is not None and row.buffered == 900.0
    finally:
        close_book(store)
        store.close()


def test_an_advance_that_buffers_a_tick_never_lets_go_of_it_when_done_again(
    location: Any,
) -> None:
    # A tick buffered behind a run a definition deleted since left going: the advance
    # records that run and buffers the tick. Done again (a PostgreSQL statement tried on
    # a new connection after its commit's reply was lost), it took the tick buffered for
    # one that had got its run, and let go of it: that tick never ran.
    store = MemoryStore() if location == "memory" else open_store(location)
    try:
        book = book_for(store)
        book.put(
            ScheduleRow("s", "report", "*/5 * * * *", "UTC", "{}", "skip", "buffer_one", False, 0.0)
        )
        assert book.advance("s", 600.0, "left-going", buffer=True)
        assert book.advance("s", 600.0, "left-going", buffer=True)
        row = book.get("s")
        assert row is not None
        assert (row.last_tick, row.last_run_id, row.buffered) == (600.0, "left-going", 600.0)
        # The tick's own run, started by another process, still takes it off the buffer.
        assert book.advance("s", 600.0, "run-at-600")
        row = book.get("s")
        assert row is not None and (row.last_run_id, row.buffered) == ("run-at-600", None)
    finally:
        close_book(store)
        store.close()


def test_a_tick_from_before_a_schedules_definition_does_not_move_it(location: Any) -> None:
    # A catch-up pass of a definition deleted and defined anew meanwhile recorded its old
    # tick on the new row: its ticks went back, and it caught up on the deleted one's.
    store = MemoryStore() if location == "memory" else open_store(location)
    try:
        book = book_for(store)
        book.put(ScheduleRow("s", "report", "* * * * *", "UTC", "{}", "all", "allow", False, 900.0))
        assert not book.advance("s", 600.0, "old-run")
        row = book.get("s")
        assert row is not None and (row.last_tick, row.last_run_id) == (None, None)
        assert book.advance("s", 960.0, "new-run")
    finally:
        close_book(store)
        store.close()


@pytest.mark.usefixtures("_structlog_reset")
def test_a_pause_made_during_a_catch_up_stops_its_remaining_ticks(
    clock: VirtualClock, started: list[Runtime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass fires up to 100 missed ticks; one paused (or deleted) while it did went on
    # starting the rest of them after the call returned.
    path = tmp_path / "runs.db"
    first = start(started, path)
    first.schedule(
        report, cron="*/5 * * * *", input_data={"value": "x"}, catch_up="all", overlap="allow"
    )
    first.stop()
    clock.advance(10 * FIVE_MINUTES)  # ten ticks missed
    from runtime import _scheduler as scheduler_module

    fired: list[str] = []
    real_start = scheduler_module.Scheduler._start

    def start_then_pause(self: Any, row: Any, plan: Any, at: float) -> str | None:
        run_id = real_start(self, row, plan, at)
        fired.append(str(run_id))
        if len(fired) == 3:
            assert second.pause_schedule("report")
        return run_id

    monkeypatch.setattr(scheduler_module.Scheduler, "_start", start_then_pause)
    second = start(started, path)
    second.register(report)
    caught_up(clock, second)
    assert len(fired) == 3
    runs_end(second)
    assert len(run_ids(second)) == 3


@pytest.mark.parametrize(
    ("cron", "same_as"), [("*/30 1 * * *", "0,30 1 * * *"), ("*/20 2 * * *", "0,20,40 2 * * *")]
)
def test_a_fixed_hour_is_fixed_across_daylight_saving_time_however_its_minutes_are_written(
    cron: str, same_as: str
) -> None:
    # A minute field beginning with "*" made the parser take it for a job of every hour:
    # in New York it fired in both passes of the hour autumn repeats, and not at all on
    # the day spring skips the hour 2.
    zone = "America/New_York"
    for begin, end in (
        (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 8, tzinfo=UTC)),
        (datetime(2026, 3, 8, 6, tzinfo=UTC), datetime(2026, 3, 8, 9, tzinfo=UTC)),
    ):
        got = schedule_module.ticks_after(cron, zone, begin.timestamp(), end.timestamp(), 100)
        want = schedule_module.ticks_after(same_as, zone, begin.timestamp(), end.timestamp(), 100)
        assert got == want and got


SPRING = datetime(2026, 3, 8, 7, tzinfo=UTC).timestamp()
"""When New York's clocks jump from 02:00 EST to 03:00 EDT."""

NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("six", "five"),
    [
        ("0 30 2 * * *", "30 2 * * *"),
        ("0 30 1 * * *", "30 1 * * *"),
        ("0 */30 2 * * *", "*/30 2 * * *"),
        ("0 0,30 1-3 * * *", "0,30 1-3 * * *"),
        ("0 0 * * * *", "0 * * * *"),
    ],
)
def test_a_six_field_cron_keeps_the_daylight_saving_rules_of_five_fields(
    six: str, five: str
) -> None:
    # cronsim keeps its rules of a fixed hour to five fields: in New York a daily
    # "0 30 2 * * *" never fired on the day spring skips 02:00-03:00, and "0 30 1 * * *"
    # fired twice on the day autumn repeats 01:00-02:00.
    for begin, end in (
        (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 8, tzinfo=UTC)),
        (datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 8, 9, tzinfo=UTC)),
    ):
        got = schedule_module.ticks_after(six, NEW_YORK, begin.timestamp(), end.timestamp(), 100)
        want = schedule_module.ticks_after(five, NEW_YORK, begin.timestamp(), end.timestamp(), 100)
        assert got == want and got, (six, begin)


def test_a_six_field_cron_with_seconds_fires_once_a_day_across_daylight_saving_time() -> None:
    autumn = datetime(2026, 11, 1, 5, 30, 15, tzinfo=UTC).timestamp()  # 01:30:15 EDT
    day = 24 * 3600
    assert schedule_module.ticks_after(
        "15 30 1 * * *", NEW_YORK, autumn - day, autumn + day - 1, 10
    ) == [autumn]
    [spring] = schedule_module.ticks_after(
        "15 30 2 * * *", NEW_YORK, SPRING - 3600, SPRING + 60, 10
    )
    # At the jump, 03:00, and a microsecond on for each second 02:30:15 lies in the gap, and one.
    assert tick_run_id("s", spring) == "schedule:s:2026-03-08T07:00:00.001816Z"


def test_a_six_field_daily_cron_makes_one_run_on_each_day_the_clocks_change() -> None:
    for cron, begin, local in (
        ("0 30 2 * * *", datetime(2026, 3, 8, 6, tzinfo=UTC), "03:00:00-0400"),
        ("0 30 1 * * *", datetime(2026, 11, 1, 4, tzinfo=UTC), "01:30:00-0400"),
    ):
        harness = Harness(time_skipping=False)
        harness.clock = VirtualClock(begin.timestamp())
        with harness:
            bound = harness.register(report)
            harness.runtime.schedule(
                report, cron=cron, timezone=NEW_YORK, input_data={"value": "x"},
                catch_up="all", overlap="allow",
            )  # fmt: skip
            for _ in range(16):  # four hours, a quarter at a time
                harness.clock.advance(15 * 60)
                harness.fire_schedules()
            runs = bound.list_workflow_runs(limit=None).runs
            ticks = [schedule_module.tick_of("report", run.run_id) for run in runs]
            assert [
                f"{moment.astimezone(ZoneInfo(NEW_YORK)):%H:%M:%S%z}"
                for moment in ticks
                if moment is not None
            ] == [local], cron


def test_each_tick_in_the_hour_spring_skips_fires_at_the_jump_with_a_run_id_of_its_own() -> None:
    # "0,30 2-3 * * *" on the day New York skips 02:00-03:00: 02:00 and 02:30 moved to
    # 03:00 and shared the id of 03:00's own tick, one run for three ticks.
    cron = "0,30 2-3 * * *"
    ticks = schedule_module.ticks_after(cron, NEW_YORK, SPRING - 3600, SPRING + 3600, 10)
    assert ticks == [SPRING, SPRING + 0.000001, SPRING + 0.001801, SPRING + 1800]
    assert [tick_run_id("s", moment) for moment in ticks] == [
        "schedule:s:2026-03-08T07:00:00Z",
        "schedule:s:2026-03-08T07:00:00.000001Z",  # 02:00, a second into the gap
        "schedule:s:2026-03-08T07:00:00.001801Z",  # 02:30
        "schedule:s:2026-03-08T07:30:00Z",
    ]
    for moment in ticks:
        read = schedule_module.tick_of("s", tick_run_id("s", moment))
        assert read is not None and read.timestamp() == moment
    # Walked from any of them, forward or back, the same ticks in the same order.
    for earlier, later in itertools.pairwise(ticks):
        assert next_tick(cron, NEW_YORK, earlier) == later
        assert newest_tick(cron, NEW_YORK, (earlier + later) / 2) == earlier
    assert schedule_module.ticks_before(cron, NEW_YORK, SPRING + 1800, 4) == ticks[::-1]
    assert schedule_module.ticks_before(cron, NEW_YORK, SPRING + 0.001, 2) == [
        SPRING + 0.000001,
        SPRING,
    ]


def _two_runtimes_make_a_run_for_each_tick_of_the_hour_spring_skips(
    started: list[Runtime], store: Any
) -> None:
    virtual = VirtualClock(SPRING - 3600)  # 01:00 EST
    _clock.install(virtual.now)
    try:
        fleet = [start(started, store) for _ in range(2)]
        for rt in fleet:
            rt.schedule(
                report, cron="0 2,3 * * *", timezone=NEW_YORK, input_data={"value": "x"},
                catch_up="all", overlap="allow",
            )  # fmt: skip
        for _ in range(12):  # three hours, a quarter at a time
            step(virtual, 15 * 60, *fleet)
        assert run_ids(fleet[0]) == [
            "schedule:report:2026-03-08T07:00:00.000001Z",  # 02:00, fired at 03:00
            "schedule:report:2026-03-08T07:00:00Z",
        ]
    finally:
        _clock.uninstall()


def test_two_runtimes_make_a_run_for_each_tick_of_the_hour_spring_skips(
    started: list[Runtime], tmp_path: Path
) -> None:
    _two_runtimes_make_a_run_for_each_tick_of_the_hour_spring_skips(started, tmp_path / "runs.db")


@pytest.mark.postgres
def test_two_runtimes_on_postgres_make_a_run_for_each_tick_of_the_hour_spring_skips(
    started: list[Runtime], postgres_url: str
) -> None:
    _two_runtimes_make_a_run_for_each_tick_of_the_hour_spring_skips(started, postgres_url)


def test_fire_schedules_starts_every_due_tick_however_many_passes_that_takes(
    tmp_path: Path,
) -> None:
    # A pass catches up on 100 ticks at most: it returned with 100 of 250 started.
    path = tmp_path / "runs.db"
    first = Harness(store=path, time_skipping=False)
    first.clock = VirtualClock(START)
    with first:
        first.runtime.schedule(
            report, cron="* * * * *", input_data={"value": "x"}, catch_up="all", overlap="allow"
        )
    later = Harness(store=path, time_skipping=False)
    later.clock = VirtualClock(START + 250 * 60)  # the runtimes were down meanwhile
    with later:
        bound = later.register(report)
        later.fire_schedules()
        assert bound.list_workflow_runs(limit=None).total == 250


def test_delete_schedule_before_the_start_forgets_nothing(tmp_path: Path) -> None:
    # It raised (the store opens at the start), having forgotten the definition: the
    # start then stored no schedule.
    rt = Runtime(store=tmp_path / "runs.db")
    rt.schedule(report, cron="*/5 * * * *", input_data={"value": "x"}, schedule_id="keep-me")
    with pytest.raises(RuntimeStoppedError):
        rt.delete_schedule("keep-me")
    with rt:
        assert [info.schedule_id for info in rt.schedules()] == ["keep-me"]
