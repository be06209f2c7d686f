"""The rollout's decisions: snapshot + intent + now -> commands. Pure.

Nothing here performs I/O or remembers anything between calls: every cycle the
runner reads the world (:class:`~automation.rollout.model.Snapshot`), the
persisted intent and the group intents, and :func:`decide` answers with the
commands for this cycle. Re-running it on the same world gives the same
answer, which is what makes the rollout resumable after a crash.

Structure, after Karpenter's disruption controller: stages that *propose*, in
a fixed order, each returning a frozen result that the next stage takes as an
argument (nothing is mutated behind another stage's back)::

    fleet    = read_fleet(snapshot, intent, group_intents, job_kinds)      # who is old, new, pending
    health   = assess_health(fleet, intent, strategy, first_seen)         # proven? bad? launches failing?
    new      = plan_new_nodes(fleet, health)                              # uncordon, protect, replace bad ones
    drain    = plan_drain(fleet, health, intent, strategy)                # cordon, evict, terminate; waits, blocks
    capacity = plan_capacity(fleet, health, drain, intent, strategy)      # desired / max per group
    versions = plan_versions(fleet, health, capacity, strategy)           # pin to the proven version until proof
    trim     = plan_trim(fleet, health, drain, capacity, intent)          # back to the original size
    verdict  = judge(fleet, health, drain, trim, intent, strategy)        # done, rollback, blocked, failed

**Proof before removal.** In a group, no old node is cordoned, drained or
terminated and no Job is force-evicted until a replacement in *that* group is
proven: Ready, labelled with a model version and past the warm-up taint. Until
then old nodes stay schedulable, so Jobs that arrive start as they would with
no rollout, and a bad AMI costs nothing but the canary.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from .model import (
    ANNOTATION_ROLLOUT_PROTECTED,
    CA_SCALE_DOWN_DISABLED,
    LABEL_MODEL_VERSION,
    LABEL_NODE_GROUP,
    RESOURCE_GPU,
    TAG_INTENT_PREFIX,
    TAG_ROLLED_BACK_FROM,
    TAG_ROLLED_BACK_REASON,
    TAG_ROLLED_BACK_TO,
    TAINT_ROLLOUT,
    TAINT_WARMING,
    WARMUP_DAEMONSET,
    AutoScalingGroup,
    GroupIntent,
    Instance,
    Node,
    Pod,
    PodDisruptionBudget,
    RolloutIntent,
    ScalingActivity,
    Snapshot,
    Taint,
)
# The pod rules live in pods.py; these names stay importable from the engine for its callers
# (the runner, the dry-run prediction, the tests).
from .pods import (DEFAULT_JOB_OWNER_KINDS, EVICT, LEAVING, NEVER_EVICTED_OWNER_KINDS, WAIT, blocks_drain,  # noqa: F401
                   classify_pod, holds_node, is_job, is_terminal, needs_eviction, pod_deadline, still_leaving,
                   unreadable_extension, uses_slot, wants_job_slot)
from .strategies import Strategy, surge_nodes

ROLLOUT_TAINT = Taint(key=TAINT_ROLLOUT, value="old", effect="NoSchedule")
SURPLUS_TAINT = Taint(key=TAINT_ROLLOUT, value="surplus", effect="NoSchedule")   # a new node above the target size
GONE_STATES = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached"})

#: After its deadline, a node a PodDisruptionBudget keeps from draining gets this long for the
#: budget to yield (one is often 0 for the seconds a recreated pod takes to turn Ready);
#: then the rollout stops as ``blocked``.
BLOCKED_GRACE_SECONDS = 300.0
#: Give up (outcome ``failed``) this long after the last deadline of the nodes still to go
#: (each node's deadline is the rollout's, extended by its pods' annotations).
GRACE_AFTER_DEADLINE = 1800.0
ROLLED_BACK_REASON_MAX = 256     # an ASG tag value's limit

#: Words in a failed launch's message that say the launch template or its AMI is
#: unusable: waiting will not help, rolling back will. Anything else (capacity,
#: quotas, an unknown message) is waited on and then stops the rollout as failed.
INVALID_TEMPLATE_MARKERS = (
    "InvalidAMIID", "image id", "InvalidLaunchTemplate", "launch template", "Invalid launch template",
    "InvalidBlockDeviceMapping", "InvalidParameterCombination", "InvalidKeyPair", "InvalidUserData",
    "AMI is not", "not authorized for images",
)

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class WaitedPod:
    """A Job pod on a node being cordoned: the rollout waits for it until ``deadline``."""
    namespace: str
    name: str
    uid: Optional[str]
    deadline: float


@dataclass(frozen=True)
class Cordon:
    asg: str
    node: str
    surplus: bool = False        # a new node drained to bring the group back to its target size
    why: str = field(default="", compare=False, repr=False)
    waits_for: tuple[WaitedPod, ...] = field(default=(), compare=False, repr=False)   # told on each pod as an Event


@dataclass(frozen=True)
class Uncordon:
    asg: str
    node: str
    why: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class AnnotateNode:
    asg: str
    node: str
    annotations: tuple[tuple[str, Optional[str]], ...]


@dataclass(frozen=True)
class Evict:
    asg: str
    node: str
    namespace: str
    name: str
    job: bool = False
    forced: bool = False         # a Job pod past its deadline
    uid: Optional[str] = field(default=None, compare=False, repr=False)
    why: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Terminate:
    asg: str
    instance_id: str
    node: Optional[str]
    decrement: bool = True       # False only where a decrement would break the group's min size
    why: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class SetCapacity:
    asg: str
    desired: Optional[int] = None
    max_size: Optional[int] = None
    raise_only: bool = field(default=False, compare=False, repr=False)   # a raise: never write below the current desired


@dataclass(frozen=True)
class SetVersion:
    asg: str
    launch_template_id: str
    version: str
    # The version the group had in the snapshot: the runner writes only if it still has it (a
    # ``pulumi up`` may have published a newer one since, which a write would silently undo).
    expected: Optional[str] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Protect:
    asg: str
    instance_ids: tuple[str, ...]
    protected: bool


@dataclass(frozen=True)
class ScaleAutoscaler:
    replicas: int
    asg: Optional[str] = None


@dataclass(frozen=True)
class DeleteGroupIntent:
    asg: str


@dataclass(frozen=True)
class MarkRolledBack:
    """Tag the group with the finished rollback (outcome, read by the next run)."""
    asg: str
    from_version: str
    to_version: str
    reason: str


@dataclass(frozen=True)
class ClearRolledBack:
    asg: str


Command = (Cordon | Uncordon | AnnotateNode | Evict | Terminate | SetCapacity | SetVersion | Protect
           | ScaleAutoscaler | DeleteGroupIntent | MarkRolledBack | ClearRolledBack)


@dataclass(frozen=True)
class Note:
    """What the rollout says about a node or a pod; the runner turns it into a Kubernetes Event."""
    kind: str                    # Node | Pod
    namespace: str               # "" for a node
    name: str
    reason: str                  # CamelCase, e.g. RolloutWaitingForJobs
    message: str
    subject: str = ""            # what it is about, stable while the situation lasts (de-duplication key)
    uid: Optional[str] = None
    warning: bool = False


# --------------------------------------------------------------------------- stage 1: the fleet


@dataclass(frozen=True)
class GroupView:
    asg: AutoScalingGroup
    intent: GroupIntent
    target: str                              # the version instances must run
    old: tuple[Instance, ...]
    new: tuple[Instance, ...]
    slots_per_node: float
    labels: Mapping[str, str]                # node labels of the group, for pending pods' node selectors

    @property
    def name(self) -> str:
        return self.asg.name


@dataclass(frozen=True)
class Fleet:
    now: float
    rolling: bool
    groups: tuple[GroupView, ...]
    nodes_by_instance: Mapping[str, Node]
    pods_by_node: Mapping[str, Sequence[Pod]]         # read-only by convention
    pending: tuple[Pod, ...]                 # pending pods that want a Job slot
    pdbs: tuple[PodDisruptionBudget, ...]
    activities: Mapping[str, tuple[ScalingActivity, ...]]
    autoscaler_active: bool                  # cluster-autoscaler running and not paused by this rollout
    autoscaler_present: bool                 # a cluster-autoscaler exists (it takes sizing back at the end)
    job_kinds: frozenset
    run_started_at: float = 0.0              # when this run (process) started: a rerun's launch-failure clock
    pods: tuple[Pod, ...] = ()               # every pod listed (a budget's recovering replacements included)


def read_fleet(snapshot: Snapshot, intent: RolloutIntent, group_intents: Mapping[str, GroupIntent],
               job_kinds: frozenset = DEFAULT_JOB_OWNER_KINDS, run_started_at: Optional[float] = None) -> Fleet:
    """Sort instances into old and new per group, pods by node, and the pending Job pods."""
    rolling = intent.phase == "rolling"
    nodes_by_instance = {n.instance_id: n for n in snapshot.nodes if n.instance_id}
    by_node: dict[str, list[Pod]] = {}
    pending: list[Pod] = []
    for pod in snapshot.pods:
        if pod.node_name:
            on = by_node.get(pod.node_name)
            if on is None:
                by_node[pod.node_name] = [pod]
            else:
                on.append(pod)
        elif wants_job_slot(pod, job_kinds):
            pending.append(pod)
    groups = []
    for asg in sorted(snapshot.groups, key=lambda g: g.name):
        gi = group_intents.get(asg.name)
        if gi is None:
            continue
        # While a group is pinned to its proven version (see plan_versions) the target is the intent's.
        if not rolling:
            target = gi.previous_version
        elif asg.launch_template_version == gi.previous_version:
            target = gi.target_version
        else:
            target = asg.launch_template_version
        live = [i for i in asg.instances if is_live(i)]
        old = tuple(i for i in live if is_old(i, target))
        new = tuple(i for i in live if not is_old(i, target))
        slots, labels = _group_shape(asg, new + old, nodes_by_instance)
        groups.append(GroupView(asg=asg, intent=gi, target=target, old=old, new=new, slots_per_node=slots,
                                labels=labels))
    activities: dict[str, list[ScalingActivity]] = defaultdict(list)
    for activity in snapshot.activities:
        activities[activity.group].append(activity)
    present = bool(snapshot.autoscaler_replicas) or bool(intent.autoscaler_replicas)
    return Fleet(now=snapshot.now, rolling=rolling, groups=tuple(groups), nodes_by_instance=nodes_by_instance,
                 pods_by_node=by_node,
                 pending=tuple(sorted(pending, key=lambda p: (p.created_at, p.key))), pdbs=snapshot.pdbs,
                 activities={k: tuple(sorted(v, key=lambda a: -a.started_at)) for k, v in activities.items()},
                 autoscaler_active=not intent.pause_autoscaler and bool(snapshot.autoscaler_replicas),
                 autoscaler_present=present, job_kinds=job_kinds, pods=tuple(snapshot.pods),
                 run_started_at=intent.started_at if run_started_at is None else max(run_started_at, intent.started_at))


def _group_shape(asg: AutoScalingGroup, instances: Sequence[Instance],
                 nodes_by_instance: Mapping[str, Node]) -> tuple[float, dict[str, str]]:
    """Slots per node and labels of the group, from one registered node (a
    group's nodes share one launch template, so one tells for all)."""
    labels = {LABEL_NODE_GROUP: asg.node_group}
    for inst in instances:
        node = nodes_by_instance.get(inst.id)
        if node is not None:
            for k, v in node.labels.items():
                if k != LABEL_MODEL_VERSION:
                    labels.setdefault(k, v)
            return float(node.allocatable.get(RESOURCE_GPU, 0.0)) or 1.0, labels
    return 1.0, labels


# --------------------------------------------------------------------------- stage 2: health


@dataclass(frozen=True)
class LaunchFailure:
    group: str
    message: str                 # AWS's own words
    since: float                 # the first failed launch of this unbroken run of failures
    activity_id: str             # the newest failed launch
    invalid_template: bool       # the template or AMI is unusable: roll back rather than wait


@dataclass(frozen=True)
class GroupHealth:
    group: str
    proven_by: Optional[str]     # a new node that is Ready, labelled and warm (the proof), if any
    ready_new: int
    free_slots: tuple[float, ...]     # Job slots on new nodes that are ready or coming
    bad: tuple[tuple[str, Optional[str], str], ...]   # (instance, node or None, why) of bad new instances
    launch_failure: Optional[LaunchFailure]
    booting: int                 # new instances not proven yet

    @property
    def proven(self) -> bool:
        return self.proven_by is not None


@dataclass(frozen=True)
class Health:
    groups: Mapping[str, GroupHealth]
    rollback_reason: Optional[str]
    timers: tuple[float, ...]    # instants a timeout here fires (the runner wakes for the earliest)


def assess_health(fleet: Fleet, intent: RolloutIntent, strategy: Strategy,
                  first_seen: Mapping[str, float]) -> Health:
    """Per group: is a replacement proven, is a new instance bad, are launches failing."""
    now = fleet.now
    out: dict[str, GroupHealth] = {}
    rollback: Optional[str] = None
    timers: list[float] = []
    checks = fleet.rolling and strategy.check_readiness
    for g in fleet.groups:
        proven_by: Optional[str] = None
        ready = 0
        free: list[float] = []
        bad: list[tuple[str, Optional[str], str]] = []
        booting = 0
        for inst in g.new:
            node = fleet.nodes_by_instance.get(inst.id)
            since = inst.launched_at if inst.launched_at is not None else first_seen.get(inst.id, now)
            if node is None:
                free.append(g.slots_per_node)
                booting += 1
                if not checks:
                    continue
                if now - since > intent.boot_timeout_seconds:
                    bad.append((inst.id, None, f"instance {inst.id} in {g.name}: no node registered within "
                                               f"{_duration(intent.boot_timeout_seconds)} of launch"))
                else:
                    timers.append(since + intent.boot_timeout_seconds + 1)
                continue
            if is_ready_new(node):
                ready += 1
                proven_by = proven_by or node.name
                if is_schedulable(node) or has_old_taint(node):
                    used = sum(p.requests.get(RESOURCE_GPU, 1.0) for p in fleet.pods_by_node.get(node.name, ())
                               if uses_slot(p, fleet.job_kinds))
                    free.append(max(0.0, float(node.allocatable.get(RESOURCE_GPU, g.slots_per_node)) - used))
                continue
            booting += 1
            if not node.unschedulable:
                free.append(float(node.allocatable.get(RESOURCE_GPU, g.slots_per_node)))
            if not checks:
                continue
            failed = warmup_failure(node, fleet.pods_by_node.get(node.name, ()))
            if failed:
                reason = f"node {node.name} ({inst.id}) in {g.name}: {failed}"
            elif now - since > intent.ready_timeout_seconds:
                state = "not Ready" if not node.ready else ("still warming" if _warming(node) else
                                                            "without a model label")
                reason = (f"node {node.name} ({inst.id}) in {g.name}: {state} "
                          f"{_duration(intent.ready_timeout_seconds)} after launch")
            else:
                timers.append(since + intent.ready_timeout_seconds + 1)
                continue
            bad.append((inst.id, node.name, reason))
        failure = launch_failure(g, fleet.activities.get(g.name, ()), intent.started_at)
        if failure is not None:
            timers.append(failure_clock(failure, fleet) + intent.launch_failure_timeout_seconds + 1)
        if checks and rollback is None:
            # Bad before anything was proven in the group: the new version is what is bad. Once a
            # replacement proved it, one bad instance is that instance's problem: it is replaced.
            if bad and proven_by is None:
                rollback = bad[0][2]
            elif failure is not None and failure.invalid_template:
                rollback = f"launches in {g.name} fail, the launch template cannot launch: {failure.message}"
        out[g.name] = GroupHealth(group=g.name, proven_by=proven_by, ready_new=ready, free_slots=tuple(free),
                                  bad=tuple(bad), launch_failure=failure, booting=booting)
    return Health(groups=out, rollback_reason=rollback, timers=tuple(timers))


def failure_clock(failure: LaunchFailure, fleet: Fleet) -> float:
    """Where the launch-failure timeout counts from: the first failure of the unbroken run of
    failures — but never before this run started. A rerun after a ``failed`` stop gets the whole
    timeout to try again (its message still says how long launches have failed in all)."""
    return max(failure.since, fleet.run_started_at)


def warmup_failure(node: Node, pods: Iterable[Pod]) -> Optional[str]:
    """Why the model warm-up on this node failed, if its warm-up pod says so."""
    for pod in pods:
        if pod.owner_kind == "DaemonSet" and pod.owner_name == WARMUP_DAEMONSET and pod.failure:
            return f"warm-up pod {pod.key} failed ({pod.failure})"
    return None


def launch_failure(g: GroupView, activities: Sequence[ScalingActivity], since: float) -> Optional[LaunchFailure]:
    """The group's launches are failing: it has fewer instances than it wants and its newest
    launch activity (since the rollout started) failed. ``activities`` are newest first."""
    launches = [a for a in activities if a.is_launch and a.started_at >= since]
    if not launches or not launches[0].failed or len(g.old) + len(g.new) >= g.asg.desired_capacity:
        return None
    first = launches[0]
    for activity in launches:
        if not activity.failed:
            break
        first = activity
    newest = launches[0]
    message = (newest.status_message or newest.description).strip()
    invalid = any(marker.lower() in message.lower() for marker in INVALID_TEMPLATE_MARKERS)
    return LaunchFailure(group=g.name, message=message, since=first.started_at, activity_id=newest.activity_id,
                         invalid_template=invalid)


# --------------------------------------------------------------------------- stage 3: marks on new nodes


@dataclass(frozen=True)
class NewNodePlan:
    commands: tuple[Command, ...]
    notes: tuple[Note, ...]


def plan_new_nodes(fleet: Fleet, health: Health) -> NewNodePlan:
    """Undo a rollout cordon on a node that is current again (after a rollback);
    keep cluster-autoscaler off new nodes while the rollout counts on them; in a
    proven group, replace a bad new instance (the group launches another on the
    same version); say on each bad node why it is bad."""
    out: list[Command] = []
    notes: list[Note] = []
    for g in fleet.groups:
        gh = health.groups[g.name]
        for instance_id, node_name, why in gh.bad:
            if gh.proven:
                out.append(Terminate(g.name, instance_id, node_name, decrement=False, why=why + "; replaced"))
            if node_name is not None:
                notes.append(Note("Node", "", node_name, "RolloutBadNode",
                                  why + ("; it is replaced" if gh.proven else "; the rollout rolls back"),
                                  subject=g.name, uid=node_name, warning=True))
        for inst in g.new:
            node = fleet.nodes_by_instance.get(inst.id)
            if node is None:
                continue
            if has_old_taint(node):
                out.append(Uncordon(g.name, node.name, why="runs the current launch template version again"))
            # Only while old nodes remain: afterwards the annotation is being removed, not added.
            if (fleet.rolling and fleet.autoscaler_active and g.old
                    and node.annotations.get(CA_SCALE_DOWN_DISABLED) != "true"):
                out.append(AnnotateNode(g.name, node.name,
                                        ((CA_SCALE_DOWN_DISABLED, "true"), (ANNOTATION_ROLLOUT_PROTECTED, "true"))))
    return NewNodePlan(commands=tuple(out), notes=tuple(notes))


# --------------------------------------------------------------------------- stage 4: drain


@dataclass(frozen=True)
class Held:
    """A node something keeps from draining past its deadline (a PDB; in a rollback, a Job)."""
    group: str
    node: str
    holders: tuple[str, ...]     # e.g. ("PodDisruptionBudget default/api", ) or ("Job ml/train", )
    blocked_at: float            # when the rollout stops as blocked if it still holds
    # Every budget holding it is still recovering from a disruption (a pod it covers was created in the
    # last BLOCKED_GRACE_SECONDS and is not Ready yet): the rollout's own eviction may have spent it. Such
    # a hold waits; it does not stop the rollout as blocked.
    recovering: bool = False


@dataclass(frozen=True)
class DrainPlan:
    commands: tuple[Command, ...]
    terminated: Mapping[str, int]        # per group: old instances terminated this cycle
    decremented: Mapping[str, int]       # of those, with desired decremented in the same call
    waiting_jobs: int                    # Job pods the drain waits for
    pdb_waits: int                       # nodes whose eviction a PodDisruptionBudget refuses now
    held: tuple[Held, ...]               # nodes past their deadline that something holds
    notes: tuple[Note, ...]
    node_deadlines: tuple[float, ...]    # effective deadline of each old node still to go
    timers: tuple[float, ...]
    budget_left: Mapping[tuple[str, str], int]
    paused: tuple[str, ...]              # why groups are not draining now (waiting for proof, launches failing)


class _Budgets:
    """PodDisruptionBudget headroom, spent as evictions are planned this cycle."""

    def __init__(self, pdbs: Sequence[PodDisruptionBudget], left: Optional[Mapping[tuple[str, str], int]] = None):
        self._pdbs = list(pdbs)
        self.left = dict(left) if left is not None else {(p.namespace, p.name): p.disruptions_allowed for p in pdbs}
        self._recovery: dict[str, bool] = {}

    def matching(self, pod: Pod) -> list[PodDisruptionBudget]:
        return [p for p in self._pdbs if _selects(p, pod)]

    def recovering(self, holders: Sequence[str], pods: Sequence[Pod], now: float) -> bool:
        """Every one of ``holders`` (``ns/name``) covers a pod that started in the last
        ``BLOCKED_GRACE_SECONDS`` and is not Ready yet: the budget comes back once it is. A budget whose
        replacement stays unready longer is held, not recovering (fail closed: then the rollout stops
        as blocked, naming it). Judged once per budget per cycle (many held nodes share one budget)."""
        return bool(holders) and all(self._recovering(holder, pods, now) for holder in holders)

    def _recovering(self, holder: str, pods: Sequence[Pod], now: float) -> bool:
        known = self._recovery.get(holder)
        if known is None:
            pdb = next((p for p in self._pdbs if f"{p.namespace}/{p.name}" == holder), None)
            known = pdb is not None and any(_starting(p, now) and _selects(pdb, p) for p in pods)
            self._recovery[holder] = known
        return known

    def holding(self, pod: Pod) -> list[str]:
        """The budgets that allow no disruption of ``pod`` now (as the API server reports them)."""
        return [f"{p.namespace}/{p.name}" for p in self.matching(pod) if p.disruptions_allowed <= 0]

    def try_spend(self, pod: Pod) -> bool:
        pdbs = self.matching(pod)
        if any(self.left[(p.namespace, p.name)] <= 0 for p in pdbs):
            return False
        for p in pdbs:
            self.left[(p.namespace, p.name)] -= 1
        return True


def _selects(pdb: PodDisruptionBudget, pod: Pod) -> bool:
    """The budget's selector picks the pod (a budget selecting nothing by labels counts for none)."""
    return (pdb.namespace == pod.namespace and bool(pdb.match_labels)
            and all(pod.labels.get(k) == v for k, v in pdb.match_labels.items()))


def _starting(pod: Pod, now: float) -> bool:
    """A pod started in the last ``BLOCKED_GRACE_SECONDS`` and not Ready yet (Pending, or Running with its
    Ready condition False; a Running pod whose readiness is unknown counts as ready)."""
    return (not pod.deleting and now - pod.created_at < BLOCKED_GRACE_SECONDS
            and ((pod.phase == "Pending" and pod.ready is not True) or (pod.phase == "Running" and pod.ready is False)))


def node_deadline(pods: Iterable[Pod], deadline_at: float) -> float:
    """A node's deadline: the rollout's, extended by the longest extension among its pods."""
    return max((pod_deadline(p, deadline_at) for p in pods), default=deadline_at)


def plan_drain(fleet: Fleet, health: Health, intent: RolloutIntent, strategy: Strategy) -> DrainPlan:
    """Per group, once a replacement is proven (or in a rollback): cordon every old node;
    once no Job holds it, evict the rest through the Eviction API; once empty,
    terminate that exact instance (with decrement). Past its deadline a Job is
    force-evicted (counted as forced) — never from a node a PDB still holds,
    and never in a rollback. While a group's launches fail nothing is cordoned
    or terminated there, and idle cordoned nodes go back to pending Jobs."""
    now, rolling = fleet.now, fleet.rolling
    budgets = _Budgets(fleet.pdbs)
    out: list[Command] = []
    notes: list[Note] = []
    held: list[Held] = []
    deadlines: list[float] = []
    timers: list[float] = []
    paused: list[str] = []
    terminated: dict[str, int] = defaultdict(int)
    decremented: dict[str, int] = defaultdict(int)
    waiting = pdb_waits = 0
    last_timer = None
    for g in fleet.groups:
        gh = health.groups[g.name]
        guarded = strategy.check_readiness         # the baseline (double-and-drain) drains like the script did
        if rolling and guarded and not gh.proven and strategy.prove_first:
            if g.old:
                paused.append(_proof_wait(g, gh, fleet, intent))
                # Nothing proven (any more: the canary was lost after old nodes were cordoned): old
                # capacity is the only capacity there is, so pending Jobs get it back — not after a
                # replacement boots, which may never come (launches failing) or may be bad.
                out += _give_back(g, fleet, gh, count_coming=False,
                                  why=f"given back to pending Jobs: nothing in {g.name} is proven (any more)")
            continue
        failing = gh.launch_failure is not None and guarded
        if failing:
            paused.append(f"launches in {g.name} failing for {_duration(now - gh.launch_failure.since)}: "
                          f"{_short(gh.launch_failure.message)}")
            out += _give_back(g, fleet, gh)
        for inst in g.old:
            node = fleet.nodes_by_instance.get(inst.id)
            if node is None:
                # Never registered (or gone): nothing runs there and it is no capacity.
                out.append(_terminate(g, inst.id, None, terminated, decremented, "never registered as a node"))
                continue
            if failing and node.ready:
                continue                 # launches fail: this capacity could not be replaced
            jobs, evictable, leaving = [], [], []
            for p in fleet.pods_by_node.get(node.name, ()):
                action = classify_pod(p, fleet.job_kinds).action
                if action == WAIT:
                    jobs.append(p)
                elif action == EVICT:
                    evictable.append(p)
                elif action == LEAVING:
                    leaving.append(p)
            # A node's deadline is the rollout's, extended by its pods' annotations: before the
            # rollout's own deadline nothing on any node can be due.
            deadline = (node_deadline(jobs + evictable, intent.deadline_at) if now >= intent.deadline_at
                        else intent.deadline_at)
            deadlines.append(deadline)
            if not (node.unschedulable and node.annotations.get(CA_SCALE_DOWN_DISABLED) == "true"
                    and is_cordoned_for_rollout(node)):
                waits = tuple(WaitedPod(p.namespace, p.name, p.uid, float("inf") if unreadable_extension(p)
                                        else pod_deadline(p, intent.deadline_at)) for p in jobs)
                why = _cordon_why(g, gh, intent, rolling)
                if jobs:
                    why += "; " + _waiting_message(jobs, intent.deadline_at, rolling)
                out.append(Cordon(g.name, node.name, why=why, waits_for=waits))
                if not node.unschedulable:
                    # Judge emptiness only on a node seen cordoned: a pod bound after
                    # this snapshot but before the cordon must not die with the node.
                    waiting += len(jobs)
                    continue
            if jobs:
                # A Job whose deadline extension cannot be read is never forced (fail closed): past
                # the rollout's deadline it holds its node like a PodDisruptionBudget does, by name.
                unreadable = [(p, why) for p in jobs if (why := unreadable_extension(p))]
                for p, why in unreadable:
                    notes.append(Note("Pod", p.namespace, p.name, "RolloutUnreadableDeadlineExtension",
                                      f"{why}: this pod is never force-evicted; past the rollout's deadline its "
                                      f"node {node.name} holds the rollout (blocked) until it finishes or the "
                                      f"annotation is fixed", subject=why, uid=p.uid, warning=True))
                odd = {p.key for p, _ in unreadable}
                due = ([p for p in jobs if p.key not in odd and now >= pod_deadline(p, intent.deadline_at)]
                       if now >= intent.deadline_at else [])
                holders = sorted({h for p in evictable for h in budgets.holding(p)})
                unread = [f"Job {_job_name(p)} ({why})" for p, why in unreadable] if now >= intent.deadline_at else []
                if (due or unread) and (not rolling or holders or unread):
                    what = ([f"PodDisruptionBudget {h}" for h in holders] + unread if holders or unread
                            else sorted({f"Job {_job_name(p)}" for p in due}))
                    held.append(Held(g.name, node.name, tuple(what), deadline + BLOCKED_GRACE_SECONDS,
                                     recovering=not unread and budgets.recovering(holders, fleet.pods, now)))
                    timers.append(deadline + BLOCKED_GRACE_SECONDS + 1)
                    notes.append(_held_note(node, what, deadline + BLOCKED_GRACE_SECONDS, bool(holders) or bool(unread)))
                    waiting += len(jobs)
                    continue
                for pod in due:
                    out.append(Evict(g.name, node.name, pod.namespace, pod.name, job=True, forced=True,
                                     uid=pod.uid, why=f"past its deadline ({_clock(pod_deadline(pod, intent.deadline_at))}); "
                                                      f"node {node.name} is being replaced"))
                if len(due) < len(jobs):
                    waiting += len(jobs) - len(due)
                    if now < intent.deadline_at:
                        next_due = intent.deadline_at
                    else:
                        next_due = min(pod_deadline(p, intent.deadline_at) for p in jobs if p not in due)
                    if next_due != last_timer:
                        timers.append(next_due)
                        last_timer = next_due
                    continue
                # Every Job on the node is past its deadline (and forced): evict the rest now too.
            if evictable:
                refused = []
                for pod in evictable:
                    if budgets.try_spend(pod):
                        out.append(Evict(g.name, node.name, pod.namespace, pod.name, uid=pod.uid,
                                         why=f"node {node.name} is being replaced"))
                    else:
                        refused.append(pod)
                if refused:
                    pdb_waits += 1
                holders = sorted({h for p in refused for h in budgets.holding(p)})
                if holders:
                    what = tuple(f"PodDisruptionBudget {h}" for h in holders)
                    if now >= deadline:
                        held.append(Held(g.name, node.name, what, deadline + BLOCKED_GRACE_SECONDS,
                                         recovering=budgets.recovering(holders, fleet.pods, now)))
                        timers.append(deadline + BLOCKED_GRACE_SECONDS + 1)
                        notes.append(_held_note(node, list(what), deadline + BLOCKED_GRACE_SECONDS, True))
                    else:
                        timers.append(deadline)
                continue
            if leaving:
                continue
            out.append(_terminate(g, inst.id, node.name, terminated, decremented,
                                  "drained: no Job or other pod left on it"))
    return DrainPlan(commands=tuple(out), terminated=dict(terminated), decremented=dict(decremented),
                     waiting_jobs=waiting, pdb_waits=pdb_waits, held=tuple(held), notes=tuple(notes), node_deadlines=tuple(deadlines),
                     timers=tuple(timers), budget_left=dict(budgets.left), paused=tuple(paused))


def _terminate(g: GroupView, instance_id: str, node: Optional[str], terminated: dict, decremented: dict,
               why: str) -> Terminate:
    """Terminate exactly this instance, decrementing desired in the same call —
    unless desired is at the group's min size, where Auto Scaling refuses the
    decrement (ValidationError) and the group would never get past it: then the
    group replaces the instance itself, on its current launch template version."""
    decrement = g.asg.desired_capacity - decremented[g.name] > g.asg.min_size
    terminated[g.name] += 1
    decremented[g.name] += int(decrement)
    return Terminate(g.name, instance_id, node, decrement=decrement, why=why)


def _give_back(g: GroupView, fleet: Fleet, gh: GroupHealth, *, count_coming: bool = True,
               why: str = "") -> list[Command]:
    """Launches fail (or nothing is proven): uncordon old nodes with free slots while pending Jobs
    that fit this group have nowhere else to go (nodes already holding a Job first: they stay anyway).
    ``count_coming``: slots on new nodes that are ready or booting count as somewhere to go."""
    fitting = [p for p in fleet.pending if _fits(p, g.labels)]
    if not fitting:
        return []
    need = sum(float(p.requests.get(RESOURCE_GPU, 1.0)) or 1.0 for p in fitting)
    if count_coming:
        need -= sum(gh.free_slots)
    candidates = []
    for inst in g.old:
        node = fleet.nodes_by_instance.get(inst.id)
        if node is None or not node.ready or not is_cordoned_for_rollout(node):
            continue
        pods = fleet.pods_by_node.get(node.name, ())
        used = sum(p.requests.get(RESOURCE_GPU, 1.0) for p in pods if uses_slot(p, fleet.job_kinds))
        free = float(node.allocatable.get(RESOURCE_GPU, g.slots_per_node)) - used
        if free > 0:
            candidates.append((used == 0, -free, node.name, free))
    out: list[Command] = []
    for _, _, name, free in sorted(candidates):
        if need <= 0:
            break
        out.append(Uncordon(g.name, name, why=why or f"given back to pending Jobs: launches in {g.name} fail"))
        need -= free
    return out


def _give_back_all(fleet: Fleet, health: Health) -> tuple[Command, ...]:
    """Stopping because launches fail: the old nodes of those groups stay and are schedulable
    again (no replacement could take their work); the request that cannot launch is withdrawn —
    the surge only, never below the group's original desired capacity: a node the rollout removed
    before launches began to fail is capacity the group must get back once they succeed again.
    A rerun cordons them again once a replacement is proven."""
    out: list[Command] = []
    for g in fleet.groups:
        if health.groups[g.name].launch_failure is None:
            continue
        for inst in g.old:
            node = fleet.nodes_by_instance.get(inst.id)
            if node is not None and has_old_taint(node):
                out.append(Uncordon(g.name, node.name, why=f"the rollout stopped: launches in {g.name} fail"))
        if not health.groups[g.name].proven and g.old and g.asg.launch_template_version != g.intent.previous_version:
            # What the group launches once launches succeed again, with nobody watching, is the
            # version known to work (pinned, as while the rollout waits for a proof); a rerun unpins.
            out.append(SetVersion(g.name, g.asg.launch_template_id, g.intent.previous_version,
                                  expected=g.asg.launch_template_version))
        keep = max(len(g.old) + len(g.new), g.asg.min_size, g.intent.original_desired)
        if g.asg.desired_capacity > keep:
            out.append(SetCapacity(g.name, desired=keep))
        elif g.asg.desired_capacity < keep:
            # Old nodes removed (desired decremented) before launches began to fail were never made
            # up: ask for them again, so the group refills once capacity returns.
            out.append(SetCapacity(g.name, desired=keep, raise_only=True))
    return tuple(out)


def _fits(pod: Pod, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in pod.node_selector.items())


def _proof_wait(g: GroupView, gh: GroupHealth, fleet: Fleet, intent: RolloutIntent) -> str:
    if gh.launch_failure is not None:
        return (f"{g.name}: no replacement can launch yet ({_duration(fleet.now - gh.launch_failure.since)}): "
                f"{_short(gh.launch_failure.message)}")
    if gh.booting:
        return (f"{g.name}: a replacement to be proven (Ready, labelled, warm); {gh.booting} new, "
                f"none proven yet")
    return f"{g.name}: a replacement to launch and be proven (Ready, labelled, warm)"


def _cordon_why(g: GroupView, gh: GroupHealth, intent: RolloutIntent, rolling: bool) -> str:
    if not rolling:
        return f"rolling back {g.name} to launch template version {g.target}: {intent.rollback_reason or 'rollback'}"
    proof = f"; replacement proven by node {gh.proven_by}" if gh.proven_by else ""
    return (f"rollout {intent.rollout_id}: {g.name} moves to launch template version {g.target}{proof}; "
            f"Jobs may run until {_clock(intent.deadline_at)}")


def _job_name(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.owner_name or pod.name}"


def _waiting_message(jobs: Sequence[Pod], deadline_at: float, rolling: bool) -> str:
    names = sorted({_job_name(p) for p in jobs})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    readable = [pod_deadline(p, deadline_at) for p in jobs if not unreadable_extension(p)]
    if not rolling:
        after = "; a rollback never evicts a Job"
    elif readable:
        after = f"; Jobs still running at {_clock(min(readable))} (their deadline) are evicted"
    else:
        after = "; never evicted: the deadline extension annotation cannot be read"

    return f"waiting for Job{'s' if len(names) > 1 else ''} {shown} to finish before replacing this node{after}"


def _held_note(node: Node, holders: Sequence[str], blocked_at: float, pdb: bool) -> Note:
    why = ("keep this node from draining, so no Job is force-evicted from it" if pdb
           else "still run past the deadline and a rollback never evicts a Job")
    return Note("Node", "", node.name, "RolloutBlocked",
                f"cannot drain: {', '.join(holders)} {why}; the rollout stops as blocked at {_clock(blocked_at)} "
                f"if this still holds", subject=",".join(holders), uid=node.name, warning=True)


# --------------------------------------------------------------------------- stage 5: capacity


@dataclass(frozen=True)
class CapacityPlan:
    commands: tuple[Command, ...]
    desired: Mapping[str, int]          # desired capacity per group once these commands ran
    base: Mapping[str, int]             # new nodes each group should have now, before any for pending Jobs


def plan_capacity(fleet: Fleet, health: Health, drain: DrainPlan, intent: RolloutIntent,
                  strategy: Strategy) -> CapacityPlan:
    """Raise desired (and max, only as far as needed) so each group gets the new
    nodes it should have now. Desired is never lowered here: nodes leave only by
    exact terminate-with-decrement, so nothing fights cluster-autoscaler.

    Before proof a group gets its canary (or the fixed surge) and nothing more;
    after it, replacements as old nodes leave plus nodes for pending Jobs no new
    node can take (those count as replacements: they are new nodes). A group
    whose launches fail is not asked for more."""
    base: dict[str, int] = {}
    for g in fleet.groups:
        gh = health.groups[g.name]
        orig = g.intent.original_desired
        old_after = len(g.old) - drain.terminated.get(g.name, 0)
        if old_after <= 0 or not fleet.rolling:
            base[g.name] = orig
            continue
        if strategy.double:
            ahead = orig
        else:
            fixed = surge_nodes(intent.surge, orig)
            ahead = fixed if fixed is not None else (1 if strategy.canary else 0)
        if strategy.prove_first and strategy.check_readiness and not gh.proven:
            base[g.name] = min(orig, max(1, ahead))     # the canary (or the fixed surge): nothing else yet
        else:
            base[g.name] = min(orig, max(0, orig - old_after) + ahead)
    # Nodes for pending Jobs come on top of every new node there is or is about to be: those
    # added for earlier pending Jobs count as replacements (they are new nodes) and are not asked again.
    overflow = (extra_nodes_for_pending(fleet, health, {g.name: max(0, base[g.name] - len(g.new)) for g in fleet.groups})
                if fleet.rolling and strategy.add_for_pending and intent.surge is None else {})
    # The rollout makes up only the capacity it takes away — free slots on old nodes it cordoned —
    # not a queue the fleet could not serve anyway: sizing for that is cluster-autoscaler's (or
    # nobody's: without one the group keeps its size). Only a rollout that paused the autoscaler
    # stands in for it, up to the original max.
    capped = not (intent.pause_autoscaler and fleet.autoscaler_present)
    out: list[Command] = []
    desired: dict[str, int] = {}
    for g in fleet.groups:
        gh = health.groups[g.name]
        orig = g.intent.original_desired
        old_after = len(g.old) - drain.terminated.get(g.name, 0)
        desired_after = g.asg.desired_capacity - drain.decremented.get(g.name, 0)
        desired[g.name] = desired_after
        want_new = base[g.name]
        if gh.launch_failure is not None and strategy.check_readiness:
            # Ask for nothing more. While rolling the request stays (the group retrying it is how
            # the rollout learns capacity is back); a rollback withdraws what it no longer wants —
            # never below the instances the group has, so nothing is terminated by this.
            if fleet.rolling:
                continue
            live = len(g.old) + len(g.new) - drain.terminated.get(g.name, 0)
            keep = max(live, old_after + min(want_new, max(g.intent.original_max, orig)), g.asg.min_size)
            if keep < desired_after:
                out.append(SetCapacity(g.name, desired=keep))
                desired[g.name] = keep
            continue
        if overflow.get(g.name):
            want_new = max(want_new, len(g.new)) + overflow[g.name]
            if capped:                      # in total, not per cycle: a queue that never drains adds nothing
                want_new = min(want_new, base[g.name] + _capacity_taken(fleet, g.name))
        want_new = min(want_new, max(g.intent.original_max, orig))
        want_desired = old_after + want_new
        if fleet.rolling and strategy.prove_first and strategy.check_readiness and not gh.proven:
            # Unproven, a group never grows past its original max plus the canaries — one set for
            # the target and one for each version superseded mid-rollout (a canary of version 2 is
            # old once version 3 is published). Instances launched on the rollout's request that
            # still do not look new (an API reporting the default version, another launch template
            # per override) would otherwise add one more "canary" every cycle, without end.
            superseded = {i.launch_template_version for i in g.old} - {g.intent.previous_version}
            cap = max(g.intent.original_max, orig) + base[g.name] * (1 + len(superseded))
            # Nodes the rollout added on a superseded target (for pending Jobs, beside its canary) are old
            # now too and leave only after the new target is proven: room for its canary above them. Only
            # versions between the previous and the target count (launch template versions only grow), and
            # instances on the previous version count up to the original size, so instances that never look
            # new still cannot grow the group without end.
            between = [i for i in g.old if _between(i.launch_template_version, g.intent.previous_version,
                                                    g.intent.target_version)]
            on_previous = sum(1 for i in g.old if i.launch_template_version == g.intent.previous_version)
            cap = max(cap, min(on_previous, max(g.intent.original_max, orig)) + len(between) + base[g.name])
            if not g.new:
                # No instance of the target at all (its canary lost, and replaced on the pinned proven
                # version by the group): room for a canary above what runs — bounded by double the
                # original plus the canaries, so instances that never look new stop there.
                cap = max(cap, min(len(g.old) + base[g.name],
                                   2 * max(g.intent.original_max, orig) + base[g.name] * (1 + len(superseded))))
            want_desired = min(want_desired, cap)
        # Max is kept as tight as the rollout allows: raised only to what it asks
        # for, lowered again as old nodes leave, so cluster-autoscaler never grows
        # into headroom the rollout made and the original max can be restored.
        tight_max = max(g.intent.original_max, want_desired, desired_after)
        if want_desired > desired_after:
            # Max goes with desired in the same call, so a world that moved since the
            # snapshot (a node lost, a terminate that found nothing) cannot make it invalid.
            out.append(SetCapacity(g.name, desired=want_desired, max_size=max(tight_max, want_desired), raise_only=True))
            desired[g.name] = want_desired
        elif g.asg.max_size > tight_max:
            out.append(SetCapacity(g.name, max_size=tight_max))
    return CapacityPlan(commands=tuple(out), desired=desired, base=base)


def _between(version: Optional[str], previous: str, target: str) -> bool:
    """A launch template version after ``previous`` and before ``target`` (numbers only: a symbolic or
    unknown version is never counted)."""
    try:
        return int(previous) < int(version or "") < int(target)
    except ValueError:
        return False


def _capacity_taken(fleet: Fleet, group: str) -> int:
    """Nodes' worth of Job slots left free on the group's old nodes that the rollout cordoned."""
    g = next(g for g in fleet.groups if g.name == group)
    free = 0.0
    for inst in g.old:
        node = fleet.nodes_by_instance.get(inst.id)
        if node is None or not node.ready or not is_cordoned_for_rollout(node):
            continue
        used = sum(p.requests.get(RESOURCE_GPU, 1.0) for p in fleet.pods_by_node.get(node.name, ())
                   if uses_slot(p, fleet.job_kinds))
        free += max(0.0, float(node.allocatable.get(RESOURCE_GPU, g.slots_per_node)) - used)
    return int(-(-free // g.slots_per_node)) if free > 0 else 0


def extra_nodes_for_pending(fleet: Fleet, health: Health, coming: Mapping[str, int]) -> dict[str, int]:
    """Nodes to add, per proven group, for pending Job pods that no new node — ready,
    booting, or about to be asked for (``coming``) — can take. First fit into free
    slots, then into virtual new nodes of the fitting group with the most slots per
    node and room under its max."""
    groups = [g for g in fleet.groups if health.groups[g.name].proven
              and health.groups[g.name].launch_failure is None and g.old]
    extras: dict[str, int] = defaultdict(int)
    free = {g.name: sorted(list(health.groups[g.name].free_slots) + [g.slots_per_node] * coming.get(g.name, 0),
                           reverse=True) for g in groups}
    virtual: dict[str, list[float]] = defaultdict(list)
    for pod in fleet.pending:
        need = float(pod.requests.get(RESOURCE_GPU, 1.0)) or 1.0
        fitting = [g for g in groups if _fits(pod, g.labels)]
        if not fitting:
            continue
        placed = False
        for g in fitting:
            for pool in (free[g.name], virtual[g.name]):
                for i, slots in enumerate(pool):
                    if slots >= need:
                        pool[i] = slots - need
                        placed = True
                        break
                if placed:
                    break
            if placed:
                break
        if placed:
            continue
        room = [g for g in fitting if g.slots_per_node >= need
                and len(g.new) + coming.get(g.name, 0) + extras[g.name] < g.intent.original_max]
        if not room:
            continue
        best = max(room, key=lambda g: (g.slots_per_node, g.intent.original_max - len(g.new) - coming.get(g.name, 0)
                                        - extras[g.name]))
        extras[best.name] += 1
        virtual[best.name].append(best.slots_per_node - need)
    return dict(extras)


# --------------------------------------------------------------------------- stage 5b: versions


@dataclass(frozen=True)
class VersionPlan:
    commands: tuple[Command, ...]       # run before the capacity commands


def plan_versions(fleet: Fleet, health: Health, capacity: CapacityPlan, strategy: Strategy) -> VersionPlan:
    """The launch template version each group launches with.

    While a group's new version is unproven, only its canary runs it: once the canary
    has launched, the group is *pinned* to the previous (proven) version, so whatever
    else launches meanwhile — cluster-autoscaler's scale-ups for pending Jobs, the
    replacement of a lost node — comes up on a version known to work, and a bad AMI
    costs the canary and nothing more. Unpinned when the canary is proven (or to
    launch a canary again); a rollback sets the previous version for good."""
    out: list[Command] = []
    for g in fleet.groups:
        current, previous = g.asg.launch_template_version, g.intent.previous_version
        if not fleet.rolling:
            if current != previous:
                out.append(SetVersion(g.name, g.asg.launch_template_id, previous, expected=current))
            continue
        pinned = current == previous and g.target != previous
        guarded = strategy.prove_first and strategy.check_readiness
        gh = health.groups[g.name]
        wants_pin = guarded and bool(g.old) and not gh.proven and len(g.new) >= capacity.base.get(g.name, 0) > 0
        if wants_pin and not pinned:
            out.append(SetVersion(g.name, g.asg.launch_template_id, previous, expected=current))
        elif pinned and not wants_pin:
            out.append(SetVersion(g.name, g.asg.launch_template_id, g.target, expected=current))
    return VersionPlan(commands=tuple(out))


# --------------------------------------------------------------------------- stage 6: trim


@dataclass(frozen=True)
class TrimPlan:
    commands: tuple[Command, ...]
    excess: Mapping[str, int]           # nodes above the group's target size still to remove
    notes: tuple[Note, ...]


def trim_target(g: GroupView, fleet: Fleet) -> int:
    """The size a group goes back to once no old node is left: its original desired
    capacity — or, with cluster-autoscaler in the cluster, only back within its original
    max (the autoscaler sizes it from there: the rollout hands sizing back)."""
    orig = g.intent.original_desired
    return max(g.intent.original_max, orig) if fleet.autoscaler_present else orig


def plan_trim(fleet: Fleet, health: Health, drain: DrainPlan, capacity: CapacityPlan,
              intent: RolloutIntent) -> TrimPlan:
    """Once no old node is left, bring the group back to its target size (a lost
    node's replacement, the surge and nodes added for pending Jobs can leave it
    above): terminate idle new nodes exactly; if too few are idle, cordon the
    least busy ones as surplus and drain them like old nodes — never a Job."""
    budgets = _Budgets(fleet.pdbs, drain.budget_left)
    out: list[Command] = []
    excess_by: dict[str, int] = {}
    for g in fleet.groups:
        if len(g.old) - drain.terminated.get(g.name, 0) > 0:
            continue
        if health.groups[g.name].launch_failure is not None:
            # Nothing old is left, but the group still asks for more than its size and cannot launch
            # it (a lost node's replacement, say): withdraw the request above the size, which removes
            # no instance; the trim then goes on from what the group has.
            keep = max(trim_target(g, fleet), len(g.new), g.asg.min_size)
            if capacity.desired[g.name] > keep:
                out.append(SetCapacity(g.name, desired=keep))
                excess_by[g.name] = capacity.desired[g.name] - keep
            continue
        excess = capacity.desired[g.name] - trim_target(g, fleet)
        excess_by[g.name] = max(0, excess)
        if excess <= 0:
            out += [Uncordon(g.name, n.name, why="no longer above the group's size")
                    for n in (fleet.nodes_by_instance.get(i.id) for i in g.new) if is_surplus(n)]
            continue
        # Which nodes go: those the group launched during the rollout before the original ones
        # (the original fleet is kept: after a rollback, a lost canary's replacement is the surplus),
        # then idle before already draining before busy, then not yet ready, then the newest.
        ranked = []
        for inst in g.new:
            node = fleet.nodes_by_instance.get(inst.id)
            pods = fleet.pods_by_node.get(node.name, ()) if node is not None else ()
            work = [p for p in pods if holds_node(p, fleet.job_kinds)]
            original = inst.launched_at is not None and inst.launched_at <= intent.started_at
            state = 0 if not work else (1 if is_surplus(node) else 2)
            jobs = sum(1 for p in work if blocks_drain(p, fleet.job_kinds))
            ranked.append(((original, state, is_ready_new(node), jobs, -(inst.launched_at or 0.0), inst.id),
                           inst.id, node, work, state))
        ranked.sort(key=lambda r: r[0])
        removed = 0
        for _, iid, node, work, state in ranked[:excess]:
            if state == 0:
                if node is not None and node.ready and not is_surplus(node):
                    out.append(Cordon(g.name, node.name, surplus=True,      # terminate once seen cordoned
                                      why=f"{g.name} is above its size ({trim_target(g, fleet)}) after the rollout"))
                else:
                    out.append(Terminate(g.name, iid, node.name if node else None,
                                         why=f"idle, and {g.name} is above its size after the rollout"))
                    removed += 1
            elif state == 1:
                if not any(blocks_drain(p, fleet.job_kinds) for p in work):
                    for pod in work:
                        if needs_eviction(pod, fleet.job_kinds) and budgets.try_spend(pod):
                            out.append(Evict(g.name, node.name, pod.namespace, pod.name, uid=pod.uid,
                                             why=f"surplus node {node.name} is drained"))
            else:
                out.append(Cordon(g.name, node.name, surplus=True,
                                  why=f"{g.name} is above its size after the rollout: drained as its Jobs finish"))
        if removed and g.asg.max_size > max(g.intent.original_max, capacity.desired[g.name] - removed):
            # Max follows at once: the autoscaler must not refill what was just given back.
            out.append(SetCapacity(g.name, max_size=max(g.intent.original_max, capacity.desired[g.name] - removed)))
    return TrimPlan(commands=tuple(out), excess=excess_by, notes=())


# --------------------------------------------------------------------------- stage 7: the verdict


@dataclass(frozen=True)
class Stop:
    outcome: str                 # blocked | failed (or completed: only the trim is left, and it is overdue)
    reason: str
    commands: tuple = ()         # what to leave behind first (e.g. capacity given back)
    overdue: bool = False        # a give-up by the clock: the runner applies it only when nothing progresses


@dataclass(frozen=True)
class GroupStatus:
    asg: str
    old: int
    new: int
    new_ready: int
    desired: int
    max_size: int
    proven: bool = False
    launch_failure: Optional[str] = None


@dataclass(frozen=True)
class Decision:
    commands: tuple[Command, ...]
    done: bool
    rollback_reason: Optional[str] = None
    stop: Optional[Stop] = None
    groups: tuple[GroupStatus, ...] = ()
    old_nodes: int = 0
    new_nodes: int = 0
    new_ready: int = 0
    blocking_jobs: int = 0
    pending_jobs: int = 0
    waiting_for: str = ""
    notes: tuple[Note, ...] = ()
    launch_failures: tuple[LaunchFailure, ...] = ()
    held: tuple[Held, ...] = ()
    wake_at: Optional[float] = None      # the next instant a timer here fires

    def summary(self) -> dict:
        return {
            "old_nodes": self.old_nodes, "new_nodes": self.new_nodes, "new_ready": self.new_ready,
            "blocking_jobs": self.blocking_jobs, "pending_jobs": self.pending_jobs,
            "commands": len(self.commands), "waiting_for": self.waiting_for,
            "unproven_groups": sum(1 for g in self.groups if not g.proven),
            "launch_failures": len(self.launch_failures), "held_nodes": len(self.held),
        }


def judge(fleet: Fleet, health: Health, drain: DrainPlan, trim: TrimPlan, intent: RolloutIntent,
          strategy: Strategy, commands: Sequence[Command]) -> tuple[bool, Optional[Stop], str]:
    """Done, or stopped (blocked / failed), and what the rollout waits for."""
    now = fleet.now
    old_left = sum(len(g.old) - drain.terminated.get(g.name, 0) for g in fleet.groups)
    needs_proof = fleet.rolling and strategy.check_readiness
    proven = all(health.groups[g.name].proven or g.intent.original_desired == 0 for g in fleet.groups)
    excess = sum(trim.excess.values())
    done = not commands and old_left == 0 and (proven or not needs_proof) and not excess
    parts = list(drain.paused)
    if not fleet.rolling and old_left:
        parts.append(f"rolling back: {old_left} instance{'s' if old_left != 1 else ''} of the new version to remove")
    if drain.waiting_jobs:
        parts.append(f"{drain.waiting_jobs} Job pod{'s' if drain.waiting_jobs != 1 else ''} on old nodes")
    if drain.pdb_waits:
        parts.append(f"{drain.pdb_waits} node{'s' if drain.pdb_waits != 1 else ''} waiting for PodDisruptionBudgets")
    for h in drain.held[:3]:
        parts.append(f"{', '.join(h.holders)} hold{'s' if len(h.holders) == 1 else ''} {h.node} "
                     f"(blocked at {_clock(h.blocked_at)})")
    if len(drain.held) > 3:
        parts.append(f"{len(drain.held) - 3} more held nodes")
    if needs_proof and not proven and not old_left:
        parts.append("new nodes to be proven")
    if excess:
        parts.append(f"{excess} surplus node{'s' if excess != 1 else ''} to drain")
    waiting = "" if done else ("; ".join(parts) or "changes to settle")
    if done:
        return True, None, waiting
    # Launches failing for too long: stop and say why in AWS's words.
    if strategy.check_readiness:
        for g in fleet.groups:
            failure = health.groups[g.name].launch_failure
            if failure is not None and now - failure_clock(failure, fleet) >= intent.launch_failure_timeout_seconds:
                return False, Stop("failed", f"launches in {g.name} have failed for "
                                             f"{_duration(now - failure.since)}: {failure.message}",
                                   _give_back_all(fleet, health)), waiting
    # Blocked: every old node still to go is held past its deadline (+ grace).
    if old_left and drain.held:
        held_nodes = {h.node for h in drain.held if now >= h.blocked_at and not h.recovering}
        remaining = {fleet.nodes_by_instance[i.id].name for g in fleet.groups for i in g.old
                     if i.id in fleet.nodes_by_instance} - {c.node for c in drain.commands if isinstance(c, Terminate)}
        if held_nodes and remaining <= held_nodes:
            by_holder: dict[str, list[str]] = defaultdict(list)
            for h in drain.held:
                for holder in h.holders:
                    by_holder[holder].append(h.node)
            reason = "; ".join(f"{holder} holds {', '.join(sorted(nodes))}" for holder, nodes in sorted(by_holder.items()))
            return False, Stop("blocked", f"past the deadline, nodes cannot drain: {reason}"), waiting
    give_up = max(drain.node_deadlines, default=intent.deadline_at)
    give_up = max(give_up, intent.deadline_at) + GRACE_AFTER_DEADLINE
    if now > give_up:
        if not old_left and excess and (proven or not needs_proof):
            # Only the Job-safe trim is left, and its Jobs outlast the rollout: no Job is evicted to
            # shrink a group; the rollout may end, saying how far above its size each group stays.
            above = ", ".join(f"{g} by {n}" for g, n in sorted(trim.excess.items()) if n)
            return False, Stop("completed", f"groups left above their size ({above}): their surplus nodes still "
                                            f"run Jobs {_duration(GRACE_AFTER_DEADLINE)} after the deadline",
                               overdue=True), waiting
        return False, Stop("failed", f"not done {_duration(GRACE_AFTER_DEADLINE)} after the last deadline: "
                                     f"waiting for {waiting}", overdue=True), waiting
    return False, None, waiting


# --------------------------------------------------------------------------- the decision


def decide(snapshot: Snapshot, intent: RolloutIntent, group_intents: Mapping[str, GroupIntent],
           strategy: Strategy, first_seen: Mapping[str, float] | None = None,
           job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS, run_started_at: Optional[float] = None) -> Decision:
    """Commands for this cycle. ``first_seen``: when the runner first saw each
    instance, used for the timeouts when the cloud gives no launch time.
    ``job_kinds``: owner kinds whose pods are Jobs (``RolloutOptions.job_owner_kinds``;
    taken from the options each run, not persisted: a rerun passes the same flags)."""
    fleet = read_fleet(snapshot, intent, group_intents, job_kinds, run_started_at)
    health = assess_health(fleet, intent, strategy, first_seen or {})
    new_nodes = plan_new_nodes(fleet, health)
    drain = plan_drain(fleet, health, intent, strategy)
    capacity = plan_capacity(fleet, health, drain, intent, strategy)
    versions = plan_versions(fleet, health, capacity, strategy)
    trim = plan_trim(fleet, health, drain, capacity, intent)
    commands: list[Command] = []
    if intent.pause_autoscaler and snapshot.autoscaler_replicas:
        commands.append(ScaleAutoscaler(0))
    if not fleet.rolling:
        commands += versions.commands
    commands += new_nodes.commands
    commands += drain.commands
    if strategy.protect_instances:
        for g in fleet.groups:
            if len(g.old) == drain.terminated.get(g.name, 0):
                continue              # nothing old left to guard; the finish lifts the protection
            ids = tuple(i.id for i in g.old + g.new if not i.protected_from_scale_in)
            if ids:
                commands.append(Protect(g.name, ids, True))
    if fleet.rolling:
        commands += versions.commands      # before capacity: a canary must launch on the new version
    commands += capacity.commands
    commands += trim.commands
    done, stop, waiting = judge(fleet, health, drain, trim, intent, strategy, commands)
    notes = list(new_nodes.notes) + list(drain.notes) + list(trim.notes)
    timers = [t for t in (*health.timers, *drain.timers) if t > snapshot.now]
    if not done and stop is None:
        timers.append(max(max(drain.node_deadlines, default=intent.deadline_at), intent.deadline_at)
                      + GRACE_AFTER_DEADLINE + 1)
    old_left = sum(len(g.old) - drain.terminated.get(g.name, 0) for g in fleet.groups)
    return Decision(
        commands=tuple(commands), done=done, rollback_reason=health.rollback_reason if fleet.rolling else None,
        stop=stop,
        groups=tuple(GroupStatus(g.name, len(g.old) - drain.terminated.get(g.name, 0), len(g.new),
                                 health.groups[g.name].ready_new, g.asg.desired_capacity, g.asg.max_size,
                                 health.groups[g.name].proven,
                                 (health.groups[g.name].launch_failure.message
                                  if health.groups[g.name].launch_failure else None)) for g in fleet.groups),
        old_nodes=old_left, new_nodes=sum(len(g.new) for g in fleet.groups),
        new_ready=sum(health.groups[g.name].ready_new for g in fleet.groups), blocking_jobs=drain.waiting_jobs,
        pending_jobs=len(fleet.pending), waiting_for=waiting, notes=tuple(notes),
        launch_failures=tuple(gh.launch_failure for gh in health.groups.values() if gh.launch_failure is not None),
        held=drain.held, wake_at=min((t for t in timers if t > snapshot.now), default=None),
    )


# --------------------------------------------------------------------------- node and instance predicates


def is_surplus(node: Optional[Node]) -> bool:
    return node is not None and any(t.key == TAINT_ROLLOUT and t.value == SURPLUS_TAINT.value for t in node.taints)


def has_old_taint(node: Node) -> bool:
    return any(t.key == TAINT_ROLLOUT and t.value != SURPLUS_TAINT.value for t in node.taints)


def is_cordoned_for_rollout(node: Node) -> bool:
    return node.unschedulable and any(t.key == TAINT_ROLLOUT for t in node.taints)


def _warming(node: Node) -> bool:
    return any(t.key == TAINT_WARMING for t in node.taints)


def is_ready_new(node: Optional[Node]) -> bool:
    """Proven: Ready, carrying the model label and past the warm-up taint."""
    return node is not None and node.ready and LABEL_MODEL_VERSION in node.labels and not _warming(node)


def is_schedulable(node: Node) -> bool:
    return node.ready and not node.unschedulable and not any(t.effect in ("NoSchedule", "NoExecute") for t in node.taints)


def is_old(instance: Instance, target_version: str) -> bool:
    return instance.launch_template_version is not None and instance.launch_template_version != target_version


def is_live(instance: Instance) -> bool:
    return instance.lifecycle_state not in GONE_STATES


def old_node_count(snapshot: Snapshot, group_intents: Iterable[GroupIntent] = ()) -> int:
    """Instances not on their group's target version (the intent's target while a group is pinned)."""
    targets = {gi.asg: gi for gi in group_intents}
    count = 0
    for g in snapshot.groups:
        gi = targets.get(g.name)
        target = gi.target_version if gi is not None and g.launch_template_version == gi.previous_version \
            else g.launch_template_version
        count += sum(1 for i in g.instances if is_live(i) and is_old(i, target))
    return count


# --------------------------------------------------------------------------- group intent and outcome as tags

_TAG_FIELDS = ("original_desired", "original_max", "target_version", "previous_version")


def group_intent_tags(gi: GroupIntent) -> dict[str, str]:
    return {TAG_INTENT_PREFIX + f.replace("_", "-"): str(getattr(gi, f)) for f in _TAG_FIELDS}


def group_intent_tag_keys() -> list[str]:
    return [TAG_INTENT_PREFIX + f.replace("_", "-") for f in _TAG_FIELDS]


def group_intent_from_tags(asg: AutoScalingGroup) -> Optional[GroupIntent]:
    values = {f: asg.tags.get(TAG_INTENT_PREFIX + f.replace("_", "-")) for f in _TAG_FIELDS}
    if any(v is None for v in values.values()):
        return None
    try:
        return GroupIntent(asg=asg.name, original_desired=int(values["original_desired"]),
                           original_max=int(values["original_max"]), target_version=values["target_version"],
                           previous_version=values["previous_version"])
    except ValueError:
        return None


def moved_target(asg: AutoScalingGroup, gi: GroupIntent) -> Optional[GroupIntent]:
    """The group intent once a newer launch template version was published mid-rollout (a
    ``pulumi up`` set the group to a version that is neither the one being rolled out nor the
    previous one): the rollout now goes to that version. Without this, a group pinned to the
    previous version would later be unpinned to the stale target and the newer version undone.
    The previous (proven) version and the original sizes stay. None when nothing moved."""
    version = asg.launch_template_version
    if version in (gi.previous_version, gi.target_version):
        return None
    return GroupIntent(asg=gi.asg, original_desired=gi.original_desired, original_max=gi.original_max,
                       target_version=version, previous_version=gi.previous_version)


def initial_group_intent(asg: AutoScalingGroup) -> Optional[GroupIntent]:
    """What to remember before touching ``asg``; None when it has no old instance."""
    old_versions = [i.launch_template_version for i in asg.instances
                    if is_live(i) and is_old(i, asg.launch_template_version)]
    if not old_versions:
        return None
    previous = max(sorted(set(old_versions)), key=old_versions.count)
    return GroupIntent(asg=asg.name, original_desired=asg.desired_capacity, original_max=asg.max_size,
                       target_version=asg.launch_template_version, previous_version=previous)


def rolled_back_tags(from_version: str, to_version: str, reason: str) -> dict[str, str]:
    return {TAG_ROLLED_BACK_FROM: from_version, TAG_ROLLED_BACK_TO: to_version,
            TAG_ROLLED_BACK_REASON: (reason or "rolled back")[:ROLLED_BACK_REASON_MAX]}


ROLLED_BACK_TAG_KEYS = (TAG_ROLLED_BACK_FROM, TAG_ROLLED_BACK_TO, TAG_ROLLED_BACK_REASON)


def earlier_rollback(asg: AutoScalingGroup) -> Optional[str]:
    """Why a rerun must report ``rolled_back``: this group was rolled back from a version
    and still targets that version or the one restored. None when it targets another
    version (a new one was published: the rollout may try again)."""
    bad, restored = asg.tags.get(TAG_ROLLED_BACK_FROM), asg.tags.get(TAG_ROLLED_BACK_TO)
    if bad is None:
        return None
    if asg.launch_template_version not in (bad, restored):
        return None
    return (f"{asg.name} was rolled back from launch template version {bad} to {restored}: "
            f"{asg.tags.get(TAG_ROLLED_BACK_REASON, '')}")


def finish_commands(snapshot: Snapshot, intent: RolloutIntent, group_intents: Mapping[str, GroupIntent],
                    strategy: Strategy) -> list[Command]:
    """Undo everything the rollout changed besides the fleet itself: max sizes,
    scale-in protection, the autoscaler annotations on new nodes, group intent
    tags and the autoscaler's replicas. After a rollback, record it on each group
    (before the intent goes, so a crash in between changes nothing)."""
    out: list[Command] = []
    by_name = {g.name: g for g in snapshot.groups}
    for name, gi in sorted(group_intents.items()):
        asg = by_name.get(name)
        if asg is None:
            continue
        if asg.max_size != gi.original_max:
            out.append(SetCapacity(name, max_size=max(gi.original_max, asg.desired_capacity)))
        if strategy.protect_instances:
            ids = tuple(i.id for i in asg.instances if i.protected_from_scale_in and is_live(i))
            if ids:
                out.append(Protect(name, ids, False))
    groups_of_nodes = {i.id: g.name for g in snapshot.groups for i in g.instances}
    for node in snapshot.nodes:
        if node.unschedulable and any(t.key == TAINT_ROLLOUT for t in node.taints) \
                and groups_of_nodes.get(node.instance_id or "") in group_intents:
            out.append(Uncordon(groups_of_nodes[node.instance_id], node.name))
    for node in snapshot.nodes:
        if node.annotations.get(ANNOTATION_ROLLOUT_PROTECTED) == "true":
            out.append(AnnotateNode(groups_of_nodes.get(node.instance_id or "", ""), node.name,
                                    ((CA_SCALE_DOWN_DISABLED, None), (ANNOTATION_ROLLOUT_PROTECTED, None))))
    for name, gi in sorted(group_intents.items()):
        asg = by_name.get(name)
        if asg is None:
            continue
        if intent.phase == "rolling_back":
            out.append(MarkRolledBack(name, gi.target_version, gi.previous_version, intent.rollback_reason))
        elif any(k in asg.tags for k in ROLLED_BACK_TAG_KEYS):
            out.append(ClearRolledBack(name))
        out.append(DeleteGroupIntent(name))
    if intent.pause_autoscaler and intent.autoscaler_replicas is not None \
            and snapshot.autoscaler_replicas != intent.autoscaler_replicas:
        out.append(ScaleAutoscaler(intent.autoscaler_replicas))
    return out


# --------------------------------------------------------------------------- words


def _duration(seconds: float) -> str:
    """A span for a person; never an error, whatever a deadline extension made of it."""
    if seconds != seconds:
        return "an unknown time"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    if seconds < 1000 * 86400:
        return f"{seconds / 86400:.0f}d"
    return "more than 1000 days" if seconds != float("inf") else "ever"


def _clock(instant: float) -> str:
    """An instant for a person: UTC wall time when it is one (the real clock), else seconds.
    Never an error: a Job's deadline extension can put a deadline past the year 9999."""
    import datetime as dt
    if instant != instant or instant == float("inf"):
        return "never"
    if instant > 1e9:
        try:
            return dt.datetime.fromtimestamp(instant, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError, OSError):
            return "after the year 9999"
    if instant > 1e7:
        return f"t={instant:.3g}s"
    return f"t={instant:.0f}s"


def _short(message: str, limit: int = 160) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"
