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
from pathlib import Path
from typing import Any

import pytest

from runtime import create_step, create_workflow
from tests._support import Runtimes, Value, stall_writer

WAIT = 10.0


def noting_step(step_id: str, ran: threading.Event) -> Any:
    def body(ctx: Any) -> Value:
        ran.set()
        return Value(value=ctx.input_data.value + step_id)

    return create_step(id=step_id, input_schema=Value, output_schema=Value, execute=body)


@pytest.mark.parametrize("hook", [False, True], ids=["no-hook", "on-start-hook"])
def test_a_new_runs_first_step_starts_before_its_running_snapshot_commits_and_the_next_after(
    hook: bool, db: Path, runtimes: Runtimes
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
    assert rt.store is not None
    _, go_on = stall_writer(rt.store)  # the create still commits, on this thread
    try:
        run.start_async(input_data={"value": "-"})
        # The store has the run pending, nothing of it saved since, and its first step
        # ran all the same...
        assert first_ran.wait(WAIT), "the first step waited for its snapshot's commit"
        assert hook_called.is_set() == hook
        stored = rt.store.load(run.run_id)
        assert stored is not None and (stored.seq, stored.status) == (0, "pending")
        # ...while the second waits for the commit of the snapshot holding the first's output.
        assert not second_ran.wait(0.3), "the second step ran before the first's output committed"
    finally:
        go_on.set()
    result = run.wait(timeout=WAIT)
    assert result.status == "success"
    assert result.result == {"value": "-ab"}
    assert second_ran.is_set()
