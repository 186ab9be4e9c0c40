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


def test_a_step_waiting_for_a_run_makes_room_only_while_its_own_run_is_held(
    tmp_path: Path, runtimes: Runtimes
) -> None:
    # A step waiting for another run (its child) makes room for one run more: the child
    # may need it. Its run cancelled meanwhile, the run no longer counted among those held,
    # the wait made room all the same: the worker took three runs at a limit of two.
    from runtime import create_step, create_workflow
    from tests._support import Value

    gate = runtimes.gate()
    entered: list[str] = []

    def job_body(ctx: object) -> Value:
        entered.append(ctx.run_id)  # type: ignore[attr-defined]
        gate.wait(BLOCK_LIMIT)
        return ctx.input_data  # type: ignore[attr-defined,no-any-return]

    job = (
        create_workflow(id="job", input_schema=Value, output_schema=Value)
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=job_body))
        .commit()
    )
    bound: dict[str, object] = {}

    def spawn(ctx: object) -> Value:
        bound["job"].create_run().start(input_data={"value": "child"})  # type: ignore[attr-defined]
        return ctx.input_data  # type: ignore[attr-defined,no-any-return]

    parent = (
        create_workflow(id="parent", input_schema=Value, output_schema=Value)
        .then(create_step(id="spawn", input_schema=Value, output_schema=Value, execute=spawn))
        .commit()
    )
    path = tmp_path / "runs.db"
    worker = runtimes.start(SQLiteStore(path), max_concurrent_runs=2)
    client = runtimes.start(SQLiteStore(path), role="client")
    worker.register(parent)
    bound["job"] = worker.register(job)
    client.register(job)
    run = client.register(parent).create_run()
    run.start_async(input_data={"value": "p"})
    wait_until(lambda: len(entered) == 1, BLOCK_LIMIT, "the child runs")
    assert run.cancel() is True  # its step still waits for the child
    for index in range(3):
        client.register(job).create_run().start_async(input_data={"value": f"q{index}"})
    claimer = actor_system(worker).claimer
    assert claimer is not None
    for _ in range(3):
        claimer.poke()
        wait_until(claimer.idle, BLOCK_LIMIT, "the claimer's pass")

    assert worker.store.held() == 2  # the child and one job: the limit
    assert len(entered) == 2
