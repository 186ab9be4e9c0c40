"""Resume requests under races: interleavings forced one at a time.

Every test here runs runtimes in this process on one shared store (SQLite, then
PostgreSQL), and holds a worker's claimer (or a run's actor) back at the point
the race is about, with a :class:`threading.Event`, so that the interleaving
happens every time rather than once in a while.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.system import ActorSystem
from runtime import Runtime, create_step, create_workflow
from runtime._stores.base import ResumeRequest, ResumeRequestStore
from tests._support import Value, wait_until
from tests.shared.conftest import Fleet

WAIT = 60.0
"""Seconds a run may take in these tests, on a loaded machine, before a test fails."""


class Gate:
    """Holds back the claimers of chosen runtimes at their next resume request.

    Without ``let``, a runtime's claimer leaves every request alone (as one that has
    not looked yet). ``hold(rt)`` makes the next request ``rt``'s claimer passes on
    wait, the request in hand, until ``release(rt)``; ``let(rt)`` lets ``rt`` act.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._real = ActorSystem._resume_requested
        self._allowed: set[int] = set()
        self._holding: dict[int, tuple[threading.Event, threading.Event]] = {}
        self._finished: dict[int, threading.Event] = {}
        gate = self

        def gated(system: ActorSystem, request: ResumeRequest, done: Callable[[], None]) -> None:
            key = id(system)
            held = gate._holding.pop(key, None)
            if held is not None:
                arrived, go = held
                arrived.set()
                go.wait(WAIT)
            elif key not in gate._allowed:
                done()
                return
            try:
                gate._real(system, request, done)
            finally:
                finished = gate._finished.pop(key, None)
                if finished is not None:
                    finished.set()

        monkeypatch.setattr(ActorSystem, "_resume_requested", gated)

    @staticmethod
    def _key(rt: Runtime) -> int:
        system = rt._host.system
        assert system is not None
        return id(system)

    def let(self, rt: Runtime) -> None:
        self._allowed.add(self._key(rt))

    def shut(self, rt: Runtime) -> None:
        self._allowed.discard(self._key(rt))

    def hold(self, rt: Runtime) -> tuple[threading.Event, threading.Event]:
        """Events: the request arrived (held in hand), and go on with it."""
        events = threading.Event(), threading.Event()
        self._holding[self._key(rt)] = events
        return events

    def finished(self, rt: Runtime) -> threading.Event:
        """Set once ``rt``'s claimer next returns from acting on a request."""
        event = threading.Event()
        self._finished[self._key(rt)] = event
        return event


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    made = Gate(monkeypatch)
    yield made
    for _, go in list(made._holding.values()):
        go.set()


def _requests(rt: Runtime) -> ResumeRequestStore:
    store = rt.store
    assert isinstance(store, ResumeRequestStore)
    return store


class Twice:
    """``parallel(a, b)``: ``a`` suspends once, then holds while ``release`` is unset;
    ``b`` suspends until it is resumed with ``n >= 2`` (so it suspends again at the same
    path after ``n=1``). Every execution of ``b`` is noted with its resume data."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.a_runs = threading.Event()
        self.b_seen: list[Any] = []

        def a(ctx: Any) -> Value:
            if ctx.resume_data is None:
                ctx.suspend({"who": "a"})
            self.a_runs.set()
            self.release.wait(WAIT)
            return Value(value="a")

        def b(ctx: Any) -> Value:
            self.b_seen.append(ctx.resume_data)
            data = ctx.resume_data
            if data is None or data["n"] < 2:
                ctx.suspend({"who": "b"})
            return Value(value=f"b{data['n']}")

        self.workflow = (
            create_workflow(id="twice", input_schema=Value, output_schema=Value)
            .parallel(
                [
                    create_step(id="a", input_schema=Value, output_schema=Value, execute=a),
                    create_step(id="b", input_schema=Value, output_schema=Value, execute=b),
                ]
            )
            .map(lambda ctx: {"value": ctx.input_data["a"]["value"] + ctx.input_data["b"]["value"]})
            .commit()
        )


def _suspended_with_request(fleet: Fleet, twice: Twice) -> tuple[Any, Any]:
    """A run of ``twice`` suspended at ``b`` with a request (``n=1``) of ``b`` waiting.

    Returns the client's run and the store's record of the run then.
    """
    client = fleet.runtime("client")
    run = client.register(twice.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    assert run.wait(timeout=WAIT).status == "suspended"
    run.resume_async(step="a", resume_data={})
    assert twice.a_runs.wait(WAIT)
    run.resume_async(step="b", resume_data={"n": 1})  # a request: no claimer takes it yet
    store = _requests(client)
    assert store.resume_pending(run.run_id)
    twice.release.set()  # a ends: the run suspends at b, the request still waiting
    wait_until(
        lambda: _status(store, run.run_id) == "suspended", timeout=WAIT, what="suspended at b"
    )
    assert store.resume_pending(run.run_id)
    record = store.load(run.run_id)
    return run, record


def _status(store: Any, run_id: str) -> str | None:
    record = store.load(run_id)
    return None if record is None else record.status


def test_a_request_read_before_another_worker_carried_it_out_is_not_applied_again(
    fleet: Fleet, gate: Gate
) -> None:
    # Two workers read the same request of a suspended run. The first carries it out,
    # and the step suspends again at the same path. The second, late, found the run
    # suspended at that path and resumed it with the old request's data once more.
    twice = Twice()
    first, second = fleet.runtime("worker"), fleet.runtime("worker")
    for rt in (first, second):
        rt.register(twice.workflow)
    run, before = _suspended_with_request(fleet, twice)
    store = _requests(first)
    arrived, go = gate.hold(second)
    gate.let(second)
    assert arrived.wait(WAIT)  # the second worker has the request in hand
    gate.let(first)  # the first carries it out: b runs with n=1, and suspends again
    wait_until(lambda: len(twice.b_seen) == 2, timeout=WAIT, what="b ran again")
    wait_until(
        lambda: _status(store, run.run_id) == "suspended" and not store.resume_pending(run.run_id),
        timeout=WAIT,
        what="suspended again",
    )
    again = store.load(run.run_id)
    assert again is not None and again.seq > before.seq
    done = gate.finished(second)
    go.set()  # the second acts on what it read
    assert done.wait(WAIT)
    time.sleep(0.5)  # room for a step that should not run
    assert twice.b_seen == [None, {"n": 1}], twice.b_seen
    after = store.load(run.run_id)
    assert after is not None and after.status == "suspended" and after.seq == again.seq


def test_a_request_whose_hint_was_lost_is_carried_out_by_the_next_poll(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's NOTIFY (or a store's own hint) is only a hint: the claimer's pass
    # every POLL_INTERVAL looks at the requests all the same.
    from actors.claimer import POLL_INTERVAL, Claimer

    real = Claimer.poke

    def deaf(self: Claimer, kind: str = "", run_id: str = "") -> None:
        if kind != "resume":
            real(self, kind, run_id)

    monkeypatch.setattr(Claimer, "poke", deaf)
    twice = Twice()
    fleet.runtime("worker").register(twice.workflow)
    run = fleet.runtime("client").register(twice.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    assert run.wait(timeout=WAIT).status == "suspended"
    run.resume_async(step="a", resume_data={})
    assert twice.a_runs.wait(WAIT)
    asked = time.monotonic()
    run.resume_async(step="b", resume_data={"n": 2})
    wait_until(lambda: len(twice.b_seen) == 2, timeout=WAIT, what="b ran")
    took = time.monotonic() - asked
    twice.release.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success" and result.result == {"value": "ab2"}
    assert took < POLL_INTERVAL + 1.0, took  # a pass, with room for a loaded machine


def test_requests_no_worker_here_can_take_do_not_crowd_out_those_of_the_runs_it_drives(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A look reads at most RESUME_REQUESTS_READ requests, the oldest first. Older ones of
    # suspended runs of a workflow that no worker here registers (its workers gone)
    # filled every look: the request of a run this worker drives was never read, its
    # caller told it was recorded.
    import runtime._stores.postgres as postgres_module
    import runtime._stores.sqlite as sqlite_module
    from tests.shared._worker import open_store
    from tests.test_store_contract import rec, save_and_wait

    for module in (sqlite_module, postgres_module):
        monkeypatch.setattr(module, "RESUME_REQUESTS_READ", 3)
    twice = Twice()
    fleet.runtime("worker").register(twice.workflow)
    elsewhere = open_store(fleet.location, 10.0)
    try:
        assert isinstance(elsewhere, ResumeRequestStore)
        for n in range(3):
            retired = rec(f"retired{n}", workflow_id="retired")
            assert elsewhere.create(retired)
            save_and_wait(elsewhere, rec(retired.run_id, 1, "running", workflow_id="retired"))
            said = elsewhere.request_resume(
                retired.run_id, "ask", b"...", seq=1, created_at=retired.created_at
            )
            assert said == "recorded"
            save_and_wait(elsewhere, rec(retired.run_id, 2, "suspended", workflow_id="retired"))
    finally:
        elsewhere.close()
    run = fleet.runtime("client").register(twice.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    assert run.wait(timeout=WAIT).status == "suspended"
    run.resume_async(step="a", resume_data={})
    assert twice.a_runs.wait(WAIT)
    run.resume_async(step="b", resume_data={"n": 2})
    try:
        wait_until(lambda: len(twice.b_seen) == 2, timeout=10, what="b resumed by its request")
    finally:
        twice.release.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success" and result.result == {"value": "ab2"}


class LoopedItems:
    """``dowhile(child)``, twice: ``child`` asks for each of two items (``child.ask[i]``).

    Resumed with ``bail``, an item holds while ``release`` is unset, then bails: ``child``
    ends at once, the other item's suspension with it, and the next iteration asks again,
    at the same paths. With ``runs_on``, item 0 of the next iteration does not ask: it
    holds while ``release_again`` is unset (the run runs on, item 1 waiting). Every
    execution of ``ask`` is noted with its iteration's input, its item and resume data.
    """

    def __init__(self, *, runs_on: bool = False) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.release_again = threading.Event()
        self.seen: list[tuple[str, Any]] = []

        def ask(ctx: Any) -> Value:
            self.seen.append((ctx.input_data.value, ctx.resume_data))
            again = ctx.input_data.value.startswith("bailed")
            if runs_on and again and ctx.input_data.value.endswith("i0"):
                self.release_again.wait(WAIT)
                return Value(value=ctx.input_data.value)
            if ctx.resume_data is None:
                ctx.suspend({"item": ctx.input_data.value})
            if ctx.resume_data.get("bail"):
                self.holding.set()
                self.release.wait(WAIT)
                ctx.bail(Value(value="bailed"))
            return Value(value=f"{ctx.input_data.value}-{ctx.resume_data['n']}")

        child = (
            create_workflow(id="child", input_schema=Value, output_schema=Value)
            .map(lambda ctx: [{"value": f"{ctx.input_data['value']}/i{n}"} for n in (0, 1)])
            .foreach(
                create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask),
                concurrency=2,
            )
            .map(lambda ctx: {"value": ",".join(item["value"] for item in ctx.input_data)})
            .commit()
        )
        self.workflow = (
            create_workflow(id="looped-items", input_schema=Value, output_schema=Value)
            .dowhile(child, lambda ctx: ctx.iteration_count < 2)
            .commit()
        )


def test_a_request_of_a_suspension_that_ended_unresumed_is_not_applied_to_the_next_at_its_path(
    fleet: Fleet, gate: Gate
) -> None:
    # A request of child.ask[1] waited while item 0 bailed: child ended, item 1's
    # suspension with it, and the loop's next iteration suspended at child.ask[1] again.
    # The request, of the suspension that was gone, resumed the new one.
    looped = LoopedItems()
    worker = fleet.runtime("worker")
    worker.register(looped.workflow)
    client = fleet.runtime("client")
    run = client.register(looped.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    first = run.wait(timeout=WAIT)
    assert first.status == "suspended"
    assert sorted(first.suspended) == ["child.ask[0]", "child.ask[1]"]
    gate.let(worker)
    run.resume_async(step="child.ask[0]", resume_data={"bail": True, "n": 0})
    assert looped.holding.wait(WAIT)
    gate.shut(worker)  # the worker's claimer leaves the next request alone, for now
    run.resume_async(step="child.ask[1]", resume_data={"n": 1})
    store = _requests(client)
    assert store.resume_pending(run.run_id)
    looped.release.set()  # item 0 bails; the next iteration asks again, at the same paths
    wait_until(
        lambda: _status(store, run.run_id) == "suspended" and len(looped.seen) == 5,
        timeout=WAIT,
        what="the second iteration suspended",
    )
    gate.let(worker)
    claimer = worker._host.system.claimer  # type: ignore[union-attr]
    assert claimer is not None
    claimer.poke("resume")
    # The poked pass hands every request it reads to the gate on its own thread: once it
    # is over, a request still waiting (the fault) was acted on. None is left here (the
    # record of the bail took it), so this waits for the pass, not for a timeout.
    wait_until(claimer.idle, timeout=WAIT, what="the worker's claimer passed")
    time.sleep(0.5)  # room for a step that should not run
    assert ("bailed/i1", {"n": 1}) not in looped.seen, looped.seen
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended"
    assert sorted(result.suspended) == ["child.ask[0]", "child.ask[1]"]


def _look_held_after_reading(
    system: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Hold the system's claimer, once it read a request, until ``go``; ``read`` says when."""
    assert system is not None and system.claimer is not None
    claimer = system.claimer
    real = claimer._requests
    assert real is not None
    read, go = threading.Event(), threading.Event()

    def looked() -> list[ResumeRequest]:
        found = list(real())
        if found and not read.is_set():
            read.set()
            go.wait(WAIT)  # the claimer hands on what it read, late
        return found

    monkeypatch.setattr(claimer, "_requests", looked)
    return read, go


def test_a_request_read_before_a_bail_let_its_suspension_go_is_not_taken_by_the_next_at_its_path(
    fleet: Fleet, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's claimer read a request of child.ask[1] (its run held here); then item
    # 0 bailed, the record that let item 1's suspension go dropped the request, and the
    # loop's next iteration suspended at child.ask[1] again while its item 0 ran on.
    # The claimer handed on what it had read: the run's actor took it for the new one.
    looped = LoopedItems(runs_on=True)
    worker = fleet.runtime("worker")
    worker.register(looped.workflow)
    gate.let(worker)
    system = worker._host.system
    read, go = _look_held_after_reading(system, monkeypatch)
    client = fleet.runtime("client")
    run = client.register(looped.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    assert run.wait(timeout=WAIT).status == "suspended"
    run.resume_async(step="child.ask[0]", resume_data={"bail": True, "n": 0})
    assert looped.holding.wait(WAIT)
    try:
        run.resume_async(step="child.ask[1]", resume_data={"n": 1})
        assert read.wait(WAIT)
        looped.release.set()  # item 0 bails; item 1 of the next iteration asks again
        wait_until(
            lambda: ("bailed/i1", None) in looped.seen,
            timeout=WAIT,
            what="the next iteration's item 1 asks",
        )
        store = _requests(client)
        wait_until(
            lambda: not store.resume_pending(run.run_id), timeout=WAIT, what="the request dropped"
        )
        done = gate.finished(worker)
        go.set()
        assert done.wait(WAIT)
        time.sleep(0.5)  # room for a step that should not run
        assert ("bailed/i1", {"n": 1}) not in looped.seen, looped.seen
    finally:
        go.set()
        looped.release.set()
        looped.release_again.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended" and list(result.suspended) == ["child.ask[1]"]


def test_a_request_taken_by_a_worker_fenced_before_its_record_committed_is_carried_out_once(
    fleet: Fleet,
) -> None:
    # The worker's actor took the request; the record that carries it out was still on
    # its way when the worker's lease ran out (its writer stalled). Another worker
    # takes the run over: it carries the request out, and the fenced worker's step
    # never ran with it (its start waited for that record).
    twice = Twice()
    first = fleet.runtime("worker")
    first.register(twice.workflow)
    client = fleet.runtime("client")
    run = client.register(twice.workflow).create_run()
    run.start_async(input_data={"value": "x"})
    assert run.wait(timeout=WAIT).status == "suspended"
    run.resume_async(step="a", resume_data={})
    assert twice.a_runs.wait(WAIT)
    writer = first.store._writer  # type: ignore[union-attr]
    commit = writer._commit
    stopped, go_on = threading.Event(), threading.Event()

    def stalled(writes: list[Any]) -> Any:
        # The batch with the record that carries the request out waits, and all behind
        # it (the worker's heartbeats too): its lease runs out.
        if any(w.kind == "save" and any(r.taken for r in w.payload) for w in writes):
            stopped.set()
            go_on.wait(WAIT)
        return commit(writes)

    writer._commit = stalled
    try:
        run.resume_async(step="b", resume_data={"n": 2})
        assert stopped.wait(WAIT)  # the actor took it
        assert twice.b_seen == [None]
        fleet.runtime("worker").register(twice.workflow)  # reaps the first, takes the run
        wait_until(lambda: {"n": 2} in twice.b_seen, timeout=WAIT, what="b resumed elsewhere")
    finally:
        go_on.set()
    time.sleep(0.5)  # the first worker's writes go in, fenced
    twice.release.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success" and result.result == {"value": "ab2"}
    assert twice.b_seen == [None, {"n": 2}], twice.b_seen
    assert not _requests(client).resume_pending(run.run_id)


def test_a_request_of_a_suspended_run_past_its_deadline_is_dropped_and_the_run_canceled(
    fleet: Fleet, gate: Gate
) -> None:
    twice = Twice()
    worker = fleet.runtime("worker")
    worker.register(twice.workflow)
    client = fleet.runtime("client")
    run = client.register(twice.workflow).create_run()
    run.start_async(input_data={"value": "x"}, run_timeout=3.0)
    assert run.wait(timeout=WAIT).status == "suspended"
    gate.let(worker)
    run.resume_async(step="a", resume_data={})
    assert twice.a_runs.wait(WAIT)
    gate.shut(worker)
    run.resume_async(step="b", resume_data={"n": 2})
    store = _requests(client)
    twice.release.set()  # a ends: the run suspends, the request waiting
    wait_until(lambda: _status(store, run.run_id) == "suspended", timeout=WAIT, what="suspended")
    assert store.resume_pending(run.run_id)
    waited: list[Any] = []
    waiter = threading.Thread(target=lambda: waited.append(run.wait(timeout=WAIT)))
    waiter.start()
    time.sleep(3.5)  # past its deadline, the request still waiting
    gate.let(worker)
    waiter.join(WAIT)
    assert waited and waited[0].status == "canceled", waited
    assert waited[0].error is not None and waited[0].error.name == "RunDeadlineError"
    assert twice.b_seen == [None]
    wait_until(lambda: not store.resume_pending(run.run_id), timeout=WAIT, what="dropped")


def test_a_cancel_between_a_workers_read_of_a_request_and_its_resume_wins(
    fleet: Fleet, gate: Gate
) -> None:
    twice = Twice()
    worker = fleet.runtime("worker")
    worker.register(twice.workflow)
    run, _ = _suspended_with_request(fleet, twice)
    store = _requests(worker)
    arrived, go = gate.hold(worker)
    gate.let(worker)
    assert arrived.wait(WAIT)  # the worker read the request of the suspended run
    assert run.cancel() is True
    done = gate.finished(worker)
    go.set()
    assert done.wait(WAIT)
    result = run.wait(timeout=WAIT)
    assert result.status == "canceled"
    wait_until(lambda: not store.resume_pending(run.run_id), timeout=WAIT, what="dropped")
    time.sleep(0.3)
    assert twice.b_seen == [None]


class FailsThenHolds:
    """``parallel(a, b)``: ``a`` holds while ``release`` is unset, then fails; run again (a
    restart) it holds while ``release_again`` is unset. ``b`` suspends until it is resumed.
    Every execution of ``b`` is noted with its resume data."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release_again = threading.Event()
        self.a_runs: list[int] = []
        self.b_seen: list[Any] = []

        def a(ctx: Any) -> Value:
            self.a_runs.append(1)
            if len(self.a_runs) == 1:
                self.release.wait(WAIT)
                raise RuntimeError("the first try of a fails")
            self.release_again.wait(WAIT)
            return Value(value="a")

        def b(ctx: Any) -> Value:
            self.b_seen.append(ctx.resume_data)
            if ctx.resume_data is None:
                ctx.suspend({"who": "b"})
            return Value(value=f"b{ctx.resume_data['n']}")

        self.workflow = (
            create_workflow(id="fails-then-holds", input_schema=Value, output_schema=Value)
            .parallel(
                [
                    create_step(id="a", input_schema=Value, output_schema=Value, execute=a),
                    create_step(id="b", input_schema=Value, output_schema=Value, execute=b),
                ]
            )
            .map(lambda ctx: {"value": ctx.input_data["a"]["value"] + ctx.input_data["b"]["value"]})
            .commit()
        )


def test_a_request_read_before_its_run_was_restarted_is_not_taken_by_the_restarted_runs_actor(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's claimer read a request of b (its run held here, a running). Before it
    # handed it on, a failed, the run was restarted here (the restart dropped the
    # request), and b suspended again while a ran on. The restarted run's actor, which
    # knew nothing of the first b's suspension, took the old request for the new one.
    flow = FailsThenHolds()
    rt = fleet.runtime("both")
    workflow = rt.register(flow.workflow)
    system = rt._host.system
    read, go = _look_held_after_reading(system, monkeypatch)

    def b_waits() -> bool:
        result = workflow.get_workflow_run_execution_result(run.run_id)
        return result is not None and result.status == "running" and "b" in result.suspended

    run = workflow.create_run()
    try:
        run.start_async(input_data={"value": "x"})
        wait_until(b_waits, timeout=WAIT, what="b waits while a runs")
        run.resume_async(step="b", resume_data={"n": 1})
        assert read.wait(WAIT)  # the claimer holds the request, not yet handed on
        flow.release.set()  # a fails: the run ends
        assert run.wait(timeout=WAIT).status == "failed"
        run.restart_async()  # held and run here at once: a holds, b suspends again
        wait_until(lambda: len(flow.a_runs) == 2, timeout=WAIT, what="a runs again")
        wait_until(b_waits, timeout=WAIT, what="b waits again while a runs")
        assert not _requests(rt).resume_pending(run.run_id)  # the restart dropped it
        done = threading.Event()
        assert system is not None and system.claimer is not None
        claimer = system.claimer
        real_resume = claimer._resume
        assert real_resume is not None

        def finished(request: ResumeRequest, told: Callable[[], None]) -> None:
            real_resume(request, lambda: (told(), done.set()))

        monkeypatch.setattr(claimer, "_resume", finished)
        go.set()
        assert done.wait(WAIT)
        time.sleep(0.5)  # room for a step that should not run
        assert flow.b_seen == [None, None], flow.b_seen
    finally:
        go.set()
        flow.release.set()
        flow.release_again.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended" and list(result.suspended) == ["b"]


class ThreeAsk:
    """``parallel(a, b, c)``: ``a`` and ``c`` suspend once, then hold while ``release_a``
    (``release_c``) is unset; ``b`` suspends until it is resumed with ``n >= 2``. Every
    execution of ``b`` is noted with its resume data's ``n``."""

    def __init__(self) -> None:
        self.release_a = threading.Event()
        self.release_c = threading.Event()
        self.a_runs = threading.Event()
        self.c_runs = threading.Event()
        self.b_seen: list[Any] = []

        def holds(runs: threading.Event, release: threading.Event) -> Callable[[Any], Value]:
            def body(ctx: Any) -> Value:
                if ctx.resume_data is None:
                    ctx.suspend({"holds": True})
                runs.set()
                release.wait(WAIT)
                return Value(value="h")

            return body

        def b(ctx: Any) -> Value:
            data = ctx.resume_data
            self.b_seen.append(None if data is None else data["n"])
            if data is None or data["n"] < 2:
                ctx.suspend({"who": "b"})
            return Value(value=f"b{data['n']}")

        step = create_step
        self.workflow = (
            create_workflow(id="three-ask", input_schema=Value, output_schema=Value)
            .parallel(
                [
                    step(
                        id="a",
                        input_schema=Value,
                        output_schema=Value,
                        execute=holds(self.a_runs, self.release_a),
                    ),
                    step(id="b", input_schema=Value, output_schema=Value, execute=b),
                    step(
                        id="c",
                        input_schema=Value,
                        output_schema=Value,
                        execute=holds(self.c_runs, self.release_c),
                    ),
                ]
            )
            .map(lambda ctx: {"value": ctx.input_data["b"]["value"]})
            .commit()
        )


def test_a_request_carried_out_elsewhere_is_not_taken_when_its_worker_drives_the_run_again(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first worker's claimer read a request of b (n=1) while it drove the run (a
    # running). Before it handed it on, the run suspended, the second worker carried the
    # request out (b suspended again at b), and a resume of c had the first worker drive
    # the run again, with a new actor. The claimer handed on what it had read, and that
    # actor, which had never seen b's first suspension end, took it for the new one.
    flow = ThreeAsk()
    first = fleet.runtime("both")
    workflow = first.register(flow.workflow)
    system = first._host.system
    read, go = _look_held_after_reading(system, monkeypatch)
    store = _requests(first)
    run = workflow.create_run()
    try:
        run.start_async(input_data={"value": "x"})
        assert run.wait(timeout=WAIT).status == "suspended"
        run.resume_async(step="a", resume_data={})
        assert flow.a_runs.wait(WAIT)
        run.resume_async(step="b", resume_data={"n": 1})  # a request, for the first worker
        assert read.wait(WAIT)  # its claimer holds it, not yet handed on
        fleet.runtime("worker").register(flow.workflow)
        flow.release_a.set()  # the run suspends at b and c; the second worker takes b's
        wait_until(
            lambda: (
                flow.b_seen == [None, 1]
                and _status(store, run.run_id) == "suspended"
                and not store.resume_pending(run.run_id)
            ),
            timeout=WAIT,
            what="b carried out elsewhere and suspended again",
        )
        run.resume_async(step="c", resume_data={})  # driven here again: c holds
        assert flow.c_runs.wait(WAIT)
        done = threading.Event()
        assert system is not None and system.claimer is not None
        claimer = system.claimer
        real_resume = claimer._resume
        assert real_resume is not None

        def finished(request: ResumeRequest, told: Callable[[], None]) -> None:
            real_resume(request, lambda: (told(), done.set()))

        monkeypatch.setattr(claimer, "_resume", finished)
        go.set()
        assert done.wait(WAIT)
        time.sleep(0.5)  # room for a step that should not run
        assert flow.b_seen == [None, 1], flow.b_seen
    finally:
        go.set()
        flow.release_a.set()
        flow.release_c.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended" and list(result.suspended) == ["b"]


def test_a_request_left_on_a_run_that_ended_goes_with_the_run_and_no_wait_hangs(
    fleet: Fleet, gate: Gate
) -> None:
    # A wait on a suspended run whose request waits waits on (the run is as good as
    # resumed); the run canceled meanwhile, then deleted, the wait ends, the request
    # (and its kept id) goes with the run, and a wait after raises RunDeletedError.
    from runtime import RunDeletedError

    twice = Twice()
    worker = fleet.runtime("worker")
    worker.register(twice.workflow)
    run, _ = _suspended_with_request(fleet, twice)  # no claimer acts on requests
    client = fleet.runtime("client")
    workflow = client.register(twice.workflow)
    waited: list[Any] = []
    waiter = threading.Thread(target=lambda: waited.append(run.wait(timeout=WAIT)))
    waiter.start()
    time.sleep(0.3)
    assert not waited  # waits on: the run suspended with a request that waits
    assert run.cancel() is True
    waiter.join(WAIT)
    assert waited and waited[0].status == "canceled", waited
    store = _requests(client)
    assert store.resume_pending(run.run_id)  # left: no worker here dropped it
    assert workflow.delete_workflow_run_by_id(run.run_id) is True
    assert not store.resume_pending(run.run_id)
    assert store.resume_requests() == []
    with pytest.raises(RunDeletedError):
        run.wait(timeout=5)
    if fleet.location.startswith("postgresql"):
        import psycopg

        with psycopg.connect(fleet.location) as connection:
            kept = connection.execute("SELECT count(*) FROM callboard_resume_request_ids")
            assert kept.fetchone() == (0,)


def test_resumes_pending_names_the_runs_a_request_waits_for_in_one_read(
    fleet: Fleet, gate: Gate
) -> None:
    # callboard runs list --json marks each suspended run of a page: one read for the
    # page, not one a run.
    twice = Twice()
    fleet.runtime("worker").register(twice.workflow)
    run, _ = _suspended_with_request(fleet, twice)
    store = _requests(fleet.runtime("client"))
    other = fleet.runtime("client").register(twice.workflow).create_run()
    other.start_async(input_data={"value": "y"})
    assert other.wait(timeout=WAIT).status == "suspended"  # no request of it
    assert store.resumes_pending([run.run_id, other.run_id, "no-such-run", run.run_id]) == {
        run.run_id
    }
    assert store.resumes_pending([]) == set()
    many = [f"absent-{index}" for index in range(1200)]  # past SQLite's 999 parameters
    assert store.resumes_pending([*many, run.run_id]) == {run.run_id}


def test_resumes_pending_of_a_users_store_without_the_one_read_asks_run_by_run() -> None:
    # The protocol does not ask for resumes_pending: a store written before it stays one.
    from runtime._stores.base import resumes_pending

    class Asked:
        def resume_pending(self, run_id: str) -> bool:
            return run_id == "b"

    assert resumes_pending(Asked(), ["a", "b", "b"]) == {"b"}  # type: ignore[arg-type]
