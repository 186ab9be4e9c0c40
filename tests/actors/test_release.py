"""Ended actors are freed by reference counting: no run leaves cyclic garbage behind.

Python's cyclic collector walks every live object at each full collection; a
run actor whose graph (inbox, calls, snapshot, span) stayed in a cycle after
it ended would cost every later collection, however many runs are alive. An
ended actor's inbox holds it weakly, and the run actor lets go of the callback
bound to it, so the whole graph goes as soon as the last reference does.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from actors._dispatch import DispatchedActor, Dispatcher
from actors.messages import CancelOutcome, CancelRun
from actors.run import RunActor
from runtime import Runtime, create_step, create_workflow
from tests._support import Value

WAIT = 10.0


@pytest.fixture
def saving_garbage() -> Iterator[list[Any]]:
    """What the cyclic collector finds unreachable while the test runs (kept, not freed)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def three_steps() -> Any:
    builder = create_workflow(id="three", input_schema=Value, output_schema=Value)
    for index in range(3):
        builder = builder.then(
            create_step(
                id=f"s{index}",
                input_schema=Value,
                output_schema=Value,
                execute=lambda ctx: Value(value=ctx.input_data.value + "."),
            )
        )
    return builder.commit()


def test_ended_runs_leave_no_run_actor_to_the_cyclic_collector(
    saving_garbage: list[Any],
) -> None:
    with Runtime() as rt:
        wf = rt.register(three_steps())
        runs = [wf.create_run() for _ in range(50)]
        for run in runs:
            run.start_async(input_data={"value": "x"})
        for run in runs:
            assert run.wait(timeout=WAIT).status == "success"
        gc.collect()

        left = [type(o).__name__ for o in saving_garbage if isinstance(o, DispatchedActor)]
        assert left == [], left


class Holder(DispatchedActor):
    """An actor that refers to itself through a bound method, as a run actor does."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__(dispatcher)
        self.callback = self.on_receive
        self.undelivered: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "stop":
            self.stop_now()
        return None

    def on_undelivered(self, message: Any) -> None:
        self.undelivered.append(message)

    @classmethod
    def on_undelivered_gone(cls, message: Any) -> None:
        GONE.append(message)

    def on_released(self) -> None:
        del self.callback


GONE: list[Any] = []


def test_mail_for_an_ended_actor_reaches_it_while_alive_and_its_class_once_freed() -> None:
    dispatcher = Dispatcher(threads=1, name="callboard-test-release")
    try:
        ref = Holder.start(dispatcher)
        actor = ref.actor_inbox._actor  # type: ignore[attr-defined]
        gone = weakref.ref(actor)
        ref.tell("stop")
        assert actor.actor_stopped.wait(WAIT)
        while ref.actor_inbox._gone is None:  # type: ignore[attr-defined]
            threading.Event().wait(0.01)  # the teardown follows on the dispatcher thread
        # A sender that found the actor alive just before it stopped: its mail lands late.
        ref.actor_inbox.put(Envelope("late"))
        assert actor.undelivered == ["late"]  # still alive: the instance hears of it

        del actor
        assert gone() is None  # freed at once, by reference counting alone
        ref.actor_inbox.put(Envelope("later"))
        assert GONE == ["later"]  # its class does now
        asked: pykka.Future[Any] = pykka.ThreadingFuture()
        ref.actor_inbox.put(Envelope("anything", reply_to=asked))
        with pytest.raises(pykka.ActorDeadError, match="Holder"):
            asked.get(timeout=WAIT)
    finally:
        GONE.clear()
        dispatcher.stop(timeout=WAIT)


def test_a_cancel_for_a_freed_run_actor_is_answered_not_here() -> None:
    answers: list[CancelOutcome] = []
    RunActor.on_undelivered_gone(CancelRun(run_id="r", reply=answers.append))
    assert answers == [CancelOutcome.NOT_HERE]
