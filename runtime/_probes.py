"""Where a test kit looks into the actors: two slots, ``None`` outside tests.

Each actor checks :data:`observer` before it handles a message, the step
actor checks :data:`step_body` before it calls a step's body, and a step that
waits on its abort signal or another run alone enters :data:`parked`. Outside a
harness (:mod:`runtime.testing`) both are ``None``, and the check is all
they cost.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["observer", "parked", "step_body"]

observer: Callable[[Any, Any], bool] | None = None
"""Called as ``observer(actor, message)`` on the actor's thread before it handles a
message. ``False`` drops the message unhandled; an exception fails the handler (a
run actor's failure fails its run)."""

step_body: Callable[[Any, Any], Any] | None = None
"""Called as ``step_body(call, ctx)`` instead of ``call.step.execute(ctx)``."""

parked: Callable[[Callable[[], bool]], AbstractContextManager[None]] | None = None
"""Entered as ``parked(over)`` while a step waits, with no timeout, on its abort signal, or
for another run to end: it waits on callboard alone, so a virtual clock may jump over the
wait. ``over()`` tells whether what it waits for has come: from then on the step counts as
executing again, though its thread may not have woken yet."""
