"""The PostgreSQL store's readers keep their slots through a Ctrl-C (no server needed)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from runtime._stores.postgres import _Readers  # noqa: E402


class _Connection:
    """What the readers ask of a connection: its transaction status, whether it broke."""

    def __init__(self) -> None:
        self.info = type("Info", (), {"transaction_status": psycopg.pq.TransactionStatus.IDLE})
        self.broken = False
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def ctrl_c_as_a_slot_is_taken() -> Iterator[None]:
    """SIGINT, once, the moment the call that takes a reader's slot returns holding it.

    Where a real Ctrl-C lands: Python runs its handler as a call returns, and the
    ``KeyboardInterrupt`` comes out of that call with the slot already taken.
    """
    armed = [True]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if (
            armed[0]
            and event == "return"
            and arg is True
            and frame.f_code.co_name in {"acquire", "_take"}  # a semaphore's, or ours
        ):
            armed[0] = False
            signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGINT, previous)
    assert not armed[0], "no slot was taken: the test interrupted nothing"


@pytest.mark.usefixtures("ctrl_c_as_a_slot_is_taken")
def test_a_ctrl_c_as_a_reader_takes_its_slot_gives_the_slot_back() -> None:
    assert threading.current_thread() is threading.main_thread()  # where Ctrl-C lands
    made: list[_Connection] = []

    def connect() -> Any:
        made.append(_Connection())
        return made[-1]

    readers = _Readers(connect, 1, "the store")
    with pytest.raises(KeyboardInterrupt), readers.connection():
        pytest.fail("the interrupt came after the connection was lent")
    sys.setprofile(None)
    # The one slot is free again: a semaphore kept it taken for good, and every later
    # read waited CALL_TIMEOUT for it and failed.
    with readers.spare() as spare:
        assert spare is not None


def test_readers_wait_for_a_slot_and_take_it_when_given_back() -> None:
    readers = _Readers(_Connection, 1, "the store")  # type: ignore[arg-type]
    got = threading.Event()
    with readers.connection() as first:
        with readers.spare() as none:
            assert none is None  # the one slot is lent

        def second() -> None:
            with readers.connection() as connection:
                assert connection is first  # the idle one, given back
                got.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not got.wait(0.1)
    thread.join(10)
    assert got.is_set()
