"""The ``callboard`` commands that act on runs and follow them, on a real SQLite store.

``runs cancel``, ``runs resume``, ``runs delete``, ``runs list --status A B`` and
``--follow``, ``runs watch --json``, and ``start --json`` keeping stdout for the JSON.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runtime import Runtime, SQLiteStore
from runtime._cli import _actions, _commands, main
from runtime._snapshot import decode, forget_suspensions, next_record, suspend_at, unpack
from tests._support import hold_back_resume_requests, importable_flows, wait_until

WAIT = 10.0

FLOWS = textwrap.dedent(
    """
    import threading

    from pydantic import BaseModel

    from runtime import create_step, create_workflow


    class Value(BaseModel):
        value: str


    class Answer(BaseModel):
        answer: str


    def _ask(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return Value(value=f"{ctx.input_data.value}: {ctx.resume_data.answer}")


    ask = create_step(
        id="ask", input_schema=Value, output_schema=Value, resume_schema=Answer, execute=_ask
    )
    approval = create_workflow(id="approval", input_schema=Value, output_schema=Value)
    approval = approval.then(ask).commit()


    class Verdict(BaseModel):
        approved: bool


    def _judge(ctx):
        if ctx.resume_data is None:
            ctx.suspend({})
        return ctx.input_data


    judge = create_step(
        id="ask", input_schema=Value, output_schema=Value, resume_schema=Verdict, execute=_judge
    )
    pre = create_step(id="pre", input_schema=Value, output_schema=Value, execute=_judge)
    approval_v2 = create_workflow(
        id="approval", input_schema=Value, output_schema=Value, version="v2"
    )
    approval_v2 = approval_v2.then(pre).then(judge).commit()

    gate = threading.Event()


    def _hold(ctx):
        ctx.abort_signal.add_callback(lambda reason: gate.set())
        gate.wait(30)
        return ctx.input_data


    hold = create_step(id="hold", input_schema=Value, output_schema=Value, execute=_hold)
    held = create_workflow(id="held", input_schema=Value, output_schema=Value).then(hold).commit()


    def _chatty(ctx):
        print("a step's own print")
        ctx.logger.info("a step's log line", detail=1)
        return ctx.input_data


    chatty_step = create_step(
        id="chatty", input_schema=Value, output_schema=Value, execute=_chatty
    )
    chatty = create_workflow(id="chatty", input_schema=Value, output_schema=Value)
    chatty = chatty.then(chatty_step).commit()

    release, began = threading.Event(), threading.Event()


    def _member(name):
        def execute(ctx):
            if ctx.resume_data is None:
                ctx.suspend({"who": name})
            if name == "a":
                began.set()
                release.wait(30)  # the run runs on meanwhile, b waiting
            return Value(value=f"{name}: {ctx.resume_data.answer}")

        return create_step(
            id=name, input_schema=Value, output_schema=Value, resume_schema=Answer, execute=execute
        )


    items = create_workflow(id="items", input_schema=Value, output_schema=Value)
    items = items.map(lambda ctx: [{"value": f"{ctx.input_data['value']}{n}"} for n in (1, 2)])
    items = items.foreach(ask, concurrency=2).map(
        lambda ctx: {"value": ", ".join(item["value"] for item in ctx.input_data)}
    ).commit()


    pair_began, pair_gate = threading.Event(), threading.Event()


    def _asks(ctx):
        if ctx.resume_data is None:
            ctx.suspend({"question": "go on?"})
        return Value(value=ctx.resume_data.answer)


    def _works(ctx):
        pair_began.set()
        pair_gate.wait(30)  # the run runs on, "asks" waiting
        return ctx.input_data


    pair = create_workflow(id="pair", input_schema=Value, output_schema=Value).parallel([
        create_step(
            id="asks", input_schema=Value, output_schema=Value, resume_schema=Answer, execute=_asks
        ),
        create_step(id="works", input_schema=Value, output_schema=Value, execute=_works),
    ]).map(lambda ctx: {"value": ctx.input_data["asks"]["value"]}).commit()


    members = create_workflow(id="members", input_schema=Value, output_schema=Value)
    members = members.parallel([_member("a"), _member("b")]).map(
        lambda ctx: {"value": ctx.input_data["a"]["value"] + ", " + ctx.input_data["b"]["value"]}
    ).commit()
    """
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "runs.db")


@pytest.fixture
def flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ModuleType]]:
    """A fresh module of workflows in the current folder: its name and the module."""
    yield from importable_flows(tmp_path, monkeypatch, FLOWS, "action_flows")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def suspended_run(db: str, module: ModuleType, run_id: str = "r1") -> None:
    with Runtime(store=db) as rt:
        result = (
            rt.register(module.approval)
            .create_run(run_id)
            .start(input_data={"value": "post"}, timeout=WAIT)
        )
    assert result.status == "suspended"


def stored(db: str, module: ModuleType, run_id: str) -> Any:
    with Runtime(store=db) as rt:
        return rt.register(module.approval).get_workflow_run_execution_result(run_id)


# --- cancel ---------------------------------------------------------------------------


def test_runs_cancel_cancels_a_suspended_run_and_exits_0(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])

    code, out, err = cli(capsys, "runs", "cancel", "r1", "--db", db, "--json")

    assert code == 0, err
    assert json.loads(out) == {"run_id": "r1", "canceled": True, "status": "canceled"}
    assert stored(db, flows[1], "r1").status == "canceled"


def test_runs_cancel_of_a_run_that_ended_says_so_and_changes_nothing(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])
    assert cli(capsys, "runs", "cancel", "r1", "--db", db)[0] == 0

    code, out, err = cli(capsys, "runs", "cancel", "r1", "--db", db)

    assert code == 0, err
    assert "had already ended: canceled" in out


def test_runs_cancel_asks_the_runtime_that_drives_the_run_to_cancel_it(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    module = flows[1]
    with Runtime(store=db) as rt:
        wf = rt.register(module.held)
        run = wf.create_run("busy")
        run.start_async(input_data={"value": "x"})
        code, out, err = cli(capsys, "runs", "cancel", "busy", "--db", db, "--json")
        assert code == 0, err
        assert json.loads(out)["canceled"] is True
        assert run.wait(WAIT).status == "canceled"
    assert module.gate.is_set()  # the step was told through its abort signal


def test_runs_cancel_of_an_unknown_run_exits_3(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])
    code, _out, err = cli(capsys, "runs", "cancel", "nope", "--db", db)
    assert code == 3
    assert "no run 'nope'" in err


# --- resume ---------------------------------------------------------------------------


def test_runs_resume_records_the_resume_and_the_next_runtime_finishes_the_run(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = flows
    suspended_run(db, module)

    code, out, err = cli(
        capsys,
        "runs", "resume", "r1", "--db", db, "--data", '{"answer": "yes"}',
        "--definition", f"{name}:approval", "--json",
    )  # fmt: skip

    assert code == 0, err
    assert json.loads(out) == {
        "run_id": "r1", "resumed": "ask", "status": "running", "requested": False
    }  # fmt: skip
    with Runtime(store=db) as rt:
        result = rt.register(module.approval).create_run("r1").wait(WAIT)
    assert result.status == "success"
    assert result.result == {"value": "post: yes"}
    assert result.steps["ask"].resume_payload == {"answer": "yes"}


def test_runs_resume_reads_its_data_from_a_file(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name, module = flows
    suspended_run(db, module)
    (tmp_path / "answer.json").write_text('{"answer": "from a file"}')

    code, _out, err = cli(
        capsys,
        "runs", "resume", "r1", "--db", db, "--data", f"@{tmp_path / 'answer.json'}",
        "--definition", f"{name}:approval",
    )  # fmt: skip

    assert code == 0, err
    with Runtime(store=db) as rt:
        result = rt.register(module.approval).create_run("r1").wait(WAIT)
    assert result.result == {"value": "post: from a file"}


def test_runs_resume_checks_the_data_against_the_definition_and_leaves_the_run_suspended(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = flows
    suspended_run(db, module)

    code, _out, err = cli(
        capsys,
        "runs", "resume", "r1", "--db", db, "--data", '{"wrong": 1}',
        "--definition", f"{name}:approval",
    )  # fmt: skip

    assert code == 2
    assert "resume_data" in err and "answer" in err
    assert stored(db, module, "r1").status == "suspended"


def test_runs_resume_refuses_a_definition_of_another_version_and_leaves_the_run_suspended(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # The data fit that definition's step, whose resume schema is not the one the run's
    # own definition checks it against: the resume was recorded, and the run failed.
    name, module = flows
    suspended_run(db, module)

    code, _out, err = cli(
        capsys,
        "runs", "resume", "r1", "--db", db, "--data", '{"approved": true}',
        "--definition", f"{name}:approval_v2",
    )  # fmt: skip

    assert code == 2
    assert "started on fingerprint" in err and "version 'v2'" in err
    assert stored(db, module, "r1").status == "suspended"


def test_data_resumed_without_the_definition_that_does_not_fit_fails_the_step_plainly(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Without --definition nothing checks the data at the resume: the step does, when
    # the run goes on. Its run failed with pydantic's raw ValidationError.
    _name, module = flows
    suspended_run(db, module)

    code, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"wrong": 1}')

    assert code == 0, err
    with Runtime(store=db) as rt:
        result = rt.register(module.approval).create_run("r1").wait(WAIT)
    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StepValidationError"
    assert "step 'ask': its resume data does not fit its resume schema" in result.error.message
    assert result.error.attributes["step_id"] == "ask"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--data", "not json"], 2, "--data is not JSON"),
        (["--data", "{}", "--step", "other"], 2, "step 'other' is not suspended"),
    ],
)
def test_runs_resume_refuses_bad_arguments(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    *,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    suspended_run(db, flows[1])
    got, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, *argv)
    assert got == code
    assert message in err


def test_runs_resume_of_a_run_that_is_not_suspended_exits_1(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1])
    assert cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "a"}')[0] == 0

    code, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "b"}')

    assert code == 1
    assert "already resumed" in err


def test_runs_resume_with_a_definition_checks_the_data_of_a_foreach_item(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Its step was looked up by the item's name: "workflow 'items' has no step 'ask[1]'".
    name, module = flows
    with Runtime(store=db) as rt:
        result = rt.register(module.items).create_run("f").start(input_data={"value": "x"})
    assert set(result.suspended) == {"ask[0]", "ask[1]"}
    resume = ["runs", "resume", "f", "--db", db, "--definition", f"{name}:items"]

    code, _out, err = cli(capsys, *resume, "--step", "ask[1]", "--data", '{"wrong": 1}')
    assert code == 2 and "answer" in err
    code, _out, err = cli(capsys, *resume, "--step", "ask[1]", "--data", '{"answer": "no"}')
    assert code == 0, err


def _member_a_runs(rt: Runtime, module: ModuleType, run_id: str) -> Any:
    """A run of ``members`` whose member ``a`` was resumed and runs on, ``b`` still waiting.

    Returns the workflow, bound to ``rt``, and the run.
    """
    members = rt.register(module.members)
    run = members.create_run(run_id)
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    run.resume_async(step="a", resume_data={"answer": "yes"})
    assert module.began.wait(WAIT)
    return members, run


@pytest.mark.parametrize("definition", [False, True], ids=["raw", "definition"])
def test_runs_resume_of_a_suspension_that_waits_while_its_run_runs_on_records_a_request(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    *,
    definition: bool,
) -> None:
    # It refused: "run 'p' is running; only a suspended run can be resumed" (exit 1).
    name, module = flows
    checked = ["--definition", f"{name}:members"] if definition else []
    with Runtime(store=db) as rt:
        members, run = _member_a_runs(rt, module, "p")
        try:
            code, out, err = cli(
                capsys,
                "runs", "resume", "p", "--db", db, "--step", "b", "--data", '{"answer": "no"}',
                *checked,
            )  # fmt: skip
            assert code == 0, err
            assert "resume request" in out and "the worker that drives the run" in out
            # The runtime that drives the run carries it out: b runs beside a.
            wait_until(
                lambda: "b" not in members.get_workflow_run_execution_result("p").suspended,
                timeout=WAIT,
                what="b resumed",
            )
        finally:
            module.release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "a: yes, b: no"}


def test_runs_resume_records_a_request_that_says_where_it_was_read_as_the_api_does(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The command's request held its data alone: a worker's run actor could not tell the
    # suspension it asked for from a later one at the same path (a loop's next pass after
    # a bail, the run restarted), as it tells those of requests run.resume_async() makes.
    _name, module = flows
    held = hold_back_resume_requests(monkeypatch)
    with Runtime(store=db) as rt:
        _members, run = _member_a_runs(rt, module, "p")
        try:
            code, _out, err = cli(
                capsys, "runs", "resume", "p", "--db", db, "--step", "b", "--data",
                '{"answer": "no"}',
            )  # fmt: skip
            assert code == 0, err
            store = rt.store
            assert isinstance(store, SQLiteStore)
            [request] = store.resume_requests()
            record = store.load("p")
            assert record is not None
            snapshot = decode(record.data, "p")
            asked = unpack(request.data)
            assert asked["resume_data"] == {"answer": "no"}
            assert asked["run"] == [snapshot["created_at"], 0]
            assert isinstance(asked["read_seq"], int) and asked["read_seq"] <= record.seq
        finally:
            held.clear()
            module.release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "a: yes, b: no"}


def test_runs_resume_of_a_running_run_refuses_what_the_api_refuses(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, module = flows
    resume = ["runs", "resume", "p", "--db", db, "--json"]
    with Runtime(store=db) as rt:
        _members, run = _member_a_runs(rt, module, "p")
        try:
            for argv, message in [
                (["--step", "nope", "--data", "{}"], "'nope'"),
                (
                    ["--step", "b", "--data", '{"wrong": 1}', "--definition", f"{name}:members"],
                    "answer",
                ),
            ]:
                code, _out, err = cli(capsys, *resume, *argv)
                assert (code, message in err) == (2, True), (argv, err)
            code, out, err = cli(capsys, *resume, "--step", "b", "--data", '{"answer": "no"}')
            assert code == 0, err
            assert json.loads(out) == {
                "run_id": "p", "resumed": "b", "status": "running", "requested": True
            }  # fmt: skip
            # The same suspension again: the first resume recorded wins, as with the API.
            code, _out, err = cli(capsys, *resume, "--step", "b", "--data", '{"answer": "late"}')
            assert code == 1
            assert "already resumed by another call" in err
        finally:
            module.release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "a: yes, b: no"}


def test_runs_resume_of_a_running_run_tells_a_suspension_taken_from_one_never_there(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # "--step a" (resumed, its step begun) exited 2, "step 'a' is not suspended"; once
    # nothing waited, "--step nope" exited 1, "already resumed by another call".
    _name, module = flows
    resume = ["runs", "resume", "p", "--db", db, "--data", '{"answer": "late"}', "--step"]
    with Runtime(store=db) as rt:
        members, run = _member_a_runs(rt, module, "p")
        try:
            code, _out, err = cli(capsys, *resume, "a")
            assert (code, "already resumed by another call" in err) == (1, True), err
            assert "'b' still wait" in err
            run.resume_async(step="b", resume_data={"answer": "no"})
            wait_until(
                lambda: not members.get_workflow_run_execution_result("p").suspended,
                timeout=WAIT,
                what="b resumed",
            )
            code, _out, err = cli(capsys, *resume, "nope")
            assert (code, "step 'nope' is not suspended" in err) == (2, True), err
            for taken in ("a", "b"):
                code, _out, err = cli(capsys, *resume, taken)
                assert (code, "already resumed by another call" in err) == (1, True), err
        finally:
            module.release.set()
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "a: yes, b: no"}


def test_start_wait_of_a_run_suspended_while_a_resume_request_waits_goes_on_to_its_end(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resume of "asks", from another process, while "works" ran: the run suspended
    # before the command's runtime took the request. `start --wait` showed it suspended
    # and exited 0, its runtime stopped; run.wait() (--json) waited on.
    name, module = flows
    held = hold_back_resume_requests(monkeypatch)  # as a claimer that has not looked yet
    said: list[int] = []
    start = ["start", f"{name}:pair", "--input", '{"value": "x"}', "--run-id", "w", "--wait"]
    command = threading.Thread(target=lambda: said.append(main([*start, "--db", db])))
    command.start()
    try:
        assert module.pair_began.wait(WAIT)
        with Runtime(store=db, role="client") as client:
            pair = client.register(module.pair)
            wait_until(  # "works" runs, and "asks" waits
                lambda: "asks" in pair.get_workflow_run_execution_result("w").suspended,
                WAIT,
                "asks suspended",
            )
            run = pair.create_run("w")
            run.resume_async(step="asks", resume_data={"answer": "yes"})  # a request
            module.pair_gate.set()  # "works" ends: the run suspends, the request waiting
            wait_until(lambda: stored_status(db, "w") == "suspended", WAIT, "suspended")
            time.sleep(0.5)
            assert command.is_alive(), capsys.readouterr().out  # it goes on, as a wait does
            held.clear()  # the command's runtime takes the request, and the run goes on
            command.join(WAIT)
            assert run.wait(WAIT).status == "success"
    finally:
        module.pair_gate.set()
        held.clear()
        command.join(WAIT)
    out = capsys.readouterr().out
    assert said == [0], out
    assert field(out, "status") == "success", out
    # Meanwhile it said the resume waited for the worker, not how to resume the run.
    assert "run w suspended, a resume was asked for and waits for the worker: asks" in out, out
    assert "callboard runs resume w" not in out, out


def _before_the_resume_is_written(
    monkeypatch: pytest.MonkeyPatch, act: Callable[[], None], *, every_time: bool = False
) -> None:
    """Run ``act`` just before ``runs resume`` writes its compare-and-set (once, or each time).

    What another process does between the command's read of the run and its write.
    """
    opened = _actions._shared

    def shared(db: str) -> Any:
        store = opened(db)
        replace, acted = store.replace, []

        def racing(record: Any, expected_seq: int, **options: Any) -> bool:
            if every_time or not acted:
                acted.append(True)
                act()
            return bool(replace(record, expected_seq, **options))

        monkeypatch.setattr(store, "replace", racing)
        return store

    monkeypatch.setattr(_actions, "_shared", shared)


def _suspended_members(rt: Runtime, module: ModuleType, run_id: str) -> Any:
    """A run of ``members`` suspended at both members, ``a`` and ``b``."""
    run = rt.register(module.members).create_run(run_id)
    assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
    return run


@pytest.mark.parametrize("a_meanwhile", ["runs on", "ended"])
def test_runs_resume_that_loses_to_another_suspensions_resume_reads_again_and_goes_on(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    a_meanwhile: str,
) -> None:
    # Between the command's read of the run (a and b suspended) and its write of b's
    # resume, another process resumed a. It said "run 'p' changed while it was being
    # resumed ... this resume changed nothing" (exit 1); run.resume_async() reads the
    # run again and goes on, b still waiting: a request while a runs on, else the resume.
    _name, module = flows
    if a_meanwhile == "ended":
        module.release.set()  # a returns at once: the run suspends again, b waiting
    with Runtime(store=db) as rt:
        run = _suspended_members(rt, module, "p")

        def resume_a() -> None:
            before = stored_seq(db, "p")
            run.resume_async(step="a", resume_data={"answer": "yes"})
            if a_meanwhile == "runs on":
                assert module.began.wait(WAIT)
            else:
                wait_until(
                    lambda: stored_status(db, "p") == "suspended" and stored_seq(db, "p") > before,
                    WAIT,
                    "a ended, the run suspended again",
                )

        _before_the_resume_is_written(monkeypatch, resume_a)
        try:
            code, out, err = cli(
                capsys, "runs", "resume", "p", "--db", db, "--step", "b",
                "--data", '{"answer": "no"}', "--json",
            )  # fmt: skip
        finally:
            module.release.set()
        assert code == 0, err
        assert json.loads(out) == {
            "run_id": "p", "resumed": "b", "status": "running",
            "requested": a_meanwhile == "runs on",
        }  # fmt: skip
        result = run.wait(WAIT)
    assert result.status == "success", result.error
    assert result.result == {"value": "a: yes, b: no"}


def test_runs_resume_that_loses_to_a_cancel_refuses_as_the_api_does(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = flows[1]
    suspended_run(db, module)

    def cancel() -> None:
        with Runtime(store=db) as rt:
            assert rt.register(module.approval).create_run("r1").cancel()

    _before_the_resume_is_written(monkeypatch, cancel)
    code, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "a"}')

    assert code == 1
    assert "run 'r1' is canceled; only a suspended run can be resumed" in err
    assert stored(db, module, "r1").status == "canceled"


def test_runs_resume_of_a_run_that_keeps_changing_gives_up_after_a_few_tries(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = flows[1]
    suspended_run(db, module)
    writes: list[int] = []

    def rewrite() -> None:  # another process's write that leaves the suspension waiting
        store = SQLiteStore(db)
        try:
            record = store.load("r1")
            assert record is not None
            again = next_record(decode(record.data, "r1"), time.time())
            assert store.replace(again, record.seq)
            writes.append(again.seq)
        finally:
            store.close()

    _before_the_resume_is_written(monkeypatch, rewrite, every_time=True)
    code, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "a"}')

    assert code == 1
    assert f"run 'r1' changed {_actions.RESUME_TRIES} times while it was being resumed" in err
    assert len(writes) == _actions.RESUME_TRIES
    assert stored(db, module, "r1").status == "suspended"


def test_runs_resume_that_loses_its_suspension_to_another_resume_does_not_take_the_next(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Between the command's read of the run (ask suspended) and its write, another
    # process resumed ask, and ask suspended again. The command read the run again,
    # found it suspended at ask, and resumed the new suspension with its data.
    module = flows[1]
    suspended_run(db, module)

    def resumed_and_suspended_again() -> None:
        store = SQLiteStore(db)
        try:
            record = store.load("r1")
            assert record is not None
            snapshot = decode(record.data, "r1")
            snapshot["suspended"] = {}
            forget_suspensions(snapshot, ("ask",))
            suspend_at(snapshot, "ask", {"question": "and now?"})
            assert store.replace(next_record(snapshot, time.time()), record.seq)
        finally:
            store.close()

    _before_the_resume_is_written(monkeypatch, resumed_and_suspended_again)
    code, _out, err = cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "a"}')

    assert code == 1, err
    assert "'ask' has suspended again since" in err
    result = stored(db, module, "r1")
    assert result.status == "suspended" and result.suspended == {"ask": {"question": "and now?"}}


def test_runs_resume_after_the_runs_deadline_is_refused_and_a_worker_cancels_the_run(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # It recorded the resume (exit 0): the run was made runnable, and the worker that
    # took it canceled it at once. run.resume() refuses it (RunNotSuspendedError).
    name, module = flows
    with Runtime(store=db) as rt:
        run = rt.register(module.approval).create_run("late")
        result = run.start(input_data={"value": "x"}, run_timeout=0.2, timeout=WAIT)
    assert result.status == "suspended"  # and no runtime is left to cancel it
    time.sleep(0.4)
    before = stored_seq(db, "late")

    for checked in ([], ["--definition", f"{name}:approval"]):
        code, _out, err = cli(
            capsys, "runs", "resume", "late", "--db", db, "--data", '{"answer": "a"}', *checked
        )
        assert code == 1, err
        assert "run 'late' exceeded its timeout of 0.2 s" in err
        assert "only a suspended run within its time can be resumed" in err
        assert (stored_status(db, "late"), stored_seq(db, "late")) == ("suspended", before)

    with Runtime(store=db) as rt:  # a worker of the workflow cancels it, as at its deadline
        approval = rt.register(module.approval)
        wait_until(lambda: stored_status(db, "late") == "canceled", WAIT, "canceled")
        ended = approval.get_workflow_run_execution_result("late")
    assert ended is not None and ended.error is not None
    assert ended.error.name == "RunDeadlineError"


def _suspended_asked_for(db: str, module: ModuleType, rt: Runtime) -> Any:
    """Run "w" of ``module.pair`` on ``rt``, suspended with a resume of "asks" asked for.

    The resume comes from a client while "works" runs; the run then suspends, the request
    waiting (held back from the claimers by the caller). Returns the run.
    """
    pair = rt.register(module.pair)
    run = pair.create_run("w")
    run.start_async(input_data={"value": "x"})
    try:
        assert module.pair_began.wait(WAIT)
        wait_until(
            lambda: "asks" in pair.get_workflow_run_execution_result("w").suspended,
            WAIT,
            "asks suspended",
        )
        with Runtime(store=db, role="client") as client:
            client.register(module.pair).create_run("w").resume_async(
                step="asks", resume_data={"answer": "yes"}
            )  # a request
    finally:
        module.pair_gate.set()  # "works" ends: the run suspends, the request waiting
    wait_until(lambda: stored_status(db, "w") == "suspended", WAIT, "suspended")
    return run


def test_runs_watch_of_a_suspended_run_whose_resume_was_asked_for_says_it_waits_for_the_worker(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resume of "asks" recorded while "works" ran; the run suspended before a worker
    # took the request. The watch said to resume it ("callboard runs resume w ..."),
    # which would only be refused: another resume (the request) came first.
    _name, module = flows
    held = hold_back_resume_requests(monkeypatch)  # as a claimer that has not looked yet
    with Runtime(store=db) as rt:
        run = _suspended_asked_for(db, module, rt)

        def pause(seconds: float) -> None:
            raise KeyboardInterrupt

        with monkeypatch.context() as patched:
            patched.setattr(_commands, "_sleep", pause)
            patched.setattr(_actions, "_sleep", pause)
            said_so = "run w suspended, a resume was asked for and waits for the worker: asks"
            for command in (["runs", "watch", "w"], ["runs", "list", "--follow"]):
                code, out, _err = cli(capsys, *command, "--db", db)
                assert code == 130
                assert said_so in out, (command, out)
                assert "a worker that registers workflow pair carries it out" in out
                assert "callboard runs resume" not in out
            # --json marked no such suspension: its status line now says so.
            code, out, _err = cli(capsys, "runs", "watch", "w", "--db", db, "--json")
            assert code == 130
            events = [json.loads(line) for line in out.splitlines()]
            told = [e for e in events if e["type"] == "status"]
            assert [(e["status"], e["resume_requested"]) for e in told] == [("suspended", True)]
        held.clear()  # the worker takes the request, and the run goes on
        assert run.wait(WAIT).status == "success"


def test_runs_list_and_show_json_mark_a_suspension_a_resume_request_waits_for(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # runs watch --json said resume_requested; runs list --follow --json, runs list
    # --json and runs show --json told such a run only "suspended", as one that waits for
    # a resume. A request the worker drops is told again by --follow, false.
    _name, module = flows
    suspended_run(db, module, "plain")  # suspended, no request: resume_requested false
    held = hold_back_resume_requests(monkeypatch)  # as a claimer that has not looked yet
    with Runtime(store=db) as rt:
        run = _suspended_asked_for(db, module, rt)

        code, out, err = cli(capsys, "runs", "list", "--db", db, "--json")
        assert code == 0, err
        listed = {run["run_id"]: run for run in json.loads(out)["runs"]}
        assert listed["w"]["resume_requested"] is True
        assert listed["plain"]["resume_requested"] is False
        for run_id, asked in (("w", True), ("plain", False)):
            code, out, err = cli(capsys, "runs", "show", run_id, "--db", db, "--json")
            assert code == 0, err
            assert json.loads(out)["resume_requested"] is asked

        store = rt.store
        assert isinstance(store, SQLiteStore)

        def dropped() -> None:  # as the worker drops a request whose data it refuses
            (request,) = store.resume_requests()
            store.drop_resume_request(request)
            wait_until(lambda: not store.resume_pending("w"), WAIT, "dropped")

        looks = iter([dropped, _interrupt])
        monkeypatch.setattr(_actions, "_sleep", lambda seconds: next(looks)())
        code, out, _err = cli(capsys, "runs", "list", "--follow", "--json", "--db", db)
        assert code == 130
        told = [json.loads(line) for line in out.splitlines()]
        assert [(line["run_id"], line.get("resume_requested")) for line in told] == [
            ("plain", False),
            ("w", True),
            ("w", False),  # told again: it waits for a resume now
        ]
        held.clear()
        assert run.cancel() is True


def _interrupt() -> None:
    raise KeyboardInterrupt


def stored_seq(db: str, run_id: str) -> int:
    store = SQLiteStore(db, readonly=True)
    try:
        record = store.load(run_id)
    finally:
        store.close()
    assert record is not None
    return record.seq


def stored_status(db: str, run_id: str) -> str | None:
    store = SQLiteStore(db, readonly=True)
    try:
        record = store.load(run_id)
    finally:
        store.close()
    return None if record is None else record.status


# --- a run's time limit ----------------------------------------------------------------


def test_runs_show_and_watch_show_a_runs_deadline_and_its_run_timeout_only_when_it_has_one(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # Neither was shown: the deadline was in the store only (its deadline column).
    _name, module = flows
    with Runtime(store=db) as rt:
        approval = rt.register(module.approval)
        began = time.time()
        limited = approval.create_run("limited")
        result = limited.start(input_data={"value": "a"}, run_timeout=7200, timeout=WAIT)
        assert result.status == "suspended"
        ended = time.time()
        free = approval.create_run("free").start(input_data={"value": "b"}, timeout=WAIT)
        assert free.status == "suspended"
    with Runtime(store=db, role="client") as client:  # queued: no worker begins it
        client.register(module.approval).create_run("queued").start_async(
            input_data={"value": "c"}, run_timeout=90
        )

    code, out, err = cli(capsys, "runs", "show", "limited", "--db", db, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run_timeout"] == 7200
    deadline = datetime.fromisoformat(shown["deadline"].replace("Z", "+00:00")).timestamp()
    assert began + 7200 <= deadline <= ended + 7200
    assert shown["deadline"].endswith("Z")  # as the run's other times
    code, out, err = cli(capsys, "runs", "show", "limited", "--db", db)
    local = datetime.fromtimestamp(deadline).strftime("%Y-%m-%d %H:%M:%S")
    assert field(out, "deadline") == f"{local} (run_timeout 2 h)", out

    code, out, err = cli(capsys, "runs", "show", "queued", "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out)["run_timeout"] == 90 and "deadline" not in json.loads(out)
    code, out, err = cli(capsys, "runs", "show", "queued", "--db", db)
    assert field(out, "run timeout") == "90 s, from when the run begins to execute", out

    code, out, err = cli(capsys, "runs", "show", "free", "--db", db, "--json")
    assert code == 0, err
    assert "deadline" not in json.loads(out) and "run_timeout" not in json.loads(out)
    code, out, err = cli(capsys, "runs", "show", "free", "--db", db)
    assert "deadline" not in out and "timeout" not in out

    # The watch's view is the same (a run that ended: it is shown at once).
    assert cli(capsys, "runs", "cancel", "limited", "--db", db)[0] == 0
    code, out, err = cli(capsys, "runs", "watch", "limited", "--db", db)
    assert code == 1, err  # canceled
    assert field(out, "deadline") == f"{local} (run_timeout 2 h)", out


def field(view: str, label: str) -> str | None:
    """The value of a run view's field ``label``, or ``None`` if it has none."""
    for line in view.splitlines():
        if line.startswith(label + " "):
            return line[len(label) :].strip()
    return None


# --- delete ---------------------------------------------------------------------------


def test_runs_delete_deletes_an_ended_run_and_refuses_one_that_has_not_ended(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    suspended_run(db, flows[1], "waits")
    suspended_run(db, flows[1], "ends")
    assert cli(capsys, "runs", "cancel", "ends", "--db", db)[0] == 0

    code, _out, err = cli(capsys, "runs", "delete", "waits", "--db", db)
    assert code == 1
    assert "only a run that has ended can be deleted" in err

    code, out, err = cli(capsys, "runs", "delete", "ends", "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": "ends", "deleted": True}
    assert stored(db, flows[1], "ends") is None
    assert cli(capsys, "runs", "delete", "ends", "--db", db)[0] == 3


# --- list: several statuses, follow ----------------------------------------------------


def test_runs_list_takes_several_statuses(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    module = flows[1]
    for run_id in ("a", "b", "c"):
        suspended_run(db, module, run_id)
    assert cli(capsys, "runs", "cancel", "b", "--db", db)[0] == 0
    with Runtime(store=db) as rt:
        rt.register(module.chatty).create_run("d").start(input_data={"value": "x"}, timeout=WAIT)
    capsys.readouterr()

    for argv in (["--status", "canceled", "success"], ["--status", "canceled,success"]):
        code, out, err = cli(capsys, "runs", "list", "--db", db, "--json", *argv)
        assert code == 0, err
        page = json.loads(out)
        assert [run["run_id"] for run in page["runs"]] == ["d", "b"]
        assert page["total"] == 2

    code, _out, err = cli(capsys, "runs", "list", "--db", db, "--status", "finished")
    assert code == 2
    assert "'finished' is not a run status" in err


def test_runs_list_since_and_until_take_an_age_or_a_date_and_time(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    # The API had from_date/to_date; an operator asking "what failed in the last hour"
    # could only page through everything.
    module = flows[1]
    with Runtime(store=db) as rt:
        chatty = rt.register(module.chatty)
        chatty.create_run("early").start(input_data={"value": "x"}, timeout=WAIT)
        time.sleep(0.05)
        between = datetime.now(UTC)
        time.sleep(0.05)
        chatty.create_run("late").start(input_data={"value": "x"}, timeout=WAIT)
    capsys.readouterr()

    def listed(*argv: str) -> list[str]:
        code, out, err = cli(capsys, "runs", "list", "--db", db, "--json", *argv)
        assert code == 0, err
        return [run["run_id"] for run in json.loads(out)["runs"]]

    local = between.astimezone().replace(tzinfo=None).isoformat()  # local time, as typed
    assert listed("--since", "1h") == ["late", "early"]
    assert listed("--since", between.isoformat()) == ["late"]
    assert listed("--since", local) == ["late"]
    assert listed("--until", between.isoformat()) == ["early"]
    assert listed("--since", "2999-01-01") == []
    assert listed("--since", "30d", "--until", "1h") == []  # both started under an hour ago

    code, _out, err = cli(capsys, "runs", "list", "--db", db, "--since", "yesterday")
    assert code == 2
    assert "expected an age such as 30m" in err and err.count("\n") == 1
    # The edges of the calendar: a plain message each, naming no function of ours.
    code, _out, err = cli(capsys, "runs", "list", "--db", db, "--since", "0001-01-01")
    assert code == 2
    assert "'0001-01-01' is out of range" in err and "_moment" not in err
    code, _out, err = cli(capsys, "runs", "list", "--db", db, "--since", "1000000w")
    assert code == 2
    assert "'1000000w' reaches back before the year 1" in err
    assert listed("--since", "0001-01-02T00:00+00:00") == ["late", "early"]


def _cancel(db: str, run_id: str) -> None:
    assert main(["runs", "cancel", run_id, "--db", db]) == 0


def _followed(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    between: list[Callable[[], Any]],
    *argv: str,
) -> list[tuple[str, str]]:
    """``runs list --follow --json``, doing each of ``between`` after a look, then Ctrl-C.

    Returns:
        Each run told, with its status, in order.
    """
    looks = iter(between)

    def pause(seconds: float) -> None:
        action = next(looks, None)
        if action is None:
            raise KeyboardInterrupt
        action()

    monkeypatch.setattr(_actions, "_sleep", pause)
    code, out, _err = cli(capsys, "runs", "list", "--follow", "--json", *argv)
    assert code == 130  # followed until interrupted
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [(line["run_id"], line["status"]) for line in lines]


def test_runs_list_follow_prints_a_line_for_each_run_that_appears_or_changes(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = flows[1]
    suspended_run(db, module, "first")

    told = _followed(
        capsys,
        monkeypatch,
        [
            lambda: _cancel(db, "first"),  # between two looks
            lambda: suspended_run(db, module, "second"),
        ],
        "--db",
        db,
    )

    assert told == [("first", "suspended"), ("first", "canceled"), ("second", "suspended")]


def test_runs_list_follow_tells_the_change_of_a_run_that_leaves_its_filter(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Following the suspended runs, a cancel of one was never told: the canceled run was
    # no longer on the page asked for, and the follower said nothing of it.
    suspended_run(db, flows[1], "first")

    told = _followed(
        capsys,
        monkeypatch,
        [lambda: _cancel(db, "first"), lambda: None],
        "--db",
        db,
        "--status",
        "suspended",
    )

    # The cancel is told once, though the run is not suspended any more.
    assert told == [("first", "suspended"), ("first", "canceled")]


# --- watch ------------------------------------------------------------------------------


def test_runs_watch_json_prints_one_event_per_line_and_says_what_a_suspended_run_waits_for(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = flows[1]
    suspended_run(db, module)

    def pause(seconds: float) -> None:  # the operator answers while the watch goes on
        monkeypatch.setattr(_actions, "_sleep", lambda seconds: None)
        data = '{"answer": "ok"}'
        assert main(["runs", "resume", "r1", "--db", db, "--data", data]) == 0
        with Runtime(store=db) as rt:
            assert rt.register(module.approval).create_run("r1").wait(WAIT).status == "success"

    monkeypatch.setattr(_actions, "_sleep", pause)
    code, out, err = cli(capsys, "runs", "watch", "r1", "--db", db, "--json")

    assert code == 0, err
    # (The resume's own line, printed meanwhile by the nested command, is not JSON.)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all(event["run_id"] == "r1" for event in events)
    first_status = next(e for e in events if e["type"] == "status")
    assert first_status["status"] == "suspended"
    assert first_status["suspended"] == {"ask": {"question": "go on?"}}
    assert first_status["resume_requested"] is False  # it waits for a resume
    assert [(e["type"], e.get("step"), e["status"]) for e in events][-2:] == [
        ("step", "ask", "success"),
        ("status", None, "success"),
    ]
    assert events[-1]["result"]["result"] == {"value": "post: ok"}


# --- start --json --------------------------------------------------------------------------


def test_start_json_keeps_stdout_for_the_json_and_sends_everything_else_to_stderr(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _module = flows
    code, out, err = cli(
        capsys, "start", f"{name}:chatty", "--db", db, "--input", '{"value": "v"}', "--wait",
        "--json",
    )  # fmt: skip

    assert code == 0, err
    assert json.loads(out)["status"] == "success"  # stdout is the JSON, and only that
    assert "a step's own print" in err
    assert "a step's log line" in err


def test_start_json_without_wait_keeps_stdout_for_the_json_too(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _module = flows
    code, out, err = cli(
        capsys, "start", f"{name}:chatty", "--db", db, "--input", '{"value": "v"}', "--json"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "success"
    assert "a step's own print" in err


def test_runs_cancel_in_another_thread_is_safe_while_a_worker_holds_the_run(
    db: str, flows: tuple[str, ModuleType]
) -> None:
    # The command and a runtime in one process: the cancel request goes through the store.
    module = flows[1]
    codes: list[int] = []
    with Runtime(store=db) as rt:
        run = rt.register(module.held).create_run("threaded")
        run.start_async(input_data={"value": "x"})
        thread = threading.Thread(
            target=lambda: codes.append(main(["runs", "cancel", "threaded", "--db", db]))
        )
        thread.start()
        thread.join(WAIT * 2)
        assert run.wait(WAIT).status == "canceled"
    assert codes == [0]


def test_runs_cancel_while_an_applications_cancel_calls_the_hooks_is_not_the_canceller(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # run.cancel() took the suspended run and called its on_finish; the command, run
    # meanwhile, found the cancel asked for already yet said it had canceled the run:
    # both said True (r3). Of two cancels, one is told True.
    from pydantic import BaseModel

    from runtime import create_step, create_workflow

    class Value(BaseModel):
        value: str

    entered, release = threading.Event(), threading.Event()

    def ask(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({})
        return ctx.input_data  # type: ignore[no-any-return]

    def on_finish(_outcome: Any) -> None:
        entered.set()
        release.wait(WAIT)

    workflow = (
        create_workflow(id="hooked", input_schema=Value, output_schema=Value, on_finish=on_finish)
        .then(create_step(id="ask", input_schema=Value, output_schema=Value, execute=ask))
        .commit()
    )
    told: list[bool] = []
    with Runtime(store=db) as rt:
        run = rt.register(workflow).create_run("hooked-1")
        assert run.start(input_data={"value": "x"}, timeout=WAIT).status == "suspended"
        canceling = threading.Thread(target=lambda: told.append(run.cancel()))
        canceling.start()
        assert entered.wait(WAIT)
        threading.Timer(0.5, release.set).start()
        code, out, err = cli(capsys, "runs", "cancel", "hooked-1", "--db", db, "--json")
        canceling.join(WAIT)

    assert code == 0, err
    assert told == [True]
    assert json.loads(out) == {"run_id": "hooked-1", "canceled": False, "status": "canceled"}


def test_runs_show_of_a_resumed_step_shows_when_it_was_resumed(
    db: str, flows: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    module = flows[1]
    suspended_run(db, module)
    assert cli(capsys, "runs", "resume", "r1", "--db", db, "--data", '{"answer": "a"}')[0] == 0
    with Runtime(store=db) as rt:
        result = rt.register(module.approval).create_run("r1").wait(WAIT)
    resumed_at = result.steps["ask"].resumed_at
    assert resumed_at is not None

    code, out, err = cli(capsys, "runs", "show", "r1", "--db", db)

    assert code == 0, err
    assert f"(resumed {resumed_at.astimezone().strftime('%H:%M:%S')})" in out


def test_runs_list_follow_in_text_says_what_a_suspended_run_waits_for(
    db: str,
    flows: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suspended_run(db, flows[1], "waiting")

    def pause(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_actions, "_sleep", pause)
    code, out, _err = cli(capsys, "runs", "list", "--db", db, "--follow")

    assert code == 130
    assert "run waiting suspended, waiting for a resume: ask asked" in out
    assert "callboard runs resume waiting --data JSON" in out
