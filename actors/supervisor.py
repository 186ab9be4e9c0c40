"""The supervisor: a run actor per run, a concurrency limit, and crashes turned into failures."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pykka

from actors._dispatch import DispatchedActor, Dispatcher, tell_safely
from actors.messages import (
    AbortRun,
    AbortRuns,
    NotifyWhenIdle,
    RecordFailure,
    RunCrashed,
    RunEnded,
    StartRun,
)
from actors.run import RunActor
from actors.step import StepPool

__all__ = ["Supervisor"]


class Supervisor(DispatchedActor):
    """Spawns and watches the run actors of one runtime.

    pykka has no death-watch, so each run actor reports to its supervisor: its
    end (:class:`RunEnded`) or its own failure (:class:`RunCrashed`), which the
    supervisor turns into a ``failed`` run instead of a hung one. Runs beyond
    ``max_concurrent_runs`` wait, ``pending``, in the order they were started.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        registry: pykka.ActorRef[Any],
        pool: StepPool,
        max_concurrent_runs: int | None,
        durable: bool = False,
    ) -> None:
        super().__init__(dispatcher)
        self._registry = registry
        self._pool = pool
        self._durable = durable
        self._limit = max_concurrent_runs
        self._runs: dict[str, pykka.ActorRef[Any]] = {}
        self._waiting: deque[StartRun] = deque()
        self._idle_events: list[threading.Event] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartRun):
            if self._limit is not None and len(self._runs) >= self._limit:
                self._waiting.append(message)
            else:
                self._spawn(message)
        elif isinstance(message, RunEnded):
            self._ended(message.run_id)
        elif isinstance(message, RunCrashed):
            tell_safely(self._registry, RecordFailure(run_id=message.run_id, error=message.error))
            self._ended(message.run_id)
        elif isinstance(message, NotifyWhenIdle):
            self._idle_events.append(message.event)
            self._notify_if_idle()
        elif isinstance(message, AbortRuns):
            self._abort(message.error)
        else:
            return super().on_receive(message)
        return None

    def on_stop(self) -> None:
        for event in self._idle_events:
            event.set()

    def _spawn(self, message: StartRun) -> None:
        run_id = message.snapshot["run_id"]
        self._runs[run_id] = RunActor.start(
            self._dispatcher,
            plan=message.plan,
            snapshot=message.snapshot,
            registry=self._registry,
            supervisor=self.actor_ref,
            pool=self._pool,
            durable=self._durable,
        )

    def _ended(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        while self._waiting and (self._limit is None or len(self._runs) < self._limit):
            self._spawn(self._waiting.popleft())
        self._notify_if_idle()

    def _abort(self, error: dict[str, Any] | None) -> None:
        """Fail (or, without an error, halt) every run in progress or waiting."""
        if error is not None:
            for waiting in self._waiting:
                failure = RecordFailure(run_id=waiting.snapshot["run_id"], error=error)
                tell_safely(self._registry, failure)
        self._waiting.clear()  # halted, they stay pending in a durable store
        for run_id, ref in list(self._runs.items()):
            if not tell_safely(ref, AbortRun(error=error)):
                if error is not None:
                    tell_safely(self._registry, RecordFailure(run_id=run_id, error=error))
                self._runs.pop(run_id, None)
        self._notify_if_idle()

    def _notify_if_idle(self) -> None:
        if not self._runs and not self._waiting:
            for event in self._idle_events:
                event.set()
            self._idle_events.clear()
