"""``Queue``: a named bound on how many runs execute at once, per partition, and per window.

A queue is a value: the workflow builder or a start names it, and the stores
keep its limits (:class:`QueueLimits`) beside the runs, so that every worker
of a shared store enforces the same ones. A run carries its queue's name, its
partition key and its priority in its snapshot (``snapshot["queue"]``) and in
its record, from its start to its end.

Order: a run's place in a queue is its :func:`rank`, its start time less
``priority * PRIORITY_AGING`` seconds, lowest first. So a higher priority goes
first, equal priorities go in the order they started, and a run that has
waited ``PRIORITY_AGING`` seconds counts as one level higher than a run that
starts now: a steady stream of high priority runs cannot starve a low one for
ever.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, NamedTuple

from runtime._errors import QueueFullError, QueueKeyError
from runtime._options import seconds_of

__all__ = [
    "MAX_PRIORITY",
    "PRIORITY_AGING",
    "Admission",
    "Bucket",
    "Queue",
    "QueueLimits",
    "bucket_key",
    "check_key",
    "check_priority",
    "queue_entry",
    "rank",
    "restart_refused",
]

PRIORITY_AGING: Final = 60.0
"""Seconds of waiting that count as one level of priority (see the module's docstring)."""

MAX_PRIORITY: Final = 1_000_000
"""The largest priority, and the negative of the smallest."""

MAX_LIMIT: Final = 2**31 - 1
"""The largest limit (a queue's, a runtime's ``max_concurrent_runs``): PostgreSQL keeps
them as ``integer``, and a limit one store keeps must be one every store keeps."""

_MAX_NAME: Final = 200
"""The most characters of a queue's name or key."""


class QueueLimits(NamedTuple):
    """A queue's limits, as a store keeps them (without the key function).

    Attributes:
        name: The queue's name.
        concurrency: The most runs of the queue executing at once (``None``: no bound).
        key_concurrency: The most runs of one key executing at once.
        rate_count: With ``rate_period``: the most runs that start executing
            per window, per queue (runs without a key) or per key.
        rate_period: The window, in seconds.
        max_queued: The most runs that may wait in the queue.
    """

    name: str
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    max_queued: int | None = None


def _positive(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Queue {field} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Queue {field} must be at least 1, got {value}")
    if value > MAX_LIMIT:
        raise ValueError(f"Queue {field} must be at most {MAX_LIMIT:,}, got {value}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value or len(value) > _MAX_NAME or not value.isprintable():
        raise ValueError(f"{what} must be 1 to {_MAX_NAME} printable characters, got {value!r}")
    return value


@dataclass(frozen=True, eq=True)
class Queue:
    """Limits shared by the runs that name this queue, across every worker of a store.

    Attach one to a workflow (``create_workflow(..., queue=q)``) or give it to
    a start (``run.start_async(..., queue=q, priority=2)``). Limits count runs
    *executing*: a run that waits in the queue, sleeps or is suspended holds
    no slot, and takes one again when it wakes or resumes.

    Args:
        name: The queue's name; two queues of one name are one queue. A
            shared store keeps the limits a process last wrote (at its first
            start through the queue, and when they change): give a queue the
            same limits everywhere.
        concurrency: The most runs of the queue executing at once.
        key: A function of a run's validated input (the input model) that
            names its partition, such as a tenant; a start may give
            ``concurrency_key=`` instead.
        key_concurrency: The most runs of one partition executing at once.
        rate_limit: ``(n, per_seconds)``: at most ``n`` runs start executing
            per window of ``per_seconds`` (seconds, or a ``timedelta``), per
            partition for runs with a key, per queue for the others. A run's
            first start counts, and so does a restart (in the place of the run's
            earlier start); a wake-up, a resume or a recovery does not.
        max_queued: The most runs waiting in the queue; a start beyond raises
            :class:`~runtime.QueueFullError` and records nothing.

    Raises:
        ValueError: for an empty name, a limit below 1 or above 2**31 - 1, a
            window not above 0.
        TypeError: for a limit that is not an int, a ``key`` that is not
            callable, or a ``rate_limit`` that is not a pair.
    """

    name: str
    concurrency: int | None = None
    key: Callable[[Any], str] | None = None
    key_concurrency: int | None = None
    rate_limit: tuple[int, float | timedelta] | None = None
    max_queued: int | None = None

    def __post_init__(self) -> None:
        _text(self.name, "Queue name")
        _positive(self.concurrency, "concurrency")
        _positive(self.key_concurrency, "key_concurrency")
        _positive(self.max_queued, "max_queued")
        if self.key is not None and not callable(self.key):
            raise TypeError(f"Queue key must be a function of the input, got {self.key!r}")
        if self.rate_limit is not None:
            limit = self.rate_limit
            if not isinstance(limit, tuple) or len(limit) != 2:
                raise TypeError(f"Queue rate_limit must be a pair (n, per_seconds), got {limit!r}")
            count, period = limit
            _positive(count, "rate_limit count")
            period = seconds_of(period)
            if isinstance(period, bool) or not isinstance(period, int | float):
                raise TypeError(
                    f"Queue rate_limit period must be a number of seconds or a timedelta, "
                    f"got {period!r}"
                )
            if not (math.isfinite(period) and period > 0):
                raise ValueError(f"Queue rate_limit period must be above 0 seconds, got {period}")
            object.__setattr__(self, "rate_limit", (count, float(period)))

    @classmethod
    def of_limits(cls, limits: QueueLimits) -> Queue:
        """A queue with ``limits`` and no key function (its runs bring their keys)."""
        rate = None if limits.rate_count is None else (limits.rate_count, limits.rate_period or 0)
        return cls(
            limits.name,
            concurrency=limits.concurrency,
            key_concurrency=limits.key_concurrency,
            rate_limit=rate,
            max_queued=limits.max_queued,
        )

    @property
    def limits(self) -> QueueLimits:
        """The limits a store keeps for this queue."""
        count, period = self.rate_limit if self.rate_limit is not None else (None, None)
        return QueueLimits(
            name=self.name,
            concurrency=self.concurrency,
            key_concurrency=self.key_concurrency,
            rate_count=count,
            rate_period=None if period is None else float(seconds_of(period)),
            max_queued=self.max_queued,
        )

    def key_of(self, model: Any, run_id: str) -> str | None:
        """The partition of a run with this input, by the ``key`` function (``None``: none).

        Raises:
            QueueKeyError: if the function raises or returns no non-empty ``str``.
        """
        if self.key is None:
            return None
        try:
            value = self.key(model)
        except Exception as exc:
            raise QueueKeyError(
                f"the key function of queue {self.name!r} raised {type(exc).__name__}: {exc}; "
                f"run {run_id!r} was not recorded",
                queue=self.name,
                run_id=run_id,
            ) from exc
        return check_key(value, self.name, run_id)


def check_key(value: Any, queue: str, run_id: str) -> str:
    """A partition key as given, checked.

    Raises:
        QueueKeyError: if it is not a non-empty, printable ``str`` of at most 200 characters.
    """
    try:
        return _text(value, "a queue's key")
    except (TypeError, ValueError) as exc:
        raise QueueKeyError(
            f"the key of run {run_id!r} in queue {queue!r} must be a non-empty str of at most "
            f"{_MAX_NAME} printable characters, got {value!r} ({type(value).__name__}); "
            "nothing was recorded",
            queue=queue,
            run_id=run_id,
        ) from exc


def check_priority(value: Any) -> int:
    """A start's priority, checked.

    Raises:
        TypeError: if it is not an int.
        ValueError: if it lies beyond ``MAX_PRIORITY`` either way.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"priority must be an int, got {type(value).__name__}")
    if abs(value) > MAX_PRIORITY:
        raise ValueError(f"priority must lie within ±{MAX_PRIORITY}, got {value}")
    return value


def restart_refused(queue: str, limit: int, run_id: str) -> QueueFullError:
    """The error of a restart refused because ``limit`` runs (``max_queued``) wait in ``queue``.

    As a start into a full queue is refused and records nothing, a restart
    that would wait beyond the bound changes nothing: the run stays as it
    ended, and may be restarted once the queue has drained.
    """
    return QueueFullError(
        f"queue {queue!r} has {limit} runs waiting (max_queued); run {run_id!r} was not "
        "restarted and is left as it ended: restart it again once the queue has drained",
        queue=queue,
        limit=limit,
        run_id=run_id,
    )


def rank(created_at: float, priority: int) -> float:
    """A run's place among the runs waiting, lowest first (see the module's docstring)."""
    return created_at - priority * PRIORITY_AGING


def queue_entry(snapshot: Any) -> tuple[str, str | None, int] | None:
    """A snapshot's queue, key and priority, or ``None`` for a run in no queue."""
    entry = snapshot.get("queue")
    if not entry:
        return None
    return entry["name"], entry.get("key"), int(entry.get("priority", 0))


Bucket = tuple[str, str | None]
"""A queue's name and a key (``None``: the runs of the queue without one)."""


class Admission:
    """Whether the next waiting run of a queue may start executing, counted as runs start.

    Built from what is executing now (``running``, per bucket) and what
    started within each queue's rate window (``started``, per bucket); each
    :meth:`admit` that says yes counts the run in. The stores use it inside
    their claim transaction, the in-memory supervisor for its own runs.

    Args:
        limits: Each queue's limits; a queue left out has none.
        running: Runs executing now, per bucket.
        started: Runs that started within their queue's rate window, per bucket.
    """

    __slots__ = ("_limits", "_queue_running", "_running", "_started")

    def __init__(
        self,
        limits: dict[str, QueueLimits],
        running: dict[Bucket, int],
        started: dict[Bucket, int] | None = None,
    ) -> None:
        self._limits = limits
        self._running = dict(running)
        self._started = dict(started or {})
        self._queue_running: dict[str, int] = {}
        for (name, _), count in self._running.items():
            self._queue_running[name] = self._queue_running.get(name, 0) + count

    def limited(self) -> bool:
        """Whether any queue has a limit on starts (concurrency, per key, or rate)."""
        return any(
            limits.concurrency is not None
            or limits.key_concurrency is not None
            or limits.rate_count is not None
            for limits in self._limits.values()
        )

    def closed_queues(self) -> list[str]:
        """Queues whose ``concurrency`` is taken: none of their runs may start now."""
        return sorted(
            name
            for name, limits in self._limits.items()
            if limits.concurrency is not None
            and self._queue_running.get(name, 0) >= limits.concurrency
        )

    def closed_buckets(self) -> list[Bucket]:
        """Buckets whose ``key_concurrency`` is taken (in queues still open): no run may start."""
        closed = set(self.closed_queues())
        found = [
            bucket
            for bucket, count in self._running.items()
            if bucket[0] not in closed
            and bucket[1] is not None
            and (limits := self._limits.get(bucket[0])) is not None
            and limits.key_concurrency is not None
            and count >= limits.key_concurrency
        ]
        return sorted(found, key=_bucket_order)

    def rated_buckets(self) -> list[Bucket]:
        """Buckets whose rate is taken for this window: no run may *first* start in them."""
        closed = set(self.closed_queues())
        found = [
            bucket
            for bucket, count in self._started.items()
            if bucket[0] not in closed
            and (limits := self._limits.get(bucket[0])) is not None
            and limits.rate_count is not None
            and count >= limits.rate_count
        ]
        return sorted(found, key=_bucket_order)

    def allows(self, queue: str | None, key: str | None, *, first: bool = True) -> bool:
        """Whether a run of this queue and key may start now (nothing is counted).

        ``first``: the run starts executing for the first time, or restarted (a
        rate limit counts only those); ``False`` for a run that wakes, resumes or
        is recovered.
        """
        if queue is None:
            return True
        limits = self._limits.get(queue)
        if limits is None:
            return True
        bucket = (queue, key)
        if limits.concurrency is not None and (
            self._queue_running.get(queue, 0) >= limits.concurrency
        ):
            return False
        if (
            key is not None
            and limits.key_concurrency is not None
            and self._running.get(bucket, 0) >= limits.key_concurrency
        ):
            return False
        return not (
            first
            and limits.rate_count is not None
            and self._started.get(bucket, 0) >= limits.rate_count
        )

    def admit(self, queue: str | None, key: str | None, *, first: bool = True) -> bool:
        """As :meth:`allows`; if it does, count the run in."""
        if not self.allows(queue, key, first=first):
            return False
        if queue is None:
            return True
        limits = self._limits.get(queue)
        if limits is None:
            return True
        bucket = (queue, key)
        self._running[bucket] = self._running.get(bucket, 0) + 1
        self._queue_running[queue] = self._queue_running.get(queue, 0) + 1
        if first and limits.rate_count is not None:
            self._started[bucket] = self._started.get(bucket, 0) + 1
        return True


def _bucket_order(bucket: Bucket) -> tuple[str, str]:
    return bucket[0], bucket[1] or ""


def bucket_key(bucket: Bucket) -> str:
    """One string for a bucket, as the stores compare them: ``queue`` US ``key``."""
    return f"{bucket[0]}\x1f{bucket[1] or ''}"
