"""A store object of the user's that hands every call on to one of callboard's.

A wrapper that times or logs each call through ``__getattr__`` is a store like
the one it wraps, on every Python version. Python 3.12 changed ``isinstance``
against a runtime-checkable protocol to look members up statically, which a
``__getattr__`` does not satisfy: there such a wrapper was refused as a store,
and a wrapped SQLite store was not taken for one that runtimes share.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import (
    MemoryStore,
    Runtime,
    RunTimeoutError,
    SQLiteStore,
    create_step,
    create_workflow,
)
from runtime._stores.base import ResumeRequestStore, SharedStore, SnapshotStore, provides
from tests._support import wait_until

WAIT = 20.0


class Value(BaseModel):
    value: str


class Counting:
    """Hands every attribute on to ``inner``, counting the calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return found(*args, **kwargs)

        return counted


def workflow() -> Any:
    step = create_step(
        id="pass", input_schema=Value, output_schema=Value, execute=lambda ctx: ctx.input_data
    )
    return (
        create_workflow(id="wrapped", input_schema=Value, output_schema=Value).then(step).commit()
    )


def test_provides_finds_members_handed_on_by_getattr(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        wrapped = Counting(store)
        assert provides(wrapped, SnapshotStore)
        assert provides(wrapped, SharedStore)
        assert provides(wrapped, ResumeRequestStore)
        assert provides(Counting(MemoryStore()), SnapshotStore)
        assert not provides(Counting(MemoryStore()), SharedStore)
        assert not provides(object(), SnapshotStore)
    finally:
        store.close()


def test_a_wrapped_memory_store_runs_workflows() -> None:
    wrapped = Counting(MemoryStore())
    with Runtime(store=wrapped) as rt:
        result = rt.register(workflow()).create_run().start(input_data={"value": "a"}, timeout=WAIT)
    assert result.status == "success"
    assert wrapped.calls.get("create") == 1


def test_a_wrapped_sqlite_store_is_shared(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    wrapped = Counting(store)
    # Only a store that runtimes share takes a role other than "both".
    with Runtime(store=wrapped, role="worker") as worker:
        worker.register(workflow())
        with Runtime(store=tmp_path / "runs.db", role="client") as client:
            run = client.register(workflow()).create_run()
            result = run.start(input_data={"value": "b"}, timeout=WAIT)
    assert result.status == "success"
    assert wrapped.calls.get("claim", 0) >= 1  # the worker claimed it through the wrapper


def test_an_object_that_is_no_store_is_refused() -> None:
    with pytest.raises(TypeError, match="store must be"):
        Runtime(store=object())  # type: ignore[arg-type]


def test_waits_given_up_on_stop_the_reads_for_them(tmp_path: Path) -> None:
    """A wait that timed out or was cancelled no longer has its run read from the store.

    A client that long-polls a run lasting hours (``await run.wait_async(timeout=5)``
    again and again) used to leave each call's waiter behind until the run ended, and
    the runtime read the run from the store every 0.1 s for them all along.
    """
    wrapped = Counting(SQLiteStore(tmp_path / "runs.db"))
    with Runtime(store=wrapped, role="client") as client:
        run = client.register(workflow()).create_run()
        run.start_async(input_data={"value": "c"})  # nobody runs it: it waits in the store

        for _ in range(3):
            with pytest.raises(RunTimeoutError):
                run.wait(timeout=0.05)

        async def give_up() -> None:
            for _ in range(3):
                with pytest.raises(RunTimeoutError):
                    await run.wait_async(timeout=0.05)
            waiting = asyncio.ensure_future(run.wait_async())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting

        asyncio.run(give_up())
        time.sleep(0.3)  # the last reads under way end
        before = wrapped.calls.get("seqs", 0)
        time.sleep(0.5)  # five reads' worth
        assert wrapped.calls.get("seqs", 0) == before

        # A wait that goes on is still served: it sees a worker finish the run.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waited = pool.submit(run.wait, WAIT)
            wait_until(lambda: wrapped.calls.get("seqs", 0) > before)
            with Runtime(store=tmp_path / "runs.db", role="worker") as worker:
                worker.register(workflow())
                assert waited.result(WAIT).status == "success"
