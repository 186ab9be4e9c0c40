"""Cron schedules fired by worker processes that share one store (SQLite, PostgreSQL)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from runtime._schedule import tick_of
from tests.durable._support.workflows import read_lines
from tests.shared._workflows import WORKFLOWS
from tests.shared.conftest import Fleet

WAIT = 30.0


def test_worker_processes_fire_every_tick_on_after_the_firing_one_is_killed(
    fleet: Fleet, tmp_path: Path
) -> None:
    workers = fleet.start_workers(3, concurrency=4)
    client = fleet.runtime("client")  # defines and pauses the schedule, fires none of it
    log = tmp_path / "ticks.log"
    client.schedule(
        WORKFLOWS["ticker"],
        cron="* * * * * *",  # every second
        input_data={"value": str(log)},
        schedule_id="every-second",
        overlap="allow",
    )
    # The workers see a schedule another process defined within a pass (5 s at most).
    deadline = time.monotonic() + WAIT
    while len(read_lines(log)) < 3:
        assert time.monotonic() < deadline, "no worker fired the schedule"
        time.sleep(0.05)
    # The worker that ran the newest tick (it fired it, and holds the runs it starts).
    killed = read_lines(log)[-1].split()[2]
    [firing] = [worker for worker in workers if str(worker.proc.pid) == killed]
    firing.kill()
    killed_at = time.time()
    deadline = time.monotonic() + WAIT
    while not [line for line in read_lines(log) if _tick(line) > killed_at + 3]:
        assert time.monotonic() < deadline, "the ticks stopped when a worker was killed"
        time.sleep(0.05)
    assert client.pause_schedule("every-second")
    paused_at = time.time()
    time.sleep(1.5)  # a tick's run started before the pause ends
    lines = read_lines(log)
    ticks = sorted({_tick(line) for line in lines})
    # Not a second left out from the first tick to the last, whoever fired it. (A step
    # may have run twice: the killed worker's, or, with leases of a second on a loaded
    # machine, one of a worker reaped while it was slow: at least once, as the README says.)
    assert ticks == [ticks[0] + second for second in range(len(ticks))], ticks
    assert {line.split()[2] for line in lines if _tick(line) > killed_at + 1} - {killed}
    # The pause holds for every process from the next tick on: each tick is read again
    # before its run starts.
    assert ticks[-1] <= paused_at, (ticks[-1], paused_at)


def _tick(line: str) -> float:
    moment = tick_of("every-second", line.split(maxsplit=1)[0])
    assert isinstance(moment, datetime), line
    return moment.timestamp()
