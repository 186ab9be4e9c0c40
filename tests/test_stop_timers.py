"""``stop()`` waits for runs that could end within its timeout, not for timers due after it.

In memory, a run asleep for an hour, or waiting in a queue's rate window of a day, held
every stop for its whole ``timeout`` (10 s by default) before it was failed all the same.
"""

from __future__ import annotations

import time
from typing import Any

from runtime import Queue, Runtime, create_step, create_workflow
from tests._support import Value, wait_until

TIMEOUT = 10.0
"""The stop's timeout: a stop that waits it out takes all of it, one that does not a fraction."""


def _echo(ctx: Any) -> Value:
    return ctx.input_data


ECHO = create_step(id="echo", input_schema=Value, output_schema=Value, execute=_echo)


def _stop_timed(rt: Runtime) -> float:
    began = time.monotonic()
    rt.stop(timeout=TIMEOUT)
    return time.monotonic() - began


def _status(rt_workflow: Any, run_id: str) -> str:
    result = rt_workflow.get_workflow_run_execution_result(run_id)
    assert result is not None
    return str(result.status)


def test_a_stop_does_not_wait_for_a_run_asleep_past_its_timeout() -> None:
    rt = Runtime().start()
    wf = rt.register(
        create_workflow(id="naps", input_schema=Value, output_schema=Value)
        .sleep(3600.0)
        .then(ECHO)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    wait_until(lambda: _status(wf, run.run_id) == "waiting")

    took = _stop_timed(rt)

    assert took < TIMEOUT / 2, f"the stop waited {took:.1f} s of its {TIMEOUT} s"
    result = wf.get_workflow_run_execution_result(run.run_id)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.name == "RuntimeStoppedError"


def test_a_stop_does_not_wait_for_a_run_held_by_a_rate_window_past_its_timeout() -> None:
    rt = Runtime().start()
    queue = Queue("once-a-day", rate_limit=(1, 86_400.0))
    wf = rt.register(
        create_workflow(id="rated", input_schema=Value, output_schema=Value, queue=queue)
        .then(ECHO)
        .commit()
    )
    assert wf.create_run().start(input_data={"value": "first"}, timeout=TIMEOUT).status == (
        "success"
    )
    held = wf.create_run()
    held.start_async(input_data={"value": "second"})  # the window's one start is taken

    took = _stop_timed(rt)

    assert took < TIMEOUT / 2, f"the stop waited {took:.1f} s of its {TIMEOUT} s"
    result = wf.get_workflow_run_execution_result(held.run_id)
    assert result is not None and result.status == "failed"
    assert result.error is not None and result.error.name == "RuntimeStoppedError"


def test_a_stop_still_waits_for_a_run_whose_sleep_ends_within_its_timeout() -> None:
    rt = Runtime().start()
    wf = rt.register(
        create_workflow(id="short-naps", input_schema=Value, output_schema=Value)
        .sleep(0.5)
        .then(ECHO)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    wait_until(lambda: _status(wf, run.run_id) == "waiting")

    rt.stop(timeout=TIMEOUT)

    result = wf.get_workflow_run_execution_result(run.run_id)
    assert result is not None and result.status == "success", result.error
