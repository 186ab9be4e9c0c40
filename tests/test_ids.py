"""Run, trace and span ids: well-formed and distinct."""

from __future__ import annotations

import uuid

import pytest

from runtime._ids import new_id, new_span_id, new_trace_id


def test_run_ids_are_version_4_uuids_in_canonical_form() -> None:
    for _ in range(2000):
        run_id = new_id()
        parsed = uuid.UUID(run_id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == run_id


def test_trace_and_span_ids_are_lowercase_hex_of_the_w3c_lengths() -> None:
    for _ in range(2000):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert len(trace_id) == 32 and int(trace_id, 16) != 0
        assert len(span_id) == 16 and int(span_id, 16) != 0
        assert trace_id == trace_id.lower()


def test_ids_do_not_repeat() -> None:
    assert len({new_id() for _ in range(10_000)}) == 10_000
    assert len({new_span_id() for _ in range(10_000)}) == 10_000


def test_ids_do_not_repeat_when_the_program_seeds_the_random_module() -> None:
    import random

    random.seed(0)
    first = (new_id(), new_trace_id(), new_span_id())
    random.seed(0)
    assert (new_id(), new_trace_id(), new_span_id()) != first


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork in a threaded process (3.12+)
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert child_id != new_id()
