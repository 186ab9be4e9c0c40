"""A run cancelled where no actor drives it is recorded ``canceled`` only after its hooks.

A suspended run (and, on a shared store, a queued or sleeping one, which waits in the
store) is cancelled by the process that calls ``cancel()``: a compare-and-set takes the
run, its ``on_finish`` hook runs there, and only then is the canceled record committed, as
for a run an actor drives. While the hook runs no reader, in this process or another,
reads the run ``canceled``; a racing resume or restart finds nothing to resume or restart.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    RunNotRestartableError,
    RunNotSuspendedError,
    RunOutcome,
    RunReader,
    RunStatus,
    create_step,
    create_workflow,
)
from tests._support import N, Runtimes, wait_until

WAIT = 30.0
"""Seconds any wait may take at most, so that a bug fails instead of hanging."""

GRACE = 0.3
"""Seconds given a cancel that must not return yet to return anyway (it never has to)."""


class Approval(BaseModel):
    ok: bool


def _approve(ctx: Any) -> N:
    if ctx.resume_data is None:
        ctx.suspend({"question": "go on?"})
    return ctx.input_data


approve = create_step(
    id="approve", input_schema=N, output_schema=N, resume_schema=Approval, execute=_approve
)
later = create_step(id="later", input_schema=N, output_schema=N, execute=lambda ctx: ctx.input_data)


class HeldHook:
    """An ``on_finish`` hook that says when it is entered and returns once released."""

    def __init__(self, release: threading.Event) -> None:
        self.entered = threading.Event()
        self.release = release
        self.told: list[str] = []

    def __call__(self, outcome: RunOutcome) -> None:
        self.told.append(outcome.status)
        self.entered.set()
        self.release.wait(WAIT)


def read_elsewhere(store: Any, run_id: str) -> str | None:
    """The run's status as another process reads it (a reader of its own), or ``None`` in memory."""
    if store == "memory":
        return None
    with RunReader(store) as reader:
        found = reader.get_run(run_id)
    assert found is not None
    return found.status


@pytest.mark.parametrize("where", ["suspended", "sleeping", "queued"])
def test_no_reader_sees_a_run_canceled_before_its_on_finish_hook_has_returned(
    where: str, each_store: Any, runtimes: Runtimes
) -> None:
    if where == "queued" and each_store == "memory":
        pytest.skip("in memory a run waiting for room waits in the supervisor, which cancels it")
    hook = HeldHook(runtimes.gate())
    builder = create_workflow(id=f"hooked-{where}", input_schema=N, output_schema=N, on_finish=hook)
    if where == "suspended":
        builder = builder.then(approve)
    elif where == "sleeping":
        builder = builder.sleep(600)
    flow = builder.then(later).commit()
    # A client executes nothing: the run it starts waits in the store's queue.
    rt = runtimes.start(each_store, role="client" if where == "queued" else "both")
    wf = rt.register(flow)
    run = wf.create_run()
    run.start_async(input_data={"n": 1})
    wanted = {"suspended": "suspended", "sleeping": "waiting", "queued": "pending"}[where]
    wait_until(
        lambda: wf.get_workflow_run_execution_result(run.run_id).status == wanted,
        timeout=WAIT,
        what=f"the run is {wanted}",
    )

    returned: dict[str, Any] = {}
    done = threading.Event()

    def cancel() -> None:
        try:
            returned["value"] = run.cancel()
        finally:
            done.set()

    canceller = threading.Thread(target=cancel)
    canceller.start()
    try:
        assert hook.entered.wait(WAIT), "on_finish was not called"
        assert not done.wait(GRACE), f"cancel() returned while on_finish ran: {returned}"
        here = wf.get_workflow_run_execution_result(run.run_id).status
        elsewhere = read_elsewhere(each_store, run.run_id)
        assert here != RunStatus.CANCELED, "this runtime read canceled while on_finish ran"
        assert elsewhere != RunStatus.CANCELED, "another reader read canceled while on_finish ran"
        # The cancel took the run: nothing races it to another end meanwhile.
        if where == "suspended":
            with pytest.raises(RunNotSuspendedError):
                wf.create_run(run.run_id).resume_async(resume_data={"ok": True})
        with pytest.raises(RunNotRestartableError):
            wf.create_run(run.run_id).restart_async()
    finally:
        hook.release.set()
        canceller.join(WAIT)

    assert returned.get("value") is True, returned
    assert wf.get_workflow_run_execution_result(run.run_id).status == RunStatus.CANCELED
    assert read_elsewhere(each_store, run.run_id) in (None, RunStatus.CANCELED)
    assert hook.told == ["canceled"]
    assert run.cancel() is False


def test_a_second_cancel_while_the_first_calls_the_hooks_waits_and_returns_false(
    each_store: Any, runtimes: Runtimes
) -> None:
    hook = HeldHook(runtimes.gate())
    flow = (
        create_workflow(id="hooked-twice", input_schema=N, output_schema=N, on_finish=hook)
        .then(approve)
        .commit()
    )
    wf = runtimes.start(each_store).register(flow)
    run = wf.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
    answers: list[bool] = []
    first = threading.Thread(target=lambda: answers.append(run.cancel()))
    first.start()
    assert hook.entered.wait(WAIT)
    second = threading.Thread(target=lambda: answers.append(wf.create_run(run.run_id).cancel()))
    second.start()
    second.join(GRACE)
    assert answers == [], "a cancel returned while on_finish ran"
    hook.release.set()
    first.join(WAIT)
    second.join(WAIT)
    assert sorted(answers) == [False, True]
    assert hook.told == ["canceled"]


def test_hooks_that_cancel_runs_whose_hooks_cancel_others_all_end(
    each_store: Any, runtimes: Runtimes
) -> None:
    # A's on_finish cancels B, whose on_finish cancels C: the two hook threads both
    # waited on a cancel, C's hook never got a thread, and B and C read running for
    # ever (r3). A cancel's wait is a wait for a run: its thread does not count then.
    rt = runtimes.start(each_store)
    told: list[str] = []
    ids: dict[str, str] = {}
    flows: dict[str, Any] = {}

    def hook_of(name: str, then: str | None) -> Any:
        def hook(outcome: RunOutcome) -> None:
            if then is not None:
                canceled = flows[then].create_run(ids[then]).cancel()
                told.append(f"{name} canceled {then}: {canceled}")

        return hook

    for name, then in (("c", None), ("b", "c")):
        flows[name] = rt.register(
            create_workflow(
                id=f"chain-{name}", input_schema=N, output_schema=N, on_finish=hook_of(name, then)
            )
            .then(approve)
            .commit()
        )
        run = flows[name].create_run()
        assert run.start(input_data={"n": 0}, timeout=WAIT).status == "suspended"
        ids[name] = run.run_id
    first = rt.register(
        create_workflow(id="chain-a", input_schema=N, output_schema=N, on_finish=hook_of("a", "b"))
        .then(later)
        .commit()
    )
    assert first.create_run().start(input_data={"n": 0}, timeout=WAIT).status == "success"

    assert told == ["b canceled c: True", "a canceled b: True"]
    for name in ("b", "c"):
        ended = flows[name].get_workflow_run_execution_result(ids[name])
        assert ended is not None and ended.status == RunStatus.CANCELED


def test_a_step_that_cancels_a_run_keeps_its_place_and_the_test_kits_clock() -> None:
    # Reported as a wait for a run, a step's cancel gave up the step's place among the
    # runs and let a time-skipping Harness jump its clock to the step's timeout while the
    # cancelled run's hook did real work: the step failed with StepTimeoutError (r4).
    import time

    from runtime.testing import Harness

    def slow_hook(_outcome: RunOutcome) -> None:
        time.sleep(0.5)  # real work: a call to another service

    held = (
        create_workflow(id="held-slow", input_schema=N, output_schema=N, on_finish=slow_hook)
        .then(approve)
        .commit()
    )
    bound: dict[str, Any] = {}

    def cancel_it(ctx: Any) -> N:
        assert bound["held"].create_run(bound["run_id"]).cancel()
        return ctx.input_data  # type: ignore[no-any-return]

    canceller = (
        create_workflow(id="canceller", input_schema=N, output_schema=N)
        .then(
            create_step(
                id="cancel-it", input_schema=N, output_schema=N, execute=cancel_it, timeout=10
            )
        )
        .commit()
    )
    with Harness() as harness:
        bound["held"] = harness.register(held)
        run = bound["held"].create_run()
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
        bound["run_id"] = run.run_id
        before = harness.clock.now()
        result = harness.register(canceller).create_run().start(input_data={"n": 1}, timeout=WAIT)
        assert result.status == "success", result.error
        assert harness.clock.now() - before < 10
