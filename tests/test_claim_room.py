"""A worker's claim and the runs it starts itself share its room: never more than its limit.

On a shared store a runtime with ``max_concurrent_runs`` holds a run it starts
if it has room (``Claimer.reserve``), and its claimer claims queued runs for the
room left. The claimer counted its room, then claimed: a run started here in
between took that room too, and the claim took a queued run on top of it, so two
runs ran on a worker limited to one (seen once in CI: a run that had to stay
pending behind a blocker ran its step). A start now waits for a claim under way,
and counts the runs it took.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from pathlib import Path

from runtime import SQLiteStore
from runtime._stores.base import Claimed
from tests._support import BLOCK_LIMIT, Runtimes, actor_system, gated_workflow, wait_until

GRACE = 1.0
"""Seconds the starts are given to return while the claim waits (they return in milliseconds)."""


class PausedClaims(SQLiteStore):
    """A SQLite store whose next claim, once armed, waits for the test before it reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed = False
        self.paused = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()

    def claim(
        self,
        workflow_ids: Sequence[str],
        limit: int,
        skip: Collection[str] = (),
        busy: Collection[str] = (),
    ) -> list[Claimed]:
        if not self.armed:
            return super().claim(workflow_ids, limit, skip, busy)
        self.armed = False
        self.paused.set()
        self.go.wait(BLOCK_LIMIT)
        try:
            return super().claim(workflow_ids, limit, skip, busy)
        finally:
            self.done.set()


def test_a_run_started_while_a_claim_is_under_way_does_not_take_the_room_the_claim_counted(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    gate = runtimes.gate()
    entered: list[str] = []  # the run ids whose step started; the first one's waits for gate
    workflow = gated_workflow("one-at-a-time", entered, threading.Event(), gate)
    store = PausedClaims(tmp_path / "runs.db")
    rt = runtimes.start(store, max_concurrent_runs=1)
    bound = rt.register(workflow)
    claimer = actor_system(rt).claimer
    assert claimer is not None
    store.armed = True
    claimer.poke()
    assert store.paused.wait(BLOCK_LIMIT), "the claimer never claimed"

    # The claimer has counted its room (one) and waits to claim: two runs start meanwhile.
    first, second = bound.create_run(), bound.create_run()

    def start_both() -> None:
        first.start_async(input_data={"n": 1})
        second.start_async(input_data={"n": 2})

    starter = threading.Thread(target=start_both)
    starter.start()
    # Both starts return at once if they may take room the claim counted; they wait for
    # the claim if not. A moment for the first case, so that the claim comes after them.
    starter.join(GRACE)
    store.go.set()
    starter.join(BLOCK_LIMIT)
    assert not starter.is_alive()

    assert store.done.wait(BLOCK_LIMIT), "the paused claim never ended"
    wait_until(lambda: entered, what="a run's step started")
    for _ in range(2):  # two more passes of the claimer: what it would take, it has taken
        claimer.poke()
        wait_until(claimer.idle, what="a pass of the claimer")
    assert store.held() == 1
    assert entered == [first.run_id]
    waiting = bound.get_workflow_run_execution_result(second.run_id)
    assert waiting is not None and waiting.status == "pending"
    gate.set()
    assert first.wait(BLOCK_LIMIT).status == "success"
    assert second.wait(BLOCK_LIMIT).status == "success"
    assert entered == [first.run_id, second.run_id]
