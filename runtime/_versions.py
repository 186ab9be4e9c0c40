"""Workflow versions: which registered definition a run goes on with.

A run records the fingerprint of the plan it started on (and the version
label, if the workflow had one) in its first snapshot. A runtime may hold
several definitions of one workflow id at once, by fingerprint; a run goes on
(resumes, wakes, is recovered, restarts) only on the one with its
fingerprint. Without one the run is left as it is, and the caller is told
with :class:`~runtime._errors.WorkflowVersionError`.
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime._errors import WorkflowVersionError
from runtime._plan import ExecutionPlan
from runtime._snapshot import Snapshot

__all__ = ["matching_plan", "started_on", "version_error"]


def matching_plan(
    snapshot: Snapshot,
    current: ExecutionPlan | None,
    versions: Mapping[str, ExecutionPlan],
) -> ExecutionPlan | None:
    """The definition a run goes on with, or ``None`` if none registered has its fingerprint.

    A snapshot written before versions existed has no fingerprint: it goes
    on with ``current`` if its recorded steps and place fit that plan (the
    best that can be told without one), and waits otherwise.

    Args:
        snapshot: The run's snapshot.
        current: The definition new runs of the workflow use here, if any.
        versions: Every registered definition of the workflow, by fingerprint.
    """
    fingerprint = snapshot.get("fingerprint")
    if fingerprint is None:
        return current if current is not None and _fits(snapshot, current) else None
    if current is not None and current.fingerprint == fingerprint:
        return current
    return versions.get(fingerprint)


def _fits(snapshot: Snapshot, plan: ExecutionPlan) -> bool:
    """Whether a run's place and recorded steps exist in ``plan``."""
    return 0 <= snapshot["next_step"] <= len(plan.nodes) and all(
        path in plan.paths for path in snapshot["steps"]
    )


def started_on(snapshot: Snapshot) -> str:
    """How a message names the definition a run started on: its version and fingerprint."""
    version, fingerprint = snapshot.get("version"), snapshot.get("fingerprint")
    if fingerprint is None:  # recorded before versions were: its steps no longer fit
        return "a definition from before versions were recorded, with other steps"
    if version is None:
        return f"fingerprint {fingerprint}"
    return f"version {version!r} (fingerprint {fingerprint})"


def version_error(
    snapshot: Snapshot, versions: Mapping[str, ExecutionPlan]
) -> WorkflowVersionError:
    """The error for a run whose definition is not registered: it names what is."""
    version, fingerprint = snapshot.get("version"), snapshot.get("fingerprint")
    known = [plan.label for plan in versions.values()]
    registered = ", ".join(known) if known else "no definition"
    return WorkflowVersionError(
        f"run {snapshot['run_id']!r} of workflow {snapshot['workflow_id']!r} started on "
        f"{started_on(snapshot)}, and this runtime has registered {registered}: the run is "
        "left as it is; register the definition it started on beside the new one "
        "(runtime.register(old_workflow)) and try again",
        workflow_id=snapshot["workflow_id"],
        version=version,
        fingerprint=fingerprint,
        registered=[(plan.version, plan.fingerprint) for plan in versions.values()],
        run_id=snapshot["run_id"],
    )
