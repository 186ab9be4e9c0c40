"""The store watcher: what other processes do to runs that somebody here waits on.

On a shared store a run may be driven by another process, or another host.
Waiting for it, or watching its events, cannot rely on this process's actors:
the watcher reads the seq of the runs somebody here waits on from the store,
every :data:`WATCH_INTERVAL` seconds or at once when the store hints that one
changed, loads the records of those whose seq moved, and hands each newer
record to the registry, which wakes the waiters
and tells the watchers as it does for the runs its own actors drive. Runs this
process holds are skipped: its own actors report them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from runtime._errors import StoreError
from runtime._stores.base import SharedStore, SnapshotRecord
from runtime._tracing import FailingStreak, emit

__all__ = ["DELETED_LOOK", "ERROR_PAUSE", "WATCH_INTERVAL", "StoreWatcher"]

WATCH_INTERVAL: Final = 0.1
"""Seconds between two reads of the runs waited on that other processes drive."""

DELETED_LOOK: Final = 2.0
"""Seconds between two looks (see :meth:`StoreWatcher.look_for_deleted`) at whether the
runs the registry keeps event logs of are still stored: another process's delete or
prune tells this one nothing. Real seconds, not a test kit's virtual ones."""

ERROR_PAUSE: Final = 1.0
"""Seconds before the next read after one that failed (the store is down, say)."""

_GONE: Final = -2
"""The seq noted for a run whose record was deleted: it is not reported again."""


class StoreWatcher:
    """A thread that polls a shared store for runs waited on here and driven elsewhere.

    Args:
        store: The shared store.
        deliver: Called on the watcher's thread with ``(run_id, record)`` for
            each run whose record is newer than the last one seen, and with
            ``(run_id, None)`` once for a run whose record is gone.
        interval: Seconds between two reads.
        look: Called on the watcher's thread every ``look_every`` seconds between
            :meth:`look_for_deleted` and :meth:`stop_looking`.
        look_every: Seconds between two calls of ``look``.
    """

    def __init__(
        self,
        store: SharedStore,
        deliver: Callable[[str, SnapshotRecord | None], None],
        interval: float = WATCH_INTERVAL,
        *,
        look: Callable[[], None] | None = None,
        look_every: float = DELETED_LOOK,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._interval = interval
        self._look = look
        self._look_every = look_every
        self._looking = False
        self._looked = 0.0  # when look was last called (monotonic seconds)
        self._runs: dict[str, int] = {}  # run id -> the newest seq seen
        self._poked: set[str] = set()  # runs hinted at since the last read
        self._sweep = False  # a hint named no run: read them all at once
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, run_id: str, seq: int) -> None:
        """Watch a run whose newest record seen here has ``seq`` (``-1``: none yet)."""
        with self._lock:
            if self._stopped:
                return
            if self._runs.get(run_id, -1) < seq or run_id not in self._runs:
                self._runs[run_id] = seq
            self._start()

    def _start(self) -> None:
        """Start the thread, if it has not started (with the lock held)."""
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="callboard-store-watcher", daemon=True)
            thread.start()  # refused (no thread to be had): the next call tries again
            self._thread = thread

    def look_for_deleted(self) -> None:
        """Call ``look`` every ``look_every`` seconds, from one ``look_every`` on.

        For the registry's event logs of ended runs, which nobody here waits on
        (see :data:`DELETED_LOOK`). Looking already, this changes nothing.
        """
        if self._looking or self._look is None:
            return  # nearly always: a bool, no lock
        with self._lock:
            if self._stopped:
                return
            self._looking = True
            self._looked = time.monotonic()
            self._start()

    def stop_looking(self) -> None:
        """Call ``look`` no more (the registry keeps no log now), until the next look is asked."""
        self._looking = False

    def remove(self, run_id: str) -> None:
        """Stop watching a run (nobody here waits on it any more)."""
        with self._lock:
            self._runs.pop(run_id, None)

    def poke(self, _kind: str = "", run_id: str = "") -> None:
        """Read now: a run changed (a hint from the store); ``""``: any of them may have.

        A hint that names a run has only that run read, between the reads of them all
        every interval: a steady stream of hints (runs ending elsewhere, a batch every
        50 ms) would otherwise read every run waited on at each.
        """
        if run_id and run_id not in self._runs:
            return  # most hints: runs nobody here waits on (a dict lookup, no lock)
        with self._lock:
            if run_id:
                self._poked.add(run_id)
            else:
                self._sweep = True
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop the thread (waiting up to ``timeout`` seconds)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        swept = time.monotonic()  # when every run was last read (none is watched before)
        # Said when reads begin to fail and when one succeeds: a read a hint brings within
        # the pause fails too (a process out of files, a database restarting).
        streak = FailingStreak(
            "store_watch_failed",
            "store_watch_recovered",
            hint=f"reads go on, every {ERROR_PAUSE:g} s and at each hint; the log says when "
            "one succeeds",
        )
        while True:
            self._wake.wait(max(0.0, swept + self._interval - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                if self._stopped:
                    return
                due = self._sweep or now - swept >= self._interval
                if due:
                    watched = dict(self._runs)
                else:  # woken by hints: only the runs they named
                    watched = {
                        run_id: self._runs[run_id] for run_id in self._poked if run_id in self._runs
                    }
                self._poked.clear()
                self._sweep = False
            if due:
                swept = now
            look = self._look
            if look is not None and self._looking and now - self._looked >= self._look_every:
                self._looked = now
                self._call_look(look)
            ids = [run_id for run_id in watched if not self._store.holds(run_id)]
            if not ids:
                continue
            try:
                # A run's seq first, a few bytes each: most runs waited on have not
                # changed since the last read, and their records may be large.
                seqs = self._store.seqs(ids)
                changed = [run_id for run_id in ids if seqs.get(run_id, _GONE) > watched[run_id]]
                loaded = self._store.load_many(changed) if changed else []
            except Exception as exc:  # a StoreError, or a fault here (an allocation that failed)
                streak.failure(str(exc) if isinstance(exc, StoreError) else repr(exc))
                # Every run is read again once the pause is over (a hint may come sooner).
                swept = time.monotonic() + ERROR_PAUSE - self._interval
                continue
            streak.success()
            records = {record.run_id: record for record in loaded}
            gone = [run_id for run_id in ids if run_id not in seqs]
            gone += [run_id for run_id in changed if run_id not in records]  # deleted since
            for run_id in gone:
                if watched[run_id] != _GONE:  # never recorded, or deleted
                    self._note(run_id, _GONE)
                    self._call(run_id, None)
            for run_id, record in records.items():
                if record.seq > watched[run_id]:
                    self._note(run_id, record.seq)
                    self._call(run_id, record)

    def _note(self, run_id: str, seq: int) -> None:
        with self._lock:
            if run_id in self._runs:
                self._runs[run_id] = seq

    @staticmethod
    def _call_look(look: Callable[[], None]) -> None:
        try:
            look()
        except Exception:
            emit(logging.ERROR, "store_watch_look_failed", exc_info=True)

    def _call(self, run_id: str, record: SnapshotRecord | None) -> None:
        try:
            self._deliver(run_id, record)
        except Exception:
            emit(logging.ERROR, "store_watch_delivery_failed", run_id=run_id, exc_info=True)
