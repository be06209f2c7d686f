"""The rollout's decisions: snapshot + intent + now -> commands. Pure.

Nothing here performs I/O or remembers anything between calls: every cycle the
runner reads the world (:class:`~automation.rollout.model.Snapshot`), the
persisted intent and the group intents, and :func:`decide` answers with the
commands for this cycle. Re-running it on the same world gives the same
answer, which is what makes the rollout resumable after a crash.

Structure, after Karpenter's disruption controller: one *propose* function per
concern (cordon, drain, terminate, capacity, readiness, autoscaler), each
returning commands; :func:`decide` concatenates them. Pod filters are small
composable predicates in the style of kubectl's ``pkg/drain``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from .model import (
    ANNOTATION_DEADLINE_EXTENSION,
    ANNOTATION_ROLLOUT_PROTECTED,
    CA_SCALE_DOWN_DISABLED,
    LABEL_MODEL_VERSION,
    LABEL_NODE_GROUP,
    RESOURCE_GPU,
    TAG_INTENT_PREFIX,
    TAINT_ROLLOUT,
    TAINT_WARMING,
    AutoScalingGroup,
    GroupIntent,
    Instance,
    Node,
    Pod,
    PodDisruptionBudget,
    RolloutIntent,
    Snapshot,
    Taint,
)
from .strategies import Strategy, surge_nodes

ROLLOUT_TAINT = Taint(key=TAINT_ROLLOUT, value="old", effect="NoSchedule")
SURPLUS_TAINT = Taint(key=TAINT_ROLLOUT, value="surplus", effect="NoSchedule")   # a new node above the original max
GONE_STATES = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached"})

# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Cordon:
    asg: str
    node: str
    surplus: bool = False        # a new node drained to bring the group back within its max


@dataclass(frozen=True)
class Uncordon:
    asg: str
    node: str


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
    forced: bool = False         # a Job pod past the rollout's deadline


@dataclass(frozen=True)
class Terminate:
    asg: str
    instance_id: str
    node: Optional[str]
    decrement: bool = True       # False only where a decrement would break the group's min size


@dataclass(frozen=True)
class SetCapacity:
    asg: str
    desired: Optional[int] = None
    max_size: Optional[int] = None


@dataclass(frozen=True)
class SetVersion:
    asg: str
    launch_template_id: str
    version: str


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


Command = (Cordon | Uncordon | AnnotateNode | Evict | Terminate | SetCapacity | SetVersion | Protect
           | ScaleAutoscaler | DeleteGroupIntent)


@dataclass(frozen=True)
class GroupStatus:
    asg: str
    old: int
    new: int
    new_ready: int
    desired: int
    max_size: int
    blocking_jobs: int


@dataclass(frozen=True)
class Decision:
    commands: tuple[Command, ...]
    done: bool
    rollback_reason: Optional[str] = None
    groups: tuple[GroupStatus, ...] = ()
    old_nodes: int = 0
    new_nodes: int = 0
    new_ready: int = 0
    blocking_jobs: int = 0
    pending_jobs: int = 0
    waiting_for: str = ""

    def summary(self) -> dict:
        return {
            "old_nodes": self.old_nodes, "new_nodes": self.new_nodes, "new_ready": self.new_ready,
            "blocking_jobs": self.blocking_jobs, "pending_jobs": self.pending_jobs,
            "commands": len(self.commands), "waiting_for": self.waiting_for,
        }


# --------------------------------------------------------------------------- pod filters (kubectl pkg/drain style)

PodFilter = Callable[[Pod], bool]

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


def is_terminal(pod: Pod) -> bool:
    return pod.phase in ("Succeeded", "Failed")


def is_daemonset(pod: Pod) -> bool:
    return pod.owner_kind == "DaemonSet"


def is_mirror(pod: Pod) -> bool:
    return pod.owner_kind == "Node" or "kubernetes.io/config.mirror" in pod.annotations


def is_deleting(pod: Pod) -> bool:
    return pod.deleting


def owned_by(kinds: frozenset[str]) -> PodFilter:
    """Pods whose controller is of one of ``kinds``."""
    return lambda pod: pod.owner_kind in kinds


def is_job(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    return pod.owner_kind in job_kinds


def is_unmanaged(pod: Pod) -> bool:
    """A bare pod: evicting it loses it for good, so it is treated like a Job."""
    return pod.owner_kind is None


def not_(f: PodFilter) -> PodFilter:
    return lambda pod: not f(pod)


def all_of(*filters: PodFilter) -> PodFilter:
    return lambda pod: all(f(pod) for f in filters)


def any_of(*filters: PodFilter) -> PodFilter:
    return lambda pod: any(f(pod) for f in filters)


# The rules drain uses, written out flat: they run for every pod on every
# cycle, and closures over closures cost more than the rest of a reconcile.
_TERMINAL = frozenset({"Succeeded", "Failed"})


def blocks_drain(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """Pods the rollout waits for (never interrupted before the deadline): pods
    owned by one of ``job_kinds``, and bare pods."""
    kind = pod.owner_kind
    return (pod.phase not in _TERMINAL and (kind is None or kind in job_kinds)
            and "kubernetes.io/config.mirror" not in pod.annotations)


def needs_eviction(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """Pods the rollout evicts through the Eviction API once no Job blocks the node."""
    kind = pod.owner_kind
    return (pod.phase not in _TERMINAL and not pod.deleting and kind is not None
            and kind not in NEVER_EVICTED_OWNER_KINDS and kind not in job_kinds
            and "kubernetes.io/config.mirror" not in pod.annotations)


#: Pods still leaving the node (deletion in progress) that the node must outlive.
still_leaving: PodFilter = all_of(not_(is_terminal), not_(is_daemonset), not_(is_mirror), is_deleting)


def blocks_drain_rule(job_kinds: frozenset[str]) -> PodFilter:
    """:func:`blocks_drain` composed from the small filters (kept equal to the flat rule by the tests)."""
    return all_of(not_(is_terminal), any_of(owned_by(job_kinds), is_unmanaged), not_(is_mirror))


def needs_eviction_rule(job_kinds: frozenset[str]) -> PodFilter:
    """:func:`needs_eviction` composed from the small filters."""
    return all_of(not_(is_terminal), not_(is_daemonset), not_(is_mirror), not_(is_deleting),
                  not_(blocks_drain_rule(job_kinds)))


blocks_drain_composed: PodFilter = blocks_drain_rule(DEFAULT_JOB_OWNER_KINDS)
needs_eviction_composed: PodFilter = needs_eviction_rule(DEFAULT_JOB_OWNER_KINDS)


def pod_deadline(pod: Pod, deadline_at: float) -> float:
    """The rollout's deadline for this pod, extended by its annotation if any."""
    extension = pod.annotations.get(ANNOTATION_DEADLINE_EXTENSION) if pod.annotations else None
    if not extension:
        return deadline_at
    try:
        return deadline_at + max(0.0, float(extension))
    except (TypeError, ValueError):
        return deadline_at


def wants_job_slot(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    """A pending pod the rollout should find capacity for: a Job pod or one asking for the scarce resource."""
    return (pod.phase == "Pending" and pod.node_name is None and not pod.deleting
            and (is_job(pod, job_kinds) or pod.requests.get(RESOURCE_GPU, 0) > 0))


# --------------------------------------------------------------------------- node predicates


def is_surplus(node: Optional[Node]) -> bool:
    return node is not None and any(t.key == TAINT_ROLLOUT and t.value == SURPLUS_TAINT.value for t in node.taints)


def has_old_taint(node: Node) -> bool:
    return any(t.key == TAINT_ROLLOUT and t.value != SURPLUS_TAINT.value for t in node.taints)


def is_cordoned_for_rollout(node: Node) -> bool:
    return node.unschedulable and any(t.key == TAINT_ROLLOUT for t in node.taints)


def is_ready_new(node: Optional[Node]) -> bool:
    """Ready, carrying the model label and past the warm-up taint."""
    return (node is not None and node.ready and LABEL_MODEL_VERSION in node.labels
            and not any(t.key == TAINT_WARMING for t in node.taints))


def is_schedulable(node: Node) -> bool:
    return node.ready and not node.unschedulable and not any(t.effect in ("NoSchedule", "NoExecute") for t in node.taints)


def is_old(instance: Instance, target_version: str) -> bool:
    return instance.launch_template_version is not None and instance.launch_template_version != target_version


def is_live(instance: Instance) -> bool:
    return instance.lifecycle_state not in GONE_STATES


# --------------------------------------------------------------------------- group intent as tags

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


def initial_group_intent(asg: AutoScalingGroup) -> Optional[GroupIntent]:
    """What to remember before touching ``asg``; None when it has no old instance."""
    old_versions = [i.launch_template_version for i in asg.instances
                    if is_live(i) and is_old(i, asg.launch_template_version)]
    if not old_versions:
        return None
    previous = max(sorted(set(old_versions)), key=old_versions.count)
    return GroupIntent(asg=asg.name, original_desired=asg.desired_capacity, original_max=asg.max_size,
                       target_version=asg.launch_template_version, previous_version=previous)


# --------------------------------------------------------------------------- the decision


@dataclass
class _GroupView:
    asg: AutoScalingGroup
    intent: GroupIntent
    target: str
    old: list[Instance] = field(default_factory=list)
    new: list[Instance] = field(default_factory=list)
    new_ready: int = 0
    blocking: int = 0
    terminated_now: int = 0           # old instances terminated this cycle
    decremented_now: int = 0          # of those, with desired decremented in the same call
    slots_per_node: float = 1.0
    labels: dict = field(default_factory=dict)
    free_slots: list[float] = field(default_factory=list)   # ready new nodes and nodes still booting
    excess: int = 0                   # desired above the original max once no old node is left


class _Budgets:
    """PodDisruptionBudget headroom, spent as evictions are planned this cycle."""

    def __init__(self, pdbs: Sequence[PodDisruptionBudget]):
        self._pdbs = list(pdbs)
        self._left = {(p.namespace, p.name): p.disruptions_allowed for p in pdbs}

    def matching(self, pod: Pod) -> list[PodDisruptionBudget]:
        return [p for p in self._pdbs if p.namespace == pod.namespace and p.match_labels
                and all(pod.labels.get(k) == v for k, v in p.match_labels.items())]

    def try_spend(self, pod: Pod) -> bool:
        pdbs = self.matching(pod)
        if any(self._left[(p.namespace, p.name)] <= 0 for p in pdbs):
            return False
        for p in pdbs:
            self._left[(p.namespace, p.name)] -= 1
        return True


def decide(snapshot: Snapshot, intent: RolloutIntent, group_intents: Mapping[str, GroupIntent],
           strategy: Strategy, first_seen: Mapping[str, float] | None = None,
           job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> Decision:
    """Commands for this cycle. ``first_seen``: when the runner first saw each
    instance, used for the ready timeout when the cloud gives no launch time.
    ``job_kinds``: owner kinds whose pods are Jobs (``RolloutOptions.job_owner_kinds``;
    taken from the options each run, not persisted: a rerun passes the same flags)."""
    first_seen = first_seen or {}
    now = snapshot.now
    rolling = intent.phase == "rolling"
    nodes_by_instance = {n.instance_id: n for n in snapshot.nodes if n.instance_id}
    pods_by_node: dict[str, list[Pod]] = defaultdict(list)
    pending: list[Pod] = []
    for pod in snapshot.pods:
        if pod.node_name:
            pods_by_node[pod.node_name].append(pod)
        elif wants_job_slot(pod, job_kinds):
            pending.append(pod)

    budgets = _Budgets(snapshot.pdbs)
    autoscaler_active = (not intent.pause_autoscaler and bool(snapshot.autoscaler_replicas))
    commands: list[Command] = []
    rollback_reason: Optional[str] = None
    views: list[_GroupView] = []

    commands += propose_autoscaler_pause(snapshot, intent)
    for asg in sorted(snapshot.groups, key=lambda g: g.name):
        gi = group_intents.get(asg.name)
        if gi is None:
            continue
        target = asg.launch_template_version if rolling else gi.previous_version
        if not rolling and asg.launch_template_version != gi.previous_version:
            commands.append(SetVersion(asg.name, asg.launch_template_id, gi.previous_version))
        view = _GroupView(asg=asg, intent=gi, target=target)
        for inst in asg.instances:
            if is_live(inst):
                (view.old if is_old(inst, target) else view.new).append(inst)
        _learn_group_shape(view, nodes_by_instance)
        views.append(view)

        commands += propose_new_nodes(view, nodes_by_instance, pods_by_node, autoscaler_active, rolling, job_kinds)
        if rolling and strategy.check_readiness and rollback_reason is None:
            rollback_reason = ready_timeout_reason(view, nodes_by_instance, first_seen, now,
                                                   intent.ready_timeout_seconds)
        commands += propose_drain(view, nodes_by_instance, pods_by_node, budgets, intent.deadline_at, now,
                                  job_kinds)
        if strategy.protect_instances and rolling:
            commands += propose_protection(view)

    extras = extra_nodes_for_pending(views, pending) if (
        rolling and strategy.add_for_pending and intent.surge is None) else {}
    for view in views:
        commands += propose_capacity(view, strategy, intent, rolling, extras.get(view.asg.name, 0))
        commands += propose_trim(view, nodes_by_instance, pods_by_node, budgets, job_kinds)

    old_total = sum(len(v.old) - v.terminated_now for v in views)
    proven = all(v.new_ready > 0 or v.intent.original_desired == 0 for v in views)
    needs_proof = rolling and strategy.check_readiness
    done = (not commands and old_total == 0 and (proven or not needs_proof)
            and not any(v.excess for v in views))
    if done:
        waiting = ""
    elif old_total and sum(v.blocking for v in views):
        waiting = "running Jobs on old nodes"
    elif needs_proof and not proven:
        waiting = "new nodes to become ready"
    elif any(v.excess for v in views):
        waiting = "Jobs on surplus new nodes (above the original max)"
    else:
        waiting = "changes to settle"
    return Decision(
        commands=tuple(commands), done=done, rollback_reason=rollback_reason,
        groups=tuple(GroupStatus(v.asg.name, len(v.old) - v.terminated_now, len(v.new), v.new_ready,
                                 v.asg.desired_capacity, v.asg.max_size, v.blocking) for v in views),
        old_nodes=old_total, new_nodes=sum(len(v.new) for v in views),
        new_ready=sum(v.new_ready for v in views), blocking_jobs=sum(v.blocking for v in views),
        pending_jobs=len(pending), waiting_for=waiting,
    )


def _learn_group_shape(view: _GroupView, nodes_by_instance: Mapping[str, Node]) -> None:
    """Slots per node and labels of the group, from one registered node (a
    group's nodes share one launch template, so one tells for all)."""
    view.labels = {LABEL_NODE_GROUP: view.asg.node_group}
    view.slots_per_node = 1.0
    for inst in view.new + view.old:
        node = nodes_by_instance.get(inst.id)
        if node is not None:
            view.slots_per_node = float(node.allocatable.get(RESOURCE_GPU, 0.0)) or 1.0
            for k, v in node.labels.items():
                if k != LABEL_MODEL_VERSION:
                    view.labels.setdefault(k, v)
            return


def propose_autoscaler_pause(snapshot: Snapshot, intent: RolloutIntent) -> list[Command]:
    if intent.pause_autoscaler and snapshot.autoscaler_replicas:
        return [ScaleAutoscaler(0)]
    return []


def propose_new_nodes(view: _GroupView, nodes_by_instance: Mapping[str, Node],
                      pods_by_node: Mapping[str, list[Pod]], autoscaler_active: bool,
                      rolling: bool, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> list[Command]:
    """Count ready new nodes and their free slots; undo a rollout cordon on a
    node that is current again (after a rollback); keep cluster-autoscaler off
    replacement nodes while the rollout counts on them."""
    out: list[Command] = []
    for inst in view.new:
        node = nodes_by_instance.get(inst.id)
        if node is None:
            view.free_slots.append(view.slots_per_node)
            continue
        if has_old_taint(node):
            out.append(Uncordon(view.asg.name, node.name))
        if is_ready_new(node):
            view.new_ready += 1
            if is_schedulable(node) or has_old_taint(node):
                used = sum(p.requests.get(RESOURCE_GPU, 1.0) for p in pods_by_node.get(node.name, ())
                           if not is_terminal(p) and wants_slot_on_node(p, job_kinds))
                view.free_slots.append(max(0.0, float(node.allocatable.get(RESOURCE_GPU, view.slots_per_node)) - used))
        elif not node.unschedulable:
            view.free_slots.append(float(node.allocatable.get(RESOURCE_GPU, view.slots_per_node)))
        # Only while old nodes remain: afterwards the annotation is being removed, not added.
        if rolling and autoscaler_active and view.old and node.annotations.get(CA_SCALE_DOWN_DISABLED) != "true":
            out.append(AnnotateNode(view.asg.name, node.name,
                                    ((CA_SCALE_DOWN_DISABLED, "true"), (ANNOTATION_ROLLOUT_PROTECTED, "true"))))
    return out


def wants_slot_on_node(pod: Pod, job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> bool:
    return is_job(pod, job_kinds) or pod.requests.get(RESOURCE_GPU, 0) > 0


def ready_timeout_reason(view: _GroupView, nodes_by_instance: Mapping[str, Node],
                         first_seen: Mapping[str, float], now: float, timeout: float) -> Optional[str]:
    for inst in view.new:
        if is_ready_new(nodes_by_instance.get(inst.id)):
            continue
        since = inst.launched_at if inst.launched_at is not None else first_seen.get(inst.id, now)
        if now - since > timeout:
            return (f"instance {inst.id} in {view.asg.name} not ready (Ready, model label, warm) "
                    f"within {timeout:.0f}s of launch")
    return None


def propose_drain(view: _GroupView, nodes_by_instance: Mapping[str, Node], pods_by_node: Mapping[str, list[Pod]],
                  budgets: _Budgets, deadline_at: float, now: float,
                  job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> list[Command]:
    """Cordon every old node; once no Job blocks it, evict the rest through the
    Eviction API; once empty, terminate that exact instance (with decrement).
    Past the deadline, Job pods are evicted too (counted as forced)."""
    out: list[Command] = []
    asg = view.asg.name
    for inst in view.old:
        node = nodes_by_instance.get(inst.id)
        if node is None:                 # never registered (or gone): nothing can run there
            out.append(_terminate_old(view, inst.id, None))
            continue
        pods = pods_by_node.get(node.name, ())
        if not is_cordoned_for_rollout(node) or node.annotations.get(CA_SCALE_DOWN_DISABLED) != "true":
            out.append(Cordon(asg, node.name))
            if not node.unschedulable:
                # Judge emptiness only on a node seen cordoned: a pod bound after
                # this snapshot but before the cordon must not die with the node.
                view.blocking += sum(1 for p in pods if blocks_drain(p, job_kinds))
                continue
        blocking = [p for p in pods if blocks_drain(p, job_kinds)]
        if blocking:
            if now < deadline_at:        # extensions only extend: nothing can be due yet
                view.blocking += len(blocking)
                continue
            for pod in blocking:
                if now < pod_deadline(pod, deadline_at):
                    view.blocking += 1
                elif not pod.deleting:
                    out.append(Evict(asg, node.name, pod.namespace, pod.name, job=True, forced=True))
            continue
        to_evict = [p for p in pods if needs_eviction(p, job_kinds)]
        if to_evict:
            for pod in to_evict:
                if budgets.try_spend(pod):
                    out.append(Evict(asg, node.name, pod.namespace, pod.name))
            continue
        if any(still_leaving(p) for p in pods):
            continue
        out.append(_terminate_old(view, inst.id, node.name))
    return out


def _terminate_old(view: _GroupView, instance_id: str, node: Optional[str]) -> Terminate:
    """Terminate exactly this instance, decrementing desired in the same call —
    unless desired is at the group's min size, where Auto Scaling refuses the
    decrement (ValidationError) and the group would never get past it: then the
    group replaces the instance itself, on its current launch template version."""
    decrement = view.asg.desired_capacity - view.decremented_now > view.asg.min_size
    view.terminated_now += 1
    view.decremented_now += int(decrement)
    return Terminate(view.asg.name, instance_id, node, decrement=decrement)


def propose_protection(view: _GroupView) -> list[Command]:
    ids = tuple(i.id for i in view.old + view.new if not i.protected_from_scale_in)
    return [Protect(view.asg.name, ids, True)] if ids else []


def extra_nodes_for_pending(views: Sequence[_GroupView], pending: Iterable[Pod]) -> dict[str, int]:
    """Nodes to add, per group, for pending Job pods that no ready or booting
    new node can take. First fit into free slots, then into virtual new nodes
    of the fitting group with the most slots per node and room under its max."""
    extras: dict[str, int] = defaultdict(int)
    free = {v.asg.name: sorted(v.free_slots, reverse=True) for v in views}
    virtual: dict[str, list[float]] = defaultdict(list)
    for pod in sorted(pending, key=lambda p: (p.created_at, p.key)):
        need = float(pod.requests.get(RESOURCE_GPU, 1.0)) or 1.0
        fitting = [v for v in views if all(v.labels.get(k) == val for k, val in pod.node_selector.items())]
        if not fitting:
            continue
        placed = False
        for v in fitting:
            for pool in (free[v.asg.name], virtual[v.asg.name]):
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
        room = [v for v in fitting if v.slots_per_node >= need
                and len(v.new) + extras[v.asg.name] < v.intent.original_max]
        if not room:
            continue
        best = max(room, key=lambda v: (v.slots_per_node, v.intent.original_max - len(v.new) - extras[v.asg.name]))
        extras[best.asg.name] += 1
        virtual[best.asg.name].append(best.slots_per_node - need)
    return dict(extras)


def propose_capacity(view: _GroupView, strategy: Strategy, intent: RolloutIntent, rolling: bool,
                     extra: int) -> list[Command]:
    """Raise desired (and max, only as far as needed) so the group gets the new
    nodes it should have now. Desired is never lowered here: nodes leave only by
    exact terminate-with-decrement, so nothing fights cluster-autoscaler."""
    orig = view.intent.original_desired
    old_after = len(view.old) - view.terminated_now
    desired_after = view.asg.desired_capacity - view.decremented_now
    if old_after <= 0 or not rolling:
        want_new = orig
    else:
        if strategy.double:
            ahead = orig
        else:
            fixed = surge_nodes(intent.surge, orig)
            ahead = fixed if fixed is not None else (1 if strategy.canary else 0)
        want_new = min(orig, max(0, orig - old_after) + ahead)
    want_new = min(want_new + extra, max(view.intent.original_max, orig))
    want_desired = old_after + want_new
    # Max is kept as tight as the rollout allows: raised only to what it asks
    # for, lowered again as old nodes leave, so cluster-autoscaler never grows
    # into headroom the rollout made and the original max can be restored.
    tight_max = max(view.intent.original_max, want_desired, desired_after)
    if want_desired > desired_after:
        # Max goes with desired in the same call, so a world that moved since the
        # snapshot (a node lost, a terminate that found nothing) cannot make it invalid.
        return [SetCapacity(view.asg.name, desired=want_desired, max_size=max(tight_max, want_desired))]
    if view.asg.max_size > tight_max:
        return [SetCapacity(view.asg.name, max_size=tight_max)]
    return []


def propose_trim(view: _GroupView, nodes_by_instance: Mapping[str, Node], pods_by_node: Mapping[str, list[Pod]],
                 budgets: "_Budgets", job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS) -> list[Command]:
    """Once no old node is left, bring desired back within the original max
    (a node lost mid-rollout can leave both its replacement and the surge):
    terminate idle new nodes exactly; if too few are idle, cordon the least
    busy ones as surplus and drain them like old nodes — never a running Job."""
    if len(view.old) - view.terminated_now > 0:
        return []
    excess = view.asg.desired_capacity - view.decremented_now - view.intent.original_max
    view.excess = max(0, excess)
    if excess <= 0:
        return [Uncordon(view.asg.name, n.name) for n in (nodes_by_instance.get(i.id) for i in view.new)
                if is_surplus(n)]
    out: list[Command] = []
    idle, draining, busy = [], [], []
    for inst in view.new:
        node = nodes_by_instance.get(inst.id)
        pods = pods_by_node.get(node.name, ()) if node is not None else ()
        work = [p for p in pods if blocks_drain(p, job_kinds) or needs_eviction(p, job_kinds) or still_leaving(p)]
        entry = (is_ready_new(node), -(inst.launched_at or 0.0), inst.id, node, work)
        if not work:
            idle.append(entry)
        elif is_surplus(node):
            draining.append(entry)
        else:
            busy.append(entry)
    idle.sort(key=lambda e: e[:3])                   # not yet ready first, then the newest
    for ready, _, iid, node, _ in idle[:excess]:
        if node is not None and node.ready and not is_surplus(node):
            out.append(Cordon(view.asg.name, node.name, surplus=True))   # terminate once seen cordoned
        else:
            out.append(Terminate(view.asg.name, iid, node.name if node else None))
    still = excess - min(excess, len(idle))
    for _, _, _, node, work in draining[:still]:
        if not any(blocks_drain(p, job_kinds) for p in work):
            for pod in work:
                if needs_eviction(pod, job_kinds) and budgets.try_spend(pod):
                    out.append(Evict(view.asg.name, node.name, pod.namespace, pod.name))
    busy.sort(key=lambda e: (sum(1 for p in e[4] if blocks_drain(p, job_kinds)), e[2]))
    for _, _, _, node, _ in busy[: max(0, still - len(draining))]:
        out.append(Cordon(view.asg.name, node.name, surplus=True))
    return out


def finish_commands(snapshot: Snapshot, intent: RolloutIntent, group_intents: Mapping[str, GroupIntent],
                    strategy: Strategy) -> list[Command]:
    """Undo everything the rollout changed besides the fleet itself: max sizes,
    scale-in protection, the autoscaler annotations on new nodes, group intent
    tags and the autoscaler's replicas."""
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
    for name in sorted(group_intents):
        if name in by_name:
            out.append(DeleteGroupIntent(name))
    if intent.pause_autoscaler and intent.autoscaler_replicas is not None \
            and snapshot.autoscaler_replicas != intent.autoscaler_replicas:
        out.append(ScaleAutoscaler(intent.autoscaler_replicas))
    return out


def old_node_count(snapshot: Snapshot) -> int:
    return sum(1 for g in snapshot.groups for i in g.instances
               if is_live(i) and is_old(i, g.launch_template_version))
