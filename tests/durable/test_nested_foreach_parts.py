"""A foreach over a nested workflow on SQLite: its lists in parts, read back, and migrated.

Its items and the outputs of the items done were one value of the snapshot (the
scopes), encoded and written whole at every item: a foreach of n items wrote
about n²/2 outputs. Now the items are a part written once and each output a
part of its own. These tests suspend such a foreach in the middle, read it back
in another runtime, resume it there, and take on a file whose run a callboard
from before (schema version 6) left in the middle of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import runtime._snapshot as snapshot_module
from runtime import Runtime, create_step, create_workflow
from runtime._stores.sqlite import SCHEMA_VERSION
from tests._support import Counter, Runtimes
from tests.durable._support.helpers import drop_deadlines, raw

WAIT = 30.0
BEFORE = 6
"""The schema version of the files a callboard wrote before these parts existed."""
SIZE = 150
ASKS_AT = 100


class Item(BaseModel):
    n: int


class Items(BaseModel):
    items: list[Item]


class Answer(BaseModel):
    plus: int


def each_flow(counter: Counter) -> Any:
    """A foreach over a nested workflow whose item ``ASKS_AT`` suspends until resumed."""

    def work(ctx: Any) -> Item:
        n = ctx.input_data.n
        counter.add(str(n))
        if n == ASKS_AT and ctx.resume_data is None:
            ctx.suspend({"item": n})
        plus = 0 if ctx.resume_data is None else ctx.resume_data.plus
        return Item(n=n * 2 + plus)

    ask = create_step(
        id="work", input_schema=Item, output_schema=Item, resume_schema=Answer, execute=work
    )
    inner = create_workflow(id="inner", input_schema=Item, output_schema=Item).then(ask).commit()
    return (
        create_workflow(id="each-parts", input_schema=Items, output_schema=Items)
        .map(lambda ctx: ctx.input_data["items"])
        .foreach(inner)
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )


def part_keys(db: Path | str, run_id: str) -> list[str]:
    """The keys of the run's parts that its row reads (its own lineage's)."""
    if isinstance(db, str):  # a PostgreSQL URL
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            found = connection.execute(
                "SELECT p.key FROM callboard_run_parts p JOIN callboard_runs r "
                "ON r.run_id = p.run_id AND r.lineage = p.lineage WHERE p.run_id = %s",
                (run_id,),
            ).fetchall()
        return sorted(key for (key,) in found)
    with raw(db) as connection:
        rows = connection.execute(
            "SELECT p.key FROM run_parts p JOIN runs r ON r.run_id = p.run_id "
            "AND r.lineage = p.lineage WHERE p.run_id = ?",
            (run_id,),
        ).fetchall()
    return sorted(key for (key,) in rows)


def suspend_in_the_middle(runtimes: Runtimes, db: Path | str, counter: Counter) -> str:
    rt = runtimes.start(db)
    run = rt.register(each_flow(counter)).create_run()
    result = run.start(input_data={"items": [{"n": n} for n in range(SIZE)]}, timeout=WAIT)
    assert result.status == "suspended", result.error
    rt.stop()
    return run.run_id


def resume_and_check(runtimes: Runtimes, db: Path | str, counter: Counter, run_id: str) -> None:
    rt = runtimes.start(db)
    run = rt.register(each_flow(counter)).create_run(run_id)
    result = run.resume(step="inner", resume_data={"plus": 1}, timeout=WAIT)

    assert result.status == "success", result.error
    want = [{"n": n * 2 + (n == ASKS_AT)} for n in range(SIZE)]
    assert result.result == {"items": want}
    assert result.steps["inner"].output == want
    assert result.steps["inner"].payload == [{"n": n} for n in range(SIZE)]
    # Every item done before the suspension ran once; the one that asked, twice.
    assert [counter[str(n)] for n in range(SIZE)] == [1] * ASKS_AT + [2] + [1] * (
        SIZE - ASKS_AT - 1
    )
    keys = part_keys(db, run_id)
    assert not [key for key in keys if key[:1] in ("e", "o")], keys  # gone with the foreach
    rt.stop()


def test_a_foreach_over_a_nested_workflow_suspended_midway_keeps_its_lists_in_parts(
    db: Path, runtimes: Runtimes, snapshot_encoding: str
) -> None:
    counter = Counter()
    run_id = suspend_in_the_middle(runtimes, db, counter)

    keys = part_keys(db, run_id)
    assert "einner#each" in keys  # the items, once
    outputs = sorted(int(key[1:].split(":")[0]) for key in keys if key.startswith("o"))
    assert outputs == list(range(ASKS_AT))  # an output each, for the items done
    with raw(db) as connection:  # the scopes value holds neither list any more
        scopes = [
            len(part)
            for (part,) in connection.execute(
                "SELECT part FROM run_parts WHERE run_id = ? AND key = 'vscopes'", (run_id,)
            )
        ]
    assert all(size < 512 for size in scopes), scopes

    resume_and_check(runtimes, db, counter, run_id)  # read back by another runtime


def test_on_postgresql_too_the_lists_are_parts_and_another_runtime_finishes_the_foreach(
    postgres_url: str, runtimes: Runtimes
) -> None:
    counter = Counter()
    run_id = suspend_in_the_middle(runtimes, postgres_url, counter)

    keys = part_keys(postgres_url, run_id)
    assert "einner#each" in keys
    assert len([key for key in keys if key.startswith("o")]) == ASKS_AT
    assert [key for key in keys if key.startswith("u")] == ["u0"]  # the item that asked
    resume_and_check(runtimes, postgres_url, counter, run_id)


def test_a_file_left_by_the_callboard_before_with_a_foreach_midway_migrates_and_finishes(
    db: Path, runtimes: Runtimes, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter()
    with monkeypatch.context() as before:
        # The encoder as it was: no scope key is a foreach's, so the lists stay in the
        # scopes value, and the file says schema version 6.
        before.setattr(snapshot_module, "EACH_SCOPE", "\x00not a scope key")
        run_id = suspend_in_the_middle(runtimes, db, counter)
    assert not [key for key in part_keys(db, run_id) if key[:1] in ("e", "o")]
    with raw(db) as connection:
        drop_deadlines(connection)  # and what came after
        connection.execute(f"PRAGMA user_version = {BEFORE}")

    resume_and_check(runtimes, db, counter, run_id)

    with raw(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_callboard_from_before_refuses_a_file_that_may_hold_these_parts(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime._stores.sqlite as sqlite_module

    Runtime(store=db).start().stop()
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", BEFORE)

    with pytest.raises(Exception, match="written by a newer callboard"):
        Runtime(store=db).start()
