"""``benchmarks/threads.py`` puts each of a runtime's threads in the group that names it.

The script splits a run's CPU by thread, grouping threads by their names; a
thread renamed without the script knowing would fall into ``other`` and the
table would say the dispatcher or the step pool cost nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from runtime import Runtime
from tests._support import (
    ROOT,
    Counter,
    Value,
    held_workflow,
    quick_script_stdout,
    script_module,
)

THREADS = ROOT / "benchmarks" / "threads.py"


@pytest.fixture(scope="module")
def threads_bench() -> Iterator[ModuleType]:
    """benchmarks/threads.py imported as a module, with benchmarks/ on the path for ``bench``."""
    with script_module(THREADS, "callboard_threads_bench", beside=True) as module:
        yield module


def test_every_thread_of_a_busy_runtime_has_its_group(
    threads_bench: ModuleType, tmp_path: Path
) -> None:
    gate, entered = threading.Event(), threading.Event()
    with Runtime(store=tmp_path / "runs.db") as runtime:
        workflow = runtime.register(held_workflow(Counter(), gate, entered))
        run = workflow.create_run()
        run.start_async(input_data=Value(value="x"))
        try:
            assert entered.wait(10), "the held step never started"
            groups = {threads_bench._group(thread.name) for thread in threading.enumerate()}
        finally:
            gate.set()
        assert run.wait(timeout=10).status == "success"
    assert {"caller", "dispatcher", "store writer"} <= groups
    # The step that waits on the gate holds a step thread: the pool is seen too.
    assert "step pool" in groups


def test_a_quick_run_prints_a_row_per_workload() -> None:
    printed = quick_script_stdout(THREADS, "--store", "memory")
    rows = [line.split("|") for line in printed.splitlines() if line.count("|") > 5]
    named = {(row[0].strip(), row[1].strip()) for row in rows}
    assert {("W2", "memory"), ("W5", "memory")} <= named
