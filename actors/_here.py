"""The runs a worker on a shared store still has in this process, for its claims to leave."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

from runtime._tracing import emit

__all__ = ["RunsHere", "say_slot_held"]


class RunsHere:
    """The runs with an actor here, or a step body still running here, read from any thread.

    On a shared store, a worker that stalled past its lease (a long pause, a
    SIGSTOP) is reaped, and its runs go back to the queue while their actors
    here may still be in a step. Its claimer must not take such a run back
    beside what is left of it here: two actors would run its steps at once.
    So the claimer leaves out of its claims the runs named here that the
    store no longer holds, until everything of them here has let go: the
    supervisor's actor (or its start waiting for room), and each step body
    still running, which outlives its actor when the actor was stopped (its
    writes fenced off, a cancel) or gave up on it (a timeout).

    A step body still running after its run let go of it (cancelled, timed out,
    the run ended) executes in its run's queue until it returns, whatever the
    run's status: the claimer names such runs to the store's admission
    (:meth:`bodies`), and a store in memory keeps their queue slots until then
    (:meth:`has_body`); :meth:`left_out` and ``on_free`` say when they return.
    On a store in memory only the bodies are counted (no claims, no actors here).
    """

    __slots__ = ("_bodies", "_ids", "_left_out", "_lock", "on_free")

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._bodies: dict[str, int] = {}
        self._left_out: set[str] = set()  # runs a claim left out for what is here of them
        self._lock = threading.Lock()
        self.on_free: Callable[[], None] | None = None
        """Called (outside the lock) once nothing is left here of a run a claim left out."""

    def add(self, run_id: str) -> None:
        """The supervisor has an actor of the run (or its start waits for room)."""
        with self._lock:
            self._ids.add(run_id)

    def discard(self, *run_ids: str) -> None:
        """The supervisor's actor of these runs is gone (or their starts are)."""
        with self._lock:
            self._ids.difference_update(run_ids)
            freed = self._freed(run_ids)
        if freed:
            self._tell_free()

    def body_began(self, run_id: str) -> None:
        """User code of the run (a step body, a condition, a map) began on a thread or loop."""
        with self._lock:
            self._bodies[run_id] = self._bodies.get(run_id, 0) + 1

    def body_ended(self, run_id: str) -> None:
        """User code counted by :meth:`body_began` returned (or raised)."""
        with self._lock:
            left = self._bodies.get(run_id, 0) - 1
            if left > 0:
                self._bodies[run_id] = left
                return
            self._bodies.pop(run_id, None)
            freed = self._freed((run_id,))
        if freed:
            self._tell_free()

    def left_out(self, run_ids: Collection[str]) -> None:
        """A claim left these runs out: once nothing of one is left here, say so (on_free).

        One that let go meanwhile (between :meth:`among` and this) is said free at once.
        """
        if not run_ids:
            return
        with self._lock:
            here = [run_id for run_id in run_ids if run_id in self._ids or run_id in self._bodies]
            self._left_out.update(here)
            gone = len(here) < len(run_ids)
        if gone:
            self._tell_free()

    def _freed(self, run_ids: Collection[str]) -> bool:
        """Under the lock: whether one of these runs, left out by a claim, is gone from here."""
        if not self._left_out:
            return False
        freed = False
        for run_id in run_ids:
            if run_id in self._left_out and run_id not in self._ids and run_id not in self._bodies:
                self._left_out.discard(run_id)
                freed = True
        return freed

    def _tell_free(self) -> None:
        on_free = self.on_free
        if on_free is not None:
            on_free()  # the run waits in the store: claim it now, not at the next poll

    def has_body(self, run_id: str) -> bool:
        """Whether user code of the run runs here now."""
        with self._lock:
            return run_id in self._bodies

    def bodies(self) -> list[str]:
        """The runs whose user code runs here now."""
        with self._lock:
            return list(self._bodies)

    def __call__(self) -> list[str]:
        """The runs, now."""
        with self._lock:
            return list(self._ids.union(self._bodies))

    def among(self, run_ids: Collection[str]) -> list[str]:
        """Those of ``run_ids`` that are here now (in the time of ``run_ids``, not of all here)."""
        if not run_ids:
            return []
        with self._lock:
            ids, bodies = self._ids, self._bodies
            return [run_id for run_id in run_ids if run_id in ids or run_id in bodies]


def say_slot_held(run_id: str, queue: str, key: str | None, status: str | None = None) -> None:
    """Warn that a step body its run let go of holds a slot of the run's queue.

    Said once per run, where the slot is kept (the claimer, or a store in memory's
    supervisor): a queue that does not move says why.
    """
    emit(
        logging.WARNING,
        "queue_slot_held_by_abandoned_step",
        run_id=run_id,
        queue=queue,
        queue_key=key,
        status=status,
        hint="a step body that ignored its abort signal (its run was cancelled, or it "
        "timed out) runs on; its run counts in its queue until the body returns",
    )
