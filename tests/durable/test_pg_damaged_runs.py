"""On PostgreSQL too, a run whose stored snapshot is damaged fails alone, and every other goes on.

The same promises as ``tests/durable/test_damaged_runs.py`` holds for SQLite: a
flipped bit in a run's row or in one of its parts, a snapshot naming another
run, is caught by its checksum (or its checks) when a worker takes the run up,
and the run is recorded ``failed`` with a ``SnapshotFormatError``, its bytes
kept; the other runs, and the runtime, go on. The damage is done with SQL, as a
bad disk or a hand-made ``UPDATE`` would leave it (PostgreSQL's own page
checksums are off unless the cluster was made with them).
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

import runtime._snapshot as snapshot_module
from runtime import (
    RunNotRestartableError,
    Runtime,
    SnapshotFormatError,
)
from runtime._snapshot import WHOLE_UNTIL, encode, is_parted, unpack
from tests._support import wait_until
from tests.durable.test_damaged_runs import (
    asking_workflow,
    flip_a_bit,
    held_workflow,
    leave_unfinished,
    open_gate,
    status_of,
)

pytestmark = pytest.mark.postgres

WAIT = 10.0


def stored(url: str, run_id: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The run's row's bytes, and its parts (key, bytes) of its current lineage."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        snapshot, lineage = connection.execute(
            "SELECT snapshot, lineage FROM callboard_runs WHERE run_id = %s", (run_id,)
        ).fetchone()
        parts = connection.execute(
            "SELECT key, part FROM callboard_run_parts WHERE run_id = %s AND lineage = %s "
            "ORDER BY key",
            (run_id, lineage),
        ).fetchall()
    return bytes(snapshot), [(key, bytes(part)) for key, part in parts]


def overwrite_row(url: str, run_id: str, data: bytes) -> None:
    """Put ``data`` in the run's row in place of its snapshot (its parts stay)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE callboard_runs SET snapshot = %s WHERE run_id = %s", (data, run_id)
        )


def overwrite_part(url: str, run_id: str, key: str, data: bytes) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE callboard_run_parts SET part = %s WHERE run_id = %s AND key = %s "
            "AND lineage = (SELECT lineage FROM callboard_runs WHERE run_id = %s)",
            (data, run_id, key, run_id),
        )


def another_runs_id(data: bytes) -> bytes:
    """The same snapshot, naming another run (only of a snapshot kept whole)."""
    return encode({**unpack(data), "run_id": "somebody-else"})


@pytest.mark.parametrize("damage", ["flipped bit", "another run's id"])
def test_a_damaged_unfinished_run_fails_alone_when_a_worker_takes_it_up(
    postgres_url: str, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if damage == "another run's id":
        # Rewritten whole, as a snapshot too small for parts is kept (in parts, the run's id
        # lies in the head, whose flipped bit the other case covers).
        monkeypatch.setattr(snapshot_module, "WHOLE_UNTIL", WHOLE_UNTIL)
    leave_unfinished(postgres_url, ["healthy", "damaged"])  # type: ignore[arg-type]
    row, parts = stored(postgres_url, "damaged")
    damaged = flip_a_bit(row) if damage == "flipped bit" else another_runs_id(row)
    overwrite_row(postgres_url, "damaged", damaged)

    with capture_logs() as logs, Runtime(store=postgres_url) as rt:
        wf = rt.register(held_workflow(open_gate()))
        wait_until(
            lambda: status_of(wf, "damaged") == "failed", what="the damaged run recorded failed"
        )
        healthy = wf.create_run("healthy").wait(WAIT)
        fresh = wf.create_run().start(input_data={"value": "after"}, timeout=WAIT)
        with pytest.raises(RunNotRestartableError, match="rebuilt from its row alone"):
            wf.create_run("damaged").restart_async()
        failed = wf.get_workflow_run_execution_result("damaged")

    assert healthy.status == "success" and healthy.result == {"value": "HEALTHY"}
    assert fresh.status == "success"
    assert failed is not None and failed.error is not None
    assert failed.error.name == "SnapshotFormatError"
    # The damaged bytes, kept: its row's, then its parts' (joined in any order).
    kept = unpack(stored(postgres_url, "damaged")[0])["damaged"]
    assert kept[: len(damaged)] == damaged
    assert len(kept) == len(damaged) + sum(len(part) for _, part in parts)
    assert any(e["event"] == "run_failed_unreadable" for e in logs)
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        ids = {row[0] for row in connection.execute("SELECT run_id FROM callboard_runs")}
    assert "somebody-else" not in ids  # no row for a run nobody started


@pytest.mark.parametrize("kind", ["s", "v"], ids=["step record", "value"])
def test_a_flipped_bit_in_a_stored_part_fails_that_run_alone(postgres_url: str, kind: str) -> None:
    padding = "." * WHOLE_UNTIL  # kept in parts
    leave_unfinished(postgres_url, ["healthy", "damaged"], padding)  # type: ignore[arg-type]
    row, parts = stored(postgres_url, "damaged")
    assert is_parted(row), "the run is kept in parts"
    key, part = next((key, part) for key, part in parts if key.startswith(kind))
    overwrite_part(postgres_url, "damaged", key, flip_a_bit(part))

    with Runtime(store=postgres_url) as rt:
        wf = rt.register(held_workflow(open_gate()))
        wait_until(
            lambda: status_of(wf, "damaged") == "failed", what="the damaged run recorded failed"
        )
        healthy = wf.create_run("healthy").wait(WAIT)
        failed = wf.get_workflow_run_execution_result("damaged")

    assert healthy.status == "success" and healthy.result == {"value": "HEALTHY" + padding}
    assert failed is not None and failed.error is not None
    assert failed.error.name == "SnapshotFormatError"


def test_a_suspended_run_whose_snapshot_is_damaged_can_be_cancelled_then_deleted(
    postgres_url: str,
) -> None:
    workflow = asking_workflow()
    with Runtime(store=postgres_url) as rt:
        run = rt.register(workflow).create_run("held")
        assert run.start(input_data={"value": "v"}, timeout=WAIT).status == "suspended"
    row, _ = stored(postgres_url, "held")
    overwrite_row(postgres_url, "held", flip_a_bit(row))

    with Runtime(store=postgres_url) as rt:
        wf = rt.register(workflow)
        with pytest.raises(SnapshotFormatError):
            wf.get_workflow_run_execution_result("held")
        again = wf.create_run("held")
        assert again.cancel() is True
        result = wf.get_workflow_run_execution_result("held")
        assert result is not None and result.status == "canceled"
        assert result.error is not None and result.error.name == "SnapshotFormatError"
        assert again.cancel() is False
        assert wf.delete_workflow_run_by_id("held") is True
        assert wf.get_workflow_run_execution_result("held") is None
