"""A process that cannot start a thread: the step pool loses no call and says so once.

``threading.Thread.start`` raises ``RuntimeError: can't start new thread`` when the
process reaches a limit (``ulimit -u``, ``threads-max``, a container's pids limit,
memory for a stack). The step pool starts a thread for each step actor it adds;
here ``Thread.start`` is made to fail as the OS would, for a while or for good.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest
import structlog
from pydantic import BaseModel

from actors import _pool
from actors.step import StepActor
from runtime import RunStatus, Runtime, create_step, create_workflow

WAIT = 30.0


class Value(BaseModel):
    value: str


class _Refuser:
    """Makes ``Thread.start`` raise, as in a process out of threads, for the threads whose
    name begins with ``prefix``: once ``allowed`` of them started, ``times`` times (or, with
    ``None``, while ``refusing``)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        prefix: str,
        allowed: int = 0,
        times: int | None = None,
    ) -> None:
        self.prefix, self.allowed, self.left = prefix, allowed, times
        self.refusing = True
        self.refused = 0
        self._lock = threading.Lock()
        start = threading.Thread.start

        def refusing_start(thread: threading.Thread) -> None:
            if thread.name.startswith(self.prefix) and self._refuses():
                raise RuntimeError("can't start new thread")
            start(thread)

        monkeypatch.setattr(threading.Thread, "start", refusing_start)

    def _refuses(self) -> bool:
        with self._lock:
            if self.allowed > 0:
                self.allowed -= 1
                return False
            if not self.refusing or self.left == 0:
                return False
            if self.left is not None:
                self.left -= 1
            self.refused += 1
            return True


@pytest.fixture
def refuse_threads(
    monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> Iterator[Callable[[int], _Refuser]]:
    """Step actors' threads (pykka names them ``StepActor-<n>``) refused past ``allowed``."""

    def refuse(allowed: int) -> _Refuser:
        return _Refuser(monkeypatch, "StepActor-", allowed)

    yield refuse


def _started(wf: Any, count: int) -> list[Any]:
    """``count`` runs of ``wf``, started (their input: their index)."""
    runs = [wf.create_run() for _ in range(count)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": str(index)})
    return runs


def _blocking_workflow(seconds: float) -> Any:
    def body(ctx: Any) -> Value:
        time.sleep(seconds)
        return ctx.input_data

    return (
        create_workflow(id="blocks", input_schema=Value, output_schema=Value)
        .then(create_step(id="blocks", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )


def test_runs_whose_steps_find_no_thread_to_grow_into_wait_for_the_threads_there_are(
    refuse_threads: Callable[[int], _Refuser],
) -> None:
    # Two actors start; every start after fails, whether the run actor asks for one (a
    # call below the pool's core) or the monitor grows the pool for blocked steps.
    refuser = refuse_threads(2)
    with structlog.testing.capture_logs() as events, Runtime() as rt:
        wf = rt.register(_blocking_workflow(0.05))
        runs = _started(wf, 12)
        results = [run.wait(timeout=WAIT) for run in runs]
    assert [result.status for result in results] == [RunStatus.SUCCESS] * len(runs), [
        result.error for result in results
    ]
    assert refuser.refused >= 2, "the test did not make a start fail"
    # An actor whose thread never started is not left in pykka's registry (one a try).
    assert not pykka.ActorRegistry.get_by_class(StepActor)
    failed = [event for event in events if event["event"] == "step_actor_start_failed"]
    assert len(failed) == 1, f"said {len(failed)} times for {refuser.refused} refused starts"
    assert failed[0]["log_level"] == "error"
    assert "can't start new thread" in failed[0]["error"]


def test_a_pool_with_no_thread_at_all_runs_its_calls_once_threads_can_start_again(
    refuse_threads: Callable[[int], _Refuser],
) -> None:
    refuser = refuse_threads(0)
    with structlog.testing.capture_logs() as events, Runtime() as rt:
        wf = rt.register(_blocking_workflow(0.0))
        runs = _started(wf, 4)
        deadline = time.monotonic() + WAIT
        while refuser.refused < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # the pool tries again, tick after tick
        assert refuser.refused >= 3, "the pool gave up starting threads"
        assert all(not wf.get_workflow_run_execution_result(run.run_id).is_terminal for run in runs)
        refuser.refusing = False
        results = [run.wait(timeout=WAIT) for run in runs]
    assert [result.status for result in results] == [RunStatus.SUCCESS] * len(runs)
    said = [event["event"] for event in events if event["event"].startswith("step_actor_start")]
    assert said == ["step_actor_start_failed", "step_actor_start_recovered"], said
    [recovered] = [event for event in events if event["event"] == "step_actor_start_recovered"]
    assert recovered["failed_starts"] == refuser.refused


def test_hooks_are_called_once_each_when_no_more_hook_threads_can_start(
    monkeypatch: pytest.MonkeyPatch, _structlog_reset: None
) -> None:
    # One hook thread starts, and then none: a hook that found its thread busy was called
    # on the spot and again by that thread later (its call stayed queued), and the pool
    # counted a thread that never started.
    refuser = _Refuser(monkeypatch, "callboard-hooks-", allowed=1)
    calls: list[str] = []
    lock = threading.Lock()

    def on_finish(outcome: Any) -> None:
        time.sleep(0.02)  # the one thread is busy when the next run ends
        with lock:
            calls.append(outcome.run_id)

    def body(ctx: Any) -> Value:
        return ctx.input_data

    workflow = (
        create_workflow(id="hooked", input_schema=Value, output_schema=Value, on_finish=on_finish)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    with structlog.testing.capture_logs() as events, Runtime() as rt:
        wf = rt.register(workflow)
        runs = _started(wf, 20)
        assert all(run.wait(timeout=WAIT).status == RunStatus.SUCCESS for run in runs)
        deadline = time.monotonic() + WAIT
        while len(calls) < len(runs) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # a second call of a hook would come within this
    assert refuser.refused >= 1, "the test never refused a hook thread"
    assert sorted(calls) == sorted(run.run_id for run in runs)
    failed = [event for event in events if event["event"] == "hook_thread_start_failed"]
    assert len(failed) == 1


def _run_twice(workflow: Any) -> list[Any]:
    """Two runs of ``workflow``, one after the other: their results."""
    with Runtime() as rt:
        wf = rt.register(workflow)
        results = []
        for index in range(2):
            run = wf.create_run()
            run.start_async(input_data={"value": str(index)})
            results.append(run.wait(timeout=WAIT))
        return results


def test_a_timer_thread_the_process_refused_is_tried_again_by_the_next_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first sleep's timer thread is refused: that run fails, saying why. The thread
    # was kept all the same, never started, and no later sleep ever woke.
    refuser = _Refuser(monkeypatch, "callboard-timers", times=1)

    def body(ctx: Any) -> Value:
        return ctx.input_data

    workflow = (
        create_workflow(id="naps", input_schema=Value, output_schema=Value)
        .sleep(0.01)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    first, second = _run_twice(workflow)
    assert refuser.refused == 1
    assert first.status == RunStatus.FAILED
    assert first.error is not None and "can't start new thread" in first.error.message
    assert second.status == RunStatus.SUCCESS


def test_an_async_loop_thread_the_process_refused_is_tried_again_by_the_next_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refuser = _Refuser(monkeypatch, "callboard-async", times=1)

    async def body(ctx: Any) -> Value:
        return ctx.input_data

    workflow = (
        create_workflow(id="awaits", input_schema=Value, output_schema=Value)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    first, second = _run_twice(workflow)
    assert refuser.refused == 1
    assert first.status == RunStatus.FAILED
    assert first.error is not None and "can't start new thread" in first.error.message
    assert second.status == RunStatus.SUCCESS


def test_a_step_timeout_counts_from_when_a_refused_call_begins_not_from_the_refusal(
    refuse_threads: Callable[[int], _Refuser], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call whose actor could not start waits in the backlog again, as a call past
    # max_step_threads does: its step's timeout waits until its code begins. Put back
    # as a call never waited, it timed out unbegun at its timer. (The pool's monitor is
    # kept from growing the pool: its tries hand the calls over again, which restarts
    # their timeouts and hid the fault.)
    monkeypatch.setattr(_pool, "_tick_verdict", lambda *_: None)
    refuse_threads(1)

    def body(ctx: Any) -> Value:
        time.sleep(0.3)
        return ctx.input_data

    workflow = (
        create_workflow(id="timed", input_schema=Value, output_schema=Value)
        .then(
            create_step(id="s", input_schema=Value, output_schema=Value, execute=body, timeout=0.5)
        )
        .commit()
    )
    with Runtime() as rt:
        wf = rt.register(workflow)
        # The second to fourth calls find no actor to start (below the pool's core): they
        # begin 0.3, 0.6 and 0.9 s after they were handed over, on the one thread.
        runs = _started(wf, 5)
        results = [run.wait(timeout=WAIT) for run in runs]
    assert [result.status for result in results] == [RunStatus.SUCCESS] * len(runs), [
        result.error for result in results
    ]


def test_calls_that_found_no_thread_begin_in_the_order_they_came(
    refuse_threads: Callable[[int], _Refuser],
) -> None:
    # Each call put back at the head of the backlog went before those put back earlier:
    # the runs began last first.
    refuse_threads(1)
    began: list[str] = []

    def body(ctx: Any) -> Value:
        began.append(ctx.input_data.value)
        time.sleep(0.05)
        return ctx.input_data

    workflow = (
        create_workflow(id="ordered", input_schema=Value, output_schema=Value)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=body))
        .commit()
    )
    with Runtime() as rt:
        wf = rt.register(workflow)
        runs = _started(wf, 6)
        assert all(run.wait(timeout=WAIT).status == RunStatus.SUCCESS for run in runs)
    assert began == [str(index) for index in range(6)]


def test_an_awaitable_call_whose_thread_was_refused_is_made_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The call pool counted the thread it could not start and kept the call queued, while
    # its caller made the call on asyncio's executor: the next thread the pool started
    # made it a second time.
    _Refuser(monkeypatch, "callboard-call", times=1)
    made: list[str] = []

    async def main() -> None:
        rt = await Runtime().astart()
        try:
            host = rt._host
            assert await host.call(made.append, "first") is None
            assert await host.call(made.append, "second") is None
            await asyncio.sleep(0.2)  # a call made again would come within this
        finally:
            await rt.astop()

    asyncio.run(main())
    assert made == ["first", "second"]
