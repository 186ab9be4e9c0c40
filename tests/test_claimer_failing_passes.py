"""The claimer says a streak of failed passes ended only once a pass did what they could not.

A pass poked in between (a cancel hint, a resume hint) may only read the store:
it must not count as the end of a streak of failed claims, which the next
failure would then say had begun again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from runtime import SQLiteStore, StoreUnavailableError
from tests._support import wait_until
from tests.test_claimer_hand_back import claimer_of
from tests.test_store_contract import rec


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_poked_pass_that_only_reads_does_not_end_a_streak_of_failed_claims(
    tmp_path: Path, _structlog_reset: None
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    store.create(rec("r1"), hold=False)
    refusing = threading.Event()
    refusing.set()
    claim, cancel_requests = store.claim, store.cancel_requests
    looks = [0]

    def refused_claim(*args: Any, **kwargs: Any) -> Any:
        if refusing.is_set():
            raise StoreUnavailableError("refused for the test")
        return claim(*args, **kwargs)

    def counted_cancel_requests() -> list[str]:
        looks[0] += 1
        return cancel_requests()

    store.claim = refused_claim  # type: ignore[method-assign]
    store.cancel_requests = counted_cancel_requests  # type: ignore[method-assign]
    taken: list[str] = []
    with capture_logs() as logs:
        claimer = claimer_of(
            store, lambda claimed, _generation: taken.extend(c.record.run_id for c in claimed)
        )
        try:
            wait_until(lambda: _events(logs, "claim_pass_failed"), what="a pass fails")
            for _ in range(3):
                # A cancel hint, within the pause after a failed pass: the pass it brings
                # at once looks for cancels, and must try the claim again too.
                seen = looks[0]
                claimer.poke("cancel")
                wait_until(lambda seen=seen: looks[0] > seen, what="the poked pass")
                wait_until(claimer.idle, what="the poked pass ends")
            assert _events(logs, "claim_pass_recovered") == []
            assert len(_events(logs, "claim_pass_failed")) == 1
            refusing.clear()
            wait_until(lambda: taken == ["r1"], what="the claim once the store takes it")
            # Said once the pass ends: after the claim has handed the run on.
            wait_until(lambda: _events(logs, "claim_pass_recovered"), what="the streak ends")
            [recovered] = _events(logs, "claim_pass_recovered")
            assert recovered["failed_passes"] >= 4, recovered  # the first, and each poked one
            assert len(_events(logs, "claim_pass_failed")) == 1
        finally:
            claimer.stop(5)
            store.close()


def test_a_reap_the_store_refuses_does_not_keep_the_pass_from_claiming(
    tmp_path: Path, _structlog_reset: None
) -> None:
    # A reap is a write: while the store refused writes, every pass stopped at its reap
    # (tried again at each, as it was due), so no pass claimed, looked for cancel requests
    # or wake times until the refusal ended. The rest of the pass goes on now, and the
    # reap is tried again at the next.
    store = SQLiteStore(tmp_path / "runs.db")
    store.create(rec("r1"), hold=False)
    reap = store.reap
    reaps = [0]

    def refused_reap(*args: Any, **kwargs: Any) -> Any:
        reaps[0] += 1
        if reaps[0] <= 3:
            raise StoreUnavailableError("refused for the test")
        return reap(*args, **kwargs)

    store.reap = refused_reap  # type: ignore[method-assign]
    taken: list[tuple[str, int]] = []  # each run claimed, with the reaps tried by then

    def take(claimed: Any, _generation: int) -> None:
        taken.extend((c.record.run_id, reaps[0]) for c in claimed)

    with capture_logs() as logs:
        claimer = claimer_of(store, take)
        try:
            wait_until(lambda: taken, what="the claim beside the refused reap")
            # Claimed by the first pass, whose reap was refused (without: by the fourth).
            assert taken == [("r1", 1)]
            wait_until(lambda: reaps[0] > 3, what="the reap tried again, pass after pass")
            wait_until(lambda: _events(logs, "claim_pass_recovered"), what="the streak ends")
            [failed] = _events(logs, "claim_pass_failed")
            assert "refused for the test" in failed["error"]
        finally:
            claimer.stop(5)
            store.close()
