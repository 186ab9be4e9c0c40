"""Restart and time travel: running a recorded run again, in place or as a new run.

``run.restart()`` takes a run that failed or was canceled and runs it on from
the node where it stopped, keeping every step that had succeeded.
``workflow.time_travel(...)`` builds a new run from a recorded one: the steps
before a chosen step keep their recorded outputs, and the run starts at that
step with the input given (or the one it had), linked to the original.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runtime import _clock
from runtime._errors import InvalidInputError
from runtime._ids import new_span_id, new_trace_id
from runtime._model import RunStatus, StepStatus
from runtime._plan import (
    BranchNode,
    CollectNode,
    EachNextNode,
    EnterNode,
    ExitNode,
    ForeachNode,
    ParallelNode,
    leaf_steps,
)
from runtime._run_input import validated_input, validated_resume_data
from runtime._snapshot import (
    LOOP_SCOPE,
    START_STATE,
    Snapshot,
    StepSnapshot,
    copy_plain,
    is_stand_in,
    state_at,
)
from runtime._step import Step

if TYPE_CHECKING:
    from runtime._plan import ExecutionPlan, Node

__all__ = ["restarted", "time_travel_snapshot"]


def restarted(snapshot: Snapshot) -> None:
    """Turn an ended (failed or canceled) run's snapshot into one that runs on, in place.

    The run goes on at the node where it stopped (``next_step``, with its
    input and progress as recorded): the steps that succeeded keep their
    records and outputs, the others run again. A nested workflow the run was
    inside reads ``running`` again.
    """
    steps = snapshot["steps"]
    paths = list(steps)
    containers = {path for path in paths if any(other.startswith(path + ".") for other in paths)}
    # A foreach's record holds one item's resume data, not each one's: its items that
    # were resumed ask for a resume again.
    progress = snapshot["progress"]
    in_foreach = isinstance(progress, dict) and "done" in progress
    kept: dict[str, StepSnapshot] = {}
    resumes: dict[str, Any] = {}
    for path, step in steps.items():
        if step["status"] == StepStatus.SUCCESS:
            kept[path] = step
        elif path in containers or "iterations" in step:
            # A loop's step keeps its record, which alone holds the input of the
            # iteration it stopped in: without it the loop began again from its
            # first input, counting on from where it stopped.
            kept[path] = _reopened(step)
        elif step.get("resume_payload") is not None and not in_foreach:
            # It failed (or was cancelled) after a resume: it runs again with the data it
            # was resumed with, as a retry would, rather than ask for it anew.
            resumes[path] = step["resume_payload"]
        # Any other step that did not succeed runs again, with a new record.
    snapshot["steps"] = kept
    snapshot["status"] = RunStatus.RUNNING.value
    snapshot["error"] = None
    snapshot["result"] = None
    snapshot["suspended"] = {}
    snapshot.pop("suspensions", None)
    snapshot["resume"] = resumes or None
    snapshot["wake_at"] = None
    # A new deadline, set when the restarted run begins to execute: one kept from the
    # first try, long past for a run canceled by it, would cancel the restart at once.
    snapshot.pop("deadline", None)
    snapshot.pop("resumed", None)
    snapshot.pop("retries", None)  # a restarted step has its whole budget again
    snapshot["restarts"] = snapshot.get("restarts", 0) + 1
    # For the metrics: the run starts again (counted once, by the actor that takes it
    # on), and its duration is counted from now.
    snapshot["restarted_at"] = _clock.time()
    snapshot["restarting"] = True


def _reopened(step: StepSnapshot) -> StepSnapshot:
    reopened: StepSnapshot = dict(step)  # type: ignore[assignment]
    reopened["status"] = StepStatus.RUNNING.value
    reopened["ended_at"] = None
    reopened["error"] = None
    reopened["output"] = None
    return reopened


def target_path(plan: ExecutionPlan, step: Step[Any, Any] | str, run_id: str) -> str:
    """The path of the step ``step`` names in ``plan``: a path, an id, or a :class:`Step`.

    Raises:
        InvalidInputError: if no step, or several, have that id.
    """
    if isinstance(step, Step):
        name = step.id
    elif isinstance(step, str):
        name = step
    else:
        raise TypeError(f"step must be a Step or a str, got {type(step).__name__}")
    if name in plan.by_id:
        return name
    matches = [path for path in plan.by_id if path.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    problem = (
        f"names several steps {matches}: use a full path"
        if matches
        else f"is not a step of workflow {plan.workflow_id!r}"
    )
    raise InvalidInputError(
        f"step {name!r} {problem} (time travel of run {run_id!r})",
        field="step",
        errors=[{"type": "value_error", "loc": ("step",), "msg": problem}],
        run_id=run_id,
    )


def time_travel_snapshot(
    plan: ExecutionPlan,
    source: Snapshot,
    run_id: str,
    path: str,
    *,
    input_data: BaseModel | Any = None,
    resume_data: BaseModel | Any = None,
    resource_id: str | None = None,
) -> Snapshot:
    """The first snapshot of a new run that starts at ``path`` from the run in ``source``.

    The steps of the nodes before ``path``'s node keep their recorded records
    (those that succeeded); the node of ``path`` runs on ``input_data``
    (validated by its step's input schema; for a ``foreach``, a list of
    items), or, without it, on the input it had in ``source``: of a parallel
    or branch node, ``path`` alone, the other members keeping what they did
    (see :func:`_members_kept`). With
    ``resume_data`` the step is called with it as ``ctx.resume_data``. The
    run's input, request context and options are ``source``'s, and its state
    is ``source``'s as it was when the node of ``path`` began there (as the
    run ended, for a run recorded before callboard kept it, or one that
    never reached the node).

    Raises:
        InvalidInputError: if ``input_data`` or ``resume_data`` does not fit,
            or there is none and ``source`` never reached the step.
    """
    index = next(i for i, node in enumerate(plan.nodes) if _owns(node, path))
    node = plan.nodes[index]
    _check_not_in_a_region(plan, index, path, run_id)
    before: set[str] = set()
    open_children: dict[str, int] = {}  # the nested workflows ``path`` lies in: their entries
    for at, node_before in enumerate(plan.nodes[:index]):
        before.add(node_before.path)
        before.update(step_node.path for step_node in leaf_steps(node_before))
        if isinstance(node_before, EnterNode):
            open_children[node_before.path] = at
        elif isinstance(node_before, ExitNode):
            open_children.pop(node_before.path, None)
    steps: dict[str, StepSnapshot] = {}
    for step_path, record in source["steps"].items():
        if step_path in open_children:
            steps[step_path] = _reopened(record)
        elif step_path in before and record["status"] == StepStatus.SUCCESS:
            steps[step_path] = record
    if isinstance(node, ForeachNode) and resume_data is not None:
        # Its items are resumed one by one (each its own suspension); given for the
        # step, the data reached none of them and the items asked again, silently.
        raise InvalidInputError(
            f"step {path!r} runs as a foreach body, whose items are resumed one by one: "
            "time travel without resume_data, then resume each item that suspends "
            "(run.resume(step=..., for_each_index=...))",
            field="resume_data",
            errors=[{"type": "value_error", "loc": ("resume_data",), "msg": "not supported"}],
            run_id=run_id,
        )
    definition = plan.by_id[path]
    if input_data is None:
        carry = _input_had(source, index, path, run_id)
    elif isinstance(node, ForeachNode):
        if not isinstance(input_data, list | tuple):
            raise InvalidInputError(
                f"input_data for foreach step {path!r} must be a list of items, "
                f"got {type(input_data).__name__}",
                field="input_data",
                errors=[{"type": "list_type", "loc": (), "msg": "Input should be a list"}],
                run_id=run_id,
            )
        carry = [
            validated_input(definition.input_schema, item, "input_data", run_id)
            for item in input_data
        ]
    else:
        carry = validated_input(definition.input_schema, input_data, "input_data", run_id)
    resume = None
    if resume_data is not None:
        resume = {path: validated_resume_data(definition, resume_data, path, run_id)}
    scopes = _scopes_kept(
        plan,
        source,
        before=before,
        open_children=open_children,
        index=index,
        input_data=input_data,
        path=path,
        run_id=run_id,
    )
    for child, entry in open_children.items():
        if child not in steps:  # never entered by the recorded run: entered now
            steps[child] = _entered(child, scopes[child + "."])
        enter = plan.nodes[entry]
        if isinstance(enter, EnterNode) and enter.looped:
            # A loop's body the target lies in: the new run's pass is its first, as for a
            # loop over a step. The recorded run's count (its record's, and the scope's of
            # a run that stopped inside the loop) was kept, and only the next pass's entry
            # rewrote it: a body that took one pass read the original's three.
            steps[child]["iterations"] = 1
            scopes.pop(child + LOOP_SCOPE, None)
    progress: dict[str, Any] | None = None
    if isinstance(node, ParallelNode | BranchNode):
        progress = _members_kept(node, path, source, steps, scopes)
    now = _clock.time()
    snapshot: Snapshot = {
        "run_id": run_id,
        "workflow_id": plan.workflow_id,
        "seq": 0,
        "status": RunStatus.PENDING.value,
        "input": source["input"],
        "result": None,
        "error": None,
        "steps": copy_plain(steps),
        "next_step": index,
        "carry": carry,
        "progress": progress,
        "wake_at": None,
        "suspended": {},
        "resume": resume,
        "scopes": copy_plain(scopes),
        # The state as it was when the step's node began in the recorded run, not as
        # that run ended: a step that appended to it appends once again, not twice.
        "state": copy_plain(state_at(source["steps"], _paths_of(node), source["state"])),
        "request_context": copy_plain(source["request_context"]),
        "include_state": source["include_state"],
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "metadata": copy_plain(source["metadata"]),
        "created_at": now,
        "updated_at": now,
        "time_traveled_from": {"run_id": source["run_id"], "step": path},
        "fingerprint": plan.fingerprint,
    }
    if plan.version is not None:
        snapshot["version"] = plan.version
    if resource_id is not None:
        snapshot["resource_id"] = resource_id
    if "run_timeout" in source:  # its own deadline, from when it begins to execute
        snapshot["run_timeout"] = source["run_timeout"]
    return snapshot


def _input_had(source: Snapshot, index: int, path: str, run_id: str) -> Any:
    """The input step ``path`` (of the plan's node ``index``) had in ``source``.

    Its record's, or, without a record, the input of the node the run stands
    at when that is the step's: a restart drops the record of the step the run
    failed or was canceled in until the step runs again, and the run's carry
    holds that node's input until it leaves the node (while the restarted run
    waits for its queue place, say).

    Raises:
        InvalidInputError: if ``source`` never reached the step.
    """
    recorded = source["steps"].get(path)
    if recorded is not None:
        return recorded.get("payload")
    if source["next_step"] == index and not is_stand_in(source):
        return source["carry"]
    raise InvalidInputError(
        f"run {source['run_id']!r} never reached step {path!r}: give the step's "
        "input_data to time travel to it",
        field="input_data",
        errors=[{"type": "missing", "loc": ("input_data",), "msg": "Field required"}],
        run_id=run_id,
    )


def _scopes_kept(
    plan: ExecutionPlan,
    source: Snapshot,
    *,
    before: set[str],
    open_children: dict[str, int],
    index: int,
    input_data: Any,
    path: str,
    run_id: str,
) -> dict[str, Any]:
    """What the new run keeps of the recorded run's scopes, and the inputs it gives.

    A scope is kept by a node's path (a nested workflow's input, ``path.``; a
    loop's count, ``path#loop``; ...): those of the nodes before the target,
    the nested workflows it lies in among them. The others are of nodes the
    new run has yet to reach: a loop after the target counted on from the
    recorded run's passes (and hit its ``max_iterations`` early).

    A nested workflow the target lies in that the recorded run never entered
    gets ``input_data`` as its input when the target is its first step (it
    read the run's own input, checked against its schema, instead).

    Raises:
        InvalidInputError: if the target lies in such a nested workflow and is
            not its first step: nothing says what its input would be.
    """
    kept: dict[str, Any] = {}
    for key, value in source["scopes"].items():
        if key.endswith("."):
            owner = key[:-1]
        elif "#" in key:
            owner = key[: key.rindex("#")]
        else:
            owner = key
        if owner in before:
            kept[key] = value
    for child, entry in open_children.items():
        if child + "." in kept:
            continue
        between = plan.nodes[entry + 1 : index]
        if input_data is None or not all(isinstance(n, EnterNode) for n in between):
            raise InvalidInputError(
                f"run {source['run_id']!r} never entered nested workflow {child!r}, so its "
                f"input is not known: time travel to its first step with input_data, or to "
                f"a step before it (not to {path!r})",
                field="step",
                errors=[{"type": "value_error", "loc": ("step",), "msg": "not entered"}],
                run_id=run_id,
            )
        enter = plan.nodes[entry]
        assert isinstance(enter, EnterNode) and enter.input_schema is not None
        model = validated_input(enter.input_schema, input_data, "input_data", run_id)
        kept[child + "."] = copy_plain(model)
    return kept


def _members_kept(
    node: ParallelNode | BranchNode,
    path: str,
    source: Snapshot,
    steps: dict[str, StepSnapshot],
    scopes: dict[str, Any],
) -> dict[str, Any] | None:
    """Keep what the other members of ``path``'s parallel or branch node did; the progress.

    As Mastra's time travel, only the target runs again: a member that
    succeeded in the recorded run keeps its record and output (with the input
    it had), and the node's output is built from them and the target's new
    one. The run actor skips a member that succeeded, as in a restart, and
    nested workflows among the members that succeeded keep their records,
    their steps' and their scopes. A member that did not succeed runs again
    with the target, on the target's input (a group's members share one: the
    time travel's ``input_data`` when given). A branch runs the arms the recorded run
    chose and the target, without asking the conditions again: an arm the
    original did not run does not run now either (the returned progress says
    which arms were chosen; ``None`` for a parallel node).

    A member that changed the workflow state runs again too: the new run starts
    on the state the group began with, and a record keeps the state its step
    began with (``start_state``), not the change it made, which would be lost.

    ``steps`` and ``scopes`` are the new run's, added to in place.
    """
    recorded = source["steps"]
    members = [step_node.path for step_node in leaf_steps(node)]
    flows = [flow.path for flow in node.flows]
    for member in members:
        record = recorded.get(member)
        if (
            member != path
            and record is not None
            and record["status"] == StepStatus.SUCCESS
            and START_STATE not in record
        ):
            steps[member] = record
    for flow in flows:
        record = recorded.get(flow)
        if record is None or record["status"] != StepStatus.SUCCESS:
            continue  # it runs again (its steps' records are dropped as it is entered)
        inside = flow + "."
        kept = {
            step_path: step_record
            for step_path, step_record in recorded.items()
            if step_path == flow or step_path.startswith(inside)
        }
        if any(START_STATE in step_record for step_record in kept.values()):
            continue  # it changed the state: it runs again, as a step that did
        steps.update(kept)
        for key, value in source["scopes"].items():
            if key.startswith(inside) or key.startswith(flow + "#"):
                scopes[key] = value
    if isinstance(node, ParallelNode):
        return None
    chosen = [member for member in members + flows if member == path or member in recorded]
    return {"chosen": chosen}


def _entered(child: str, child_input: Any) -> StepSnapshot:
    """The record of a nested workflow the new run is inside, entered with ``child_input``."""
    now = _clock.time()
    return {
        "status": StepStatus.RUNNING.value,
        "payload": child_input,
        "output": None,
        "error": None,
        "started_at": now,
        "ended_at": None,
    }


def _check_not_in_a_region(plan: ExecutionPlan, index: int, path: str, run_id: str) -> None:
    """Refuse a time travel into a nested workflow run as a parallel member or foreach body.

    A branch arm counts as a parallel member. Such a construct keeps what its
    members (or items) did so far while it runs, and a run that ended keeps
    none of it: the new run failed at the nested workflow's end
    (``RunCrashedError``: ``KeyError: 'parallel-1#flows'``).

    Raises:
        InvalidInputError: if ``path`` lies in such a region.
    """
    for later in range(index + 1, len(plan.nodes)):
        node = plan.nodes[later]
        if isinstance(node, CollectNode):
            start, kind = later - node.group, "a parallel or branch member"
        elif isinstance(node, EachNextNode):
            start, kind = later - node.body, "the body of a foreach"
        else:
            continue
        if start < index:  # the node itself (a plain member) is no region
            owner = plan.nodes[start].path
            raise InvalidInputError(
                f"cannot time travel to step {path!r}: it lies in a nested workflow that "
                f"runs as {kind} ({owner!r}), whose progress the recorded run does not keep; "
                f"time travel to a step before {owner!r}, or restart a failed run",
                field="step",
                errors=[{"type": "value_error", "loc": ("step",), "msg": "not supported"}],
                run_id=run_id,
            )


def _owns(node: Any, path: str) -> bool:
    return any(step_node.path == path for step_node in leaf_steps(node))


def _paths_of(node: Node) -> set[str]:
    """The paths of the steps of ``node``: those of a parallel or branch all began together."""
    return {step_node.path for step_node in leaf_steps(node)}
