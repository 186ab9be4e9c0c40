"""``RunStream``: a run's events as typed stream events, for UIs (see ``run.stream()``)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

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

__all__ = ["RunStream", "stream_event"]

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

    def _take(self, event: RunEvent) -> RunStreamEvent | None:
        converted = stream_event(event, self._status)
        if event.type == "status":
            self._status = event.status
        if isinstance(converted, RunFinishEvent) and not self._watch.queued:
            # The run settles here. (With events queued after it, this is a settle of
            # the past, replayed: the run was resumed or restarted since.)
            self.close()
        return converted

    def __iter__(self) -> RunStream:
        return self

    def __next__(self) -> RunStreamEvent:
        while not self._done:
            try:
                event = next(self._watch)
            except StopIteration:
                self._done = True
                break
            converted = self._take(event)
            if converted is not None:
                return converted
        raise StopIteration

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> RunStreamEvent:
        while not self._done:
            try:
                event = await self._watch.__anext__()
            except StopAsyncIteration:
                self._done = True
                break
            converted = self._take(event)
            if converted is not None:
                return converted
        raise StopAsyncIteration
