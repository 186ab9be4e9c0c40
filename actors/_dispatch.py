"""Dispatched actors: pykka actors that share a few threads instead of owning one.

A :class:`pykka.ThreadingActor` owns a thread, and starting a thread costs about
a hundred microseconds; a runtime that starts thousands of runs a second cannot
pay that per run. A :class:`DispatchedActor` is a full pykka actor (an
``ActorRef``, ``tell``/``ask``, ``on_start``/``on_stop``/``on_failure``), but
its messages are processed by a :class:`Dispatcher`: a
small fixed pool of threads. An actor with messages waiting is queued on the
dispatcher once; a dispatcher thread takes it, processes up to
:data:`THROUGHPUT` messages in order, and queues it again if more are waiting.
An actor is never processed by two threads at once, so it keeps the actor
guarantee: one message at a time, in the order they were sent.

A dispatched actor is listed by its dispatcher (:meth:`Dispatcher.actors`),
not in pykka's ``ActorRegistry``: that registry is one list, which every
actor's stop scans to take it out, so with thousands of runs in flight each
run's end paid for a scan of them all (a fifth of the interpreter's time with
5,000 runs waiting in async steps). The dispatcher's list is a set.

Dispatched actors must never block: they hand blocking work (user step bodies,
store writes) to threading actors (:class:`ThreadActor`).

An actor refuses a message outside its protocol with :func:`unexpected`,
which raises :class:`UnexpectedMessageError`. An ``ask`` hands the error to
the asker; a ``tell`` has nobody to hand it to, so it is logged as
``unexpected_message`` and the actor goes on: one stray message must not stop
the supervisor or the registry.

A told message goes into a dispatched actor's inbox as it is, not in one of
pykka's envelopes (:class:`_DispatchedRef`); an ask still comes in an envelope.

This module relies on a few of pykka 4's private names (hooks for new actor
types, ``Actor._handle_receive``, ``Actor._stop``, ``Actor._handle_failure``,
the ``Envelope`` class of ``pykka._envelope``); ``tests/actors/test_dispatch.py``
names each one, and ``pyproject.toml`` pins pykka 4.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Final, Never, NoReturn, Self

import pykka
from pykka import ActorDeadError
from pykka._envelope import Envelope

from runtime import _probes
from runtime._ids import new_id
from runtime._tracing import emit

__all__ = [
    "FAULT_WINDOW",
    "MAX_FAULTS",
    "THROUGHPUT",
    "DispatchedActor",
    "Dispatcher",
    "FaultBudget",
    "ThreadActor",
    "UnexpectedMessageError",
    "tell_safely",
    "unexpected",
]

THROUGHPUT: Final = 64
"""Messages one actor processes before a dispatcher thread turns to the next actor."""

MAX_FAULTS: Final = 10
"""Faults a supervisor or registry survives within :data:`FAULT_WINDOW` before giving up."""

FAULT_WINDOW: Final = 60.0
"""Seconds over which a long-lived actor's faults are counted."""


def tell_safely(ref: pykka.ActorRef[Any], message: Any) -> bool:
    """Tell ``message`` to ``ref``; return ``False`` if the actor has stopped."""
    try:
        ref.tell(message)
    except ActorDeadError:
        return False
    return True


def _after_fork() -> None:
    """In a forked child, forget the parent's threading actors and the lock they are listed under.

    pykka lists every threading actor (step actors, as a step pool grows and
    shrinks) in one registry, under one lock. A fork while another thread held
    it would leave it held for ever in the child, where the first runtime
    started would wait on it; and the parent's actors have no thread here.
    """
    pykka.ActorRegistry._actor_refs_lock = threading.RLock()
    pykka.ActorRegistry._actor_refs.clear()


os.register_at_fork(after_in_child=_after_fork)


class UnexpectedMessageError(TypeError):
    """An actor received a message outside its protocol: a bug in whoever sent it."""


class FaultBudget:
    """A long-lived actor's restart intensity: how many faults it survives in a window.

    A supervisor or registry whose handler fails logs the fault and goes on
    (one bad message must not stop it); but one that keeps failing is broken,
    and going on would hide it. Past ``max_faults`` within ``window`` seconds,
    :meth:`spend` calls ``give_up`` once with a reason: the runtime stops,
    saying why, rather than limp on or die silently.

    Args:
        give_up: Called once, with the reason, when the budget is spent.
        max_faults: Faults survived within ``window`` (:data:`MAX_FAULTS`).
        window: Seconds the faults are counted over (:data:`FAULT_WINDOW`).
    """

    def __init__(
        self,
        give_up: Callable[[str], None] | None,
        *,
        max_faults: int | None = None,
        window: float | None = None,
    ) -> None:
        self._give_up = give_up
        self._max_faults = MAX_FAULTS if max_faults is None else max_faults
        self._window = FAULT_WINDOW if window is None else window
        self._faults: deque[float] = deque()
        self._spent = False

    def spend(self, actor: object, error: BaseException) -> None:
        """Count a fault of ``actor``; give up once too many came too fast."""
        now = time.monotonic()
        faults = self._faults
        faults.append(now)
        while faults and faults[0] < now - self._window:
            faults.popleft()
        if len(faults) > self._max_faults and not self._spent:
            self._spent = True
            reason = (
                f"{actor} failed {len(faults)} times within {self._window:g} s "
                f"(last: {type(error).__name__}: {error})"
            )
            emit(logging.ERROR, "actor_gave_up", actor=str(actor), reason=reason)
            if self._give_up is not None:
                self._give_up(reason)


def unexpected(actor: pykka.Actor, message: Never) -> NoReturn:
    """Refuse a message: the last ``case _:`` of every actor's ``match``.

    Typed like :func:`typing.assert_never`: mypy reports each member of the
    actor's message union that no earlier ``case`` handles. At run time it
    raises, instead of pykka's default of logging a warning and dropping the
    message.

    Args:
        actor: The actor that received the message.
        message: The message.

    Raises:
        UnexpectedMessageError: Always.
    """
    raise UnexpectedMessageError(
        f"{actor} does not accept {type(message).__module__}.{type(message).__qualname__}"
    )


def _report_unexpected(actor: pykka.Actor, error: UnexpectedMessageError) -> None:
    """A told message was refused: nobody waits for the error, so log it; the actor goes on."""
    emit(logging.ERROR, "unexpected_message", actor=str(actor), error=str(error))


class Dispatcher:
    """A fixed pool of threads that process dispatched actors' messages.

    Args:
        threads: How many threads; one is enough while actors never block.
        name: Prefix of the threads' names.
    """

    def __init__(self, threads: int = 1, name: str = "callboard-dispatch") -> None:
        self._ready: queue.SimpleQueue[DispatchedActor | None] = queue.SimpleQueue()
        # The refs of this dispatcher's actors not stopped yet. A set, changed and copied
        # by single C calls (refs hash by identity): no lock needed.
        self._actors: set[pykka.ActorRef[Any]] = set()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def waiting(self) -> int:
        """How many actors have mail and wait for a thread (a moment's count)."""
        return self._ready.qsize()

    def schedule(self, actor: DispatchedActor) -> None:
        """Queue an actor that has messages waiting."""
        self._ready.put(actor)

    def stop(self, timeout: float | None = None) -> None:
        """Let the threads finish what is queued, then end them."""
        for _ in self._threads:
            self._ready.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def actors(self, kind: type[pykka.Actor] | None = None) -> list[pykka.ActorRef[Any]]:
        """The refs of this dispatcher's actors that have not stopped (of ``kind``, if given)."""
        refs = list(self._actors)
        if kind is None:
            return refs
        return [ref for ref in refs if issubclass(ref.actor_class, kind)]

    def abandon_actors(self) -> int:
        """Forget every actor of this dispatcher not stopped yet, as a crashed process would.

        For a kill (:meth:`actors.system.ActorSystem.kill`), once the threads have
        stopped: each actor is taken off the dispatcher's list and marked stopped,
        so that nothing finds it any more and a late ``tell`` is refused. Its mail
        is never handled. Returns how many actors were forgotten.
        """
        refs = list(self._actors)
        self._actors.difference_update(refs)
        for ref in refs:
            ref.actor_stopped.set()
        return len(refs)

    def _work(self) -> None:
        ready = self._ready
        while True:
            actor = ready.get()
            if actor is None:
                return
            try:
                actor._process_batch()
            except BaseException:
                emit(logging.ERROR, "dispatcher_fault", actor=str(actor), exc_info=True)
            actor = None  # an ended actor is not kept alive while this thread waits


class _DispatchInbox:
    """An actor's inbox that queues its actor on the dispatcher when mail arrives.

    Senders on any thread and the dispatcher's thread take turns on its lock, so
    nothing done under it lets go of the GIL: CPython hands the GIL to another
    thread only at a call or a loop back, and a thread made to hand it over while
    it holds the lock would have every other sender, and the dispatcher, sleep on
    the lock and then wait for the GIL again, as a memory store's lock did. So
    a message goes in with ``+=`` and comes out with an index and ``del``, not
    with ``append`` and ``popleft``, which are calls.
    """

    __slots__ = (
        "_actor",
        "_closed",
        "_dispatcher",
        "_gone",
        "_lock",
        "_messages",
        "_scheduled",
        "_urn",
    )

    def __init__(
        self, actor: DispatchedActor | None = None, dispatcher: Dispatcher | None = None
    ) -> None:
        self._messages: deque[Any] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        # Given here by a dispatched actor (bind's, without its call: one per run).
        self._actor = actor
        self._dispatcher = dispatcher
        # Once closed, the actor only weakly: the inbox and its actor refer to each other,
        # and a strong reference both ways would leave every ended actor to the cyclic
        # garbage collector. Mail that comes after still reaches on_undelivered while the
        # actor is alive, and its class's on_undelivered_gone once it is not.
        self._gone: tuple[weakref.ref[DispatchedActor], type[DispatchedActor]] | None = None
        # The actor's urn, made when first read (see urn).
        self._urn: str | None = None

    @property
    def urn(self) -> str:
        """The urn of the inbox's actor (and its ref's), made when first read.

        Only logs and the test kit read it: a run's actor is made for every run,
        and most are never named.
        """
        urn = self._urn
        if urn is None:
            urn = self._urn = f"urn:uuid:{new_id()}"
        return urn

    def put(self, item: Any, /) -> None:
        """Queue an ``Envelope``, or a told message as it is (see :class:`_DispatchedRef`)."""
        one = (item,)  # made before the lock: making it may run the garbage collector
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._messages += one
                if self._scheduled:
                    return
                self._scheduled = True
        if closed:
            self._reply_dead(item)
            return
        assert self._dispatcher is not None and self._actor is not None
        self._dispatcher._ready.put(self._actor)  # schedule's, inline: for most messages

    def get(self) -> Any:
        with self._lock:
            messages = self._messages
            item = messages[0]
            del messages[0]
            return item

    def empty(self) -> bool:
        return not self._messages

    def start(self) -> None:
        """Queue the actor once so that ``on_start`` runs on a dispatcher thread."""
        with self._lock:
            self._scheduled = True
        assert self._dispatcher is not None and self._actor is not None
        self._dispatcher.schedule(self._actor)

    def next_or_idle(self) -> Any | None:
        """The next item, or ``None`` after marking the actor as not scheduled."""
        with self._lock:
            messages = self._messages
            if messages:
                item = messages[0]
                del messages[0]
                return item
            self._scheduled = False
            return None

    def close(self) -> list[Any]:
        """Refuse further mail, and hold the actor weakly; return what was still waiting.

        The actor goes once nothing else holds it: mail that comes later reaches it
        through the weak reference while it lives (see ``_gone``).
        """
        with self._lock:
            self._closed = True
            left = list(self._messages)
            self._messages.clear()
        # The actor held weakly from now on (here, not in a method: a call fewer per actor).
        actor = self._actor
        if actor is not None:
            self._gone = (weakref.ref(actor), type(actor))
            self._actor = None
            self._dispatcher = None
        return left

    def actor(self) -> DispatchedActor | None:
        """The inbox's actor, or ``None`` once it has been freed."""
        if self._actor is None and self._gone is not None:
            return self._gone[0]()
        return self._actor

    def _reply_dead(self, item: Any) -> None:
        actor = self._actor
        if actor is None and self._gone is not None:
            ref, actor_class = self._gone
            actor = ref()
            if actor is None:
                # How pykka names an actor (Actor.__str__), which none of ours overrides.
                _reply_gone(item, actor_class, f"{actor_class.__name__} ({self.urn})")
                return
        _reply_dead(item, actor)


def _opened(item: Any) -> tuple[Any, pykka.Future[Any] | None]:
    """An inbox item's message and the future its sender waits on (``None`` for a tell).

    An item is an ``Envelope`` (an ask, or a tell through pykka's own ``ActorRef``)
    or a told message as it is (:class:`_DispatchedRef`): told by its type, never
    by its attributes, since a message of ours may have a ``reply_to`` of its own.
    """
    if type(item) is Envelope:
        return item.message, item.reply_to
    return item, None


def _reply_gone(item: Any, actor_class: type[DispatchedActor], name: str) -> None:
    """Mail for an actor that ended and was freed: its class says what becomes of it."""
    message, reply_to = _opened(item)
    if reply_to is None:
        try:
            actor_class.on_undelivered_gone(message)
        except Exception:
            emit(logging.ERROR, "undelivered_message_failed", actor=name, exc_info=True)
        return
    _answer_unhandled(message, reply_to, name)


def _reply_dead(item: Any, actor: object) -> None:
    message, reply_to = _opened(item)
    if reply_to is None:
        if isinstance(actor, DispatchedActor):
            try:
                actor.on_undelivered(message)
            except Exception:
                emit(logging.ERROR, "undelivered_message_failed", actor=str(actor), exc_info=True)
        return
    _answer_unhandled(message, reply_to, str(actor))


def _answer_unhandled(message: Any, reply_to: pykka.Future[Any], name: str) -> None:
    """Answer an ask that its actor (``name``) stopped before handling.

    A stop request is answered as done (the actor has stopped); anything else
    with ``ActorDeadError``.
    """
    if isinstance(message, pykka.messages._ActorStop):
        reply_to.set(None)
        return
    error = ActorDeadError(f"{name} stopped before handling the message")
    reply_to.set_exception(exc_info=(ActorDeadError, error, None))


_PYKKA_MESSAGES: Final = (
    pykka.messages._ActorStop,
    pykka.messages.ProxyCall,
    pykka.messages.ProxyGetAttr,
    pykka.messages.ProxySetAttr,
)
"""pykka's own messages, which its ``_handle_receive`` handles: a stop (asked, but told
would work too) and what a proxy sends (told by ``defer()``)."""


_STOP_FLAGS_LOCK = threading.Lock()
"""Guards every :class:`_StopFlag` (held for two assignments): a lock per flag was one
more object per run for the garbage collector, and flags are set once and rarely waited on."""


class _StopFlag(threading.Event):
    """A dispatched actor's ``actor_stopped``: an event whose condition is made only if waited on.

    pykka reads ``actor_stopped.is_set()`` on every ``tell`` and the dispatcher
    at every message; a ``threading.Event`` builds a condition, a lock and a
    list of waiters for each actor, one per run, and few are ever waited on.
    """

    def __init__(self) -> None:  # not Event's: no condition until a wait, no lock of its own
        self._stopped = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        with _STOP_FLAGS_LOCK:
            self._stopped = True
            event = self._event
        if event is not None:
            event.set()

    def clear(self) -> None:
        raise TypeError("an actor that stopped does not start again")

    def wait(self, timeout: float | None = None) -> bool:
        made = threading.Event()  # before the lock: no call that may hand the GIL over in it
        with _STOP_FLAGS_LOCK:
            if self._stopped:
                return True
            if self._event is None:
                self._event = made
            event = self._event
        return event.wait(timeout)

    def __repr__(self) -> str:
        return f"<_StopFlag: {'set' if self._stopped else 'unset'}>"


class _DispatchedRef(pykka.ActorRef[Any]):
    """A dispatched actor's ref: ``tell`` puts the message in the inbox as it is.

    pykka's ``tell`` asks ``is_alive()`` (which asks the stop flag) and wraps
    the message in an ``Envelope``: two Python calls and an object the garbage
    collector tracks until the message is handled, for every message of every
    run. A told message needs no envelope (it carries no reply), so here it
    goes in bare, and :meth:`DispatchedActor._process` tells the two apart by
    type. ``ask`` and everything else are pykka's, with envelopes.

    pykka's ``__init__`` also keeps a weak reference to the actor, which only a
    proxy reads: one more object per run in flight for the garbage collector.
    Here it is made when a proxy asks for it (:attr:`_actor_weakref`), from the
    inbox, which holds the actor until it ends (weakly after).
    """

    actor_inbox: _DispatchInbox
    actor_stopped: _StopFlag

    def __init__(self, actor: DispatchedActor) -> None:
        # What pykka's ActorRef.__init__ sets (test_dispatch.py checks they are still
        # all), but the weak reference, and the urn, which the inbox keeps.
        self.actor_class = type(actor)
        self.actor_inbox = actor.actor_inbox
        self.actor_stopped = actor.actor_stopped

    @property  # read-only: pykka's is an attribute its __init__ sets
    def actor_urn(self) -> str:  # type: ignore[override]
        """The actor's urn, made when first read (see :attr:`_DispatchInbox.urn`)."""
        return self.actor_inbox.urn

    @property  # read-only: pykka's is an attribute its __init__ sets, not made here
    def _actor_weakref(self) -> weakref.ref[Any]:  # type: ignore[override]
        """A weak reference to the actor, dead once the actor is freed (what a proxy reads)."""
        actor = self.actor_inbox.actor()
        return weakref.ref(actor if actor is not None else _Freed())

    def tell(self, message: Any) -> None:
        """Send ``message`` without waiting for an answer.

        Raises:
            ActorDeadError: if the actor has stopped.
        """
        # The stop flag read as an attribute, not through is_set(): a call fewer per message.
        if self.actor_stopped._stopped:
            raise ActorDeadError(f"{self} not found")
        if message is None or type(message) is Envelope:
            # An item the inbox could not tell apart: None means "no mail".
            message = Envelope(message)
        self.actor_inbox.put(message)


class _Freed:
    """What a dispatched ref's weak reference names once its actor is freed: nothing alive."""

    __slots__ = ("__weakref__",)


class DispatchedActor(pykka.Actor):
    """A pykka actor whose messages are processed on a shared :class:`Dispatcher`.

    Subclasses call ``super().__init__(dispatcher)`` and are started with
    ``Subclass.start(dispatcher, ...)`` like any pykka actor. Handlers must not block.
    """

    actor_inbox: _DispatchInbox
    actor_stopped: _StopFlag

    survives_faults: ClassVar[bool] = False
    """Whether a told message whose handler raises is logged and the actor goes on.

    A long-lived actor (the supervisor) sets it: one bad message must not stop
    it. A run actor does not: its failure fails its run (``on_failure``).
    """

    @staticmethod
    def _create_actor_inbox() -> _DispatchInbox:
        return _DispatchInbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def __init__(self, dispatcher: Dispatcher) -> None:
        # What pykka's Actor.__init__ does (test_dispatch.py checks that these
        # are still all the attributes it sets), but not by calling it: its urn
        # comes from uuid4(), which reads os.urandom and so releases the GIL,
        # and a dispatched actor is created for every run. Under load the
        # dispatcher thread would wait for the GIL once per run. The urn is the
        # inbox's, made only if something reads it (actor_urn).
        self.actor_inbox = _DispatchInbox(self, dispatcher)
        self.actor_stopped = _StopFlag()
        self._actor_ref = _DispatchedRef(self)
        self._dispatcher = dispatcher
        self._loop_started = False

    @property  # read-only: pykka's is an attribute its __init__ sets
    def actor_urn(self) -> str:  # type: ignore[override]
        """The actor's urn, made when first read (see :attr:`_DispatchInbox.urn`)."""
        return self.actor_inbox.urn

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Start an actor: ``cls(*args, **kwargs)``, listed by its dispatcher, not pykka's registry.

        Its ``on_start`` runs on a dispatcher thread, before its first message.
        """
        actor = cls(*args, **kwargs)
        ref: pykka.ActorRef[Self] = actor._actor_ref  # not through the property: one call less
        dispatcher = actor._dispatcher
        dispatcher._actors.add(ref)
        # _start_actor_loop's, the inbox's start and schedule's, inline: three calls fewer
        # for every actor (a run's, a woken run's).
        inbox = actor.actor_inbox
        with inbox._lock:
            inbox._scheduled = True
        dispatcher._ready.put(actor)
        return ref

    def _start_actor_loop(self) -> None:
        self.actor_inbox.start()

    def _stop(self) -> None:
        # pykka's, but taken off the dispatcher's list (a set) instead of pykka's registry
        # (a list scanned to remove it), and no debug line formatted for every run.
        self._dispatcher._actors.discard(self._actor_ref)
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:
            emit(logging.ERROR, "actor_on_stop_failed", actor=str(self), exc_info=True)

    def on_fault(self, error: BaseException, message: Any = None) -> None:
        """A handler of this actor (one that :attr:`survives_faults`) raised; it goes on.

        ``message`` is the one its handler failed on: nothing else will handle it.
        """

    def stop_now(self) -> None:
        """Stop from inside a handler: no further message is processed."""
        if not self.actor_stopped._stopped:  # not through is_set(): a call fewer a run
            self._stop()

    def on_undelivered(self, message: Any) -> None:
        """A told message that this actor stopped before handling, or failed on: nobody will.

        The default drops it. An actor whose messages carry a reply that a caller
        waits for overrides this to answer it. Called on whichever thread finds
        the message: the one tearing the actor down, or the sender's.
        """

    @classmethod
    def on_undelivered_gone(cls, message: Any) -> None:
        """A told message for an actor that ended and whose object was freed since.

        The default drops it. An actor that answers a waiting caller in
        :meth:`on_undelivered` answers here too (there is no instance left).
        """

    def on_released(self) -> None:
        """Last, once the actor ended and its inbox let go of it: drop references.

        A subclass whose attributes refer back to it (callbacks bound to it)
        clears them here, so that the actor is freed as soon as nothing else
        holds it, instead of by the cyclic garbage collector.
        """

    def _process_batch(self) -> None:
        inbox = self.actor_inbox
        # The stop flag read as an attribute, not through is_set(): a call fewer per message.
        stopped = self.actor_stopped
        if not self._loop_started:
            self._loop_started = True
            try:
                self.on_start()
            except BaseException:
                self._fail(*sys.exc_info())
        lock, messages = inbox._lock, inbox._messages
        for _ in range(THROUGHPUT):
            if stopped._stopped:
                self._teardown()
                return
            # next_or_idle's, inline: twice per turn of every actor of every run.
            with lock:
                if not messages:
                    inbox._scheduled = False
                    return
                item = messages[0]
                del messages[0]
            if (
                type(item) is Envelope
                or _probes.observer is not None
                or isinstance(item, _PYKKA_MESSAGES)
            ):
                self._process(item)
                continue
            # _process's, inline for a told message of ours that nobody observes: most
            # messages of every run.
            try:
                self.on_receive(item)
            except BaseException as exc:
                self._failed_on(item, item, None, exc)
        if stopped._stopped:
            self._teardown()
            return
        # Yield the thread to other actors; come back for the rest of the mail.
        self._dispatcher._ready.put(self)  # schedule's, inline

    def _process(self, item: Any) -> None:
        # What _opened does, inline: this runs for every message of every run.
        if type(item) is Envelope:
            message, reply_to = item.message, item.reply_to
        else:  # a told message as it is (see _DispatchedRef)
            message, reply_to = item, None
        try:
            observer = _probes.observer
            if observer is not None and not observer(self, message):
                return
            if reply_to is None and not isinstance(message, _PYKKA_MESSAGES):
                # A told message of ours goes straight to on_receive: pykka's
                # _handle_receive would look for its four kinds one by one first, at
                # every message of every run.
                response = self.on_receive(message)
            else:
                response = self._handle_receive(message)
        except BaseException as exc:
            self._failed_on(item, message, reply_to, exc)
            return
        if reply_to is not None:
            reply_to.set(response)

    def _failed_on(
        self, item: Any, message: Any, reply_to: pykka.Future[Any] | None, exc: BaseException
    ) -> None:
        """The handler of ``message`` (which came as ``item``) raised ``exc``.

        Called from the ``except`` block that caught it: ``sys.exc_info()`` is ``exc``'s.
        """
        if reply_to is not None:
            reply_to.set_exception()  # sys.exc_info(): called from the except block
        elif isinstance(exc, UnexpectedMessageError):
            _report_unexpected(self, exc)
        elif self.survives_faults:
            emit(
                logging.ERROR,
                "actor_message_failed",
                actor=str(self),
                message=type(message).__name__,
                exc_info=True,
            )
            self.on_fault(exc, message)
        else:
            self._fail(*sys.exc_info())
            # The message it failed on was never handled: whoever waits for its
            # answer (a cancel's caller) is answered as for the mail left in the inbox.
            _reply_dead(item, self)

    def _fail(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        emit(
            logging.ERROR,
            "actor_crashed",
            actor=str(self),
            exc_info=(exc_type, exc_value, traceback),
        )
        self._dispatcher._actors.discard(self.actor_ref)
        self.actor_stopped.set()
        try:
            self.on_failure(exc_type, exc_value, traceback)
        except Exception:
            emit(logging.ERROR, "actor_on_failure_crashed", actor=str(self), exc_info=True)

    def _teardown(self) -> None:
        inbox = self.actor_inbox
        for item in inbox.close():  # which lets go of the actor too (weakly held from now)
            _reply_dead(item, self)
        try:
            self.on_released()
        except Exception:
            emit(logging.ERROR, "actor_release_failed", actor=str(self), exc_info=True)


class ThreadActor(pykka.ThreadingActor):
    """A threading actor for work that blocks: a daemon thread and a C-speed inbox.

    pykka's threading actors read their mail from a ``queue.Queue``, written in
    Python over a condition variable; ``queue.SimpleQueue`` offers the same
    ``put``/``get``/``empty`` in C, several times faster per message. The
    thread is a daemon so that a step stuck in user code cannot keep the
    interpreter from exiting; the runtime stops its actors itself.

    A told message the actor does not accept is logged as ``unexpected_message``
    and the actor goes on, as a dispatched actor does. pykka's loop still calls
    ``on_failure`` for it afterwards, so a subclass that overrides
    ``on_failure`` must ignore :class:`UnexpectedMessageError` (as ``StepActor``'s does).
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()

    def _start_actor_loop(self) -> None:
        # pykka registers the actor before it starts its thread: one the process refuses
        # (a limit of threads or of memory) left the actor in its registry for good, one
        # more at every try of a pool that tries again.
        try:
            super()._start_actor_loop()
        except BaseException:
            pykka.ActorRegistry.unregister(self.actor_ref)
            raise

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # pykka's loop calls this for an exception from the handler of a told
        # message (and from on_start or on_stop); by default the actor stops.
        if isinstance(exception_value, UnexpectedMessageError):
            _report_unexpected(self, exception_value)
            return
        super()._handle_failure(exception_type, exception_value, traceback)
