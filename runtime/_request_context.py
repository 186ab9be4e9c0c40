"""``RequestContext``: per-run values a caller hands to every step."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["RequestContext", "changed", "view"]

_MISSING: Any = object()

_OWNING = threading.Lock()
"""Taken while a view copies its values: two threads touching it first keep one copy."""


class RequestContext(MutableMapping[str, Any]):
    """A mutable mapping of per-run values, with Mastra's ``get``/``set``/``has``/``delete``.

    A run receives its own copy at ``start_async``; a step that changes it changes
    what later steps of the same run see, and nothing else. Keys are strings and
    values must be encodable with msgpack (``start_async`` checks, naming the key),
    because the context is recorded in the run's snapshots.

    Example:
        >>> ctx = RequestContext({"user": "ada"})
        >>> ctx.set("tier", "gold")
        >>> ctx.get("user"), ctx.has("tier"), len(ctx)
        ('ada', True, 2)
    """

    # ``_copy`` is set only on a view (see :func:`view`): the function that copies
    # the run's values on the first touch that could change them.
    __slots__ = ("_copy", "_data")

    def __init__(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        self._data: dict[str, Any] = {}
        self._copy: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        if values is not None:
            self.update(values)
        if kwargs:
            self.update(kwargs)

    def _own(self) -> None:
        """Replace a view's shared values with a copy of its own, once."""
        with _OWNING:
            copy = self._copy
            if copy is not None:
                self._data = copy(self._data)
                self._copy = None

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if self._copy is not None and isinstance(value, (list, dict)):
            # A view hands out no list or dict of the run's: a change to it must stay in
            # this step's copy.
            self._own()
            value = self._data[key]
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"RequestContext keys must be str, got {type(key).__name__}")
        if self._copy is not None:
            self._own()
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        if self._copy is not None:
            self._own()
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"RequestContext({self._data!r})"

    def set(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (Mastra's ``set``)."""
        self[key] = value

    def has(self, key: str) -> bool:
        """Whether ``key`` is set (Mastra's ``has``)."""
        return key in self._data

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there (Mastra's ``delete``)."""
        if self._copy is not None:
            self._own()
        return self._data.pop(key, _MISSING) is not _MISSING

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the values as a plain dict."""
        if self._copy is not None:
            self._own()
        return dict(self._data)


def view(
    values: dict[str, Any], copy: Callable[[dict[str, Any]], dict[str, Any]]
) -> RequestContext:
    """A request context over a run's ``values``, copied (with ``copy``) when first touched.

    A step gets one: most steps never change their run's request context, and
    a view that nobody changed costs no copy, and no check of the copy when the
    step ends (see :func:`changed`). Until a step sets or deletes a key, or
    reads a list or a dict (which it could change in place), the view reads
    ``values`` themselves; from then on it has its own deep copy, so a step
    that fails has not changed what the run holds.

    Args:
        values: The run's request context; the view never changes it.
        copy: Makes a deep copy of ``values``.
    """
    context = RequestContext.__new__(RequestContext)
    context._data = values
    context._copy = copy
    return context


def changed(context: RequestContext) -> dict[str, Any] | None:
    """A context's values as a plain dict, or ``None`` for a view nobody touched."""
    if context._copy is not None:
        return None
    return dict(context._data)
