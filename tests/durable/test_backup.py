"""``SQLiteStore.backup()`` and ``callboard backup``: a whole copy of a store in use.

A daemon writes to its store all the time, and the WAL beside the file holds
its newest commits: a ``cp`` of the file alone misses them. The backup is one
read transaction's view, so every run acknowledged before it began is in the
copy, and a runtime opened on the copy goes on with the unfinished ones at
once (the workers of the original hold nothing in the copy). A copy that
cannot be finished (a full disk) leaves nothing at its destination; a
destination that would break the copy (a ``-wal`` of another database beside
it) or lose a file (it exists, it is the store itself) is refused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import (
    RunStatus,
    Runtime,
    SQLiteStore,
    StoreBackup,
    StoreError,
    create_step,
    create_workflow,
)
from runtime._cli import main
from tests._support import Value, end_child, python_child, small_tmpfs

WAIT = 60.0


def _echo(ctx: object) -> Value:
    return Value(value=ctx.input_data.value)  # type: ignore[attr-defined]


ECHO = (
    create_workflow(id="backup-echo", input_schema=Value, output_schema=Value)
    .then(create_step(id="echo", input_schema=Value, output_schema=Value, execute=_echo))
    .commit()
)

WRITER = textwrap.dedent(
    """
    import sys, threading, time
    from runtime import Runtime, SQLiteStore, create_step, create_workflow
    from tests._support import Value

    def slow(ctx):
        time.sleep(0.02)
        return Value(value=ctx.input_data.value)

    wf = (
        create_workflow(id="backup-echo", input_schema=Value, output_schema=Value)
        .then(create_step(id="echo", input_schema=Value, output_schema=Value, execute=slow))
        .commit()
    )
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    # A long lease: in the original, nobody takes these runs while the test looks.
    with Runtime(store=SQLiteStore(sys.argv[1], lease=600.0)) as rt:
        bound = rt.register(wf)
        index = 0
        while not stop.is_set():
            run_id = f"run-{index:05d}"
            bound.create_run(run_id).start_async(input_data={"value": run_id})
            print(run_id, flush=True)  # acknowledged: start_async returned
            index += 1
            time.sleep(0.002)
    """
)


@contextlib.contextmanager
def writing_child(db: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that starts runs on ``db`` without pause, printing each acknowledged id."""
    child = python_child(WRITER, str(db))
    try:
        yield child
    finally:
        end_child(child, WAIT)


def acknowledged(child: subprocess.Popen[str], count: int) -> list[str]:
    """The next ``count`` run ids the child says it started."""
    assert child.stdout is not None
    ids = []
    for _ in range(count):
        line = child.stdout.readline()
        assert line, f"the writing child ended (exit {child.wait()})"
        ids.append(line.strip())
    return ids


def stored_ids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT run_id FROM runs")}


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_backup_while_another_process_writes_holds_every_run_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    with writing_child(db) as child:
        before = acknowledged(child, 150)
        store = SQLiteStore(db, readonly=True)
        try:
            done = store.backup(copy)
        finally:
            store.close()
        acknowledged(child, 20)  # the child goes on writing after the copy
    assert isinstance(done, StoreBackup)
    assert done.path == copy
    assert integrity(copy) == "ok"
    in_copy = stored_ids(copy)
    missing = [run_id for run_id in before if run_id not in in_copy]
    assert not missing, f"acknowledged before the backup, not in it: {missing[:5]}"
    assert done.runs == len(in_copy) >= len(before)
    assert len(stored_ids(db)) > done.runs, "the copy is of a moment, not of the end"
    assert done.size == copy.stat().st_size
    assert copy.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.db")] == []


def test_a_runtime_on_the_copy_finishes_its_unfinished_runs_at_once(tmp_path: Path) -> None:
    """The original's workers hold nothing in the copy: not even a lease to wait out.

    The original's worker is alive and writing all along, with a lease of 600 s:
    were its row copied, the runs it held in the copy would wait for it.
    """
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    with writing_child(db) as child:
        acknowledged(child, 100)
        store = SQLiteStore(db, readonly=True)
        try:
            done = store.backup(copy)
        finally:
            store.close()
        assert done.unfinished > 0, "the copy caught no run in progress: it proves nothing"
        with Runtime(store=SQLiteStore(copy, lease=600.0)) as rt:
            bound = rt.register(ECHO)
            runs = bound.list_workflow_runs(limit=None).runs
            assert len(runs) == done.runs
            for found in runs:
                result = bound.create_run(found.run_id).wait(timeout=WAIT / 2)
                assert result.status == RunStatus.SUCCESS, (found.run_id, result.status)
                assert result.result == {"value": found.run_id}
        assert child.poll() is None, "the original's worker ended before the copy's runs"


def test_overwrite_replaces_the_file_whole(tmp_path: Path) -> None:
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    copy.write_bytes(b"an older backup")
    with Runtime(store=db) as rt:
        bound = rt.register(ECHO)
        bound.create_run("one").start(input_data={"value": "one"})
        store = rt.store
        assert isinstance(store, SQLiteStore)
        with pytest.raises(StoreError, match="the file exists"):
            store.backup(copy)
        assert copy.read_bytes() == b"an older backup"
        done = store.backup(copy, overwrite=True)
    assert done.runs == 1 and done.unfinished == 0
    assert stored_ids(copy) == {"one"}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda db, dest: dest.mkdir(), "it is a directory"),
        (lambda db, dest: dest.with_name("copy.db-wal").write_bytes(b"x"), "copy.db-wal is beside"),
        (lambda db, dest: dest.with_name("copy.db-journal").write_bytes(b"x"), "-journal is"),
    ],
    ids=["directory", "wal-beside", "journal-beside"],
)
def test_a_destination_that_would_break_the_copy_is_refused(
    tmp_path: Path, make: object, says: str
) -> None:
    db, dest = tmp_path / "live.db", tmp_path / "copy.db"
    make(db, dest)  # type: ignore[operator]
    with Runtime(store=db) as rt:
        store = rt.store
        assert isinstance(store, SQLiteStore)
        with pytest.raises(StoreError, match=says):
            store.backup(dest, overwrite=True)
    assert not dest.is_file()


def test_the_store_itself_and_missing_folders_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    (tmp_path / "link.db").symlink_to(db)
    with Runtime(store=db) as rt:
        store = rt.store
        assert isinstance(store, SQLiteStore)
        for itself in (db, tmp_path / "link.db"):
            with pytest.raises(StoreError, match="to itself"):
                store.backup(itself, overwrite=True)
        with pytest.raises(StoreError, match="does not exist"):
            store.backup(tmp_path / "nowhere" / "copy.db")
        with pytest.raises(StoreError, match="empty path"):
            store.backup("  ")
        with pytest.raises(TypeError, match="must be a path"):
            store.backup(42)  # type: ignore[arg-type]
    assert integrity(db) == "ok"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 1 MiB ``tmpfs`` of its own: a disk that fills half-way through a copy."""
    with small_tmpfs("1m", "a full disk at a backup's destination") as mount:
        yield mount


def test_a_full_disk_leaves_nothing_at_the_destination(tmp_path: Path, small_disk: Path) -> None:
    db = tmp_path / "live.db"
    with Runtime(store=db) as rt:
        bound = rt.register(ECHO)
        for index in range(40):  # about 2 MB: more than the disk holds
            bound.create_run(f"big-{index}").start(input_data={"value": "x" * 50_000})
        store = rt.store
        assert isinstance(store, SQLiteStore)
        with pytest.raises(StoreError, match="full"):
            store.backup(small_disk / "copy.db")
        assert list(small_disk.iterdir()) == [], "a failed copy left a file behind"
        # Room again: the same backup goes through.
        done = store.backup(tmp_path / "copy.db")
    assert done.runs == 40


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_backs_up_and_says_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    with Runtime(store=db) as rt:
        bound = rt.register(ECHO)
        for index in range(3):
            bound.create_run(f"r{index}").start(input_data={"value": "hi"})
    code, out, err = run_cli("--db", str(db), "backup", str(copy), capsys=capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"backed up 3 runs (0 not ended) to {copy}: ")
    assert stored_ids(copy) == {"r0", "r1", "r2"}
    code, out, err = run_cli("--db", str(db), "backup", str(copy), capsys=capsys)
    assert code == 2 and "the file exists" in err and "--force" in err
    code, out, err = run_cli(
        "--db", str(db), "backup", "--force", "--json", str(copy), capsys=capsys
    )
    assert code == 0
    said = json.loads(out)
    assert said["path"] == str(copy) and said["runs"] == 3 and said["unfinished"] == 0
    assert said["bytes"] == copy.stat().st_size


def test_the_command_sends_a_postgresql_store_to_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://nobody@127.0.0.1:1/nothing"
    code, out, err = run_cli("--db", url, "backup", str(tmp_path / "copy.db"), capsys=capsys)
    assert code == 2 and out == ""
    assert "pg_dump" in err
    assert not (tmp_path / "copy.db").exists()


def test_the_command_on_no_store_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        "--db", str(tmp_path / "none.db"), "backup", str(tmp_path / "copy.db"), capsys=capsys
    )
    assert code == 2 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_restore_puts_the_backup_in_place_and_drops_the_old_files_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process killed on the store leaves a -wal: restored beside it, it would be replayed."""
    db, copy = tmp_path / "live.db", tmp_path / "copy.db"
    with writing_child(db) as child:
        acknowledged(child, 100)
        SQLiteStore(db, readonly=True).backup(copy)
        acknowledged(child, 100)  # runs the copy does not hold
        child.kill()
    wal = db.with_name("live.db-wal")
    assert wal.exists() and wal.stat().st_size > 0, "no log left behind: the test proves nothing"
    in_copy = stored_ids(copy)
    # What a plain copy over the file does: the old log is replayed onto the backup.
    naive = tmp_path / "naive"
    naive.mkdir()
    shutil.copyfile(copy, naive / "live.db")
    shutil.copyfile(wal, naive / "live.db-wal")
    try:
        plainly = stored_ids(naive / "live.db")
    except (sqlite3.DatabaseError, AssertionError):
        plainly = None  # damaged outright
    assert plainly != in_copy

    code = main(["--db", str(db), "restore", str(copy)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert (
        out.startswith(f"restored {len(in_copy)} runs (") and "removed the old live.db-wal" in out
    )
    assert not wal.exists()
    assert stored_ids(db) == in_copy and integrity(db) == "ok"
    assert db.stat().st_mode & 0o777 == 0o600
    with Runtime(store=db) as rt:  # the copy's runs, each finished once
        bound = rt.register(ECHO)
        for run_id in sorted(in_copy):
            result = bound.create_run(run_id).wait(timeout=WAIT)
            assert result.status == RunStatus.SUCCESS, (run_id, result.status)


def test_restore_refuses_a_store_a_runtime_uses_and_what_is_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, copy, text = tmp_path / "live.db", tmp_path / "copy.db", tmp_path / "notes.txt"
    text.write_text("not a database")
    with Runtime(store=db) as rt:
        rt.register(ECHO).create_run("kept").start(input_data={"value": "k"})
        store = rt.store
        assert isinstance(store, SQLiteStore)
        store.backup(copy)
        rt.register(ECHO).create_run("later").start(input_data={"value": "l"})
        assert main(["--db", str(db), "restore", str(copy)]) == 2
        assert "runtimes use it" in capsys.readouterr().err
        assert stored_ids(db) == {"kept", "later"}
    for bad, says in ((text, "file is not a database"), (tmp_path / "none.db", "no such file")):
        assert main(["--db", str(db), "restore", str(bad)]) == 2
        assert says in capsys.readouterr().err
    assert main(["--db", "postgresql://nobody@127.0.0.1:1/x", "restore", str(copy)]) == 2
    assert "pg_restore" in capsys.readouterr().err
    assert stored_ids(db) == {"kept", "later"}
    assert main(["--db", str(db), "restore", "--json", str(copy)]) == 0  # stopped: it may
    said = json.loads(capsys.readouterr().out)
    assert (said["runs"], said["unfinished"]) == (1, 0)
    assert stored_ids(db) == {"kept"}
