"""Starts and steps validate with the schema's own ``model_validate`` and ``model_dump``.

Starts and steps call pydantic's validator and serializer directly when the schema keeps
``BaseModel``'s methods (the wrappers cost as much as the work on a small input).
A schema that overrides either must still have its override called.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runtime import Runtime, create_step, create_workflow

WAIT = 10.0


class Plain(BaseModel):
    name: str


class Trimmed(BaseModel):
    """Trims its input in an overridden ``model_validate``."""

    name: str

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Trimmed:  # type: ignore[override]
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            obj = {**obj, "name": obj["name"].strip()}
        return super().model_validate(obj, **kwargs)


class Tagged(BaseModel):
    """Adds a field in an overridden ``model_dump``."""

    name: str

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {**super().model_dump(**kwargs), "tagged": True}


def _echo(schema: type[BaseModel]) -> Any:
    step = create_step(
        id="echo", input_schema=schema, output_schema=schema, execute=lambda ctx: ctx.input_data
    )
    return (
        create_workflow(id=f"override_{schema.__name__}", input_schema=schema, output_schema=schema)
        .then(step)
        .commit()
    )


def test_a_schema_with_its_own_model_validate_has_it_called_at_start() -> None:
    with Runtime() as rt:
        wf = rt.register(_echo(Trimmed))
        result = wf.create_run().start(input_data={"name": "  padded  "}, timeout=WAIT)
    assert result.status == "success"
    assert result.input == {"name": "padded"}


def test_a_schema_with_its_own_model_dump_has_it_called_at_start() -> None:
    with Runtime() as rt:
        wf = rt.register(_echo(Tagged))
        result = wf.create_run().start(input_data={"name": "x"}, timeout=WAIT)
    assert result.status == "success"
    assert result.input == {"name": "x", "tagged": True}
    assert result.steps["echo"].output == {"name": "x", "tagged": True}  # the step's too


def test_a_plain_schema_reads_the_same_through_the_direct_path() -> None:
    with Runtime() as rt:
        wf = rt.register(_echo(Plain))
        given = wf.create_run().start(input_data=Plain(name="m"), timeout=WAIT)
        mapped = wf.create_run().start(input_data={"name": "m"}, timeout=WAIT)
    assert given.input == mapped.input == {"name": "m"}
    assert given.result == mapped.result == {"name": "m"}
