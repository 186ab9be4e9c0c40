"""A resume goes to the suspension it read, never to a later one at the same path.

A step that suspends each time it runs until its resume data says enough (``n >= 2``)
suspends again at the same path once resumed with ``n=1``. A resume that read the first
suspension, and lost it to another resume meanwhile, must not take the second: it raises
``ResumeConflictError``, on every store, whether the run suspended as a whole (the
store's compare-and-set, read again after it lost) or runs on while the step waits (the
run's actor, or a resume request of the store's). The other resume is let in between the
read and the write deterministically: the resume data's validation, which comes between
them, does it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from runtime import ResumeConflictError, Runtime, create_step, create_workflow
from tests._support import Value, wait_until

WAIT = 30.0

MEANWHILE: dict[threading.Thread, Callable[[], None]] = {}
"""What a resuming thread does while ``Count`` validates its resume data, once."""


class Count(BaseModel):
    """Resume data whose validation, in a thread listed in ``MEANWHILE``, first does that."""

    n: int

    @field_validator("n")
    @classmethod
    def _let_another_resume_in(cls, value: int) -> int:
        meanwhile = MEANWHILE.pop(threading.current_thread(), None)
        if meanwhile is not None:
            meanwhile()
        return value


class Asks:
    """``ask`` suspends until it is resumed with ``n >= 2``; each run is noted with its data.

    With ``beside``, ``parallel(hold, ask)``: ``hold`` suspends once, then runs until
    ``release`` is set, so that the run runs on while ``ask`` waits. With ``looped``,
    ``dowhile(ask)`` for two passes, where ``ask`` suspends once a pass (any ``n``).
    """

    def __init__(self, *, beside: bool = False, looped: bool = False) -> None:
        self.seen: list[Any] = []
        self.release = threading.Event()
        self.holding = threading.Event()

        def ask(ctx: Any) -> Value:
            data = ctx.resume_data
            self.seen.append(None if data is None else data.n)
            if data is None or (data.n < 2 and not looped):
                ctx.suspend({"asks": "n"})
            return Value(value=f"n{data.n}")

        def hold(ctx: Any) -> Value:
            if ctx.resume_data is None:
                ctx.suspend({"asks": "go"})
            self.holding.set()
            self.release.wait(WAIT)
            return Value(value="held")

        asking = create_step(
            id="ask", input_schema=Value, output_schema=Value, resume_schema=Count, execute=ask
        )
        name = "asks-beside" if beside else "asks-looped" if looped else "asks"
        builder = create_workflow(id=name, input_schema=Value, output_schema=Value)
        if looped:
            builder = builder.dowhile(asking, lambda ctx: ctx.iteration_count < 2)
        elif beside:
            holding = create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold)
            builder = builder.parallel([holding, asking]).map(
                lambda ctx: {"value": ctx.input_data["ask"]["value"]}
            )
        else:
            builder = builder.then(asking)
        self.workflow = builder.commit()


@pytest.fixture
def rt(each_store: Any) -> Iterator[Runtime]:
    with Runtime(store=each_store) as runtime:
        yield runtime


@pytest.mark.parametrize("again", ["asks again", "the loop's next pass"])
def test_a_resume_that_read_a_suspension_another_resume_took_does_not_take_the_next_at_its_path(
    rt: Runtime, again: str
) -> None:
    # The run suspends as a whole at ask. The other resume (n=1) is recorded while this
    # one validates its data; ask runs and suspends again (or ends, and the loop's next
    # pass suspends at ask), and the run with it. This resume's compare-and-set fails,
    # it reads the run again, and found it suspended at ask: it resumed the new
    # suspension with n=2.
    looped = again != "asks again"
    seen_then = [None, 1, None] if looped else [None, 1]
    asks = Asks(looped=looped)
    wf = rt.register(asks.workflow)
    run = wf.create_run()
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    other = wf.create_run(run.run_id)

    def other_resume_and_suspension_again() -> None:
        other.resume_async(resume_data={"n": 1})
        wait_until(
            lambda: asks.seen == seen_then and run.wait(timeout=WAIT).status == "suspended",
            timeout=WAIT,
            what="ask suspended again",
        )

    MEANWHILE[threading.current_thread()] = other_resume_and_suspension_again
    with pytest.raises(ResumeConflictError, match="'ask' has suspended again since"):
        run.resume_async(resume_data={"n": 2})

    assert asks.seen == seen_then
    result = run.wait(timeout=WAIT)
    assert result.status == "suspended" and list(result.suspended) == ["ask"]
    assert run.resume(resume_data={"n": 2}, timeout=WAIT).status == "success"


def test_a_resume_of_a_waiting_step_another_resume_took_does_not_take_its_next_suspension(
    rt: Runtime,
) -> None:
    # The run runs on (hold runs) while ask waits. The other resume of ask (n=1) is
    # taken while this one validates its data; ask runs and suspends again, the run
    # still running. This one went to the run's actor (in memory) or became a resume
    # request (SQLite, PostgreSQL), and ask ran with n=2.
    asks = Asks(beside=True)
    wf = rt.register(asks.workflow)
    run = wf.create_run()
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    run.resume_async(step="hold", resume_data={})
    assert asks.holding.wait(WAIT)
    other = wf.create_run(run.run_id)

    def ask_waits_again() -> bool:
        result = wf.get_workflow_run_execution_result(run.run_id)
        return (
            asks.seen == [None, 1]
            and result is not None
            and result.status == "running"
            and "ask" in result.suspended
        )

    def other_resume_and_suspension_again() -> None:
        other.resume_async(step="ask", resume_data={"n": 1})
        wait_until(ask_waits_again, timeout=WAIT, what="ask suspended again")

    MEANWHILE[threading.current_thread()] = other_resume_and_suspension_again
    try:
        with pytest.raises(ResumeConflictError):
            run.resume_async(step="ask", resume_data={"n": 2})
    finally:
        asks.release.set()

    result = run.wait(timeout=WAIT)
    assert asks.seen == [None, 1], asks.seen
    assert result.status == "suspended" and list(result.suspended) == ["ask"]
    assert run.resume(resume_data={"n": 2}, timeout=WAIT).result == {"value": "n2"}
