"""Durations in definitions: seconds or a ``timedelta``, and backoffs that cannot overflow.

``RetentionPolicy(max_age=timedelta(...))`` was the one duration that took a
``timedelta``: ``.sleep(timedelta(hours=1))`` was refused, ``RetryConfig``'s
delays raised a validation error, a queue's window a ``TypeError``. And a capped
exponential backoff crashed its run once ``backoff ** n`` passed the largest
float (retry 310 with a backoff of 10), where the cap should have held.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from runtime import (
    Queue,
    RetentionPolicy,
    RetryConfig,
    Runtime,
    StepContext,
    WorkflowDefinitionError,
    create_step,
    create_workflow,
)
from runtime._plan import MAX_SLEEP, RetryPolicy
from runtime.testing import Harness


class Order(BaseModel):
    id: int


def _same(ctx: StepContext[Order]) -> Order:
    return ctx.input_data


def test_a_sleep_takes_a_timedelta_and_its_function_may_return_one() -> None:
    done = create_step(id="done", input_schema=Order, output_schema=Order, execute=_same)
    workflow = (
        create_workflow(id="durations-sleep", input_schema=Order, output_schema=Order)
        .sleep(timedelta(hours=1))
        .sleep(lambda ctx: timedelta(days=2))
        .then(done)
        .commit()
    )

    with Harness() as harness:
        result = harness.register(workflow).create_run().start(input_data={"id": 1})

    assert result.status == "success", result.error
    assert result.updated_at - result.created_at >= timedelta(days=2, hours=1)
    assert result.updated_at - result.created_at < timedelta(days=2, hours=1, minutes=1)


def test_a_step_timeout_takes_a_timedelta_and_holds() -> None:
    def slow(ctx: StepContext[Order]) -> Order:
        time.sleep(2)
        return ctx.input_data

    step = create_step(
        id="slow",
        input_schema=Order,
        output_schema=Order,
        execute=slow,
        timeout=timedelta(milliseconds=50),
    )
    workflow = (
        create_workflow(id="durations-timeout", input_schema=Order, output_schema=Order)
        .then(step)
        .commit()
    )

    assert step.timeout == 0.05
    with Runtime() as runtime:  # the wall clock: a harness's holds still while a step runs
        result = runtime.register(workflow).create_run().start(input_data={"id": 1}, timeout=30)

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepTimeoutError"


def test_retry_delays_retention_and_a_queue_window_take_a_timedelta() -> None:
    retry = RetryConfig(attempts=3, delay=timedelta(seconds=30), max_delay=timedelta(hours=1))
    retention = RetentionPolicy(max_age=timedelta(days=7), interval=timedelta(seconds=5))
    queue = Queue("durations", rate_limit=(10, timedelta(minutes=1)))

    assert (retry.delay, retry.max_delay) == (30.0, 3600.0)
    assert (retention.max_age, retention.interval) == (604800.0, 5.0)
    assert queue.rate_limit == (10, 60.0) and queue.limits.rate_period == 60.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryConfig(delay=math.inf),
        lambda: RetryConfig(delay=math.nan),
        lambda: RetryConfig(backoff=math.inf),
        lambda: RetryConfig(max_delay=math.inf),
        lambda: RetryConfig(delay=timedelta(seconds=-1)),
    ],
    ids=["inf-delay", "nan-delay", "inf-backoff", "inf-max-delay", "negative-timedelta"],
)
def test_a_retry_delay_that_never_ends_is_refused(make: Any) -> None:
    # An infinite delay left the run "running" for ever, with no time to wake it at.
    with pytest.raises(ValidationError):
        make()


@pytest.mark.parametrize(
    "define",
    [
        lambda: create_step(
            id="x", input_schema=Order, output_schema=Order, execute=_same, timeout=math.inf
        ),
        lambda: create_step(
            id="x",
            input_schema=Order,
            output_schema=Order,
            execute=_same,
            timeout=timedelta(0),
        ),
        lambda: create_workflow(id="w", input_schema=Order, output_schema=Order).sleep(
            timedelta(seconds=-1)
        ),
        lambda: create_workflow(id="w", input_schema=Order, output_schema=Order).sleep(
            timedelta(days=365 * 200)
        ),
    ],
    ids=["infinite-timeout", "zero-timedelta-timeout", "negative-sleep", "sleep-past-max"],
)
def test_a_duration_out_of_range_is_refused_at_definition(define: Any) -> None:
    with pytest.raises(WorkflowDefinitionError):
        define()


def test_a_capped_backoff_stays_at_its_cap_however_many_retries() -> None:
    capped = RetryPolicy(attempts=5000, delay=1.0, backoff=10.0, max_delay=60.0)
    uncapped = RetryPolicy(attempts=5000, delay=1.0, backoff=2.0)

    assert [capped.delay_before(n) for n in (1, 2, 309, 310, 5000)] == [1.0, 10.0] + [60.0] * 3
    assert uncapped.delay_before(5000) == MAX_SLEEP
    jittered = RetryPolicy(attempts=5000, delay=1.0, backoff=10.0, jitter=0.5)
    assert 0 < jittered.delay_before(5000) <= 1.5 * MAX_SLEEP
    # No delay stays no delay: past the largest float it was MAX_SLEEP (about 100 years).
    at_once = RetryPolicy(attempts=5000, delay=0.0, backoff=10.0)
    assert [at_once.delay_before(n) for n in (1, 309, 310, 5000)] == [0.0] * 4


def test_jitter_never_takes_a_wait_past_max_delay() -> None:
    # It was added after the cap: with max_delay=20 and jitter=0.5, waits of up to 30 s,
    # where the README promises the wait never exceeds max_delay.
    import random

    policy = RetryPolicy(attempts=10, delay=10.0, backoff=2.0, max_delay=20.0, jitter=0.5)
    drawn = random.Random(7)
    waits = [policy.delay_before(n, drawn) for n in range(1, 11) for _ in range(50)]
    assert max(waits) <= 20.0
    assert min(waits) >= 5.0  # jitter still spreads them under the cap
    assert len(set(waits)) > 100


def test_a_run_with_many_capped_retries_fails_with_its_own_error() -> None:
    # Before: RunCrashedError "OverflowError: (34, 'Numerical result out of range')"
    # at retry 310, with the actor's traceback in the log.
    calls: list[int] = []

    def down(ctx: StepContext[Order]) -> Order:
        calls.append(1)
        raise ConnectionError("the bank is down")

    step = create_step(id="down", input_schema=Order, output_schema=Order, execute=down)
    workflow = (
        create_workflow(
            id="durations-backoff",
            input_schema=Order,
            output_schema=Order,
            retry_config=RetryConfig(attempts=320, delay=1, backoff=10, max_delay=60),
        )
        .then(step)
        .commit()
    )

    with Harness() as harness:
        result = harness.register(workflow).create_run().start(input_data={"id": 1})

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "ConnectionError", result.error
    assert len(calls) == 321


def test_a_step_timeout_counts_from_its_body_not_from_its_wait_for_a_thread() -> None:
    # Eight runs of a 0.4 s step on two step threads: the last ones waited over a second
    # for a thread, and their 1 s timeout failed them with their bodies never called.
    bodies: list[int] = []

    def slow(ctx: StepContext[Order]) -> Order:
        bodies.append(1)
        time.sleep(0.4)
        return ctx.input_data

    step = create_step(
        id="slow", input_schema=Order, output_schema=Order, execute=slow, timeout=1.0
    )
    with Runtime(max_step_threads=2) as runtime:
        workflow = runtime.register(
            create_workflow(id="queued", input_schema=Order, output_schema=Order)
            .then(step)
            .commit()
        )
        runs = [workflow.create_run() for _ in range(8)]
        for run in runs:
            run.start_async(input_data={"id": 1})
        results = [run.wait(timeout=60) for run in runs]
    assert [result.status for result in results] == ["success"] * 8
    assert len(bodies) == 8
    assert all(result.steps["slow"].attempts == 1 for result in results)
