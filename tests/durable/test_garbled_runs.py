"""A run whose stored snapshot reads back but holds nonsense fails alone, or goes on.

The checksums catch damage to the bytes (``test_damaged_runs``); they cannot
catch a snapshot that was written whole and right but says something that does
not hold: a step record that is a number, a foreach's progress without its
lists, a next step past the end. Such a run, recovered, must end (failed, with
an error that says why) or go on as its snapshot says, and never stop the
runtime, stay in progress for ever or take another run with it. A value that
ends up in its result may leave the result unreadable: a query then raises
``SnapshotFormatError`` naming the run.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime import Runtime, SnapshotFormatError, create_step, create_workflow
from runtime._snapshot import encode, unpack
from tests._support import wait_until
from tests.durable._support.helpers import raw
from tests.durable.test_damaged_runs import overwrite, stored

WAIT = 10.0
_SETTLED = {"success", "failed", "canceled", "suspended", "waiting"}


class Item(BaseModel):
    n: int


class Items(BaseModel):
    items: list[Item]


def garbled_workflow(gate: threading.Event) -> Any:
    def hold(ctx: Any) -> Item:
        gate.wait(WAIT)
        return Item(n=ctx.input_data.n * 2)

    inner = (
        create_workflow(id="garbled-inner", input_schema=Item, output_schema=Item)
        .then(create_step(id="hold", input_schema=Item, output_schema=Item, execute=hold))
        .commit()
    )
    return (
        create_workflow(id="garbled", input_schema=Items, output_schema=Items)
        .map(lambda ctx: ctx.input_data["items"])
        .foreach(inner, concurrency=2)
        .map(lambda ctx: {"items": ctx.input_data})
        .commit()
    )


@pytest.fixture(scope="module")
def left_unfinished() -> Any:
    """A store's file with two runs held in the middle of their foreach, and its snapshot."""
    with tempfile.TemporaryDirectory(prefix="callboard-garbled-") as folder:
        db = Path(folder) / "base.db"
        gate = threading.Event()
        with Runtime(store=db, stop_timeout=0) as rt:
            wf = rt.register(garbled_workflow(gate))
            for run_id in ("target", "healthy"):
                wf.create_run(run_id).start_async(
                    input_data={"items": [{"n": n} for n in range(4)]}
                )
            wait_until(
                lambda: all(
                    (result := wf.get_workflow_run_execution_result(run_id)) is not None
                    and any("hold" in path for path in result.steps)
                    for run_id in ("target", "healthy")
                ),
                what="both runs in a held step of their foreach",
            )
        gate.set()
        with raw(db) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        yield db, unpack(stored(db, "target"))


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_TOP = ["steps", "progress", "scopes", "carry", "next_step", "state", "input", "resume"]


def _garble(snapshot: dict[str, Any], data: st.DataObject) -> tuple[list[Any], Any]:
    """Replace one value somewhere under the snapshot's run-shaped keys; return where and what."""
    path: list[Any] = [data.draw(st.sampled_from(_TOP))]
    holder: Any = snapshot
    while True:
        value = holder[path[-1]]
        inside = (
            list(value)
            if isinstance(value, dict)
            else list(range(len(value)))
            if isinstance(value, list)
            else []
        )
        if not inside or data.draw(st.integers(0, 2)) == 0:
            break
        holder = value
        path.append(data.draw(st.sampled_from(inside)))
    replacement = data.draw(_VALUES)
    holder[path[-1]] = replacement
    return path, replacement


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_a_recovered_run_whose_snapshot_holds_nonsense_ends_alone(
    left_unfinished: Any, data: st.DataObject
) -> None:
    base, snapshot = left_unfinished
    garbled = unpack(encode(snapshot))
    where = _garble(garbled, data)
    with tempfile.TemporaryDirectory(prefix="callboard-garbled-") as folder:
        db = Path(folder) / "runs.db"
        shutil.copyfile(base, db)
        overwrite(db, "target", encode(garbled))

        with Runtime(store=db) as rt:
            wf = rt.register(garbled_workflow(_open()))
            # Settled as the store says: the nonsense may make its result unreadable
            # (below), never keep the run going for ever.
            wait_until(
                lambda: _stored_status(db) in _SETTLED,
                timeout=WAIT,
                what=f"the run garbled at {where} settled",
            )
            healthy = wf.create_run("healthy").wait(WAIT)
            fresh = wf.create_run().start(input_data={"items": [{"n": 5}]}, timeout=WAIT)
            assert rt.is_running

        try:
            target = wf.get_workflow_run_execution_result("target")
        except SnapshotFormatError as exc:  # said plainly, naming the run and the value
            assert "target" in str(exc), where
            target = None

    assert healthy.status == "success", where
    assert healthy.result == {"items": [{"n": n * 2} for n in range(4)]}
    assert fresh.status == "success", where
    if target is not None and target.status == "failed":
        assert target.error is not None and target.error.message, where


def _stored_status(db: Path) -> str | None:
    with raw(db) as connection:
        found = connection.execute("SELECT status FROM runs WHERE run_id = 'target'").fetchone()
    return None if found is None else str(found[0])


def _open() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate
