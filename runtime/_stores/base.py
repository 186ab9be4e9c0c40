"""The store protocol: what every store of runs offers, and the record it keeps.

The registry actor is the store's writer for a run's updates; a run's first
(``pending``) record is created by ``start_async`` itself, so that the run is
recorded before the call returns. Reads may come from any thread. The stores
are :mod:`runtime._stores.memory` and :mod:`runtime._stores.sqlite`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "RecoverableStore",
    "SnapshotRecord",
    "SnapshotStore",
]


class SnapshotRecord(NamedTuple):
    """One stored snapshot: the encoded bytes and the fields queries filter on.

    A named tuple rather than a dataclass: one is built at every transition of
    every run, and a tuple is the cheapest immutable value to build.

    Attributes:
        run_id: The run's id.
        workflow_id: The run's workflow.
        seq: The snapshot's sequence number within its run; higher is newer.
        status: The run's status in this snapshot.
        data: The snapshot as encoded by :func:`runtime._snapshot.encode`.
        created_at: When the run was started (epoch seconds).
        updated_at: When this snapshot was taken (epoch seconds).
        trace_id: The run's trace id.
    """

    run_id: str
    workflow_id: str
    seq: int
    status: str
    data: bytes
    created_at: float
    updated_at: float
    trace_id: str


@runtime_checkable
class SnapshotStore(Protocol):
    """What the runtime needs from a snapshot store.

    Attributes:
        durable: Whether records outlive the process. With a durable store a
            run waits for each snapshot to be committed before its next step,
            and runs left unfinished are resumed by the next runtime.
    """

    durable: bool

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; return ``False`` (and change nothing) if its id is taken.

        On a durable store the record is committed when this returns.
        """
        ...

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Store newer snapshots of existing runs; call ``on_commit`` once they are stored.

        A record whose ``seq`` is not above the stored one's, or for a run whose
        stored status is terminal, changes nothing: a run never goes back.
        ``on_commit`` is never called for records that are not stored: a write
        that fails for a passing reason (a full disk) is tried again until it
        is stored; one the store refuses for good calls ``on_error`` instead.
        """
        ...

    def replace(self, record: SnapshotRecord, expected_seq: int) -> bool:
        """Store ``record`` only if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set for changes that race (two resumes of one suspended
        run, a resume and a cancel): exactly one caller wins. It fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs, or
        its stored status is terminal. On a durable store the record is
        committed when this returns ``True``.
        """
        ...

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``. Safe from any thread."""
        ...

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[SnapshotRecord], int]:
        """Records newest first (by ``created_at``), filtered, and how many match in all."""
        ...

    def delete(self, run_id: str) -> bool:
        """Delete a run's record; return whether there was one."""
        ...

    def prune(
        self,
        *,
        ended_before: float | None = None,
        keep: int | None = None,
        status: str | None = None,
    ) -> int:
        """Delete runs that have ended; return how many.

        Only ``success``, ``failed`` and ``canceled`` runs are ever deleted
        (with ``status``, only runs of that status): a run that is pending,
        running, waiting or suspended is kept whatever its age.

        Args:
            ended_before: Delete those whose last change is older than this
                epoch time.
            keep: Then keep at most this many of those left, the newest.
            status: Only runs of this terminal status.
        """
        ...

    def unfinished(self) -> list[SnapshotRecord]:
        """The newest records of runs that are ``pending``, ``running`` or ``waiting``."""
        ...

    def close(self) -> None:
        """Stop writing; records stay readable."""
        ...


@runtime_checkable
class RecoverableStore(SnapshotStore, Protocol):
    """A durable store that knows which runs lost their owner, and hands them over."""

    def orphans(
        self, workflow_ids: Sequence[str] | None = None
    ) -> list[tuple[SnapshotRecord, str | None]]:
        """Unfinished runs whose owner is gone, each with that owner's id."""
        ...

    def claim(self, run_id: str, previous_owner: str | None) -> bool:
        """Take over a run if its owner is still ``previous_owner``."""
        ...
