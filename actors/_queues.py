"""The queues of a runtime whose store keeps runs in memory: who waits, who may start.

On a shared store (SQLite, PostgreSQL) a queue's limits are kept by the store
and enforced in its claims, across every worker. A store in memory has one
process, and its supervisor enforces them here instead: a run with a queue
waits in its bucket (queue and key) until :meth:`QueueGate.pop_ready` admits
it, and gives its slot back (:meth:`QueueGate.release`) when it ends, sleeps
or suspends. The gate is used from the supervisor's thread, but
:meth:`QueueGate.reserve` (``max_queued``) from the starting thread: one lock
guards it all.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from runtime._errors import QueueFullError
from runtime._queue import Admission, Bucket, QueueLimits, restart_refused

__all__ = ["QueueGate"]

T = TypeVar("T")


class QueueGate(Generic[T]):
    """Runs waiting in queues, admitted by rank as their queue's limits allow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, QueueLimits] = {}
        # Two lines per bucket: runs yet to start for the first time (or restarted), which
        # the rate limit may hold back, and runs woken, resumed or recovered, which it never
        # holds. In one line, the second kind waited behind a first start the rate held.
        self._buckets: dict[tuple[Bucket, bool], list[tuple[float, int, str, bool, T]]] = {}
        self._order = itertools.count()
        self._waiting: dict[str, int] = {}  # per queue: runs waiting (or admitted to start)
        self._running: dict[Bucket, int] = {}
        # First starts within the window, per bucket: when, and which run (see forget).
        # (In the order of the starts, which only go forward: the oldest goes first, and a
        # deleted run's is taken out at once, wherever it is.)
        self._starts: dict[Bucket, OrderedDict[str, float]] = {}
        self._start_in: dict[str, Bucket] = {}  # the bucket of each run's start kept there

    def define(self, limits: QueueLimits) -> None:
        """Keep a queue's limits (the latest definition wins)."""
        with self._lock:
            self._limits[limits.name] = limits

    def limits(self, name: str) -> QueueLimits | None:
        """The limits last seen for the queue ``name``, if any."""
        with self._lock:
            return self._limits.get(name)

    def reserve(self, limits: QueueLimits, run_id: str, *, restart: bool = False) -> None:
        """Take a waiting place for a run about to start (or, ``restart``, restart) in this queue.

        Raises:
            QueueFullError: if ``max_queued`` runs wait in it already.
        """
        with self._lock:
            self._limits[limits.name] = limits
            waiting = self._waiting.get(limits.name, 0)
            if limits.max_queued is not None and waiting >= limits.max_queued:
                if restart:
                    raise restart_refused(limits.name, limits.max_queued, run_id)
                raise QueueFullError(
                    f"queue {limits.name!r} has {limits.max_queued} runs waiting (max_queued); "
                    f"run {run_id!r} was not recorded: start it again once the queue has drained",
                    queue=limits.name,
                    limit=limits.max_queued,
                    run_id=run_id,
                )
            self._waiting[limits.name] = waiting + 1

    def unreserve(self, queue: str) -> None:
        """Give back a place taken by :meth:`reserve` for a run that was not recorded."""
        with self._lock:
            self._waiting[queue] = self._waiting.get(queue, 1) - 1

    def offer(
        self,
        run_id: str,
        bucket: Bucket,
        rank: float,
        item: T,
        *,
        reserved: bool,
        first: bool,
    ) -> None:
        """Let a run wait in its bucket; ``reserved``: it holds a place since its start."""
        with self._lock:
            if not reserved:
                self._waiting[bucket[0]] = self._waiting.get(bucket[0], 0) + 1
            heap = self._buckets.setdefault((bucket, first), [])
            heapq.heappush(heap, (rank, next(self._order), run_id, first, item))

    def pop_ready(self, now: float) -> tuple[str, Bucket, T] | None:
        """The best-ranked run its queue's limits let start now, counted as running.

        ``now`` is a reading of the monotonic clock (:func:`runtime._clock.monotonic`):
        rate windows are durations, which a jump of the wall clock must not stretch.
        """
        with self._lock:
            admission = Admission(self._limits, self._running, self._started(now))
            best: tuple[float, int, tuple[Bucket, bool]] | None = None
            for line, heap in self._buckets.items():
                rank, order = heap[0][:2]
                if best is not None and (rank, order) >= best[:2]:
                    continue
                bucket, first = line
                if admission.allows(bucket[0], bucket[1], first=first):
                    best = (rank, order, line)
            if best is None:
                return None
            line = best[2]
            bucket, first = line
            heap = self._buckets[line]
            _, _, run_id, _, item = heapq.heappop(heap)
            if not heap:
                del self._buckets[line]
            self._waiting[bucket[0]] = self._waiting.get(bucket[0], 1) - 1
            self._running[bucket] = self._running.get(bucket, 0) + 1
            limits = self._limits.get(bucket[0])
            if first and limits is not None and limits.rate_count is not None:
                starts = self._starts.setdefault(bucket, OrderedDict())
                # A restart's start takes the place of the run's earlier one: a run counts
                # once in a window, at its latest start (as a store counts its runs' rows).
                starts.pop(run_id, None)
                starts[run_id] = now
                self._start_in[run_id] = bucket
            return run_id, bucket, item

    def release(self, bucket: Bucket) -> None:
        """A run of this bucket left execution (ended, slept, suspended): its slot is free."""
        with self._lock:
            count = self._running.get(bucket, 0) - 1
            if count > 0:
                self._running[bucket] = count
            else:
                self._running.pop(bucket, None)

    def remove(self, run_id: str) -> T | None:
        """Take a waiting run out (cancelled); ``None`` if it does not wait here."""
        with self._lock:
            for line, heap in self._buckets.items():
                for index, entry in enumerate(heap):
                    if entry[2] == run_id:
                        heap.pop(index)
                        heapq.heapify(heap)
                        if not heap:
                            del self._buckets[line]
                        queue = line[0][0]
                        self._waiting[queue] = self._waiting.get(queue, 1) - 1
                        return entry[4]
        return None

    def __contains__(self, run_id: object) -> bool:
        """Whether ``run_id`` waits here."""
        with self._lock:
            return any(entry[2] == run_id for heap in self._buckets.values() for entry in heap)

    def drain(self) -> list[T]:
        """Take every waiting run out (the runtime stops)."""
        with self._lock:
            items = [entry[4] for heap in self._buckets.values() for entry in heap]
            for (bucket, _), heap in self._buckets.items():
                self._waiting[bucket[0]] = self._waiting.get(bucket[0], len(heap)) - len(heap)
            self._buckets.clear()
            return items

    def next_opening(self, now: float) -> float | None:
        """When a rate window next frees a start, if runs wait in rate-limited queues.

        On the clock ``now`` was read from, as for :meth:`pop_ready`.
        """
        with self._lock:
            soonest: float | None = None
            for bucket, first in self._buckets:
                if not first:
                    continue  # a rate window holds back first starts only
                limits = self._limits.get(bucket[0])
                starts = self._starts.get(bucket)
                if limits is None or limits.rate_period is None or not starts:
                    continue
                opening = next(iter(starts.values())) + limits.rate_period
                if opening > now and (soonest is None or opening < soonest):
                    soonest = opening
            return soonest

    def forget(self, run_id: str) -> bool:
        """Take a deleted run's first start out of its bucket's rate window.

        On SQLite and PostgreSQL the window is counted from the runs stored, so a
        run deleted by hand no longer counts in it; in memory the gate counts it,
        and is told of the delete through this.

        Returns:
            Whether the run's start still counted: a run the window held may start now.
        """
        with self._lock:
            # Told of every run deleted, counted in a window or not: found by its id.
            bucket = self._start_in.pop(run_id, None)
            if bucket is None:
                return False
            del self._starts[bucket][run_id]
            return True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(heap) for heap in self._buckets.values())

    def _started(self, now: float) -> dict[Bucket, int]:
        """First starts within each bucket's window (older ones are forgotten here)."""
        counts: dict[Bucket, int] = {}
        for bucket, starts in list(self._starts.items()):
            limits = self._limits.get(bucket[0])
            period = limits.rate_period if limits is not None else None
            while starts:
                gone = next(iter(starts))
                if period is not None and starts[gone] > now - period:
                    break
                del starts[gone]
                if self._start_in.get(gone) == bucket:
                    del self._start_in[gone]
            if starts:
                counts[bucket] = len(starts)
            else:
                del self._starts[bucket]
        return counts
