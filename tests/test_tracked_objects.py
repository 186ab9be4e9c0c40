"""What a run in flight keeps that the cyclic garbage collector tracks.

Every young collection walks each tracked object alive, and a full one every
object: in a burst of runs (W2), collections took a fifth of the time and freed
nothing. So the objects made once per run or per step call hold nothing tracked
they do not need: no lock, list or iterator made in case a rare call comes.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections import deque
from types import MethodType
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors._calls import Calls
from actors._dispatch import _StopFlag
from actors.run import RunActor
from runtime import Runtime, create_workflow
from runtime._snapshot import _FEW_STEPS, SnapshotFreezer, decode
from runtime._sync import AbortSignal
from tests._support import (
    Counter,
    Value,
    actor_system,
    held_workflow,
    shout_step,
    wait_until,
)
from tests.test_snapshot import a_snapshot


def _tracked(obj: object) -> list[object]:
    """What ``obj`` refers to that the collector tracks, but its class."""
    return [
        referent
        for referent in gc.get_referents(obj)
        if gc.is_tracked(referent) and referent is not type(obj)
    ]


def test_an_abort_signal_holds_nothing_tracked_until_a_callback_or_a_wait() -> None:
    signal = AbortSignal()
    assert _tracked(signal) == []
    seen: list[str] = []
    signal.add_callback(seen.append)
    assert signal.abort("canceled")
    assert not signal.abort("timeout")  # the first reason stays
    assert seen == ["canceled"]
    assert signal.wait(timeout=0)
    late: list[str] = []
    signal.add_callback(late.append)  # after the abort: called at once
    assert late == ["canceled"]


def test_an_abort_signal_wakes_a_wait_that_began_before_the_abort() -> None:
    signal = AbortSignal()
    woke = threading.Event()

    def wait() -> None:
        if signal.wait(timeout=10):
            woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: signal._latch is not None, what="the waiter made the latch")
    signal.abort("canceled")
    waiter.join(10)
    assert woke.is_set()


def test_a_wait_after_the_abort_returns_at_once() -> None:
    signal = AbortSignal()
    signal.abort("timeout")
    assert signal.wait(timeout=0)
    assert signal.reason == "timeout"


def test_a_dispatched_actors_stop_flag_holds_no_lock_of_its_own() -> None:
    flag = _StopFlag()
    assert _tracked(flag) == []
    assert not flag.wait(timeout=0)
    flag.set()
    assert flag.is_set()
    assert flag.wait(timeout=0)


def _calls(*, durable: bool) -> Calls:
    return Calls(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        {},  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        durable=durable,
    )


def test_the_calls_of_a_run_in_memory_keep_no_counter_and_no_commit_queue() -> None:
    calls = _calls(durable=False)
    kinds = {type(referent) for referent in gc.get_referents(calls)}
    assert deque not in kinds
    assert itertools.count not in kinds
    assert [calls._token() for _ in range(3)] == [1, 2, 3]
    calls.committed(5)  # nothing waits for a commit: nothing to do


def test_the_calls_of_a_run_hold_no_method_bound_to_its_actor() -> None:
    # The run actor records the snapshot that announces its calls and names its seq:
    # a bound method kept here was an object and a reference cycle per run in flight.
    calls = _calls(durable=False)
    assert not any(isinstance(referent, MethodType) for referent in gc.get_referents(calls))


def test_the_calls_of_a_durable_run_wait_for_their_commit() -> None:
    calls = _calls(durable=True)
    assert isinstance(calls._awaiting_commit, deque)
    calls._awaiting_commit.append((3, []))  # calls announced by the snapshot of seq 3
    calls.committed(2)
    assert len(calls._awaiting_commit) == 1  # not handed over before their commit
    calls.committed(3)
    assert not calls._awaiting_commit


def test_a_freezer_keeps_its_step_paths_and_open_steps_untracked() -> None:
    snapshot: dict[str, Any] = a_snapshot()
    snapshot["status"] = "running"
    # More steps than a freezer looks at whole (_FEW_STEPS): it notes which it saw.
    earlier = {f"s{index}": {"status": "success"} for index in range(_FEW_STEPS)}
    snapshot["steps"] = {
        **earlier,
        "first": {"status": "success", "payload": {"v": 1}, "output": {"v": 2}},
        "second": {"status": "running", "payload": {"v": 2}},
    }
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    assert _tracked(freezer) == [snapshot]  # nothing made before the first step
    freezer.next_record(1.0)
    snapshot["steps"]["second"]["status"] = "success"
    snapshot["steps"]["third"] = {"status": "running", "payload": {"v": 3}}
    freezer.next_record(2.0)
    gc.collect()
    assert freezer._paths == (*earlier, "first", "second", "third")
    assert freezer._unsettled == (len(earlier) + 2,)
    assert not gc.is_tracked(freezer._paths)
    assert not gc.is_tracked(freezer._unsettled)


def test_the_record_that_lets_go_of_a_run_is_encoded_from_the_snapshot_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes need no frozen copy: the record a run ends with is not frozen first."""
    snapshot: dict[str, Any] = a_snapshot()
    snapshot["status"] = "running"
    snapshot["steps"] = {"first": {"status": "running", "payload": {"v": 1}}}
    freezer = SnapshotFreezer(snapshot)  # type: ignore[arg-type]
    freezer.next_record(1.0)

    def no_copy(*_args: Any) -> Any:
        raise AssertionError("the last record was frozen before it was encoded")

    monkeypatch.setattr(SnapshotFreezer, "_freeze_steps", no_copy)
    snapshot["steps"]["first"] = {"status": "success", "payload": {"v": 1}, "output": {"v": 2}}
    snapshot["status"] = "success"
    record = freezer.next_record(2.0)
    assert type(record.data) is bytes
    assert decode(record.data) == snapshot
    assert record.seq == snapshot["seq"] == 2


def _run_actor(rt: Runtime, run_id: str) -> RunActor:
    for ref in actor_system(rt).dispatcher.actors(RunActor):
        actor = ref._actor_weakref()
        if actor is not None and actor._snapshot["run_id"] == run_id:
            return actor
    raise AssertionError(f"no run actor drives run {run_id!r}")


def test_sleeping_runs_share_one_wake_callable_and_keep_only_their_ids() -> None:
    """A sleeping run holds no closure of its own: its timer has the shared callable and its id."""
    rt = Runtime().start()
    try:
        wf = rt.register(
            create_workflow(id="sleeper", input_schema=Value, output_schema=Value)
            .sleep(3600)
            .then(shout_step())
            .commit()
        )
        runs = [wf.create_run() for _ in range(20)]
        for run in runs:
            run.start_async(input_data={"value": "x"})
        timers = actor_system(rt).timers
        wait_until(lambda: len(timers) == 20, what="every run asleep")
        gc.collect()
        handles = [entry[2] for entry in timers._heap]
        assert len({id(handle._fn) for handle in handles}) == 1
        assert sorted(handle._args for handle in handles) == sorted((run.run_id,) for run in runs)
        assert not any(gc.is_tracked(handle._args) for handle in handles)
    finally:
        rt.stop(timeout=0)  # the sleepers would be waited for


def test_a_run_makes_its_span_only_when_something_would_see_it() -> None:
    gate, counter = threading.Event(), Counter()
    rt = Runtime().start()
    try:
        wf = rt.register(held_workflow(counter, gate))
        quiet = wf.create_run()
        quiet.start_async(input_data={"value": "quiet"})
        wait_until(lambda: counter[f"{quiet.run_id}/hold"], what="the quiet run in its step")
        assert _run_actor(rt, quiet.run_id)._span is None
        with capture_logs() as logs:
            logged = wf.create_run()
            logged.start_async(input_data={"value": "logged"})
            wait_until(lambda: counter[f"{logged.run_id}/hold"], what="the logged run in its step")
            assert _run_actor(rt, logged.run_id)._span is not None
            gate.set()
            assert logged.wait(10).status == "success"
        assert quiet.wait(10).status == "success"
        run_spans = [
            (entry["event"], entry["run_id"])
            for entry in logs
            if entry.get("name") == "workflow_run"
        ]
        assert run_spans == [("span_start", logged.run_id), ("span_end", logged.run_id)]
    finally:
        gate.set()
        rt.stop()
