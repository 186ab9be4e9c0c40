"""The event loop's lag under callboard's calls: the ``a`` twins against the sync calls.

``benchmarks/loop_lag.py`` prints the figures; here a smaller round asserts
only ratios between modes measured alike, never a wall-clock figure.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests._support import ROOT, wait_for_no_callboard_threads

LOOP_LAG = ROOT / "benchmarks" / "loop_lag.py"


@pytest.fixture(scope="module")
def loop_lag() -> Iterator[ModuleType]:
    """benchmarks/loop_lag.py imported as a module (benchmarks/ is not a package on the path)."""
    spec = importlib.util.spec_from_file_location("callboard_loop_lag", LOOP_LAG)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_a_calls_hold_up_the_loop_far_less_than_the_sync_calls(
    loop_lag: ModuleType, tmp_path: Path
) -> None:
    sync = loop_lag.measure("sync", 200, 2, tmp_path)
    awaited = loop_lag.measure("async", 200, 2, tmp_path)
    # The sync calls hold the loop for whole batches of store commits; the a calls
    # only hand them over. The loop ticks more often, and its worst stalls are shorter.
    assert awaited.p99_ms * 3 < sync.p99_ms, (awaited, sync)
    assert awaited.ticks / awaited.wall_s > sync.ticks / sync.wall_s, (awaited, sync)
    assert not wait_for_no_callboard_threads()
