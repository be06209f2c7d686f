"""Pod filters, in the style of kubectl's ``pkg/drain``: each filter looks at one
pod and either passes (None) or answers with its own verdict and reason.

:func:`classify_pod` runs the filters in order; the first verdict wins, and a
pod no filter claims is evicted through the Eviction API. The drain, the trim
of surplus nodes and the runner's last look before a terminate all judge pods
through this one function, so a rule lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .model import ANNOTATION_DEADLINE_EXTENSION, RESOURCE_GPU, Pod

#: Owner kinds (of a pod's controller ownerReference) whose pods are Jobs to
#: the rollout: waited for until the deadline, force-evicted after it. Besides
#: batch/v1 Job: the Kubeflow Training Operator's jobs and Argo Workflows, whose
#: pods name them as owner directly. Kubeflow Trainer v2 TrainJob pods are owned
#: by a batch Job (through a JobSet), so "Job" covers them. RayCluster is left
#: out on purpose (a Ray cluster may be a long-lived service); add it with
#: RolloutOptions.job_owner_kinds / --also-job-kinds RayCluster.
DEFAULT_JOB_OWNER_KINDS: frozenset[str] = frozenset({
    "Job", "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob", "Workflow"})

#: Owner kinds that can never be Job kinds: their pods are never evicted at all.
NEVER_EVICTED_OWNER_KINDS: frozenset[str] = frozenset({"DaemonSet", "Node"})

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# What the drain does about a pod.
IGNORE = "ignore"        # never blocks the node, never evicted (finished, DaemonSet, mirror)
LEAVING = "leaving"      # already terminating: the node must outlive it, nothing to do
WAIT = "wait"            # a Job (or bare pod): waited for until its deadline, forced after it
EVICT = "evict"          # a controller's pod: evicted through the Eviction API (PDBs honoured)


@dataclass(frozen=True)
class PodVerdict:
    action: str          # IGNORE | LEAVING | WAIT | EVICT
    reason: str          # why, for a person (kubectl drain prints the same kind of reason)


PodFilter = Callable[[Pod, frozenset], Optional[PodVerdict]]

_FINISHED = PodVerdict(IGNORE, "finished")
_MIRROR = PodVerdict(IGNORE, "mirror pod of a static pod (the kubelet owns it)")
_DAEMONSET = PodVerdict(IGNORE, "DaemonSet pod (runs on every node; goes with the node)")
_LEAVING = PodVerdict(LEAVING, "terminating (the node waits until it is gone)")
_BARE = PodVerdict(WAIT, "bare pod: no controller would recreate it, so it is waited for like a Job")


def finished_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _FINISHED if pod.phase in ("Succeeded", "Failed") else None


def mirror_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _MIRROR if pod.owner_kind == "Node" or MIRROR_ANNOTATION in pod.annotations else None


def daemonset_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _DAEMONSET if pod.owner_kind == "DaemonSet" else None


def terminating_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _LEAVING if pod.deleting else None


_JOB = PodVerdict(WAIT, "owned by a Job kind: waited for until its deadline, evicted after it")
_CONTROLLED = PodVerdict(EVICT, "owned by a controller that recreates it: evicted through the Eviction API")


def job_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _JOB if pod.owner_kind in job_kinds else None


def unmanaged_filter(pod: Pod, job_kinds: frozenset) -> Optional[PodVerdict]:
    return _BARE if pod.owner_kind is None else None


#: In order: the first filter with a verdict decides.
FILTERS: tuple[PodFilter, ...] = (finished_filter, mirror_filter, daemonset_filter, terminating_filter,
                                  job_filter, unmanaged_filter)


def classify_pod(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> PodVerdict:
    """What the drain does about ``pod``, and why."""
    cached = _memo.get(id(pod))
    if cached is not None and cached[0] is pod and cached[1] is job_kinds:
        return cached[2]
    for check in FILTERS:
        verdict = check(pod, job_kinds)
        if verdict is not None:
            break
    else:
        verdict = _CONTROLLED
    if len(_memo) >= _MEMO_LIMIT:
        _memo.clear()
    _memo[id(pod)] = (pod, job_kinds, verdict)
    return verdict


# Pods are immutable: a pod object seen again (the simulator hands out the same objects
# while nothing changes) gets its verdict back without running the filters. The entry
# holds the pod, so its id cannot be reused while cached.
_memo: dict[int, tuple[Pod, frozenset, PodVerdict]] = {}
_MEMO_LIMIT = 200_000


def blocks_drain(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pod the rollout waits for (never interrupted before its deadline)."""
    return classify_pod(pod, job_kinds).action == WAIT


def needs_eviction(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pod the rollout evicts through the Eviction API once no Job holds the node."""
    return classify_pod(pod, job_kinds).action == EVICT


def still_leaving(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pod already terminating, which the node must outlive."""
    return classify_pod(pod, job_kinds).action == LEAVING


def holds_node(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """Anything that keeps a node from being terminated now."""
    return classify_pod(pod, job_kinds).action != IGNORE


def is_terminal(pod: Pod) -> bool:
    return pod.phase in ("Succeeded", "Failed")


def is_job(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    return pod.owner_kind in job_kinds


def unreadable_extension(pod: Pod) -> Optional[str]:
    """Why the pod's deadline-extension annotation cannot be read as a number of seconds; None when
    it is absent, empty or a number (a negative one means no extension). Fail closed: a Job whose
    owner asked for more time in a way kiln cannot read is never force-evicted (see the drain)."""
    value = pod.annotations.get(ANNOTATION_DEADLINE_EXTENSION) if pod.annotations else None
    if value is None or not str(value).strip():
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return f"{ANNOTATION_DEADLINE_EXTENSION}={_shown(value)} is not a number of seconds"
    if seconds != seconds or seconds == float("inf"):
        return f"{ANNOTATION_DEADLINE_EXTENSION}={_shown(value)} is not a finite number of seconds"
    return None


def _shown(value: object, limit: int = 40) -> str:
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 2] + "…'"


def pod_deadline(pod: Pod, deadline_at: float) -> float:
    """The rollout's deadline for this pod, extended by its annotation (or its Job's) if any.

    A negative extension counts as none. One that is not a finite number of seconds
    (:func:`unreadable_extension`) gives the rollout's own deadline here — the drain never
    forces such a pod, it holds the node and names it instead — never an error.
    """
    extension = pod.annotations.get(ANNOTATION_DEADLINE_EXTENSION) if pod.annotations else None
    if not extension:
        return deadline_at
    try:
        seconds = float(extension)
    except (TypeError, ValueError):
        return deadline_at
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return deadline_at
    return deadline_at + max(0.0, seconds)


def wants_job_slot(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pending pod the rollout should find capacity for: a Job pod or one asking for the scarce resource."""
    return (pod.phase == "Pending" and pod.node_name is None and not pod.deleting
            and (is_job(pod, job_kinds) or pod.requests.get(RESOURCE_GPU, 0) > 0))


def uses_slot(pod: Pod, job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pod on a node that takes one of its Job slots (GPUs)."""
    return not is_terminal(pod) and (is_job(pod, job_kinds) or pod.requests.get(RESOURCE_GPU, 0) > 0)
