"""``make demo``: examples/demo.py runs six orders, shows their progress, and ends as promised."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
TIMEOUT = 60.0

GOOD_RUNS = ["order-1001", "order-1002", "order-1003", "order-1005", "order-1006"]
BAD_RUN = "order-1004"
BAD_RUN_ERROR = (
    "run order-1004 failed in step 'price': "
    "CouponExpiredError: coupon 'SPRING19' expired on 2019-05-31"
)


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    """The demo, run once as ``make demo`` runs it."""
    return subprocess.run(
        [sys.executable, str(DEMO)],
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


def test_the_demo_ends_with_a_summary_line(demo_run: subprocess.CompletedProcess[str]) -> None:
    last = demo_run.stdout.strip().splitlines()[-1]
    assert last == "summary: 5 of 5 good orders succeeded; order-1004 failed as intended"


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
    spec = importlib.util.spec_from_file_location("callboard_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_main_returns_zero_and_stops_its_runtime(
    demo_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(threading.enumerate())
    assert demo_module.main() == 0
    assert BAD_RUN_ERROR in capsys.readouterr().out
    assert not threads_left_since(before)


def test_main_returns_one_when_a_good_order_fails(
    demo_module: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    orders = [dict(order) for order in demo_module.ORDERS]
    orders[0]["items"] = [{"sku": "kettle", "quantity": 1}]  # not in the catalogue
    monkeypatch.setattr(demo_module, "ORDERS", orders)
    assert demo_module.main() == 1
    output = capsys.readouterr().out
    assert "run order-1001 failed in step 'validate': LookupError: unknown SKUs: kettle" in output
    assert output.strip().splitlines()[-1].startswith("summary: 4 of 5 good orders succeeded")
