"""A consistent copy of a SQLite run store while runtimes keep writing to it.

Copying the database file with ``cp`` while a runtime writes gives a file that
misses what the WAL (``-wal`` beside it) holds, or one torn half-way through a
checkpoint. ``VACUUM INTO`` copies what one read transaction sees instead: a
moment between two commits, as a crash at that moment would have left the
file. In WAL mode that read waits for no writer, and no writer waits for it.

The copy goes to a temporary file beside the destination, is checked
(``PRAGMA quick_check``), synced, and only then takes the destination's name
(a hard link, which fails if the name was taken meanwhile; a rename when
overwriting). So the destination is either the whole copy or not there: a
full disk, a kill or a power cut half-way leaves at most the temporary file,
which a failed copy removes.

A restore (``callboard restore``) makes its copy the same way beside the store it
replaces, and removes that store's ``-wal``, ``-shm`` and ``-journal`` before the
copy takes its name: SQLite would take a log left beside it for the copy's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from runtime._errors import StoreError
from runtime._model import TERMINAL_STATUSES
from runtime._stores.base import process_alive

_SIDE_FILES = ("-wal", "-journal", "-shm")
"""What SQLite keeps beside a database: a leftover of another database there would be
taken for the copy's own (a ``-wal``'s pages applied to it) when it is opened."""


class StoreBackup(NamedTuple):
    """What :meth:`SQLiteStore.backup` wrote.

    Attributes:
        path: The copy, a SQLite run store that any runtime or command can open.
        runs: The runs in it.
        unfinished: Of those, the runs that had not ended (running, waiting or
            suspended): a runtime that opens the copy and registers their workflows
            goes on with them, as after a crash at the moment of the copy.
        size: The copy's size in bytes.
        seconds: How long the copy took.
    """

    path: Path
    runs: int
    unfinished: int
    size: int
    seconds: float


def backup_sqlite(
    source: Path, read_uri: str, destination: Path, *, overwrite: bool
) -> StoreBackup:
    """Copy the SQLite store at ``source`` (opened read-only at ``read_uri``) to ``destination``.

    See :meth:`runtime.SQLiteStore.backup`, which checks the arguments' kinds.
    """
    began = time.monotonic()
    destination = Path(os.path.abspath(destination))
    _check_destination(source, destination, overwrite=overwrite)
    with _checked_copy(source, read_uri, destination, "back up") as (partial, runs, unfinished):
        if overwrite:
            os.replace(partial, destination)
        else:
            try:
                os.link(partial, destination)  # fails, rather than replace one made meanwhile
            except FileExistsError:
                raise StoreError(
                    f"cannot back up to {destination}: a file was made there meanwhile"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # A file system without hard links: a rename, after one more look.
                if destination.exists():
                    raise StoreError(
                        f"cannot back up to {destination}: a file was made there meanwhile"
                    ) from None
                os.replace(partial, destination)
        _sync_folder(destination.parent)
        size = destination.stat().st_size
    return StoreBackup(destination, runs, unfinished, size, time.monotonic() - began)


class StoreRestore(NamedTuple):
    """What :func:`restore_sqlite` put in place: the backup's runs, and what it dropped."""

    path: Path
    runs: int
    unfinished: int
    dropped: tuple[str, ...]  # the old file's -wal, -shm or -journal, removed with it
    seconds: float


def restore_sqlite(backup: Path, target: Path) -> StoreRestore:
    """Put a copy of the SQLite store at ``backup`` in the place of the one at ``target``.

    Refused while a runtime uses ``target`` (a worker row whose lease has not
    run out). The copy is made as :func:`backup_sqlite` makes one (a read
    transaction of ``backup``, checked, synced) beside ``target``; then the
    old file's ``-wal``, ``-shm`` and ``-journal`` go, and only then does the
    copy take ``target``'s name. In that order: a ``-wal`` left beside the
    restored file would be taken for its own and its pages written over it.

    Raises:
        StoreError: if ``backup`` is not a run store, ``target`` is in use, is
            ``backup`` itself, or is in a folder that does not exist; or if the
            copy cannot be written (nothing at ``target`` changes then).
    """
    began = time.monotonic()
    backup, target = Path(os.path.abspath(backup)), Path(os.path.abspath(target))
    if not backup.is_file():
        raise StoreError(f"cannot restore from {backup}: no such file")
    if not target.parent.is_dir():
        raise StoreError(f"cannot restore to {target}: folder {target.parent} does not exist")
    if target.exists() and os.path.samefile(backup, target):
        raise StoreError(f"cannot restore {backup} over itself")
    _check_backup(backup)  # a run store, whole: before anything at target changes
    _refuse_if_in_use(target)
    dropped: list[str] = []
    uri = f"file:{backup}?mode=ro"
    with _checked_copy(backup, uri, target, "restore") as (partial, runs, unfinished):
        for suffix in _SIDE_FILES:
            side = target.with_name(target.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                side.unlink()
                dropped.append(side.name)
        os.replace(partial, target)
        _sync_folder(target.parent)
    return StoreRestore(target, runs, unfinished, tuple(dropped), time.monotonic() - began)


@contextlib.contextmanager
def _checked_copy(
    source: Path, uri: str, target: Path, verb: str
) -> Iterator[tuple[Path, int, int]]:
    """A whole, checked, synced copy of ``source`` beside ``target``, for the caller to name.

    Yields its temporary path, its runs and how many of them had not ended. Made
    empty here first, so that it is readable by its owner only, as a store is;
    the workers of ``source`` hold nothing in it (see :func:`_release`). Whatever
    the caller did not name is removed on the way out; an ``OSError`` becomes a
    :class:`StoreError` saying that it could not ``verb`` to ``target``.
    """
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot {verb} to {target}: {exc.strerror}") from exc
    os.close(fd)
    try:
        _copy(source, uri, partial, target)
        _release(partial, target)
        runs, unfinished = _check_copy(partial, target)
        _sync(partial)
        yield partial, runs, unfinished
    except OSError as exc:
        raise StoreError(f"cannot {verb} to {target}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _check_backup(backup: Path) -> None:
    """Refuse a file to restore from that is no whole run store."""
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{backup}?mode=ro", uri=True, isolation_level=None)
        ) as connection:
            found = connection.execute("PRAGMA quick_check").fetchall()
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
    except sqlite3.Error as exc:
        raise StoreError(f"cannot restore from {backup}: {exc}") from exc
    if found != [("ok",)]:
        problems = "; ".join(str(row[0]) for row in found[:3])
        raise StoreError(f"cannot restore from {backup}: it is damaged ({problems})")
    if "runs" not in tables:
        raise StoreError(f"cannot restore from {backup}: it is no callboard run store")


def _refuse_if_in_use(target: Path) -> None:
    """Refuse a store some runtime uses: a worker row whose lease has not run out.

    But for one of a process on this host that is gone (killed): dead, as a
    reaper judges it (:func:`~runtime._stores.base.process_alive`).
    """
    if not target.exists():
        return
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{target}?mode=ro", uri=True, isolation_level=None)
        ) as connection:
            if not connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owners'"
            ).fetchone():
                return
            columns = {row[1] for row in connection.execute("PRAGMA table_info(owners)")}
            lease = "lease" if "lease" in columns else "10.0"
            live = connection.execute(
                f"SELECT host, pid FROM owners WHERE heartbeat_at + {lease} >= ?",
                (time.time(),),
            ).fetchall()
    except sqlite3.Error:
        return  # not a store this can read (damaged, or no database): it is replaced
    live = [(host, pid) for host, pid in live if process_alive(host, pid)]
    if live:
        named = ", ".join(f"{host}:{pid}" for host, pid in live[:5])
        raise StoreError(
            f"cannot restore to {target}: runtimes use it ({named}); stop every runtime "
            "and worker on it first (one killed on another host: wait for its lease to "
            "run out)"
        )


def _check_destination(source: Path, destination: Path, *, overwrite: bool) -> None:
    """Refuse a destination the copy could not take, or that it would break."""
    if not destination.parent.is_dir():
        raise StoreError(
            f"cannot back up to {destination}: folder {destination.parent} does not exist"
        )
    if destination.is_dir():
        raise StoreError(f"cannot back up to {destination}: it is a directory")
    if destination.exists():
        if os.path.samefile(destination, source):
            raise StoreError(f"cannot back up {source} to itself")
        if not overwrite:
            raise StoreError(
                f"cannot back up to {destination}: the file exists (overwrite it with "
                "overwrite=True, or --force)"
            )
        if not destination.is_file():
            raise StoreError(f"cannot back up to {destination}: it is not a regular file")
    for suffix in _SIDE_FILES:
        side = destination.with_name(destination.name + suffix)
        if side.exists():
            raise StoreError(
                f"cannot back up to {destination}: {side.name} is beside it, so a database "
                "there is in use or was not closed; SQLite would take that file for the "
                "copy's own when it is opened. Choose another name, or stop what uses "
                f"{destination.name} and remove {side.name} yourself"
            )


def _copy(source: Path, read_uri: str, partial: Path, destination: Path) -> None:
    """``VACUUM INTO`` the empty file ``partial``: one read transaction of ``source``."""
    try:
        connection = sqlite3.connect(read_uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source}: cannot open it: {exc}") from exc
    try:
        # Wait for a writer's lock as a reader does: in WAL mode, only while a writer
        # folds the log back into a file that another process opened first.
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute("VACUUM INTO ?", (str(partial),))
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            raise StoreError(
                f"cannot back up {source} to {destination}: the disk there is full ({exc})"
            ) from exc
        raise StoreError(f"cannot back up {source} to {destination}: {exc}") from exc
    finally:
        connection.close()


def _release(partial: Path, destination: Path) -> None:
    """Let go of the copy's runs: no worker of the original writes to the copy.

    The workers' rows go, so the first runtime on the copy hands their unfinished
    runs back to the queue at once and claims them, rather than after each lease.
    """
    try:
        with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as connection:
            if connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'owners'"
            ).fetchone():
                connection.execute("DELETE FROM owners")
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        full = " (the disk there is full)" if code == sqlite3.SQLITE_FULL else ""
        raise StoreError(f"cannot back up to {destination}{full}: {exc}") from exc


def _check_copy(partial: Path, destination: Path) -> tuple[int, int]:
    """The copy's runs, and of them the unfinished, once SQLite finds it whole."""
    marks = ", ".join("?" * len(TERMINAL_STATUSES))
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{partial}?mode=ro", uri=True, isolation_level=None)
        ) as connection:
            found = connection.execute("PRAGMA quick_check").fetchall()
            if found != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in found[:3])
                raise StoreError(
                    f"the backup to {destination} came out damaged ({problems}); nothing was "
                    "written there"
                )
            runs, unfinished = connection.execute(
                f"SELECT count(*), count(*) FILTER (WHERE status NOT IN ({marks})) FROM runs",
                sorted(str(status) for status in TERMINAL_STATUSES),
            ).fetchone()
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot read the backup back before naming it {destination}: {exc}"
        ) from exc
    return int(runs), int(unfinished)


def _sync(path: Path) -> None:
    """Make the copy's bytes durable before its name is (``VACUUM INTO`` syncs nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make a new name in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
