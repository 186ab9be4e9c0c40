"""Each run's event log in the registry: numbered events, kept for replays, bounded.

The registry turns a run's snapshots into events (:func:`runtime._snapshot.run_events`)
and takes the events steps write (``ctx.writer.write``). Each is numbered within its
run, one more for each event, and kept in the run's log, so that a client that
reconnects can go on from the last number it saw. Memory stays bounded: a log keeps
the newest :data:`EVENT_LOG_SIZE` events, the registry keeps the logs of the
:data:`LOGGED_RUNS` runs streamed or watched most recently, and a subscriber that
lets more than :data:`SUBSCRIBER_BUFFER` events queue up is cut off (its channel is
closed as lagged: it subscribes again from the last event it took).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container, KeysView
from typing import Final

from runtime._model import RunEvent

__all__ = ["EVENT_LOG_SIZE", "LOGGED_RUNS", "SUBSCRIBER_BUFFER", "EventLog", "EventLogs"]

EVENT_LOG_SIZE: Final = 1024
"""The most events a run's log keeps (the newest); a replay from an older number
starts at the oldest one kept."""

LOGGED_RUNS: Final = 128
"""The most runs whose logs the registry keeps beyond those watched right now; the
least recently used goes first, and its numbering starts again if it is streamed again."""

SUBSCRIBER_BUFFER: Final = 1024
"""The most events queued for one subscriber before it is cut off as lagged."""

REPLAYS_KEPT: Final = 32
"""The most replays told to one client alone (a reconnect with another log's numbers)
whose numbers a run's log remembers; a client from the middle of an older one is told
what the log holds after its number, as a client of the log itself would be."""


class EventLog:
    """One run's numbered events, and what its last snapshot said (to tell what changed).

    Attributes:
        events: The newest events, oldest first.
        next_seq: The number the next event gets.
        status: The run's status in the last snapshot seen.
        steps: Each step's status, attempts and loop iterations in the last snapshot seen.
        record_seq: The ``seq`` of the last snapshot seen (``-1``: none).
        created_at: When the run of that snapshot was created: a run deleted and
            made again under the same id is another run.
    """

    __slots__ = ("created_at", "events", "next_seq", "record_seq", "replayed", "status", "steps")

    def __init__(self) -> None:
        self.events: deque[RunEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self.next_seq = 1
        self.status = ""
        self.steps: dict[str, tuple[str, int, int]] = {}
        self.record_seq = -1
        self.created_at: float | None = None
        # The numbers of the replays told lately to one client alone (see ``skip``).
        self.replayed: tuple[tuple[int, int], ...] = ()

    def skip(self, first: int, last: int) -> None:
        """Numbers ``first`` to ``last`` were given to a replay told to one client: skip them.

        The last :data:`REPLAYS_KEPT` replays are remembered, so that a client from the
        middle of any of them is told the run again (the log keeps none of their events).
        """
        self.replayed = (*self.replayed[-(REPLAYS_KEPT - 1) :], (first, last))
        self.next_seq = max(self.next_seq, last + 1)

    def replayed_at(self, seq: int) -> bool:
        """Whether ``seq`` is a number of a replay remembered but not its last."""
        return any(first <= seq < last for first, last in self.replayed)

    def add(self, events: list[RunEvent]) -> None:
        """Keep ``events``, numbered from :attr:`next_seq` on (as they were built)."""
        if events:
            self.events.extend(events)
            self.next_seq = events[-1].seq + 1

    def since(self, seq: int | None) -> list[RunEvent]:
        """The events kept that are numbered above ``seq`` (``None``: all kept)."""
        if seq is None:
            return list(self.events)
        if seq >= self.next_seq - 1:
            return []
        return [event for event in self.events if event.seq > seq]


class EventLogs:
    """The logs of the runs streamed or watched lately: those watched now, and a few more."""

    def __init__(self, keep: int = LOGGED_RUNS) -> None:
        self._keep = keep
        self._logs: OrderedDict[str, EventLog] = OrderedDict()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._logs

    @property
    def run_ids(self) -> KeysView[str]:
        """The runs with a log, as a live view: ``in`` it costs no Python call.

        A run actor on a store in memory asks it at every transition of every run
        (:class:`actors._direct.DirectWrites`).
        """
        return self._logs.keys()

    def get(self, run_id: str) -> EventLog | None:
        """The run's log, if kept (and noted as used now)."""
        log = self._logs.get(run_id)
        if log is not None:
            self._logs.move_to_end(run_id)
        return log

    def new(self, run_id: str, watched: Container[str]) -> EventLog:
        """A new, empty log for the run; the least recently used unwatched ones go."""
        log = self._logs[run_id] = EventLog()
        excess = len(self._logs) - self._keep
        if excess > 0:
            for old in [key for key in self._logs if key not in watched and key != run_id]:
                if excess <= 0:
                    break
                del self._logs[old]
                excess -= 1
        return log

    def drop(self, run_id: str) -> None:
        """Forget the run's log (its record was deleted)."""
        self._logs.pop(run_id, None)
