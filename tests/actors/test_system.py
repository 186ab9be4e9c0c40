"""``ActorSystem``: the seam the facade calls; no pykka type or error crosses it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from actors._retention import Pruner
from actors.system import ActorSystem
from runtime import MemoryStore, RetentionPolicy, RunEvent, RuntimeStoppedError, SnapshotRecord
from runtime._sync import Channel
from tests._support import wait_for_no_callboard_threads


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    started = ActorSystem(MemoryStore(), max_concurrent_runs=None, max_step_threads=8)
    try:
        yield started
    finally:
        started.shutdown(1.0)
    assert not wait_for_no_callboard_threads()


def ended(run_id: str, at: float) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="wf",
        seq=3,
        status="success",
        data=b"-",
        created_at=at,
        updated_at=at,
        trace_id="ab" * 16,
    )


def test_a_cancel_of_a_run_no_actor_drives_answers_not_here(system: ActorSystem) -> None:
    assert system.cancel("nobody-drives-this") == "not_here"


def test_watching_a_run_the_store_does_not_know_is_settled_at_once(system: ActorSystem) -> None:
    assert system.watch("unknown").wait(1.0)


def test_after_shutdown_calls_become_callboard_errors_or_settled_answers() -> None:
    system = ActorSystem(MemoryStore(), max_concurrent_runs=None, max_step_threads=8)
    system.shutdown(1.0)
    channel: Channel[RunEvent] = Channel()

    assert system.watch("any").wait(0)  # nothing will change any more
    system.subscribe("any", channel)
    with pytest.raises(RuntimeStoppedError):
        system.cancel("any")
    assert channel.closed


def test_a_started_system_has_threads_and_its_shutdown_leaves_none(system: ActorSystem) -> None:
    # The fixture checks, after shutdown, that no callboard thread is left.
    before = {thread.name for thread in threading.enumerate()}

    assert any(name.startswith("callboard-") for name in before)


def test_the_pruner_prunes_by_its_policy_and_stops() -> None:
    store = MemoryStore()
    now = time.time()
    for index in range(5):
        store.create(ended(f"r{index}", now - index))
    pruner = Pruner(store, RetentionPolicy(max_runs=2, interval=60))

    assert pruner.prune_now() == 3
    assert pruner.pruned == 3
    assert {record.run_id for record in store.list_runs(limit=None)[0]} == {"r0", "r1"}
    pruner.stop(5)
    assert not any(thread.name == "callboard-pruner" for thread in threading.enumerate())


def test_a_failing_pass_of_the_pruner_is_logged_and_the_next_one_runs() -> None:
    calls = {"n": 0}
    passed = threading.Event()

    class Flaky(MemoryStore):
        def prune(self, **kwargs: object) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("the disk hiccupped")
            passed.set()
            return 0

    pruner = Pruner(Flaky(), RetentionPolicy(max_runs=1, interval=0.01))
    try:
        assert passed.wait(5), "the pruner stopped after one failing pass"
    finally:
        pruner.stop(5)
