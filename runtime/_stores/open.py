"""One way from a store's location to a store: for ``Runtime`` and the command line alike."""

from __future__ import annotations

import os
import re
from typing import Final

from runtime._errors import StoreError
from runtime._stores.base import SnapshotStore

__all__ = ["is_postgres_url", "open_store"]

_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` is a ``postgresql://`` or ``postgres://`` URL."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(
    location: str | os.PathLike[str] | None,
    *,
    lease: float | None = None,
    readonly: bool = False,
) -> SnapshotStore:
    """Open the store a location names.

    Args:
        location: ``"memory"`` (or ``None``) for a :class:`MemoryStore`; a
            ``postgresql://`` or ``postgres://`` URL for a :class:`PostgresStore`;
            a file path or a ``sqlite:///path`` URL for a :class:`SQLiteStore`.
        lease: For a shared store, the seconds without a heartbeat after which
            this worker's runs go back to the queue (the store's default if
            ``None``).
        readonly: Open for reading only (a durable store that must exist).

    Returns:
        The store, open.

    Raises:
        StoreError: if the store cannot be opened (the message says why), or
            the location is a URL of some other kind.
    """
    from runtime._stores.memory import MemoryStore

    if location is None or location == "memory":
        return MemoryStore()
    if is_postgres_url(location):
        from runtime._stores.postgres import LEASE, PostgresStore

        assert isinstance(location, str)
        return PostgresStore(location, lease=LEASE if lease is None else lease, readonly=readonly)
    text = os.fspath(location)
    if _SCHEME.match(text) and not text.startswith("sqlite://"):
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"unknown store URL scheme {scheme + '://'!r}: use a file path, sqlite:///path, "
            "postgresql://... or 'memory'"
        )
    from runtime._stores.sqlite import LEASE as SQLITE_LEASE
    from runtime._stores.sqlite import SQLiteStore

    try:
        return SQLiteStore(
            location, readonly=readonly, lease=SQLITE_LEASE if lease is None else lease
        )
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
