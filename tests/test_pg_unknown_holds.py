"""A run a worker holds in the database without knowing it is found and driven.

Such a run has no actor in the worker, and no other worker takes it while the worker
lives (its lease is renewed). A claim whose commit was never acknowledged leaves one, and
so did a server restart during a storm of calls (``tests/test_races.py``), by a way not
found. Here the row is made so by hand: the worker's id and a new epoch on a queued run,
as a claim that committed unseen leaves it, with no reconnect to tell the worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from runtime import Runtime, create_step, create_workflow
from tests._support import wait_for_no_callboard_threads

pytestmark = pytest.mark.postgres


class Number(BaseModel):
    n: int


def _double(ctx: Any) -> Number:
    return Number(n=ctx.input_data.n * 2)


def _doubling(workflow_id: str) -> Any:
    """A workflow of one step that doubles its input's ``n``."""
    step = create_step(id="double", input_schema=Number, output_schema=Number, execute=_double)
    return (
        create_workflow(id=workflow_id, input_schema=Number, output_schema=Number)
        .then(step)
        .commit()
    )


WORKFLOW = _doubling("unknown-hold")
OTHER = _doubling("unknown-hold-other")


def test_a_run_held_in_the_database_unknown_to_its_worker_is_driven_by_it(
    postgres_url: str,
) -> None:
    import psycopg

    with (
        Runtime(store=postgres_url, role="worker") as worker,
        Runtime(store=postgres_url, role="client") as client,
    ):
        store = worker._host.store
        # The worker claims (a run of another workflow goes through it), and doubts
        # nothing: no commit of its went unacknowledged, no connection was lost.
        worker.register(OTHER)
        other = client.register(OTHER).create_run()
        assert other.start(input_data={"n": 1}, timeout=10).status == "success"
        assert not store._ambiguous
        run = client.register(WORKFLOW).create_run()
        run.start_async(input_data={"n": 21})
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            taken = connection.execute(
                "UPDATE callboard_runs SET owner_id = %s, epoch = epoch + 1 "
                "WHERE run_id = %s AND owner_id IS NULL RETURNING run_id",
                (store.owner_id, run.run_id),
            ).fetchall()
        assert taken == [(run.run_id,)]
        with capture_logs() as logs:
            worker.register(WORKFLOW)  # its claims skip the run: its row has an owner
            # Within a few times ADOPT_EVERY (5 s): the worker's lease is renewed, so no
            # reap hands the run back; before it, the run stayed there for good.
            result = run.wait(timeout=20)
        assert result.status == "success" and result.result == {"n": 42}
        found = [e for e in logs if e["event"] == "store_runs_held_unknowingly"]
        assert [e["runs"] for e in found] == [[run.run_id]]
    wait_for_no_callboard_threads()
