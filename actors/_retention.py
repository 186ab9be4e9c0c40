"""The pruner: one thread that applies a runtime's retention policy to its store.

Every ``interval`` seconds it asks the store to delete the runs that ended
longer than ``max_age`` ago, then all but the newest ``max_runs`` ended runs.
The store never deletes a run that has not ended, so a pass cannot race a run
in progress. A pass that deleted runs says so (``on_pruned``): the registry
forgets their event logs.

A pass that fails is tried again at the next, no sooner than
:data:`FAILED_PASS_PAUSE` seconds later. While passes fail (a store that
refuses writes fails each at once, for as long as the refusal lasts) the log
says it twice: when they begin to fail (``prune_failed``, with the error) and
when one succeeds again (``prune_recovered``, with how many failed and for how
long), not at every pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from runtime import _clock
from runtime._options import FOREVER, RetentionPolicy
from runtime._stores.base import SnapshotStore
from runtime._tracing import FailingStreak, emit

__all__ = ["FAILED_PASS_PAUSE", "Pruner"]

FAILED_PASS_PAUSE: Final = 1.0
"""The fewest seconds between a failed pass and the next (``interval``, if longer)."""


class Pruner:
    """Prunes ``store`` by ``policy`` on a daemon thread until :meth:`stop`.

    Args:
        store: The store to prune.
        policy: What to keep.
        on_pruned: Called after a pass that deleted runs (which ones, a store's
            prune does not say).
    """

    def __init__(
        self,
        store: SnapshotStore,
        policy: RetentionPolicy,
        *,
        on_pruned: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        self._on_pruned = on_pruned
        self._stopped = threading.Event()
        self.pruned = 0
        """How many runs this pruner deleted so far."""
        self._thread = threading.Thread(target=self._run, name="callboard-pruner", daemon=True)
        self._thread.start()

    def prune_now(self) -> int:
        """One pass, on the caller's thread; how many runs it deleted."""
        policy = self._policy
        ended_before = None if policy.max_age is None else _clock.time() - policy.max_age
        deleted = self._store.prune(ended_before=ended_before, keep=policy.max_runs)
        self.pruned += deleted
        if deleted and self._on_pruned is not None:
            self._on_pruned()
        return deleted

    def stop(self, timeout: float | None = None) -> None:
        """End the thread after the pass under way, if any."""
        self._stopped.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        interval = self._policy.interval
        wait = interval
        streak = FailingStreak(
            "prune_failed",
            "prune_recovered",
            hint="the next passes try again; the log says when one succeeds",
        )
        # Ten years at most: a longer wait overflows threading's clock, and the thread died of
        # it (an interval that long prunes nothing in the process's life either way).
        while not self._stopped.wait(min(wait, FOREVER)):
            try:
                deleted = self.prune_now()
            except Exception as exc:  # a store fault: the next pass tries again
                streak.failure(f"{type(exc).__name__}: {exc}")
                # Not at every tick of a short interval: a store that refuses writes fails
                # each pass at once, and would be asked many times a second.
                wait = max(interval, FAILED_PASS_PAUSE)
                continue
            wait = interval
            streak.success()
            if deleted:
                emit(logging.DEBUG, "runs_pruned", count=deleted)
