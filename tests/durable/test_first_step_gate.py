"""Which calls of a run wait for a commit before they run, on a durable store.

A step starts only once the snapshot holding the previous step's output is
committed, so that a completed step never runs again after a crash. A new
run's first step has no previous step: what recovery would start it from is the
run's pending record, committed before ``start_async`` returned, so it starts at
once, without waiting for the writer to commit the snapshot that marks it
running.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import SQLiteStore, create_step, create_workflow
from tests._support import Runtimes, Value

WAIT = 10.0


class StalledSaves:
    """Once ``stall()`` is called, the writer commits nothing until ``go_on`` is set.

    Creates still commit, on their callers' threads. ``saved`` lists the status of
    every record the writer then commits, in order.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.go_on = threading.Event()
        self.saved: list[str] = []

    def stall(self) -> None:
        commit = SQLiteStore._commit
        go_on, saved = self.go_on, self.saved

        def stalled_commit(store, connection, writes):  # type: ignore[no-untyped-def]
            go_on.wait(WAIT)
            saved.extend(r.status for w in writes if w.kind == "save" for r in w.payload)
            return commit(store, connection, writes)

        self.monkeypatch.setattr(SQLiteStore, "_commit", stalled_commit)


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> Iterator[StalledSaves]:
    stalled = StalledSaves(monkeypatch)
    try:
        yield stalled
    finally:
        stalled.go_on.set()


def noting_step(step_id: str, ran: threading.Event) -> Any:
    def body(ctx: Any) -> Value:
        ran.set()
        return Value(value=ctx.input_data.value + step_id)

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)


@pytest.mark.parametrize("hook", [False, True], ids=["no-hook", "on-start-hook"])
def test_a_new_runs_first_step_starts_before_its_running_snapshot_commits_and_the_next_after(
    hook: bool, db: Path, runtimes: Runtimes, saves: StalledSaves
) -> None:
    # An on_start hook changes nothing that the first step's snapshot would have to store
    # first: a run recovered while pending calls it again.
    rt = runtimes.start(db)
    hook_called, first_ran, second_ran = threading.Event(), threading.Event(), threading.Event()
    wf = rt.register(
        create_workflow(
            id="gates",
            input_schema=Value,
            output_schema=Value,
            on_start=(lambda _outcome: hook_called.set()) if hook else None,
        )
        .then(noting_step("a", first_ran))
        .then(noting_step("b", second_ran))
        .commit()
    )
    run = wf.create_run()
    saves.stall()
    run.start_async(input_data={"value": "-"})

    # Nothing the run saved is committed, and its first step ran all the same...
    assert first_ran.wait(WAIT), "the first step waited for its snapshot's commit"
    assert hook_called.is_set() == hook
    assert saves.saved == []
    # ...while the second waits for the commit of the snapshot holding the first's output.
    assert not second_ran.wait(0.3), "the second step ran before the first's output committed"
    saves.go_on.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success"
    assert result.result == {"value": "-ab"}
    assert second_ran.is_set()
