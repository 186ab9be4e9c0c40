"""A worker process for the shared-store tests: ``python -m tests.shared._worker worker PARAMS``.

``PARAMS`` is JSON: ``store`` (a SQLite path or a PostgreSQL URL), ``lease``
(seconds), ``concurrency`` (``max_concurrent_runs``) and ``role``. The worker
registers :data:`tests.shared._workflows.WORKFLOWS`, prints ``ready WORKER_ID``,
and runs until its stdin closes (then stops gracefully) or it is killed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from runtime import Runtime, SnapshotStore, SQLiteStore
from tests.shared._workflows import WORKFLOWS


def open_store(location: str, lease: float) -> SnapshotStore:
    """A store of ``location`` with this lease: PostgreSQL for a URL, else SQLite."""
    if location.startswith(("postgresql://", "postgres://")):
        from runtime._stores.postgres import PostgresStore

        return PostgresStore(location, lease=lease)
    return SQLiteStore(location, lease=lease)


def main(params: dict[str, Any]) -> None:
    store = open_store(params["store"], float(params.get("lease", 10.0)))
    rt = Runtime(
        store=store,
        role=params.get("role", "worker"),
        max_concurrent_runs=params.get("concurrency"),
        stop_timeout=float(params.get("stop_timeout", 5.0)),
    )
    with rt:
        for workflow in WORKFLOWS.values():
            rt.register(workflow)
        # One write with its newline: a step may already print "holding ..." meanwhile.
        sys.stdout.write(f"ready {getattr(store, 'owner_id', '')}\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it


if __name__ == "__main__":
    main(json.loads(sys.argv[2]))  # argv[1] is the command: "worker"
