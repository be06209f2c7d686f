"""The one place the termination handler borrows from the rollout.

A node that leaves by any door must treat a Job exactly as kiln's rollout does:
the same owner kinds are Jobs (bare pods count too), the same pods are evicted
through the Eviction API, the same deadline-extension annotation stretches a
Job's time. So the handler does not restate those rules; it imports them here,
and nowhere else: the rollout's pod filters (``automation/rollout/pods.py``,
kubectl ``pkg/drain`` style, each returning its reason) judge a pod for both.

Also borrowed: the rollout's plain model types (``Node``, ``Pod``, ...), its
conversions from the API's JSON to them, and its cordon taint key (the
handler's level-triggered sign that the rollout drained a node itself).
"""

from __future__ import annotations

from automation.rollout.pods import (  # noqa: F401 - re-exported
    DEFAULT_JOB_OWNER_KINDS,
    classify_pod,
    NEVER_EVICTED_OWNER_KINDS,
    blocks_drain,
    needs_eviction,
    pod_deadline,
    still_leaving,
    unreadable_extension,
)
from automation.rollout.kube import (  # noqa: F401 - re-exported
    LIVE_PODS,
    instance_id_from_provider_id,
    node_from_json,
    parse_time,
    pdb_from_json,
    pod_from_json,
    with_job_deadline_extensions,
)
from automation.rollout.model import (  # noqa: F401 - re-exported
    ANNOTATION_DEADLINE_EXTENSION,
    TAINT_ROLLOUT,
    Node,
    Pod,
    PodDisruptionBudget,
    Taint,
)

__all__ = [
    "ANNOTATION_DEADLINE_EXTENSION", "DEFAULT_JOB_OWNER_KINDS", "LIVE_PODS", "NEVER_EVICTED_OWNER_KINDS",
    "TAINT_ROLLOUT", "Node", "Pod", "PodDisruptionBudget", "Taint", "blocks_drain", "classify_pod",
    "instance_id_from_provider_id",
    "is_job", "needs_eviction", "node_from_json", "parse_time", "pdb_from_json", "pod_deadline", "pod_from_json",
    "still_leaving", "unreadable_extension", "with_job_deadline_extensions",
]


def is_job(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pod a terminating node waits for: the rollout's ``blocks_drain`` (Job kinds and bare pods,
    not finished, not a mirror pod)."""
    return blocks_drain(pod, job_kinds)
