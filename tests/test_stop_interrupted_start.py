"""A Ctrl-C as ``stop()`` starts its thread: the stop happens once, by that call or the next."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow
from tests._support import BLOCK_LIMIT, wait_for_no_callboard_threads


class N(BaseModel):
    n: int


def _inc(ctx: Any) -> N:
    return N(n=ctx.input_data.n + 1)


WORKFLOW = (
    create_workflow(id="interrupted_stop_start", input_schema=N, output_schema=N)
    .then(create_step(id="inc", input_schema=N, output_schema=N, execute=_inc))
    .commit()
)


def _interrupt_stop_thread(monkeypatch: pytest.MonkeyPatch, *, started: bool) -> list[str]:
    """Raise ``KeyboardInterrupt`` once from the stop thread's ``start()``.

    ``started``: after the thread has started (the signal landed as ``start()``
    returned), or before (it landed as ``start()`` was entered: no thread).
    """
    real = threading.Thread.start
    tripped: list[str] = []

    def start(thread: threading.Thread) -> None:
        if thread.name != "callboard-stop" or tripped:
            real(thread)
            return
        tripped.append(thread.name)
        if started:
            real(thread)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start)
    return tripped


def _stop_within(rt: Runtime, limit: float) -> bool:
    """``rt.stop()`` on a thread of its own; whether it returned within ``limit`` seconds."""
    thread = threading.Thread(target=rt.stop, name="test-later-stop", daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive()


@pytest.mark.parametrize("started", [False, True], ids=["before-the-thread", "after-it"])
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_ctrl_c_as_the_stop_starts_its_thread_leaves_a_later_stop_to_finish_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, started: bool, store: str
) -> None:
    rt = Runtime(store="memory" if store == "memory" else str(tmp_path / "runs.db")).start()
    wf = rt.register(WORKFLOW)
    result = wf.create_run().start(input_data={"n": 1}, timeout=BLOCK_LIMIT)
    assert result.status == "success"
    tripped = _interrupt_stop_thread(monkeypatch, started=started)

    with pytest.raises(KeyboardInterrupt):
        rt.stop()
    assert tripped
    monkeypatch.undo()

    # Before: with no stop thread begun, the runtime read "stopping" for good, and every
    # later stop() waited for that thread without end.
    assert _stop_within(rt, BLOCK_LIMIT), "the later stop() hung"
    assert not rt.is_running
    assert wait_for_no_callboard_threads() == []
    late = wf.get_workflow_run_execution_result(result.run_id)
    assert late is not None and late.status == "success"
