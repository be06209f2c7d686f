"""Ports: the only ways the rollout touches the world.

The real adapters (``aws.py`` over boto3, ``kube.py`` over the official
kubernetes client) and the simulator implement these. The engine never knows
which world it runs in. Every read is a *list* (paginated), never a call per
node, so a reconcile costs a constant number of calls at any fleet size.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Optional, Protocol, Sequence

from .model import AutoScalingGroup, Node, Pod, PodDisruptionBudget, RolloutIntent, ScalingActivity, Taint


class Throttled(Exception):
    """A call the API kept throttling after the adapter's own retries (botocore
    adaptive mode, client backoff). Transient: the rollout retries it next cycle."""


class EvictionResult(Enum):
    EVICTED = "evicted"
    BLOCKED = "blocked"      # 429: a PodDisruptionBudget says not now; back off and retry
    GONE = "gone"            # 404: the pod is already gone


@dataclass(frozen=True)
class ClusterEvent:
    """A Kubernetes Event (events.k8s.io/v1) about a node or a pod: why the rollout does what it does.

    ``name`` is stable for one (object, reason, subject) of one rollout, so a rerun after a
    crash finds the Event it created before; ``count`` > 1 is a repeat: the adapter updates
    the Event's ``series`` instead of creating another one (what client-go's recorder does).
    """

    name: str
    namespace: str                 # the pod's namespace; "default" for a node (cluster-scoped)
    kind: str                      # Node | Pod
    object_name: str
    object_namespace: str          # "" for a node
    object_uid: Optional[str]      # a node's Events carry its name as uid (as kubelet's do; kubectl describe finds them by it)
    reason: str                    # CamelCase, e.g. RolloutWaitingForJobs
    note: str                      # the message a person reads in kubectl describe
    type: str = "Normal"           # Normal | Warning
    action: str = "Drain"          # what the rollout did or does about the object
    count: int = 1
    first_seen: float = 0.0
    last_seen: float = 0.0


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class CloudPort(Protocol):
    """Auto Scaling as kiln needs it."""

    def list_groups(self, cluster: str) -> list[AutoScalingGroup]:
        """Every ASG tagged for ``cluster`` with its instances (one paginated describe)."""

    def set_capacity(self, asg: str, *, desired: Optional[int] = None, max_size: Optional[int] = None,
                     raise_only: bool = False) -> None:
        """Set desired and/or max. A desired capacity is never written below the instances the group
        has now (a write must never make Auto Scaling scale in, which picks its own victims), and with
        ``raise_only`` never below the group's current desired (a snapshot may be stale: the
        autoscaler may have raised it since). Max is raised with desired when needed."""

    def terminate_instance(self, instance_id: str, *, decrement_desired: bool) -> None:
        """Terminate exactly this instance; with ``decrement_desired`` in the same call."""

    def set_launch_template_version(self, asg: str, launch_template_id: str, version: str, *,
                                    expected: Optional[str] = None) -> bool:
        """Set the group's launch template version. With ``expected``, only if the group (read back in
        the same call) still has that version; False when it has another one and nothing was written."""

    def set_instance_protection(self, asg: str, instance_ids: Sequence[str], protected: bool) -> None:
        """Protect (or unprotect) these instances from scale-in: any number of ids; the adapter splits
        them into as many requests as the API's limit needs."""

    def put_tags(self, asg: str, tags: Mapping[str, str]) -> None: ...

    def delete_tags(self, asg: str, keys: Sequence[str]) -> None: ...

    def list_scaling_activities(self, asg: str, since: float) -> list[ScalingActivity]:
        """The group's scaling activities that started at or after ``since``, newest first
        (one paginated DescribeScalingActivities; read only for a group short of instances)."""


class ClusterPort(Protocol):
    """The Kubernetes API as the rollout reads and changes nodes and pods."""

    def list_nodes(self, label_selector: str = "") -> list[Node]: ...

    def list_pods(self) -> list[Pod]:
        """Every pod in every namespace that is not finished (phase neither Succeeded nor Failed), paginated."""

    def list_pdbs(self) -> list[PodDisruptionBudget]: ...

    def cordon(self, node: str, taint: Taint, annotations: Mapping[str, str]) -> None:
        """Mark unschedulable, add ``taint`` and ``annotations`` (one patch)."""

    def uncordon(self, node: str, taint_key: str, annotation_keys: Sequence[str]) -> None: ...

    def annotate_node(self, node: str, annotations: Mapping[str, Optional[str]]) -> None:
        """Set annotations on a node (one merge patch); a None value removes that key.

        Used to keep cluster-autoscaler from scaling down new replacement
        nodes while the rollout still counts on them.
        """

    def evict(self, namespace: str, name: str) -> EvictionResult:
        """Evict through the Eviction API, which honours PodDisruptionBudgets."""

    def wait_for_change(self, timeout_seconds: float) -> None:
        """Block until a pod or a node changes (watches) or the timeout passes.

        This is how the rollout reacts promptly to a Job finishing, a new node
        turning Ready or losing its warm-up taint, without polling node by node.
        A node's change is one the rollout reads: Ready, taints, labels,
        unschedulable, added or removed (not a status heartbeat).
        """

    def record_event(self, event: ClusterEvent) -> None:
        """Create the Event, or (``count`` > 1, or it exists already) update its series.

        Best effort: the runner never lets a failed Event stop a rollout.
        """


class RolloutStore(Protocol):
    """The rollout's lock and intent: one Lease and what the rollout means to do, kept in the cluster."""

    def acquire_lock(self, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the rollout Lease; False while another holder's lease is live."""

    def release_lock(self, holder: str) -> None: ...

    def read_intent(self) -> Optional[RolloutIntent]: ...

    def write_intent(self, intent: RolloutIntent) -> None: ...

    def clear_intent(self) -> None: ...


class AutoscalerPort(Protocol):
    """cluster-autoscaler's Deployment, which the rollout may pause (scale to 0) and restores."""

    def get_autoscaler_replicas(self) -> Optional[int]:
        """Replicas of the cluster-autoscaler Deployment, None when there is none."""

    def scale_autoscaler(self, replicas: int) -> None: ...


class KubernetesPorts(ClusterPort, RolloutStore, AutoscalerPort, Protocol):
    """The three Kubernetes-side ports over one API connection, as the real adapter
    (:class:`~automation.rollout.kube.KubeCluster`) and the simulator each implement them
    in one class. Only :func:`~automation.rollout.runner.run_rollout` takes this; the
    runner keeps each part apart by type."""
