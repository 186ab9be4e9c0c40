"""callboard's test kit: a runtime wired for tests, virtual time, a message trace, faults.

A :class:`Harness` starts a :class:`~runtime.Runtime` for one test and stops it,
checking that no actor thread is left. Inside it:

- **Virtual time** (:class:`VirtualClock`): every timer callboard owns (sleeps,
  ``sleep_until``, retry back-offs, step timeouts, cron schedules, queues' rate
  windows, and a shared store's worker leases and heartbeats) reads the
  harness's clock. With ``time_skipping=True`` (the default) the clock jumps to
  the next timer whenever no step is executing and the actors have gone quiet,
  so a workflow that sleeps 30 days ends in milliseconds, its timers firing in
  order. The next timer may also be a schedule's next tick, a rate window's
  opening, or the end of the lease of a worker that stopped renewing. With
  ``time_skipping=False`` the clock moves only when the test calls
  :meth:`VirtualClock.advance`, which walks through each timer due by then,
  the runtime's timers set on the way included. Steps read it with ``ctx.now()``. A real
  ``time.sleep`` (or ``asyncio.sleep``) in a step is *not* skipped: it takes
  its real time, and holds the clock back meanwhile, no further than real
  time: a timer due while steps alone execute fires once as much real time
  has passed (a step's timeout fails a hung step). A step waiting on
  ``ctx.abort_signal.wait()`` with no timeout, or for another run, does not
  hold it back.
- **A message trace** (:class:`Trace`): every message an actor handles, as a
  frozen :class:`TraceEvent`.
- **Faults**, chosen by run, step path and attempt: :meth:`Harness.fail_step`,
  :meth:`Harness.crash_run`, :meth:`Harness.drop_message`,
  :meth:`Harness.delay_message`, :meth:`Harness.crash_and_recover`;
  :meth:`Harness.clear_faults` takes them back.
- **Step overrides**: :meth:`Harness.override` swaps a step's body for this
  harness only; its schemas still validate what goes in and out.
- **Seeded ids**: ``Harness(seed=...)`` makes the run and trace ids a test
  draws repeat from one test session to the next (on a store holding the same runs).

Outside a harness none of this costs anything: the actors read two module
attributes that are ``None``, and the timers read the clock through a module
attribute that is :func:`time.time` itself.

Only one harness may be open at a time in a process: the clock and the probes
it installs are process-wide, so another runtime running in the same process
meanwhile reads the virtual clock too, and its messages show in the trace.

How the skipper tells that nothing is executing: a call handed to the step
pool counts until its run actor has received the reply (a step waiting on its
abort signal alone does not count); no actor waits for a dispatcher thread and
none is in a handler; the store's writer holds no write; the claimer and the
scheduler have done the pass a jump asked of them; and nothing was handled
during two looks a millisecond apart. Work on other threads than these (a
hook's, a step's own) can let the clock jump a moment early: the timers still
fire in order, but a run that is about to set a timer may set it after the jump.

Example::

    with Harness() as harness:
        wf = harness.register(workflow)
        result = wf.create_run().start(input_data={...})
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, TypeVar, overload

from runtime import _clock, _ids, _probes
from runtime._model import RunStatus, StepStatus, WorkflowResult
from runtime._plan import BranchNode, MapNode, SleepNode
from runtime._queries import get_run
from runtime._runtime import Runtime, message_protocol
from runtime._step import In, Out, Step, _Returned
from runtime._step_context import StepContext
from runtime._stores.base import process_alive, this_host
from runtime._stores.postgres import PostgresStore
from runtime._stores.sqlite import SQLiteStore
from runtime._tracing import emit
from runtime._workflow import Workflow

__all__ = [
    "Harness",
    "InjectedCrashError",
    "Trace",
    "TraceEvent",
    "VirtualClock",
]

W = TypeVar("W", bound=Workflow[Any, Any])

_LATEST: Final = 253_402_300_800.0
"""The first second of the year 10000 (epoch seconds): no record holds a time past it."""

WALK_PATIENCE: Final = 2.0
"""Real seconds ``clock.advance`` waits, before a timer it walks through, for steps that
execute and make no progress; then it goes on without them."""

SKIP_POLL: Final = 0.001
"""Seconds between two looks of the time skipper at the runtime: it jumps only after
two looks in a row found no step executing and no message handled in between."""

IDLE_POLL: Final = 0.016
"""Seconds between two looks of the time skipper while the runtime is quiet with no timer
to jump to: it waits for the test's next call, which the next look notices."""

QUIET_PATIENCE: Final = 0.5
"""Real seconds a close without time skipping waits for busy actors to go quiet before it
judges whether anything runs that the stop should wait for."""

RUNS_SHOWN: Final = 3
"""How many of its failed runs (the first to fail, each with its error), and of its runs not
ended, a failing test is shown."""

THREADS_PATIENCE: Final = 5.0
"""Real seconds a close waits, once its runtime stopped, for callboard's threads to end before
it names those left (a step body still in user code, a runtime the test did not stop)."""

JOINED_LOOK: Final = 0.25
"""Real seconds between two looks of a time-skipping harness, before a jump of its clock,
for other processes that joined its shared store after it opened (told at the close)."""

STORE_LOOK_EVERY: Final = 0.25
"""Real seconds a shared store's deadlines (lease lapses, rate windows) are read again after,
while nothing happens in the process; as soon as something does, they are read again."""

THREAD_PREFIXES: Final = ("callboard-", "StepActor-", "RegistryActor-")
"""The names of the threads callboard starts (pykka names actor threads after their class)."""

_SENDERS: Final[dict[str, str]] = {
    "StartRun": "Runtime",
    "NotifyWhenIdle": "Runtime",
    "AbortRuns": "Runtime",
    "WakeRun": "Timers",
    "RunEnded": "RunActor",
    "RunParked": "RunActor",
    "RunCrashed": "RunActor",
    "StepWaitBegan": "StepActor",
    "StepBodiesEnded": "StepActor",
    "SnapshotTaken": "RunActor",
    "SettledCommitted": "Store",
    "WatchRun": "Runtime",
    "ReadWaited": "Registry",
    "UnwatchRun": "Runtime",
    "SubscribeRun": "Runtime",
    "UnsubscribeRun": "Runtime",
    "StepWrote": "StepActor",
    "QueuesDue": "Timers",
    "DeadlinePassed": "Timers",
    "RunDeleted": "Store",
    "RunsDeleted": "Runtime",
    "WritesRefused": "Store",
    "RecordFailure": "Supervisor",
    "RunsClaimed": "Claimer",
    "SnapshotSeen": "StoreWatcher",
    "StepFinished": "StepActor",
    "SnapshotCommitted": "Registry",
    "TimerFired": "Timers",
    "StartHookCalled": "Hooks",
    "AbortRun": "Supervisor",
    "CallStep": "RunActor",
    "CallConditions": "RunActor",
    "CallMap": "RunActor",
    "CallSleepLength": "RunActor",
}
"""Who sends each message, as the protocol (actors/messages.py) says. ``CancelRun`` and
``ResumeStep`` go from the runtime to the supervisor and from the supervisor to a run actor
(:data:`_HANDED_ON`)."""

_HANDED_ON: Final = frozenset({"CancelRun", "ResumeStep"})
"""Messages the supervisor hands on to a run actor: their sender depends on the receiver."""

_RECEIVERS: Final[dict[str, str]] = {
    "SupervisorActor": "Supervisor",
    "RunActor": "RunActor",
    "StepActor": "StepActor",
    "RegistryActor": "Registry",
}


_HANDLED_BY, _CALLS = message_protocol()
"""Which actors handle each message type (``CancelRun``: the supervisor and a run actor),
and the names of the calls of a step's or a node's code (``CallStep``, ``CallMap``...)."""

_active: Harness | None = None
_active_lock = threading.Lock()


_STEP_MESSAGES: Final = frozenset(
    {"CallStep", "CallConditions", "CallMap", "CallSleepLength", "StepFinished"}
)
"""The messages about one step (a call of its code, or the reply): a fault may name the step."""

_FAULT_METHODS: Final = {"crash": "crash_run", "drop": "drop_message", "delay": "delay_message"}
"""The method that gives each kind of message fault, as an error names it."""

_DURABLE_ONLY: Final = frozenset({"SnapshotCommitted", "SettledCommitted"})
"""The messages sent only once a durable store (SQLite, PostgreSQL) has committed a write."""


def _check_fault(
    method: str,
    at: str,
    occurrence: int,
    step: str | None = None,
    *,
    crash: bool = False,
    durable: bool = True,
) -> None:
    """Refuse a fault that would never fire: a message type no actor handles, a bad count.

    A misspelt type (``"StepFinishd"``) was taken, and the test went on without
    its fault, passing for the wrong reason; so was a step given for a message
    that names none (``TimerFired``), a ``crash`` (of a run actor) at a
    message only other actors receive (``StartRun``, ``CallStep``), and a
    fault at a commit's message (``SnapshotCommitted``) on a store in memory
    (``durable`` false), which commits nothing.
    """
    if at not in _HANDLED_BY:
        raise ValueError(
            f"{method}: no message {at!r}; the actors handle {', '.join(sorted(_HANDLED_BY))}"
        )
    if not durable and at in _DURABLE_ONLY:
        raise ValueError(
            f"{method}: a {at} is sent only once a durable store (a SQLite file, PostgreSQL) "
            f"has committed a write, and this harness keeps its runs in memory, so it could "
            f'never come; give the harness a durable store (store="sqlite")'
        )
    if crash and "RunActor" not in _HANDLED_BY[at]:
        theirs = sorted(name for name, by in _HANDLED_BY.items() if "RunActor" in by)
        raise ValueError(
            f"{method}: a run actor never receives a {at} (the "
            f"{' and the '.join(sorted(_HANDLED_BY[at]))} handles it), so it could never "
            f"crash at one; a run actor receives {', '.join(theirs)}"
        )
    if step is not None and at not in _STEP_MESSAGES:
        raise ValueError(
            f"{method}: a {at} names no step, so step={step!r} would never match; a step is "
            f"named by {', '.join(sorted(_STEP_MESSAGES))} (filter a {at} by run_id)"
        )
    if not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence < 1:
        raise ValueError(f"{method}: occurrence is counted from 1, got {occurrence!r}")


def _caller_outside(path: str) -> str:
    """Where the code that called into ``path``'s package (callboard) is: ``file:line``."""
    package = os.path.dirname(path) + os.sep
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class InjectedCrashError(Exception):
    """Raised inside a run actor by :meth:`Harness.crash_run`: the run fails, crashed."""


# --- virtual time ----------------------------------------------------------------------


class VirtualClock:
    """A clock that moves only when told to (or when a harness skips time).

    It starts at the wall-clock time it was made at, so that ``sleep_until``
    a date in the near future still lies ahead. While a :class:`Harness` is
    open, every timer of callboard reads it.

    Args:
        start: Epoch seconds to start at; the wall clock's now when omitted.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        if not 0 <= self._now < _LATEST:  # NaN too
            raise ValueError(
                f"a virtual clock starts between 1970 and the year 9999; got {start!r} seconds"
            )
        self._lock = threading.Lock()
        # Set by the open harness: moves the clock to a time through each timer before it.
        self._walker: Callable[[float], None] | None = None

    def now(self) -> float:
        """The virtual time, in epoch seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward; the timers due by then fire, in order.

        On a harness's clock this walks: it stops at each timer due by then,
        and once the runtime has handled it (the run went on, and maybe set a
        timer of its own, a next sleep, a retry's back-off, that is due by
        then too) goes on to the next. So ``advance(20)`` takes a run through
        two sleeps of 10 seconds, as 20 seconds would. It waits for steps
        executing meanwhile, but gives up waiting on one that makes no
        progress for :data:`WALK_PATIENCE` real seconds (one blocked until
        the test itself does something next, say): the clock then goes on
        without it.

        Args:
            seconds: How far; zero does nothing.

        Raises:
            ValueError: for a negative ``seconds`` (time never goes back), or
                one that would take the clock past the year 9999, which no
                record can hold.
        """
        if not seconds >= 0:  # NaN too
            raise ValueError(f"a clock only goes forward; got {seconds!r} seconds")
        if not self._now + seconds < _LATEST:  # inf too
            raise ValueError(
                f"advance({seconds!r}) would take the clock past the year 9999, which no run's "
                "record can hold"
            )
        walker = self._walker
        if walker is not None:
            walker(self._now + seconds)
            return
        # Inside jumping(): live workers renew their leases before any reaper sees the
        # new time, so only a worker that stopped renewing is found dead.
        with _clock.jumping(), self._lock:
            self._now += seconds

    def _jump_to(self, when: float) -> None:
        if when <= self._now:
            return
        with _clock.jumping(), self._lock:
            self._now = max(self._now, when)

    def __repr__(self) -> str:
        return f"<VirtualClock {self._now:.3f}>"


# --- the trace -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One message an actor handled, in the order the actors handled them.

    Attributes:
        sequence: Its place in the trace, from 1.
        sender: Who sends a message of this type, as the protocol says
            (``Runtime``, ``Supervisor``, ``RunActor``, ``StepActor``,
            ``Registry``, ``Timers``, ...).
        receiver: The actor that handled it: ``Supervisor``, ``RunActor``,
            ``StepActor`` or ``Registry``.
        message: The message's type name (``CallStep``, ``StepFinished``, ...).
        run_id: The run it concerns, if any.
        step_path: The step it concerns, if any (a nested step's full path).
    """

    sequence: int
    sender: str
    receiver: str
    message: str
    run_id: str | None
    step_path: str | None

    def __str__(self) -> str:
        where = f" step={self.step_path}" if self.step_path else ""
        run = f" run={self.run_id}" if self.run_id else ""
        return (
            f"{self.sequence:5d}  {self.sender:>12} -> {self.receiver:<10} "
            f"{self.message:<18}{run}{where}"
        )


class Trace:
    """The messages callboard's actors handled while a harness was open.

    Read it as a sequence of :class:`TraceEvent`; :meth:`of` keeps one run's,
    :meth:`expect_in_order` checks an order, :meth:`dump` prints it.
    """

    def __init__(self, events: Sequence[TraceEvent] = ()) -> None:
        self._events: list[TraceEvent] = list(events)
        self._lock = threading.Lock()
        self._sequence = itertools.count(len(self._events) + 1)

    def _record(
        self, sender: str, receiver: str, message: str, run_id: str | None, path: str | None
    ) -> None:
        with self._lock:
            self._events.append(
                TraceEvent(next(self._sequence), sender, receiver, message, run_id, path)
            )

    @property
    def events(self) -> tuple[TraceEvent, ...]:
        """Every event so far, in order."""
        with self._lock:
            return tuple(self._events)

    def of(self, run_id: str) -> Trace:
        """The events of one run, as a trace of their own (sequence numbers kept)."""
        return Trace([event for event in self.events if event.run_id == run_id])

    def messages(self) -> list[str]:
        """The message type names, in order."""
        return [event.message for event in self.events]

    def expect_in_order(self, *expected: str) -> None:
        """Check that these messages were handled in this order (others may come between).

        Each item is a message type name (``"CallStep"``), optionally with a
        step after a colon (``"StepFinished:fetch"``) or the receiver before
        an arrow (``"RunActor<-StepFinished"``). A step named without a dot
        matches the last part of a step's path, as a fault names a step by
        its id: ``"CallStep:fetch"`` matches ``fetch`` and a nested
        ``child.fetch``; one with a dot matches the whole path only
        (``"CallStep:child.fetch"``).

        Raises:
            AssertionError: naming the first item not found after the one before,
                the messages of its type that were handled (and where), and the
                whole trace.
            ValueError: for an item that could never match: a message type no
                actor handles (``"CallStpe"``), or a receiver that never handles
                that type (``"Runactor<-StepFinished"``).
        """
        for item in expected:
            _check_item(item)
        events = self.events
        position = 0  # where the next item is looked for
        after: tuple[str, TraceEvent] | None = None  # the item before, and what it matched
        for item in expected:
            receiver, _, rest = item.rpartition("<-")
            name, _, step = rest.partition(":")
            found = next(
                (
                    index
                    for index in range(position, len(events))
                    if _matches(events[index], name, step, receiver)
                ),
                None,
            )
            if found is None:
                raise AssertionError(_missed(item, expected, after, events, name))
            after, position = (item, events[found]), found + 1

    def dump(self) -> str:
        """The trace as text, one event a line."""
        return "\n".join(str(event) for event in self.events) or "(no messages)"

    def clear(self) -> None:
        """Forget every event so far."""
        with self._lock:
            self._events.clear()

    def __iter__(self) -> Iterator[TraceEvent]:
        """The events, in order."""
        return iter(self.events)

    def __len__(self) -> int:
        """How many events."""
        return len(self._events)

    def __repr__(self) -> str:
        return f"<Trace {len(self)} events>"


def _check_item(item: str) -> None:
    """Refuse an item of :meth:`Trace.expect_in_order` that no message could ever match.

    A misspelt type failed as "no CallStpe message was handled", which reads as a run
    that never got there; a misspelt receiver listed the messages it missed, each with
    the receiver the item meant to name.
    """
    receiver, _, rest = item.rpartition("<-")
    name = rest.partition(":")[0]
    handled_by = _HANDLED_BY.get(name)
    if handled_by is None:
        raise ValueError(
            f"expect_in_order: {item!r} names no message {name!r}; the actors handle "
            f"{', '.join(sorted(_HANDLED_BY))}"
        )
    if receiver and receiver not in handled_by:
        raise ValueError(
            f"expect_in_order: in {item!r}, a {name} is handled by the "
            f"{' and the '.join(sorted(handled_by))}, never by {receiver!r}"
        )


def _names_step(wanted: str, path: str | None) -> bool:
    """Whether a step named ``wanted`` is the one at ``path``.

    Named without a dot, a step is the last part of a path (its id: a nested
    ``child.fetch`` is ``fetch``); with one, the whole path.
    """
    if path is None:
        return False
    if path == wanted:
        return True
    return "." not in wanted and path.rpartition(".")[2] == wanted


def _matches(event: TraceEvent, name: str, step: str, receiver: str) -> bool:
    """Whether ``event`` is the message of an item of :meth:`Trace.expect_in_order`."""
    return (
        event.message == name
        and (not step or _names_step(step, event.step_path))
        and (not receiver or event.receiver == receiver)
    )


_SHOWN: Final = 20
"""How many messages of the type looked for a failed expectation lists."""


def _missed(
    item: str,
    expected: tuple[str, ...],
    after: tuple[str, TraceEvent] | None,
    events: Sequence[TraceEvent],
    name: str,
) -> str:
    """What a failed :meth:`Trace.expect_in_order` says: what it looked for, and what was seen."""
    where = (
        f"after {after[0]!r} (matched by message #{after[1].sequence})"
        if after is not None
        else "in the trace"
    )
    same = [event for event in events if event.message == name]
    if same:
        shown = "; ".join(
            f"#{event.sequence} {event.sender} -> {event.receiver}"
            + (f" step={event.step_path}" if event.step_path else "")
            + (" (before)" if after is not None and event.sequence <= after[1].sequence else "")
            for event in same[:_SHOWN]
        )
        more = f" and {len(same) - _SHOWN} more" if len(same) > _SHOWN else ""
        seen = f"the {name} messages handled: {shown}{more}"
    else:
        seen = f"no {name} message was handled"
    return (
        f"expected {item!r} {where}, of {expected!r}; {seen} (a step named without a dot "
        f"matches the last part of a path, one with a dot the whole path); the trace:\n"
        + ("\n".join(str(event) for event in events) or "(no messages)")
    )


# --- faults ----------------------------------------------------------------------------


@dataclass(slots=True)
class _StepFault:
    step: str
    error: BaseException | type[BaseException]
    attempts: frozenset[int]
    run_id: str | None
    # The attempts it failed: (run, path, foreach item, attempt). A step called again
    # in the same run (restarted, resumed, recovered) counts its attempts from 1 again,
    # and a fault meant to fail its first attempt failed the restarted run too.
    failed: set[tuple[str, str, int | None, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, call: Any, path: str, attempt: int) -> bool:
        """Whether this fault fails this call: one it names, of an attempt not failed yet."""
        if not (
            self.step in (path, call.step.id)
            and attempt in self.attempts
            and (self.run_id is None or self.run_id == call.run_id)
        ):
            return False
        key = (call.run_id, path, call.item, attempt)
        with self.lock:  # a foreach's items call the step on several threads at once
            if key in self.failed:
                return False
            self.failed.add(key)
        return True

    def raise_it(self, path: str, attempt: int) -> Any:
        error = self.error
        if isinstance(error, type):
            raise error(f"injected by the test harness: step {path!r}, attempt {attempt}")
        # A fresh copy each time, so that tracebacks do not pile up on one instance.
        raise copy_error(error)


def copy_error(error: BaseException) -> BaseException:
    """A new exception like ``error`` (same type and arguments), or ``error`` itself."""
    try:
        fresh = type(error)(*error.args)
    except Exception:
        return error
    fresh.__dict__.update(getattr(error, "__dict__", {}))
    return fresh


_Names = tuple[str | None, str | None]
"""What names the step (or node) a message is about: its path and its id."""


def _answer_lost(actor: Any, message: Any) -> None:
    """Answer a message a fault lost as its actor answers mail it never handles.

    A caller waits for the reply of a ``ResumeStep`` or a ``CancelRun``, which
    nobody gave once the message was lost: ``run.resume_async()`` hung for ever.
    An actor that stops before it reads one answers it (``on_undelivered``):
    the supervisor that the run is not here, the run's actor that it has gone,
    as a lost message would tell the caller. The caller acts on that as it does
    in a runtime: a cancel is given again, a resume reads the run again.
    """
    undelivered = getattr(actor, "on_undelivered", None)
    if undelivered is not None:
        undelivered(message)


def _call_names(call: Any) -> tuple[str, str]:
    """The path and the id of the step (or ``map``, ``branch``, ``sleep`` node) a call runs.

    A node's id is its path inside its own workflow: a nested ``child.shape``'s is ``shape``.
    """
    path: str = call.path or call.step_id
    step = getattr(call, "step", None)
    if step is not None:
        return path, step.id
    prefix: str = call.prefix
    return path, path[len(prefix) :] if prefix and path.startswith(prefix) else path


@dataclass(slots=True)
class _MessageFault:
    action: str  # "crash", "drop" or "delay"
    at: str
    run_id: str | None
    step: str | None
    occurrence: int
    seconds: float = 0.0
    seen: int = 0
    fired: bool = False
    taken_back: bool = False  # by clear_faults()

    def hit(self, receiver: str, message: str, run_id: str | None, names: _Names) -> bool:
        if self.fired or self.taken_back or message != self.at:
            return False
        if self.action == "crash" and receiver != "RunActor":
            return False
        if self.run_id is not None and run_id != self.run_id:
            return False
        if self.step is not None and self.step not in names:  # its path, or its id
            return False
        self.seen += 1
        if self.seen == self.occurrence:
            self.fired = True
            return True
        return False


@dataclass(slots=True)
class _Counters:
    """What the time skipper reads to tell that the runtime is quiet."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # Calls handed to the step pool whose reply the run actor has not received yet,
    # by (run actor, token): a call counts from the hand-over until its reply is handled.
    # With each, the path and id of the code it calls: a reply names the step by its id alone.
    calls: dict[tuple[str, int], tuple[Any, str, str]] = field(default_factory=dict)
    submitted: int = 0  # calls handed to the step pool, ever
    # Steps waiting on their abort signal or another run alone, each with whether what it
    # waits for has come: once it has, the step counts as executing, its thread awake or
    # not (a step thread slow to wake after its child run ended let the clock jump to the
    # step's timeout, which failed it).
    parked: dict[int, Callable[[], bool]] = field(default_factory=dict)
    handled: int = 0  # messages handled by any actor


# --- the harness -----------------------------------------------------------------------


class Harness:
    """A runtime wired for one test; a context manager, sync (``with``) and async.

    Args:
        store: ``"memory"`` (the default); ``"sqlite"``, a SQLite file of the
            harness's own in a temporary directory, removed when it closes (as
            the pytest marker's ``store="sqlite"``); or a SQLite path, a
            ``postgresql://`` URL or a store object, as for
            :class:`~runtime.Runtime`. Only a durable store survives
            :meth:`crash_and_recover`.
        time_skipping: Jump the virtual clock to the next timer whenever no
            step is executing; ``False`` moves it only on
            :meth:`VirtualClock.advance`.
        seed: Seed the ids drawn on the test's own threads (run ids, trace
            ids), so that they repeat from one session to the next. Ids drawn
            on callboard's threads (span ids, actor ids) come from a seeded
            generator too, but in whatever order the threads draw them. The
            runs the store holds when the harness opens are mixed into the
            seed, so that on a store that outlives a test (a path) the next
            draws none it holds: the ids repeat on a store holding the same
            runs. The store's owner id is never seeded. With an OpenTelemetry
            tracer provider configured, the trace and span ids are its own,
            which the seed does not reach.
        stop_timeout: Seconds :meth:`close` gives runs in progress to end.
        **runtime_options: Passed on to :class:`~runtime.Runtime`
            (``max_concurrent_runs``, ``max_step_threads``, ...).

    Time skipping covers the timers the runtime keeps itself: sleeps,
    ``sleep_until``, retry back-offs, step timeouts, cron schedules, queues'
    rate windows, and on a shared store (SQLite, PostgreSQL) the workers'
    leases. Each jump of the clock renews the lease of every worker still
    running in this process, so only one that stopped renewing (a stalled or
    killed runtime) is found dead once the clock passes its lease, and its
    runs go back to the queue; with time skipping the clock jumps to the end
    of such a lease by itself. A schedule keeps the clock jumping from tick
    to tick while nothing else happens. Workers in other processes stamp
    their heartbeats with the real clock: do not share a store with them
    while the clock jumps.

    Raises:
        RuntimeError: on entering, if another harness is open in this process.
    """

    def __init__(
        self,
        store: Any = "memory",
        *,
        time_skipping: bool = True,
        seed: int | None = None,
        stop_timeout: float = 5.0,
        **runtime_options: Any,
    ) -> None:
        if not isinstance(time_skipping, bool):
            raise TypeError(f"time_skipping must be True or False, got {time_skipping!r}")
        self.store = store
        self._store_given = store  # "sqlite" is a new file each time the harness opens
        self._temporary: str | None = None  # the directory of that file, while open
        self.time_skipping = time_skipping
        self.seed = seed
        self.stop_timeout = stop_timeout
        self._options = runtime_options
        self.clock = VirtualClock()
        self.trace = Trace()
        self._runtime: Runtime | None = None
        self._workflows: dict[str, Workflow[Any, Any]] = {}
        self._overrides: dict[str, Callable[[Any], Any]] = {}
        self._step_faults: list[_StepFault] = []
        self._message_faults: list[_MessageFault] = []
        self._counters = _Counters()
        self._park_keys = itertools.count()  # a key for each parked wait
        # Messages a delay holds back, by id() once handed over again, until their actor
        # takes them: each with the names it came with and the first fault left to apply.
        self._held: dict[int, tuple[Any, _Names, int]] = {}
        self._held_lock = threading.Lock()
        self._killed: set[threading.Thread] = set()
        self._forget_waker: Callable[[], None] | None = None
        self._skipper: threading.Thread | None = None
        self._skipping_done = threading.Event()
        self._store_due: tuple[Any, float, list[float]] | None = None
        self._open = False
        self._closed = False  # closed after being open: overrides and faults refused
        self._opened_at = ""
        self._others: frozenset[threading.Thread] = frozenset()
        # Other processes found using the store after it opened (host:pid), and when the
        # store was last looked at for them (real, monotonic seconds).
        self._joined: set[str] = set()
        self._joined_looked = 0.0
        self._store_name = ""

    # --- opening and closing ---------------------------------------------------------

    def start(self) -> Harness:
        """Install the clock and probes and start the runtime (``with`` does this).

        A harness opened again after a close starts clean, as a new one would:
        a new clock and trace, and none of the overrides and faults it was
        given before; the workflows registered with it are registered again.

        Raises:
            RuntimeError: if this or another harness is open in this process; or,
                with time skipping, if another live process uses the harness's
                shared store (a SQLite file, a PostgreSQL database): the jumping
                clock would take that process's leases for lapsed and run its
                runs again.
        """
        global _active  # noqa: PLW0603 - one harness per process: the probes are global
        with _active_lock:
            if _active is self:
                raise RuntimeError("this Harness is open already")
            if _active is not None:
                raise RuntimeError(
                    f"another Harness is open in this process (opened {_active._opened_at}); "
                    "close it first"
                )
            _active = self
            self._opened_at = f"at {_caller_outside(__file__)}"
        if self._closed:
            self._forget_last_opening()
        if getattr(self.store, "_closed", False):
            # A store object is closed with the runtime that used it: a harness opened
            # again, or one test's of a marker that names one object for them all, failed
            # its first start with "the run store is closed". The same place, anew.
            self.store = _reopened(self.store)
        # Threads of runtimes started outside the harness are theirs to stop, not ours.
        self._others = frozenset(threading.enumerate())
        try:
            _clock.install(self.clock.now)
            _probes.observer = self._observe
            _probes.step_body = self._body
            _probes.parked = self._parked
            if isinstance(self._store_given, str) and self._store_given == "sqlite":
                # A keyword, as "memory" is, not a path: a file named ./sqlite was made in
                # the working directory, and shared by every harness that gave it.
                self._temporary = tempfile.mkdtemp(prefix="callboard-harness-")
                self.store = Path(self._temporary) / "runs.db"
            self._runtime = self._start_runtime()
            store = _system_of(self._runtime).store
            if self.time_skipping:
                _refuse_shared_use(store)
            self._store_name = _store_named(store)
            if self.seed is not None:
                # Once the store is open: the runs it holds are mixed into the seed.
                _seed_ids(self.seed, _stored_runs(store))
            self.clock._walker = self._walk_to
            if self.time_skipping:
                self._skipping_done.clear()
                self._skipper = threading.Thread(
                    target=self._skip, name="callboard-test-clock", daemon=True
                )
                self._skipper.start()
            self._open = True
            self._closed = False
        except BaseException:
            runtime, self._runtime = self._runtime, None
            if runtime is not None:
                with contextlib.suppress(Exception):  # the error that stopped the start counts
                    runtime.stop(0.0)
            self._uninstall()
            self._remove_temporary()
            raise
        return self

    def _forget_last_opening(self) -> None:
        """Drop what the last opening left: its clock, trace, overrides, faults, held mail.

        One harness opened by each test of a module would otherwise fail a test
        with the fault an earlier one gave, and show it that test's messages.
        """
        self.clock = VirtualClock()
        self.trace = Trace()
        self._overrides = {}
        self._step_faults = []
        self._message_faults = []
        self._counters = _Counters()
        with self._held_lock:
            self._held = {}
        self._killed = set()
        self._store_due = None
        self._joined = set()
        self._joined_looked = 0.0

    def close(self) -> None:
        """Stop the runtime, remove the clock and probes, and check that no thread is left.

        Raises:
            AssertionError: if a thread of callboard is still alive a few seconds
                after the stop (a step stuck in user code, say), if an
                override or fault names a step that no registered workflow has
                (a misspelt id: it could never have applied, and the test
                passed without it), or if a fault at a ``SnapshotCommitted``
                never fired (the runs waited for no commit: a run of one step
                waits for none), or if, with time skipping, another process
                joined the harness's shared store while it was open.
        """
        self._close(check=True)

    def _close(self, *, check: bool, error: BaseException | None = None) -> None:
        """:meth:`close`, checking what was left.

        Args:
            check: Whether to raise for what was left (the steps named, the
                threads); not while a test fails: its own failure is the one to
                read, and a step it would have released is likely still waiting.
                Threads left are then told as a note on ``error``, or logged.
            error: The exception the test's block raised, if any.
        """
        if not self._open:
            return
        if error is not None:
            for _, said in self._runs_said():
                error.add_note(said)
        self._open = False
        self._closed = True
        unknown = self._unknown_steps() if check else ""
        joined = self._joined_said() if check else ""
        try:
            if self._runtime is not None:
                self._runtime.stop(self._stop_budget(self._runtime))
        finally:
            self._uninstall()
        # Once the runtime stopped: a run the close let end may have met its fault.
        unfired = self._unfired_at_commits() if check else ""
        left = _wait_for_no_threads(THREADS_PATIENCE, self._others)
        self._remove_temporary()
        if left:
            names = [thread.name for thread in left]
            said = f"threads of callboard left after the harness closed: {names}{_why_left(names)}"
            if check:
                raise AssertionError(said)
            if error is not None:
                error.add_note(f"(and {said})")
            else:
                emit(logging.WARNING, "harness_threads_left", threads=names)
        if unknown or unfired or joined:
            raise AssertionError("; and ".join(part for part in (unknown, unfired, joined) if part))

    def _runs_said(self) -> list[tuple[str, str]]:
        """What a failing test is told of its harness's runs: titled parts, none if nothing.

        The runs that failed, the first ones with their errors: a test that checks a
        run's status failed with ``assert 'failed' == 'success'`` alone, the error of
        the step (an assertion in its body, a typo) and its traceback out of its sight.
        And the runs that have not ended, with what each waits for: a test without
        time skipping that waited for a run asleep on the harness's clock ended in
        ``RunTimeoutError`` (or hung until pytest-timeout) with no word that the clock
        moves only when the test advances it.
        """
        failed = self._runs_of(RunStatus.FAILED)
        unended = self._runs_of(
            RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.SUSPENDED
        )
        told = []
        if failed[0]:
            told.append(("callboard: runs that failed", _listed_runs(failed, "failed", _failure)))
        if unended[0]:
            told.append(
                ("callboard: runs not ended", _listed_runs(unended, "not ended", self._waits))
            )
        return told

    def _runs_of(self, *statuses: RunStatus) -> tuple[int, list[WorkflowResult]]:
        """How many runs of this harness (traced) stand at ``statuses``, and the first ones."""
        runtime = self._runtime
        ran = {event.run_id for event in self.trace.events if event.run_id is not None}
        if runtime is None or not ran:
            return 0, []
        try:
            store = _system_of(runtime).store
            records, _ = store.list_runs(status=[str(status) for status in statuses], limit=None)
            ours = [record.run_id for record in reversed(records) if record.run_id in ran]
            shown = [get_run(store, run_id) for run_id in ours[:RUNS_SHOWN]]
        except Exception:  # a store closed, or crashed: nothing to tell
            return 0, []
        return len(ours), [result for result in shown if result is not None]

    def _waits(self, result: WorkflowResult) -> str:
        """What a run that has not ended waits for, as the harness's clock sees it."""
        if result.status == RunStatus.SUSPENDED:
            return f"is suspended at {sorted(result.suspended)}: it waits for run.resume()"
        if result.status == RunStatus.WAITING and result.waiting_until is not None:
            ahead = result.waiting_until.timestamp() - self.clock.now()
            still = (
                ""
                if self.time_skipping
                else ", and this harness's clock moves only when the test calls "
                "harness.clock.advance(seconds)"
            )
            return f"waits until {result.waiting_until} ({ahead:g} s ahead of the clock{still})"
        running = sorted(
            path for path, step in result.steps.items() if step.status == StepStatus.RUNNING
        )
        return f"is {result.status}" + (f", at {running}" if running else "")

    def _look_for_joined(self, *, now: bool = False) -> None:
        """Note the other processes using the store, at most every :data:`JOINED_LOOK` s.

        Opening refuses a store another live process uses; one that joins it
        later (a ``callboard worker`` a test starts, another test's harness
        given the same path) has its leases lapse on this harness's clock at
        the next jump, and its runs taken and run again here. Looked for
        before the clock jumps, and told at the close.
        """
        runtime = self._runtime
        if not self.time_skipping or runtime is None:
            return
        looked = time.monotonic()
        if not now and looked - self._joined_looked < JOINED_LOOK:
            return
        self._joined_looked = looked
        try:
            self._joined.update(_other_processes(_system_of(runtime).store))
        except Exception:  # a runtime or store stopping under the look: nothing to tell
            return

    def _joined_said(self) -> str:
        """What to say of other processes that used the store while the clock jumped."""
        self._look_for_joined(now=True)
        if not self._joined:
            return ""
        return (
            f"{len(self._joined)} other process(es) ({_listed(self._joined)}) used the store "
            f"{self._store_name} while this harness skipped time: on its clock their "
            "leases lapsed, and their runs may have been taken and run again here (and this "
            "harness's there); give each process a store of its own, or open the harness "
            "with time_skipping=False"
        )

    def _unfired_at_commits(self) -> str:
        """What to say of the faults at a ``SnapshotCommitted`` that never fired.

        Whether a run receives one depends on what it waits for, which the test
        does not see: a run of one step receives none (its first call waits for
        no commit, nor does its end), but does once restarted. So a fault given
        for it was taken, never fired, and the test passed without it. It cannot
        be refused when it is made (the run it will meet is not known then), so
        it is told here, as a step that no workflow has is.
        """
        unfired = [
            fault
            for fault in self._message_faults
            if fault.at == "SnapshotCommitted" and not fault.fired and not fault.taken_back
        ]
        if not unfired:
            return ""
        told = ", ".join(
            f"{_FAULT_METHODS[fault.action]}(at='SnapshotCommitted'"
            + (f", run_id={fault.run_id!r}" if fault.run_id is not None else "")
            + (f", occurrence={fault.occurrence}" if fault.occurrence != 1 else "")
            + f") met {fault.seen} of the {fault.occurrence} it waited for"
            for fault in unfired
        )
        return (
            f"faults at a SnapshotCommitted never fired, and the test passed without them: "
            f"{told}. A run receives one only for a commit it waits for before it goes on: "
            f"the snapshot holding a step's output, before the next step's call (a new run's "
            f"first calls wait for none), a resume's, and the end's before an on_finish or "
            f"on_error hook; so a run of one step receives none. Fault the run at its "
            f"StepFinished instead, give it a step after the one faulted, or take the fault "
            f"back (harness.clear_faults())"
        )

    def _stop_budget(self, runtime: Runtime) -> float:
        """How long the close lets runs in progress go on: ``stop_timeout``, or none at all.

        None when the clock no longer moves (no time skipping) and nothing runs: what
        is left waits on timers (a sleep, a retry's back-off) that can never fire, and
        the whole ``stop_timeout`` was spent for nothing at every such close. A hook
        under way runs: a run whose ``on_start`` was still being called failed at a
        stop that gave it nothing.
        """
        if self.time_skipping or not runtime.is_running:
            return self.stop_timeout
        try:
            system = _system_of(runtime)
        except RuntimeError:
            return self.stop_timeout
        if self._steps_executing() or _hooks_under_way(system):
            return self.stop_timeout
        # Actors busy for a moment (a run that just went to sleep telling its supervisor)
        # are let finish: read at that moment, the close waited its stop_timeout whole.
        settled = time.monotonic() + QUIET_PATIENCE
        while self._actors_busy(system):
            if time.monotonic() > settled:
                return self.stop_timeout
            time.sleep(SKIP_POLL)
        if self._steps_executing() or _hooks_under_way(system):
            return self.stop_timeout
        return 0.0

    def _unknown_steps(self) -> str:
        """What to say of the overrides and faults naming no step of a registered workflow."""
        runtime = self._runtime
        # What runs a step's body names a step; a message fault may name a node too.
        bodies = [*self._overrides, *(fault.step for fault in self._step_faults)]
        messages = [
            fault.step
            for fault in self._message_faults
            if fault.step is not None and not fault.taken_back
        ]
        if runtime is None or not (bodies or messages):
            return ""
        known, nodes, nested = _names_of(runtime)
        unknown = sorted(
            {name for name in bodies if name not in known}
            | {name for name in messages if name not in known | nodes}
        )
        if not unknown:
            return ""
        workflows = [name for name in unknown if name in nested]
        told = (
            f"; {workflows} name nested workflows, not steps: name their steps by their "
            f"paths ('{workflows[0]}.<step id>')"
            if workflows
            else ""
        )
        also = (
            f", and the nodes a message fault may name (map, branch, computed sleep) are "
            f"{sorted(nodes)}"
            if nodes
            else ""
        )
        return (
            f"the harness was told of steps no registered workflow has: {unknown} (its "
            f"overrides and faults for them never applied){told}; the steps are "
            f"{sorted(known)}{also}"
        )

    def _step_named(self, step: Step[Any, Any] | str) -> str:
        """``step``'s id or path; refused at once if it names a registered nested workflow."""
        name = _step_id(step)
        runtime = self._runtime
        if runtime is not None and isinstance(step, str):
            known, nodes, nested = _names_of(runtime)
            if name in nested and name not in known | nodes:
                raise TypeError(
                    f"{name!r} names a nested workflow, not a step: name its steps by their "
                    f"paths ('{name}.<step id>')"
                )
        return name

    def _remove_temporary(self) -> None:
        """Remove the file of ``store="sqlite"`` (its directory, with SQLite's side files)."""
        directory, self._temporary = self._temporary, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            self.store = self._store_given

    def _uninstall(self) -> None:
        global _active  # noqa: PLW0603
        self.clock._walker = None
        self._skipping_done.set()
        if self._skipper is not None:
            self._skipper.join(5.0)
            self._skipper = None
        if self._forget_waker is not None:
            self._forget_waker()
            self._forget_waker = None
        _probes.observer = None
        _probes.step_body = None
        _probes.parked = None
        _clock.uninstall()
        if self.seed is not None:
            _unseed_ids()
        with _active_lock:
            if _active is self:
                _active = None

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close(check=exc_type is None, error=exc_value)

    async def __aenter__(self) -> Harness:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._close, check=exc_type is None, error=exc_value)

    # --- the runtime -----------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        """The harness's runtime: a normal :class:`~runtime.Runtime` (a new one after a crash).

        Raises:
            RuntimeError: if the harness is not open.
        """
        if self._runtime is None or not self._open:
            raise RuntimeError("the harness is not open: use `with Harness() as harness:`")
        return self._runtime

    def register(self, workflow: W) -> W:
        """Register a committed workflow with the harness's runtime (and its successors).

        Returns:
            The workflow bound to the runtime, as :meth:`Runtime.register` returns it.
        """
        bound = self.runtime.register(workflow)
        self._workflows[workflow.plan.workflow_id] = workflow
        return bound

    def fire_schedules(self, timeout: float = 10.0) -> None:
        """Have the runtime's scheduler look at its cron schedules now, and wait until it has.

        After ``harness.clock.advance(...)``, the runs of every tick due by
        then are started (as their schedules' policies say) when this returns::

            harness.runtime.schedule(report, cron="0 * * * *", input_data={...})
            harness.clock.advance(3600)
            harness.fire_schedules()  # the run of the hour's tick is started

        Raises:
            RuntimeError: if the runtime has no scheduler (a ``client``), or it
                did not look within ``timeout`` seconds.
        """
        scheduler = self.runtime._scheduler
        if scheduler is None:
            raise RuntimeError("the runtime fires no schedules (it is a client, or stopped)")
        deadline = time.monotonic() + timeout
        # A pass catches up on ALL_AT_MOST ticks of a schedule: as many passes as it
        # takes, until one starts nothing more (it returned with 100 of 250 started).
        while True:
            began = self._scheduled_runs()
            if not scheduler.caught_up(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(
                    f"the scheduler did not look at the schedules within {timeout} s"
                )
            if self._scheduled_runs() == began:
                return

    def _scheduled_runs(self) -> tuple[tuple[str, float | None, str | None], ...]:
        """Each schedule's last tick and run, as the store holds them."""
        return tuple(
            (row.schedule_id, row.last_tick, row.last_run_id) for row in self.runtime._book().all()
        )

    def workflow(self, workflow_id: str) -> Workflow[Any, Any]:
        """A registered workflow, bound to the current runtime (use after a crash).

        Raises:
            KeyError: if no workflow with this id was registered with the harness
                (or on its runtime, before a crash).
        """
        workflow = self._workflows.get(workflow_id)
        if workflow is None:
            raise KeyError(
                f"no workflow {workflow_id!r} was registered with this harness; registered: "
                f"{sorted(self._workflows)} (harness.register(workflow) registers one)"
            )
        return self.runtime.register(workflow)

    def _start_runtime(self) -> Runtime:
        # The store's owner id is drawn as the runtime starts: never from the seed, or two
        # seeded processes (pytest-xdist's workers), or a seeded harness after a killed
        # one on the same file, would be one worker to the store.
        with _unseeded():
            runtime = Runtime(store=self.store, stop_timeout=self.stop_timeout, **self._options)
            runtime.start()
        system = _system_of(runtime)
        if self._forget_waker is not None:
            self._forget_waker()
        # A shared store's claimer wakes by itself when the clock jumps (its sleeping runs
        # wait in the store, and leases may have run out).
        forget = [_clock.on_advance(system.timers.wake)]

        def forget_all() -> None:
            for each in forget:
                each()

        self._forget_waker = forget_all
        self._count_calls(system)
        for workflow in self._workflows.values():
            runtime.register(workflow)
        return runtime

    # --- overrides and faults --------------------------------------------------------

    @overload
    def override(
        self, step: Step[In, Out], fn: Callable[[StepContext[In]], _Returned[Out]]
    ) -> None: ...

    @overload
    def override(self, step: str, fn: Callable[[Any], Any]) -> None: ...

    def override(self, step: Step[Any, Any] | str, fn: Callable[[Any], Any]) -> None:
        """Run ``fn(ctx)`` instead of the step's body, in this harness only.

        Given the step itself, a type checker holds ``fn`` to the step's
        types, as a body given to ``create_step``; given an id, it cannot.

        The step's input is validated before ``fn`` is called and what ``fn``
        returns is validated against the step's output schema, as for the
        real body. The step itself is not changed: outside the harness it
        runs its own body.

        Args:
            step: The step, or its id.
            fn: The stand-in body: a plain function or an ``async def``.

        Raises:
            TypeError: if ``fn`` is not callable.
            RuntimeError: if the harness has been closed.
        """
        self._refuse_when_closed("override")
        if not callable(fn):
            raise TypeError(f"override: fn must be callable, got {type(fn).__name__}")
        self._overrides[self._step_named(step)] = fn

    def fail_step(
        self,
        step: Step[Any, Any] | str,
        error: BaseException | type[BaseException],
        *,
        attempt: int | Sequence[int] = 1,
        run_id: str | None = None,
    ) -> None:
        """Make a step raise ``error`` on the given attempts, before its body runs.

        Each attempt named fails once in a run: a step called again in the
        same run, with its attempts counted from 1 again (the run restarted
        with ``run.restart()``, the step resumed, the run recovered after
        :meth:`crash_and_recover`, a loop's next iteration), is not failed
        again on an attempt this fault failed already. A foreach's items each
        count their own. Give the fault again to fail them again.

        Args:
            step: The step, its id, or its path in the plan (``"child.fetch"``).
            error: The exception (a copy is raised each time) or its type.
            attempt: Which attempts fail, counted from 1; one or several.
            run_id: Only in this run; in every run when omitted.

        Raises:
            TypeError: if ``error`` is not an exception or an exception type, or
                a type that cannot be made from a message alone (give an
                instance of it instead).
            ValueError: if an attempt is not a whole number from 1.
            RuntimeError: if the harness has been closed.
        """
        self._refuse_when_closed("fail_step")
        if not (
            isinstance(error, BaseException)
            or (isinstance(error, type) and issubclass(error, BaseException))
        ):
            raise TypeError(f"fail_step: error must be an exception or its type, got {error!r}")
        if isinstance(error, type):
            # Made from a message each time it fires: a type that needs more arguments
            # failed the step with a TypeError of its __init__, the fault's error nowhere.
            try:
                error("injected by the test harness")
            except Exception as exc:
                raise TypeError(
                    f"fail_step: {error.__name__} cannot be made from a message alone ({exc}); "
                    f"give an instance instead: fail_step(step, {error.__name__}(...))"
                ) from exc
        attempts = frozenset((attempt,) if isinstance(attempt, int) else attempt)
        if not attempts or any(
            not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in attempts
        ):
            raise ValueError(f"fail_step: attempts are counted from 1, got {attempt!r}")
        self._step_faults.append(_StepFault(self._step_named(step), error, attempts, run_id))

    def crash_run(
        self,
        at: str = "StepFinished",
        *,
        run_id: str | None = None,
        step: Step[Any, Any] | str | None = None,
        occurrence: int = 1,
    ) -> None:
        """Crash a run actor when it receives a message: the run ends ``failed``, crashed.

        The supervisor records the run as failed with ``RunCrashedError``
        naming an :class:`InjectedCrashError`, as it would for a bug in the
        run actor. Happens once.

        Args:
            at: The message type that crashes it, one a run actor receives:
                ``"StepFinished"`` (a step's reply), ``"SnapshotCommitted"``
                (on a durable store: the commit of a snapshot the run waits
                for before it goes on, as the one holding a step's output does
                before the next step's call; a new run's first calls wait for
                none, so a run of one step receives none, and a fault at one
                that never fired fails the harness's close),
                ``"TimerFired"`` (a retry's back-off ending; a sleep's
                end wakes the run through the supervisor instead),
                ``"CancelRun"``, ``"AbortRun"``, ``"StartHookCalled"``,
                ``"ResumeStep"``.
            run_id: Only this run; the first that matches when omitted.
            step: Only a message about this step (path or id).
            occurrence: Crash on the n-th matching message.

        Raises:
            ValueError: if ``at`` is no message a run actor receives, ``step`` is
                given for a message that names none, ``occurrence`` is not from 1,
                or ``at`` is ``"SnapshotCommitted"`` on a store in memory.
            RuntimeError: if the harness has been closed.
        """
        self._refuse_when_closed("crash_run")
        path = None if step is None else self._step_named(step)
        _check_fault("crash_run", at, occurrence, path, crash=True, durable=self._durable())
        self._message_faults.append(_MessageFault("crash", at, run_id, path, occurrence))

    def drop_message(
        self,
        at: str,
        *,
        run_id: str | None = None,
        step: Step[Any, Any] | str | None = None,
        occurrence: int = 1,
    ) -> None:
        """Lose one message: the actor it was for never handles it. Happens once.

        Losing a step's ``StepFinished`` looks to its run like a step that
        never returns: its timeout fails it (and a retry may follow); a step
        without a timeout keeps its run waiting. A lost message that a caller
        waits on (``"ResumeStep"``, ``"CancelRun"``) is answered as its actor
        answers mail it never read: the run is not here (the supervisor's) or
        has gone (the run actor's). ``run.cancel()`` then gives its cancel
        again; a resume reads the run again (in memory, finding it unchanged,
        it raises ``ResumeConflictError``: it changed nothing), or, a request
        in a durable store, is carried out at the worker's next look.

        Args:
            at: The message type (``"StepFinished"``, ``"CallStep"``,
                ``"TimerFired"``, ``"SnapshotTaken"``, ...).
            run_id: Only this run's.
            step: Only a message about this step (path or id).
            occurrence: Lose the n-th matching message.

        Raises:
            ValueError: if ``at`` is no message an actor handles, ``step`` is given
                for a message that names none, ``occurrence`` is not from 1, or
                ``at`` is a durable store's commit (``"SnapshotCommitted"``,
                ``"SettledCommitted"``) on a store in memory.
            RuntimeError: if the harness has been closed.
        """
        self._refuse_when_closed("drop_message")
        path = None if step is None else self._step_named(step)
        _check_fault("drop_message", at, occurrence, path, durable=self._durable())
        self._message_faults.append(_MessageFault("drop", at, run_id, path, occurrence))

    def delay_message(
        self,
        at: str,
        seconds: float,
        *,
        run_id: str | None = None,
        step: Step[Any, Any] | str | None = None,
        occurrence: int = 1,
    ) -> None:
        """Hand one message to its actor ``seconds`` of (virtual) time late. Happens once.

        Args:
            at: The message type, as for :meth:`drop_message`.
            seconds: How late; the delay is a timer on the harness's clock.
            run_id: Only this run's.
            step: Only a message about this step (path or id).
            occurrence: Delay the n-th matching message.

        Raises:
            ValueError: as :meth:`drop_message`; and for ``seconds`` not a finite
                number, 0 or more.
            RuntimeError: if the harness has been closed.
        """
        self._refuse_when_closed("delay_message")
        path = None if step is None else self._step_named(step)
        _check_fault("delay_message", at, occurrence, path, durable=self._durable())
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(
                f"delay_message: seconds must be a finite number, 0 or more, got {seconds!r}"
            )
        self._message_faults.append(
            _MessageFault("delay", at, run_id, path, occurrence, seconds=seconds)
        )

    def clear_faults(self) -> None:
        """Take back every fault given so far (step faults and message faults).

        The overrides stay. A fault taken back is not checked when the harness
        closes: neither for the step it names nor for a commit it never met.
        Messages a delay holds back now are still handed over.
        """
        self._step_faults = []
        # Kept in their places, taken back: a message held back comes again with the
        # index of the first fault left to apply to it.
        for fault in self._message_faults:
            fault.taken_back = True

    def _durable(self) -> bool:
        """Whether the harness's store is durable (only then do commits' messages come)."""
        if self._runtime is not None and self._open:
            return bool(_system_of(self._runtime).store.durable)
        store = self.store
        if store is None or (isinstance(store, str) and store == "memory"):
            return False
        if isinstance(store, str | os.PathLike):
            return True  # "sqlite", a path or a URL
        return bool(getattr(store, "durable", False))

    def _refuse_when_closed(self, method: str) -> None:
        """Refuse an override or fault given once the harness has closed: it could never apply."""
        if self._closed:
            raise RuntimeError(
                f"{method}: this Harness is closed, so nothing it is given now can apply; "
                "give overrides and faults inside its `with` block"
            )

    def crash_and_recover(self) -> Runtime:
        """Crash the process in place, as a SIGKILL would, then recover on the same store.

        Every actor stops handling messages at once: nothing more is recorded,
        no run is drained, halted or failed, and a step in user code runs on
        but its result is lost. The crashed worker's row and the runs it held
        stay in the store as a killed process leaves them. Then a new runtime
        starts on the same store, with the same workflows registered: once
        the crashed worker's lease has run out on the harness's clock, its
        reaper hands those runs back and it picks them up. Steps whose output
        was recorded are not run again; the step that was interrupted runs
        again. With time skipping the clock jumps to the lease's end by itself
        once nothing else happens; without, advance it past the lease
        (``harness.clock.advance(lease + 1)``; 10 seconds unless the store was
        given another).

        Returns:
            The new runtime (also :attr:`runtime`). Use :meth:`workflow` for
            workflows bound to it.

        Raises:
            ValueError: on a memory store, which a crash loses.
        """
        old = self.runtime
        system = _system_of(old)
        if not system.store.durable:
            raise ValueError("crash_and_recover() needs a durable store (a SQLite path or URL)")
        # A store object given to the harness is closed with the crash: the new runtime
        # opens another on the same database, with the same lease.
        self.store = _reopened(self.store)
        # Every thread of the old runtime alive now ignores callboard's messages from now on.
        self._killed.update(
            thread
            for thread in threading.enumerate()
            if thread.name.startswith(THREAD_PREFIXES) and thread not in self._others
        )
        system.kill()
        _mark_stopped(old)
        # Workflows registered on the runtime itself (harness.runtime.register, the
        # callboard_runtime fixture) as well as with the harness are the new one's too.
        carried = list(old._registered_workflows.values())
        for workflow in carried:
            self._workflows.setdefault(workflow.plan.workflow_id, workflow)
        self._runtime = self._start_runtime()
        for workflow in carried:
            self._runtime.register(workflow)
        return self._runtime

    # --- the probes ------------------------------------------------------------------

    def _observe(self, actor: Any, message: Any) -> bool:
        kind = type(message)
        if kind.__module__ != "actors.messages":
            return True  # pykka's own (a stop): always handled
        if self._killed and threading.current_thread() in self._killed:
            return False  # a crashed runtime's actor: its mail is lost
        counters = self._counters
        with counters.lock:
            counters.handled += 1
        with self._held_lock:  # a message a fault held back, handed over now: as it first came
            held = self._held.pop(id(message), None)
        name = kind.__name__
        receiver = _RECEIVERS.get(type(actor).__name__, type(actor).__name__)
        run_id = _run_of(message) or _run_of(actor)
        if held is not None:
            names, first = held[1], held[2]
        else:
            names, first = self._names_in(actor, message), 0
        try:
            handled = self._apply_faults(actor, message, (receiver, name, run_id, names), first)
        except InjectedCrashError:
            self._record(receiver, name, run_id, names[0])  # received, and crashed on
            raise
        finally:
            if name == "StepFinished":
                self._replied(actor, message)  # after a delay's timer is set
        if handled:  # not one lost, nor one held back: that is traced once it is handed over
            self._record(receiver, name, run_id, names[0])
        return handled

    def _names_in(self, actor: Any, message: Any) -> _Names:
        """The path and id of the step a message is about (``None`` for what names none)."""
        if type(message).__name__ == "StepFinished":
            # It names its step by id (a node by path): its call's names are the ones.
            with self._counters.lock:
                called = self._counters.calls.get((actor.actor_urn, message.token))
            if called is not None:
                return called[1], called[2]
            return message.step_id, message.step_id
        if type(message).__name__ in _CALLS:
            return _call_names(message)
        return getattr(message, "path", None) or getattr(message, "step_id", None), None

    def _record(self, receiver: str, name: str, run_id: str | None, path: str | None) -> None:
        if name in _HANDED_ON:
            sender = "Supervisor" if receiver == "RunActor" else "Runtime"
        else:
            sender = _SENDERS.get(name, "?")
        self.trace._record(sender, receiver, name, run_id, path)

    def _apply_faults(
        self,
        actor: Any,
        message: Any,
        about: tuple[str, str, str | None, _Names],
        first: int = 0,
    ) -> bool:
        """Whether the actor handles the message now, once the faults from ``first`` on apply.

        A message held back comes again with ``first`` past the fault that held it: the
        faults before that one have counted it already.
        """
        receiver, name, run_id, names = about
        faults = self._message_faults
        for index in range(first, len(faults)):
            fault = faults[index]
            if not fault.hit(receiver, name, run_id, names):
                continue
            if fault.action == "crash":
                path = names[0]
                raise InjectedCrashError(
                    f"injected by the test harness: run actor crashed at {name}"
                    + (f" of step {path!r}" if path else "")
                )
            called = None
            if name in _STEP_MESSAGES and name != "StepFinished":
                # A call lost (or held back) executes nothing meanwhile: it must not keep
                # the clock keeping pace with real time, as a step executing does.
                counters = self._counters
                with counters.lock:
                    called = counters.calls.pop((message.reply_to.actor_urn, message.token), None)
            if fault.action == "delay":
                self._deliver_later(actor, message, fault.seconds, called, (names, index + 1))
            else:
                _answer_lost(actor, message)
            return False
        return True

    def _deliver_later(
        self,
        actor: Any,
        message: Any,
        seconds: float,
        called: tuple[Any, str, str] | None,
        held: tuple[_Names, int],
    ) -> None:
        """Hand ``message`` to ``actor`` in ``seconds``, as it came (see :meth:`_observe`)."""
        ref = actor.actor_ref
        counters = self._counters
        key = id(message)

        def deliver() -> None:
            if called is not None:  # on its way to execute again
                with counters.lock:
                    counters.calls[(message.reply_to.actor_urn, message.token)] = called
            with self._held_lock:  # kept (the message with it) until its actor takes it
                self._held[key] = (message, *held)
            try:
                ref.tell(message)
            except Exception:  # the actor has stopped since: lost
                with self._held_lock:
                    self._held.pop(key, None)
                if called is not None:
                    with counters.lock:
                        counters.calls.pop((message.reply_to.actor_urn, message.token), None)

        _system_of(self.runtime).timers.call_later(seconds, deliver)

    def _body(self, call: Any, ctx: Any) -> Any:
        step = call.step
        path = call.path or step.id
        attempt = call.retry_count + 1
        for fault in self._step_faults:
            if fault.take(call, path, attempt):
                return fault.raise_it(path, attempt)
        fn = self._overrides.get(path) or self._overrides.get(step.id)
        if fn is not None:
            return fn(ctx)
        return step.execute(ctx)

    @contextlib.contextmanager
    def _parked(self, over: Callable[[], bool]) -> Iterator[None]:
        counters = self._counters
        key = next(self._park_keys)
        with counters.lock:
            counters.parked[key] = over
        try:
            yield
        finally:
            with counters.lock:
                counters.parked.pop(key, None)

    def _count_calls(self, system: Any) -> None:
        """Count each call handed to the step pool until its run actor receives the reply."""
        # Fresh counts for each runtime: calls a crashed one left unfinished never finish.
        counters = self._counters = _Counters()
        pool = system.pool
        submit = pool.submit

        def counted_submit(call: Any) -> None:
            reply_to = call.reply_to
            key = (reply_to.actor_urn, call.token)
            with counters.lock:
                counters.calls[key] = (reply_to, *_call_names(call))
                counters.submitted += 1
            try:
                submit(call)
            except BaseException:
                with counters.lock:
                    counters.calls.pop(key, None)
                raise

        # An instance attribute: only this runtime's pool is counted.
        pool.submit = counted_submit

    def _replied(self, actor: Any, message: Any) -> None:
        counters = self._counters
        with counters.lock:
            counters.calls.pop((actor.actor_urn, message.token), None)

    def _steps_executing(self) -> bool:
        """Whether a step's call is under way (one not waiting on callboard alone)."""
        counters = self._counters
        with counters.lock:
            calls = counters.calls
            # A reply to a run actor that has stopped is never received: forget the call.
            for key in [key for key, (ref, *_) in calls.items() if not ref.is_alive()]:
                del calls[key]
            waiting = sum(1 for over in counters.parked.values() if not over())
            return len(calls) - waiting > 0

    def _actors_busy(self, system: Any) -> bool:
        """Whether an actor has mail or handles some, or the store's writer is at work."""
        dispatcher = system.dispatcher
        # Actors with mail waiting for a dispatcher thread, or one handling it (a run
        # actor's on_start, say, which no message announces); or a store's writer at work
        # (a run's next step may wait for the commit of the snapshot announcing it).
        writer = getattr(system.store, "_writer", None)
        return (
            not dispatcher._ready.empty()
            or _any_dispatching(dispatcher)
            or not system.registry.actor_inbox.empty()
            or self._registry_handling()
            or (writer is not None and writer.busy())
        )

    def _registry_handling(self) -> bool:
        """Whether a registry (on a thread of its own) is inside a handler, not waiting for mail."""
        frames = _current_frames()
        for thread in threading.enumerate():
            if (
                not thread.name.startswith("RegistryActor-")
                or thread in self._killed
                or thread in self._others
            ):
                continue
            frame = frames.get(thread.ident) if thread.ident is not None else None
            if frame is not None and frame.f_code.co_name != "_actor_loop_running":
                return True
        return False

    def _skip(self) -> None:
        """Jump the clock to the next timer whenever the runtime has gone quiet.

        While steps (or hooks) execute, the clock keeps up with the real one instead (see
        :meth:`_keep_up`). With nothing to jump to, the looks grow apart (to
        :data:`IDLE_POLL`): an idle harness kept a sixth of a core busy.
        """
        last: tuple[int, int] | None = None
        executing: tuple[float, float] | None = None  # (real, virtual) since steps ran
        poll = SKIP_POLL
        while not self._skipping_done.wait(poll):
            poll = SKIP_POLL
            runtime = self._runtime
            if runtime is None:
                continue
            try:
                system = _system_of(runtime)
            except RuntimeError:
                continue
            if self._steps_executing() or system.hooks.at_work():
                executing = self._keep_up(runtime, system, executing)
                last = None
                continue
            executing = None
            if self._actors_busy(system) or not _helpers_idle(runtime, system):
                last = None
                continue
            counters = self._counters
            mark = (counters.handled, counters.submitted)
            if mark != last:
                last = mark  # something happened: look again once it stays quiet
                continue
            due = self._next_deadline(runtime, system, mark)
            if due is not None:
                self._look_for_joined()
                self.clock._jump_to(due)
                last = None
            else:
                poll = IDLE_POLL  # quiet, and nothing to jump to: the next look can wait

    def _next_deadline(self, runtime: Runtime, system: Any, mark: tuple[int, int]) -> float | None:
        """The soonest of the runtime's timers, claimer and scheduler wakes, and store deadlines."""
        due = [
            system.timers.next_deadline(),
            _claimer_wake(system),
            _scheduler_due(runtime),
            *self._store_deadlines(system, mark),
        ]
        return min((when for when in due if when is not None), default=None)

    def _walk_to(self, target: float) -> None:
        """``clock.advance``: to ``target`` through each deadline before it, each handled."""
        clock = self.clock
        if target <= clock.now():
            return  # advance(0): nothing moves
        stuck = False  # a step made no progress for WALK_PATIENCE: wait for it no more
        # On until the next deadline lies past the target, not until the clock reaches
        # it: a timer due at the target itself is handled too (advance(20) through two
        # sleeps of 10 seconds left the run at its second, the clock at 20).
        # The deadline found past due, and since when (real time): one that stays so, with
        # the runtime quiet, is not being handled (leave it be rather than look for ever).
        overdue: tuple[float, float] | None = None
        while True:
            found = self._once_quiet(patient=not stuck)
            if found is None:
                break  # no runtime to walk with (stopped, crashed)
            due, stuck_now = found
            stuck = stuck or stuck_now
            if due is None or due > target:
                break
            if due > clock.now():
                self._look_for_joined()
                clock._jump_to(due)
                overdue = None
            elif stuck or (
                overdue is not None
                and overdue[0] == due
                and time.monotonic() - overdue[1] > WALK_PATIENCE
            ):
                break  # due already, and what would handle it does not: leave it be
            else:
                if overdue is None or overdue[0] != due:
                    overdue = (due, time.monotonic())
                time.sleep(SKIP_POLL)  # due already: the timer thread is firing it
        clock._jump_to(target)

    def _once_quiet(self, *, patient: bool) -> tuple[float | None, bool] | None:
        """The next deadline once the runtime is quiet, and whether a step held that up.

        Quiet: no step executing, the actors idle, the helpers too, and nothing
        handled or submitted between two looks. Steps executing hold it up for
        as long as calls keep being handled, or :data:`WALK_PATIENCE` without;
        not at all unless ``patient``. ``None`` if there is no runtime to ask.
        """
        runtime = self._runtime
        last: tuple[int, int] | None = None
        progressed = time.monotonic()
        while True:
            if runtime is None:
                return None
            try:
                system = _system_of(runtime)
            except RuntimeError:
                return None
            counters = self._counters
            mark = (counters.handled, counters.submitted)
            executing = self._steps_executing() or system.hooks.at_work()
            busy = self._actors_busy(system) or not _helpers_idle(runtime, system)
            if not busy and not executing and mark == last:
                return self._next_deadline(runtime, system, mark), False
            if mark != last:
                last, progressed = mark, time.monotonic()
            elif (executing and not busy and not patient) or (
                time.monotonic() - progressed > WALK_PATIENCE  # whatever holds it up
            ):
                return self._next_deadline(runtime, system, mark), True
            time.sleep(SKIP_POLL)

    def _keep_up(
        self, runtime: Runtime, system: Any, since: tuple[float, float] | None
    ) -> tuple[float, float]:
        """While steps or hooks execute, let the next timer fire once as much real time has passed.

        The clock stood still while a step ran, so a step's timeout (a timer on
        this clock) never came: a step that hung hung the test, where a runtime
        fails it with ``StepTimeoutError``. Now a timer due ``d`` seconds ahead
        fires after ``d`` real seconds of steps executing (with the actors
        quiet then), as outside a harness.

        Args:
            runtime: The harness's runtime.
            system: Its actor system.
            since: When (real and virtual time) steps began to execute, as this
                returned it last; ``None`` at first.

        Returns:
            What to pass as ``since`` next time.
        """
        real, virtual = time.monotonic(), self.clock.now()
        if since is None or since[1] != virtual:  # just began, or the clock moved meanwhile
            return real, virtual
        due = system.timers.next_deadline()
        if (
            due is not None
            and due <= virtual + (real - since[0])
            and not self._actors_busy(system)
            and _helpers_idle(runtime, system)
        ):
            self.clock._jump_to(due)
            return time.monotonic(), self.clock.now()
        return since

    def _store_deadlines(self, system: Any, mark: tuple[int, int]) -> list[float]:
        """A shared store's next lease lapse, rate-window opening and run deadline (cached)."""
        claimer = system.claimer
        if claimer is None:
            return []
        key = (mark, self.clock.now(), _clock.live_workers())
        now = time.monotonic()
        cached = self._store_due
        if cached is not None and cached[0] == key and now - cached[1] < STORE_LOOK_EVERY:
            return cached[2]
        try:
            deadlines: list[float] = claimer.store_deadlines()
        except Exception:  # a store closing (a crash) or unreachable: the next look tells
            deadlines = []
        self._store_due = (key, now, deadlines)
        return deadlines

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Harness {state} store={self.store!r} time_skipping={self.time_skipping}>"


# --- private helpers ------------------------------------------------------------------
# The harness reaches into a started runtime through these few private names: the
# runtime's actor system (Runtime._host), the dispatcher's queue of actors with mail and
# its threads (Dispatcher._ready, Dispatcher._threads, whose loop is Dispatcher._work),
# a claimer's next wake-ups (Claimer._wake_at, Claimer._deadline_at), the runtime's scheduler
# (Runtime._scheduler),
# pykka's loop of a threaded actor (Actor._actor_loop_running, where a registry waits for mail),
# a store's writer (SQLiteStore._writer, PostgresStore._writer), a PostgreSQL store's URL
# (PostgresStore._url, to open the store again after a crash), whether a store object is
# closed (SQLiteStore._closed, PostgresStore._closed: a harness opens a closed one anew) and
# the hooks handed to the
# hook threads (HookRunner._pending, with its HookRunner._lock).
# tests/test_testing.py names them all.


_COLLECTS_ON_ALLOCATION: Final = sys.version_info < (3, 12)
"""Whether allocating an object may start a garbage collection there and then (before 3.12;
since, a collection waits for the interpreter's next check between bytecodes)."""


def _current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()``, with the cyclic garbage collector held off during the call.

    Before Python 3.12 the call makes frame objects while it holds the
    interpreter's lock on its list of threads, and an allocation may start a
    collection there. If that collection frees a ``threading.local`` (a store
    left in a reference cycle by an earlier test holds one), the local's
    cleanup takes the same lock: the thread waits for itself forever while
    holding the GIL, and every thread of the process stops with it, pytest-timeout's
    signal handler too (python/cpython#106883). The test clock looks a thousand
    times a second, so a long suite met it. CPython's own fix holds the
    collector off in the same way.
    """
    if not _COLLECTS_ON_ALLOCATION or not gc.isenabled():
        return sys._current_frames()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        gc.enable()


def _any_dispatching(dispatcher: Any) -> bool:
    """Whether a dispatcher thread is inside an actor's handler (not waiting for work)."""
    frames = _current_frames()
    for thread in dispatcher._threads:
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is not None and frame.f_code.co_name != "_work":
            return True
    return False


def _system_of(runtime: Runtime) -> Any:
    system = runtime._host.system
    if system is None:
        raise RuntimeError("the runtime has not started")
    return system


def _mark_stopped(runtime: Runtime) -> None:
    """A runtime whose actors were killed: it refuses further calls as a stopped one does.

    Its scheduler goes with the crash too: the process it stands for is gone; and
    so do the threads that ran its awaitable calls (``astart``, ``aget_run``...),
    which would otherwise wait for more calls until the harness's close found them
    left behind. A call running on one ends on its own, as after any stop.
    """
    host = runtime._host
    host.state = "stopped"
    scheduler, runtime._scheduler = runtime._scheduler, None
    if scheduler is not None:
        scheduler.stop()
    host.close_calls(0.0)


def _helpers_idle(runtime: Runtime, system: Any) -> bool:
    """Whether the claimer and the scheduler have done what a jump (or a poke) asked of them."""
    claimer = system.claimer
    if claimer is not None and not claimer.idle():
        return False
    scheduler = runtime._scheduler
    return scheduler is None or scheduler.idle()


def _hooks_under_way(system: Any) -> bool:
    """Whether a workflow's hook (``on_start``, ``on_finish``, ``on_error``) is called or due."""
    with system.hooks._lock:
        return bool(system.hooks._pending)


def _scheduler_due(runtime: Runtime) -> float | None:
    scheduler = runtime._scheduler
    return None if scheduler is None else scheduler.next_due


def _claimer_wake(system: Any) -> float | None:
    claimer = system.claimer
    if claimer is None:
        return None
    # The next sleeper's wake, or the next deadline of a run nobody holds (run_timeout).
    due = [when for when in (claimer._wake_at, claimer._deadline_at) if when is not None]
    return min(due, default=None)


def _reopened(store: Any) -> Any:
    """Where the runtime after a crash keeps its runs (a store object: a new one, same place).

    A store object was closed by the crash; a path or URL opens anew by itself.
    """
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, lease=store.lease)
    if isinstance(store, PostgresStore):
        return PostgresStore(store._url, lease=store.lease)
    return store


def _run_of(source: Any) -> str | None:
    """The run a message (or a run actor) is about, wherever it carries the id."""
    run_id = getattr(source, "run_id", None)
    if run_id is None:
        record = getattr(source, "record", None)
        run_id = getattr(record, "run_id", None)
    if run_id is None:
        snapshot = getattr(source, "snapshot", None)
        if snapshot is None:
            snapshot = getattr(source, "_snapshot", None)  # a run actor's own
        if isinstance(snapshot, dict):
            run_id = snapshot.get("run_id")
    return run_id if isinstance(run_id, str) else None


def _names_of(runtime: Runtime) -> tuple[set[str], set[str], set[str]]:
    """The paths and ids of every registered workflow's steps, nodes and nested workflows.

    The nodes are those whose code is called, not a step's: a ``map``, a ``branch``
    (its conditions) and a ``sleep`` of computed length. A message fault may name
    one (``CallMap``, and its reply); an override or a step fault may not.
    """
    steps: set[str] = set()
    nodes: set[str] = set()
    nested: set[str] = set()
    for versions in runtime._registered_versions().values():
        for plan in versions.values():
            steps.update(plan.by_id)  # paths
            steps.update(step.id for step in plan.by_id.values())
            for node in plan.nodes:
                if isinstance(node, MapNode | BranchNode) or (
                    isinstance(node, SleepNode) and (callable(node.seconds) or callable(node.until))
                ):
                    nodes.update((node.path, node.path[len(node.scope.prefix) :]))
            for path in plan.output_schemas:
                if path not in plan.by_id:
                    nested.update((path, path.rsplit(".", 1)[-1]))
    return steps, nodes - steps, nested


def _step_id(step: Step[Any, Any] | str) -> str:
    if isinstance(step, Workflow):
        raise TypeError(
            f"a workflow ({step.id!r}) was given where a step is named: name the steps of a "
            f"nested workflow by their paths ('{step.id}.<step id>') or give them"
        )
    if not isinstance(step, str | Step):
        raise TypeError(f"a step or its id (or path) is wanted, got {type(step).__name__}")
    return step if isinstance(step, str) else step.id


_LEFT_BY: Final = (
    (
        ("callboard-timers", "callboard-dispatch-", "RegistryActor-"),
        "a Runtime started while the harness was open is still running: stop it "
        "(runtime.stop(), or `with Runtime() as runtime:`), or use harness.runtime",
    ),
    (
        ("StepActor-",),
        "a step is still executing its body, in user code the stop cannot interrupt: "
        "release what it waits for before the harness closes (or have it wait on "
        "ctx.abort_signal, which a stop sets)",
    ),
    (
        ("callboard-hooks-",),
        "a workflow's hook (on_start, on_finish, on_error) is still executing: release what "
        "it waits for before the harness closes",
    ),
    (
        ("callboard-sqlite-writer", "callboard-postgres-"),
        "a store object opened while the harness was open is not closed: close it "
        "(store.close()), or give it to a runtime, which closes it when it stops",
    ),
)
"""What the names of threads left after a close tell of their cause, and what to do."""


def _failure(result: WorkflowResult) -> str:
    """How a failed run failed: its error, at which step, and the step's traceback."""
    error = result.error
    if error is None:
        return "failed"
    step = error.details.get("step_id")
    return (
        "failed"
        + (f" at step {step!r}" if step else "")
        + f": {error.name}: {error.message}\n"
        + str(error.details.get("traceback") or "").rstrip()
    )


def _listed_runs(
    runs: tuple[int, list[WorkflowResult]], what: str, told: Callable[[WorkflowResult], str]
) -> str:
    """``runs`` (how many, and the first ones) as lines: each run, and ``told`` of it."""
    count, shown = runs
    lines = [
        f"{count} run(s) of the harness {what}"
        + (f" (the first {len(shown)} shown)" if count > len(shown) else "")
        + ":"
    ]
    lines += [
        f"run {result.run_id} of workflow {result.workflow_id!r} {told(result)}" for result in shown
    ]
    return "\n".join(lines)


def _why_left(names: Sequence[str]) -> str:
    """What left the threads named (``names``) behind, and what to do, as far as names tell.

    The close said "threads of callboard left" and the names alone: a runtime the test
    forgot to stop read like a step stuck in user code, with no word of what to do.
    """
    told = [why for prefixes, why in _LEFT_BY if any(name.startswith(prefixes) for name in names)]
    # A runtime still running has its store's writer, hooks and step threads too.
    if told and told[0] is _LEFT_BY[0][1]:
        told = told[:1]
    return f" ({'; '.join(told)})" if told else ""


def _wait_for_no_threads(
    timeout: float, others: frozenset[threading.Thread]
) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while True:
        left = [
            thread
            for thread in threading.enumerate()
            if thread.name.startswith(THREAD_PREFIXES) and thread not in others
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


_saved_bits: Callable[[int], int] | None = None
_plain = threading.local()
"""``_plain.on``: this thread draws its ids unseeded (see :func:`_unseeded`)."""


@contextlib.contextmanager
def _unseeded() -> Iterator[None]:
    """Draw the ids of this block, on this thread, from the unseeded generator."""
    _plain.on = True
    try:
        yield
    finally:
        _plain.on = False


def _stored_runs(store: Any) -> list[str]:
    """The ids of the runs a store holds, sorted: what a seeded harness mixes into its seed."""
    records, _ = store.list_runs(limit=None)
    return sorted(record.run_id for record in records)


def _seed_ids(seed: int, stored: Sequence[str] = ()) -> None:
    """Draw ids from seeded generators: one for the test's threads, one for callboard's.

    The ids of the runs the store holds already (``stored``) are mixed into the
    seed: a run id drawn again from the seed alone was taken on a store that
    outlives the harness (a path several tests give, or the next session's), and
    the run could not start. A store that holds the same runs (an empty one)
    gives the same ids again; one holding the runs an earlier opening drew gives
    others.
    """
    global _saved_bits  # noqa: PLW0603
    if stored:
        digest = hashlib.sha256("\n".join(stored).encode()).hexdigest()
        mixed: int | str = f"{seed}:{len(stored)}:{digest}"
    else:
        mixed = seed  # as ever: the ids a seed gave on a store empty at first stay
    ours = random.Random(mixed)
    theirs = random.Random(f"{mixed}:callboard")
    lock = threading.Lock()
    saved = _ids._getrandbits

    def getrandbits(bits: int) -> int:
        if getattr(_plain, "on", False):
            return saved(bits)
        generator = theirs if threading.current_thread().name.startswith(THREAD_PREFIXES) else ours
        with lock:
            return generator.getrandbits(bits)

    _saved_bits = saved
    _ids._getrandbits = getrandbits


def _unseed_ids() -> None:
    global _saved_bits  # noqa: PLW0603
    if _saved_bits is not None:
        _ids._getrandbits = _saved_bits
        _saved_bits = None


def _refuse_shared_use(store: Any) -> None:
    """Refuse a shared store that another live process uses, for a harness that skips time.

    Each process jumps a clock of its own: the other's heartbeats fall behind
    this one's clock, its leases are found lapsed, and its runs are taken and
    run again here (and this one's there), every test still passing. The store
    names its workers: a row of this host whose process is alive, or one of
    another host within its lease, is such a process. Checked once this
    harness's own worker has joined, so that of two harnesses opening at once,
    the second to look sees the first.

    Raises:
        RuntimeError: naming the store and the processes.
    """
    others = _other_processes(store)
    if not others:
        return
    raise RuntimeError(
        f"the store {_store_named(store)} is in use by {len(others)} other process(es) "
        f"({_listed(others)}); a harness that skips time would find their leases lapsed on "
        "its own clock and run their runs again: give each process a store of its own "
        "(under pytest-xdist the callboard_harness fixture keys a path by the worker), or "
        "stop them first"
    )


def _other_processes(store: Any) -> list[str]:
    """``host:pid`` of each live process other than this one with a worker on ``store``."""
    workers = getattr(store, "workers", None)
    if workers is None:
        return []  # a store in memory: this process's alone
    here, me = this_host(), os.getpid()
    return [
        f"{worker.host}:{worker.pid}"
        for worker in workers()
        if (worker.host, worker.pid) != (here, me)
        and process_alive(worker.host, worker.pid)
        and (worker.host == here or not worker.expired)
    ]


def _store_named(store: Any) -> str:
    return str(getattr(store, "path", None) or "the PostgreSQL database")


def _listed(processes: Collection[str]) -> str:
    shown = sorted(processes)
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


# Fork safety: a child process never inherits an open harness's seeded ids.
os.register_at_fork(after_in_child=_unseed_ids)
