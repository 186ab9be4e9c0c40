"""Options: tracing, output, retries, and how long a runtime keeps the runs that ended."""

from __future__ import annotations

import math
import numbers
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Self, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime._otel import parse_traceparent, traceparent_of

__all__ = [
    "FOREVER",
    "MAX_RUN_TIMEOUT",
    "OutputOptions",
    "RetentionPolicy",
    "RetryConfig",
    "TracingOptions",
    "check_run_timeout",
    "check_timeout",
    "seconds_of",
]

_TRACE_ID = re.compile(r"[0-9a-fA-F]{1,32}")

FOREVER: Final = 10 * 365 * 86400.0
"""Seconds past which a timeout means no timeout: a wait's clocks and locks refuse some
larger ones (``threading``'s ``TIMEOUT_MAX``, a ``time_t``), and ten years is as good as
for ever to a program."""


def seconds_of(value: Any) -> Any:
    """A ``timedelta`` in seconds; anything else as it is, for its caller to check.

    Every duration of a definition takes seconds or a ``timedelta``: a sleep,
    a step's timeout, retry delays, a queue's rate window, retention.
    """
    return value.total_seconds() if isinstance(value, timedelta) else value


def check_timeout(
    timeout: object,
    name: str = "timeout",
    *,
    forever: float | None = None,
    allow_none: bool = True,
) -> float | None:
    """``timeout`` as a wait takes it: seconds, or ``None`` for as long as it takes.

    A negative one is none left (as ``threading`` takes it: a deadline already
    past), and one past ten years (``math.inf`` included) is ``forever``:
    ``None``, or ten years for a caller whose ``None`` means something else.

    Raises:
        TypeError: if it is not a real number (a ``bool`` is not), nor ``None``
            where ``allow_none``.
        ValueError: if it is NaN.
    """
    if timeout is None and allow_none:
        return None
    kind = "a number of seconds or None" if allow_none else "a number of seconds"
    # numbers.Real: numpy's numbers too (an np.int64 is no int); a bool is a slip.
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
        raise TypeError(f"{name} must be {kind}, got {type(timeout).__name__}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int (or a fraction) past any float
        return forever if cast(Any, timeout) > 0 else 0.0
    if seconds > FOREVER:
        return forever
    if math.isnan(seconds):
        raise ValueError(f"{name} must be {kind}, got NaN")
    return max(seconds, 0.0)


MAX_RUN_TIMEOUT: Final = 100 * 365.25 * 86400.0
"""The longest ``run_timeout``, in seconds: about a century, as the longest sleep
(``_plan.MAX_SLEEP``). A run's deadline must stay a datetime: a test kit's time skipping
jumps its clock to it, and the run's end is recorded then."""


def check_run_timeout(value: object, name: str = "run_timeout") -> float | None:
    """A run's time limit as seconds: a positive, finite number or a ``timedelta``; or ``None``.

    Unlike a wait's timeout, nothing is read into a value out of range: a
    limit of zero, a negative one, an infinite one or one above
    :data:`MAX_RUN_TIMEOUT` (about a century) is a mistake, said at once.

    Raises:
        TypeError: if it is not a real number nor a ``timedelta`` (a ``bool`` is not).
        ValueError: if it is not above zero, or above :data:`MAX_RUN_TIMEOUT`
            (infinity, NaN).
    """
    if value is None:
        return None
    seconds = seconds_of(value)
    if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool):
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta (None for no limit), "
            f"got {type(value).__name__}"
        )
    try:
        limit = float(seconds)
    except OverflowError:  # an int past any float
        limit = math.inf
    if not 0 < limit <= MAX_RUN_TIMEOUT:  # also refuses NaN
        raise ValueError(
            f"{name} must be a number of seconds above 0 and at most {MAX_RUN_TIMEOUT:g} "
            f"(about a century; None for no limit), got {value!r}"
        )
    return limit


class TracingOptions(BaseModel):
    """How a run is traced.

    Attributes:
        metadata: Key/value pairs put on the run's root span (``workflow_run``).
            Values must be encodable with msgpack; ``start_async`` checks them.
        trace_id: Join an existing trace: 1 to 32 hexadecimal characters. When
            omitted the run starts a new trace with a random 32-character id
            (or, with OpenTelemetry configured, joins the caller's current span).
        parent: The span the run's spans are children of: a W3C ``traceparent``
            string (``"00-<trace id>-<span id>-01"``), or an OpenTelemetry
            ``Span`` or ``SpanContext`` (kept as its ``traceparent``). The run
            joins its trace. When omitted, OpenTelemetry's current span at
            ``start_async`` is the parent.

    Raises:
        pydantic.ValidationError: (a ``ValueError``) for a trace id that is empty,
            longer than 32 characters or not hexadecimal, a parent that is not a
            ``traceparent``, or a trace id that is not the parent's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metadata: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None
    parent: str | None = None

    @field_validator("parent", mode="before")
    @classmethod
    def _parent_is_traceparent(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            if isinstance(value, str):
                parse_traceparent(value)  # raises ValueError
                return value.strip().lower()
            return value
        found = traceparent_of(value)
        if found is None:
            raise ValueError(
                "parent must be a W3C traceparent string or a valid OpenTelemetry Span or "
                f"SpanContext, got {type(value).__name__}"
            )
        return found

    @model_validator(mode="after")
    def _one_trace(self) -> Self:
        if self.parent is not None and self.trace_id is not None:
            parent_trace = parse_traceparent(self.parent)[0]
            if int(parent_trace, 16) != int(self.trace_id, 16):
                raise ValueError(
                    f"trace_id {self.trace_id!r} is not the trace of parent {self.parent!r}"
                )
        return self

    @field_validator("trace_id")
    @classmethod
    def _trace_id_is_hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _TRACE_ID.fullmatch(value):
            raise ValueError(
                f"trace_id must be 1 to 32 hexadecimal characters, got {value!r} "
                f"({len(value)} characters)"
            )
        if int(value, 16) == 0:
            # OpenTelemetry (and W3C trace context) take an all-zero trace id for none:
            # the run's spans went to new traces, apart from the one its result named.
            raise ValueError(f"trace_id must not be all zeros, got {value!r}")
        # As OpenTelemetry and a traceparent write it (32 digits), so that the result,
        # the logs and the exported spans name the trace alike.
        return value.lower().zfill(32)


class OutputOptions(BaseModel):
    """What a run's results carry.

    Attributes:
        include_state: When true, results (from ``start``, ``wait`` and the
            query) carry the workflow's ``state``; when false ``state`` is ``None``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    include_state: bool = False


class RetryConfig(BaseModel):
    """How a workflow retries its failed steps (a step's own ``retries`` wins over ``attempts``).

    The wait before retry ``n`` (1 for the first) is ``delay * backoff ** (n - 1)``,
    capped at ``max_delay``, then moved at random by up to ``jitter`` times
    itself either way, never past ``max_delay``. The wait holds no thread.

    Attributes:
        attempts: Retries after the first call (0: none).
        delay: Seconds before the first retry (or a ``timedelta``).
        backoff: Factor each further wait grows by (1: the same wait each time).
        max_delay: The longest wait, in seconds (or a ``timedelta``); ``None`` for no cap.
        jitter: A fraction from 0 to 1.

    Example:
        >>> RetryConfig(attempts=3, delay=0.5, backoff=2).attempts
        3
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=0, ge=0)
    delay: float = Field(default=0.0, ge=0)
    backoff: float = Field(default=1.0, ge=1)
    max_delay: float | None = Field(default=None, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)

    if TYPE_CHECKING:
        # What a type checker without pydantic's plugin sees: the durations take a
        # timedelta too (the fields hold seconds once validated).
        def __init__(
            self,
            *,
            attempts: int = 0,
            delay: float | timedelta = 0.0,
            backoff: float = 1.0,
            max_delay: float | timedelta | None = None,
            jitter: float = 0.0,
        ) -> None: ...

    @field_validator("delay", "max_delay", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return seconds_of(value)

    @field_validator("delay", "backoff", "max_delay")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # An infinite delay left the run "running" for ever, with no time to wake at.
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class RetentionPolicy(BaseModel):
    """How long a runtime keeps the runs that have ended, pruned in the background.

    Only runs that ended (``success``, ``failed``, ``canceled``) are ever
    pruned; pending, running, waiting and suspended runs are kept whatever
    their age. Give ``max_age``, ``max_runs`` or both.

    Attributes:
        max_age: Prune runs that ended longer ago than this: seconds, or a
            ``timedelta``.
        max_runs: Keep at most this many ended runs, the most recent.
        interval: Seconds between two passes of the pruner (or a ``timedelta``).

    Example:
        >>> RetentionPolicy(max_age=timedelta(days=7), max_runs=100_000).max_age
        604800.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_age: float | None = Field(default=None, gt=0)
    max_runs: int | None = Field(default=None, ge=0)
    interval: float = Field(default=1.0, gt=0)

    if TYPE_CHECKING:
        # As RetryConfig's: the durations take a timedelta too.
        def __init__(
            self,
            *,
            max_age: float | timedelta | None = None,
            max_runs: int | None = None,
            interval: float | timedelta = 1.0,
        ) -> None: ...

    @field_validator("max_age", "interval", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return seconds_of(value)

    @field_validator("max_age", "interval")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value

    @model_validator(mode="after")
    def _something_to_do(self) -> Self:
        if self.max_age is None and self.max_runs is None:
            raise ValueError("give max_age, max_runs or both")
        return self
