"""An async step body cancelled before the loop starts it is closed, not left unawaited."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

from pydantic import BaseModel

from runtime import Runtime, StepContext, create_step, create_workflow


class V(BaseModel):
    v: int


def test_an_async_body_timed_out_before_it_started_is_closed_without_a_warning() -> None:
    holding, release = threading.Event(), threading.Event()
    started: list[int] = []

    @create_step(input_schema=V, output_schema=V)
    async def hog(ctx: StepContext[V]) -> V:
        holding.set()
        release.wait(10)  # holds the async loop's thread: nothing else starts on it
        return ctx.input_data

    @create_step(input_schema=V, output_schema=V, timeout=0.05)
    async def quick(ctx: StepContext[V]) -> V:
        started.append(1)
        await asyncio.sleep(0)
        return ctx.input_data

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Runtime() as rt:
            first = rt.register(
                create_workflow(id="hog", input_schema=V, output_schema=V).then(hog).commit()
            )
            second = rt.register(
                create_workflow(id="quick", input_schema=V, output_schema=V).then(quick).commit()
            )
            hogging = first.create_run()
            hogging.start_async(input_data={"v": 1})
            assert holding.wait(10)
            try:
                result = second.create_run().start(input_data={"v": 2}, timeout=10)
            finally:
                release.set()
            assert hogging.wait(10).status == "success"
        gc.collect()
    assert result.status == "failed" and result.error is not None
    assert result.error.name == "StepTimeoutError"
    assert started == []  # it never ran: the timeout came first
    never_awaited = [str(w.message) for w in seen if "never awaited" in str(w.message)]
    assert never_awaited == []
