"""The pruner: one thread that applies a runtime's retention policy to its store.

Every ``interval`` seconds it asks the store to delete the runs that ended
longer than ``max_age`` ago, then all but the newest ``max_runs`` ended runs.
The store never deletes a run that has not ended, so a pass cannot race a run
in progress. A pass that fails is logged, and the next one tries again. A pass
that deleted runs says so (``on_pruned``): the registry forgets their event logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from runtime import _clock
from runtime._options import FOREVER, RetentionPolicy
from runtime._stores.base import SnapshotStore
from runtime._tracing import emit

__all__ = ["Pruner"]


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
        # Ten years at most: a longer wait overflows threading's clock, and the thread died of
        # it (an interval that long prunes nothing in the process's life either way).
        while not self._stopped.wait(min(self._policy.interval, FOREVER)):
            try:
                deleted = self.prune_now()
            except Exception as exc:  # a store fault: the next pass tries again
                emit(logging.WARNING, "prune_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if deleted:
                emit(logging.DEBUG, "runs_pruned", count=deleted)
