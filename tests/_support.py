"""What many test modules share, defined once: import it, it is no conftest.

The fixtures built on these live in ``tests/conftest.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository: where the examples, the README and the sources are."""

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
