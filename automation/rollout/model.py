"""What the rollout engine sees of the world: plain, frozen values.

A :class:`Snapshot` is read fresh on every reconcile (level-triggered): nothing
in it is remembered between cycles. The only state kiln persists is the
rollout's *intent* (:class:`RolloutIntent`, :class:`GroupIntent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

# The labels, taints, annotations and tags kiln owns, and Taint, live in infra/labels.py (their one home);
# the rollout's modules take them from here.
from infra.labels import (ANNOTATION_DEADLINE_EXTENSION, ANNOTATION_ROLLOUT_PROTECTED,  # noqa: F401
                          CA_SCALE_DOWN_DISABLED, LABEL_MODEL_VERSION, LABEL_NODE_GROUP, TAG_CLUSTER,
                          TAG_INTENT_PREFIX, TAG_NODE_GROUP, TAG_ROLLED_BACK_FROM, TAG_ROLLED_BACK_REASON,
                          TAG_ROLLED_BACK_TO, TAINT_ROLLOUT, TAINT_WARMING, Taint)

RESOURCE_GPU = "nvidia.com/gpu"                 # the scarce resource surge is sized by
# The warm-up DaemonSet (infra/warmup.py NAME): its pod failing on a new node marks the node bad.
WARMUP_DAEMONSET = "kiln-model-warmup"


@dataclass(frozen=True)
class Instance:
    id: str
    zone: str
    launch_template_version: Optional[str]  # as the ASG reports it for this instance
    lifecycle_state: str = "InService"      # Pending, InService, Terminating, ...
    healthy: bool = True
    protected_from_scale_in: bool = False
    image_id: Optional[str] = None
    launched_at: Optional[float] = None     # seconds on the injected clock, when the adapter knows it


@dataclass(frozen=True)
class AutoScalingGroup:
    name: str
    node_group: str
    zone: str
    min_size: int
    max_size: int
    desired_capacity: int
    launch_template_id: str
    launch_template_version: str            # the group's *current* version (the target)
    instances: tuple[Instance, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    name: str
    instance_id: Optional[str]              # from spec.providerID aws:///<zone>/<instance-id>
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = False
    created_at: float = 0.0                 # seconds on the injected clock
    allocatable: Mapping[str, float] = field(default_factory=dict)  # e.g. {"nvidia.com/gpu": 4}


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node_name: Optional[str]                # None while Pending and unscheduled
    phase: str                              # Pending, Running, Succeeded, Failed, Unknown
    owner_kind: Optional[str] = None        # Job, ReplicaSet, StatefulSet, DaemonSet, Node (mirror), ...
    owner_name: Optional[str] = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    deleting: bool = False                  # deletionTimestamp set
    requests: Mapping[str, float] = field(default_factory=dict)      # summed over containers
    node_selector: Mapping[str, str] = field(default_factory=dict)
    uid: Optional[str] = None               # metadata.uid: what an Event about the pod refers to
    # Why a container of the pod cannot run, as kubectl shows it (Init:CrashLoopBackOff, Init:Error,
    # ImagePullBackOff, ...); None while nothing failed. A failed warm-up pod marks its new node bad.
    failure: Optional[str] = None
    # The pod's Ready condition; None when the reader does not know it (counted as ready).
    ready: Optional[bool] = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PodDisruptionBudget:
    namespace: str
    name: str
    match_labels: Mapping[str, str]
    disruptions_allowed: int


@dataclass(frozen=True)
class ScalingActivity:
    """One Auto Scaling activity of a group (``DescribeScalingActivities``), as the rollout reads it:
    a launch that failed says why in AWS's own words (``status_message``)."""

    group: str
    activity_id: str
    status: str                             # Successful, Failed, Cancelled, InProgress, PreInService, ...
    description: str = ""                   # "Launching a new EC2 instance: i-...", "Terminating ..."
    status_message: str = ""                # for a failure: AWS's reason (InsufficientInstanceCapacity ...)
    started_at: float = 0.0                 # seconds on the injected clock

    @property
    def is_launch(self) -> bool:
        return self.description.startswith("Launching")

    @property
    def failed(self) -> bool:
        return self.status in ("Failed", "Cancelled")


@dataclass(frozen=True)
class Snapshot:
    """The world as read at ``now`` with a number of list calls independent of the fleet's size."""

    now: float
    groups: tuple[AutoScalingGroup, ...]
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    pdbs: tuple[PodDisruptionBudget, ...] = ()
    autoscaler_replicas: Optional[int] = None   # None: no cluster-autoscaler Deployment found
    # Recent scaling activities of the groups that have fewer instances than they want (a launch
    # outstanding or failing); read only for those groups, so a healthy cycle costs nothing extra.
    activities: tuple[ScalingActivity, ...] = ()


@dataclass(frozen=True)
class GroupIntent:
    """What must be restored on one ASG, stored as tags on that ASG."""

    asg: str
    original_desired: int
    original_max: int
    target_version: str
    previous_version: str


@dataclass(frozen=True)
class RolloutIntent:
    """The rollout's intent: all kiln persists (in the cluster), besides GroupIntent tags."""

    rollout_id: str
    started_at: float
    deadline_at: float
    strategy: str
    surge: Optional[str]                    # "3" or "25%"; None = on demand
    pause_autoscaler: bool
    autoscaler_replicas: Optional[int]      # replicas to restore when paused
    ready_timeout_seconds: float
    phase: str = "rolling"                  # rolling | rolling_back
    groups: tuple[GroupIntent, ...] = ()
    boot_timeout_seconds: float = 600.0     # a new instance whose node has not registered by then is bad
    launch_failure_timeout_seconds: float = 900.0  # launches failing this long stop the rollout
    rollback_reason: str = ""               # why the phase became rolling_back (kept for the report)
