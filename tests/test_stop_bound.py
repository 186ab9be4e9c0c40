"""``stop(timeout)`` is a bound: steps or hooks that never return do not hold it up."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

import actors.system as system_module
from runtime import Runtime, RuntimeStoppedError, create_step, create_workflow
from tests._support import Value, wait_until

WAIT = 10.0


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_module, "SHUTDOWN_GRACE", 0.2)


def _stop_in_background(rt: Runtime) -> threading.Thread:
    stopping = threading.Thread(target=rt.stop, kwargs={"timeout": 0.1})
    stopping.start()
    return stopping


def test_stop_returns_while_a_sync_step_is_stuck_in_user_code() -> None:
    release, entered = threading.Event(), threading.Event()

    def stuck(ctx: Any) -> Value:
        entered.set()
        release.wait(60)
        return ctx.input_data

    workflow = create_workflow(id="stuck", input_schema=Value, output_schema=Value)
    workflow = workflow.then(
        create_step(id="stuck", input_schema=Value, output_schema=Value, execute=stuck)
    ).commit()
    rt = Runtime().start()
    run = rt.register(workflow).create_run()
    run.start_async(input_data={"value": "v"})
    assert entered.wait(WAIT)
    try:
        stopping = _stop_in_background(rt)
        stopping.join(WAIT)

        assert not stopping.is_alive(), "stop() waited for a step stuck in user code"
        assert release.is_set() is False
    finally:
        release.set()
    assert run.wait(WAIT).status == "failed"  # in memory: recorded failed at the stop


def test_stop_returns_while_an_async_step_ignores_its_cancel() -> None:
    entered = threading.Event()

    async def stubborn(ctx: Any) -> Value:
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(60)
        return ctx.input_data

    workflow = create_workflow(id="stubborn", input_schema=Value, output_schema=Value)
    workflow = workflow.then(
        create_step(id="stubborn", input_schema=Value, output_schema=Value, execute=stubborn)
    ).commit()
    rt = Runtime().start()
    rt.register(workflow).create_run().start_async(input_data={"value": "v"})
    assert entered.wait(WAIT)

    stopping = _stop_in_background(rt)
    stopping.join(WAIT)

    assert not stopping.is_alive(), "stop() waited for an async step that ignored its cancel"


def test_stop_returns_while_a_hook_blocks() -> None:
    release, entered = threading.Event(), threading.Event()

    def hook(outcome: Any) -> None:
        entered.set()
        release.wait(60)

    workflow = (
        create_workflow(id="hooked", input_schema=Value, output_schema=Value, on_finish=hook)
        .then(
            create_step(
                id="same", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
        .commit()
    )
    rt = Runtime().start()
    rt.register(workflow).create_run().start_async(input_data={"value": "v"})
    assert entered.wait(WAIT)
    try:
        stopping = _stop_in_background(rt)
        stopping.join(WAIT)

        assert not stopping.is_alive(), "stop() waited for a hook that does not return"
    finally:
        release.set()


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_whose_end_hook_outlasts_the_stop_keeps_the_end_its_hook_was_told(
    fails: bool,
) -> None:
    # In memory, a stop fails the runs it leaves unfinished; a run whose steps all
    # ran (or whose step failed) and whose on_finish was still running had been told
    # its end already, and recorded the stop's failure instead, its step's output lost.
    release, entered, returned = threading.Event(), threading.Event(), threading.Event()
    told: list[str] = []

    def hook(outcome: Any) -> None:
        told.append(outcome.status)
        entered.set()
        release.wait(60)
        returned.set()

    def body(ctx: Any) -> Value:
        if fails:
            raise ValueError("the step's own failure")
        return Value(value=ctx.input_data.value + "!")

    workflow = (
        create_workflow(id="hooked", input_schema=Value, output_schema=Value, on_finish=hook)
        .then(create_step(id="step", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    rt = Runtime().start()
    registered = rt.register(workflow)
    run = registered.create_run()
    run.start_async(input_data={"value": "v"})
    assert entered.wait(WAIT)
    try:
        stopping = _stop_in_background(rt)
        stopping.join(WAIT)
        assert not stopping.is_alive()

        result = registered.get_workflow_run_execution_result(run.run_id)
        assert result is not None
        assert told == [result.status]
        if fails:
            assert result.status == "failed" and result.error is not None
            assert result.error.name == "ValueError"
        else:
            assert result.status == "success"
            assert result.result == {"value": "v!"}
            assert result.steps["step"].output == {"value": "v!"}
    finally:
        release.set()
    assert returned.wait(WAIT)  # the hook returns late: that records nothing more
    after = registered.get_workflow_run_execution_result(run.run_id)
    assert after is not None and after.status == result.status


def test_an_end_hook_returning_after_the_registry_stopped_still_records_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its end went to the stopped registry, and the stop then failed the run it found
    # unfinished, though the hook had been told it succeeded.
    registry_gone = threading.Event()
    loop_stop = system_module.AsyncLoop.stop

    def later_loop_stop(self: Any, timeout: float | None = None) -> Any:
        registry_gone.set()  # the stop stops the loop right after the registry
        assert returned.wait(WAIT)  # the hook returns now, in between
        return loop_stop(self, timeout)

    monkeypatch.setattr(system_module.AsyncLoop, "stop", later_loop_stop)
    returned = threading.Event()

    def hook(outcome: Any) -> None:
        registry_gone.wait(WAIT)
        threading.Timer(0.2, returned.set).start()  # once this hook's call has ended

    workflow = (
        create_workflow(id="late", input_schema=Value, output_schema=Value, on_finish=hook)
        .then(
            create_step(
                id="same", input_schema=Value, output_schema=Value, execute=lambda c: c.input_data
            )
        )
        .commit()
    )
    rt = Runtime(stop_timeout=0.1).start()
    registered = rt.register(workflow)
    run = registered.create_run()
    run.start_async(input_data={"value": "v"})
    rt.stop()

    result = registered.get_workflow_run_execution_result(run.run_id)
    assert result is not None
    assert (result.status, result.error) == ("success", None)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_stop_with_timeout_0_from_another_thread_halts_the_runs_a_stop_waits_for(
    store: str, tmp_path: Path
) -> None:
    release, entered = threading.Event(), threading.Event()

    def gated(ctx: Any) -> Value:
        entered.set()
        release.wait(60)
        return ctx.input_data

    workflow = create_workflow(id="gated", input_schema=Value, output_schema=Value)
    workflow = workflow.then(
        create_step(id="gated", input_schema=Value, output_schema=Value, execute=gated)
    ).commit()
    rt = Runtime(store=str(tmp_path / "runs.db") if store == "sqlite" else None).start()
    run = rt.register(workflow).create_run()
    run.start_async(input_data={"value": "v"})
    assert entered.wait(WAIT)
    try:
        stopping = threading.Thread(target=rt.stop, kwargs={"timeout": 60})
        stopping.start()
        wait_until(lambda: not rt.is_running, WAIT, "the stop begins")
        assert stopping.is_alive()  # it waits for the run

        rt.stop(timeout=0)  # returns at once; the stop above halts the run now
        stopping.join(WAIT)

        assert not stopping.is_alive(), "the hurried stop went on waiting for the run"
    finally:
        release.set()
    # In memory the halted run is recorded failed; on a durable store it is left unfinished,
    # and a wait says the runtime stopped (it no longer returns the unfinished run).
    if store == "memory":
        assert run.wait(WAIT).status == "failed"
    else:
        with pytest.raises(RuntimeStoppedError, match="which is running in its store"):
            run.wait(WAIT)


def test_stop_returns_while_an_awaitable_call_still_runs_on_a_call_thread() -> None:
    # The `a` calls run on the runtime's call threads, which stop() joined without a
    # bound: an acancel() waiting out the cancel's own grace (or anything slower) held
    # stop past its timeout plus the grace (4.7 s for stop(0.5)).
    release, entered = threading.Event(), threading.Event()

    def slow_call() -> None:
        entered.set()
        release.wait(60)

    async def main() -> None:
        rt = Runtime()
        await rt.astart()
        pending = asyncio.ensure_future(rt._host.call(slow_call))
        assert await asyncio.to_thread(entered.wait, WAIT)
        stopping = threading.Thread(target=rt.stop, kwargs={"timeout": 0.1})
        stopping.start()
        await asyncio.to_thread(stopping.join, WAIT)
        try:
            assert not stopping.is_alive(), "stop() waited for a call still running"
        finally:
            release.set()
        await pending  # it ends on its own daemon thread

    asyncio.run(main())
