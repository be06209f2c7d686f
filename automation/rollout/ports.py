"""Ports: the only ways the rollout touches the world.

The real adapters (``aws.py`` over boto3, ``kube.py`` over the official
kubernetes client) and the simulator implement these. The engine never knows
which world it runs in. Every read is a *list* (paginated), never a call per
node, so a reconcile costs a constant number of calls at any fleet size.
"""

from __future__ import annotations

from enum import Enum
from typing import Mapping, Optional, Protocol, Sequence

from .model import AutoScalingGroup, Node, Pod, PodDisruptionBudget, RolloutIntent, Taint


class Throttled(Exception):
    """A call the API kept throttling after the adapter's own retries (botocore
    adaptive mode, client backoff). Transient: the rollout retries it next cycle."""


class EvictionResult(Enum):
    EVICTED = "evicted"
    BLOCKED = "blocked"      # 429: a PodDisruptionBudget says not now; back off and retry
    GONE = "gone"            # 404: the pod is already gone


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class CloudPort(Protocol):
    """Auto Scaling as kiln needs it."""

    def list_groups(self, cluster: str) -> list[AutoScalingGroup]:
        """Every ASG tagged for ``cluster`` with its instances (one paginated describe)."""

    def set_capacity(self, asg: str, *, desired: Optional[int] = None, max_size: Optional[int] = None) -> None: ...

    def terminate_instance(self, instance_id: str, *, decrement_desired: bool) -> None:
        """Terminate exactly this instance; with ``decrement_desired`` in the same call."""

    def set_launch_template_version(self, asg: str, launch_template_id: str, version: str) -> None: ...

    def set_instance_protection(self, asg: str, instance_ids: Sequence[str], protected: bool) -> None: ...

    def put_tags(self, asg: str, tags: Mapping[str, str]) -> None: ...

    def delete_tags(self, asg: str, keys: Sequence[str]) -> None: ...


class ClusterPort(Protocol):
    """The Kubernetes API as kiln needs it."""

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

    def delete_node(self, node: str) -> None: ...

    def get_autoscaler_replicas(self) -> Optional[int]:
        """Replicas of the cluster-autoscaler Deployment, None when there is none."""

    def scale_autoscaler(self, replicas: int) -> None: ...

    def acquire_lock(self, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the rollout Lease; False while another holder's lease is live."""

    def release_lock(self, holder: str) -> None: ...

    def read_intent(self) -> Optional[RolloutIntent]: ...

    def write_intent(self, intent: RolloutIntent) -> None: ...

    def clear_intent(self) -> None: ...

    def wait_for_pod_change(self, timeout_seconds: float) -> None:
        """Block until any pod changes (a watch) or the timeout passes.

        This is how the rollout reacts promptly to a Job finishing without
        polling node by node.
        """
