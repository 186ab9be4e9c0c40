"""callboard's pytest plugin: the fixtures ``callboard_harness`` and ``callboard_runtime``.

Installed with callboard as a ``pytest11`` entry point, but off until a project
turns it on: ``callboard = true`` in its pytest ini options, or ``--callboard``
on the command line. Then:

- ``callboard_harness``: an open :class:`runtime.testing.Harness`, closed after the test;
- ``callboard_runtime``: that harness's runtime;
- ``@pytest.mark.callboard(time_skipping=False, store=..., seed=...)``: the
  harness's options for one test (or a class's, or a module's: they add up,
  the closest winning).
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_addoption", "pytest_configure"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--callboard`` and the ini option ``callboard``."""
    group = parser.getgroup("callboard")
    group.addoption(
        "--callboard",
        action="store_true",
        default=False,
        help="enable callboard's fixtures (callboard_harness, callboard_runtime)",
    )
    parser.addini("callboard", type="bool", default=False, help="enable callboard's fixtures")


def pytest_configure(config: pytest.Config) -> None:
    """Register the fixtures and the marker, if the project turned the plugin on."""
    if not (config.getoption("--callboard") or config.getini("callboard")):
        return
    config.addinivalue_line(
        "markers",
        "callboard(**options): options of the callboard_harness fixture "
        "(store, time_skipping, seed, and Runtime options)",
    )
    from runtime import _pytest_fixtures

    if not config.pluginmanager.is_registered(_pytest_fixtures):
        config.pluginmanager.register(_pytest_fixtures, "callboard-fixtures")
