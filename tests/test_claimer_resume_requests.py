"""The claimer hands each resume request on once per reading of the store that still holds it.

A look at the requests reads the store, then hands each request on. One handed on
in an earlier look may be carried out (its record committed, the request dropped,
its handing on settled) after this look read it: this look must not hand it on
again, or a step that suspended again at that path since takes it twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from actors.claimer import Claimer
from runtime import SQLiteStore
from runtime._stores.base import ResumeRequest
from tests._support import wait_until

REQUEST = ResumeRequest("r1", "b", b"data", "request-1", "wf", "running", True)


class Looks:
    """The claimer's reads of the store's requests and what it handed on, scripted.

    Each read returns the next of ``reads`` (then nothing); before it returns, it calls
    the ``done`` of every handing on the script says settles during that read.
    """

    def __init__(self, reads: list[list[ResumeRequest]], settle_during: set[int]) -> None:
        self.lock = threading.Lock()
        self.reads = reads
        self.settle_during = settle_during
        self.count = 0
        self.handed: list[tuple[int, ResumeRequest]] = []
        self.pending: list[Callable[[], None]] = []

    def read(self) -> list[ResumeRequest]:
        with self.lock:
            self.count += 1
            number = self.count
            found = self.reads.pop(0) if self.reads else []
            settling = self.pending if number in self.settle_during else []
            if settling:
                self.pending = []
        for done in settling:  # committed and answered after this read
            done()
        return found

    def resume(self, request: ResumeRequest, done: Callable[[], None]) -> None:
        with self.lock:
            self.handed.append((self.count, request))
            self.pending.append(done)


def _claimer(store: SQLiteStore, looks: Looks) -> Claimer:
    return Claimer(
        store,
        plans=dict,
        capacity=None,
        executes=True,
        take=lambda _claimed, _generation: None,
        cancel=lambda _run_id, done: done(),
        requests=looks.read,
        resume=looks.resume,
    )


def test_a_request_settled_after_a_look_read_it_is_not_handed_on_again_by_that_look(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    # Read 1 hands the request on; read 2 still sees it (before its commit), and its
    # handing on settles right after; read 3 sees it no more.
    looks = Looks([[REQUEST], [REQUEST]], settle_during={2})
    claimer = _claimer(store, looks)
    try:
        wait_until(lambda: looks.count >= 4, what="a few looks")
        assert looks.handed == [(1, REQUEST)]
    finally:
        claimer.stop(5)
        store.close()


def test_a_request_settled_before_a_look_read_it_is_handed_on_again_by_that_look(
    tmp_path: Path,
) -> None:
    # Left for a later look at once (another worker's run, its actor not there yet):
    # each look reads it anew, and hands it on.
    store = SQLiteStore(tmp_path / "runs.db")
    looks = Looks([[REQUEST], [REQUEST], [REQUEST]], settle_during=set())
    settled_at_once = looks.resume

    def resume(request: ResumeRequest, done: Callable[[], None]) -> None:
        settled_at_once(request, lambda: None)
        done()

    looks.resume = resume  # type: ignore[method-assign]
    claimer = _claimer(store, looks)
    try:
        wait_until(lambda: looks.count >= 4, what="a few looks")
        assert [number for number, _ in looks.handed] == [1, 2, 3]
    finally:
        claimer.stop(5)
        store.close()
