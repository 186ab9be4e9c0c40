"""The fixtures of callboard's pytest plugin (registered by :mod:`runtime._pytest_plugin`)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeGuard

import pytest

from runtime import testing
from runtime._runtime import Runtime
from runtime._stores.open import is_postgres_url
from runtime._stores.sqlite import SQLiteStore, path_from_url
from runtime.testing import Harness

__all__ = [
    "callboard_harness",
    "callboard_runtime",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
]

_FAILED: Final = pytest.StashKey[bool]()
"""On a test's item: whether its setup or its call failed (told by the reports pytest makes)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Note on the test's item that it failed, for ``callboard_harness`` closing after it.

    pytest hands a fixture nothing of the test's failure; its report is made before
    the fixtures are torn down. The report of a test that failed while a harness is
    open gets sections: "callboard: runs that failed", with their errors, and
    "callboard: runs not ended", with what each waits for.
    """
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = True
        # An open harness (the fixture's, or one of a wider scope): the runs that failed in
        # it, with their errors, where a test that read a run's status saw 'failed' alone;
        # and the runs not ended, with what they wait for.
        harness = testing._active
        if harness is not None:
            report.sections.extend(harness._runs_said())
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Close a harness the test opened and left open, and fail the test for it.

    Only one harness may be open in a process: one a test left open (``Harness().start()``
    with no close) failed every later test that opened one, with "another Harness is open",
    while the test that left it passed.
    """
    before = testing._active
    try:
        result = yield
    except BaseException as error:
        said = _close_left_open(before, error)
        if said:
            error.add_note(f"(and {said})")
        raise
    said = _close_left_open(before)
    if said:
        pytest.fail(said, pytrace=False)  # the place to read is where it was opened
    return result


def _close_left_open(before: Harness | None, error: BaseException | None = None) -> str:
    """Close the harness a test's body opened and left open; what to tell of it ("" if none)."""
    left = testing._active
    if left is None or left is before:
        return ""
    opened = left._opened_at
    left._close(check=False, error=error)
    return (
        f"the test left a Harness open (opened {opened}): close it, or use "
        "`with Harness() as harness:` or the callboard_harness fixture; it was closed after "
        "the test, so that the tests after it can open theirs"
    )


@pytest.fixture
def callboard_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """An open test harness (options from ``@pytest.mark.callboard(...)``); closed afterwards.

    The markers of the test, its class and its module add up, the closest
    winning an option they share: a class's ``time_skipping=False`` holds for
    a test of it that sets ``stop_timeout`` alone.

    ``store="sqlite"`` is a SQLite file of the test's own, in its
    ``tmp_path``: a durable store that no other test (or session, or xdist
    worker) shares. A path names one file for every test that gives it; under
    pytest-xdist, one file for every test of a worker: ``runs.db`` is
    ``runs-gw0.db`` in worker ``gw0`` (each worker's harness jumps a clock of
    its own, and would take the others' runs for abandoned).

    Parametrized indirectly, each parameter is a dict of options, closer than
    any marker: ``@pytest.mark.parametrize("callboard_harness", [{"store":
    "memory"}, {"store": "sqlite"}], indirect=True)`` runs the test on each store.

    As ``with Harness()`` does for a block that raised, the close says nothing
    of an override or fault naming a step no workflow has when the test failed
    already: its own failure is the one to read.

    Raises:
        pytest.UsageError: for a marker with positional arguments (options
            are named: ``store="x.db"``), or an indirect parameter that is not
            a dict of options.
    """
    options: dict[str, Any] = dict(_indirect_options(request))
    for marker in request.node.iter_markers("callboard"):  # the closest first
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.callboard takes options by name (store=..., time_skipping=...), "
                f"got the positional {marker.args!r}"
            )
        for name, value in marker.kwargs.items():
            options.setdefault(name, value)
    store = options.get("store")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if isinstance(store, str) and store == "sqlite":
        options["store"] = request.getfixturevalue("tmp_path") / "runs.db"
    elif _is_path(store):
        if worker:
            options["store"] = _of_worker(path_from_url(store), worker)
    elif isinstance(store, SQLiteStore):
        # One object a marker gives every test: each test's harness gets one of its own on
        # the same file (the first test's close closed it for the next), a worker's file
        # under pytest-xdist, as for a path. The marker's is closed, as a harness's close
        # closes the store it was given: its writer thread was left running.
        store.close()
        path = _of_worker(store.path, worker) if worker else store.path
        options["store"] = SQLiteStore(path, lease=store.lease)
    harness = Harness(**options).start()
    # What another Harness opened meanwhile names: pytest's frames would say nothing.
    harness._opened_at = f"by the callboard_harness fixture of {request.node.nodeid}"
    try:
        yield harness
    finally:
        harness._close(check=not request.node.stash.get(_FAILED, False))


def _indirect_options(request: pytest.FixtureRequest) -> Mapping[str, Any]:
    """The options of an indirect parametrization of ``callboard_harness`` (none without one).

    The fixture read no ``request.param``: a test parametrized with
    ``[{"store": "sqlite"}]`` ran on the memory store, every case alike, and passed.
    """
    if not hasattr(request, "param"):
        return {}
    param = request.param
    if not isinstance(param, Mapping) or not all(isinstance(name, str) for name in param):
        raise pytest.UsageError(
            f"callboard_harness parametrized indirectly takes a dict of harness options per "
            f'case ({{"store": "sqlite", "time_skipping": False}}), got {param!r}'
        )
    return param


def _of_worker(path: Path, worker: str) -> Path:
    """The file of a pytest-xdist worker for ``path``: ``runs.db`` is ``runs-gw0.db`` in ``gw0``."""
    return path.with_name(f"{path.stem}-{worker}{path.suffix}")


def _is_path(store: object) -> TypeGuard[str | os.PathLike[str]]:
    """Whether a harness's ``store`` option names a SQLite file (a path or ``sqlite:///``)."""
    if isinstance(store, os.PathLike):
        return True
    return isinstance(store, str) and store != "memory" and not is_postgres_url(store)


@pytest.fixture
def callboard_runtime(callboard_harness: Harness) -> Runtime:
    """The runtime of ``callboard_harness``."""
    return callboard_harness.runtime
