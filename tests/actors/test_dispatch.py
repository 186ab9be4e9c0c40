"""DispatchedActor and Dispatcher: full pykka actors that share a few threads."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog
from structlog.testing import capture_logs

import actors._dispatch
from actors._dispatch import (
    THROUGHPUT,
    DispatchedActor,
    Dispatcher,
    ThreadActor,
    UnexpectedMessageError,
    unexpected,
)
from actors.run import RunActor
from tests._support import looks_at_lock, wait_until

WAIT = 10.0


def _threads_named(prefix: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]


@pytest.fixture(autouse=True)
def _forget_instances() -> Iterator[None]:
    yield
    INSTANCES.clear()


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    """A dispatcher with several threads, so that an actor run twice at once would show."""
    d = Dispatcher(threads=4, name="callboard-test-dispatch")
    try:
        yield d
    finally:
        d.stop(timeout=WAIT)
    assert not _threads_named("callboard-test-dispatch")


@pytest.fixture
def started() -> Iterator[list[pykka.ActorRef[Any]]]:
    """Refs to stop at the end of a test, whatever it did to them."""
    refs: list[pykka.ActorRef[Any]] = []
    yield refs
    for ref in refs:
        ref.stop(block=True, timeout=WAIT)


INSTANCES: dict[str, Recorder] = {}
"""Every Recorder by its URN, to look at an actor after it has stopped."""


class Recorder(DispatchedActor):
    """Records what it handles and checks that no two handlers ever overlap."""

    def __init__(self, dispatcher: Dispatcher, *, gate: threading.Event | None = None) -> None:
        super().__init__(dispatcher)
        INSTANCES[self.actor_urn] = self
        self.gate = gate
        self.lock = threading.Lock()
        self.in_handler = 0
        self.max_in_handler = 0
        self.handled: list[Any] = []
        self.started_before_first_message: bool | None = None
        self.on_start_thread: str | None = None
        self.failures: list[type[BaseException] | None] = []
        self.stop_events: list[str] = []
        self.undelivered: list[Any] = []
        self._on_start_ran = False

    def on_start(self) -> None:
        self._on_start_ran = True
        self.on_start_thread = threading.current_thread().name

    def on_stop(self) -> None:
        self.stop_events.append("on_stop")

    def on_failure(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.failures.append(exc_type)

    def on_undelivered(self, message: Any) -> None:
        self.undelivered.append(message)

    def on_receive(self, message: Any) -> Any:
        with self.lock:
            self.in_handler += 1
            self.max_in_handler = max(self.max_in_handler, self.in_handler)
        try:
            if self.started_before_first_message is None:
                self.started_before_first_message = self._on_start_ran
            kind = message[0]
            if kind == "block":
                assert self.gate is not None
                self.gate.wait(WAIT)
            elif kind == "boom":
                raise ValueError(f"boom {message[1]}")
            elif kind == "stray":
                unexpected(self, message)
            elif kind == "stop_now":
                self.stop_now()
            elif kind == "echo":
                return ("reply", message[1])
            elif kind == "report":
                return {
                    "handled": list(self.handled),
                    "max_in_handler": self.max_in_handler,
                    "started_before_first_message": self.started_before_first_message,
                    "on_start_thread": self.on_start_thread,
                }
            # Let another dispatcher thread run: it would enter this actor if it could.
            time.sleep(0)
            self.handled.append(message)
            return None
        finally:
            with self.lock:
                self.in_handler -= 1


def test_messages_from_many_threads_are_handled_one_at_a_time_in_each_senders_order(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    started.append(ref)
    senders, per_sender = 8, 400
    go = threading.Barrier(senders)

    def send(sender: int) -> None:
        go.wait()
        for index in range(per_sender):
            ref.tell(("msg", sender, index))

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = ref.ask(("report",), timeout=WAIT)

    assert report["max_in_handler"] == 1
    assert len(report["handled"]) == senders * per_sender
    for sender in range(senders):
        indexes = [index for _, who, index in report["handled"] if who == sender]
        assert indexes == list(range(per_sender))


def test_ask_returns_the_handlers_reply(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    started.append(ref)

    assert ref.ask(("echo", 42), timeout=WAIT) == ("reply", 42)
    future = ref.ask(("echo", "later"), block=False)
    assert future.get(timeout=WAIT) == ("reply", "later")


def test_a_told_message_reaches_on_receive_without_pykkas_own_handling_and_proxies_still_work(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A told message of ours skips pykka's ``_handle_receive`` (four checks per message).

    What pykka handles there still goes through it: a stop, and a proxy's calls,
    asked or told (``defer()``).
    """
    handled_by_pykka: list[Any] = []
    original = pykka.Actor._handle_receive

    def handle_receive(self: pykka.Actor, message: Any) -> Any:
        handled_by_pykka.append(message)
        return original(self, message)

    monkeypatch.setattr(pykka.Actor, "_handle_receive", handle_receive)
    ref = Recorder.start(dispatcher)
    started.append(ref)

    ref.tell(("told", 1))
    assert ref.ask(("echo", 2), timeout=WAIT) == ("reply", 2)  # asked: in an envelope
    assert [message for message in handled_by_pykka if message[0] == "told"] == []
    assert INSTANCES[ref.actor_urn].handled == [("told", 1)]

    proxy = ref.proxy()
    proxy.on_receive.defer(("deferred", 3))  # a ProxyCall, told bare
    assert proxy.handled.get(timeout=WAIT) == [("told", 1), ("deferred", 3)]
    assert any(isinstance(message, pykka.messages.ProxyCall) for message in handled_by_pykka)
    ref.stop(timeout=WAIT)
    assert not ref.is_alive()


def test_an_exception_in_an_ask_handler_goes_back_to_the_asker_and_the_actor_lives_on(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    started.append(ref)

    with pytest.raises(ValueError, match="boom 1"):
        ref.ask(("boom", 1), timeout=WAIT)

    assert ref.is_alive()
    assert ref.ask(("echo", "still here"), timeout=WAIT) == ("reply", "still here")
    assert ref.proxy().failures.get(timeout=WAIT) == []


def test_an_exception_in_a_tell_handler_calls_on_failure_and_stops_the_actor(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    gate = threading.Event()
    ref = Recorder.start(dispatcher, gate=gate)
    actor = INSTANCES[ref.actor_urn]
    started.append(ref)

    with capture_logs() as logs:
        ref.tell(("block",))  # hold the actor so that the next messages queue up behind it
        ref.tell(("boom", 2))
        pending = ref.ask(("echo", "queued after the failure"), block=False)
        gate.set()
        with pytest.raises(pykka.ActorDeadError):
            pending.get(timeout=WAIT)
    structlog.reset_defaults()

    assert [(e["event"], e["log_level"]) for e in logs] == [("actor_crashed", "error")]
    assert actor.actor_stopped.wait(WAIT)
    assert actor.failures == [ValueError]
    # The message it failed on is answered as undelivered, as mail left behind is: a
    # sender waiting for an answer through it (a cancel's caller) is not left waiting.
    assert actor.undelivered == [("boom", 2)]
    assert actor.stop_events == []  # on_failure, not on_stop
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(("msg", 0, 0))
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None


def test_dispatched_actors_are_listed_by_their_dispatcher_until_they_stop(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    """Not in pykka's registry, a list every stop scans: with thousands of runs in
    flight each run's end paid for a scan of them all."""
    stopping, failing = Recorder.start(dispatcher), Recorder.start(dispatcher)
    started.extend([stopping, failing])
    on_another = Dispatcher()
    try:
        elsewhere = Recorder.start(on_another)
        assert elsewhere.ask(("echo", 1), timeout=WAIT) == ("reply", 1)

        assert set(dispatcher.actors()) == {stopping, failing}
        assert set(dispatcher.actors(Recorder)) == {stopping, failing}
        assert dispatcher.actors(RunActor) == []
        assert on_another.actors() == [elsewhere]
        assert not {stopping, failing, elsewhere} & set(pykka.ActorRegistry.get_all())

        assert stopping.stop(timeout=WAIT) is True
        with pytest.raises(ValueError):
            failing.ask(("boom", 1), timeout=WAIT)  # an ask's failure: the actor lives on
        assert set(dispatcher.actors()) == {failing}
        failing.tell(("boom", 2))  # a tell's failure stops it
        wait_until(lambda: dispatcher.actors() == [], WAIT, "the failed actor off the list")
        assert not failing.is_alive()

        assert on_another.abandon_actors() == 1  # a kill forgets the rest
        assert on_another.actors() == [] and not elsewhere.is_alive()
    finally:
        on_another.stop(WAIT)


def test_stop_runs_on_stop_and_refuses_later_messages(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    actor = INSTANCES[ref.actor_urn]

    assert ref.stop(timeout=WAIT) is True

    assert actor.stop_events == ["on_stop"]
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(("msg", 0, 0))
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("echo", 1), timeout=WAIT)


def test_messages_sent_before_stop_are_handled_and_those_queued_after_it_get_actor_dead(
    dispatcher: Dispatcher,
) -> None:
    gate = threading.Event()
    ref = Recorder.start(dispatcher, gate=gate)
    ref.tell(("block",))
    before = ref.ask(("echo", "before"), block=False)
    stopping = ref.stop(block=False)
    gate.set()

    assert before.get(timeout=WAIT) == ("reply", "before")
    assert stopping.get(timeout=WAIT) is True
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("echo", "after"), timeout=WAIT)


def test_told_messages_an_actor_stopped_before_handling_reach_on_undelivered_in_order(
    dispatcher: Dispatcher,
) -> None:
    gate = threading.Event()
    ref = Recorder.start(dispatcher, gate=gate)
    actor = INSTANCES[ref.actor_urn]
    ref.tell(("block",))  # hold the actor so that the rest queues up behind it
    ref.tell(("stop_now",))
    ref.tell(("msg", "left", 1))
    asked = ref.ask(("echo", "left"), block=False)
    ref.tell(("msg", "left", 2))
    gate.set()

    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=WAIT)  # an asker hears of it as before
    assert actor.actor_stopped.wait(WAIT)
    assert actor.undelivered == [("msg", "left", 1), ("msg", "left", 2)]
    assert actor.handled == [("block",), ("stop_now",)]


def test_on_start_runs_on_a_dispatcher_thread_before_the_first_message(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    started.append(ref)
    ref.tell(("msg", 0, 0))

    report = ref.ask(("report",), timeout=WAIT)

    assert report["started_before_first_message"] is True
    assert report["on_start_thread"].startswith("callboard-test-dispatch")


def _stop_all(refs: list[pykka.ActorRef[Any]]) -> None:
    for future in [ref.stop(block=False) for ref in refs]:
        future.get(timeout=WAIT)


def test_many_actors_on_one_thread_all_make_progress() -> None:
    single = Dispatcher(threads=1, name="callboard-test-single")
    refs: list[pykka.ActorRef[Any]] = []
    try:
        refs = [Recorder.start(single) for _ in range(500)]
        futures = [ref.ask(("echo", index), block=False) for index, ref in enumerate(refs)]
        assert [future.get(timeout=WAIT) for future in futures] == [
            ("reply", index) for index in range(500)
        ]
    finally:
        _stop_all(refs)
        single.stop(timeout=WAIT)


class Journal(DispatchedActor):
    """Appends its name to a shared journal for every message; "block" waits on a gate."""

    def __init__(
        self, dispatcher: Dispatcher, name: str, journal: list[str], gate: threading.Event
    ) -> None:
        super().__init__(dispatcher)
        self.name = name
        self.journal = journal
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.gate.wait(WAIT)
        self.journal.append(self.name)
        return None


def test_a_busy_actor_yields_the_thread_to_others_after_a_batch() -> None:
    single = Dispatcher(threads=1, name="callboard-test-single")
    journal: list[str] = []
    gate = threading.Event()
    refs: list[pykka.ActorRef[Any]] = []
    try:
        blocker, busy, quiet = refs = [
            Journal.start(single, name, journal, gate) for name in ("blocker", "busy", "quiet")
        ]
        for ref in refs:
            ref.ask("started", timeout=WAIT)  # every on_start is done: the queue is empty
        journal.clear()
        blocker.tell("block")  # hold the only thread while the mail piles up
        for _ in range(THROUGHPUT * 10):
            busy.tell("work")
        quiet.tell("work")
        gate.set()
        busy.ask("work", timeout=WAIT)
        quiet.ask("work", timeout=WAIT)

        first_quiet = journal.index("quiet")
        assert journal[:first_quiet].count("busy") == THROUGHPUT
    finally:
        gate.set()
        _stop_all(refs)
        single.stop(timeout=WAIT)


def test_dispatcher_stop_ends_its_threads() -> None:
    d = Dispatcher(threads=3, name="callboard-test-ending")
    threads = _threads_named("callboard-test-ending")
    assert len(threads) == 3

    d.stop(timeout=WAIT)

    assert not any(thread.is_alive() for thread in threads)


def test_dispatcher_stop_lets_queued_work_finish_first() -> None:
    d = Dispatcher(threads=1, name="callboard-test-draining")
    gate = threading.Event()
    ref = Recorder.start(d, gate=gate)
    try:
        ref.tell(("block",))
        reply = ref.ask(("echo", "queued"), block=False)
        stopper = threading.Thread(target=d.stop, kwargs={"timeout": WAIT})
        stopper.start()
        gate.set()
        stopper.join(WAIT)

        assert not stopper.is_alive()
        assert reply.get(timeout=0) == ("reply", "queued")
    finally:
        gate.set()
        INSTANCES.pop(ref.actor_urn)._stop()  # its dispatcher is gone: nobody else can stop it


def test_a_message_outside_the_protocol_goes_back_to_an_asker_as_unexpected_message_error(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    started.append(ref)

    with pytest.raises(UnexpectedMessageError, match=r"Recorder \(urn:uuid:.*\) does not accept"):
        ref.ask(("stray",), timeout=WAIT)

    assert ref.ask(("echo", "still here"), timeout=WAIT) == ("reply", "still here")


def test_a_told_message_outside_the_protocol_is_logged_and_the_actor_goes_on(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    ref = Recorder.start(dispatcher)
    actor = INSTANCES[ref.actor_urn]
    started.append(ref)

    with capture_logs() as logs:
        ref.tell(("stray",))
        ref.tell(("msg", 0, 0))
        report = ref.ask(("report",), timeout=WAIT)
    structlog.reset_defaults()

    assert [(e["event"], e["log_level"]) for e in logs] == [("unexpected_message", "error")]
    assert "builtins.tuple" in logs[0]["error"]
    assert report["handled"] == [("msg", 0, 0)]
    assert actor.failures == []
    assert ref.is_alive()


class Refuser(ThreadActor):
    """A threading actor that accepts nothing."""

    def on_receive(self, message: Any) -> Any:
        unexpected(self, message)


def test_a_thread_actor_logs_a_told_message_it_refuses_and_goes_on() -> None:
    ref = Refuser.start()
    try:
        with capture_logs() as logs:
            ref.tell("stray")
            with pytest.raises(UnexpectedMessageError):
                ref.ask("asked", timeout=WAIT)
        structlog.reset_defaults()

        assert [(e["event"], e["log_level"]) for e in logs] == [("unexpected_message", "error")]
        assert ref.is_alive()
    finally:
        ref.stop(timeout=WAIT)


# --- what this module borrows from pykka ----------------------------------------------

PYKKA_PRIVATE_NAMES = {
    "_ActorStop": "pykka.messages: a stop request, answered even after the actor stopped",
    "_actor_ref": "Actor: the ref that DispatchedActor.__init__ makes, as pykka's __init__ does",
    "_create_actor_inbox": "Actor: the hook for a new actor type's inbox",
    "_create_future": "Actor: the hook for a new actor type's futures",
    "_handle_failure": "Actor: what ThreadActor overrides to survive a refused message",
    "_handle_receive": "Actor: pykka's handling of stop and proxy messages before on_receive",
    "_start_actor_loop": "Actor: the hook that starts a new actor type's loop",
    "_stop": "Actor: stop at once, unregister, call on_stop",
}
"""Every private name of pykka's that actors/_dispatch.py uses, and why.

pyproject.toml pins pykka 4; a pykka release that drops or renames one of
these fails here, in one place."""


def _private_names_in(path: Path) -> set[str]:
    """Private names a module reads, sets, calls or overrides (not dunders)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            names.update(item.name for item in node.body if isinstance(item, ast.FunctionDef))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def _pykka_private_names() -> set[str]:
    names: set[str] = set()
    for owner in (pykka.Actor, pykka.ThreadingActor, pykka.ActorRef, pykka.messages):
        names.update(dir(owner))
        names.update(getattr(owner, "__annotations__", {}))
    names.update(vars(pykka.ThreadingActor()))  # attributes set by Actor.__init__
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_the_private_pykka_names_the_dispatcher_uses_are_the_ones_named_and_all_exist() -> None:
    pykka_names = _pykka_private_names()
    used = _private_names_in(Path(actors._dispatch.__file__)) & pykka_names

    missing = set(PYKKA_PRIVATE_NAMES) - pykka_names
    assert not missing, f"pykka {pykka.__version__} no longer has {sorted(missing)}"
    assert used == set(PYKKA_PRIVATE_NAMES), (
        "actors/_dispatch.py uses pykka's private names "
        f"{sorted(used - set(PYKKA_PRIVATE_NAMES))} that PYKKA_PRIVATE_NAMES does not name, "
        f"or no longer uses {sorted(set(PYKKA_PRIVATE_NAMES) - used)}"
    )


def test_a_dispatched_actor_sets_every_attribute_pykkas_actor_init_sets(
    dispatcher: Dispatcher,
) -> None:
    # DispatchedActor.__init__ does pykka's work itself (its urn does not come
    # from uuid4, and is made when first read); a pykka that sets more in
    # Actor.__init__ must show here.
    pykkas = set(vars(pykka.ThreadingActor()))
    ours = Recorder(dispatcher)

    assert pykkas <= {*vars(ours), "actor_urn"}
    assert ours.actor_urn.startswith("urn:uuid:")
    assert ours.actor_ref.actor_urn == ours.actor_urn
    assert Recorder(dispatcher).actor_urn != ours.actor_urn


class _Plain(DispatchedActor):
    """A dispatched actor that nothing else holds: freed once it ends."""

    def on_receive(self, message: Any) -> Any:
        return message


def test_a_dispatched_ref_sets_what_pykkas_ref_init_sets_and_weakly_finds_its_actor(
    dispatcher: Dispatcher,
) -> None:
    # _DispatchedRef.__init__ does pykka's work itself, but makes no weak reference to
    # the actor until a proxy asks: a pykka that sets more in ActorRef.__init__ must show.
    pykkas = set(vars(pykka.ActorRef(pykka.ThreadingActor())))
    ref = _Plain.start(dispatcher)

    assert pykkas <= {*vars(ref), "_actor_weakref", "actor_urn"}
    actor = ref._actor_weakref()
    assert isinstance(actor, _Plain) and actor.actor_ref is ref
    assert ref.proxy().on_receive("through a proxy").get(timeout=WAIT) == "through a proxy"
    del actor
    ref.stop(timeout=WAIT)
    urn = ref.actor_urn
    wait_until(lambda: ref._actor_weakref() is None, what="the ended actor freed")
    with pytest.raises(pykka.ActorDeadError):
        ref.proxy()
    assert ref.actor_urn == urn and str(ref) == f"_Plain ({urn})"


def test_a_dispatched_actor_s_stop_flag_wakes_a_waiter_and_never_clears() -> None:
    from actors._dispatch import _StopFlag

    flag = _StopFlag()
    assert not flag.is_set() and flag.wait(0.01) is False
    woke = threading.Event()

    def waiter() -> None:
        if flag.wait(WAIT):
            woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    flag.set()
    thread.join(WAIT)
    assert woke.is_set() and flag.is_set() and flag.wait(0) is True
    with pytest.raises(TypeError):
        flag.clear()


class _NoDispatcher:
    """What an inbox tells when its actor has mail and was not queued: counted only.

    The inbox puts its actor in the dispatcher's ready queue itself (``_ready``),
    not through ``schedule``: a call fewer per message.
    """

    def __init__(self) -> None:
        self.scheduled = 0
        self._ready = self

    def put(self, actor: Any) -> None:
        self.scheduled += 1


def test_a_sender_never_finds_an_inbox_lock_held_by_another_thread() -> None:
    # Senders and the dispatcher take turns on an inbox's lock. If one of them could
    # be made to hand the GIL over while holding it, the others would sleep on the
    # lock and then wait for the GIL again. Nothing under the lock hands it over, so
    # a thread that looks (with the GIL handed over every microsecond) finds it free.
    dispatcher = _NoDispatcher()
    inbox = actors._dispatch._DispatchInbox(object(), dispatcher)  # type: ignore[arg-type]
    taken = []

    def put_and_take() -> None:
        for index in range(20_000):
            inbox.put(index)
            if index % 3 == 2:  # take them out three at a time, then find the inbox empty
                while (envelope := inbox.next_or_idle()) is not None:
                    taken.append(envelope)

    looks = looks_at_lock(inbox._lock, put_and_take)

    assert taken == list(range(len(taken))) and len(taken) >= 19_998
    assert dispatcher.scheduled == 6_667  # once for each batch of three
    assert looks["free"] > 100, looks  # the two threads did take turns
    assert looks["held"] == 0, looks


# --- told messages go into the inbox bare --------------------------------------------


TAKERS: dict[str, _Taker] = {}


class _Taker(DispatchedActor):
    """Keeps every message it handles (``None`` too) and every one it never handled."""

    def __init__(self, dispatcher: Dispatcher, gate: threading.Event) -> None:
        super().__init__(dispatcher)
        TAKERS[self.actor_urn] = self
        self.gate = gate
        self.handled: list[Any] = []
        self.undelivered: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            self.gate.wait(WAIT)
        elif message == "stop_now":
            self.stop_now()
        self.handled.append(message)
        return ("got", message)

    def on_undelivered(self, message: Any) -> None:
        self.undelivered.append(message)


class _WithReplyTo:
    """A message of the actor's own protocol that happens to have a ``reply_to``."""

    def __init__(self) -> None:
        self.reply_to = pykka.ThreadingFuture[Any]()
        self.message = "not an envelope's"


def test_a_told_message_waits_in_the_inbox_without_an_envelope_and_an_ask_with_one(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    gate = threading.Event()
    ref = _Taker.start(dispatcher, gate)
    started.append(ref)
    ref.tell("block")
    wait_until(ref.actor_inbox.empty)  # the actor holds "block"
    told = ("told", 1)
    ref.tell(told)
    asked = ref.ask("asked", block=False)

    waiting = list(ref.actor_inbox._messages)
    gate.set()

    assert waiting[0] is told  # no envelope: nothing more for the collector to track
    assert isinstance(waiting[1], pykka._envelope.Envelope)
    assert waiting[1].message == "asked" and waiting[1].reply_to is not None
    assert asked.get(timeout=WAIT) == ("got", "asked")
    assert TAKERS.pop(ref.actor_urn).handled == ["block", told, "asked"]


def _never_answered(future: pykka.Future[Any]) -> bool:
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0)
    return True


def test_a_told_none_and_a_message_with_a_reply_to_of_its_own_are_handled_as_told(
    dispatcher: Dispatcher, started: list[pykka.ActorRef[Any]]
) -> None:
    gate = threading.Event()
    gate.set()
    ref = _Taker.start(dispatcher, gate)
    started.append(ref)
    own = _WithReplyTo()
    ref.tell(None)  # in an envelope: a bare None would read as an empty inbox
    ref.tell(own)
    assert ref.ask("last", timeout=WAIT) == ("got", "last")

    assert TAKERS.pop(ref.actor_urn).handled == [None, own, "last"]
    assert _never_answered(own.reply_to)  # nothing answered through the message's field


def test_told_messages_left_when_an_actor_stops_reach_on_undelivered_as_they_were_told(
    dispatcher: Dispatcher,
) -> None:
    gate = threading.Event()
    ref = _Taker.start(dispatcher, gate)
    actor = TAKERS.pop(ref.actor_urn)
    ref.tell("block")
    ref.tell("stop_now")
    own = _WithReplyTo()
    ref.tell(own)
    ref.tell(None)
    asked = ref.ask("asked", block=False)
    gate.set()

    with pytest.raises(pykka.ActorDeadError):
        asked.get(timeout=WAIT)
    assert actor.actor_stopped.wait(WAIT)
    assert actor.undelivered == [own, None]
    assert _never_answered(own.reply_to)
    with pytest.raises(pykka.ActorDeadError):  # and a tell after the stop is refused
        ref.tell("late")


def test_the_envelope_class_the_dispatcher_tells_apart_is_the_one_pykkas_asks_use() -> None:
    # actors/_dispatch.py imports it from pykka's private module pykka._envelope; were
    # pykka's refs to wrap asks in another class, an ask would pass for a bare tell.
    assert actors._dispatch.Envelope is pykka._ref.Envelope
    envelope = actors._dispatch.Envelope("m", reply_to=None)
    assert (envelope.message, envelope.reply_to) == ("m", None)
