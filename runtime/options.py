"""Options a run is started with: tracing and output."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OutputOptions", "TracingOptions"]

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
