"""A worker that stalls past its lease and wakes: what it may still do, and what it must.

In one process: a ``worker`` runtime and a ``client`` runtime on the same store
(SQLite, and PostgreSQL), each with a worker row of its own. The worker's stall
is made by its store's heartbeat: while "stalled" a heartbeat either fails (the
worker cannot renew its lease) or is lost (it returns as if renewed, and writes
nothing), so that the client's reaper finds the lease run out and hands the
worker's runs back, while the worker's actors go on as a woken process's do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors.messages import CallStep
from runtime import Runtime, StoreError, _probes, create_step, create_workflow
from runtime._stores.base import SharedStore
from tests._support import Value, wait_until
from tests.durable._support.workflows import read_lines
from tests.shared._workflows import WORKFLOWS
from tests.shared.conftest import Fleet

LEASE = 0.5
WAIT = 60.0


def _shared(rt: Runtime) -> SharedStore:
    store = rt.store
    assert isinstance(store, SharedStore)
    return store


class Stall:
    """Replaces a store's heartbeat while set: ``fail`` raises, else the beat is lost."""

    def __init__(self, store: SharedStore, *, fail: bool) -> None:
        self._real: Callable[[], bool] = store.heartbeat
        self._fail = fail
        self.on = threading.Event()
        store.heartbeat = self._beat  # type: ignore[method-assign]

    def _beat(self) -> bool:
        if not self.on.is_set():
            return self._real()
        if self._fail:
            raise StoreError("stalled: the lease is not renewed")
        return True  # lost on its way: the row keeps its old time


def _reaped(client: Runtime, worker: Runtime) -> bool:
    worker_id = _shared(worker).owner_id
    return all(w.worker_id != worker_id for w in _shared(client).workers())


@pytest.fixture
def pair(fleet: Fleet) -> Iterator[tuple[Runtime, Runtime, Any]]:
    """A worker and a client with the ``logged`` workflow: both runtimes, and the client's."""
    worker = fleet.runtime("worker", lease=LEASE)
    client = fleet.runtime("client", lease=LEASE)
    worker.register(WORKFLOWS["logged"])
    yield worker, client, client.register(WORKFLOWS["logged"])


@pytest.mark.usefixtures("_structlog_reset")
def test_a_woken_worker_starts_no_step_of_a_run_cancelled_while_it_stalled(
    pair: tuple[Runtime, Runtime, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, client, wf = pair
    stall = Stall(_shared(worker), fail=True)
    # The run's second step is dispatched to a step actor once the first step's
    # output is committed; the actor is held there, as a process stopped between
    # the two would be, until the test lets it go.
    held, release = threading.Event(), threading.Event()

    def observer(actor: Any, message: Any) -> bool:
        if isinstance(message, CallStep) and message.step_id == "beta":
            held.set()
            release.wait(WAIT)
        return True

    monkeypatch.setattr(_probes, "observer", observer)
    log = tmp_path / "r.log"
    run = wf.create_run()
    run.start_async(input_data={"value": "x"}, request_context={"log": str(log)})
    assert held.wait(WAIT), "the second step was never dispatched"
    stall.on.set()
    try:
        wait_until(lambda: _reaped(client, worker), timeout=WAIT, what="the worker is reaped")
        assert run.cancel() is True  # nobody holds it now: canceled in the store
    finally:
        stall.on.clear()
        with capture_logs() as logs:
            release.set()
            wait_until(
                lambda: any(e["event"] == "step_not_started" for e in logs),
                timeout=WAIT,
                what="the woken worker holds the step back",
            )

    assert "start beta" not in read_lines(log)
    assert read_lines(log) == ["start alpha", "end alpha"]
    assert run.wait(timeout=WAIT).status == "canceled"
    [held_back] = [e for e in logs if e["event"] == "step_not_started"]
    assert (held_back["run_id"], held_back["step_id"]) == (run.run_id, "beta")
    # Not a lapsed lease to warn of: the run was cancelled meanwhile, as it should be.
    assert held_back["reason"].startswith("the run ended (was cancelled, say)")
    assert held_back["log_level"] == "debug"
    # The worker lives on, with a lease of its own again, and takes new runs.
    monkeypatch.setattr(_probes, "observer", None)
    after = wf.create_run()
    after.start_async(input_data={"value": "y"}, request_context={"log": str(tmp_path / "a.log")})
    assert after.wait(timeout=WAIT).status == "success"


def test_a_run_a_reaped_worker_claimed_before_it_noticed_is_not_left_stranded(
    pair: tuple[Runtime, Runtime, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, client, wf = pair
    stall = Stall(_shared(worker), fail=False)
    hold = tmp_path / "hold"
    hold.touch()
    context = {"log": str(tmp_path / "r.log"), "hold_step": "beta", "hold_file": str(hold)}
    stall.on.set()  # its beats are lost from now: its row ages, and the client reaps it
    try:
        wait_until(lambda: _reaped(client, worker), timeout=WAIT, what="the worker is reaped")
        # From now on nobody reaps (a reaper would hand back the run below, which the
        # worker holds without a row, before the worker beats again: in a fleet that is
        # a race, here it is taken out), and the worker's claimer goes on as one frozen
        # between its heartbeat and its claim does: it claims this run without a row, at
        # a new epoch, and the run waits in its second step.
        for rt in (client, worker):
            monkeypatch.setattr(_shared(rt), "reap", lambda: 0)
        run = wf.create_run()
        run.start_async(input_data={"value": "x"}, request_context=context)
        wait_until(
            lambda: read_lines(tmp_path / "r.log")[-1:] == ["start beta"],
            timeout=WAIT,
            what="the worker runs it",
        )
    finally:
        stall.on.clear()  # the next beat finds the row gone: the lease was lost
    wait_until(lambda: not _reaped(client, worker), timeout=WAIT, what="the worker beats again")
    monkeypatch.undo()
    hold.unlink()

    # What it held when it was reaped went back to the queue; this run it claimed
    # afterwards is its own, and it finishes it, instead of holding it for ever.
    result = run.wait(timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "x-a-b-c"}


def test_a_woken_worker_leaves_in_the_queue_a_run_whose_step_it_still_runs(
    pair: tuple[Runtime, Runtime, Any], tmp_path: Path
) -> None:
    worker, client, wf = pair
    hold = tmp_path / "hold"
    hold.touch()
    log = tmp_path / "r.log"
    context = {"log": str(log), "hold_step": "beta", "hold_file": str(hold)}
    run = wf.create_run()
    run.start_async(input_data={"value": "x"}, request_context=context)
    wait_until(lambda: read_lines(log)[-1:] == ["start beta"], timeout=WAIT, what="beta runs")
    _woken(worker, client)  # with beta still running: the run is in the queue now
    _claim_passes(worker)  # passes that claim whatever waits, after the one that beat

    # Claimed here again beside the actor still in beta, a second actor would run beta
    # (and then the rest) at the same time, both writing under the new claim.
    assert read_lines(log) == ["start alpha", "end alpha", "start beta"]
    assert {w.worker_id: w.held for w in _shared(client).workers()}[_shared(worker).owner_id] == 0
    hold.unlink()  # beta returns; its output is fenced off; the run is claimed again

    result = run.wait(timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "x-a-b-c"}
    assert read_lines(log) == [
        "start alpha",
        "end alpha",
        "start beta",
        "end beta",
        "start beta",  # interrupted by the stall, so run again: once its first try ended
        "end beta",
        "start gamma",
        "end gamma",
    ]


def _woken(worker: Runtime, client: Runtime) -> None:
    """Stall the worker past its lease until the client reaps it; then let it beat again."""
    stall = Stall(_shared(worker), fail=True)
    stall.on.set()
    try:
        wait_until(lambda: _reaped(client, worker), timeout=WAIT, what="the worker is reaped")
    finally:
        stall.on.clear()
    wait_until(lambda: not _reaped(client, worker), timeout=WAIT, what="the worker beats again")


def _claim_passes(worker: Runtime, count: int = 3) -> None:
    claimer = worker._host.system.claimer
    assert claimer is not None
    for _ in range(count):
        claimer.poke()
        wait_until(claimer.idle, timeout=WAIT, what="the claimer's pass")


class _Members:
    """Parallel members ``left`` and ``right`` whose first tries each wait to be let go."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.entered = {"left": threading.Event(), "right": threading.Event()}
        self.go = {"left": threading.Event(), "right": threading.Event()}
        self._lock = threading.Lock()

    def step(self, step_id: str) -> Any:
        def execute(ctx: Any) -> Value:
            with self._lock:
                first = f"start {step_id}" not in self.log
                self.log.append(f"start {step_id}")
            if first:
                self.entered[step_id].set()
                self.go[step_id].wait(WAIT)
            with self._lock:
                self.log.append(f"end {step_id}")
            return Value(value=step_id)

        return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=execute)

    def workflow(self) -> Any:
        return (
            create_workflow(id="pair-of-members", input_schema=Value, output_schema=Value)
            .parallel([self.step("left"), self.step("right")])
            .map(lambda ctx: {"value": "both"})
            .commit()
        )


def test_a_woken_worker_leaves_its_run_queued_while_a_body_outlives_the_runs_actor(
    pair: tuple[Runtime, Runtime, Any],
) -> None:
    worker, client, _ = pair
    members = _Members()
    workflow = members.workflow()
    worker.register(workflow)
    run = client.register(workflow).create_run()
    run.start_async(input_data={"value": "x"})
    for entered in members.entered.values():
        assert entered.wait(WAIT), "both members run"
    _woken(worker, client)
    members.go["left"].set()  # its output is fenced off: the run's actor here stops...
    wait_until(lambda: "end left" in members.log, timeout=WAIT, what="left returns")
    _claim_passes(worker)

    # ... while right's first try still runs: claimed back now, right would run twice at
    # once in this process, and the run would end before that first try returned.
    assert sorted(members.log) == ["end left", "start left", "start right"]
    members.go["right"].set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success", result.error
    assert members.log.index("end right") < members.log.index("start right", 2)


def test_a_cancel_on_a_woken_worker_cancels_the_run_it_lost_and_leaves_it_in_the_store(
    pair: tuple[Runtime, Runtime, Any], tmp_path: Path
) -> None:
    worker, client, wf = pair
    hold = tmp_path / "hold"
    hold.touch()
    log = tmp_path / "r.log"
    run = wf.create_run()
    run.start_async(
        input_data={"value": "x"},
        request_context={"log": str(log), "hold_step": "beta", "hold_file": str(hold)},
    )
    wait_until(lambda: read_lines(log)[-1:] == ["start beta"], timeout=WAIT, what="beta runs")
    _woken(worker, client)
    mine = worker.register(WORKFLOWS["logged"]).create_run(run_id=run.run_id)

    # Its actor here was fenced off: the cancel is the store's to make (nobody holds the
    # run), not the actor's. Handed to that actor, it raised StoreError, and the run was
    # claimed back beside beta's first try.
    assert mine.cancel() is True
    _claim_passes(worker)
    assert run.wait(timeout=WAIT).status == "canceled"
    assert read_lines(log) == ["start alpha", "end alpha", "start beta"]
    hold.unlink()
    wait_until(lambda: read_lines(log)[-1:] == ["end beta"], timeout=WAIT, what="beta returns")
    _claim_passes(worker)
    assert read_lines(log) == ["start alpha", "end alpha", "start beta", "end beta"]
    assert run.wait(timeout=WAIT).status == "canceled"


def test_an_async_body_that_outlasts_its_timeout_keeps_its_run_here_until_it_returns(
    pair: tuple[Runtime, Runtime, Any],
) -> None:
    # A timeout cancels the body's future at once, while its task unwinds as it will (a
    # clean-up it awaits, shielded): counted as gone at the cancel, its run could be
    # claimed back here beside it, once this worker had stalled and been reaped.
    import asyncio

    worker, client, _ = pair
    unwinding, unwound = threading.Event(), threading.Event()

    async def slow(ctx: Any) -> Value:
        try:
            await asyncio.sleep(WAIT)
        finally:
            unwinding.set()
            await asyncio.shield(asyncio.to_thread(unwound.wait, WAIT))
        return ctx.input_data

    step = create_step(
        id="slow", input_schema=Value, output_schema=Value, execute=slow, timeout=0.3
    )
    workflow = (
        create_workflow(id="outlasting", input_schema=Value, output_schema=Value)
        .then(step)
        .commit()
    )
    worker.register(workflow)
    run = client.register(workflow).create_run()
    run.start_async(input_data={"value": "x"})
    here = worker._host.system._here
    assert here is not None
    try:
        assert run.wait(timeout=WAIT).status == "failed"  # timed out: its actor has ended
        assert unwinding.wait(WAIT)
        assert run.run_id in here()  # its body still unwinds here
    finally:
        unwound.set()
    wait_until(lambda: run.run_id not in here(), timeout=WAIT, what="the body has returned")


def test_a_woken_worker_counts_a_run_it_lost_as_executing_in_its_queue(
    pair: tuple[Runtime, Runtime, Any],
) -> None:
    # Its step still runs here, and nobody holds it: the store counted no run executing in
    # its queue, and the woken worker ran another run of a queue of one beside it.
    from runtime import Queue

    worker, client, _ = pair
    log: list[str] = []
    entered, go = threading.Event(), threading.Event()
    lock = threading.Lock()

    def body(ctx: Any) -> Value:
        with lock:
            first = not log
            log.append(f"start {ctx.input_data.value}")
        if first:
            entered.set()
            go.wait(WAIT)
        with lock:
            log.append(f"end {ctx.input_data.value}")
        return ctx.input_data

    step = create_step(id="one", input_schema=Value, output_schema=Value, execute=body)
    workflow = (
        create_workflow(
            id="one-at-a-time",
            input_schema=Value,
            output_schema=Value,
            queue=Queue("one", concurrency=1),
        )
        .then(step)
        .commit()
    )
    worker.register(workflow)
    bound = client.register(workflow)
    first = bound.create_run()
    first.start_async(input_data={"value": "r1"})
    assert entered.wait(WAIT)
    _woken(worker, client)
    second = bound.create_run()
    second.start_async(input_data={"value": "r2"})
    _claim_passes(worker)

    assert log == ["start r1"]  # r2 waits: r1 still executes, here
    go.set()
    assert second.wait(timeout=WAIT).status == "success"
    assert first.wait(timeout=WAIT).status == "success"
    assert log.index("end r1") < log.index("start r2")
