"""A jump of the system's wall clock (an NTP step, a virtual machine resumed elsewhere).

Durations that live only in the process (a step's timeout, a retry's back-off,
a queue's rate window in memory) are counted on the monotonic clock: a jump
neither shortens nor stretches them. What is stored as a moment (a sleep's wake
time) follows the wall clock. The jump is made by pointing ``runtime._clock``'s
wall reading an hour away, as the system's clock would move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from runtime import (
    Queue,
    RetryConfig,
    Runtime,
    StepContext,
    _clock,
    create_step,
    create_workflow,
)
from runtime.testing import _system_of

WAIT = 20.0
HOUR = 3600.0


class Value(BaseModel):
    value: int


@pytest.fixture
def rt() -> Iterator[Runtime]:
    with Runtime() as runtime:
        yield runtime


def jump(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the wall clock every part of callboard reads by ``seconds``, from now on."""
    system = time.time
    monkeypatch.setattr(_clock, "time", lambda: system() + seconds)


def timer_thread_has_looked(runtime: Runtime) -> None:
    """Return once the timer thread has read the (jumped) wall clock and fired what was due.

    A wall-clock timer due at once is taken after every timer due before it, in either
    heap: once it has fired, a timer that the jump made due has fired too.
    """
    looked = threading.Event()
    _system_of(runtime).timers.call_at(_clock.time() - 1, looked.set)
    assert looked.wait(WAIT)


def test_a_forward_jump_does_not_time_out_a_step_in_flight(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(ctx: StepContext[Value]) -> Value:
        entered.set()
        assert release.wait(WAIT)
        return ctx.input_data

    step = create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow, timeout=60)
    wf = rt.register(
        create_workflow(id="jump-forward", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    assert entered.wait(WAIT)

    jump(monkeypatch, HOUR)
    timer_thread_has_looked(rt)
    release.set()

    result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": 1}


def test_a_backward_jump_does_not_put_off_a_step_timeout(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()

    def stuck(ctx: StepContext[Value]) -> Value:
        entered.set()
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    step = create_step(
        id="stuck", input_schema=Value, output_schema=Value, execute=stuck, timeout=1
    )
    wf = rt.register(
        create_workflow(id="jump-back", input_schema=Value, output_schema=Value).then(step).commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    assert entered.wait(WAIT)

    jump(monkeypatch, -HOUR)

    result = run.wait(WAIT)  # an hour and a second, if the timeout followed the wall clock
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepTimeoutError"


def test_a_backward_jump_does_not_stretch_a_retry_back_off(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def flaky(ctx: StepContext[Value]) -> Value:
        attempts.append(ctx.retry_count)
        if ctx.retry_count == 0:
            raise ConnectionError("busy")
        return ctx.input_data

    step = create_step(id="flaky", input_schema=Value, output_schema=Value, execute=flaky)
    wf = rt.register(
        create_workflow(
            id="jump-retry",
            input_schema=Value,
            output_schema=Value,
            retry_config=RetryConfig(attempts=2, delay=2.0),
        )
        .then(step)
        .commit()
    )
    timers = _system_of(rt).timers
    run = wf.create_run()
    run.start_async(input_data={"value": 3})
    deadline = time.monotonic() + WAIT
    while not len(timers):  # the back-off's timer, once the first attempt failed
        assert time.monotonic() < deadline, "the retry was never scheduled"
        time.sleep(0.001)

    jump(monkeypatch, -HOUR)

    result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert attempts == [0, 1]


def test_a_backward_jump_does_not_close_a_rate_limited_queue(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = create_step(
        id="pass", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    wf = rt.register(
        create_workflow(
            id="jump-rate",
            input_schema=Value,
            output_schema=Value,
            queue=Queue("jump-rate", rate_limit=(1, 2.0)),
        )
        .then(step)
        .commit()
    )
    first, second = wf.create_run(), wf.create_run()
    first.start_async(input_data={"value": 1})
    second.start_async(input_data={"value": 2})  # waits for the next window, 2 s on
    assert first.wait(WAIT).status == "success"
    assert (pending := wf.get_workflow_run_execution_result(second.run_id)) is not None
    assert pending.status == "pending"

    jump(monkeypatch, -HOUR)

    assert second.wait(WAIT).status == "success"  # not an hour later


def test_a_sleep_keeps_wall_clock_time(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sleep's wake time is stored as a moment, and means the same in any process that
    # resumes the run: the wall clock reaching it wakes the run.
    step = create_step(
        id="after", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    wf = rt.register(
        create_workflow(id="jump-sleep", input_schema=Value, output_schema=Value)
        .sleep(HOUR)
        .then(step)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": 4})
    deadline = time.monotonic() + WAIT
    while (result := wf.get_workflow_run_execution_result(run.run_id)) is None or (
        result.status != "waiting"
    ):
        assert time.monotonic() < deadline, "the run never went to sleep"
        time.sleep(0.005)

    jump(monkeypatch, HOUR + 1)

    assert run.wait(WAIT).status == "success"
