"""A step pool with a stand-in for the run actor, shared by test_step.py and test_pool.py."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
from pydantic import BaseModel

from actors._pool import AsyncLoop, StepPool
from actors.messages import (
    CallConditions,
    CallMap,
    CallSleepLength,
    CallStep,
    RunPart,
    StepActorMessage,
    StepFinished,
)
from runtime._step import Step, create_step
from runtime._sync import AbortSignal

WAIT = 10.0


class Value(BaseModel):
    value: str


class Collector(pykka.ThreadingActor):
    """Stands in for a run actor: puts every reply on a queue."""

    use_daemon_thread = True

    def __init__(self, replies: queue.Queue[Any]) -> None:
        super().__init__()
        self.replies = replies

    def on_receive(self, message: Any) -> Any:
        self.replies.put(message)
        return None


def step_threads() -> set[threading.Thread]:
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(("StepActor-", "callboard-step-monitor", "callboard-async"))
    }


def step(execute: Callable[[Any], Any], *, id: str = "s", output: type[BaseModel] = Value) -> Any:
    return create_step(id=id, input_schema=Value, output_schema=output, execute=execute)


class Harness:
    """A pool, an async loop, and a collector for the pool's replies."""

    def __init__(self, core: int, limit: int) -> None:
        self.replies: queue.Queue[Any] = queue.Queue()
        self.collector = Collector.start(self.replies)
        self.loop = AsyncLoop()
        self.pool = StepPool(self.loop, core=core, limit=limit)
        self._count = 0

    def common(
        self,
        payload: Any,
        *,
        definitions: dict[str, Any] | None = None,
        reply_to: Any = None,
        request_context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What every call carries, for a run of its own (its run part included)."""
        self._count += 1
        return {
            "run": RunPart(
                run_id=f"run-{self._count}",
                workflow_id="wf",
                state_schema=None,
                input_schema=Value,
                definitions={} if definitions is None else definitions,
                trace_id="ab" * 16,
                parent_span_id="cd" * 8,
                reply_to=self.collector if reply_to is None else reply_to,
            ),
            "payload": payload,
            "state": None,
            "request_context": {} if request_context is None else request_context,
            "init_data": payload,
            "outputs": {},
            "token": self._count,
        }

    def execute(
        self,
        step: Step[Any, Any],
        payload: Any,
        *,
        final_schema: type[BaseModel] | None = None,
        signal: AbortSignal | None = None,
    ) -> str:
        fields = self.common(payload, definitions={step.id: step})
        self.pool.submit(CallStep(**fields, step=step, final_schema=final_schema, signal=signal))
        return str(fields["run"].run_id)

    def conditions(self, fns: tuple[Any, ...], payload: Any, **rest: Any) -> StepFinished:
        return self.call(
            CallConditions(**self.common(payload), path="branch", step_id="arm", fns=fns, **rest)
        )

    def map(self, fn: Callable[[Any], Any], payload: Any) -> StepFinished:
        return self.call(CallMap(**self.common(payload), path="reshape", step_id="reshape", fn=fn))

    def sleep_length(self, fn: Callable[[Any], Any], payload: Any) -> StepFinished:
        return self.call(CallSleepLength(**self.common(payload), path="nap", step_id="nap", fn=fn))

    def call(self, call: StepActorMessage) -> StepFinished:
        self.pool.submit(call)
        return self.reply()

    def reply(self) -> StepFinished:
        finished = self.replies.get(timeout=WAIT)
        assert isinstance(finished, StepFinished)
        return finished

    def run(self, step: Step[Any, Any], payload: Any, **kwargs: Any) -> StepFinished:
        self.execute(step, payload, **kwargs)
        return self.reply()

    def stop(self) -> None:
        self.pool.stop()
        self.loop.stop(WAIT)
        self.collector.stop(timeout=WAIT)


def harnesses() -> Iterator[Callable[..., Harness]]:
    """The body of a ``make_harness`` fixture: harnesses are stopped, their threads checked."""
    before = step_threads()
    made: list[Harness] = []

    def make(core: int = 2, limit: int = 4096) -> Harness:
        harness = Harness(core, limit)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop()
    for thread in step_threads() - before:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} outlived pool.stop()"
