"""A clock that ran ahead for a moment does not silence a cron schedule, on any store.

A runtime whose clock ran an hour ahead fired the tick of "now + 1 h" and stored it as
the schedule's last tick, which moves only forward: once its clock was right, no runtime
on the store fired any tick for an hour. A pass now moves such a tick back, judged by the
store's clock, with a compare-and-set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from pydantic import BaseModel

from runtime import Runtime, _clock, create_step, create_workflow
from runtime import _scheduler as scheduler_module
from runtime._schedule import tick_run_id
from runtime._stores import postgres as postgres_module
from runtime._stores.memory import MemoryStore
from runtime._stores.open import open_store
from runtime._stores.schedules import AHEAD_MARGIN, ScheduleRow, book_for, close_book
from tests._support import wait_for_no_callboard_threads

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


class Value(BaseModel):
    value: str


echo = create_step(
    id="echo", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
)
echoes = create_workflow(id="echoes", input_schema=Value, output_schema=Value).then(echo).commit()


class MovableClock:
    """A clock a test sets anywhere, back too: a host's clock that ran ahead and was put right."""

    def __init__(self, start: float) -> None:
        self.now = start

    def read(self) -> float:
        return self.now

    def set(self, when: float) -> None:
        with _clock.jumping():  # live workers renew their leases at the new time
            self.now = when


@pytest.fixture
def clock() -> Iterator[MovableClock]:
    movable = MovableClock(T0)
    _clock.install(movable.read)
    try:
        yield movable
    finally:
        _clock.uninstall()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A store location of each kind."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return tmp_path / "runs.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def started() -> Iterator[list[Runtime]]:
    runtimes: list[Runtime] = []
    yield runtimes
    for rt in runtimes:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads(10)
    assert not left, [thread.name for thread in left]


def passes(*runtimes: Runtime) -> None:
    """Have every runtime's scheduler look at the schedules, and its runs end."""
    for rt in runtimes:
        assert rt._scheduler is not None
        assert rt._scheduler.caught_up(10), "the scheduler did not look in time"
    for rt in runtimes:
        store = rt.store
        assert store is not None
        deadline = time.monotonic() + 10
        while store.unfinished():
            assert time.monotonic() < deadline, "runs did not end"
            time.sleep(0.005)


def run_ids(rt: Runtime) -> set[str]:
    store = rt.store
    assert store is not None
    records, _ = store.list_runs(workflow_id="echoes", limit=None)
    return {record.run_id for record in records}


@pytest.mark.usefixtures("_structlog_reset")
def test_a_tick_stored_by_a_clock_that_ran_ahead_is_moved_back_and_fires_again(
    clock: MovableClock, started: list[Runtime], location: Any
) -> None:
    # Two runtimes on a shared store (one on memory, whose store is its own): both ran an
    # hour ahead for a moment, as the probe's one did, and both are put right at once.
    fleet = [Runtime(store=location).start() for _ in range(1 if location == "memory" else 2)]
    started.extend(fleet)
    with structlog.testing.capture_logs() as logs:
        for rt in fleet:
            rt.schedule(
                echoes,
                cron="*/2 * * * * *",
                input_data={"value": "x"},
                schedule_id="s",
                overlap="allow",  # every tick gets its run, however long the last one takes
            )
        for offset in (2, 4):
            clock.set(T0 + offset)
            passes(*fleet)
        clock.set(T0 + 4 + HOUR)  # the clock runs an hour ahead...
        passes(*fleet)
        clock.set(T0 + 6 + HOUR)
        passes(*fleet)
        early = run_ids(fleet[0])
        assert tick_run_id("s", T0 + 6 + HOUR) in early
        clock.set(T0 + 7)  # ...and is put right
        passes(*fleet)
        [info] = fleet[0].schedules()
        assert info.last_tick_at == datetime.fromtimestamp(T0 + 6, UTC)  # moved back
        for offset in (8, 10):  # it fires again at its very next ticks
            clock.set(T0 + offset)
            passes(*fleet)
            assert tick_run_id("s", T0 + offset) in run_ids(fleet[0])
        # Real time reaches the ticks fired early: their runs exist, and none starts again.
        for offset in (HOUR - 2, HOUR, HOUR + 2, HOUR + 4, HOUR + 6, HOUR + 8):
            clock.set(T0 + offset)
            passes(*fleet)
        assert tick_run_id("s", T0 + HOUR + 8) in run_ids(fleet[0])
    fired = [entry["run_id"] for entry in logs if entry["event"] == "schedule_fired"]
    assert len(fired) == len(set(fired)), "a tick's run was started twice"
    assert set(fired) == run_ids(fleet[0])
    assert {tick_run_id("s", T0 + HOUR + offset) for offset in (0, 2, 4, 6)} <= early
    warned = [entry for entry in logs if entry["event"] == "schedule_tick_ahead_of_clock"]
    assert len(warned) == 1, warned  # one runtime moved it back, and said so once
    assert warned[0]["schedule_id"] == "s"
    assert warned[0]["tick"] == T0 + 6 + HOUR
    assert warned[0]["store_time"] == T0 + 7
    assert warned[0]["rewound_to"] == T0 + 6
    assert warned[0]["log_level"] == "warning"


def _book_with_an_ahead_tick(location: Any) -> tuple[Any, Any]:
    store = MemoryStore() if location == "memory" else open_store(location)
    book = book_for(store)
    book.put(ScheduleRow("s", "echoes", "* * * * * *", "UTC", "{}", "latest", "skip", False, T0))
    assert book.advance("s", T0 + HOUR, "early-run")  # stored by a clock an hour ahead
    return store, book


def test_a_rewind_is_a_compare_and_set_against_a_concurrent_advance(
    clock: MovableClock, location: Any
) -> None:
    store, book = _book_with_an_ahead_tick(location)
    try:
        assert book.clock() == pytest.approx(T0)
        # The runtime still ahead advanced after this one read the tick: nothing moves back.
        assert book.advance("s", T0 + HOUR + 1, None)
        assert not book.rewind("s", T0 + HOUR, T0)
        assert book.get("s").last_tick == T0 + HOUR + 1
        # Read anew, it moves back; a second runtime's rewind of the same read does nothing.
        assert book.rewind("s", T0 + HOUR + 1, T0)
        assert not book.rewind("s", T0 + HOUR + 1, T0 - 1)
        row = book.get("s")
        assert (row.last_tick, row.last_run_id) == (T0, "early-run")
        # Ticks go forward from there; a tick no later than the store's clock never moves back.
        assert book.advance("s", T0 + 1, "on-time-run")
        assert not book.rewind("s", T0 + 1, T0)
        # Many runtimes at once, from one read: exactly one moves it back.
        assert book.advance("s", T0 + HOUR + 2, None)
        results: list[bool] = []
        threads = [
            threading.Thread(target=lambda: results.append(book.rewind("s", T0 + HOUR + 2, T0 + 1)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 7 + [True]
        assert book.get("s").last_tick == T0 + 1
    finally:
        close_book(store)
        store.close()


def test_a_tick_within_the_margin_of_the_stores_clock_is_not_moved_back(
    clock: MovableClock, location: Any
) -> None:
    store, book = _book_with_an_ahead_tick(location)
    try:
        clock.set(T0 + HOUR - AHEAD_MARGIN)  # ordinary skew: the tick is hardly ahead
        assert not book.rewind("s", T0 + HOUR, T0)
        assert book.get("s").last_tick == T0 + HOUR
    finally:
        close_book(store)
        store.close()


@pytest.mark.postgres
@pytest.mark.usefixtures("_structlog_reset")
def test_a_runtime_whose_clock_is_behind_the_databases_moves_no_tick_back(
    started: list[Runtime], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database's clock is the real one (no session is told a test's time); this
    # runtime's clock is an hour behind it. The ticks stored by runtimes whose clocks are
    # right look an hour ahead to it, but are not: the database's clock decides.
    monkeypatch.setattr(postgres_module, "_virtual_now", lambda connection: None)
    real = time.time()
    behind = MovableClock(real - HOUR)
    _clock.install(behind.read)
    try:
        rt = Runtime(store=postgres_url).start()
        started.append(rt)
        rt.schedule(echoes, cron="0 * * * *", input_data={"value": "x"}, schedule_id="s")
        book = book_for(rt.store)
        assert book.clock() == pytest.approx(real, abs=30)
        stored = real - real % 60  # a correct host's tick of this minute
        assert book.advance("s", stored, "correct-run")
        with structlog.testing.capture_logs() as logs:
            passes(rt)
            assert not book.rewind("s", stored, stored - HOUR)  # the store refuses, too
        assert book.get("s").last_tick == stored
        assert not [entry for entry in logs if entry["event"] == "schedule_tick_ahead_of_clock"]
        # A tick truly ahead of the database's clock is moved back, even by this runtime.
        assert book.advance("s", stored + 2 * HOUR, None)
        assert book.rewind("s", stored + 2 * HOUR, stored)
    finally:
        _clock.uninstall()


@pytest.mark.usefixtures("_structlog_reset")
@pytest.mark.parametrize(("said_again", "warnings"), [(3600.0, 1), (0.0, 2)])
def test_a_schedule_moved_back_again_is_said_again_only_after_a_while(
    clock: MovableClock,
    started: list[Runtime],
    monkeypatch: pytest.MonkeyPatch,
    said_again: float,
    warnings: int,
) -> None:
    # A host whose clock stays ahead stores a tick ahead at each of its passes: a runtime
    # that moves them back says so once, not at every pass, until a while has passed.
    monkeypatch.setattr(scheduler_module, "AHEAD_SAID_AGAIN", said_again)
    rt = Runtime().start()
    started.append(rt)
    rt.schedule(echoes, cron="0 * * * *", input_data={"value": "x"}, schedule_id="s")
    book = rt._book()
    with structlog.testing.capture_logs() as logs:
        for ahead in (HOUR, 2 * HOUR):
            assert book.advance("s", T0 + ahead, None)  # as the host ahead stores it
            passes(rt)
            assert book.get("s").last_tick == T0
    said = [entry for entry in logs if entry["event"] == "schedule_tick_ahead_of_clock"]
    assert len(said) == warnings
