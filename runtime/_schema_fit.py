"""The commit-time check that each node of a chain can take the previous node's output.

A run hands each node the previous node's output, dumped as JSON-like data
and validated by the next node's input schema. ``commit()`` walks the
builder's nodes and compares the two schemas, so that a chain that cannot
fit fails at definition instead of after its earlier steps ran.

The check is conservative: it reports only what must fail at run time, a
required field of the next input that the previous output does not have, or
a field whose types cannot meet (``int`` against ``str``, a list against a
number, a nested model with the same faults). Whatever it cannot judge it
lets pass: ``Any``, unions that hold a fitting member, subclasses, fields
with defaults that are missing, models with ``extra="allow"`` or validators
that run before validation (they may reshape the data), root models, and
the output of a ``.map()``, of ``parallel``/``branch`` (keyed by step id)
and of ``foreach`` (a list).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, RootModel

from runtime._errors import WorkflowDefinitionError
from runtime._model_keys import UNION_ORIGINS, strip_annotated, validation_keys
from runtime._plan import (
    BranchNode,
    ConstructSpec,
    ExecutionPlan,
    ForeachNode,
    LoopNode,
    MapNode,
    Node,
    ParallelNode,
    SleepNode,
    StepNode,
)

__all__ = ["Feed", "check_chain", "check_feed", "schema_misfit"]

Kind = Literal["bool", "int", "float", "str", "bytes", "list", "dict", "model"]

# Which kinds of value a field of each kind accepts once the value went through JSON.
_ACCEPTS: dict[Kind, frozenset[Kind]] = {
    "bool": frozenset({"bool", "int"}),
    "int": frozenset({"int", "bool", "float"}),
    "float": frozenset({"float", "int", "bool"}),
    "str": frozenset({"str"}),
    "bytes": frozenset({"bytes", "str"}),
    "list": frozenset({"list"}),
    "dict": frozenset({"dict", "model"}),
    "model": frozenset({"model", "dict"}),
}

_LIST_ORIGINS: tuple[Any, ...] = (list, tuple, set, frozenset, Sequence)
_DICT_ORIGINS: tuple[Any, ...] = (dict, Mapping)


@dataclass(frozen=True, slots=True)
class Feed:
    """One side of a link in a chain: what produces a value, or what takes it.

    Attributes:
        what: How the error names it: ``"step 'a'"``, ``"the workflow's input"``.
        schema: Its model, or ``None`` when it is not known (after a ``.map()``).
        keyed: For the output of a ``parallel``, each member's id and output model.
    """

    what: str
    schema: type[BaseModel] | None
    keyed: Mapping[str, type[BaseModel]] | None = None

    def shown(self) -> str:
        """The model's name, or the members' for a keyed output."""
        if self.schema is not None:
            return self.schema.__name__
        members = ", ".join(f"{k!r}: {v.__name__}" for k, v in (self.keyed or {}).items())
        return "{" + members + "}"


def check_chain(
    workflow_id: str,
    input_schema: type[BaseModel],
    output_schema: type[BaseModel],
    nodes: Sequence[Node | ExecutionPlan],
) -> None:
    """Check, at ``commit()``, that each node of a workflow can take what the one before outputs.

    The first node takes the workflow's input; the last node's output is
    validated by the workflow's output schema. Every member of a
    ``parallel`` or ``branch`` takes the same input; a loop's step also takes
    its own output. A ``parallel`` outputs each member's output under its id,
    checked as fields of those models; after a ``.map()``, a ``branch`` (whose
    keys are only the arms that ran) or a ``foreach`` the output's model is not
    known and the next link is not checked; a ``foreach`` takes a list, which
    is not checked either.

    Raises:
        WorkflowDefinitionError: naming both sides of the first link that
            cannot fit, and the field.
    """
    previous = Feed("the workflow's input", input_schema)
    for node in nodes:
        previous = _through(workflow_id, previous, node)
    check_feed(workflow_id, previous, Feed("the workflow's result", output_schema), "output")


def _member_feed(member: StepNode | ExecutionPlan) -> tuple[Feed, Feed]:
    """What a member takes and what it outputs."""
    if isinstance(member, ExecutionPlan):
        what = f"nested workflow {member.workflow_id!r}"
        return Feed(what, member.input_schema), Feed(what, member.output_schema)
    what = f"step {member.step.id!r}"
    return Feed(what, member.step.input_schema), Feed(what, member.step.output_schema)


def _through(workflow_id: str, previous: Feed, node: Node | ExecutionPlan) -> Feed:
    """Check that ``node`` takes ``previous``; return what it outputs."""
    unknown = Feed("", None)
    if isinstance(node, StepNode | ExecutionPlan):
        takes, gives = _member_feed(node)
        check_feed(workflow_id, previous, takes)
        return gives
    if isinstance(node, ParallelNode | BranchNode):
        members = node.steps if isinstance(node, ParallelNode) else [m for _, m in node.arms]
        for member in members:
            check_feed(workflow_id, previous, _member_feed(member)[0])
        if isinstance(node, ParallelNode) and not node.flows:
            return _keyed(node.path, list(node.steps))
        return unknown
    if isinstance(node, LoopNode) and node.step_node is not None:
        return _loop(workflow_id, previous, node.step_node)
    if isinstance(node, ForeachNode):
        return unknown
    if isinstance(node, ConstructSpec):
        if node.kind in ("parallel", "branch"):
            for _, each in node.members:
                check_feed(workflow_id, previous, _member_feed(each)[0])
            if node.kind == "parallel":
                return _keyed(node.path, [each for _, each in node.members])
        elif node.kind == "loop" and len(node.members) == 1:
            return _loop(workflow_id, previous, node.members[0][1])
        return unknown
    if isinstance(node, SleepNode):
        return previous
    if isinstance(node, MapNode):
        return unknown
    return unknown


def _keyed(path: str, members: Sequence[StepNode | ExecutionPlan]) -> Feed:
    keyed = {
        (m.workflow_id if isinstance(m, ExecutionPlan) else m.step.id): _member_feed(m)[1].schema
        for m in members
    }
    return Feed(
        f"parallel {path!r}",
        None,
        {key: schema for key, schema in keyed.items() if schema is not None},
    )


def _loop(workflow_id: str, previous: Feed, member: StepNode | ExecutionPlan) -> Feed:
    takes, gives = _member_feed(member)
    check_feed(workflow_id, previous, takes)
    check_feed(workflow_id, Feed(f"{gives.what} (its previous iteration)", gives.schema), takes)
    return gives


def check_feed(workflow_id: str, source: Feed, target: Feed, role: str = "input") -> None:
    """Refuse a link whose target cannot take the source's output.

    Args:
        workflow_id: The workflow, for the message.
        source: What produces the value.
        target: What receives it.
        role: Which of the target's schemas it is validated by, for the message.

    Raises:
        WorkflowDefinitionError: naming both sides and the field.
    """
    if target.schema is None:
        return
    if source.schema is not None:
        problem = schema_misfit(source.schema, target.schema)
    elif source.keyed is not None:
        problem = _keyed_misfit(source.keyed, target.schema)
    else:
        return
    if problem is not None:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r}: {target.what} cannot take the output of "
            f"{source.what}: {problem} ({source.what}: {source.shown()}; "
            f"the {role} schema of {target.what}: {target.schema.__name__})"
        )


def schema_misfit(source: type[BaseModel], target: type[BaseModel]) -> str | None:
    """Why data of model ``source`` must fail model ``target``, or ``None`` if it may fit.

    Args:
        source: The model the value was validated by.
        target: The model it is validated by next.

    Returns:
        ``"field 'x' ..."`` for the first clear mismatch, or ``None``.
    """
    return _model_misfit(source, target, "", set())


def _model_misfit(
    source: type[BaseModel], target: type[BaseModel], prefix: str, seen: set[tuple[int, int]]
) -> str | None:
    key = (id(source), id(target))
    if key in seen or issubclass(source, target):
        return None
    seen.add(key)
    if (
        issubclass(source, RootModel)
        or issubclass(target, RootModel)
        or source.model_config.get("extra") == "allow"
        or _reshapes(target)
    ):
        return None
    # A snapshot holds a model dumped by alias: its keys are the serialization aliases.
    given = {
        field.serialization_alias or field.alias or name: field.annotation
        for name, field in source.model_fields.items()
    }
    return _fields_misfit(given, target, prefix, seen)


def _keyed_misfit(keyed: Mapping[str, type[BaseModel]], target: type[BaseModel]) -> str | None:
    if issubclass(target, RootModel) or _reshapes(target):
        return None
    return _fields_misfit(keyed, target, "", set())


def _fields_misfit(
    given: Mapping[str, Any], target: type[BaseModel], prefix: str, seen: set[tuple[int, int]]
) -> str | None:
    """Why fields ``given`` (key to annotation) must fail ``target``, or ``None``."""
    reshaped = _reshaped_fields(target)
    accepted: set[str] = set()
    for name, field in target.model_fields.items():
        names = validation_keys(target, name, field)
        accepted.update(names or (name,))
        if names is None:  # an AliasPath or AliasChoices: not judged
            continue
        present = next((n for n in names if n in given), None)
        if present is None:
            if field.is_required():
                return f"required field {prefix + names[0]!r} is missing"
            continue
        if name in reshaped:
            continue
        problem = _type_misfit(given[present], field.annotation, prefix + name, seen)
        if problem is not None:
            return problem
    if target.model_config.get("extra") == "forbid":
        unwanted = sorted(set(given) - accepted)
        if unwanted:
            return f"field {prefix + unwanted[0]!r} is not allowed (extra='forbid')"
    return None


def _reshapes(model: type[BaseModel]) -> bool:
    """Whether a model validator may change the data before the fields are read."""
    decorators = model.__pydantic_decorators__
    return any(d.info.mode in ("before", "wrap") for d in decorators.model_validators.values())


def _reshaped_fields(model: type[BaseModel]) -> set[str]:
    """The fields a validator reads before (or instead of) pydantic's own check."""
    names: set[str] = set()
    for decorator in model.__pydantic_decorators__.field_validators.values():
        if decorator.info.mode in ("before", "wrap", "plain"):
            names.update(decorator.info.fields)
            if "*" in decorator.info.fields:
                names.update(model.model_fields)
    return names


def _type_misfit(source: Any, target: Any, name: str, seen: set[tuple[int, int]]) -> str | None:
    source, target = strip_annotated(source), strip_annotated(target)
    if source is Any or target is Any or source is None or target is None:
        return None
    if typing.get_origin(source) in UNION_ORIGINS:
        # Conservative: one member that fits is enough.
        problems = [_type_misfit(arm, target, name, seen) for arm in typing.get_args(source)]
        return None if any(p is None for p in problems) else problems[0]
    if typing.get_origin(target) in UNION_ORIGINS:
        arms = typing.get_args(target)
        problems = [_type_misfit(source, arm, name, seen) for arm in arms]
        if any(p is None for p in problems):
            return None
        return f"field {name!r} is {_show(source)}, which does not fit {_show(target)}"
    if source is type(None) or target is type(None):
        if source is target:
            return None
        return f"field {name!r} is {_show(source)}, which does not fit {_show(target)}"
    source_kind, target_kind = _kind(source), _kind(target)
    if source_kind is None or target_kind is None:
        return None
    if source_kind not in _ACCEPTS[target_kind]:
        return f"field {name!r} is {_show(source)}, which does not fit {_show(target)}"
    if source_kind == "model" and target_kind == "model":
        return _model_misfit(source, target, f"{name}.", seen)
    if source_kind == target_kind in ("list", "dict"):
        source_args, target_args = typing.get_args(source), typing.get_args(target)
        if source_kind == "list" and (len(source_args) != 1 or len(target_args) != 1):
            return None  # tuples with positions, or no item type: not judged
        if source_kind == "dict" and (len(source_args) != 2 or len(target_args) != 2):
            return None
        return _type_misfit(source_args[-1], target_args[-1], f"{name}[]", seen)
    return None


def _kind(annotation: Any) -> Kind | None:
    """What a value of ``annotation`` is once dumped to JSON, where that is certain."""
    origin = typing.get_origin(annotation)
    if origin is not None:
        if origin in _LIST_ORIGINS:
            return "list"
        if origin in _DICT_ORIGINS:
            return "dict"
        return None
    if not isinstance(annotation, type):
        return None
    if annotation in _LIST_ORIGINS:
        return "list"
    if annotation in _DICT_ORIGINS:
        return "dict"
    if issubclass(annotation, BaseModel):
        return None if issubclass(annotation, RootModel) else "model"
    # An enum or another subclass of a builtin may validate differently: not judged.
    exact: dict[type, Kind] = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}
    return exact.get(annotation)


def _show(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return repr(annotation).replace("typing.", "")
