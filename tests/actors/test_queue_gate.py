"""The queue gate's rate windows: what it keeps of each start, and for how long."""

from __future__ import annotations

from actors._queues import QueueGate
from runtime._queue import QueueLimits


def _gate(count: int, period: float) -> QueueGate[str]:
    gate: QueueGate[str] = QueueGate()
    gate.define(
        QueueLimits(
            name="q",
            concurrency=None,
            key_concurrency=None,
            rate_count=count,
            rate_period=period,
            max_queued=None,
        )
    )
    return gate


def _start(gate: QueueGate[str], run_id: str, now: float) -> str | None:
    gate.offer(run_id, ("q", None), 0.0, run_id, reserved=False, first=True)
    ready = gate.pop_ready(now)
    if ready is None:
        return None
    gate.release(ready[1])
    return ready[0]


def test_a_deleted_runs_start_leaves_the_window_wherever_it_is_and_nothing_else_does() -> None:
    gate = _gate(3, 60.0)
    assert [_start(gate, run_id, 0.0) for run_id in ("a", "b", "c")] == ["a", "b", "c"]
    assert _start(gate, "d", 1.0) is None  # three starts in the window
    assert gate.forget("b")  # from the middle
    assert not gate.forget("b") and not gate.forget("never-started")
    assert gate.pop_ready(2.0) is not None  # d took b's place


def test_starts_that_left_the_window_are_forgotten_by_id_too() -> None:
    # The gate is told of every run deleted, and finds its start by its id: what it
    # keeps by id goes with the starts that leave their window.
    gate = _gate(2, 10.0)
    for index in range(100):
        assert _start(gate, f"r{index}", index * 10.0) == f"r{index}"
    assert len(gate._start_in) <= 2
    assert not gate.forget("r0")
