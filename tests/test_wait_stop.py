"""A wait that the runtime's stop ends says so: it never returns a run that has not ended.

Before, on a durable store, ``run.wait()`` (and ``wait_async()``, ``start()``) of a run
still in progress when its runtime stopped returned the run's result with status
``running``: the next line of a caller that reads ``result.status == "success"`` took it
for a failure, and nothing said that the run goes on in the store.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import Runtime, RuntimeStoppedError, create_step, create_workflow


class Value(BaseModel):
    value: int


gate = threading.Event()


def _held(ctx: Any) -> Value:
    gate.wait(30)
    return ctx.input_data


held = create_step(id="held", input_schema=Value, output_schema=Value, execute=_held)
flow = create_workflow(id="held-by-stop", input_schema=Value, output_schema=Value)
flow = flow.then(held).commit()


@pytest.fixture(autouse=True)
def _release() -> Any:
    gate.clear()
    yield
    gate.set()


def test_a_wait_ended_by_the_stop_raises_and_the_run_goes_on_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    outcome: list[Any] = []
    with Runtime(store=store, stop_timeout=0.2) as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})

        def wait() -> None:
            try:
                outcome.append(run.wait(timeout=30))
            except Exception as exc:  # what the wait ended with is the point
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        runtime.stop()
        waiter.join(10)
        with pytest.raises(RuntimeStoppedError, match="goes on with it"):
            run.wait(timeout=5)  # on the stopped runtime, at once

    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeStoppedError), outcome
    assert outcome[0].run_id == run.run_id
    gate.set()
    with Runtime(store=store) as runtime:  # the next runtime goes on with it
        again = runtime.register(flow).get_workflow_run_execution_result(run.run_id)
        assert again is not None
        assert runtime.register(flow).create_run(run.run_id).wait(timeout=30).status == "success"


def test_an_awaited_wait_ended_by_the_stop_raises(tmp_path: Path) -> None:
    async def main() -> Any:
        runtime = Runtime(store=tmp_path / "runs.db", stop_timeout=0.2)
        await runtime.astart()
        run = runtime.register(flow).create_run()
        await run.astart_async(input_data={"value": 1})
        waiting = asyncio.ensure_future(run.wait_async(timeout=30))
        await asyncio.sleep(0.1)
        await runtime.astop()
        return await asyncio.gather(waiting, return_exceptions=True)

    (outcome,) = asyncio.run(main())

    assert isinstance(outcome, RuntimeStoppedError), outcome


def test_in_memory_the_stop_still_fails_the_run_and_the_wait_returns_it() -> None:
    outcome: list[Any] = []
    with Runtime(stop_timeout=0.2) as runtime:
        run = runtime.register(flow).create_run()
        run.start_async(input_data={"value": 1})
        waiter = threading.Thread(target=lambda: outcome.append(run.wait(timeout=30)))
        waiter.start()
        runtime.stop()
        waiter.join(10)

    assert len(outcome) == 1 and outcome[0].status == "failed"
