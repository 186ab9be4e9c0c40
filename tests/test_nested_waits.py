"""A step that starts another run and waits for it (``run.start()`` in a step body).

Such a step blocks its thread, and its run holds a place among the runs in
progress, until the other run ends. With the step threads (``max_step_threads``)
or the places (``max_concurrent_runs``) all held by such steps, the runs they
wait for had nowhere to go: every run waited for ever. A step waiting for a
run now counts neither against ``max_step_threads`` nor, for its run, against
``max_concurrent_runs``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import Runtime, StepContext, create_step, create_workflow
from runtime.testing import _system_of

WAIT = 30.0
PARENTS = 4


class Number(BaseModel):
    n: int


double = create_step(
    id="double",
    input_schema=Number,
    output_schema=Number,
    execute=lambda ctx: {"n": ctx.input_data.n * 2},
)
child = create_workflow(id="child", input_schema=Number, output_schema=Number).then(double).commit()


def parent_of(runtime: Runtime, *, then: Any = None) -> Any:
    """A workflow whose one step starts a ``child`` run on ``runtime`` and waits for it."""
    children = runtime.register(child)

    def delegate(ctx: StepContext[Number]) -> Number:
        result = children.create_run().start(input_data={"n": ctx.input_data.n}, timeout=WAIT)
        assert result.status == "success", result.error
        if then is not None:
            then()
        return Number(n=result.result["n"])

    step = create_step(id="delegate", input_schema=Number, output_schema=Number, execute=delegate)
    return runtime.register(
        create_workflow(id="parent", input_schema=Number, output_schema=Number).then(step).commit()
    )


def run_parents(runtime: Runtime, count: int = PARENTS) -> list[Any]:
    parents = parent_of(runtime)
    runs = [parents.create_run() for _ in range(count)]
    for index, run in enumerate(runs):
        run.start_async(input_data={"n": index})
    return [run.wait(WAIT) for run in runs]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_url")
    else:
        yield None if request.param == "memory" else tmp_path / "nested.db"


def options(store: Any, **more: Any) -> dict[str, Any]:
    return more if store is None else {"store": store, **more}


def test_steps_waiting_for_runs_do_not_hold_every_step_thread(store: Any) -> None:
    # Before: two parents took both threads, and their children's steps never got one.
    with Runtime(**options(store, max_step_threads=2)) as rt:
        results = run_parents(rt)
        assert [r.status for r in results] == ["success"] * PARENTS
        assert [r.result for r in results] == [{"n": 2 * i} for i in range(PARENTS)]


def test_runs_waiting_for_runs_do_not_hold_every_place(store: Any) -> None:
    # Before: max_concurrent_runs places went to parents, and their children waited behind
    # them (in the supervisor's queue in memory; in the store, unclaimed, on SQLite).
    with Runtime(**options(store, max_concurrent_runs=1)) as rt:
        results = run_parents(rt)
        assert [r.status for r in results] == ["success"] * PARENTS


def test_async_steps_awaiting_runs_do_not_hold_every_place(store: Any) -> None:
    # An async step that awaits a child run (astart, wait_async) kept its run's place:
    # with max_concurrent_runs=2, a chain three deep waited for ever where the sync
    # chain finished.
    with Runtime(**options(store, max_concurrent_runs=2)) as rt:
        chain: list[Any] = []

        async def down(ctx: StepContext[Number]) -> Number:
            n = ctx.input_data.n
            if n == 0:
                return Number(n=0)
            result = await chain[0].create_run().astart(input_data={"n": n - 1}, timeout=WAIT)
            return Number(n=result.result["n"] + 1)

        step = create_step(id="down", input_schema=Number, output_schema=Number, execute=down)
        chain.append(
            rt.register(
                create_workflow(id="chain", input_schema=Number, output_schema=Number)
                .then(step)
                .commit()
            )
        )
        runs = [chain[0].create_run() for _ in range(2)]
        for run in runs:
            run.start_async(input_data={"n": 3})
        assert [run.wait(WAIT).result for run in runs] == [{"n": 3}, {"n": 3}]
        assert _system_of(rt).pool.waiting == 0


def test_both_bounds_at_once_and_three_levels_deep(store: Any) -> None:
    with Runtime(**options(store, max_step_threads=1, max_concurrent_runs=1)) as rt:
        middles = parent_of(rt)  # a "parent" run of "child" runs

        def top(ctx: StepContext[Number]) -> Number:
            result = middles.create_run().start(input_data={"n": ctx.input_data.n}, timeout=WAIT)
            return Number(n=result.result["n"] + 1)

        step = create_step(id="top", input_schema=Number, output_schema=Number, execute=top)
        tops = rt.register(
            create_workflow(id="top", input_schema=Number, output_schema=Number).then(step).commit()
        )
        runs = [tops.create_run() for _ in range(3)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"n": index})
        assert [run.wait(WAIT).result for run in runs] == [{"n": 2 * i + 1} for i in range(3)]


def test_the_threads_past_the_bound_go_once_the_waits_end() -> None:
    peak: list[int] = []
    lock = threading.Lock()

    with Runtime(max_step_threads=2) as rt:
        pool = _system_of(rt).pool

        def note() -> None:
            with lock:
                peak.append(pool.size)

        parents = parent_of(rt, then=note)
        runs = [parents.create_run() for _ in range(6)]
        for index, run in enumerate(runs):
            run.start_async(input_data={"n": index})
        assert all(run.wait(WAIT).status == "success" for run in runs)

        assert pool.waiting == 0
        assert pool.size <= 2  # every thread beyond max_step_threads has stopped
        assert max(peak) > 2  # while parents waited, their children had threads of their own


@pytest.mark.parametrize("body", ["sync", "async"])
def test_under_a_harness_a_step_waiting_for_a_sleeping_run_lets_the_clock_jump(body: str) -> None:
    # The parent's step is executing, but it waits on callboard alone: the time skipper
    # may jump the virtual clock over the child's day of sleep. An async step's
    # await run.astart() held the clock for ever.
    from runtime.testing import Harness

    sleepy = (
        create_workflow(id="sleepy", input_schema=Number, output_schema=Number)
        .sleep(86_400)
        .then(double)
        .commit()
    )
    with Harness() as harness:
        children = harness.register(sleepy)

        def delegate(ctx: StepContext[Number]) -> Number:
            result = children.create_run().start(input_data={"n": ctx.input_data.n}, timeout=WAIT)
            return Number(n=result.result["n"])

        async def adelegate(ctx: StepContext[Number]) -> Number:
            run = children.create_run()
            result = await run.astart(input_data={"n": ctx.input_data.n}, timeout=WAIT)
            return Number(n=result.result["n"])

        step = create_step(
            id="delegate",
            input_schema=Number,
            output_schema=Number,
            execute=delegate if body == "sync" else adelegate,
        )
        parents = harness.register(
            create_workflow(id="waiting-parent", input_schema=Number, output_schema=Number)
            .then(step)
            .commit()
        )
        start = harness.clock.now()
        result = parents.create_run().start(input_data={"n": 21}, timeout=WAIT)
        assert result.status == "success", result.error
        assert result.result == {"n": 42}
        assert harness.clock.now() - start >= 86_400
