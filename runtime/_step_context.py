"""``StepContext``: what a step body receives as ``ctx``, and how it leaves early.

``ctx.suspend()`` and ``ctx.bail()`` leave the body by raising
:class:`SuspendRequest` and :class:`BailOut`, which the step actor catches.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, cast, overload

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from typing_extensions import TypeVar

from runtime import _clock
from runtime._errors import SnapshotEncodingError, WorkflowError
from runtime._ids import new_span_id
from runtime._request_context import RequestContext, changed, view
from runtime._snapshot import check_encodable, copy_plain
from runtime._step import (
    In_co,
    Step,
    dump_for_step,
    dump_model,
    plain,
    validate_for_step,
    validate_stored,
    where_not_dumped,
    why_not_dumped,
)
from runtime._sync import AbortSignal
from runtime._tracing import step_logger

if TYPE_CHECKING:
    from runtime._workflow import Workflow

__all__ = ["BailOut", "StepContext", "StepWriter", "SuspendRequest"]

State = TypeVar("State", default=Any)
"""What ``ctx.state`` is for the type checker: ``StepContext[In, MyState]`` (``Any`` by default)."""

StepOut = TypeVar("StepOut", bound=BaseModel)

WriterSink = Callable[[str, Any, float, int | None], None]
"""Where a step's writes go: ``sink(path, data, at, item)``."""


class StepWriter:
    """``ctx.writer``: what a step writes into its run's stream while it runs.

    Each :meth:`write` becomes a ``step_output`` event of ``run.stream()`` (and
    of ``run.watch()``), between the step's start and its end, in the order
    written: progress of a long step, or of each item of a ``foreach``. The
    events are not stored with the run: a stream sees those written while the
    runtime keeps the run's event log (see ``EVENT_LOG_SIZE``), in the process
    that runs the step; a stream in another process on a shared store sees none.
    """

    __slots__ = ("_item", "_path", "_run_id", "_schema", "_sink", "_step_id")

    def __init__(
        self,
        sink: WriterSink | None,
        *,
        path: str,
        step_id: str,
        run_id: str,
        schema: type[BaseModel] | None = None,
        item: int | None = None,
    ) -> None:
        self._sink = sink
        self._path = path
        self._step_id = step_id
        self._run_id = run_id
        self._schema = schema
        self._item = item

    def write(self, payload: Any) -> None:
        """Write ``payload`` into the run's stream as a ``step_output`` event.

        Args:
            payload: A model or plain data, validated against the step's
                ``writer_schema`` when it has one.

        Raises:
            StepValidationError: if the payload does not fit ``writer_schema``.
            SnapshotEncodingError: if the payload is not plain data.
            WorkflowError: in a condition or a ``map`` function, which only read.
        """
        if self._sink is None:
            raise WorkflowError(
                f"{self._path!r}: ctx.writer is not available here: a condition or map "
                "function only reads the run",
                run_id=self._run_id,
                step_id=self._step_id,
            )
        schema = self._schema
        if schema is not None:
            data = dump_for_step(
                validate_for_step(
                    schema,
                    payload,
                    f"step {self._step_id!r}: the writer.write() payload",
                    "its writer schema",
                    run_id=self._run_id,
                    step_id=self._step_id,
                ),
                f"step {self._step_id!r} writer payload",
                run_id=self._run_id,
                step_id=self._step_id,
            )
        else:
            data = plain(payload)
            check_encodable(data, f"step {self._step_id!r} writer payload")
            data = copy_plain(data)
        self._sink(self._path, data, _clock.time(), self._item)


class SuspendRequest(BaseException):
    """Raised by ``ctx.suspend()`` to leave the step body; the runtime catches it.

    A ``BaseException``, so that a body's ``except Exception`` does not swallow it.
    """

    def __init__(self, payload: Any) -> None:
        super().__init__("the step suspended")
        self.payload = payload


class BailOut(BaseException):
    """Raised by ``ctx.bail()`` to end its workflow as a success; the runtime catches it."""

    def __init__(self, result: Any) -> None:
        super().__init__("the step bailed out")
        self.result = result


_VIEWING = threading.Lock()
"""Taken while a context's request context view is made, on the first ask."""


class RunFields(Protocol):
    """What every call of a run (in one workflow scope) carries alike (``actors.messages.RunPart``).

    A context reads these through the call rather than copying them: a step
    body reads few of them, and the context was made at every step.
    """

    @property
    def run_id(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def state_schema(self) -> type[BaseModel] | None: ...
    @property
    def input_schema(self) -> type[BaseModel]: ...
    @property
    def definitions(self) -> Mapping[str, type[BaseModel]]: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def prefix(self) -> str: ...
    @property
    def bail_schema(self) -> type[BaseModel] | None: ...
    @property
    def writer(self) -> WriterSink | None: ...


class CallFields(Protocol):
    """What a call of user code carries that its context is made from (``actors.messages.Call``)."""

    @property
    def run(self) -> RunFields: ...
    @property
    def payload(self) -> Any: ...
    @property
    def state(self) -> Any: ...
    @property
    def request_context(self) -> dict[str, Any]: ...
    @property
    def init_data(self) -> Any: ...
    @property
    def outputs(self) -> Mapping[str, Any]: ...
    @property
    def path(self) -> str: ...
    @property
    def signal(self) -> AbortSignal | None: ...


class StepCallFields(CallFields, Protocol):
    """What a call of a step body carries as well (``actors.messages.CallStep``)."""

    @property
    def step(self) -> Step[Any, Any]: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def item(self) -> int | None: ...


class _Given:
    """The call and run fields of a context made by ``StepContext(...)``, as given.

    A context made for a call reads its call (and the call's run part) for
    them; one made by hand reads this, in both roles.
    """

    __slots__ = (
        "bail_schema",
        "definitions",
        "init_data",
        "input_schema",
        "item",
        "outputs",
        "prefix",
        "request_context",
        "state_schema",
        "trace_id",
        "writer",
    )

    def __init__(
        self,
        *,
        state_schema: type[BaseModel] | None,
        init_data: Any,
        input_schema: type[BaseModel],
        definitions: Mapping[str, type[BaseModel]],
        outputs: Mapping[str, Any],
        prefix: str,
        bail_schema: type[BaseModel] | None,
        writer: WriterSink | None,
        item: int | None,
    ) -> None:
        self.state_schema = state_schema
        self.init_data = init_data
        self.input_schema = input_schema
        self.definitions = definitions
        self.outputs = outputs
        self.prefix = prefix
        self.bail_schema = bail_schema
        self.writer = writer
        self.item = item
        self.request_context: dict[str, Any] = {}  # unused: the context is given
        self.trace_id: str | None = None  # unused: the logger's fields are given


class StepContext(Generic[In_co, State]):
    """What a step body (or a condition, or a ``map`` function) receives as ``ctx``.

    Generic for type checkers: a body annotated ``def body(ctx:
    StepContext[Order, Cart])`` sees ``ctx.input_data`` as an ``Order`` (the
    step's ``input_schema``) and ``ctx.state`` as a ``Cart`` (name the step's
    ``state_schema``, or the workflow's; the state is ``Any`` when omitted).

    Attributes:
        input_data: The step's input, validated against its ``input_schema``.
        run_id: The run's id.
        workflow_id: The id of the workflow the step belongs to (a nested
            workflow's own id inside it).
        step_id: This step's id.
        path: This step's path in the run's results (``"child.step"`` inside
            a nested workflow).
        request_context: The run's :class:`RequestContext`; changes are seen by
            later steps of the same run.
        retry_count: How many times this step has been retried in this round (0 at first).
        resume_data: What ``run.resume()`` passed, validated against the step's
            ``resume_schema`` (``None`` unless this call resumes the step).
        abort_signal: Set when the step should give up: the run was
            cancelled, a sibling in ``parallel`` failed, or the step timed out.
        iteration_count: In a loop's condition, how many times the loop has
            run its step; ``None`` elsewhere.
        writer: Writes the step's own events into the run's stream
            (``ctx.writer.write(payload)``; see :class:`StepWriter`).
    """

    __slots__ = (
        "_call",
        "_changes",
        "_log_fields",
        "_logger",
        "_read_only",
        "_request_context",
        "_run",
        "_span_id",
        "_state",
        "_writer",
        "abort_signal",
        "input_data",
        "iteration_count",
        "path",
        "resume_data",
        "retry_count",
        "run_id",
        "step",
        "step_id",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        step: Step[In_co, Any] | None,
        input_data: In_co,
        run_id: str,
        workflow_id: str,
        state: Any,
        workflow_state_schema: type[BaseModel] | None,
        request_context: RequestContext,
        init_data: Any,
        workflow_input_schema: type[BaseModel],
        definitions: Mapping[str, type[BaseModel]],
        outputs: Mapping[str, Any],
        log_fields: dict[str, Any],
        path: str | None = None,
        prefix: str = "",
        retry_count: int = 0,
        resume_data: Any = None,
        abort_signal: AbortSignal | None = None,
        read_only: bool = False,
        iteration_count: int | None = None,
        bail_schema: type[BaseModel] | None = None,
        writer: WriterSink | None = None,
        item: int | None = None,
    ) -> None:
        self.step = step
        self.step_id = step.id if step is not None else (path or "")
        self.path = path if path is not None else self.step_id
        self.input_data = input_data
        self.run_id = run_id
        self.workflow_id = workflow_id
        self._request_context: RequestContext | None = request_context
        self.retry_count = retry_count
        self.resume_data = resume_data
        self.abort_signal = abort_signal if abort_signal is not None else AbortSignal()
        self.iteration_count = iteration_count
        self._state = state
        self._changes: dict[str, Any] | None = {}
        given = _Given(
            state_schema=workflow_state_schema,
            init_data=init_data,
            input_schema=workflow_input_schema,
            definitions=definitions,
            outputs=outputs,
            prefix=prefix,
            bail_schema=bail_schema,
            writer=None if read_only else writer,
            item=item,
        )
        # What the step actor's contexts read through their call and its run part.
        self._call: CallFields | _Given = given
        self._run: RunFields | _Given = given
        self._log_fields: dict[str, Any] | None = log_fields
        self._span_id: str | None = None
        self._logger: Any = None
        self._read_only = read_only
        self._writer: StepWriter | None = None  # made when first asked for: few steps write

    # The step actor makes a context per call with these rather than with __init__: a
    # call with twenty keyword arguments cost more than the rest of making the context.
    # What the call carries is read through it (and its run part), not copied.

    @classmethod
    def _of_call(
        cls,
        call: CallFields,
        step: Step[Any, Any] | None,
        step_id: str,
        input_data: Any,
        span_id: str | None,
        *,
        retry_count: int = 0,
        resume_data: Any = None,
        iteration_count: int | None = None,
        read_only: bool = False,
    ) -> StepContext[Any, Any]:
        """A context as __init__ makes it, for a call of a step body or of code that only reads.

        One layer for every kind (a step body's is made at every step). A step
        body's call gives its step, its input and resume data (validated), and its
        ``retry_count``; conditions, a map or sleep function give no step, a
        ``step_id`` of their own, ``iteration_count`` (a loop's condition) and
        ``read_only``.
        """
        ctx: StepContext[Any, Any] = object.__new__(cls)
        run = ctx._run = call.run
        ctx._call = call
        ctx.step_id = step_id
        ctx.step = step
        ctx.path = call.path or step_id
        ctx.input_data = input_data
        ctx.run_id = run.run_id
        ctx.workflow_id = run.workflow_id
        ctx.retry_count = retry_count
        ctx.resume_data = resume_data
        signal = call.signal
        ctx.abort_signal = signal if signal is not None else AbortSignal()
        ctx.iteration_count = iteration_count
        ctx._state = call.state
        ctx._changes = {}
        # The request context's view, and the fields the logger is bound to, are made
        # when first asked for: few steps touch either.
        ctx._request_context = None
        ctx._log_fields = None
        ctx._span_id = span_id
        ctx._logger = None
        ctx._read_only = read_only
        ctx._writer = None
        return ctx

    @property
    def request_context(self) -> RequestContext:
        """The run's :class:`RequestContext`; changes are seen by later steps of the same run.

        Each call gets its own copy, made when the code first changes it (or reads
        a list or dict from it): a step that fails must not have changed what the
        run holds.
        """
        context = self._request_context
        if context is None:
            made = view(self._call.request_context, copy_plain)
            with _VIEWING:  # two threads of the step asking first must share one view
                context = self._request_context
                if context is None:
                    context = self._request_context = made
        return context

    @request_context.setter
    def request_context(self, value: RequestContext) -> None:
        if value is None:  # None stands for "not made yet": it would undo the step's changes
            raise TypeError("ctx.request_context cannot be set to None")
        self._request_context = value

    def _after(self) -> tuple[Any, dict[str, Any] | None, dict[str, Any] | None]:
        """What a step's code leaves, for the runtime: its state, request context and changes.

        The request context's values, checked to be storable, if the code touched
        them; ``None`` if not (they are still the run's own, checked before).
        """
        context = self._request_context
        values = None if context is None else changed(context)
        if values is not None:
            try:
                check_encodable(values, "request_context")
            except SnapshotEncodingError as exc:
                exc.run_id, exc.step_id = self.run_id, self.step_id
                raise
        return self._state, values, self._changes

    @property
    def writer(self) -> StepWriter:
        """Writes the step's own events into the run's stream (see :class:`StepWriter`)."""
        writer = self._writer
        if writer is None:
            step = self.step
            # Code that only reads the run writes nothing (its call has no item either).
            read_only = self._read_only
            writer = self._writer = StepWriter(
                None if read_only else self._run.writer,
                path=self.path,
                step_id=self.step_id,
                run_id=self.run_id,
                schema=step.writer_schema if step is not None else None,
                item=None if read_only else cast("StepCallFields", self._call).item,
            )
        return writer

    def now(self) -> datetime:
        """The time now, as callboard's timers see it (an aware UTC datetime).

        The wall clock, except under a test harness with a virtual clock
        (:class:`runtime.testing.Harness`): then the virtual time, which
        jumps over sleeps, back-offs and timeouts. A step that wants to
        compare times with the ones its workflow sleeps until reads this.
        """
        return datetime.fromtimestamp(_clock.time(), UTC)

    @property
    def cancelled(self) -> bool:
        """Whether the step has been told to stop (``abort_signal`` is set)."""
        return self.abort_signal.aborted

    @property
    def state(self) -> State:
        """The workflow state, as the step sees it.

        A model of the step's ``state_schema`` (or else the workflow's), or a
        copy of the plain dict when there is no schema.
        """
        schema = (self.step.state_schema if self.step else None) or self._run.state_schema
        if schema is not None:
            return cast(State, validate_stored(schema, self._state or {}))
        return cast(State, copy.deepcopy(self._state) if self._state is not None else {})

    def _refuse(self, what: str) -> None:
        if self._read_only:
            raise WorkflowError(
                f"{self.path!r}: {what} is not available here: a condition or map "
                "function only reads the run",
                run_id=self.run_id,
                step_id=self.step_id,
            )

    def set_state(self, value: Any) -> None:
        """Update the workflow state; later steps read the new value.

        A step without a ``state_schema`` of its own replaces the whole state.
        A step with one updates only that schema's keys: ``value`` is validated
        against the step's schema and merged into the state the step sees,
        and the merge is validated against the workflow's ``state_schema``;
        the run merges the same keys into its state when the step ends, so
        steps that run at once and update different keys all keep theirs.

        Args:
            value: A model or a mapping, validated against the step's
                ``state_schema`` (if it has one) and the workflow's (if it has one).

        Raises:
            StepValidationError: if the value fails the step's or the workflow's
                state schema.
            SnapshotEncodingError: if the value cannot be stored in a snapshot.
            WorkflowError: in a condition or a ``map`` function, which only read.
        """
        self._refuse("set_state()")
        own = self.step.state_schema if self.step is not None else None
        part: dict[str, Any] | None = None
        if own is not None:
            part = dump_for_step(
                validate_for_step(
                    own,
                    value,
                    f"step {self.step_id!r}: the set_state() value",
                    "its state schema",
                    run_id=self.run_id,
                    step_id=self.step_id,
                ),
                "state",
                run_id=self.run_id,
                step_id=self.step_id,
            )
            base = self._state if isinstance(self._state, Mapping) else {}
            value = {**base, **part}
        schema = self._run.state_schema
        if schema is not None:
            model = validate_for_step(
                schema,
                value,
                f"step {self.step_id!r}: the set_state() value"
                + (" merged into the state" if part is not None else ""),
                "the workflow's state schema",
                run_id=self.run_id,
                step_id=self.step_id,
                stored=part is not None,  # merged into the stored state: dumps, both of them
            )
            try:
                new_state = dump_model(model)
            except (PydanticSerializationError, ValueError) as exc:
                # An object an Any field took that JSON cannot hold, say.
                why = why_not_dumped(exc)
                where, what = "state", type(model).__name__
                found = where_not_dumped(model, where, exc)
                if found is not None:
                    where, what = found
                    why = f"{where} holds a value of type {what} ({why})"
                raise self._unstorable_state(
                    f"step {self.step_id!r}: the state it set ({type(model).__name__}) cannot "
                    f"be stored in a snapshot: {why}",
                    what,
                    where,
                ) from exc
            # Its schema took it, but a snapshot may not: an int past 64 bits was found
            # only when the run actor encoded the snapshot, and the actor crashed.
            self._check_state(new_state, str_keys_known=True)
        else:
            new_state = plain(value)
            if isinstance(new_state, Mapping):
                new_state = dict(new_state)
            self._check_state(new_state)
            new_state = copy_plain(new_state)  # later changes to the caller's value stay out
        self._state = new_state
        if part is None:
            self._changes = None  # the whole state is replaced
        elif self._changes is not None:
            self._changes.update((key, new_state[key]) for key in part if key in new_state)

    def _check_state(self, state: Any, *, str_keys_known: bool = False) -> None:
        """Refuse a state no snapshot can hold, naming this step and run."""
        try:
            check_encodable(state, "state", str_keys_known=str_keys_known)
        except SnapshotEncodingError as exc:
            exc.run_id, exc.step_id = self.run_id, self.step_id
            raise

    def _unstorable_state(
        self, text: str, type_name: str, path: str = "state"
    ) -> SnapshotEncodingError:
        return SnapshotEncodingError(
            text, path=path, type_name=type_name, run_id=self.run_id, step_id=self.step_id
        )

    @property
    def state_changes(self) -> dict[str, Any] | None:
        """What the step changed in the state, for the runtime to merge into the run's.

        ``{}`` when it changed nothing, the keys it updated (with its own
        ``state_schema``), or ``None`` when it replaced the whole state
        (:attr:`raw_state`).
        """
        return self._changes

    def suspend(self, payload: Any = None) -> NoReturn:
        """Suspend the run at this step; it waits, holding no thread, for ``run.resume()``.

        This leaves the body at once (it raises an exception the runtime
        catches, derived from ``BaseException`` so ``except Exception`` does
        not stop it). On resume the body is called again from the start with
        the same input and ``ctx.resume_data`` set.

        Args:
            payload: What the run's result shows for this step (a model or
                plain data), validated against the step's ``suspend_schema``.

        Raises:
            StepValidationError: if the payload does not fit ``suspend_schema``.
            WorkflowError: in a condition or a ``map`` function.
        """
        self._refuse("suspend()")
        schema = self.step.suspend_schema if self.step is not None else None
        if schema is not None:
            payload = dump_for_step(
                validate_for_step(
                    schema,
                    payload,
                    f"step {self.step_id!r}: the suspend() payload",
                    "its suspend schema",
                    run_id=self.run_id,
                    step_id=self.step_id,
                ),
                f"step {self.step_id!r} suspend payload",
                run_id=self.run_id,
                step_id=self.step_id,
            )
        else:
            payload = plain(payload)
            check_encodable(payload, f"step {self.step_id!r} suspend payload")
            payload = copy_plain(payload)
        raise SuspendRequest(payload)

    def bail(self, result: Any) -> NoReturn:
        """End the workflow this step is in now as a success, with ``result`` as its output.

        Leaves the body at once, like :meth:`suspend`. At the top, the run
        ends, with ``result`` as its result: no later step runs. In a nested
        workflow, that workflow ends (its steps still running are cancelled)
        and ``result`` is its output: the run goes on with the step after it,
        as Mastra runs a nested workflow as a run of its own.

        Args:
            result: The output (a model or plain data), validated against
                the ``output_schema`` of the workflow the step is in.

        Raises:
            StepValidationError: if the result does not fit the output schema.
            WorkflowError: in a condition or a ``map`` function.
        """
        self._refuse("bail()")
        schema = self._run.bail_schema
        if schema is not None:
            result = dump_for_step(
                validate_for_step(
                    schema,
                    result,
                    f"step {self.step_id!r}: the bail() result",
                    f"the output schema of the workflow it ends ({schema.__name__})",
                    run_id=self.run_id,
                    step_id=self.step_id,
                ),
                f"step {self.step_id!r} bail result",
                run_id=self.run_id,
                step_id=self.step_id,
            )
        else:
            result = plain(result)
            check_encodable(result, f"step {self.step_id!r} bail result")
        raise BailOut(result)

    @property
    def raw_state(self) -> Any:
        """The state as plain data (for the runtime)."""
        return self._state

    def get_init_data(self) -> Any:
        """The input of the workflow this step belongs to, as its ``input_schema`` model."""
        return validate_stored(self._run.input_schema, self._call.init_data)

    @overload
    def get_step_result(self, step: Step[Any, StepOut]) -> StepOut | None: ...

    @overload
    def get_step_result(self, step: Workflow[Any, StepOut]) -> StepOut | None: ...

    @overload
    def get_step_result(self, step: str) -> Any: ...

    def get_step_result(self, step: Step[Any, Any] | Workflow[Any, Any] | str) -> Any:
        """The output of an earlier step of this run, as its ``output_schema`` model.

        Given the :class:`Step` itself, a type checker knows the model
        (``Step[In, Out]`` gives ``Out | None``); given an id, it does not.
        A nested workflow is a step too: given it (or its id), this is its
        output, as its ``output_schema`` model.

        Inside a nested workflow a step id names a step of the same nested
        workflow; a full path (``"child.step"``) names any step.

        Args:
            step: The step, a nested workflow, or its id (or path).

        A step that ran as a ``foreach`` body has a list of outputs, one per
        item: given its id, this returns the list of models; given the step
        itself (typed to give one model), it raises ``TypeError``.

        A ``.map()`` is named by its id (``map-N`` unless given one): its
        output has no model, so this returns a copy of it as plain data.

        Returns:
            The output model (a list of them for a foreach step named by id;
            plain data for a map), or ``None`` when that step has not
            succeeded in this run.

        Raises:
            KeyError: if the workflow has no step with that id.
            TypeError: if ``step`` is a :class:`Step` that ran as a foreach body,
                or is not a step, a workflow or a string.
        """
        if isinstance(step, str):
            step_id = step
        else:
            # A step or a workflow (a layer above: told by its id, as any object with one).
            named = None if isinstance(step, type) else getattr(step, "id", None)
            if not isinstance(named, str):
                raise TypeError(
                    "ctx.get_step_result() takes a step, a nested workflow or its id (a str), "
                    f"got {step!r}"
                )
            step_id = named
        definitions = self._run.definitions
        prefix = self._run.prefix
        path = prefix + step_id
        schema = definitions.get(path)
        if schema is None:
            path = step_id
            schema = definitions.get(path)
        if schema is None:
            maps = getattr(definitions, "plain", ())
            path = prefix + step_id
            if path not in maps:
                path = step_id
            if path not in maps or not isinstance(step, str):
                raise KeyError(f"workflow {self.workflow_id!r} has no step {step_id!r}")
            # A .map(): no model to read its output as; a copy, so that changing it
            # changes nothing the run holds (its record, a later map's input).
            output = self._call.outputs.get(path)
            return None if output is None else copy_plain(output)
        output = self._call.outputs.get(path)
        if output is None:
            return None
        per_item = getattr(definitions, "per_item", None)
        if type(output) is list if per_item is None else path in per_item:
            if type(output) is not list:
                return None  # one item's output, the foreach going on (a nested workflow's)
            if not isinstance(step, str):
                raise TypeError(
                    f"step {step_id!r} ran as a foreach body: its output is a list, one per "
                    f"item, not one {schema.__name__}; ctx.get_step_result({step_id!r}) (by id) "
                    "returns the list of models"
                )
            return [validate_stored(schema, item) for item in output]
        return validate_stored(schema, output)

    @property
    def logger(self) -> Any:
        """A structlog logger bound to the run's ``trace_id``, ``run_id`` and this step."""
        if self._logger is None:
            fields = self._log_fields
            if fields is None:
                fields = {
                    "trace_id": self._run.trace_id,
                    "span_id": self._span_id,
                    "run_id": self.run_id,
                    "workflow_id": self.workflow_id,
                    "step_id": self.path,
                }
            if "span_id" in fields and fields["span_id"] is None:
                # The step's span was not made, as nothing would have seen it: the
                # logger still names a span of the step's own.
                fields = {**fields, "span_id": new_span_id()}
            self._logger = step_logger(**fields)
        return self._logger
