"""``RequestContext``: per-run values a caller hands to every step."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

__all__ = ["RequestContext"]

_MISSING: Any = object()


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

    __slots__ = ("_data",)

    def __init__(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        self._data: dict[str, Any] = {}
        if values is not None:
            self.update(values)
        if kwargs:
            self.update(kwargs)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"RequestContext keys must be str, got {type(key).__name__}")
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

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
        return self._data.pop(key, _MISSING) is not _MISSING

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the values as a plain dict."""
        return dict(self._data)
