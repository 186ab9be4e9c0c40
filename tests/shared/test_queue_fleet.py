"""Queue limits across worker processes that share one store (SQLite, PostgreSQL).

Each run's step logs, to a file of its own, when it enters and leaves and in
which process; the test rebuilds from those the runs executing at once.
"""

from __future__ import annotations

from pathlib import Path

from runtime import Queue
from runtime._stores.base import SharedStore
from tests.durable._support.workflows import read_lines
from tests.shared._workflows import WORKFLOWS
from tests.shared.conftest import Fleet

WAIT = 90.0


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = most = 0
    for _, step in edges:  # at a tie a leave (-1) sorts before an enter (+1)
        now += step
        most = max(most, now)
    return most


def test_key_concurrency_holds_across_three_worker_processes(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_workers(3, concurrency=2)  # so that three runs at once take two processes or more
    client = fleet.runtime("client")
    wf = client.register(WORKFLOWS["tenant_job"])
    runs = []
    for index in range(24):
        tenant = f"tenant-{index % 2}"
        log = tmp_path / f"run{index}.log"
        run = wf.create_run()
        run.start_async(
            input_data={"value": tenant}, request_context={"log": str(log), "hold": 0.25}
        )
        runs.append((run, tenant, log))
    by_tenant: dict[str, list[tuple[float, float]]] = {"tenant-0": [], "tenant-1": []}
    pids: set[str] = set()
    for run, tenant, log in runs:
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        assert (result.queue, result.queue_key, result.priority) == ("tenants", tenant, 0)
        lines = read_lines(log)
        # Executed exactly once: never claimed by two workers.
        assert [line.split()[0] for line in lines] == ["enter", "leave"], lines
        by_tenant[tenant].append((float(lines[0].split()[1]), float(lines[1].split()[1])))
        pids.add(lines[0].split()[3])
    for tenant, intervals in by_tenant.items():
        assert most_at_once(intervals) <= 2, (tenant, sorted(intervals))
    everything = by_tenant["tenant-0"] + by_tenant["tenant-1"]
    assert most_at_once(everything) > 2  # the two tenants ran beside each other
    assert len(pids) > 1  # and more than one worker process took runs
    store = client.store
    assert isinstance(store, SharedStore)
    stats = [s for s in store.queue_stats() if s.queue == "tenants"]
    assert [(s.key, s.waiting, s.running) for s in stats] == [(None, 0, 0)]  # all done
    assert stats[0].limits == Queue("tenants", key_concurrency=2).limits


def test_concurrency_holds_across_processes_for_runs_a_both_runtime_starts(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A ``both`` runtime queues a run with a queue instead of holding it: limits still hold."""
    fleet.start_workers(2, concurrency=4)
    both = fleet.runtime("both", max_concurrent_runs=4)
    wf = both.register(WORKFLOWS["tenant_job"])
    queue = Queue("pair", concurrency=2)
    runs = []
    for index in range(12):
        log = tmp_path / f"both{index}.log"
        run = wf.create_run()
        run.start_async(
            input_data={"value": f"t{index}"},
            request_context={"log": str(log), "hold": 0.2},
            queue=queue,
        )
        runs.append((run, log))
    intervals = []
    for run, log in runs:
        assert run.wait(timeout=WAIT).status == "success"
        lines = read_lines(log)
        assert [line.split()[0] for line in lines] == ["enter", "leave"], lines
        intervals.append((float(lines[0].split()[1]), float(lines[1].split()[1])))
    assert most_at_once(intervals) <= 2
