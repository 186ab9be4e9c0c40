"""Random ids: run, actor and owner ids (UUID 4 text), trace and span ids (hex)."""

from __future__ import annotations

import os
import random
from typing import Final

__all__ = [
    "MAX_NAME_BYTES",
    "check_lookup_name",
    "check_resource_id",
    "check_run_id",
    "new_id",
    "new_span_id",
    "new_trace_id",
    "shown_name",
    "unstorable_text",
]

# Ids come from a generator of our own, not os.urandom: they identify, they
# guard nothing, and os.urandom releases the GIL, so under load every
# start_async would wait up to a GIL switch interval (5 ms) to get it back.
# Not the module-level `random` functions either: programs and test tools
# (Hypothesis among them) seed those, and seeded ids would repeat. The
# generator seeds itself from the OS, again in a forked child.
_generator = random.Random()
os.register_at_fork(after_in_child=_generator.seed)
_getrandbits = _generator.getrandbits


# The hex text comes from %-formatting, not an f-string's format spec: an int's
# "%032x" takes a fast path that "{:032x}" does not (0.15 µs against 0.27, at
# every start, which draws three of these).


def new_trace_id() -> str:
    """A random 32-character hexadecimal trace id (never all zeros)."""
    return "%032x" % (_getrandbits(128) or 1)


def new_span_id() -> str:
    """A random 16-character hexadecimal span id (never all zeros)."""
    return "%016x" % (_getrandbits(64) or 1)


def new_id() -> str:
    """A random id in the form of a version 4 UUID: for runs, actors and store owners."""
    text = "%032x" % ((_getrandbits(128) & _UUID_KEPT_BITS) | _UUID4_BITS)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID_KEPT_BITS: Final = ~((0xF000 << 64) | (0xC000 << 48))  # all but version and variant
_UUID4_BITS: Final = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def check_run_id(run_id: object, *, lookup: bool = False) -> str:
    """``run_id`` if it can name a run in every store; else the error the caller raises.

    Args:
        run_id: The id to check.
        lookup: The id is only looked up: an empty one is fine (it names no run).

    Raises:
        TypeError: if it is not a ``str``.
        ValueError: if it is not valid UTF-8 text (a lone surrogate), which no
            store could write or look up, or holds a NUL character, which
            PostgreSQL cannot; or, unless ``lookup``, if it is empty.
    """
    return _check_text(run_id, "run_id", allow_empty=lookup)


def check_resource_id(resource_id: object) -> str:
    """``resource_id`` if a store can index a run by it (as :func:`check_run_id` checks).

    Raises:
        TypeError: if it is not a ``str``.
        ValueError: if it is empty, not valid UTF-8 text, or holds a NUL character.
    """
    return _check_text(resource_id, "resource_id", allow_empty=False)


def check_lookup_name(value: object, name: str) -> str:
    """``value`` if it can be looked up as ``name`` (a workflow or schedule id) in every store.

    An empty one is fine (it names nothing); one with a lone surrogate or a
    NUL character is refused, as :func:`check_run_id` refuses it: no store
    could hold it, and SQLite could not even look it up.

    Raises:
        TypeError: if it is not a ``str``.
        ValueError: if it is not valid UTF-8 text or holds a NUL character.
    """
    return _check_text(value, name, allow_empty=True)


def _check_text(value: object, name: str, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        hint = ""
        if name == "run_id" and isinstance(getattr(value, "run_id", None), str):
            # start_async() returns a StartAsyncResult (Mastra's ``{ runId }``): its id is
            # an attribute, an easy slip.
            hint = f" (pass its .run_id: {type(value).__name__}.run_id is the id)"
        raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    problem = unstorable_text(value)
    if problem is not None:
        raise ValueError(f"{name} {shown_name(value)} {problem}")
    return value


def shown_name(value: str) -> str:
    """``value`` as an error shows it: its ``repr``, cut short when it is long."""
    return repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"


def unstorable_text(value: str) -> str | None:
    """Why ``value`` cannot be a name every store keeps (as a key or a column), or ``None``.

    A lone surrogate is no UTF-8 text, which every store writes; a NUL
    character is text, but PostgreSQL's ``text`` cannot hold it, and a name
    one store takes and another refuses would work in memory and in SQLite and
    then fail as a store error in production.
    """
    if "\x00" in value:
        return "holds a NUL character (\\x00), which PostgreSQL cannot store"
    size = len(value)
    if not value.isascii():
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "is not valid UTF-8 text (it holds a lone surrogate)"
    if size > MAX_NAME_BYTES:
        return (
            f"is {size} bytes long in UTF-8; at most {MAX_NAME_BYTES} are allowed (PostgreSQL "
            "cannot index a longer one)"
        )
    return None


MAX_NAME_BYTES: Final = 1024
"""The longest name (run, resource, workflow, step or node id, version label, idempotency
key) in bytes of UTF-8. PostgreSQL indexes at most 2,704 bytes of a row: two such names
(a run id and a step path, a workflow id and an idempotency key) fit in one index entry."""
