"""Support for the durability tests: workflows and scripts that child processes import.

A child process started while :data:`ALL_PARTS` is set in its environment
encodes every snapshot in parts, as the test that started it does (see
``tests/durable/conftest.py``): every child imports this package first.
"""

from __future__ import annotations

import os

from runtime import _snapshot

ALL_PARTS = "CALLBOARD_TEST_ALL_PARTS"
"""The environment variable that tells a child process to encode every snapshot in parts."""

if os.environ.get(ALL_PARTS):
    _snapshot.WHOLE_UNTIL = -1  # type: ignore[misc]
