"""``run.stream()``: typed events for UIs, with step writers, sequence numbers and replay."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from actors._events import EVENT_LOG_SIZE, REPLAYS_KEPT, SUBSCRIBER_BUFFER, EventLog
from runtime import (
    RunEvent,
    RunFinishEvent,
    RunStartEvent,
    Runtime,
    StepFinishEvent,
    StepOutputEvent,
    StepStartEvent,
    StepSuspendedEvent,
    StepWaitingEvent,
    create_step,
    create_workflow,
)

WAIT = 10.0


class Value(BaseModel):
    value: str


class Items(BaseModel):
    items: list[str]


class Progress(BaseModel):
    percent: int


def _work(ctx):  # type: ignore[no-untyped-def]
    for percent in (10, 50, 100):
        ctx.writer.write(Progress(percent=percent))
    return Value(value=ctx.input_data.value + "!")


work = create_step(
    id="work", input_schema=Value, output_schema=Value, execute=_work, writer_schema=Progress
)
done = create_step(
    id="done",
    input_schema=Value,
    output_schema=Value,
    execute=lambda ctx: Value(value=ctx.input_data.value.upper()),
)
two_steps = (
    create_workflow(id="two-steps", input_schema=Value, output_schema=Value)
    .then(work)
    .then(done)
    .commit()
)


def kinds(events: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in events:
        match event:
            case RunStartEvent():
                out.append(("run_start",))
            case StepStartEvent():
                out.append(("step_start", event.path, event.attempt))
            case StepOutputEvent():
                out.append(("step_output", event.path, event.data, event.item))
            case StepWaitingEvent():
                out.append(("step_waiting", event.path))
            case StepSuspendedEvent():
                out.append(("step_suspended", event.path, event.payload))
            case StepFinishEvent():
                out.append(("step_finish", event.path, event.status, event.output))
            case RunFinishEvent():
                out.append(("run_finish", event.status, event.result))
    return out


EXPECTED = [
    ("run_start",),
    ("step_start", "work", 1),
    ("step_output", "work", {"percent": 10}, None),
    ("step_output", "work", {"percent": 50}, None),
    ("step_output", "work", {"percent": 100}, None),
    ("step_finish", "work", "success", {"value": "a!"}),
    ("step_start", "done", 1),
    ("step_finish", "done", "success", {"value": "A!"}),
    ("run_finish", "success", {"value": "A!"}),
]


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_a_stream_yields_the_run_in_order_with_writer_events_between_start_and_finish(
    where: str, tmp_path: Path
) -> None:
    with Runtime(store=None if where == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(two_steps).create_run()
        run.start_async(input_data={"value": "a"})
        events = list(run.stream(timeout=WAIT))
    assert kinds(events) == EXPECTED
    seqs = [event.seq for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    started, *written, finished = events[1:6]
    assert all(started.at <= event.at <= finished.at for event in written)


def test_a_stream_replays_from_a_sequence_number_the_same_events(runtime: Runtime) -> None:
    run = runtime.register(two_steps).create_run()
    run.start(input_data={"value": "a"}, timeout=WAIT)
    first = list(run.stream(timeout=WAIT))
    assert kinds(first) == EXPECTED
    cut = first[3].seq  # a client saw up to the second write, then lost its connection
    again = list(run.stream(from_seq=cut, timeout=WAIT))
    assert again == first[4:]
    assert list(run.stream(timeout=WAIT)) == first
    assert list(run.stream(from_seq=first[-1].seq, timeout=WAIT)) == []


def test_a_reconnect_past_this_runtimes_numbers_is_told_the_run_again_to_its_end(
    tmp_path: Path,
) -> None:
    # A client saw a run's events, writes and all, from a runtime that then stopped.
    # A runtime on the same file numbers the run's events again, without the writes
    # (another tab streamed it there first): lower numbers. The client reconnecting
    # with its last number was told nothing, not even the run's end.
    path = tmp_path / "runs.db"
    with Runtime(store=path) as rt:
        run = rt.register(two_steps).create_run()
        run.start_async(input_data={"value": "a"})
        seen = list(run.stream(timeout=WAIT))
    last = seen[-1].seq
    replayed = [("run_start",), *[kind for kind in EXPECTED[1:] if kind[0] != "step_output"]]
    with Runtime(store=path) as rt:
        again = rt.register(two_steps).create_run(run.run_id)
        other_tab = list(again.stream(timeout=WAIT))
        assert kinds(other_tab) == replayed and other_tab[-1].seq < last

        back = list(again.stream(from_seq=last, timeout=WAIT))
        assert kinds(back) == replayed
        assert back[0].seq > last and [e.seq for e in back] == sorted({e.seq for e in back})
        # The other tab's numbers still mean what they meant: it is told what it missed,
        # not the replay told to the client from elsewhere.
        assert list(again.stream(from_seq=other_tab[-2].seq, timeout=WAIT)) == other_tab[-1:]
        # A reconnect from the middle of that replay is told it again, numbered on.
        once_more = list(again.stream(from_seq=back[1].seq, timeout=WAIT))
        assert kinds(once_more) == replayed and once_more[0].seq > back[-1].seq
        # So is one from the middle of the replay before that one (it was told nothing).
        from_first = list(again.stream(from_seq=back[1].seq, timeout=WAIT))
        assert kinds(from_first) == replayed and from_first[0].seq > once_more[-1].seq
    # A stopped runtime tells what its store holds, by the same rule.
    after_stop = list(again.stream(from_seq=last + 100, timeout=WAIT))
    assert kinds(after_stop) == replayed and after_stop[0].seq > last + 100
    assert list(again.stream(from_seq=other_tab[-2].seq, timeout=WAIT)) == other_tab[-1:]


def test_a_log_remembers_the_numbers_of_its_last_replays_only() -> None:
    log = EventLog()
    for first in range(10, 10 * (REPLAYS_KEPT + 2), 10):
        log.skip(first, first + 5)
    assert len(log.replayed) == REPLAYS_KEPT  # bounded, however often clients come back
    assert not log.replayed_at(12)  # the oldest went
    assert log.replayed_at(10 * (REPLAYS_KEPT + 1) + 2) and log.replayed_at(32)
    assert not log.replayed_at(35)  # a replay's last number: its client has it all
    assert log.next_seq == 10 * (REPLAYS_KEPT + 1) + 6


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_each_item_of_a_foreach_over_a_nested_workflow_is_told_finished(
    where: str, tmp_path: Path
) -> None:
    # The next item came in the turn the nested workflow's last step ended, and took
    # that step's record away before any watcher saw it end: 3 starts, 1 finish.
    watching = threading.Event()

    def gate(ctx):  # type: ignore[no-untyped-def]
        assert watching.wait(WAIT)  # the items go on once the watch is taken
        return ctx.input_data

    child = (
        create_workflow(id="child", input_schema=Value, output_schema=Value)
        .then(create_step(id="gate", input_schema=Value, output_schema=Value, execute=gate))
        .then(work)
        .then(done)
        .commit()
    )
    workflow = (
        create_workflow(id="each-child", input_schema=Items, output_schema=Items)
        .map(lambda ctx: [{"value": item} for item in ctx.input_data["items"]])
        .foreach(child)
        .map(lambda ctx: {"items": [out["value"] for out in ctx.input_data]})
        .commit()
    )
    with Runtime(store=None if where == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(workflow).create_run()
        run.start_async(input_data={"items": ["a", "b", "c"]})
        watch = iter(run.watch(timeout=WAIT))
        events = [next(watch)]  # taken: the registry keeps the run's events from now
        watching.set()
        events += list(watch)
    assert run.wait(WAIT).result == {"items": ["A!", "B!", "C!"]}
    for path in ("child.gate", "child.work", "child.done"):
        started = [e for e in events if e.type == "step_started" and e.path == path]
        finished = [e for e in events if e.type == "step_finished" and e.path == path]
        assert (len(started), len(finished)) == (3, 3), path


def test_an_async_stream_yields_the_same_events(runtime: Runtime) -> None:
    wf = runtime.register(two_steps)

    async def main() -> list[Any]:
        run = wf.create_run()
        await run.astart_async(input_data={"value": "a"})
        got = []
        async with await run.astream() as stream:
            async for event in stream:
                got.append(event)
        later = [event async for event in await run.astream(from_seq=got[2].seq)]
        assert later == got[3:]
        return got

    assert kinds(asyncio.run(asyncio.wait_for(main(), WAIT))) == EXPECTED


def test_each_foreach_item_writes_its_own_progress(runtime: Runtime) -> None:
    def each(ctx):  # type: ignore[no-untyped-def]
        ctx.writer.write({"item": ctx.input_data.value})
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="each", input_schema=Items, output_schema=Items)
        .map(lambda ctx: [{"value": item} for item in ctx.input_data["items"]])
        .foreach(
            create_step(id="each", input_schema=Value, output_schema=Value, execute=each),
            concurrency=2,
        )
        .map(lambda ctx: {"items": [item["value"] for item in ctx.input_data]})
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"items": ["a", "b", "c", "d"]})
    events = list(run.stream(timeout=WAIT))
    writes = [event for event in events if isinstance(event, StepOutputEvent)]
    assert sorted((event.item, event.data["item"]) for event in writes) == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
        (3, "d"),
    ]
    start = next(e for e in events if isinstance(e, StepStartEvent) and e.path == "each")
    end = next(e for e in events if isinstance(e, StepFinishEvent) and e.path == "each")
    assert all(start.seq < event.seq < end.seq for event in writes)
    assert isinstance(events[-1], RunFinishEvent) and events[-1].status == "success"


def test_a_write_that_does_not_fit_the_writer_schema_fails_the_step(runtime: Runtime) -> None:
    def bad(ctx):  # type: ignore[no-untyped-def]
        ctx.writer.write({"percent": "lots"})
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="bad-writer", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="bad",
                input_schema=Value,
                output_schema=Value,
                execute=bad,
                writer_schema=Progress,
            )
        )
        .commit()
    )
    result = wf.create_run().start(input_data={"value": "x"}, timeout=WAIT)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepValidationError"
    assert "writer schema" in result.error.message


def test_resume_stream_resumes_one_item_of_a_foreach_by_its_index(runtime: Runtime) -> None:
    # resume() and resume_async() take for_each_index; their streaming twins did not.
    def ask(ctx):  # type: ignore[no-untyped-def]
        if ctx.resume_data is None:
            ctx.suspend({"item": ctx.input_data.value})
        return Value(value=ctx.input_data.value + ctx.resume_data["mark"])

    wf = runtime.register(
        create_workflow(id="each-asks", input_schema=Items, output_schema=Items)
        .map(lambda ctx: [{"value": item} for item in ctx.input_data["items"]])
        .foreach(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .map(lambda ctx: {"items": [out["value"] for out in ctx.input_data]})
        .commit()
    )
    run = wf.create_run()
    assert run.start(input_data={"items": ["a", "b"]}, timeout=WAIT).status == "suspended"
    first = list(run.resume_stream(step="ask", for_each_index=1, resume_data={"mark": "!"}))
    assert first[-1].type == "run_finish" and first[-1].status == "suspended"
    assert list(run.wait(WAIT).suspended) == ["ask[0]"]

    async def last() -> list[Any]:
        stream = await run.aresume_stream(step="ask", for_each_index=0, resume_data={"mark": "?"})
        return [event async for event in stream]

    second = asyncio.run(last())
    assert second[-1].type == "run_finish" and second[-1].status == "success"
    assert run.wait(WAIT).result == {"items": ["a?", "b!"]}


def test_a_stream_ends_at_a_suspension_and_resume_stream_streams_what_follows(
    runtime: Runtime,
) -> None:
    def ask(ctx):  # type: ignore[no-untyped-def]
        if ctx.resume_data is None:
            ctx.writer.write({"asking": True})
            ctx.suspend({"question": "ok?"})
        return Value(value=f"{ctx.input_data.value}:{ctx.resume_data['answer']}")

    wf = runtime.register(
        create_workflow(id="asking", input_schema=Value, output_schema=Value)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .sleep(0.01)
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "q"})
    before = list(run.stream(timeout=WAIT))
    assert kinds(before) == [
        ("run_start",),
        ("step_start", "ask", 1),
        ("step_output", "ask", {"asking": True}, None),
        ("step_suspended", "ask", {"question": "ok?"}),
        ("run_finish", "suspended", None),
    ]
    after = list(run.resume_stream(resume_data={"answer": "yes"}, timeout=WAIT))
    assert kinds(after) == [
        ("run_start",),
        ("step_start", "ask", 1),
        ("step_finish", "ask", "success", {"value": "q:yes"}),
        ("step_waiting", "sleep-2"),
        ("step_finish", "sleep-2", "success", {"value": "q:yes"}),
        ("run_finish", "success", {"value": "q:yes"}),
    ]
    assert after[0].seq > before[-1].seq
    # A replay from the start goes past the suspension the run was resumed from.
    assert list(run.stream(timeout=WAIT)) == before + after


def test_watch_events_carry_their_own_times_and_consecutive_numbers(runtime: Runtime) -> None:
    run = runtime.register(two_steps).create_run()
    result = run.start(input_data={"value": "a"}, timeout=WAIT)
    time.sleep(0.05)  # a replay now must not carry this moment
    subscribed = time.time()
    events: list[RunEvent] = list(run.watch(timeout=WAIT))
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert all(event.at.timestamp() < subscribed for event in events)
    started = next(e for e in events if e.type == "step_started" and e.path == "work")
    assert started.at == result.steps["work"].started_at
    assert events[-1].type == "status" and events[-1].at == result.updated_at
    assert events[-1].result == {"value": "A!"}
    tail = list(run.watch(timeout=WAIT, from_seq=events[-3].seq))
    assert tail == events[-2:]
    with pytest.raises(ValueError):
        run.watch(from_seq=-5)


def test_a_slow_consumer_is_cut_off_and_catches_up_from_the_log_with_bounded_memory(
    runtime: Runtime,
) -> None:
    writes = SUBSCRIBER_BUFFER + EVENT_LOG_SIZE // 2
    release = threading.Event()

    def chatty(ctx):  # type: ignore[no-untyped-def]
        release.wait(WAIT)
        for index in range(writes):
            ctx.writer.write(index)
        return ctx.input_data

    wf = runtime.register(
        create_workflow(id="chatty", input_schema=Value, output_schema=Value)
        .then(create_step(id="chatty", input_schema=Value, output_schema=Value, execute=chatty))
        .commit()
    )
    run = wf.create_run()
    run.start_async(input_data={"value": "x"})
    stream = run.stream(timeout=WAIT)
    first = next(stream)  # subscribed; then it reads nothing while the step writes
    release.set()
    run.wait(WAIT)
    time.sleep(0.2)  # the registry has handed over what it would
    assert len(stream._watch._channel) <= SUBSCRIBER_BUFFER
    rest = list(stream)
    assert isinstance(first, RunStartEvent)
    assert isinstance(rest[-1], RunFinishEvent) and rest[-1].status == "success"
    seqs = [event.seq for event in [first, *rest]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    written = [event.data for event in rest if isinstance(event, StepOutputEvent)]
    assert written == list(range(writes))  # the log still held what it missed


def test_a_run_id_used_again_after_a_delete_streams_the_new_run(runtime: Runtime) -> None:
    wf = runtime.register(two_steps)
    wf.create_run("same").start(input_data={"value": "a"}, timeout=WAIT)
    first = list(wf.create_run("same").stream(timeout=WAIT))
    assert wf.delete_workflow_run_by_id("same")
    wf.create_run("same").start(input_data={"value": "b"}, timeout=WAIT)
    second = list(wf.create_run("same").stream(timeout=WAIT))
    assert kinds(second)[-1] == ("run_finish", "success", {"value": "B!"})
    assert [kind[0] for kind in kinds(second)] == [kind[0] for kind in EXPECTED]
    assert second[0].seq > first[-1].seq  # the numbering goes on: no client mixes them up


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_nested_workflow_is_told_finished_after_its_last_step(store: str, tmp_path: Path) -> None:
    # One snapshot ends both: its events came in the records' order, the nested
    # workflow's before its step's, with a later time on the earlier number.
    class N(BaseModel):
        n: int

    def slow(ctx: Any) -> N:
        time.sleep(0.02)
        return N(n=ctx.input_data.n + 1)

    kid = (
        create_workflow(id="kid", input_schema=N, output_schema=N)
        .then(create_step(id="k", input_schema=N, output_schema=N, execute=slow))
        .commit()
    )
    where: Any = "memory" if store == "memory" else tmp_path / "runs.db"
    with Runtime(store=where) as rt:
        wf = rt.register(
            create_workflow(id="outer", input_schema=N, output_schema=N).then(kid).commit()
        )
        run = wf.create_run()
        run.start_async(input_data={"n": 0})
        events = [e for e in run.watch(timeout=10) if e.type.startswith("step")]

    told = [(e.type, e.path) for e in events]
    assert told == [
        ("step_started", "kid"),
        ("step_started", "kid.k"),
        ("step_finished", "kid.k"),
        ("step_finished", "kid"),
    ]
    assert [e.at for e in events] == sorted(e.at for e in events)


@pytest.mark.parametrize("where", ["memory", "sqlite"])
def test_a_sleep_whose_length_is_computed_is_told_waiting_as_a_fixed_one_is(
    where: str, tmp_path: Path
) -> None:
    # A computed sleep runs its function first (its record reads running), then waits:
    # the wait was told to no one, and a UI saw a step start and finish.
    sleeps = (
        create_workflow(id="sleeps", input_schema=Value, output_schema=Value)
        .sleep(0.05)
        .sleep(lambda ctx: 0.05)
        .sleep_until(lambda ctx: ctx.now() + timedelta(seconds=0.05))
        .commit()
    )
    with Runtime(store=None if where == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(sleeps).create_run()
        run.start_async(input_data={"value": "a"})
        events = list(run.stream(timeout=WAIT))
        watched = [(event.type, event.path, event.status) for event in run.watch(timeout=WAIT)]
    assert kinds(events) == [
        ("run_start",),
        ("step_waiting", "sleep-1"),
        ("step_finish", "sleep-1", "success", {"value": "a"}),
        ("step_start", "sleep-2", 1),
        ("step_waiting", "sleep-2"),
        ("step_finish", "sleep-2", "success", {"value": "a"}),
        ("step_start", "sleep-3", 1),
        ("step_waiting", "sleep-3"),
        ("step_finish", "sleep-3", "success", {"value": "a"}),
        ("run_finish", "success", {"value": "a"}),
    ]
    assert ("step_started", "sleep-2", "running") in watched
    assert ("step_waiting", "sleep-2", "waiting") in watched
