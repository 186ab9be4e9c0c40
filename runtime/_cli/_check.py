"""``callboard check``: what an operator asks of a store before trusting it, in one command.

It reads the store only (as ``runs list`` does) and says:

- for a SQLite file, whether SQLite finds it whole (``PRAGMA quick_check``), its size
  and its ``-wal``'s, and whether it lies on a network file system;
- how many runs there are, by status;
- which runs cannot be read (a damaged snapshot: each is decoded, a page at a time);
- the workers: live, and those past their lease that still hold runs;
- the queued runs that no live worker registers the workflow of.

Exit 0 when it found nothing wrong, 1 when it did (each problem a line), 2 when the
store cannot be opened. ``--json`` says the same as one object.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

from runtime._cli._commands import ExitCode, open_db, shown_db
from runtime._cli._render import print_json
from runtime._errors import StoreError
from runtime._model import RunStatus
from runtime._queries import list_runs
from runtime._stores.base import SharedStore, SnapshotStore, served_workflows
from runtime._stores.sqlite import SQLiteStore, network_filesystem, read_uri

PAGE: Final = 5_000
"""Runs decoded at a time while looking for unreadable ones: memory stays bounded."""

AWAITING_AT_MOST: Final = 100
"""Queued runs read at most when looking for those no worker registers (the oldest)."""


def check(args: argparse.Namespace) -> ExitCode:
    """``callboard check``: the store's file, runs, unreadable runs and workers; exit 1 if amiss."""
    store = open_db(args.db, readonly=True)
    try:
        found = {"store": shown_db(args.db), **_look(store)}
    finally:
        store.close()
    if args.json:
        print_json(found)
    else:
        _say(found)
    return ExitCode.FAILED if found["problems"] else ExitCode.OK


def _look(store: SnapshotStore) -> dict[str, Any]:
    problems: list[str] = []
    found: dict[str, Any] = {}
    if isinstance(store, SQLiteStore):
        found["file"] = _file(store.path, problems)
    try:
        by_status = {
            status.value: store.list_runs(status=status.value, limit=1)[1] for status in RunStatus
        }
        found["runs"] = {"total": sum(by_status.values()), **by_status}
        unreadable = _unreadable(store)
        found["unreadable"] = unreadable
        if unreadable:
            problems.append(
                f"{len(unreadable)} run(s) cannot be read (a damaged snapshot), first "
                f"{', '.join(unreadable[:5])}: callboard runs show RUN_ID says why"
            )
        if isinstance(store, SharedStore):
            found["workers"], found["awaiting_a_worker"] = _workers(store, problems)
    except StoreError as exc:  # a damaged file (said above), a server gone meanwhile
        problems.append(f"the runs cannot be read: {exc}")
    found["problems"] = problems
    return found


def _file(path: Path, problems: list[str]) -> dict[str, Any]:
    """The SQLite file: SQLite's own check, sizes, and the file system it lies on."""
    said = ["?"]
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(
            sqlite3.connect(read_uri(path), uri=True, isolation_level=None)
        ) as connection,
    ):
        said = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    if said != ["ok"]:
        problems.append(f"SQLite finds the file damaged: {'; '.join(said[:3])}")
    wal = path.with_name(path.name + "-wal")
    network = network_filesystem(path.parent)
    if network is not None:
        problems.append(
            f"the file lies on a network file system ({network}): every process on it must "
            "run on one host"
        )
    return {
        "path": str(path),
        "quick_check": "ok" if said == ["ok"] else said[:10],
        "bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "network_filesystem": network,
    }


def _unreadable(store: SnapshotStore) -> list[str]:
    """The runs whose record cannot be read, a page of them at a time (newest first).

    Pages by offset: a run started meanwhile shifts them, so one may be looked at twice
    or not at all; a damaged record stays where it is, and is found.
    """
    unreadable: list[str] = []
    offset = 0
    while True:
        page = list_runs(store, limit=PAGE, offset=offset)
        unreadable.extend(page.unreadable)
        offset += PAGE
        if offset >= page.total:
            return unreadable


def _workers(store: SharedStore, problems: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    workers = store.workers()
    live = [worker for worker in workers if not worker.expired]
    stale = [worker for worker in workers if worker.expired and worker.held]
    if stale:
        held = sum(worker.held for worker in stale)
        problems.append(
            f"{len(stale)} worker(s) past their lease hold {held} run(s): the next runtime "
            "on the store hands them back (callboard workers list)"
        )
    served = sorted(served_workflows(live))
    awaiting = Counter(
        workflow_id for _, workflow_id, _ in store.awaiting_others(served, AWAITING_AT_MOST)
    )
    for workflow_id, count in sorted(awaiting.items()):
        at_least = "+" if sum(awaiting.values()) >= AWAITING_AT_MOST else ""
        problems.append(
            f"{count}{at_least} queued run(s) of workflow {workflow_id!r} wait for a worker: "
            "no live one registers it"
        )
    return (
        {
            "live": len(live),
            "past_their_lease": len([worker for worker in workers if worker.expired]),
            "runs_held_past_lease": sum(worker.held for worker in stale),
        },
        dict(sorted(awaiting.items())),
    )


def _say(found: dict[str, Any]) -> None:
    lines = [f"store: {found['store']}"]
    file = found.get("file")
    if file is not None:
        wal = f", -wal {file['wal_bytes']:,} bytes" if file["wal_bytes"] else ""
        lines.append(
            f"file: {file['bytes']:,} bytes{wal}; quick_check "
            + ("ok" if file["quick_check"] == "ok" else "FAILED")
        )
    runs = found.get("runs")
    if runs is not None:
        counted = ", ".join(
            f"{status} {count:,}" for status, count in runs.items() if count and status != "total"
        )
        lines.append(f"runs: {runs['total']:,}" + (f" ({counted})" if counted else ""))
    if "unreadable" in found:
        lines.append(f"unreadable runs: {len(found['unreadable']) or 'none'}")
    workers = found.get("workers")
    if workers is not None:
        lines.append(
            f"workers: {workers['live']} live, {workers['past_their_lease']} past their lease"
        )
    problems = found["problems"]
    lines.extend(f"problem: {problem}" for problem in problems)
    lines.append("no problem found" if not problems else f"{len(problems)} problem(s) found")
    sys.stdout.write("\n".join(lines) + "\n")
