"""Faults injected at sites whose failure lost a run, a place or a wake the harness does not see.

:mod:`tests.test_injected_faults` makes one internal call raise at its entry
while a plain workload runs. These cases put a fault where that workload cannot
(a queue with ``max_queued``, a run that crashes, waiters, a full step pool), or
inside a call rather than at its entry. Each fails without the fix it guards.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

import actors._pool
import actors.system
from actors.registry import RegistryActor
from actors.run import RunActor
from actors.supervisor import SupervisorActor
from runtime import Queue, QueueFullError, RunStatus, Runtime, create_step, create_workflow

WAIT = 10.0
MARK = "injected fault"


class Value(BaseModel):
    value: int


def _raising_once(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    nth: int = 1,
    when: Callable[[], bool] = lambda: True,
) -> list[BaseException]:
    """Make ``owner.name`` raise a ``MemoryError`` at its ``nth`` call for which ``when()`` holds.

    Returns the list the error is put in once raised.
    """
    original = getattr(owner, name)
    lock = threading.Lock()
    calls = [0]
    raised: list[BaseException] = []

    def injected(*args: Any, **kwargs: Any) -> Any:
        if when():
            with lock:
                calls[0] += 1
                hit = calls[0] == nth
            if hit:
                raised.append(MemoryError(f"{MARK} at {name}"))
                raise raised[-1]
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, injected)
    return raised


@pytest.fixture
def runtime() -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        rt = Runtime(stop_timeout=5.0, **options).start()
        started.append(rt)
        return rt

    yield make
    for rt in started:
        rt.stop()


def _step(execute: Callable[[Any], Value], step_id: str = "add") -> Any:
    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)


def _add_one(ctx: Any) -> Value:
    return Value(value=ctx.input_data.value + 1)


def _held(
    release: threading.Event,
    started: threading.Event | None = None,
    *,
    only_value: int | None = None,
) -> Callable[[Any], Value]:
    """A step body that waits for ``release`` (for input ``only_value`` alone, if given).

    It sets ``started`` first, if given; then it adds one, as :func:`_add_one`.
    """

    def held(ctx: Any) -> Value:
        if only_value is None or ctx.input_data.value == only_value:
            if started is not None:
                started.set()
            assert release.wait(WAIT)
        return _add_one(ctx)

    return held


def _one_step(
    rt: Runtime, workflow_id: str, execute: Callable[[Any], Value] = _add_one, **options: Any
) -> Any:
    """Register a workflow of one step (``execute``) on ``rt``."""
    return rt.register(
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value, **options)
        .then(_step(execute))
        .commit()
    )


def _failed_of_the_fault(wf: Any, value: int = 1) -> Any:
    """Start a run of ``wf`` and wait for it: it must fail, naming the injected fault."""
    run = wf.create_run()
    run.start_async(input_data={"value": value})
    end = run.wait(timeout=WAIT)
    assert end.status == RunStatus.FAILED and MARK in str(end.error), end.error
    return run


def _next_runs_succeed(wf: Any, count: int = 3) -> None:
    """``count`` runs of ``wf`` one after the other, each succeeding."""
    for index in range(count):
        run = wf.create_run()
        run.start_async(input_data={"value": index})
        assert run.wait(timeout=WAIT).status == RunStatus.SUCCESS


# --- 1. a start in a queue whose handling fails gives its max_queued place back ----------


@pytest.mark.parametrize(
    "where",
    [
        "_on_start_run",  # before the run got into its queue: its place is given back
        "_spawn",  # admitted by the gate (its slot counted as running), its actor not started
    ],
)
def test_a_queued_start_whose_handling_fails_leaves_the_queue_whole(
    where: str, runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run fails naming the fault; its place in the queue (max_queued) and its slot are
    # free again: the queue of one place and one slot serves the next runs (QueueFullError,
    # or runs never admitted, if the failed start kept them).
    rt = runtime()
    wf = _one_step(rt, "queued", queue=Queue("bounded", concurrency=1, max_queued=1))
    raised = _raising_once(monkeypatch, SupervisorActor, where)
    _failed_of_the_fault(wf)
    assert raised, "the start was not handled"
    _next_runs_succeed(wf)


def test_a_queued_start_failed_of_its_actor_and_then_of_another_fault_gives_its_place_once(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Admitted by the gate, its actor fails to start: the run fails there, its places
    # passed on. A second fault later in the same handling must not give them back again
    # (the queue then took one run past max_queued) nor fail the run again (its hooks).
    started, release = threading.Event(), threading.Event()
    calls: list[tuple[str, str]] = []

    held = _held(release, started, only_value=0)
    queue = Queue("single", concurrency=1, max_queued=1)
    rt = runtime()
    wf = rt.register(
        create_workflow(
            id="twice",
            input_schema=Value,
            output_schema=Value,
            queue=queue,
            **_recording_hooks(calls),
        )
        .then(_step(held))
        .commit()
    )
    spawned = _raising_once(monkeypatch, SupervisorActor, "_spawn")
    idle = _raising_once(monkeypatch, SupervisorActor, "_notify_if_idle")
    failed = _failed_of_the_fault(wf)
    assert spawned and idle
    # One run in the slot, one waiting: the queue is full.
    running, waiting = wf.create_run(), wf.create_run()
    running.start_async(input_data={"value": 0})
    assert started.wait(WAIT)
    waiting.start_async(input_data={"value": 2})
    with pytest.raises(QueueFullError):
        wf.create_run().start_async(input_data={"value": 3})
    release.set()
    assert running.wait(timeout=WAIT).status == RunStatus.SUCCESS
    assert waiting.wait(timeout=WAIT).status == RunStatus.SUCCESS
    rt.stop()  # the hooks of a failure told twice would run on another hook thread
    assert calls.count(("finish", failed.run_id)) == 1, calls


@pytest.mark.parametrize("waits_in", ["queue", "max_concurrent_runs"])
def test_a_run_taken_from_its_wait_on_another_runs_end_fails_if_its_actor_cannot_start(
    waits_in: str, runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first run holds the one slot; the second waits for it (in its queue, or for room
    # under max_concurrent_runs) and is taken when the first ends, on the supervisor's
    # handling of that end, where its actor fails to start. Left to the fault's handler,
    # which knows only the first run's end, it stayed pending for ever and kept the slot.
    release = threading.Event()

    held = _held(release, only_value=0)
    queued = waits_in == "queue"
    rt = runtime() if queued else runtime(max_concurrent_runs=1)
    wf = rt.register(
        create_workflow(
            id="taken",
            input_schema=Value,
            output_schema=Value,
            queue=Queue("single", concurrency=1) if queued else None,
        )
        .then(_step(held))
        .commit()
    )
    raised = _raising_once(monkeypatch, SupervisorActor, "_spawn", nth=2)
    first, second = wf.create_run(), wf.create_run()
    first.start_async(input_data={"value": 0})
    second.start_async(input_data={"value": 1})
    release.set()
    assert first.wait(timeout=WAIT).status == RunStatus.SUCCESS
    end = second.wait(timeout=WAIT)
    assert raised
    assert end.status == RunStatus.FAILED and MARK in str(end.error), end.error
    _next_runs_succeed(wf)


# --- 2. a crash whose handling fails is failed with its plan: hooks once ----------------


def _recording_hooks(calls: list[tuple[str, str]]) -> dict[str, Any]:
    """A workflow's ``on_finish`` and ``on_error``, noting ``(kind, run_id)`` in ``calls``."""
    return {
        "on_finish": lambda outcome: calls.append(("finish", outcome.run_id)),
        "on_error": lambda outcome: calls.append(("error", outcome.run_id)),
    }


def _hooked(calls: list[tuple[str, str]]) -> Any:
    return (
        create_workflow(
            id="hooked",
            input_schema=Value,
            output_schema=Value,
            **_recording_hooks(calls),
        )
        .then(_step(lambda ctx: Value(value=ctx.input_data.value + 1), "first"))
        .then(_step(lambda ctx: Value(value=ctx.input_data.value + 1), "second"))
        .commit()
    )


@pytest.mark.parametrize("where", ["_on_run_crashed", "_forget"])
def test_a_crash_whose_handling_fails_calls_the_runs_hooks_exactly_once(
    where: str, runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's actor fails (at its first step's end); the supervisor then fails on its
    # RunCrashed, before it told the failure (_on_run_crashed) or after (_forget).
    calls: list[tuple[str, str]] = []
    rt = runtime()
    wf = rt.register(_hooked(calls))
    crashed = _raising_once(monkeypatch, RunActor, "_on_step_finished")
    raised = _raising_once(monkeypatch, SupervisorActor, where)
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    end = run.wait(timeout=WAIT)
    assert crashed and raised
    assert end.status == RunStatus.FAILED and MARK in str(end.error), end.error
    # The hooks run before the end is recorded; a second call would come after it, on
    # another hook thread: the stop waits for those.
    rt.stop()
    mine = sorted(kind for kind, run_id in calls if run_id == run.run_id)
    assert mine == ["error", "finish"], calls


# --- 3. the waiters of a run's end stored in memory wake whatever fails in waking them ---


class _FirstSetFails(threading.Event):
    """A waiter's event whose first ``set`` of all (of any such event) fails."""

    failed: ClassVar[list[BaseException]] = []

    def set(self) -> None:
        if not _FirstSetFails.failed:
            _FirstSetFails.failed.append(MemoryError(f"{MARK} at a waiter's set"))
            raise _FirstSetFails.failed[-1]
        super().set()


class _Threading(types.ModuleType):
    """:mod:`threading`, whose ``Event`` is :class:`_FirstSetFails`."""

    Event = _FirstSetFails

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)


@pytest.mark.parametrize("where", ["wake", "first waiter"])
def test_the_waiters_of_a_stored_end_wake_though_waking_them_fails(
    where: str, runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In memory the registry stores the end and wakes its waiters in one go: a fault in
    # the wake (at its start, or at the first of two waiters) left them waiting to their
    # timeouts. (On SQLite the store watcher reads the end of a run waited on here, and
    # wakes them, whatever failed in the registry.)
    release = threading.Event()

    held = _held(release)
    rt = runtime()
    wf = _one_step(rt, "waited", held)
    if where == "wake":
        raised = _raising_once(monkeypatch, RegistryActor, "_wake")
    else:
        raised = _FirstSetFails.failed = []
        # The events the waits hand the registry (the only ones actors.system makes).
        monkeypatch.setattr(actors.system, "threading", _Threading("threading"))
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    ends: list[Any] = []

    def wait() -> None:
        try:
            ends.append(run.wait(timeout=WAIT))
        except Exception as exc:  # a RunTimeoutError: the wake never came
            ends.append(exc)

    noted = threading.Semaphore(0)
    on_watch_run = RegistryActor._on_watch_run

    def noted_watch(registry: RegistryActor, message: Any) -> None:
        on_watch_run(registry, message)
        noted.release()

    monkeypatch.setattr(RegistryActor, "_on_watch_run", noted_watch)
    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    for _ in waiters:  # noted before the run ends: its end wakes them
        assert noted.acquire(timeout=WAIT)
    release.set()
    for waiter in waiters:
        waiter.join(WAIT + 5)
    assert raised, "nobody was woken"
    statuses = [getattr(end, "status", end) for end in ends]
    assert statuses == [RunStatus.SUCCESS] * 2, ends


# --- 4. a call taken off the pool's backlog is not lost to a fault ------------------------


def test_a_call_taken_off_the_backlog_by_a_failing_actor_is_still_served(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One step thread: the second run's call waits in the backlog until the first's ends;
    # the actor then takes it, and fails right after (its clock read), while it holds it.
    started = threading.Event()
    release = threading.Event()

    held = _held(release, started, only_value=0)
    rt = runtime(max_step_threads=1)
    wf = _one_step(rt, "pooled", held)
    finished = actors._pool.StepPool.finished.__code__
    clock = types.SimpleNamespace(monotonic=actors._pool._clock.monotonic)
    monkeypatch.setattr(actors._pool, "_clock", clock)
    raised = _raising_once(
        monkeypatch, clock, "monotonic", when=lambda: sys._getframe(2).f_code is finished
    )
    first = wf.create_run()
    first.start_async(input_data={"value": 0})
    assert started.wait(WAIT)
    submitted = threading.Event()
    submit = actors._pool.StepPool.submit

    def submitted_second(pool: actors._pool.StepPool, call: Any) -> None:
        submit(pool, call)
        submitted.set()  # the second run's call: in the backlog, the one thread being taken

    monkeypatch.setattr(actors._pool.StepPool, "submit", submitted_second)
    second = wf.create_run()
    second.start_async(input_data={"value": 1})
    assert submitted.wait(WAIT)
    release.set()
    assert first.wait(timeout=WAIT).status == RunStatus.SUCCESS
    assert second.wait(timeout=WAIT).status == RunStatus.SUCCESS
    assert raised, "no call was taken off the backlog"


# --- 5. the step pool's monitor outlives a fault of its own -------------------------------


def test_the_step_pools_monitor_grows_the_pool_after_a_fault_of_its_own(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the pool's core (4), calls wait until the monitor sees them wait a whole tick and
    # starts actors for them. A fault as it took them off the backlog ended its thread, and
    # the calls with it: the pool never grew again, and runs past the core never ended.
    runs = 7
    together = threading.Barrier(runs)  # each step returns only once all are running

    def all_at_once(ctx: Any) -> Value:
        together.wait(WAIT)
        return Value(value=ctx.input_data.value + 1)

    raised = _raising_once(
        monkeypatch,
        actors._pool,
        "_handed",
        when=lambda: threading.current_thread().name == "callboard-step-monitor",
    )
    rt = runtime()
    wf = _one_step(rt, "grown", all_at_once)
    started = [wf.create_run() for _ in range(runs)]
    for index, run in enumerate(started):
        run.start_async(input_data={"value": index})
    ends = [run.wait(timeout=3 * WAIT) for run in started]
    assert raised, "the monitor handed no call over"
    assert [end.status for end in ends] == [RunStatus.SUCCESS] * runs, [e.error for e in ends]
    # And it still watches: a larger crowd, past the actors the first left, is served too.
    crowd = threading.Barrier(runs + 3)

    def larger(ctx: Any) -> Value:
        crowd.wait(WAIT)
        return ctx.input_data

    wider = _one_step(rt, "grown_again", larger)
    again = [wider.create_run() for _ in range(runs + 3)]
    for index, run in enumerate(again):
        run.start_async(input_data={"value": index})
    assert all(run.wait(timeout=3 * WAIT).status == RunStatus.SUCCESS for run in again)


def test_a_call_handed_over_as_a_step_begins_to_wait_is_not_lost_to_a_fault(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four parents hold the pool's core (4), each starting a child and waiting for it: the
    # children's calls wait in the backlog, and a parent's wait hands one to a new actor.
    # A fault there lost the call it had taken (its child never ended) and kept the wait
    # counted (one thread more allowed for good).
    parents = 4
    children: list[Any] = []
    lock = threading.Lock()
    child_wf = None  # set below, once registered

    def parent(ctx: Any) -> Value:
        assert child_wf is not None
        child = child_wf.create_run()
        with lock:
            children.append(child)
        child.start_async(input_data=ctx.input_data)
        # The child's call waits in the backlog (the four actors are the parents') before
        # this wait begins, which then hands it over.
        pool = rt._host.system.pool  # type: ignore[attr-defined]
        deadline = time.monotonic() + WAIT
        while not pool.backlog and not raised and time.monotonic() < deadline:
            time.sleep(0.001)
        assert child.wait(timeout=WAIT).status == RunStatus.SUCCESS
        return Value(value=ctx.input_data.value)

    raised = _raising_once(
        monkeypatch,
        actors._pool,
        "_handed",
        when=lambda: threading.current_thread().name.startswith("StepActor-"),
    )
    # The pool's monitor would give the waiting calls their threads a tick later: not
    # during this test, so that the parents' waits hand them over.
    monkeypatch.setattr(actors._pool, "TICK", 60.0)
    rt = runtime()
    child_wf = _one_step(rt, "child")
    wf = rt.register(
        create_workflow(id="parent", input_schema=Value, output_schema=Value)
        .then(_step(parent, "parent"))
        .commit()
    )
    runs = [wf.create_run() for _ in range(parents)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": index})
    ends = [run.wait(timeout=3 * WAIT) for run in runs]
    assert raised, "no call was handed over as a step began to wait"
    # The parent whose wait met the fault fails naming it; the others succeed.
    statuses = sorted(end.status for end in ends)
    assert statuses.count(RunStatus.FAILED) <= 1, [end.error for end in ends]
    # Every child ends, the one whose call the fault met too.
    assert len(children) == parents
    assert all(child.wait(timeout=3 * WAIT).status == RunStatus.SUCCESS for child in children)


# --- 6. a sleeping run whose wake fails is failed with its hooks --------------------------


def test_a_sleeping_run_whose_wake_fails_is_failed_with_its_hooks_called_once(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wake takes the run from the sleepers, then its actor fails to start: the fault's
    # handler found no sleeper, and failed the run without its plan, its hooks not called.
    calls: list[tuple[str, str]] = []
    rt = runtime()
    wf = rt.register(
        create_workflow(
            id="napping",
            input_schema=Value,
            output_schema=Value,
            **_recording_hooks(calls),
        )
        .sleep(0.05)
        .then(_step(lambda ctx: Value(value=ctx.input_data.value + 1)))
        .commit()
    )
    raised = _raising_once(monkeypatch, SupervisorActor, "_spawn", nth=2)  # 1: start, 2: wake
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    end = run.wait(timeout=WAIT)
    assert raised
    assert end.status == RunStatus.FAILED and MARK in str(end.error), end.error
    rt.stop()  # waits for the hook threads
    assert sorted(kind for kind, run_id in calls if run_id == run.run_id) == ["error", "finish"]


# --- 7. a cancel stored, then a fault: answered as stored ---------------------------------


def test_a_cancel_the_store_took_is_answered_so_though_a_fault_followed(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In memory the registry stores the canceled snapshot, reads it back and answers the
    # cancel. A fault in the read-back answered "not stored": cancel() then found the run
    # canceled and returned False, saying its cancel had changed nothing.
    from runtime._stores.memory import MemoryStore

    began, release = threading.Event(), threading.Event()

    held = _held(release, began)
    rt = runtime()
    wf = _one_step(rt, "canceled_then_fault", held)
    armed = [False]
    raised = _raising_once(
        monkeypatch,
        MemoryStore,
        "load",
        when=lambda: armed[0] and threading.current_thread().name.startswith("RegistryActor-"),
    )
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    assert began.wait(WAIT)
    armed[0] = True
    try:
        assert run.cancel() is True
    finally:
        release.set()
    assert raised, "the registry read nothing back"
    assert run.wait(timeout=WAIT).status == RunStatus.CANCELED


# --- 8. waits noted for runs that ended meanwhile wake though their read fails ------------


def test_a_wait_for_a_run_that_ended_as_it_began_wakes_though_the_registrys_read_fails(
    runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wait read the run unfinished; the run ended before the registry noted the wait;
    # the registry then reads the runs of the waits it noted, and a fault there (a
    # MemoryError) left the wait to its timeout: nothing else would wake it.
    import runtime._run as run_module
    from runtime._stores.memory import MemoryStore

    release = threading.Event()

    held = _held(release)
    rt = runtime()
    wf = _one_step(rt, "ended_as_waited", held)
    run = wf.create_run()
    run.start_async(input_data={"value": 1})
    armed = [False]
    raised = _raising_once(
        monkeypatch,
        MemoryStore,
        "load",
        when=lambda: armed[0] and threading.current_thread().name.startswith("RegistryActor-"),
    )
    refuse = run_module.Run._refuse_on_step_loop

    def run_ends_first(self: Any, call: str) -> None:
        # Between the wait's first read (unfinished) and the wait's note: the run ends.
        release.set()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            stored = rt.store.load(self.run_id)
            if stored is not None and stored.status == RunStatus.SUCCESS:
                break
            time.sleep(0.001)
        armed[0] = True
        refuse(self, call)

    monkeypatch.setattr(run_module.Run, "_refuse_on_step_loop", run_ends_first)
    assert run.wait(timeout=WAIT / 2).status == RunStatus.SUCCESS
    assert raised, "the registry read no wait's run"
