"""Shared fixtures: a started runtime that is stopped, and checked for leftover threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from actors.system import ActorSystem
from runtime import Runtime

# Threads callboard starts: pykka names threading actors after their class.
CALLBOARD_THREAD_PREFIXES = (
    "callboard-",
    "StepActor-",
    "RegistryActor-",
)


def callboard_threads() -> list[threading.Thread]:
    """The live threads that belong to callboard's machinery."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(CALLBOARD_THREAD_PREFIXES)
    ]


def wait_for_no_callboard_threads(timeout: float = 5.0) -> list[threading.Thread]:
    """Wait until callboard's threads have ended; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := callboard_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """A started runtime; stopped afterwards, and no actor thread may outlive it."""
    rt = Runtime().start()
    try:
        yield rt
    finally:
        rt.stop(timeout=5)
    left = wait_for_no_callboard_threads()
    assert not left, f"threads left after Runtime.stop(): {[t.name for t in left]}"


@pytest.fixture
def default_runtime_stopped_after() -> Iterator[None]:
    """For tests that use the process-wide default runtime: stop it afterwards."""
    yield
    from runtime import _runtime as engine

    if engine._default is not None:
        engine._default.stop(timeout=5)
    assert not wait_for_no_callboard_threads()


def actor_system(rt: Runtime) -> ActorSystem:
    """The actor system of a started runtime, for tests that break its actors on purpose."""
    system = rt._host.system
    assert system is not None, "the runtime is not started"
    return system
