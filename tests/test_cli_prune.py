"""``callboard runs prune``: delete ended runs by age or count, from a shell."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runtime import SnapshotRecord, SQLiteStore
from runtime._cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store with ten runs, one a day old per index: even ones running, odd ones done."""
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    now = time.time()
    for index in range(10):
        moment = now - index * 86_400
        store.create(
            SnapshotRecord(
                run_id=f"r{index}",
                workflow_id="wf",
                seq=0,
                status="running" if index % 2 == 0 else ("success", "failed")[index % 4 == 3],
                data=b"-",
                created_at=moment,
                updated_at=moment,
                trace_id="ab" * 16,
            )
        )
    store.close()
    return str(path)


def remaining(db: str) -> set[str]:
    store = SQLiteStore(db, readonly=True)
    records, _ = store.list_runs(limit=None)
    return {record.run_id for record in records}


def test_prune_older_than_deletes_only_ended_runs_past_the_age(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "runs", "prune", "--older-than", "4d", "--db", db)

    assert (code, out.strip()) == (0, "pruned 3 runs")
    assert remaining(db) == {"r0", "r1", "r2", "r3", "r4", "r6", "r8"}


def test_prune_keep_and_status_combine_and_print_json(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "runs", "prune", "--keep", "1", "--status", "success", "--json", "--db", db
    )

    assert code == 0
    assert json.loads(out) == {"pruned": 2}
    assert remaining(db) == {"r0", "r1", "r2", "r3", "r4", "r6", "r7", "r8"}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--older-than", "soon"],
        ["--older-than", "-3d"],
        ["--older-than", "0"],
        ["--older-than", "1e400"],
        ["--keep", "-1"],
        ["--keep", "10" * 30, "--status", "running"],
    ],
)
def test_prune_refuses_arguments_that_mean_nothing_with_exit_2_and_deletes_nothing(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run_cli(capsys, "runs", "prune", *argv, "--db", db)

    assert code == 2
    assert "Traceback" not in err and err.strip()
    assert len(remaining(db)) == 10


def test_prune_on_a_missing_store_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "runs", "prune", "--keep", "0", "--db", str(tmp_path / "no.db"))

    assert code == 2
    assert "does not exist" in err
    assert not (tmp_path / "no.db").exists()


def test_a_status_prune_does_not_take_names_the_choices_plainly(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # It listed them as "<RunStatus.CANCELED: 'canceled'>, ...".
    code, _, err = run_cli(capsys, "runs", "prune", "--keep", "1", "--status", "suspended")

    assert code == 2
    assert "(choose from 'canceled', 'failed', 'success')" in err
    assert "RunStatus" not in err
