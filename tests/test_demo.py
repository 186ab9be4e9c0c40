"""``make demo``: examples/demo.py runs six orders, shows their progress, and ends as promised.

The demo keeps its runs in a SQLite run store and ends by listing them with the
``callboard`` command; these tests give it a file under pytest's tmp_path.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from runtime import RunReader
from tests._support import ROOT, script_module

DEMO = ROOT / "examples" / "demo.py"
TIMEOUT = 60.0

GOOD_RUNS = ["order-1001", "order-1002", "order-1003", "order-1005", "order-1006"]
BAD_RUN = "order-1004"
BAD_RUN_ERROR = (
    "run order-1004 failed in step 'price': "
    "CouponExpiredError: coupon 'SPRING19' expired on 2019-05-31"
)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the demo run keeps its runs."""
    return tmp_path_factory.mktemp("demo") / "callboard.db"


@pytest.fixture(scope="module")
def demo_run(demo_db: Path) -> subprocess.CompletedProcess[str]:
    """The demo, run once as ``make demo`` runs it (but with its store under tmp_path)."""
    return subprocess.run(
        [sys.executable, str(DEMO), str(demo_db)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )


def final_table(output: str) -> dict[str, list[str]]:
    """The rows of the last table the demo printed, by run id: [status, *step cells]."""
    lines = output.splitlines()
    start = max(index for index, line in enumerate(lines) if line.endswith("final results"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 3 :]:  # the title, the header and the rule
        if not line.strip():
            break
        run_id, *cells = re.split(r"\s{2,}", line.strip())
        rows[run_id] = cells
    return rows


def test_the_demo_exits_zero(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr


def test_the_demo_shows_every_runs_final_status(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    rows = final_table(demo_run.stdout)
    assert sorted(rows) == sorted([*GOOD_RUNS, BAD_RUN])
    for run_id in GOOD_RUNS:
        status, validate, price, confirm = rows[run_id]
        assert status == "success", rows[run_id]
        assert validate.startswith("ok ") and price.startswith("ok $"), rows[run_id]
        assert confirm.startswith("ok CB-"), rows[run_id]
    assert rows[BAD_RUN] == ["failed", "ok 3 items", "FAILED (CouponExpiredError)", "-"]


def test_the_demo_shows_the_deliberate_failure_with_its_step_and_error(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    assert BAD_RUN_ERROR in demo_run.stdout.splitlines()
    for run_id in GOOD_RUNS:
        assert f"run {run_id} succeeded: " in demo_run.stdout


def test_the_demo_shows_runs_in_progress_before_the_final_table(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    # The first poll follows start_async at once, while every run still has an
    # async step that sleeps at least 0.25 s ahead of it.
    progress = re.findall(r"^t=\d+\.\ds {2}(\d) of 6 runs in progress$", demo_run.stdout, re.M)
    assert progress, demo_run.stdout
    assert int(progress[0]) >= 1


def test_the_demo_sums_up_in_one_line(demo_run: subprocess.CompletedProcess[str]) -> None:
    summaries = [line for line in demo_run.stdout.splitlines() if line.startswith("summary: ")]
    assert summaries == ["summary: 5 of 5 good orders succeeded; order-1004 failed as intended"]


def cli_table(output: str) -> dict[str, list[str]]:
    """The rows of the table ``callboard runs list`` printed, by run id: [workflow, status, ...]."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("$ callboard "))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 3 :]:  # the command, the header and the rule
        if not line.strip():
            break
        run_id, *cells = re.split(r"\s{2,}", line.strip())
        rows[run_id] = cells
    return rows


def test_the_demo_ends_by_listing_the_same_runs_with_the_callboard_command(
    demo_run: subprocess.CompletedProcess[str], demo_db: Path
) -> None:
    lines = demo_run.stdout.strip().splitlines()
    summary = lines.index("summary: 5 of 5 good orders succeeded; order-1004 failed as intended")
    assert f"$ callboard runs list --db {demo_db}" in lines[summary:]
    listed = cli_table(demo_run.stdout)
    final = final_table(demo_run.stdout)
    assert list(listed) == sorted(final, reverse=True)  # newest first
    for run_id, (workflow, status, *_) in listed.items():
        assert workflow == "checkout"
        assert status == final[run_id][0]
    assert "6 runs" in lines[summary:]
    assert lines[-1] == f"(and one of them in full: callboard runs show {BAD_RUN} --db {demo_db})"


def test_the_demo_leaves_its_runs_in_the_run_store_for_any_process(
    demo_run: subprocess.CompletedProcess[str], demo_db: Path
) -> None:
    assert f"runs are kept in the SQLite run store {demo_db}" in demo_run.stdout.splitlines()
    with RunReader(demo_db) as reader:
        page = reader.list_runs()
        bad = reader.get_run(BAD_RUN)
    assert page.total == 6
    assert sorted(run.run_id for run in page.runs) == sorted([*GOOD_RUNS, BAD_RUN])
    assert bad is not None and bad.error is not None
    assert bad.error.name == "CouponExpiredError"


def test_the_demo_prints_nothing_from_callboard_itself(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    # The demo configures no logging, so callboard's span events stay quiet.
    assert "span_start" not in demo_run.stdout
    assert demo_run.stderr == ""


def threads_left_since(before: set[threading.Thread], timeout: float = 5.0) -> list[str]:
    """Names of threads started after ``before`` that are still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = [thread.name for thread in threading.enumerate() if thread not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


@pytest.fixture
def demo_module() -> Iterator[ModuleType]:
    """examples/demo.py imported as a module (examples/ is not a package on the path)."""
    with script_module(DEMO, "callboard_demo") as module:
        yield module


def test_main_returns_zero_and_stops_its_runtime(
    demo_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(threading.enumerate())
    assert demo_module.main([str(tmp_path / "demo.db")]) == 0
    assert BAD_RUN_ERROR in capsys.readouterr().out
    assert not threads_left_since(before)


def test_main_replaces_a_store_it_is_given_so_it_can_run_again(
    demo_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "again.db"
    assert demo_module.main([str(db)]) == 0
    assert demo_module.main([str(db)]) == 0  # the same order ids again: a fresh store
    assert "6 runs" in capsys.readouterr().out.splitlines()


def test_main_without_a_file_keeps_the_runs_in_a_new_temporary_folder(
    demo_module: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert demo_module.main([]) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("callboard-demo-")
    db = folder / "callboard.db"
    assert f"runs are kept in the SQLite run store {db}" in capsys.readouterr().out.splitlines()
    with RunReader(db) as reader:
        assert reader.list_runs().total == 6


def test_main_returns_one_when_a_good_order_fails(
    demo_module: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    orders = [dict(order) for order in demo_module.ORDERS]
    orders[0]["items"] = [{"sku": "kettle", "quantity": 1}]  # not in the catalogue
    monkeypatch.setattr(demo_module, "ORDERS", orders)
    assert demo_module.main([str(tmp_path / "demo.db")]) == 1
    output = capsys.readouterr().out
    assert "run order-1001 failed in step 'validate': LookupError: unknown SKUs: kettle" in output
    assert any(
        line.startswith("summary: 4 of 5 good orders succeeded") for line in output.splitlines()
    )
