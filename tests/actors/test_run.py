"""RunActor: walks the plan by messages, tells the registry every transition, in order."""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from actors._direct import DirectWrites
from actors._dispatch import DispatchedActor, Dispatcher, UnexpectedMessageError
from actors.messages import (
    CancelOutcome,
    CancelRun,
    NotifyWhenIdle,
    SnapshotCommitted,
    SnapshotTaken,
)
from actors.registry import RegistryActor
from actors.run import RunActor
from runtime import Runtime, create_step, create_workflow
from runtime._snapshot import decode
from runtime._stores.base import SnapshotRecord
from tests._support import actor_system, wait_until
from tests.actors._support import RecordingStore

WAIT = 10.0
RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2}


class Value(BaseModel):
    value: str


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[SnapshotRecord]]:
    """Every snapshot a run actor hands on, kept or not, per run.

    On a store in memory a run actor keeps most snapshots itself (``DirectWrites``);
    the others, and every snapshot it keeps of a watched run, go to the registry.
    """
    seen: dict[str, list[SnapshotRecord]] = defaultdict(list)
    original = RegistryActor._on_snapshot_taken
    original_keep = DirectWrites.keep

    def recording(self: RegistryActor, message: SnapshotTaken) -> None:
        records = seen[message.record.run_id]
        if not records or records[-1] is not message.record:  # not kept and told both
            records.append(message.record)
        original(self, message)

    original_end = DirectWrites.end

    def keeping(self: DirectWrites, record: SnapshotRecord) -> bool:
        seen[record.run_id].append(record)
        return original_keep(self, record)

    def ending(self: DirectWrites, record: SnapshotRecord) -> bool:
        seen[record.run_id].append(record)
        return original_end(self, record)

    monkeypatch.setattr(RegistryActor, "_on_snapshot_taken", recording)
    monkeypatch.setattr(DirectWrites, "keep", keeping)
    monkeypatch.setattr(DirectWrites, "end", ending)
    return seen


def _upper(ctx: Any) -> Value:
    return Value(value=ctx.input_data.value.upper())


def _exclaim(ctx: Any) -> Value:
    if ctx.input_data.value == "FAIL":
        raise RuntimeError("asked to fail")
    return Value(value=ctx.input_data.value + "!")


def _workflow(workflow_id: str = "two-steps") -> Any:
    first = create_step(id="first", input_schema=Value, output_schema=Value, execute=_upper)
    second = create_step(id="second", input_schema=Value, output_schema=Value, execute=_exclaim)
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(first)
        .then(second)
        .commit()
    )


def _assert_forward_only(records: list[SnapshotRecord]) -> None:
    seqs = [record.seq for record in records]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    ranks = [RANK[record.status] for record in records]
    assert ranks == sorted(ranks), f"status went back: {[r.status for r in records]}"
    assert sum(record.status in ("success", "failed") for record in records) == 1
    for record in records:
        data = decode(record.data)
        assert (data["seq"], data["status"]) == (record.seq, record.status)


def _wait_idle(rt: Runtime) -> None:
    idle = threading.Event()
    actor_system(rt).supervisor.tell(NotifyWhenIdle(event=idle))
    assert idle.wait(WAIT)


def test_a_successful_run_goes_pending_running_success_with_increasing_seq(
    rt: Runtime,
    store: RecordingStore,
    received: dict[str, list[SnapshotRecord]],
) -> None:
    wf = rt.register(_workflow())

    result = wf.create_run().start(input_data={"value": "go"}, timeout=WAIT)

    assert result.status == "success"
    assert result.result == {"value": "GO!"}
    stored = store.history[result.run_id]
    assert [record.status for record in stored] == ["pending", "running", "running", "success"]
    _assert_forward_only(stored)
    # The run actor itself never sends anything that would go back.
    assert [record.status for record in received[result.run_id]] == [
        "running",
        "running",
        "success",
    ]
    _assert_forward_only(received[result.run_id])


def test_a_failing_run_goes_pending_running_failed(
    rt: Runtime, store: RecordingStore, received: dict[str, list[SnapshotRecord]]
) -> None:
    wf = rt.register(_workflow())

    result = wf.create_run().start(input_data={"value": "fail"}, timeout=WAIT)

    assert result.status == "failed"
    assert [record.status for record in store.history[result.run_id]] == [
        "pending",
        "running",
        "running",
        "failed",
    ]
    _assert_forward_only(store.history[result.run_id])
    _assert_forward_only(received[result.run_id])


def test_many_concurrent_runs_each_only_go_forward(
    rt: Runtime, store: RecordingStore, received: dict[str, list[SnapshotRecord]]
) -> None:
    wf = rt.register(_workflow())
    runs = [wf.create_run() for _ in range(100)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"value": "fail" if index % 10 == 0 else f"v{index}"})

    results = [run.wait(WAIT) for run in runs]

    assert [r.status for r in results].count("failed") == 10
    for result in results:
        _assert_forward_only(store.history[result.run_id])
        _assert_forward_only(received[result.run_id])
        assert store.history[result.run_id][-1].status == result.status


def test_a_run_actor_stops_when_its_run_ends(rt: Runtime) -> None:
    wf = rt.register(_workflow())

    for value in ("ok", "fail"):
        wf.create_run().start(input_data={"value": value}, timeout=WAIT)
    _wait_idle(rt)

    assert actor_system(rt).dispatcher.actors(RunActor) == []


def test_a_run_actor_stays_responsive_while_its_step_blocks(rt: Runtime) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(ctx: Any) -> Value:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    blocking = (
        create_workflow(id="blocking", input_schema=Value, output_schema=Value)
        .then(create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )
    blocked_wf = rt.register(blocking)
    quick_wf = rt.register(_workflow())
    try:
        blocked = blocked_wf.create_run()
        blocked.start_async(input_data={"value": "x"})
        assert entered.wait(WAIT)

        # All run actors share one dispatcher thread: had the blocked run's actor
        # waited on its step with a blocking ask, no other run could move.
        quick = quick_wf.create_run().start(input_data={"value": "q"}, timeout=WAIT)
        assert quick.status == "success"
        current = blocked_wf.get_workflow_run_execution_result(blocked.run_id)
        assert current is not None
        assert current.status == "running"
        assert current.steps["slow"].status == "running"
    finally:
        release.set()
    assert blocked.wait(WAIT).status == "success"


def test_each_step_receives_the_previous_steps_output_and_is_recorded(rt: Runtime) -> None:
    wf = rt.register(_workflow())

    result = wf.create_run().start(input_data={"value": "abc"}, timeout=WAIT)

    assert list(result.steps) == ["first", "second"]
    assert result.steps["first"].payload == {"value": "abc"}
    assert result.steps["first"].output == {"value": "ABC"}
    assert result.steps["second"].payload == {"value": "ABC"}
    assert result.steps["second"].output == {"value": "ABC!"}
    for step in result.steps.values():
        assert step.status == "success"
        assert step.started_at is not None and step.ended_at is not None
        assert step.started_at <= step.ended_at


@dataclass(frozen=True)
class Stray:
    """A message outside the run actor's protocol."""


def test_a_message_outside_the_protocol_is_refused_and_the_run_goes_on(rt: Runtime) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(ctx: Any) -> Value:
        entered.set()
        release.wait(WAIT)
        return ctx.input_data

    wf = rt.register(
        create_workflow(id="held", input_schema=Value, output_schema=Value)
        .then(create_step(id="slow", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )
    run = wf.create_run()
    try:
        with capture_logs() as logs:
            run.start_async(input_data={"value": "x"})
            assert entered.wait(WAIT)
            (actor,) = actor_system(rt).dispatcher.actors(RunActor)
            with pytest.raises(UnexpectedMessageError, match=r"RunActor .* does not accept"):
                actor.ask(Stray(), timeout=WAIT)
            actor.tell(Stray())
            assert actor.ask(SnapshotCommitted(seq=0), timeout=WAIT) is None  # handled after it
    finally:
        release.set()

    assert run.wait(WAIT).status == "success"
    refused = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in refused] == ["unexpected_message"]
    assert "test_run.Stray" in refused[0]["error"]


class Holder(DispatchedActor):
    """Holds the dispatcher's thread (the runtime has one) until ``release`` is set."""

    def __init__(self, dispatcher: Dispatcher, holding: threading.Event, release: threading.Event):
        super().__init__(dispatcher)
        self.holding, self.release = holding, release

    def on_receive(self, message: Any) -> None:
        self.holding.set()
        self.release.wait(WAIT)


def test_a_cancel_queued_behind_the_message_that_ends_the_run_is_answered_not_here(
    rt: Runtime,
) -> None:
    entered, finish = threading.Event(), threading.Event()

    def gated(ctx: Any) -> Value:
        entered.set()
        finish.wait(WAIT)
        return ctx.input_data

    wf = rt.register(
        create_workflow(id="ends-under-a-cancel", input_schema=Value, output_schema=Value)
        .then(create_step(id="gated", input_schema=Value, output_schema=Value, execute=gated))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    assert entered.wait(WAIT)
    (actor,) = actor_system(rt).dispatcher.actors(RunActor)
    system = actor_system(rt)
    holding, release = threading.Event(), threading.Event()
    holder = Holder.start(system.dispatcher, holding, release)
    answer: Future[CancelOutcome] = Future()
    try:
        holder.tell("hold")
        assert holding.wait(WAIT)
        # The supervisor gets the cancel first and will hand it on to the run actor,
        # behind the step's reply, which ends the run: the actor stops before reading it.
        system.supervisor.tell(CancelRun(run_id=run.run_id, reply=answer.set_result))
        finish.set()
        wait_until(lambda: not actor.actor_inbox.empty(), what="the step's reply is queued")
    finally:
        release.set()
        finish.set()
        holder.stop(timeout=WAIT)

    assert answer.result(WAIT) is CancelOutcome.NOT_HERE
    assert run.wait(WAIT).status == "success"
    assert run.cancel() is False


DISPATCHER_CALLS_PER_RUN = 360
"""The most calls (of Python functions and of C ones) a three-step run in memory may cost
the dispatcher thread: its run actor, the supervisor's share, the store's saves. With the
suite's checks of frozen records on (CHECK_PARTS), it was 447 before the run actor's side
was trimmed, and 327 after (429 and 312 without them): each call is CPU of every run."""


def test_a_three_step_run_in_memory_costs_its_dispatcher_a_bounded_number_of_calls() -> None:
    """A count of calls is a measure of CPU per run that a busy machine does not blur."""
    calls = [0]

    def count(_frame: Any, event: str, _arg: Any) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    def profile_dispatchers(_frame: Any, _event: str, _arg: Any) -> None:
        # On each thread started from now on: only the dispatcher's calls are counted.
        name = threading.current_thread().name
        sys.setprofile(count if name.startswith("callboard-dispatch") else None)

    threading.setprofile(profile_dispatchers)
    try:
        rt = Runtime().start()
    finally:
        threading.setprofile(None)
    try:
        steps = [
            create_step(id=f"s{index}", input_schema=Value, output_schema=Value, execute=_upper)
            for index in range(3)
        ]
        wf = rt.register(
            create_workflow(id="three", input_schema=Value, output_schema=Value)
            .then(steps[0])
            .then(steps[1])
            .then(steps[2])
            .commit()
        )
        for _ in range(5):  # warm: the step pool's actors started, the caches filled
            wf.create_run().start(input_data={"value": "x"})
        runs = 20
        calls[0] = 0
        for _ in range(runs):
            assert wf.create_run().start(input_data={"value": "x"}).status == "success"
        per_run = calls[0] / runs
    finally:
        rt.stop()
    assert 0 < per_run <= DISPATCHER_CALLS_PER_RUN, per_run
