"""Support for the durability tests: workflows and scripts that child processes import.

A child process started while :data:`ALL_PARTS` is set in its environment
encodes every snapshot in parts, as the test that started it does (see
``tests/durable/conftest.py``), and checks each record in parts while
``CALLBOARD_TEST_CHECK_PARTS`` is (see ``tests/conftest.py``): every child
imports this package first.
"""

from __future__ import annotations

import os

from runtime import _snapshot

ALL_PARTS = "CALLBOARD_TEST_ALL_PARTS"
"""The environment variable that tells a child process to encode every snapshot in parts."""

if os.environ.get(ALL_PARTS):
    _snapshot.WHOLE_UNTIL = -1  # type: ignore[misc]
if os.environ.get("CALLBOARD_TEST_CHECK_PARTS"):
    _snapshot.CHECK_PARTS = True
