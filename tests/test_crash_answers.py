"""A run actor that fails on a message whose sender waits for an answer still answers it."""

from __future__ import annotations

import threading
from typing import Any

from runtime import create_step, create_workflow
from runtime.testing import Harness
from tests._support import N

WAIT = 10.0


def test_a_cancel_whose_message_crashes_the_run_actor_returns_and_the_run_reads_failed() -> None:
    # The actor failed before its handler ran (a fault of the test kit's, or of the
    # actor's own machinery): the cancel's answer was never given, and cancel() waited
    # for ever, since it takes no timeout.
    entered = threading.Event()

    def waits(ctx: Any) -> N:
        entered.set()
        ctx.abort_signal.wait(WAIT)
        return ctx.input_data

    workflow = (
        create_workflow(id="crashing", input_schema=N, output_schema=N)
        .then(create_step(id="waits", input_schema=N, output_schema=N, execute=waits))
        .commit()
    )
    with Harness(stop_timeout=1) as harness:
        registered = harness.register(workflow)
        harness.crash_run(at="CancelRun")
        run = registered.create_run()
        run.start_async(input_data={"n": 1})
        assert entered.wait(WAIT)
        answered: list[bool] = []
        cancelling = threading.Thread(target=lambda: answered.append(run.cancel()), daemon=True)
        cancelling.start()
        cancelling.join(WAIT)

        assert not cancelling.is_alive(), "cancel() was never answered"
        assert answered == [False]  # the crash ended the run first
        result = registered.get_workflow_run_execution_result(run.run_id)
        assert result is not None and result.status == "failed"
        assert result.error is not None and result.error.name == "RunCrashedError"
