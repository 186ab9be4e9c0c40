"""The window of a run's step writes in flight: a step that outpaces the registry waits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors import run as run_module
from actors.messages import StepWrote


class SlowRegistry:
    """Takes messages and handles none of them until told to."""

    def __init__(self) -> None:
        self.messages: list[StepWrote] = []

    def tell(self, message: Any) -> None:
        self.messages.append(message)

    def handle_all(self) -> None:
        for message in self.messages:
            if message.taken is not None:
                message.taken()


def test_writes_past_the_window_wait_for_the_registry_then_go_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "WRITE_WINDOW", 3)
    monkeypatch.setattr(run_module, "WRITE_PATIENCE", 0.2)
    registry = SlowRegistry()
    write = run_module._Writer(registry, "run-1")  # type: ignore[arg-type]

    began = time.monotonic()
    for index in range(3):
        write("step", index, time.time(), None)
    assert time.monotonic() - began < 0.2  # within the window: no wait
    write("step", 3, time.time(), None)  # the window is full: it waits, then goes
    assert time.monotonic() - began >= 0.2
    assert [message.data for message in registry.messages] == [0, 1, 2, 3]
    assert registry.messages[3].taken is None  # it holds no slot

    registry.handle_all()  # the registry catches up: the window has room again
    began = time.monotonic()
    for index in range(4, 7):
        write("step", index, time.time(), 2)
    assert time.monotonic() - began < 0.2
    assert all(message.taken is not None for message in registry.messages[4:])
    assert registry.messages[-1].item == 2
