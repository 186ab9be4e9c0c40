"""``callboard worker``: run the runs of some workflows from a shared store, until a signal.

The process is one runtime with the role ``worker``: it claims the queued runs of the
workflows it registered, whoever started them, up to ``--concurrency`` at once, and
starts none itself. It writes one line to stderr once it has joined the store (its
worker id, host, pid, workflows and concurrency, and with ``--health-port`` where it
answers health probes: see :mod:`runtime._cli._health`), and a line at each step of its
stop.

Stopping, as a process manager expects:

- the first SIGTERM, SIGINT (Ctrl-C) or SIGHUP (its terminal closed) stops claiming and
  gives the runs in progress
  ``--stop-timeout`` seconds to end; those still going are then halted and go back to
  the queue, for any worker to resume from their last completed step. A SIGHUP that the
  process was started ignoring (``nohup``) stays ignored;
- a second signal halts them at once;
- the exit code is 0 after SIGTERM or SIGHUP, 130 after SIGINT (as shells report Ctrl-C),
  1 if the runtime stopped itself (its actors failed too often).

The signals are waited for on a socket that :func:`signal.set_wakeup_fd` writes each
signal's number to, so the main thread wakes at once, and the Python-level handlers do
nothing but keep SIGINT from raising ``KeyboardInterrupt`` in the middle of a stop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, TracebackType
from typing import Any, Final

from runtime._cli._commands import ExitCode, UsageError, open_db, shown_db
from runtime._cli._health import HealthServer
from runtime._cli._loader import load_workflow
from runtime._cli._render import one_line
from runtime._runtime import Runtime
from runtime._stores.base import SharedStore, this_host
from runtime._workflow import Workflow

__all__ = ["DEFAULT_CONCURRENCY", "worker"]

DEFAULT_CONCURRENCY: Final = 16
"""The most runs a worker holds at once unless ``--concurrency`` says otherwise.

Bounded, so that a fleet shares the queue: a worker without a limit would claim every
queued run of its workflows (64 a pass) and keep them from workers with room.
"""

_SIGNALS: Final[tuple[int, ...]] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop a worker. SIGHUP (not on Windows) came with no handler, so a
closed terminal or an ssh session that dropped killed the worker without a line."""

_WOKEN: Final = 0
"""The byte :meth:`_Signals.wake` writes: no signal has the number 0."""

_LOOK_EVERY: Final = 1.0
"""Seconds between two looks at whether the runtime stopped itself, while nothing else wakes."""


def worker(args: argparse.Namespace) -> ExitCode:
    """``callboard worker``: run the runs of the given workflows until SIGTERM, SIGINT or SIGHUP.

    Everything that can be refused is checked before anything starts: the workflows
    load and have distinct ids, and the store opens.
    """
    workflows = _load(args.targets)
    store = open_db(args.db, readonly=False, lease=args.lease)
    try:
        if not isinstance(store, SharedStore):
            raise UsageError(f"--db: {shown_db(args.db)} is not a store that processes share")
        runtime = Runtime(
            store=store,
            role="worker",
            max_concurrent_runs=args.concurrency,
            max_step_threads=args.max_step_threads,
            stop_timeout=args.stop_timeout,
        )
        for workflow in workflows:
            runtime.register(workflow)
        health = _health_server(args, runtime)
        signals = _Signals()
    except BaseException:
        store.close()
        raise
    with signals, _closing(health):
        try:
            runtime.start()
        except BaseException:
            store.close()
            raise
        if health is not None:
            health.start()
        try:
            _say(
                f"started id={store.owner_id} host={this_host()} pid={os.getpid()} "
                f"workflows={_named(workflows)} "
                f"concurrency={args.concurrency} lease={store.lease:g}s "
                f"db={shown_db(args.db)}" + ("" if health is None else f" health={health.url}")
            )
            first = signals.wait_first(lambda: runtime.is_running)
            if first is None:
                _say(f"stopped id={store.owner_id}: its runtime stopped itself (see the log)")
                return ExitCode.FAILED
            _say(
                f"{signal.Signals(first).name}: stopping; runs in progress get up to "
                f"{args.stop_timeout:g} s to end (a second signal halts them now)"
            )
            _stop(runtime, signals, store.owner_id)
        finally:
            runtime.stop(timeout=0)  # after an error: nothing is left running
    _say(f"stopped id={store.owner_id}")
    return ExitCode.INTERRUPTED if first == signal.SIGINT else ExitCode.OK


def _health_server(args: argparse.Namespace, runtime: Runtime) -> HealthServer | None:
    """The server of ``--health-port``, bound (not yet serving); ``None`` without the option.

    Raises:
        UsageError: if the address cannot be bound (a port in use, a host not here).
    """
    port: int | None = args.health_port
    if port is None:
        return None
    try:
        return HealthServer(args.health_host, port, runtime)
    except OSError as exc:
        raise UsageError(
            f"--health-port: cannot listen on {args.health_host}:{port}: {exc.strerror or exc}"
        ) from exc


@contextlib.contextmanager
def _closing(server: HealthServer | None) -> Iterator[None]:
    try:
        yield
    finally:
        if server is not None:
            server.close()


def _load(targets: Sequence[str]) -> list[Workflow[Any, Any]]:
    """Each target's workflow; two with one id must be two versions (plan fingerprints).

    Several versions of one workflow are registered in the order given: new
    runs use the last, runs started on an earlier one finish on it.
    """
    workflows: list[Workflow[Any, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for target in targets:
        workflow = load_workflow(target)
        shape = (workflow.id, workflow.plan.fingerprint)
        if shape in seen:
            raise UsageError(
                f"{seen[shape]} and {target} are both workflow {workflow.id!r} with one plan "
                f"(fingerprint {shape[1]}): a worker runs each version of a workflow once"
            )
        seen[shape] = target
        workflows.append(workflow)
    return workflows


def _stop(runtime: Runtime, signals: _Signals, worker_id: str) -> None:
    """Stop the runtime on a thread of its own, and halt its runs at a second signal."""
    failure: list[BaseException] = []

    def stop() -> None:
        try:
            runtime.stop()
        except BaseException as exc:
            failure.append(exc)
        finally:
            signals.wake()

    stopping = threading.Thread(target=stop, name="callboard-worker-stop", daemon=True)
    stopping.start()
    hurried = False
    while stopping.is_alive():
        signals.wait(_LOOK_EVERY)
        if len(signals.received) > 1 and not hurried:
            hurried = True
            name = signal.Signals(signals.received[1]).name
            _say(f"{name}: halting the runs in progress of {worker_id} now")
            runtime.stop(timeout=0)
    stopping.join()
    if failure:
        raise failure[0]


def _say(line: str) -> None:
    sys.stderr.write(f"callboard worker: {one_line(line)}\n")
    sys.stderr.flush()


class _Signals:
    """SIGINT, SIGTERM and SIGHUP, counted, for as long as the worker runs.

    Installing it takes over the signals (and the wakeup fd) from whatever handled
    them; leaving the ``with`` block gives them back. A SIGHUP ignored when it is
    installed is left ignored: ``nohup`` asked the worker to outlive its terminal.

    Raises:
        UsageError: if this is not the main thread, where Python runs signal handlers.
    """

    def __init__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise UsageError("callboard worker must run in the main thread of its process")
        self.received: list[int] = []
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._taken = tuple(
            number
            for number in _SIGNALS
            if number in (signal.SIGINT, signal.SIGTERM)
            or signal.getsignal(number) is not signal.SIG_IGN
        )
        self._previous = {number: signal.signal(number, _ignore) for number in self._taken}

    def __enter__(self) -> _Signals:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def wake(self) -> None:
        """Wake the main thread's :meth:`wait`; from any thread."""
        with contextlib.suppress(OSError):  # full: it will wake anyway
            self._writer.send(bytes([_WOKEN]))

    def wait(self, timeout: float) -> None:
        """Wait until a signal comes, :meth:`wake` is called or ``timeout`` passes."""
        select.select([self._reader], [], [], timeout)
        while True:
            try:
                data = self._reader.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            self.received.extend(number for number in data if number in self._taken)

    def wait_first(self, running: Callable[[], bool]) -> int | None:
        """The first signal, once it comes; ``None`` if ``running()`` turns false first."""
        while not self.received:
            if not running():
                return None
            self.wait(_LOOK_EVERY)
        return self.received[0]


def _ignore(number: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing: the wakeup fd has the signal already."""


def _named(workflows: Sequence[Workflow[Any, Any]]) -> str:
    """The workflows as the started line names them: an id, and which one of an id's versions.

    Several definitions of one id are told apart by their version label, or by
    their fingerprint's first characters: ``greet@v1,greet@v2``, not ``greet,greet``.
    """
    counts = Counter(workflow.id for workflow in workflows)
    names = []
    for workflow in workflows:
        plan = workflow.plan
        if counts[workflow.id] == 1:
            names.append(workflow.id)
        else:
            names.append(f"{workflow.id}@{plan.version or plan.fingerprint[:12]}")
    return ",".join(names)
