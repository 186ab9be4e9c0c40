"""Suspend inside ``foreach``: each suspended item is addressable, and the foreach ends in order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from runtime import (
    ResumeConflictError,
    ResumeTargetError,
    Runtime,
    Workflow,
    create_step,
    create_workflow,
)
from tests._support import Counter, wait_for_no_callboard_threads

WAIT = 10.0


class Item(BaseModel):
    n: int


class Numbers(BaseModel):
    numbers: list[int]


class Done(BaseModel):
    outputs: list[Item]


def _checked_items(workflow_id: str, check: Any, concurrency: int) -> Workflow[Any, Any]:
    """A foreach of ``check`` over the numbers given, into ``{"outputs": [...]}``."""
    return (
        create_workflow(id=workflow_id, input_schema=Numbers, output_schema=Done)
        .map(lambda ctx: [{"n": n} for n in ctx.input_data["numbers"]])
        .foreach(
            create_step(id="check", input_schema=Item, output_schema=Item, execute=check),
            concurrency=concurrency,
        )
        .map(lambda ctx: {"outputs": ctx.input_data})
        .commit()
    )


def items_workflow(
    counter: Counter, *, concurrency: int, workflow_id: str = "items"
) -> Workflow[Any, Any]:
    def check(ctx: Any) -> Item:
        n = ctx.input_data.n
        counter.add(f"item-{n}")
        if n % 2 == 1 and ctx.resume_data is None:
            ctx.suspend({"item": n, "why": "odd"})
        bonus = ctx.resume_data["add"] if ctx.resume_data is not None else 0
        return Item(n=n * 10 + bonus)

    return _checked_items(workflow_id, check, concurrency)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_each_suspended_item_is_listed_and_resumed_by_its_index(
    runtime: Runtime, concurrency: int
) -> None:
    counter = Counter()
    workflow = runtime.register(items_workflow(counter, concurrency=concurrency))
    run = workflow.create_run()
    result = run.start(input_data={"numbers": [0, 1, 2, 3, 4]}, timeout=WAIT)
    assert result.status == "suspended"
    assert result.suspended == {
        "check[1]": {"item": 1, "why": "odd"},
        "check[3]": {"item": 3, "why": "odd"},
    }
    record = result.steps["check"]
    assert record.status == "suspended"
    assert record.suspend_payload == {
        "1": {"item": 1, "why": "odd"},
        "3": {"item": 3, "why": "odd"},
    }
    assert [counter[f"item-{n}"] for n in range(5)] == [1, 1, 1, 1, 1]

    with pytest.raises(ResumeTargetError) as caught:
        run.resume_async(step="check", resume_data={"add": 1})  # which item?
    assert sorted(caught.value.suspended) == ["check[1]", "check[3]"]
    with pytest.raises(ResumeTargetError):
        run.resume_async(step="check", for_each_index=2, resume_data={"add": 1})  # done

    result = run.resume(step="check", for_each_index=3, resume_data={"add": 3}, timeout=WAIT)
    assert result.status == "suspended"
    assert result.suspended == {"check[1]": {"item": 1, "why": "odd"}}
    assert result.steps["check"].status == "suspended"
    assert [counter[f"item-{n}"] for n in range(5)] == [1, 1, 1, 2, 1]  # only item 3 again

    result = run.resume(for_each_index=1, resume_data={"add": 1}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {
        "outputs": [{"n": 0}, {"n": 11}, {"n": 20}, {"n": 33}, {"n": 40}]  # input order
    }
    assert result.steps["check"].status == "success"
    assert result.suspended == {}
    assert [counter[f"item-{n}"] for n in range(5)] == [1, 2, 1, 2, 1]


def test_a_suspended_item_can_be_named_by_its_path(runtime: Runtime) -> None:
    counter = Counter()
    workflow = runtime.register(items_workflow(counter, concurrency=2))
    run = workflow.create_run()
    assert run.start(input_data={"numbers": [1, 2]}, timeout=WAIT).status == "suspended"
    result = run.resume(step="check[0]", resume_data={"add": 5}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 15}, {"n": 20}]}


def test_other_items_go_on_at_once_while_one_is_suspended(runtime: Runtime) -> None:
    running = threading.Semaphore(0)
    release = threading.Event()
    seen: list[int] = []

    def check(ctx: Any) -> Item:
        n = ctx.input_data.n
        if n == 0 and ctx.resume_data is None:
            ctx.suspend({"item": 0})
        if n > 0:
            seen.append(n)
            running.release()
            release.wait(WAIT)  # held, so that several run at once
        return ctx.input_data

    workflow = runtime.register(
        create_workflow(id="busy", input_schema=Numbers, output_schema=Done)
        .map(lambda ctx: [{"n": n} for n in ctx.input_data["numbers"]])
        .foreach(
            create_step(id="check", input_schema=Item, output_schema=Item, execute=check),
            concurrency=3,
        )
        .map(lambda ctx: {"outputs": ctx.input_data})
        .commit()
    )
    run = workflow.create_run()
    run.start_async(input_data={"numbers": [0, 1, 2, 3]})
    try:
        # Item 0 suspended at once and gave its slot up: items 1, 2 and 3 run at once.
        assert all(running.acquire(timeout=WAIT) for _ in range(3))
        assert sorted(seen) == [1, 2, 3]
        current = workflow.get_workflow_run_execution_result(run.run_id)
        assert current is not None and current.status == "running"
        assert current.suspended == {"check[0]": {"item": 0}}
    finally:
        release.set()
    result = run.wait(WAIT)
    assert result.status == "suspended"
    assert sorted(seen) == [1, 2, 3]
    assert list(result.suspended) == ["check[0]"]
    result = run.resume(resume_data={}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]}


def test_bad_for_each_indexes_are_refused(runtime: Runtime) -> None:
    counter = Counter()
    workflow = runtime.register(items_workflow(counter, concurrency=1))
    run = workflow.create_run()
    assert run.start(input_data={"numbers": [1]}, timeout=WAIT).status == "suspended"
    with pytest.raises(TypeError):
        run.resume_async(for_each_index="0", resume_data={"add": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run.resume_async(for_each_index=-1, resume_data={"add": 1})
    with pytest.raises(ResumeTargetError):
        run.resume_async(for_each_index=7, resume_data={"add": 1})
    assert run.resume(for_each_index=0, resume_data={"add": 1}, timeout=WAIT).status == "success"


def test_items_suspended_in_a_nested_workflow_are_resumed_by_step_and_index(
    runtime: Runtime,
) -> None:
    counter = Counter()
    inner = items_workflow(counter, concurrency=2, workflow_id="inner")
    workflow = runtime.register(
        create_workflow(id="outer", input_schema=Numbers, output_schema=Done).then(inner).commit()
    )
    run = workflow.create_run()
    result = run.start(input_data={"numbers": [1, 3]}, timeout=WAIT)
    assert result.status == "suspended"
    assert sorted(result.suspended) == ["inner.check[0]", "inner.check[1]"]
    assert result.steps["inner"].status == "suspended"
    result = run.resume(step="check", for_each_index=1, resume_data={"add": 2}, timeout=WAIT)
    assert list(result.suspended) == ["inner.check[0]"]
    result = run.resume(step="inner", resume_data={"add": 1}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 11}, {"n": 32}]}


def test_suspended_items_are_resumed_from_another_runtime_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counter = Counter()
    with Runtime(store=db) as first:
        run = first.register(items_workflow(counter, concurrency=3)).create_run()
        result = run.start(input_data={"numbers": [1, 2, 3]}, timeout=WAIT)
        assert result.status == "suspended"
        run_id = run.run_id
    assert not wait_for_no_callboard_threads()
    for index, add in ((2, 7), (0, 9)):
        with Runtime(store=db) as later:
            workflow = later.register(items_workflow(counter, concurrency=3))
            read = workflow.get_workflow_run_execution_result(run_id)
            assert read is not None and f"check[{index}]" in read.suspended
            result = workflow.create_run(run_id).resume(
                step="check", for_each_index=index, resume_data={"add": add}, timeout=WAIT
            )
        assert not wait_for_no_callboard_threads()
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 19}, {"n": 20}, {"n": 37}]}
    assert counter["item-2"] == 1  # the item that never suspended ran once


class _Unindexed(dict[str, Any]):
    """The suspended steps, seen by ``in`` as holding none: the look-up's rules alone."""

    def __contains__(self, key: object) -> bool:
        return False


paths = st.sampled_from(["ask", "check", "inner.ask", "outer.inner.ask", "ask[1]"])


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(st.tuples(paths, st.integers(0, 3) | st.none()), max_size=8),
    name=paths | st.sampled_from(["inner", "outer", "nothing"]),
    index=st.integers(0, 3),
)
def test_the_look_up_of_one_item_finds_what_the_rules_find(
    keys: list[tuple[str, int | None]], name: str, index: int
) -> None:
    # A resume of one item of a large foreach went over every suspension (2.5 ms at
    # 4,000); the key it names is looked up first now, which must change no answer.
    from runtime._run import _resume_target

    suspended = {path if item is None else f"{path}[{item}]": {} for path, item in keys}

    def outcome(held: dict[str, Any]) -> object:
        try:
            return _resume_target({"suspended": held}, name, "r", index)  # type: ignore[typeddict-item]
        except ResumeTargetError as exc:
            return str(exc)

    assert outcome(suspended) == outcome(_Unindexed(suspended))


def test_the_look_up_of_one_item_of_a_large_foreach_looks_at_that_item_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import runtime._run as run_module

    suspended = {f"check[{index}]": {"n": index} for index in range(4_000)}
    split = run_module.split_item_path
    splits: list[str] = []
    monkeypatch.setattr(
        run_module, "split_item_path", lambda name: splits.append(name) or split(name)
    )

    found = run_module._resume_target({"suspended": suspended}, "check", "r", 3_000)  # type: ignore[typeddict-item]

    assert found == "check[3000]" and len(splits) <= 1


class _Began(Counter):
    """A counter whose keys can be waited for."""

    def __init__(self) -> None:
        super().__init__()
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _event(self, key: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(key, threading.Event())

    def add(self, key: str) -> None:
        super().add(key)
        self._event(key).set()

    def seen(self, key: str) -> bool:
        return self._event(key).wait(WAIT)


def _held_reviews(release: threading.Event, began: _Began) -> Workflow[Any, Any]:
    """A foreach whose items suspend, and once resumed hold until ``release`` is set."""

    def check(ctx: Any) -> Item:
        if ctx.resume_data is None:
            ctx.suspend({"item": ctx.input_data.n})
        began.add(f"resumed-{ctx.input_data.n}")
        release.wait(WAIT)  # the work after the approval: the run is running meanwhile
        return Item(n=ctx.input_data.n * 10 + ctx.resume_data["add"])

    return _checked_items("reviews", check, concurrency=3)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_another_item_is_resumed_while_the_run_runs_on_after_a_first_resume(
    tmp_path: Path, store: str
) -> None:
    # The second approver got ResumeConflictError until the run suspended again.
    release, began = threading.Event(), _Began()
    with Runtime(store=None if store == "memory" else tmp_path / "runs.db") as rt:
        workflow = rt.register(_held_reviews(release, began))
        run = workflow.create_run()
        assert run.start(input_data={"numbers": [1, 2]}, timeout=WAIT).status == "suspended"
        try:
            run.resume_async(for_each_index=0, resume_data={"add": 1})
            assert began.seen("resumed-1")
            run.resume_async(for_each_index=1, resume_data={"add": 2})
            assert began.seen("resumed-2")  # both run before either ends
            read = workflow.get_workflow_run_execution_result(run.run_id)
            assert read is not None and read.status == "running" and not read.suspended
        finally:
            release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 11}, {"n": 22}]}
    assert began["resumed-1"] == began["resumed-2"] == 1


def test_of_two_resumes_of_one_waiting_item_exactly_one_is_taken(tmp_path: Path) -> None:
    from runtime import ResumeConflictError

    release, began = threading.Event(), _Began()
    with Runtime(store=tmp_path / "runs.db") as rt:
        run = rt.register(_held_reviews(release, began)).create_run()
        assert run.start(input_data={"numbers": [1, 2, 3]}, timeout=WAIT).status == "suspended"
        try:
            run.resume_async(for_each_index=0, resume_data={"add": 1})
            outcomes: list[str] = []
            gate = threading.Barrier(2)

            def approve(add: int) -> None:
                gate.wait(WAIT)
                try:
                    run.resume_async(for_each_index=1, resume_data={"add": add})
                except ResumeConflictError:
                    outcomes.append("conflict")
                else:
                    outcomes.append(f"taken-{add}")

            threads = [threading.Thread(target=approve, args=(add,)) for add in (5, 6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
            assert sorted(outcomes)[0] == "conflict" and len(outcomes) == 2, outcomes
            with pytest.raises(ResumeConflictError):  # resumed already: not again
                run.resume_async(for_each_index=0, resume_data={"add": 9})
            run.resume_async(for_each_index=2, resume_data={"add": 3})
        finally:
            release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    taken = int(next(outcome for outcome in outcomes if outcome.startswith("taken"))[-1])
    assert result.result == {"outputs": [{"n": 11}, {"n": 20 + taken}, {"n": 33}]}
    assert began["resumed-2"] == 1


def test_a_waiting_member_of_a_parallel_is_resumed_while_another_runs(runtime: Runtime) -> None:
    release, began = threading.Event(), _Began()

    def body(name: str) -> Any:
        def execute(ctx: Any) -> Item:
            if ctx.resume_data is None:
                ctx.suspend({"who": name})
            began.add(name)
            release.wait(WAIT)
            return Item(n=ctx.input_data.n + ctx.resume_data["add"])

        return execute

    steps = [
        create_step(id=name, input_schema=Item, output_schema=Item, execute=body(name))
        for name in ("a", "b")
    ]
    workflow = runtime.register(
        create_workflow(id="both", input_schema=Item, output_schema=Item)
        .parallel(steps)
        .map(lambda ctx: {"n": ctx.input_data["a"]["n"] + ctx.input_data["b"]["n"]})
        .commit()
    )
    run = workflow.create_run()
    assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
    try:
        run.resume_async(step="a", resume_data={"add": 10})
        assert began.seen("a")
        run.resume_async(step="b", resume_data={"add": 100})
        assert began.seen("b")
    finally:
        release.set()
    result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"n": 112}


def _held_steps(release: threading.Event, began: _Began, *names: str) -> list[Any]:
    """Steps that suspend, and once resumed hold until ``release`` is set."""

    def body(name: str) -> Any:
        def execute(ctx: Any) -> Item:
            if ctx.resume_data is None:
                ctx.suspend({"who": name})
            began.add(name)
            release.wait(WAIT)
            return Item(n=ctx.input_data.n + ctx.resume_data["add"])

        return execute

    return [
        create_step(id=name, input_schema=Item, output_schema=Item, execute=body(name))
        for name in names
    ]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_second_resume_of_a_parallel_member_whose_step_began_is_a_conflict(
    tmp_path: Path, store: str
) -> None:
    # Once the resumed member's step began, its suspension was in neither "suspended"
    # nor "resume": a second resume of it read "step 'a' is not suspended"
    # (ResumeTargetError), while another resume had come first.
    release, began = threading.Event(), _Began()
    with Runtime(store=None if store == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(
            create_workflow(id="three", input_schema=Item, output_schema=Item)
            .parallel(_held_steps(release, began, "a", "b", "c"))
            .map(lambda ctx: {"n": sum(out["n"] for out in ctx.input_data.values())})
            .commit()
        ).create_run()
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
        try:
            run.resume_async(step="a", resume_data={"add": 10})
            assert began.seen("a")
            with pytest.raises(ResumeConflictError) as conflict:
                run.resume_async(step="a", resume_data={"add": 99})
            assert "'b', 'c' still wait" in str(conflict.value)
            run.resume_async(step="b", resume_data={"add": 100})
            assert began.seen("b")
            for named in ("a", "b"):
                with pytest.raises(ResumeConflictError, match="'c' still wait"):
                    run.resume_async(step=named, resume_data={"add": 99})
            with pytest.raises(ResumeTargetError):  # never suspended: the caller's mistake
                run.resume_async(step="nope", resume_data={"add": 99})
        finally:
            release.set()
        assert run.wait(WAIT).suspended.keys() == {"c"}
        result = run.resume(step="c", resume_data={"add": 1000}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"n": 1113}
    assert began["a"] == began["b"] == began["c"] == 1


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_step_after_the_resumed_one_named_while_the_run_runs_on_is_not_suspended(
    tmp_path: Path, store: str
) -> None:
    # b had not run yet: its resume read "already resumed by another call"
    # (ResumeConflictError), as if somebody had taken a suspension of b.
    release, began = threading.Event(), _Began()
    first, second = _held_steps(release, began, "a", "b")
    with Runtime(store=None if store == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(
            create_workflow(id="in-turn", input_schema=Item, output_schema=Item)
            .then(first)
            .then(second)
            .commit()
        ).create_run()
        assert run.start(input_data={"n": 1}, timeout=WAIT).status == "suspended"
        try:
            run.resume_async(resume_data={"add": 10})
            assert began.seen("a")
            with pytest.raises(ResumeTargetError) as caught:
                run.resume_async(step="b", resume_data={"add": 100})
            assert "step 'b' is not suspended" in str(caught.value)
            assert caught.value.suspended == []
            for named in ("a", None):  # the one resumed, or none named: another came first
                with pytest.raises(ResumeConflictError, match="already resumed"):
                    run.resume_async(step=named, resume_data={"add": 99})
        finally:
            release.set()
        assert run.wait(WAIT).suspended.keys() == {"b"}
        result = run.resume(step="b", resume_data={"add": 100}, timeout=WAIT)
    assert result.status == "success", result.error
    assert result.result == {"n": 111}


def test_a_wrong_target_while_the_run_runs_on_is_a_target_error(runtime: Runtime) -> None:
    # Named while another item's resume runs: it read "already resumed by another call"
    # (ResumeConflictError) of items that never existed (r1).
    release, began = threading.Event(), _Began()
    run = runtime.register(_held_reviews(release, began)).create_run()
    assert run.start(input_data={"numbers": [1, 2, 3]}, timeout=WAIT).status == "suspended"
    try:
        run.resume_async(for_each_index=0, resume_data={"add": 1})
        assert began.seen("resumed-1")
        for target in ({"for_each_index": 9}, {"step": "nope"}, {"step": "check"}):
            with pytest.raises(ResumeTargetError):
                run.resume_async(resume_data={"add": 0}, **target)  # type: ignore[arg-type]
    finally:
        release.set()
    assert run.wait(WAIT).status == "suspended"


def test_a_resume_of_an_item_still_waiting_when_its_run_ended_does_not_blame_another_call(
    runtime: Runtime,
) -> None:
    # Item 0's resume fails the run while item 1 still waits: item 1 was never resumed,
    # and the refusal of its resume said it "was already resumed by another call".
    def check(ctx: Any) -> Item:
        if ctx.resume_data is None:
            ctx.suspend({"n": ctx.input_data.n})
        raise RuntimeError("refused")

    run = runtime.register(_checked_items("ends", check, 2)).create_run()
    assert run.start(input_data={"numbers": [1, 2]}, timeout=WAIT).status == "suspended"
    run.resume_async(for_each_index=0, resume_data={})
    assert run.wait(WAIT).status == "failed"
    with pytest.raises(ResumeConflictError) as refused:
        run.resume_async(for_each_index=1, resume_data={})
    message = str(refused.value)
    assert "has ended (it is failed)" in message and "or still waited when the run ended" in message
    assert refused.value.status == "failed"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_resume_that_meets_the_run_suspending_is_taken(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last running item ended and the run suspended, but the store had not its
    # record yet (a slow save): the resume was told "another process drives it" (r1).
    from runtime._stores.memory import MemoryStore
    from runtime._stores.sqlite import SQLiteStore

    for kind in (MemoryStore, SQLiteStore):
        save = kind.save

        def slow(self: Any, records: Any, *args: Any, _save: Any = save, **kwargs: Any) -> Any:
            if any(getattr(record, "status", None) == "suspended" for record in records):
                time.sleep(0.3)
            return _save(self, records, *args, **kwargs)

        monkeypatch.setattr(kind, "save", slow)
    ended = threading.Event()

    def check(ctx: Any) -> Item:
        if ctx.resume_data is None:
            ctx.suspend({"item": ctx.input_data.n})
        if ctx.input_data.n == 0:
            ended.set()
        return Item(n=ctx.input_data.n * 1000 + ctx.resume_data["v"])

    workflow = _checked_items("meets", check, concurrency=2)
    with Runtime(store=None if store == "memory" else tmp_path / "runs.db") as rt:
        run = rt.register(workflow).create_run()
        assert run.start(input_data={"numbers": [0, 1]}, timeout=WAIT).status == "suspended"
        run.resume_async(for_each_index=0, resume_data={"v": 5})
        assert ended.wait(WAIT)
        time.sleep(0.1)  # item 0 ended: the run suspends, its record on its way to the store
        run.resume_async(for_each_index=1, resume_data={"v": 7})
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 5}, {"n": 1007}]}


def test_a_stop_under_a_resume_not_yet_committed_says_the_runtime_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The actor took the resume; its record was on its way to the file when the stop
    # came. The caller read "this resume changed nothing" (ResumeConflictError), and
    # the next runtime ran the item with that very data (r1).
    from runtime import RuntimeStoppedError
    from runtime._stores.sqlite import SQLiteStore

    slow_saves = threading.Event()
    save = SQLiteStore.save

    def slow(self: Any, records: Any, *args: Any, **kwargs: Any) -> Any:
        if slow_saves.is_set():
            time.sleep(0.4)
        return save(self, records, *args, **kwargs)

    monkeypatch.setattr(SQLiteStore, "save", slow)
    began = threading.Event()

    def check(ctx: Any) -> Item:
        if ctx.resume_data is None:
            ctx.suspend({"item": ctx.input_data.n})
        if ctx.input_data.n == 0 and not began.is_set():
            began.set()
            ctx.abort_signal.wait(WAIT)  # item 0 keeps the run running, until the stop
        return Item(n=ctx.input_data.n * 1000 + ctx.resume_data["v"])

    def workflow() -> Any:
        return _checked_items("stopped", check, concurrency=2)

    path = tmp_path / "runs.db"
    rt = Runtime(store=path).start()
    try:
        run = rt.register(workflow()).create_run()
        assert run.start(input_data={"numbers": [0, 1]}, timeout=WAIT).status == "suspended"
        run.resume_async(for_each_index=0, resume_data={"v": 0})
        assert began.wait(WAIT)
        said: list[BaseException | None] = []

        def resume() -> None:
            try:
                run.resume_async(for_each_index=1, resume_data={"v": 1})
            except Exception as exc:
                said.append(exc)
            else:
                said.append(None)

        slow_saves.set()
        thread = threading.Thread(target=resume)
        thread.start()
        time.sleep(0.15)
    finally:
        rt.stop(timeout=0)
    thread.join(WAIT)
    slow_saves.clear()
    # Taken and recorded before the stop, or ended by it: never "changed nothing".
    assert said and (said[0] is None or isinstance(said[0], RuntimeStoppedError)), said
    with Runtime(store=path) as again:
        result = again.register(workflow()).create_run(run.run_id).wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"outputs": [{"n": 0}, {"n": 1001}]}
