"""The claimer hands back runs this worker cannot drive, and skips them only while that holds.

A run is judged by the definitions registered when it was claimed. If another
definition is registered before it is handed back, it may be the run's own: the
run is handed back all the same (the judgement was made), but not skipped, so
the next claim takes it again and it is judged anew.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from actors.claimer import Claimer
from runtime import SQLiteStore, create_step, create_workflow
from runtime._stores.base import Claimed
from tests._support import Value, wait_until
from tests.test_store_contract import rec

PLAN = (
    create_workflow(id="wf", input_schema=Value, output_schema=Value)
    .then(create_step(id="s", input_schema=Value, output_schema=Value, execute=lambda c: c))
    .commit()
    .plan
)


def claimer_of(store: SQLiteStore, take: Callable[[Any, int], None]) -> Claimer:
    """A claimer of ``wf``'s runs (PLAN) on ``store``, no capacity, handing them to ``take``."""
    return Claimer(
        store,
        plans=lambda: {"wf": PLAN},
        capacity=None,
        executes=True,
        take=take,
        cancel=lambda _run_id, done: done(),
    )


class Taken:
    """What the claimer handed on: each claim's run ids and generation, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: list[tuple[list[str], int]] = []

    def __call__(self, claimed: Sequence[Claimed], generation: int) -> None:
        with self.lock:
            self.claims.append(([c.record.run_id for c in claimed], generation))

    def count(self) -> int:
        with self.lock:
            return len(self.claims)


def test_a_run_judged_before_the_workflows_changed_is_handed_back_but_not_skipped(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    store.create(rec("r1"), hold=False)
    taken = Taken()
    claimer = claimer_of(store, taken)
    try:
        wait_until(lambda: taken.count() == 1, what="the first claim")
        assert taken.claims[0] == (["r1"], 0)

        claimer.definitions_changed()  # registered meanwhile: the judgement is stale
        claimer.park(["r1"], 0)
        wait_until(lambda: taken.count() == 2, what="the run claimed again, to be judged anew")
        assert taken.claims[1] == (["r1"], 1)

        claimer.park(["r1"], 1)  # judged on what is registered now: skipped from now on
        wait_until(lambda: not store.holds("r1"), what="the run handed back")
        time.sleep(0.6)  # a few claim passes
        assert taken.count() == 2
        assert [record.run_id for record in store.queued()] == ["r1"]

        claimer.definitions_changed()
        wait_until(lambda: taken.count() == 3, what="the run claimed once more")
    finally:
        claimer.stop(5)
        store.close()
