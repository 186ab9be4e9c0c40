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
from typing import Any

from actors._calls import Calls
from actors._dispatch import _StopFlag
from runtime._snapshot import SnapshotFreezer
from runtime._sync import AbortSignal
from tests._support import wait_until
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
        announce=lambda: 0,
        durable=durable,
    )


def test_the_calls_of_a_run_in_memory_keep_no_counter_and_no_commit_queue() -> None:
    calls = _calls(durable=False)
    kinds = {type(referent) for referent in gc.get_referents(calls)}
    assert deque not in kinds
    assert itertools.count not in kinds
    assert [calls._token() for _ in range(3)] == [1, 2, 3]
    calls.committed(5)  # nothing waits for a commit: nothing to do
    calls.release()


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
    snapshot["steps"] = {
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
    assert freezer._paths == ("first", "second", "third")
    assert freezer._unsettled == (2,)
    assert not gc.is_tracked(freezer._paths)
    assert not gc.is_tracked(freezer._unsettled)
