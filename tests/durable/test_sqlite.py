"""The SQLite run store: the file, its schema, group commit, locks, corruption, durability."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores.sqlite as sqlite_module
from runtime import (
    RunReader,
    Runtime,
    SnapshotFormatError,
    SQLiteStore,
    StoreError,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from runtime._cli import main
from runtime._snapshot import decode
from runtime._stores.sqlite import SCHEMA_VERSION
from tests._support import Counter, Runtimes, Value, held_workflow, quick_workflow, wait_until
from tests.durable._support.helpers import drop_deadlines, raw, record, row, save_and_wait
from tests.durable._support.workflows import both_items_approved, items_waiting


def file_state(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its modification time, and what else lies beside it."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


# --- the file -----------------------------------------------------------------------


def test_a_new_store_file_is_readable_and_writable_by_its_owner_only(
    db: Path, runtimes: Runtimes
) -> None:
    previous = os.umask(0o022)  # a common umask, which would leave a plain file world-readable
    try:
        rt = runtimes.start(db)
        wf = rt.register(quick_workflow())
        assert wf.create_run().start(input_data={"value": "v"}, timeout=10).status == "success"
        files = [db] + [p for p in (Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        os.umask(previous)
    assert modes == dict.fromkeys(modes, 0o600)


def test_the_store_runs_in_wal_mode(db: Path, runtimes: Runtimes) -> None:
    runtimes.start(db)
    with raw(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_schema_version_is_recorded_in_the_database(db: Path, runtimes: Runtimes) -> None:
    runtimes.start(db)
    with raw(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert SCHEMA_VERSION >= 1


def test_a_database_written_by_a_newer_schema_is_refused_and_left_untouched(
    db: Path, runtimes: Runtimes
) -> None:
    with raw(db) as connection:
        connection.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, future TEXT)")
        connection.execute("INSERT INTO runs VALUES ('r1', 'from the future')")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = file_state(db)
    with pytest.raises(StoreError, match="newer") as caught:
        runtimes.start(db)
    assert str(db) in str(caught.value)
    assert file_state(db) == before


def test_an_upgrade_waits_until_the_processes_of_the_older_schema_are_gone(db: Path) -> None:
    # A process that opened the file at the older version read the schema then, and
    # never again: upgraded under it, it would misread what this version writes.
    older = SQLiteStore(db)  # stands for it: it joined, and renews its lease
    with raw(db) as connection:
        drop_deadlines(connection)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    before = file_state(db)
    with pytest.raises(StoreError, match="older callboard") as caught:
        SQLiteStore(db)
    assert f"{socket.gethostname()}:{os.getpid()}" in str(caught.value)
    assert "stop them first" in str(caught.value)
    assert file_state(db) == before
    older.close()  # gone: its row with it
    SQLiteStore(db).close()
    with raw(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_of_schema_version_8_migrates_and_its_runs_take_resume_requests(
    db: Path, tmp_path: Path
) -> None:
    run_id = items_waiting(db, tmp_path)
    with raw(db) as connection:  # back to version 8, as the callboard before left files
        connection.execute("DROP TRIGGER resume_requests_go_with_their_run")
        connection.execute("DROP TABLE resume_requests")
        connection.execute("ALTER TABLE runs DROP COLUMN taken_seq")
        connection.execute("PRAGMA user_version = 8")
    with RunReader(db) as reader:  # read as it is, before any migration
        found = reader.get_run(run_id)
        assert found is not None and found.status == "suspended"

    result = both_items_approved(db, tmp_path, run_id)
    assert result.status == "success", result.error
    assert result.result == {"value": "x1-yes,x2-no"}
    with raw(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
        assert "taken_seq" in columns
        assert connection.execute("SELECT count(*) FROM resume_requests").fetchone() == (0,)
        triggers = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "resume_requests_go_with_their_run" in triggers


def test_a_reader_refuses_a_database_written_by_a_newer_schema(db: Path) -> None:
    with raw(db) as connection:
        connection.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY)")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = file_state(db)
    with pytest.raises(StoreError, match="newer"):
        RunReader(db)
    assert file_state(db) == before


def test_a_directory_is_refused_at_start(tmp_path: Path, runtimes: Runtimes) -> None:
    with pytest.raises(StoreError, match="directory") as caught:
        runtimes.start(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_a_file_that_is_not_sqlite_is_refused_at_start_and_left_untouched(
    db: Path, runtimes: Runtimes
) -> None:
    db.write_bytes(os.urandom(8192))
    before = file_state(db)
    with pytest.raises(StoreError, match="not a callboard run store") as caught:
        runtimes.start(db)
    assert str(db) in str(caught.value)
    assert file_state(db) == before


def test_a_file_that_cannot_be_written_is_refused_at_start(db: Path, runtimes: Runtimes) -> None:
    # A store that leaves no connection open in this process: SQLite would
    # otherwise reuse a read-write descriptor it still holds on the file.
    SQLiteStore(db).close()
    immutable = False
    db.chmod(0o400)
    try:
        if os.geteuid() == 0:
            # chmod does not stop root; an immutable file stops everyone.
            chattr = shutil.which("chattr")
            if (
                chattr is None
                or subprocess.run([chattr, "+i", str(db)], check=False).returncode != 0
            ):
                pytest.skip(
                    "running as root, where chmod 0400 does not stop writes, without chattr"
                )
            immutable = True
        before = db.read_bytes()
        with pytest.raises(StoreError, match="cannot write") as caught:
            runtimes.start(db)
        assert str(db) in str(caught.value)
        assert db.read_bytes() == before
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(db)], check=True)
        db.chmod(0o600)


def test_a_missing_folder_is_refused_at_start(tmp_path: Path, runtimes: Runtimes) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        runtimes.start(tmp_path / "nowhere" / "runs.db")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_a_sqlite_url_names_the_file(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///relative.db" if form == "relative" else f"sqlite:///{tmp_path}/absolute.db"
    path = tmp_path / f"{form}.db"
    rt = runtimes.start(url)
    run_id = (
        rt.register(quick_workflow()).create_run().start_async(input_data={"value": "v"}).run_id
    )
    assert row(path, run_id) is not None


def test_results_outlive_the_runtime_that_ran_them(db: Path, runtimes: Runtimes) -> None:
    with Runtime(store=db) as first:
        done = first.register(quick_workflow()).create_run().start(input_data={"value": "v"})
    wf = runtimes.start(db).register(quick_workflow())
    assert wf.get_workflow_run_execution_result(done.run_id) == done


@pytest.mark.parametrize("by", ["start", "save"])
def test_a_wal_grown_beside_a_reader_is_cut_back_when_it_starts_over(
    by: str, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst beside a reader that holds a snapshot grows the WAL; it does not keep that size.

    SQLite reuses a WAL from its start once a checkpoint has folded all of it
    back, but keeps the file at its peak unless told a limit. Either of the
    store's connections may be the one that starts it over: a start commits on
    its caller's, a save on the writer's.
    """
    limit = 256 * 1024
    monkeypatch.setattr(sqlite_module, "WAL_SIZE_LIMIT", limit)
    monkeypatch.setattr(sqlite_module, "IDLE_INTERVAL", 0.05)  # the writer's look at the WAL
    store = SQLiteStore(db)
    wal = Path(f"{db}-wal")
    try:
        with raw(db) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM runs").fetchall()
            for index in range(40):  # no checkpoint can fold these back while the reader reads
                assert store.create(record(f"run-{index}", data=os.urandom(64 * 1024)))
            reader.execute("COMMIT")
        grown = wal.stat().st_size
        assert grown > 8 * limit
        seq = 0

        def cut_back() -> bool:
            nonlocal seq
            seq += 1
            store._checkpoint_time = 0.0  # a checkpoint is due at the writer's next idle call
            if by == "start":
                assert store.create(record(f"more-{seq}"))
            else:
                save_and_wait(store, record("run-0", seq=seq, status="running"))
            return wal.stat().st_size <= limit

        wait_until(cut_back, timeout=10, what=f"the WAL ({grown} bytes) cut back to {limit}")
    finally:
        store.close()


def test_a_steady_stream_of_runs_keeps_the_wal_small(db: Path, runtimes: Runtimes) -> None:
    """Checkpoints fold the whole log back often enough for it to start over.

    A checkpoint run beside the store's own writes (tried, to spare a start
    the 5 ms it waits behind one) never folds the log back whole, so it never
    starts over, and no size limit applies: it grew by 30-40 KB a run (62 MB
    after 2,000 runs, about 95 MB after the 3,000 here), where it stays at 6-14
    MB on a quiet machine and went to 36 MB once in a whole suite on two busy
    cores (readers holding old snapshots put the whole fold off).
    """
    rt = runtimes.start(db)
    wf = rt.register(quick_workflow())
    for _ in range(6):
        runs = [wf.create_run() for _ in range(500)]
        for run in runs:
            run.start_async(input_data={"value": "v"})
        assert all(run.wait(timeout=30).status == "success" for run in runs)
    assert Path(f"{db}-wal").stat().st_size < 56 * 1024 * 1024


class _Checkpoints:
    """The writer's connection, noting for each WAL checkpoint whether the write lock was held."""

    def __init__(self, connection: sqlite3.Connection, lock: Any) -> None:
        self._connection = connection
        self._lock = lock
        self.taken: list[bool] = []  # per checkpoint: under the write lock?
        self.frames: list[int] = []  # per checkpoint: the frames the WAL held

    def execute(self, sql: str, *args: Any) -> Any:
        cursor = self._connection.execute(sql, *args)
        if "wal_checkpoint" not in sql:
            return cursor
        self.taken.append(self._lock._is_owned())  # a reentrant lock: held by this thread?
        found = cursor.fetchone()
        self.frames.append(found[1])
        return _Row(found)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _Row:
    """A checkpoint's cursor, its one row already read."""

    def __init__(self, row: Any) -> None:
        self._row = row

    def fetchone(self) -> Any:
        return self._row


def test_a_due_checkpoint_copies_the_wal_beside_creates_then_folds_the_rest_under_the_lock(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create on its caller's thread waits for the write lock, not for the copying.

    The copy and its syncs took 25-45 ms under the lock, ten times in a burst of
    2,000 starts; a PASSIVE checkpoint beside the writes copies most of it, and
    the second, under the lock, copies what came meanwhile: the WAL is folded
    back whole, and starts over at the next write.
    """
    monkeypatch.setattr(sqlite_module, "IDLE_INTERVAL", 3600.0)  # no checkpoint of its own
    store = SQLiteStore(db)
    try:
        for index in range(20):
            assert store.create(record(f"run-{index}"))
        seen = _Checkpoints(store._connection, store._write_lock)
        monkeypatch.setattr(store, "_connection", seen)
        store._transactions = store._checkpointed_at + sqlite_module.CHECKPOINT_AT_LEAST_EVERY
        store._locked_checkpoint(idle=False)
        assert seen.taken == [False, True]
        assert not store._wal_due(idle=False)
        monkeypatch.undo()
        assert store.create(record("one-more"))
        with raw(db) as connection:  # folded back whole: the WAL started over at that create
            log = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        assert log < seen.frames[0] / 4, (log, seen.frames)
    finally:
        monkeypatch.undo()
        store.close()


# --- the store keeps a run's order -------------------------------------------------


def test_the_store_ignores_an_older_snapshot_of_a_run(sqlite_store: SQLiteStore) -> None:
    assert sqlite_store.create(record("r", seq=0))
    save_and_wait(sqlite_store, record("r", seq=2, status="running", data=b"two"))
    save_and_wait(sqlite_store, record("r", seq=1, status="pending", data=b"one"))
    stored = sqlite_store.load("r")
    assert stored is not None
    assert (stored.seq, stored.status, stored.data) == (2, "running", b"two")


def test_the_store_keeps_a_terminal_snapshot_final(sqlite_store: SQLiteStore) -> None:
    assert sqlite_store.create(record("r", seq=0))
    save_and_wait(sqlite_store, record("r", seq=3, status="success", data=b"done"))
    save_and_wait(sqlite_store, record("r", seq=4, status="running", data=b"again"))
    stored = sqlite_store.load("r")
    assert stored is not None
    assert (stored.seq, stored.status, stored.data) == (3, "success", b"done")


def test_the_order_holds_between_two_stores_on_one_file(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    other = SQLiteStore(db)
    try:
        assert sqlite_store.create(record("r", seq=0), hold=False)  # nobody holds it: both write
        save_and_wait(sqlite_store, record("r", seq=5, status="running", data=b"five"))
        save_and_wait(other, record("r", seq=4, status="running", data=b"four"))
        save_and_wait(sqlite_store, record("r", seq=6, status="failed", data=b"six"))
        save_and_wait(other, record("r", seq=7, status="running", data=b"seven"))
    finally:
        other.close()
    stored = sqlite_store.load("r")
    assert stored is not None
    assert (stored.seq, stored.status, stored.data) == (6, "failed", b"six")


def test_create_refuses_a_run_id_that_is_taken(sqlite_store: SQLiteStore) -> None:
    assert sqlite_store.create(record("r", data=b"first"))
    assert not sqlite_store.create(record("r", data=b"second"))
    stored = sqlite_store.load("r")
    assert stored is not None and stored.data == b"first"


# --- group commit -----------------------------------------------------------------


def test_concurrent_creates_commit_in_fewer_transactions_than_calls(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 40
    batches: list[int] = []
    first_commit = threading.Event()
    go_on = threading.Event()
    submitted = Counter()
    commit, submit = SQLiteStore._commit, SQLiteStore._submit

    def counting_commit(self, connection, writes):  # type: ignore[no-untyped-def]
        batches.append(len(writes))
        if len(batches) == 1:
            first_commit.set()
            go_on.wait(10)  # hold the first transaction until every create is queued
        return commit(self, connection, writes)

    def counting_submit(self, kind, payload, done):  # type: ignore[no-untyped-def]
        write = submit(self, kind, payload, done)
        submitted.add(kind)
        return write

    monkeypatch.setattr(SQLiteStore, "_commit", counting_commit)
    monkeypatch.setattr(SQLiteStore, "_submit", counting_submit)
    # The writer's group commit, which a create uses when it cannot commit on its own thread.
    monkeypatch.setattr(SQLiteStore, "_fast_creates", False)
    store = SQLiteStore(db)
    created: list[bool] = []
    try:
        threads = [
            threading.Thread(target=lambda i=i: created.append(store.create(record(f"r{i}"))))
            for i in range(calls)
        ]
        for thread in threads:
            thread.start()
        assert first_commit.wait(10)
        wait_until(lambda: submitted["create"] == calls, what="every create queued")
        go_on.set()
        for thread in threads:
            thread.join(10)
    finally:
        go_on.set()
        store.close()
    assert created == [True] * calls
    assert len(batches) <= 3, f"{calls} creates took {len(batches)} transactions: {batches}"
    with raw(db) as connection:
        assert connection.execute("SELECT count(*) FROM runs").fetchone()[0] == calls


# --- another writer holds the lock --------------------------------------------------


def test_runs_started_while_another_writer_holds_the_lock_commit_once_it_lets_go(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.05)
    rt = runtimes.start(db)
    wf = rt.register(quick_workflow())
    counter, gate, entered = Counter(), runtimes.gate(), threading.Event()
    held = rt.register(held_workflow(counter, gate, entered))
    in_flight = held.create_run()
    in_flight.start_async(input_data={"value": "v"})
    assert entered.wait(10)
    started: list[str] = []
    with capture_logs() as logs, raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        runs = [wf.create_run() for _ in range(5)]
        threads = [
            threading.Thread(
                target=lambda run=run: started.append(
                    run.start_async(input_data={"value": run.run_id}).run_id
                )
            )
            for run in runs
        ]
        for thread in threads:
            thread.start()
        gate.set()  # the held run's next snapshots now wait behind the lock too
        wait_until(
            lambda: sum(1 for e in logs if e["event"] == "store_locked") >= 3,
            what="the store retried the locked database",
        )
        assert started == [], "start_async returned before its run could be committed"
        assert wf.list_workflow_runs().total == 0  # reading goes on meanwhile
        other_writer.execute("COMMIT")
        for thread in threads:
            thread.join(10)
    assert sorted(started) == sorted(run.run_id for run in runs)
    for run in runs:
        assert run.wait(timeout=10).result == {"value": run.run_id.upper()}
    assert in_flight.wait(timeout=10).result == {"value": "v-1-2-3"}
    assert (counter["first"], counter["hold"], counter["last"]) == (1, 1, 1)


def _posix_locks_held_here(path: Path) -> list[str]:
    """This process's POSIX locks on ``path``, as /proc/locks lists them (Linux)."""
    inode = os.stat(path).st_ino
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "POSIX" in fields and str(os.getpid()) in fields:
            index = fields.index(str(os.getpid()))
            if fields[index + 1].endswith(f":{inode}"):
                held.append(" ".join(fields[index - 1 :]))
    return sorted(held)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_opening_a_second_store_on_a_file_keeps_the_locks_the_first_holds(
    db: Path, runtimes: Runtimes
) -> None:
    # Closing any descriptor of a file drops every POSIX lock the process holds on it.
    # Opening a store checked that the file was writable by opening and closing it, so
    # a second runtime on the file in one process (a worker beside a client, as the
    # README shows) dropped the first one's SQLite locks: another process then took the
    # file for unused, checkpointed and deleted its WAL under the open connections, and
    # the file was "malformed".
    first = runtimes.start(db)
    first.register(quick_workflow()).create_run().start(input_data={"value": "v"}, timeout=10)
    held = _posix_locks_held_here(db)
    assert held, "a store in WAL mode holds a shared lock on its file"
    second = SQLiteStore(db)
    try:
        assert _posix_locks_held_here(db) == held
    finally:
        second.close()


@contextlib.contextmanager
def _read_only_mount(folder: Path) -> Iterator[None]:
    """``folder`` bind-mounted read-only over itself; skips where this cannot be done."""
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to make a read-only bind mount")
    if subprocess.run([mount, "--bind", str(folder), str(folder)], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    try:
        subprocess.run([mount, "-o", "remount,bind,ro", str(folder), str(folder)], check=True)
        yield
    finally:
        # A file still open there keeps it busy: detach it anyway, then say so.
        if subprocess.run(["umount", str(folder)], check=False).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=False)
            raise AssertionError(f"{folder} was still in use: a file there was left open")


def test_a_finished_store_on_read_only_media_is_read(tmp_path: Path, runtimes: Runtimes) -> None:
    # SQLite cannot make the -shm file a database in WAL mode needs there: "is not a
    # callboard run store (SQLite says: unable to open database file)".
    rt = runtimes.start(tmp_path / "runs.db")
    result = rt.register(quick_workflow()).create_run().start(input_data={"value": "v"})
    rt.stop()
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(tmp_path / "runs.db", media / "runs.db")
    (media / "late.db").write_bytes((tmp_path / "runs.db").read_bytes())
    (media / "late.db-wal").write_bytes(b"\0" * 100)  # a log a writer left behind
    with _read_only_mount(media):
        with RunReader(media / "runs.db") as reader:
            found = reader.get_run(result.run_id)
            assert found is not None and found.status == "success"
        with pytest.raises(StoreError, match="read-only file system with a write-ahead log"):
            RunReader(media / "late.db")


def test_the_schedules_of_a_finished_store_on_read_only_media_are_listed(
    tmp_path: Path, runtimes: Runtimes, capsys: pytest.CaptureFixture[str]
) -> None:
    # runs list read such a store, while schedules list said "unable to open database file".
    rt = runtimes.start(tmp_path / "runs.db")
    rt.schedule(quick_workflow(), cron="0 * * * *", input_data={"value": "v"}, schedule_id="hourly")
    rt.stop()
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(tmp_path / "runs.db", media / "runs.db")  # a backup: the database file alone
    with _read_only_mount(media):
        code = main(["schedules", "list", "--json", "--db", str(media / "runs.db")])
        out, err = capsys.readouterr()
    assert code == 0, err
    assert [schedule["schedule_id"] for schedule in json.loads(out)] == ["hourly"]


def test_a_start_that_outlasts_the_create_timeout_raises_and_records_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.05)
    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", 0.3)
    rt = runtimes.start(db)
    wf = rt.register(quick_workflow())
    run = wf.create_run()
    with raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as caught:
            run.start_async(input_data={"value": "v"})
        other_writer.execute("COMMIT")
    assert run.run_id in str(caught.value)
    assert "not recorded" in str(caught.value)
    # A run started after the lock is gone commits behind the abandoned one.
    assert wf.create_run().start(input_data={"value": "w"}, timeout=10).status == "success"
    assert row(db, run.run_id) is None
    assert wf.get_workflow_run_execution_result(run.run_id) is None
    # Told it was not recorded, the caller can start the same run again.
    assert run.start(input_data={"value": "v"}, timeout=10).result == {"value": "V"}


def test_writes_that_outlast_the_timeout_raise_store_unavailable_and_are_dropped(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    # Each write a caller waits for, not only a start's: a delete (and a cancel request,
    # a worker's heartbeat, claim and reap) that timed out raised a bare TimeoutError,
    # and was carried out later all the same.
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.05)
    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", 0.3)
    rt = runtimes.start(db)
    wf = rt.register(quick_workflow())
    run = wf.create_run()
    assert run.start(input_data={"value": "v"}, timeout=10).status == "success"
    store = rt.store
    assert isinstance(store, SQLiteStore)
    with raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match=r"locked .* not deleted"):
            wf.delete_workflow_run_by_id(run.run_id)
        with pytest.raises(StoreUnavailableError, match=r"locked .* no cancel"):
            store.request_cancel(run.run_id)
        with pytest.raises(StoreUnavailableError, match=r"locked .* not renewed"):
            store.heartbeat()
        other_writer.execute("COMMIT")
    time.sleep(0.5)  # the writer's next transactions: the dropped writes are not in them
    assert row(db, run.run_id) is not None
    assert wf.get_workflow_run_execution_result(run.run_id) is not None


# --- a corrupted row -----------------------------------------------------------------


def corrupt(db: Path, run_id: str) -> None:
    with raw(db) as connection:
        changed = connection.execute(
            "UPDATE runs SET snapshot = x'00ff' WHERE run_id = ?", (run_id,)
        ).rowcount
    assert changed == 1


def test_a_corrupted_run_is_listed_as_unreadable_and_the_others_still_list(
    db: Path, runtimes: Runtimes
) -> None:
    wf = runtimes.start(db).register(quick_workflow())
    ids = [wf.create_run().start(input_data={"value": str(i)}).run_id for i in range(3)]
    corrupt(db, ids[1])
    with capture_logs() as logs:
        page = wf.list_workflow_runs()
    assert page.unreadable == [ids[1]]
    assert sorted(r.run_id for r in page.runs) == sorted([ids[0], ids[2]])
    assert page.total == 3
    assert any(e["event"] == "run_unreadable" and e["run_id"] == ids[1] for e in logs)
    with RunReader(db) as reader:
        assert reader.list_runs().unreadable == [ids[1]]


def test_reading_a_corrupted_run_raises_snapshot_format_error_naming_it(
    db: Path, runtimes: Runtimes
) -> None:
    wf = runtimes.start(db).register(quick_workflow())
    run_id = wf.create_run().start(input_data={"value": "v"}).run_id
    corrupt(db, run_id)
    with pytest.raises(SnapshotFormatError) as caught:
        wf.get_workflow_run_by_id(run_id)
    assert run_id in str(caught.value)
    assert caught.value.run_id == run_id


# --- durability ---------------------------------------------------------------------


def test_a_run_is_committed_when_start_async_returns(db: Path, runtimes: Runtimes) -> None:
    wf = runtimes.start(db).register(quick_workflow())
    with raw(db) as other_process_view:
        for i in range(20):
            run_id = wf.create_run().start_async(input_data={"value": str(i)}).run_id
            found = other_process_view.execute(
                "SELECT workflow_id FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            assert found == ("quick",), f"run {i} was not committed when start_async returned"


def test_a_steps_output_is_committed_before_the_next_step_starts(
    db: Path, monkeypatch: pytest.MonkeyPatch, runtimes: Runtimes
) -> None:
    seen = []
    looked = threading.Event()
    commit = SQLiteStore._commit

    def second(ctx):  # type: ignore[no-untyped-def]
        with RunReader(db) as reader:
            seen.append(reader.get_run(ctx.run_id))
        looked.set()
        return Value(value=ctx.input_data.value + "-2")

    def slow_commit(self, connection, writes):  # type: ignore[no-untyped-def]
        # Hold back the snapshot that starts the second step until that step has
        # looked (or a moment has passed): a step that did not wait for it sees it missing.
        if any(
            write.kind == "save" and any("second" in decode(r.data)["steps"] for r in write.payload)
            for write in writes
        ):
            looked.wait(0.3)
        return commit(self, connection, writes)

    monkeypatch.setattr(SQLiteStore, "_commit", slow_commit)
    workflow = (
        create_workflow(id="two", input_schema=Value, output_schema=Value)
        .then(
            create_step(
                id="first",
                input_schema=Value,
                output_schema=Value,
                execute=lambda ctx: Value(value=ctx.input_data.value + "-1"),
            )
        )
        .then(create_step(id="second", input_schema=Value, output_schema=Value, execute=second))
        .commit()
    )
    wf = runtimes.start(db).register(workflow)
    assert wf.create_run().start(input_data={"value": "v"}, timeout=10).status == "success"
    [view] = seen
    assert view is not None
    assert view.steps["first"].status == "success"
    assert view.steps["first"].output == {"value": "v-1"}
    assert view.steps["second"].status == "running"


def test_a_run_waited_on_is_committed_when_the_wait_returns(db: Path, runtimes: Runtimes) -> None:
    wf = runtimes.start(db).register(quick_workflow())
    for i in range(10):
        run = wf.create_run()
        result = run.start(input_data={"value": str(i)}, timeout=10)
        stored = row(db, run.run_id)
        assert stored is not None and stored["status"] == result.status == "success"


def test_readers_see_a_durable_run_go_through_its_steps(db: Path, runtimes: Runtimes) -> None:
    counter, gate, entered = Counter(), runtimes.gate(), threading.Event()
    wf = runtimes.start(db).register(held_workflow(counter, gate, entered))
    run = wf.create_run()
    run.start_async(input_data={"value": "v"})
    assert entered.wait(10)
    with RunReader(db) as reader:
        during = reader.get_run(run.run_id)
        gate.set()
        run.wait(timeout=10)
        after = reader.get_run(run.run_id)
    assert during.status == "running"
    assert {k: s.status for k, s in during.steps.items()} == {"first": "success", "hold": "running"}
    assert after.status == "success" and after.result == {"value": "v-1-2-3"}
