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


def _suspended_with_request(fleet: Fleet, twice: Twice, *workers: Runtime) -> tuple[Any, Any]:
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
    run, before = _suspended_with_request(fleet, twice, first, second)
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
