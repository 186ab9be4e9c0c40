"""The execution plan: what ``commit()`` compiles a workflow into.

A plan is immutable, so the actors share it across threads without copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from runtime.errors import WorkflowDefinitionError
from runtime.step import Step

__all__ = ["ExecutionPlan", "compile_plan"]


@dataclass(frozen=True, slots=True, eq=False)
class ExecutionPlan:
    """A committed workflow: its schemas and its steps in the order they run.

    Attributes:
        workflow_id: The workflow's id.
        input_schema: The run input's model.
        output_schema: The run result's model (the last step's output must fit it).
        state_schema: The workflow state's model, if the workflow has state.
        steps: The steps, in order.
        by_id: The same steps by id.
    """

    workflow_id: str
    input_schema: type[BaseModel]
    output_schema: type[BaseModel]
    state_schema: type[BaseModel] | None
    steps: tuple[Step[Any, Any], ...]
    by_id: Mapping[str, Step[Any, Any]]


def compile_plan(
    *,
    workflow_id: str,
    input_schema: type[BaseModel],
    output_schema: type[BaseModel],
    state_schema: type[BaseModel] | None,
    steps: Sequence[Step[Any, Any]],
) -> ExecutionPlan:
    """Check a workflow's definition and freeze it into a plan.

    Raises:
        WorkflowDefinitionError: for a workflow without steps or with two
            steps of the same id.
    """
    if not steps:
        raise WorkflowDefinitionError(
            f"workflow {workflow_id!r} has no steps: add one with .then(step) before commit()"
        )
    by_id: dict[str, Step[Any, Any]] = {}
    for step in steps:
        if step.id in by_id:
            raise WorkflowDefinitionError(
                f"workflow {workflow_id!r} has two steps with the id {step.id!r}: "
                "step ids must be unique within a workflow"
            )
        by_id[step.id] = step
    return ExecutionPlan(
        workflow_id=workflow_id,
        input_schema=input_schema,
        output_schema=output_schema,
        state_schema=state_schema,
        steps=tuple(steps),
        by_id=MappingProxyType(by_id),
    )
