"""The awaitable twins: every call that can wait has an ``a`` twin that never blocks the loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    InvalidInputError,
    Run,
    RunAlreadyStartedError,
    RunReader,
    RunStatus,
    Runtime,
    RunTimeoutError,
    RunWatch,
    Workflow,
    create_step,
    create_workflow,
)
from runtime._sync import Channel
from tests._support import (
    BLOCK_LIMIT,
    Counter,
    N,
    Runtimes,
    Value,
    held_workflow,
    inc_step,
    quick_workflow,
    shout,
    wait_for_no_callboard_threads,
    wait_until,
)

WAIT = 10.0


def asking_workflow(workflow_id: str = "asks") -> Any:
    """``ask`` suspends until resumed, then ``inc`` adds one."""

    def ask(ctx: Any) -> N:
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return ctx.input_data

    return (
        create_workflow(id=workflow_id, input_schema=N, output_schema=N)
        .then(create_step(id="ask", input_schema=N, output_schema=N, execute=ask))
        .then(inc_step())
        .commit()
    )


# --- one convention, applied everywhere ------------------------------------------------------

BLOCKING_RUN_CALLS = ["start_async", "start", "resume_async", "resume", "cancel", "watch"]
BLOCKING_WORKFLOW_CALLS = [
    "get_workflow_run_execution_result",
    "get_workflow_run_by_id",
    "list_workflow_runs",
    "delete_workflow_run_by_id",
]


@pytest.mark.parametrize(
    ("owner", "name"),
    [(Run, name) for name in BLOCKING_RUN_CALLS]
    + [(Workflow, name) for name in BLOCKING_WORKFLOW_CALLS]
    + [(Runtime, "start"), (Runtime, "stop"), (Runtime, "register")]
    + [(RunReader, "get_run"), (RunReader, "list_runs")],
)
def test_every_call_that_can_wait_has_an_awaitable_twin_named_with_an_a(
    owner: type, name: str
) -> None:
    twin = getattr(owner, "a" + name)
    assert inspect.iscoroutinefunction(twin)
    sync_params = list(inspect.signature(getattr(owner, name)).parameters)
    assert list(inspect.signature(twin).parameters) == sync_params


def test_wait_keeps_its_name_wait_async_since_await_is_a_keyword() -> None:
    assert inspect.iscoroutinefunction(Run.wait_async)
    assert "timeout" in inspect.signature(Run.wait_async).parameters


# --- the twins do what their sync calls do ---------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_run_started_awaited_and_queried_with_the_twins(store: str, tmp_path: Path) -> None:
    location = "memory" if store == "memory" else str(tmp_path / "runs.db")

    async def main() -> None:
        async with Runtime(store=location) as rt:
            wf = rt.register(quick_workflow())
            started = await wf.create_run().astart_async(input_data={"value": "hi"})
            first = await wf.aget_workflow_run_execution_result(started.run_id)
            assert first is not None and first.run_id == started.run_id

            result = await wf.create_run(run_id="second").astart(
                input_data={"value": "yo"}, timeout=WAIT
            )
            assert result.status == RunStatus.SUCCESS and result.result == {"value": "YO"}

            by_id = await wf.aget_workflow_run_by_id("second", fields=["result"])
            assert by_id is not None and by_id.result == {"value": "YO"} and by_id.input is None
            listed = await wf.alist_workflow_runs(status="success")
            assert "second" in [run.run_id for run in listed.runs]
            assert await wf.adelete_workflow_run_by_id("second") is True
            assert await wf.aget_workflow_run_execution_result("second") is None
            assert await wf.aget_workflow_run_execution_result("no-such-run") is None

    asyncio.run(main())
    assert not wait_for_no_callboard_threads()


def test_the_twins_raise_what_the_sync_calls_raise(runtime: Runtime) -> None:
    wf = runtime.register(quick_workflow())

    async def main() -> None:
        run = wf.create_run()
        with pytest.raises(InvalidInputError):
            await run.astart_async(input_data={"valu": "typo"})
        await run.astart_async(input_data={"value": "good"})
        with pytest.raises(RunAlreadyStartedError):
            await run.astart_async(input_data={"value": "again"})
        with pytest.raises(TypeError):
            await wf.aget_workflow_run_execution_result(42)  # type: ignore[arg-type]

    asyncio.run(main())


def test_a_suspended_run_is_resumed_and_watched_with_the_twins(runtime: Runtime) -> None:
    wf = runtime.register(asking_workflow())

    async def main() -> None:
        run = wf.create_run()
        suspended = await run.astart(input_data={"n": 1}, timeout=WAIT)
        assert suspended.status == RunStatus.SUSPENDED
        async with await run.awatch() as watch:
            result = await run.aresume(resume_data={}, timeout=WAIT)
            statuses = [event.status async for event in watch if event.type == "status"]
        assert result.status == RunStatus.SUCCESS and result.result == {"n": 2}
        assert statuses[-1] == RunStatus.SUCCESS

        other = wf.create_run()
        await other.astart_async(input_data={"n": 5})
        assert (await other.wait_async(WAIT)).status == RunStatus.SUSPENDED
        await other.aresume_async(step="ask", resume_data={})
        assert (await other.wait_async(WAIT)).result == {"n": 6}

    asyncio.run(main())


def test_acancel_cancels_a_running_run(runtime: Runtime) -> None:
    gate, entered = threading.Event(), threading.Event()
    wf = runtime.register(held_workflow(Counter(), gate, entered))

    async def main() -> None:
        run = wf.create_run()
        await run.astart_async(input_data={"value": "x"})
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, BLOCK_LIMIT)
        assert await run.acancel() is True
        gate.set()
        assert (await run.wait_async(WAIT)).status == RunStatus.CANCELED
        assert await run.acancel() is False

    try:
        asyncio.run(main())
    finally:
        gate.set()


def test_wait_async_with_a_timeout_raises_run_timeout_error_and_the_run_goes_on(
    runtime: Runtime,
) -> None:
    gate = threading.Event()
    wf = runtime.register(held_workflow(Counter(), gate))

    async def main() -> None:
        run = wf.create_run()
        await run.astart_async(input_data={"value": "x"})
        with pytest.raises(RunTimeoutError):
            await run.wait_async(0.05)
        gate.set()
        assert (await run.wait_async(WAIT)).status == RunStatus.SUCCESS

    try:
        asyncio.run(main())
    finally:
        gate.set()


def test_wait_async_of_an_ended_run_with_no_time_to_wait_returns_it_as_wait_does(
    runtime: Runtime,
) -> None:
    # wait_async(0) raised RunTimeoutError ("it goes on") for a run that had ended: its
    # timeout covered the first read too, which wait() always makes.
    wf = runtime.register(quick_workflow())

    async def main() -> None:
        run = wf.create_run()
        assert (await run.astart(input_data={"value": "x"}, timeout=WAIT)).status == "success"
        for timeout in (0, 1e-9):
            assert (await run.wait_async(timeout)).status == RunStatus.SUCCESS
        assert (await asyncio.to_thread(run.wait, 0)).status == RunStatus.SUCCESS

    asyncio.run(main())


def _loads_of_held_up_wait_for(rt: Runtime, gate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Have the runtime's store wait for ``gate`` before it reads the run "held-up"."""
    store = rt.store
    assert store is not None
    real_load = store.load

    def load(run_id: str) -> Any:
        if run_id == "held-up":
            gate.wait(BLOCK_LIMIT)
        return real_load(run_id)

    monkeypatch.setattr(store, "load", load)


async def _every_call_thread_held(wf: Any) -> list[asyncio.Future[Any]]:
    """Reads of "held-up" (see above), one on each of the runtime's call threads."""
    from runtime._handoff import STALL
    from runtime._runtime import CALL_THREADS

    holding = [
        asyncio.ensure_future(wf.aget_workflow_run_execution_result("held-up"))
        for _ in range(CALL_THREADS)
    ]
    # Each has a call thread now: one more joins each time those running stall.
    await asyncio.sleep(0.05 + CALL_THREADS * STALL)
    return holding


def test_wait_async_times_out_in_time_while_other_calls_hold_every_call_thread(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its first read waited for a call thread past the timeout: with the few call
    # threads held by starts that another process's lock on a SQLite file kept (30 s
    # each), a wait_async(0.5) raised RunTimeoutError a minute later. Here reads of
    # another run's result hold them.
    gate = threading.Event()
    wf = runtime.register(held_workflow(Counter(), gate))
    _loads_of_held_up_wait_for(runtime, gate, monkeypatch)

    async def main() -> tuple[float, float]:
        run = wf.create_run()
        await run.astart_async(input_data={"value": "x"})
        holding = await _every_call_thread_held(wf)
        loop = asyncio.get_running_loop()
        took = []
        for timeout in (0.2, 0):
            began = loop.time()
            with pytest.raises(RunTimeoutError, match="held every call thread"):
                await run.wait_async(timeout)
            took.append(loop.time() - began)
        gate.set()
        await asyncio.gather(*holding)
        assert (await run.wait_async(WAIT)).status == RunStatus.SUCCESS
        return took[0], took[1]

    try:
        short, none = asyncio.run(main())
    finally:
        gate.set()
    assert short < 1.0
    assert none < 1.0


def test_an_async_stream_and_awatch_keep_their_timeout_while_other_calls_hold_every_call_thread(
    runtimes: Runtimes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At a suspension, an async stream asks the store, on a call thread, whether a
    # resume request waits; awatch and astream read the run on one first. With the few
    # call threads held (starts that another process's lock on a SQLite file kept),
    # each waited for a thread past its timeout. Here reads of another run hold them.
    rt = runtimes.start(str(tmp_path / "runs.db"))
    wf = rt.register(asking_workflow())
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    gate = runtimes.gate()
    _loads_of_held_up_wait_for(rt, gate, monkeypatch)
    stream = run.stream(timeout=0.3)
    release = threading.Timer(5.0, gate.set)  # without the fix: the calls end late, not never

    async def main() -> list[float]:
        holding = await _every_call_thread_held(wf)
        loop = asyncio.get_running_loop()
        took = []
        began = loop.time()
        with pytest.raises(RunTimeoutError, match="held every call thread"):
            async for event in stream:
                assert event.type != "run_finish", event  # the suspension: not yet told
        took.append(loop.time() - began)
        for twin in (run.awatch, run.astream):
            began = loop.time()
            with pytest.raises(RunTimeoutError, match="held every call thread"):
                await twin(timeout=0.3)
            took.append(loop.time() - began)
        gate.set()
        await asyncio.gather(*holding)
        # The stream held the suspension back: it looks again, and tells it (no request).
        finish = await anext(stream)
        assert finish.type == "run_finish" and finish.status == RunStatus.SUSPENDED
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        async with await run.astream(timeout=WAIT) as again:
            assert [event.type async for event in again][-1] == "run_finish"
        return took

    release.start()
    try:
        took = asyncio.run(main())
    finally:
        release.cancel()
        gate.set()
        stream.close()
    assert max(took) < 1.5, took


def test_a_wait_async_cancelled_as_its_run_ends_raises_cancelled_error(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11, asyncio.wait_for returned the inner result to a task cancelled in
    # the loop turn that result came: the cancel was lost, and a TaskGroup whose member
    # was cancelled so went on waiting for it (p3).
    gate = threading.Event()
    wf = runtime.register(held_workflow(Counter(), gate))
    real = Run._settled
    waiting: list[asyncio.Task[Any]] = []

    async def settled(self: Any, *args: Any) -> Any:
        gate.set()
        result = await real(self, *args)
        waiting[0].cancel()  # the task awaiting wait_async, as its run's result lands
        return result

    monkeypatch.setattr(Run, "_settled", settled)

    async def main() -> None:
        run = wf.create_run()
        await run.astart_async(input_data={"value": "x"})
        waiting.append(asyncio.ensure_future(run.wait_async(WAIT)))
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]

    try:
        asyncio.run(main())
    finally:
        gate.set()


def test_astop_ends_waits_that_fill_the_loops_default_executor() -> None:
    # The application moved blocking waits off the loop (asyncio.to_thread(run.wait)),
    # as the README says to: they held every thread of the loop's default executor,
    # where astop() ran its stop, which would have ended them. It waited for ever (p4).
    import concurrent.futures

    gate = threading.Event()

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        rt = await Runtime().astart()
        wf = rt.register(held_workflow(Counter(), gate))
        runs = [wf.create_run() for _ in range(2)]
        for run in runs:
            await run.astart_async(input_data={"value": "x"})
        waits = [asyncio.ensure_future(asyncio.to_thread(run.wait)) for run in runs]
        await asyncio.sleep(0.2)  # both executor threads now wait for a run
        async with asyncio.timeout(WAIT):
            await rt.astop(timeout=0.5)
        return [(await wait).status for wait in waits]

    try:
        statuses = asyncio.run(main())
    finally:
        gate.set()
    assert statuses == [RunStatus.FAILED, RunStatus.FAILED]  # in memory, halted by the stop
    assert not wait_for_no_callboard_threads()


def test_an_astop_cancelled_midway_stops_all_the_same_and_raises_nothing_elsewhere(
    runtime: Runtime,
) -> None:
    # The stop's thread settled a future its cancelled caller had cancelled:
    # InvalidStateError, reported by threading.excepthook (r4).
    gate = threading.Event()
    wf = runtime.register(held_workflow(Counter(), gate))
    raised: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: raised.append(f"{args.thread}: {args.exc_value!r}")

    async def main() -> None:
        await wf.create_run().astart_async(input_data={"value": "x"})
        threading.Timer(0.3, gate.set).start()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await runtime.astop(WAIT)

    try:
        asyncio.run(main())
        wait_until(lambda: not runtime.is_running, WAIT)
        assert not wait_for_no_callboard_threads()
    finally:
        gate.set()
        threading.excepthook = previous
    assert raised == []


def test_a_runtime_whose_astart_was_cancelled_is_stopped_once_its_start_ends(
    tmp_path: Path,
) -> None:
    # A server cancelled during its startup (async with Runtime(...) in its lifespan):
    # __aexit__ never ran, and the runtime went on, claiming and running runs.
    rt = Runtime(store=tmp_path / "runs.db")

    async def lifespan() -> None:
        async with rt:
            await asyncio.sleep(WAIT)

    async def main() -> None:
        task = asyncio.create_task(lifespan())
        await asyncio.sleep(0)  # astart has handed the start to a thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: rt._host.state == "stopped", WAIT, "the started runtime stops")
    assert not wait_for_no_callboard_threads()


def test_queries_of_a_stopped_runtime_still_answer_when_awaited() -> None:
    async def main() -> None:
        rt = await Runtime().astart()
        wf = rt.register(quick_workflow())
        result = await wf.create_run(run_id="r").astart(input_data={"value": "a"})
        await rt.astop()
        assert (await wf.aget_workflow_run_execution_result("r")) == result

    asyncio.run(main())
    assert not wait_for_no_callboard_threads()


def test_the_twins_carry_the_callers_context_variables(runtime: Runtime) -> None:
    import contextvars

    seen: list[str] = []
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    wf = runtime.register(quick_workflow())
    original = wf.get_workflow_run_execution_result

    def spying(run_id: str) -> Any:
        seen.append(request_id.get("unset"))
        return original(run_id)

    wf.get_workflow_run_execution_result = spying  # type: ignore[method-assign]

    async def main() -> None:
        request_id.set("req-7")
        await wf.aget_workflow_run_execution_result("anything")

    asyncio.run(main())
    assert seen == ["req-7"]


# --- the loop never waits ---------------------------------------------------------------------


def test_astart_async_leaves_the_loop_free_while_another_process_holds_the_lock(
    runtimes: Runtimes, tmp_path: Path
) -> None:
    """The lock is let go only once the loop has ticked: a blocked loop would never get there."""
    path = tmp_path / "runs.db"
    rt = runtimes.start(str(path))
    wf = rt.register(quick_workflow())
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database's write lock
    ticked = threading.Event()

    def release_once_ticked() -> None:
        ticked.wait(BLOCK_LIMIT)
        holder.execute("COMMIT")

    releaser = threading.Thread(target=release_once_ticked)
    releaser.start()

    async def main() -> list[str]:
        order: list[str] = []
        start = asyncio.ensure_future(wf.create_run().astart_async(input_data={"value": "x"}))
        for _ in range(5):
            await asyncio.sleep(0.01)
            order.append("tick" if not start.done() else "started")
        ticked.set()
        await start
        order.append("started")
        return order

    try:
        order = asyncio.run(main())
    finally:
        ticked.set()
        releaser.join()
        holder.close()
    assert order == ["tick"] * 5 + ["started"]


def test_a_start_whose_awaiting_task_was_cancelled_is_told_by_starting_the_same_run_again(
    runtimes: Runtimes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel does not undo a start on its way; the same ``Run`` started again says which.

    Its second start waits for the first: it raises ``RunAlreadyStartedError`` if the
    first recorded the run, and starts it if the first never began.
    """
    path = tmp_path / "runs.db"
    rt = runtimes.start(str(path))
    wf = rt.register(quick_workflow())
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the start waits for the write lock meanwhile

    async def main() -> None:
        run = wf.create_run()
        start = asyncio.ensure_future(run.astart_async(input_data={"value": "x"}))
        await asyncio.sleep(0.2)  # on its way: on a call thread, waiting for the lock
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        again = asyncio.ensure_future(run.astart_async(input_data={"value": "x"}))
        await asyncio.sleep(0.05)
        holder.execute("COMMIT")
        with pytest.raises(RunAlreadyStartedError):
            await again
        assert (await run.wait_async(WAIT)).status == RunStatus.SUCCESS

        # A start still waiting for a call thread when cancelled is never made.
        holding = [
            asyncio.ensure_future(wf.aget_workflow_run_execution_result("held-up"))
            for _ in range(CALL_THREADS)
        ]
        await asyncio.sleep(0.05 + CALL_THREADS * STALL)  # one more thread per stall
        other = wf.create_run()
        start = asyncio.ensure_future(other.astart_async(input_data={"value": "y"}))
        await asyncio.sleep(0.05)
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        gate.set()
        await asyncio.gather(*holding)
        assert await wf.aget_workflow_run_execution_result(other.run_id) is None
        await other.astart_async(input_data={"value": "y"})
        assert (await other.wait_async(WAIT)).status == RunStatus.SUCCESS

    from runtime._handoff import STALL
    from runtime._runtime import CALL_THREADS

    gate = threading.Event()
    store = rt.store
    assert store is not None
    real_load = store.load

    def load(run_id: str) -> Any:
        if run_id == "held-up":
            gate.wait(BLOCK_LIMIT)
        return real_load(run_id)

    monkeypatch.setattr(store, "load", load)
    try:
        asyncio.run(main())
    finally:
        gate.set()
        if holder.in_transaction:
            holder.execute("COMMIT")
        holder.close()


def test_the_call_threads_are_bounded_and_end_with_the_runtime() -> None:
    from runtime._runtime import CALL_THREADS

    async def main() -> int:
        async with Runtime() as rt:
            wf = rt.register(quick_workflow())
            runs = [wf.create_run() for _ in range(200)]
            await asyncio.gather(*(run.astart_async(input_data={"value": "v"}) for run in runs))
            threads = [t for t in threading.enumerate() if t.name.startswith("callboard-call")]
            await asyncio.gather(*(run.wait_async(WAIT) for run in runs))
            return len(threads)

    assert 1 <= asyncio.run(main()) <= CALL_THREADS
    assert not wait_for_no_callboard_threads()


# --- watches that are closed, or dropped ------------------------------------------------------


def test_a_watch_is_a_context_manager_and_close_ends_its_iteration(runtime: Runtime) -> None:
    wf = runtime.register(asking_workflow())
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    with run.watch(timeout=WAIT) as watch:
        assert isinstance(watch, RunWatch)
        first = next(watch)
        assert (first.type, first.status) == ("status", "pending")  # its start, replayed
    assert watch.closed
    assert list(watch) == []
    watch.close()  # again: nothing happens

    async def main() -> None:
        async with await run.awatch() as awatch:
            await awatch.__anext__()
        assert [event async for event in awatch] == []

    asyncio.run(main())
    assert run.cancel() is True


def _channels_alive() -> int:
    """How many watch channels are alive anywhere (the registry's included)."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Channel))


def test_abandoned_watches_of_a_suspended_run_do_not_stay_in_the_registry(
    runtime: Runtime,
) -> None:
    wf = runtime.register(asking_workflow())
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    before = _channels_alive()
    kept = run.watch(timeout=WAIT)
    for _ in range(2000):
        watch = run.watch()
        next(watch)
        del watch  # dropped, as by an SSE client that went away
    # The one kept, and a few a message on its way may hold for a moment: not 2,000.
    wait_until(lambda: _channels_alive() <= before + 5, WAIT, "abandoned watches freed")
    # The watch still held goes on: it sees the resume through to the end.
    run.resume(resume_data={}, timeout=WAIT)
    assert [event.status for event in kept if event.type == "status"][-1] == RunStatus.SUCCESS
    del kept


def test_closed_watches_leave_the_registry_and_the_run_is_no_longer_followed(
    runtime: Runtime,
) -> None:
    wf = runtime.register(asking_workflow())
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == RunStatus.SUSPENDED
    before = _channels_alive()
    watches = [run.watch() for _ in range(10)]
    for watch in watches:
        watch.close()
    del watches, watch
    wait_until(lambda: _channels_alive() <= before + 2, WAIT, "closed watches forgotten")
    assert run.cancel() is True


def test_a_watch_of_an_ended_run_closes_without_error(runtime: Runtime) -> None:
    wf = runtime.register(quick_workflow())
    run = wf.create_run()
    run.start(input_data={"value": "v"}, timeout=WAIT)
    with run.watch() as watch:
        events = list(watch)
    assert events[-1].status == RunStatus.SUCCESS
    assert run.wait().result == Value(value="V").model_dump()


def test_a_run_reader_answers_when_awaited(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    with Runtime(store=path) as rt:
        wf = rt.register(quick_workflow())
        wf.create_run(run_id="read-me").start(input_data={"value": "r"}, timeout=WAIT)

    async def main() -> None:
        with RunReader(path) as reader:
            result = await reader.aget_run("read-me")
            assert result is not None and result.result == {"value": "R"}
            page = await reader.alist_runs(workflow_id="quick")
            assert [run.run_id for run in page.runs] == ["read-me"]

    asyncio.run(main())


def test_the_twins_work_on_a_postgresql_store(runtimes: Runtimes, postgres_url: str) -> None:
    rt = runtimes.start(postgres_url)

    async def main() -> None:
        wf = await rt.aregister(asking_workflow())
        run = wf.create_run()
        assert (await run.astart(input_data={"n": 1}, timeout=WAIT)).status == "suspended"
        assert (await run.aresume(resume_data={}, timeout=WAIT)).result == {"n": 2}
        other = wf.create_run()
        await other.astart_async(input_data={"n": 3})
        assert (await other.wait_async(WAIT)).status == RunStatus.SUSPENDED
        assert await other.acancel() is True
        listed = await wf.alist_workflow_runs()
        assert sorted(r.run_id for r in listed.runs) == sorted([run.run_id, other.run_id])
        assert await wf.adelete_workflow_run_by_id(other.run_id) is True

    asyncio.run(main())


def test_cancels_waiting_for_slow_hooks_do_not_hold_up_other_awaitable_calls() -> None:
    # The `a` calls share a few call threads (CALL_THREADS): four acancel() calls whose
    # runs' on_finish hooks took their time held up every other awaitable call, a read
    # of a finished run included, until the hooks returned.
    from runtime._runtime import CALL_THREADS

    release = threading.Event()

    def slow_hook(outcome: Any) -> None:
        release.wait(BLOCK_LIMIT)

    def forever(ctx: Any) -> Value:
        ctx.abort_signal.wait(BLOCK_LIMIT)
        return ctx.input_data

    async def main() -> None:
        async with Runtime() as rt:
            hooked = rt.register(
                create_workflow(
                    id="hooked", input_schema=Value, output_schema=Value, on_finish=slow_hook
                )
                .then(create_step(id="f", input_schema=Value, output_schema=Value, execute=forever))
                .commit()
            )
            quick = rt.register(
                create_workflow(id="quick", input_schema=Value, output_schema=Value)
                .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=shout))
                .commit()
            )
            done = await quick.create_run().astart(input_data={"value": "a"})
            runs = [hooked.create_run() for _ in range(CALL_THREADS + 1)]
            for run in runs:
                await run.astart_async(input_data={"value": "x"})
            cancels = [asyncio.ensure_future(run.acancel()) for run in runs]
            await asyncio.sleep(0.2)  # each cancel waits for its run's hook
            try:
                read = await asyncio.wait_for(
                    quick.aget_workflow_run_execution_result(done.run_id), BLOCK_LIMIT / 2
                )
                assert read is not None and read.status == "success"
                assert not any(cancel.done() for cancel in cancels)  # still in their hooks
            finally:
                release.set()
            assert await asyncio.gather(*cancels) == [True] * len(runs)

    asyncio.run(main())


def test_many_cancels_at_once_share_a_bounded_pool_of_threads_that_ends_with_the_runtime() -> None:
    # Each acancel() started a thread of its own, on the loop's thread, which waits for the
    # new thread to run: a thousand cancels at once held the loop for a second, with
    # dozens of threads alive. They share APART_THREADS now (a cancel waiting for its
    # run's hook holds one; the others queue for it, and the loop goes on).
    from runtime._runtime import APART_THREADS

    release = threading.Event()
    seen: list[int] = []

    def slow_hook(outcome: Any) -> None:
        seen.append(sum(t.name.startswith("callboard-call-apart") for t in threading.enumerate()))
        release.wait(BLOCK_LIMIT)

    def forever(ctx: Any) -> Value:
        ctx.abort_signal.wait(BLOCK_LIMIT)
        return ctx.input_data

    async def main() -> list[bool]:
        async with Runtime() as rt:
            hooked = rt.register(
                create_workflow(
                    id="hooked", input_schema=Value, output_schema=Value, on_finish=slow_hook
                )
                .then(create_step(id="f", input_schema=Value, output_schema=Value, execute=forever))
                .commit()
            )
            runs = [hooked.create_run() for _ in range(APART_THREADS * 2)]
            for run in runs:
                await run.astart_async(input_data={"value": "x"})
            cancels = [asyncio.ensure_future(run.acancel()) for run in runs]
            await asyncio.sleep(0.3)  # as many cancels as there are threads wait in hooks
            release.set()
            return list(await asyncio.gather(*cancels))

    assert asyncio.run(main()) == [True] * APART_THREADS * 2
    assert max(seen) <= APART_THREADS
    assert not [t for t in threading.enumerate() if t.name.startswith("callboard-call-apart")]


def test_a_wait_that_outlives_its_async_step_body_is_counted_out_under_the_run_it_was_counted_in(
    runtime: Runtime,
) -> None:
    # A body that leaves a task awaiting another run, and returns: the task's wait was
    # counted in under the body's run and, the body gone, counted out under no run. Every
    # such run stayed counted as waiting for ever (room a worker gives a waiting step).
    children: list[Any] = []
    release = threading.Event()

    def held(ctx: Any) -> Value:
        release.wait(WAIT)  # it ends after the parents' bodies have returned
        return ctx.input_data

    child = (
        create_workflow(id="child", input_schema=Value, output_schema=Value)
        .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=held))
        .commit()
    )
    bound = runtime.register(child)
    left: set[Any] = set()

    async def leave_a_wait(ctx: Any) -> Value:
        run = bound.create_run()
        await run.astart_async(input_data={"value": "c"})
        task = asyncio.get_running_loop().create_task(run.wait_async(WAIT))
        left.add(task)
        task.add_done_callback(left.discard)
        await asyncio.sleep(0.05)  # the task begins its wait
        children.append(run)
        return ctx.input_data

    parent = runtime.register(
        create_workflow(id="parent", input_schema=Value, output_schema=Value)
        .then(create_step(id="p", input_schema=Value, output_schema=Value, execute=leave_a_wait))
        .commit()
    )
    for index in range(20):
        result = parent.create_run().start(input_data={"value": f"p{index}"}, timeout=WAIT)
        assert result.status == "success"
    release.set()
    for run in children:
        assert run.wait(timeout=WAIT).status == "success"
    wait_until(lambda: not left, WAIT, "the waits left behind ended")

    pool = runtime._host.system.pool
    wait_until(lambda: not pool._waits_of, WAIT, "no wait counted any more")
    assert pool.waiting == 0
