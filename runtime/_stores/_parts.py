"""What a batch of saves does to the parts of snapshots kept in parts: shared by both SQL stores.

A store that keeps a snapshot's parts apart (SQLite's ``run_parts``,
PostgreSQL's ``callboard_run_parts``) writes a row's head beside the run and
the parts by ``(run_id, lineage, key)``. Each record carries how it changed
since its encoder's record before (:class:`~runtime._stores.base.SnapshotParts`);
:func:`plan_parts` folds the records of one transaction, in the order they were
saved, into what to write per ``(run_id, lineage)``: clear that lineage's parts
first or not, then write or delete each key. The SQL stays in each store.
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime._snapshot import split_parts
from runtime._stores.base import SnapshotRecord

__all__ = ["PartWrites", "plan_parts"]


class PartWrites:
    """What one transaction does to a run's parts of one lineage: clear all first, then each.

    Attributes:
        clear: Whether every part of the lineage (and of any lineage but the
            row's own) goes before the new ones are written.
        parts: Each key's new bytes, or ``None`` for a part that goes.
    """

    __slots__ = ("clear", "parts")

    def __init__(self, clear: bool, parts: dict[str, bytes | None] | None = None) -> None:
        self.clear = clear
        self.parts: dict[str, bytes | None] = {} if parts is None else parts


def plan_parts(
    records: Iterable[SnapshotRecord], broken: set[int]
) -> dict[tuple[str, int], PartWrites]:
    """The part writes of these saved records, folded in order; ``broken`` is updated.

    The parts of a record are written whatever became of its row, under its
    lineage: they are what its encoder's next change goes on top of, and a read
    joins a row only with the parts of the row's own lineage, so a stale
    record's parts are never read. A record kept whole drops the part writes of
    its run made earlier in the batch (they would not be the row's any more),
    and their lineages must write all their parts next time.

    Args:
        records: The saved records whose rows were written or were stale (not
            those fenced off: another worker's row never reads them), in the
            order they were saved.
        broken: Lineages whose parts missed a refused save: their next record
            writes every part. Updated in place (the caller keeps a copy until
            the transaction commits).

    Returns:
        The writes by ``(run_id, lineage)``.
    """
    writes: dict[tuple[str, int], PartWrites] = {}
    for record in records:
        change = record.parts
        if change is None:
            for key in [key for key in writes if key[0] == record.run_id]:
                del writes[key]
                broken.add(key[1])
            continue
        key = (record.run_id, change.lineage)
        if change.base_seq is not None and change.lineage not in broken:
            parts = writes.setdefault(key, PartWrites(clear=False)).parts
            for part_key in change.dropped:
                parts[part_key] = None
            parts.update(change.changed)
            continue
        if change.base_seq is None:
            every = list(change.changed)
        else:  # its lineage's parts missed a refused save: write them all
            every = split_parts(record.data, len(change.head))
            broken.discard(change.lineage)
        writes[key] = PartWrites(clear=True, parts=dict(every))
    return writes
