"""Options: how a run is traced and what it outputs, and how a workflow retries its steps."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OutputOptions", "RetryConfig", "TracingOptions"]

_TRACE_ID = re.compile(r"[0-9a-fA-F]{1,32}")


class TracingOptions(BaseModel):
    """How a run is traced.

    Attributes:
        metadata: Key/value pairs put on the run's root span (``workflow_run``).
            Values must be encodable with msgpack; ``start_async`` checks them.
        trace_id: Join an existing trace: 1 to 32 hexadecimal characters. When
            omitted the run starts a new trace with a random 32-character id.

    Raises:
        pydantic.ValidationError: (a ``ValueError``) for a trace id that is empty,
            longer than 32 characters or not hexadecimal.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metadata: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None

    @field_validator("trace_id")
    @classmethod
    def _trace_id_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not _TRACE_ID.fullmatch(value):
            raise ValueError(
                f"trace_id must be 1 to 32 hexadecimal characters, got {value!r} "
                f"({len(value)} characters)"
            )
        return value.lower() if value is not None else None


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
    itself either way. The wait holds no thread.

    Attributes:
        attempts: Retries after the first call (0: none).
        delay: Seconds before the first retry.
        backoff: Factor each further wait grows by (1: the same wait each time).
        max_delay: The longest wait, in seconds; ``None`` for no cap.
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
