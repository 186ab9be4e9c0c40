"""``RunStream``: a run's events as typed stream events, for UIs (see ``run.stream()``)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Final

from runtime._model import (
    TERMINAL_STATUSES,
    RunEvent,
    RunFinishEvent,
    RunStartEvent,
    RunStatus,
    RunStreamEvent,
    StepFinishEvent,
    StepOutputEvent,
    StepStartEvent,
    StepStatus,
    StepSuspendedEvent,
    StepWaitingEvent,
)

if TYPE_CHECKING:
    from runtime._run import RunWatch

__all__ = ["PENDING_LOOK", "RunStream", "stream_event"]

PENDING_LOOK: Final = 0.25
"""Seconds between two looks at a run a stream holds a suspension of (see ``RunStream._hold``)."""

_STARTED = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})
"""Statuses after which a ``running`` status is no new start (a wake is not one)."""


def stream_event(event: RunEvent, last_status: str) -> RunStreamEvent | None:
    """The stream event a watch event makes, or ``None`` for one a stream leaves out.

    Args:
        event: The registry's event.
        last_status: The run's status in the last ``status`` event the stream
            saw (``""``: none yet).
    """
    base = {"run_id": event.run_id, "seq": event.seq, "at": event.at}
    step = event.step
    match event.type:
        case "status":
            status = event.status
            if status in (RunStatus.PENDING, RunStatus.RUNNING):
                if last_status in _STARTED:
                    return None  # pending -> running, or the wake of a sleeping run
                return RunStartEvent(status=status, **base)
            if status in TERMINAL_STATUSES or status == RunStatus.SUSPENDED:
                return RunFinishEvent(status=status, result=event.result, error=event.error, **base)
            return None  # waiting: its sleep step says so
        case "step_started" | "step_retrying" if event.path is not None and step is not None:
            if step.status == StepStatus.WAITING:
                return StepWaitingEvent(path=event.path, **base)
            return StepStartEvent(
                path=event.path, payload=step.payload, attempt=step.attempts, **base
            )
        case "step_waiting" if event.path is not None:
            return StepWaitingEvent(path=event.path, **base)
        case "step_finished" if event.path is not None and step is not None:
            if step.status == StepStatus.SUSPENDED:
                return StepSuspendedEvent(path=event.path, payload=step.suspend_payload, **base)
            return StepFinishEvent(
                path=event.path, status=step.status, output=step.output, error=step.error, **base
            )
        case "step_output" if event.path is not None:
            # The most frequent event, from fields already checked: built without validation.
            return StepOutputEvent.model_construct(
                run_id=event.run_id,
                seq=event.seq,
                at=event.at,
                path=event.path,
                data=event.data,
                item=event.item,
            )
    return None


class RunStream:
    """The typed events of one run until it settles, for ``for`` and ``async for``.

    Made by :meth:`Run.stream` (or :meth:`Run.resume_stream`) over the same
    registry events as :meth:`Run.watch`. Each event is a
    :data:`RunStreamEvent`: ``run_start``, ``step_start``, ``step_output``
    (what a step wrote with ``ctx.writer.write``), ``step_waiting``,
    ``step_suspended``, ``step_finish``, and last ``run_finish``, after which
    the iteration ends (for a run that suspended too: ``resume_stream`` goes
    on). A replay goes past the ``run_finish`` of a settle the run has moved on
    from (a suspension it was resumed from, an end it was restarted from): it
    ends where the run stands now. Every event has its ``seq``:
    ``run.stream(from_seq=event.seq)`` replays what came after it, for a client
    that reconnects.

    Close it when you stop reading early (``close()``, or ``with`` / ``async with``).
    """

    def __init__(self, watch: RunWatch) -> None:
        self._watch = watch
        self._status = ""
        self._done = False
        # A suspension the run goes on from, held back while a resume request of it
        # waits (see _hold), and since when (monotonic seconds).
        self._held: RunFinishEvent | None = None
        self._held_since = 0.0

    @property
    def run_id(self) -> str:
        """The run."""
        return self._watch.run_id

    @property
    def last_seq(self) -> int | None:
        """The number of the last event read, to reconnect from (``None``: none yet)."""
        return self._watch.last_seq

    def close(self) -> None:
        """Stop streaming; the runtime forgets the subscription. Idempotent."""
        self._done = True
        self._watch.close()

    def __enter__(self) -> RunStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _take(self, event: RunEvent) -> tuple[RunStreamEvent | None, bool]:
        """The stream event ``event`` makes, and whether it is a suspension to look behind.

        A ``run_finish`` of a suspension with no event queued after it is where the
        stream ends, unless the run goes on (:meth:`_hold`).
        """
        converted = stream_event(event, self._status)
        look = (
            isinstance(converted, RunFinishEvent)
            and converted.status == RunStatus.SUSPENDED
            and not self._watch.queued
        )
        return converted, look

    def _told(
        self,
        event: RunEvent,
        converted: RunStreamEvent | None,
        *,
        goes_on: bool = False,
        came: float = 0.0,
    ) -> RunStreamEvent | None:
        """What the stream yields for ``event`` (``None``: nothing); it ends where the run settles.

        With ``goes_on`` the event is a suspension the run does not settle at (see
        :meth:`_hold`): it is held back from ``came`` (monotonic seconds: when it was
        taken, before the look at the run), and the status before it stays the
        stream's, so that the run's going on is no new start.
        """
        if goes_on:
            assert isinstance(converted, RunFinishEvent)
            self._held = converted
            self._held_since = came
            return None
        self._held = None
        if event.type == "status":
            self._status = event.status
        if isinstance(converted, RunFinishEvent) and not self._watch.queued:
            # The run settles here. (With events queued after it, this is a settle of
            # the past, replayed: the run was resumed or restarted since.)
            self.close()
        return converted

    def _hold(self) -> float | None:
        """Seconds to wait for the next event while a suspension is held back; ``None``: none is.

        A run told suspended while a resume request of it waits in a shared store
        (recorded from another process while it ran on, and not yet carried out)
        goes on once the worker that drives it takes the request: the stream
        waits for that, as ``wait()`` does, rather than end as if the run had
        settled. It looks again every :data:`PENDING_LOOK` seconds: a request the
        worker refuses is dropped, and the run stays suspended (the held event is
        then told, and ends the stream).

        Raises:
            RunTimeoutError: if the watch's ``timeout`` passed with no event.
        """
        if self._held is None:
            return None
        timeout = self._watch._timeout
        if timeout is None:
            return PENDING_LOOK
        left = self._held_since + timeout - time.monotonic()
        if left <= 0:
            raise self._watch._timed_out()
        return min(left, PENDING_LOOK)

    def _left(self, since: float) -> float | None:
        """Seconds left of the timeout counted from ``since`` (monotonic); ``None``: no timeout."""
        timeout = self._watch._timeout
        return None if timeout is None else since + timeout - time.monotonic()

    def _again(self) -> None:
        """At the start of a next: a suspension still held back is waited on for a timeout anew.

        One is held still after a ``RunTimeoutError``: the next call waits its own
        timeout, as a watch's does, rather than raise at once for ever.
        """
        if self._held is not None:
            self._held_since = time.monotonic()

    def _release(self) -> RunFinishEvent:
        """The suspension held back, told after all: the run settled there. The stream ends."""
        held = self._held
        assert held is not None
        self._held = None
        self.close()
        return held

    def __iter__(self) -> RunStream:
        return self

    def __next__(self) -> RunStreamEvent:
        watch = self._watch
        self._again()
        while not self._done:
            wait = self._hold()
            try:
                event = next(watch) if wait is None else watch._next_within(wait)
            except StopIteration:
                self._done = True
                break
            if event is None:  # nothing came while a suspension is held: does the run go on?
                if not watch._goes_on():
                    return self._release()
                continue
            converted, look = self._take(event)
            came = time.monotonic()
            goes_on = look and watch._goes_on()
            converted = self._told(event, converted, goes_on=goes_on, came=came)
            if converted is not None:
                return converted
        raise StopIteration

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> RunStreamEvent:
        watch = self._watch
        self._again()
        while not self._done:
            wait = self._hold()
            try:
                event = await (watch.__anext__() if wait is None else watch._anext_within(wait))
            except StopAsyncIteration:
                self._done = True
                break
            # A look waits for one of the runtime's few call threads, which other calls
            # may all hold: it is given up on at the timeout, as wait_async's read is.
            if event is None:
                held = await watch._agoes_on(self._left(self._held_since))
                if held is None:
                    raise watch._look_timed_out()
                if not held:
                    return self._release()
                continue
            converted, look = self._take(event)
            came = time.monotonic()
            goes_on = look and await watch._agoes_on(self._left(came))
            if goes_on is None:  # held back until a look can tell whether the run goes on
                self._told(event, converted, goes_on=True, came=came)
                raise watch._look_timed_out()
            converted = self._told(event, converted, goes_on=goes_on, came=came)
            if converted is not None:
                return converted
        raise StopAsyncIteration
