"""The termination handler's decisions: a snapshot of the world + now -> actions. Pure.

Nothing here performs I/O, reads a clock or remembers anything between calls.
The handler (``handler.py``) reads the world each cycle — this cluster's ASG
instances and their lifecycle states, the nodes, the live pods on the nodes
that matter, the PodDisruptionBudgets, the queue's notices — and
:func:`decide` answers with the actions for this cycle. The simulator can run
the same function against its virtual cluster.

What kiln persists is intent, on the node itself: a ``kiln.dev/terminating``
NoSchedule taint and, per notice reason, an annotation
``kiln.dev/terminating-<reason>`` holding when that notice arrived (RFC 3339).
Everything else is derived each time: an ASG instance in ``Terminating:Wait`` is
a lifecycle action to hold or complete; a node carrying a draining mark has its
non-Job pods evicted until it is gone. A handler that restarts mid-hold reads
the start time back from the node and carries on.

Per notice (the reasons):

* ``lifecycle-termination`` (an ASG terminating an instance: scale-in by
  cluster-autoscaler or by hand, capacity rebalancing, a failed health check,
  kiln's own rollout): cordon and taint, evict non-Job pods (PDBs respected),
  hold the instance in ``Terminating:Wait`` with heartbeats while Job pods run,
  up to the Job grace (plus a pod's deadline extension, never past the hook's
  global timeout); then evict the Jobs still running, give them time to stop,
  and complete the action with CONTINUE.
* ``spot-interruption``, ``instance-stopping``: cordon, evict non-Job pods at
  once; Job pods are left to the kubelet's graceful shutdown (kiln cannot hold
  a reclaim or a stop).
* ``rebalance-recommendation``, ``scheduled-change``: cordon only, so new work
  goes elsewhere.

A node the rollout drained itself (cordoned, nothing left on it) is completed
at once, untouched: the rollout and the handler never fight.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Mapping, Optional, Sequence

from .rules import (
    DEFAULT_JOB_OWNER_KINDS,
    TAINT_ROLLOUT,
    Node,
    Pod,
    PodDisruptionBudget,
    is_job,
    needs_eviction,
    parse_time,
    pod_deadline,
    still_leaving,
    unreadable_extension,
)

HOOK_NAME = "kiln-termination"                 # infra/lifecycle.py HOOK_NAME (a test keeps them equal)
TAINT_TERMINATING = "kiln.dev/terminating"     # value: the first reason; effect NoSchedule
ANNOTATION_PREFIX = "kiln.dev/terminating-"    # + reason value: RFC 3339 time the notice arrived
MAX_GLOBAL_TIMEOUT_SECONDS = 48 * 3600
GLOBAL_TIMEOUT_HEARTBEATS = 100
# After the Job grace, Jobs still running are evicted and get this long to stop.
AFTER_GRACE_SECONDS = 300.0
# The handler completes an action this long before AWS's global timeout would.
COMPLETE_MARGIN_SECONDS = 60.0

WAITING = "Terminating:Wait"
# Lifecycle states past kiln's hook: the action is over (completed, or the instance gone).
PAST_THE_HOOK = frozenset({"Terminating:Proceed", "Terminated", "Detaching", "Detached", "Warmed:Terminated"})


class Reason(str, Enum):
    LIFECYCLE = "lifecycle-termination"
    SPOT = "spot-interruption"
    STOPPING = "instance-stopping"
    REBALANCE = "rebalance-recommendation"
    SCHEDULED = "scheduled-change"

    @property
    def annotation(self) -> str:
        return ANNOTATION_PREFIX + self.value


# Reasons whose node is going away now: its non-Job pods are evicted.
DRAINING = frozenset({Reason.LIFECYCLE, Reason.SPOT, Reason.STOPPING})
# Reasons kiln cannot hold: Job pods get only the kubelet's graceful shutdown.
UNHOLDABLE = frozenset({Reason.SPOT, Reason.STOPPING})


# --------------------------------------------------------------------------- what the handler sees


@dataclass(frozen=True)
class Notice:
    """One queue message, parsed (``events.parse_message``). ``reason`` None: not understood."""

    message_id: str
    reason: Optional[Reason]
    instance_ids: tuple[str, ...] = ()
    time: float = 0.0                 # when AWS emitted the event
    asg: Optional[str] = None         # lifecycle actions: the group and the hook
    hook: Optional[str] = None
    at: Optional[float] = None        # when it takes effect: spot reclaim, scheduled change start
    detail: str = ""                  # what it is (for operators), or why it was not understood


@dataclass(frozen=True)
class Instance:
    """An instance of one of this cluster's ASGs, as Auto Scaling describes it."""

    id: str
    asg: str
    lifecycle_state: str


@dataclass(frozen=True)
class Snapshot:
    """The world as read at the start of a cycle.

    ``nodes`` is None when the cluster could not be read: then nothing is
    completed early (fail closed). ``pods`` are the live pods on the nodes that
    matter this cycle (those named by a notice or an action, or carrying a
    mark, and nodes without a provider ID). ``started`` and ``heartbeats`` are
    what this handler process remembers (when a lifecycle action's notice said
    it began; when it last recorded a heartbeat): lost on a restart, which only
    makes the next heartbeat come at once.
    """

    groups: frozenset[str]
    instances: Mapping[str, Instance]
    nodes: Optional[tuple[Node, ...]]
    pods: tuple[Pod, ...] = ()
    pdbs: tuple[PodDisruptionBudget, ...] = ()
    notices: tuple[Notice, ...] = ()
    started: Mapping[str, float] = field(default_factory=dict)
    heartbeats: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    hook_name: str = HOOK_NAME
    job_grace_seconds: float = 7200.0
    heartbeat_timeout_seconds: float = 300.0
    job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS

    @property
    def global_timeout_seconds(self) -> float:
        return min(MAX_GLOBAL_TIMEOUT_SECONDS, GLOBAL_TIMEOUT_HEARTBEATS * self.heartbeat_timeout_seconds)

    @property
    def heartbeat_every_seconds(self) -> float:
        """A heartbeat well inside the timeout, so one lost call or a leader change costs nothing."""
        return self.heartbeat_timeout_seconds / 3.0


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Mark:
    """Cordon the node, taint it ``kiln.dev/terminating=<first reason>:NoSchedule`` and
    annotate each reason with when its notice arrived (one patch; existing marks stay)."""

    node: str
    instance_id: Optional[str]
    reasons: tuple[tuple[Reason, float], ...]


@dataclass(frozen=True)
class Evict:
    node: str
    instance_id: Optional[str]
    namespace: str
    name: str
    job: bool = False                 # a Job pod whose time is up (forced, like the rollout after its deadline)


@dataclass(frozen=True)
class Heartbeat:
    instance_id: str
    asg: str
    hook: str


@dataclass(frozen=True)
class Complete:
    """Complete the lifecycle action with CONTINUE: the instance terminates."""

    instance_id: str
    asg: str
    hook: str
    why: str


@dataclass(frozen=True)
class Ref:
    kind: str                         # Node | Pod
    name: str
    namespace: Optional[str] = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on a node or pod, where operators look (``kubectl describe``)."""

    instance_id: Optional[str]
    regarding: Ref
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class DeleteMessage:
    """Done with this message — unless an action for one of ``instance_ids`` failed this cycle."""

    message_id: str
    instance_ids: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class KeepMessage:
    """Leave the message: it becomes visible again after the queue's visibility timeout and,
    after the redrive policy's receive count, moves to the dead-letter queue."""

    message_id: str
    why: str
    poison: bool = False              # not understood at all (as opposed to: not yet)


Action = Mark | Evict | Heartbeat | Complete | Event | DeleteMessage | KeepMessage


@dataclass(frozen=True)
class Hold:
    """An instance kiln keeps in ``Terminating:Wait``, and why (for the report and operators)."""

    instance_id: str
    node: Optional[str]
    until: float
    waiting_for: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    holds: tuple[Hold, ...] = ()

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]


# --------------------------------------------------------------------------- helpers (pure)


def format_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def marks_of(node: Node) -> dict[Reason, float]:
    """The reasons kiln has marked this node with, and when each notice arrived."""
    out: dict[Reason, float] = {}
    for reason in Reason:
        value = node.annotations.get(reason.annotation) if node.annotations else None
        if value:
            try:
                out[reason] = parse_time(value)
            except ValueError:
                out[reason] = 0.0     # unreadable: the earliest possible (never holds longer than it should)
    return out


def has_kiln_taint(node: Node) -> bool:
    return any(t.key == TAINT_TERMINATING for t in node.taints)


def is_fenced(node: Node) -> bool:
    """Nothing new can be scheduled here: cordoned, or tainted by kiln (its own taint or the rollout's).
    Only on a node seen fenced can "nothing is running" be trusted: a pod bound after the
    snapshot but before a cordon must not die with the node (the rollout's rule)."""
    return node.unschedulable or any(t.key in (TAINT_TERMINATING, TAINT_ROLLOUT) and t.effect in ("NoSchedule", "NoExecute")
                                     for t in node.taints)


def drained_by_rollout(node: Node) -> bool:
    return node.unschedulable and any(t.key == TAINT_ROLLOUT for t in node.taints)


class _Budgets:
    """PodDisruptionBudget headroom, spent as evictions are planned (the API server has the last word)."""

    def __init__(self, pdbs: Sequence[PodDisruptionBudget]):
        self._pdbs = list(pdbs)
        self._left = {(p.namespace, p.name): p.disruptions_allowed for p in pdbs}

    def blocking(self, pod: Pod) -> list[str]:
        return [f"{p.namespace}/{p.name}" for p in self._matching(pod) if self._left[(p.namespace, p.name)] <= 0]

    def _matching(self, pod: Pod) -> list[PodDisruptionBudget]:
        return [p for p in self._pdbs if p.namespace == pod.namespace and p.match_labels
                and all(pod.labels.get(k) == v for k, v in p.match_labels.items())]

    def try_spend(self, pod: Pod) -> bool:
        if self.blocking(pod):
            return False
        for p in self._matching(pod):
            self._left[(p.namespace, p.name)] -= 1
        return True


def _when(epoch: Optional[float]) -> str:
    return format_time(epoch) if epoch is not None else "shortly"


def _pods(pods: Iterable[Pod], limit: int = 5) -> str:
    keys = sorted(p.key for p in pods)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# --------------------------------------------------------------------------- the decision


@dataclass
class _Cycle:
    snapshot: Snapshot
    now: float
    settings: Settings
    nodes_by_instance: dict[str, Node] = field(default_factory=dict)
    unmapped: list[Node] = field(default_factory=list)
    pods_by_node: dict[str, list[Pod]] = field(default_factory=lambda: defaultdict(list))
    new_marks: dict[str, dict[Reason, float]] = field(default_factory=lambda: defaultdict(dict))
    notice_started: dict[str, float] = field(default_factory=dict)
    settle: list = field(default_factory=list)          # what becomes of each message, after the actions
    actions: list = field(default_factory=list)
    holds: list = field(default_factory=list)

    def __post_init__(self) -> None:
        for node in self.snapshot.nodes or ():
            if node.instance_id:
                self.nodes_by_instance[node.instance_id] = node
            else:
                self.unmapped.append(node)
        for pod in self.snapshot.pods:
            if pod.node_name:
                self.pods_by_node[pod.node_name].append(pod)
        self.budgets = _Budgets(self.snapshot.pdbs)

    def jobs_on(self, node: Node) -> list[Pod]:
        return [p for p in self.pods_by_node.get(node.name, ()) if is_job(p, self.settings.job_kinds)]

    def unmapped_jobs(self) -> list[Pod]:
        return [p for n in self.unmapped for p in self.jobs_on(n)]


def decide(snapshot: Snapshot, now: float, settings: Settings = Settings()) -> Decision:
    """The actions for this cycle, in the order they should run."""
    c = _Cycle(snapshot, now, settings)
    read_notices(c)
    waiting = sorted((i for i in snapshot.instances.values() if i.lifecycle_state == WAITING), key=lambda i: i.id)
    if snapshot.nodes is not None:
        mark_lifecycle_nodes(c, waiting)
        apply_marks(c)
        evict_from_draining_nodes(c)
    for instance in waiting:
        hold_or_complete(c, instance)
    finish_notices(c)
    return Decision(actions=tuple(c.actions), holds=tuple(c.holds))


# ---- notices --------------------------------------------------------------------------------------------


def read_notices(c: _Cycle) -> None:
    """What each notice asks for: a mark on a node, a lifecycle action to track, or nothing.

    Messages are settled at the end of the cycle (``finish_notices``), after the actions
    they depend on, so a mark that fails leaves its message to be delivered again.
    """
    for notice in c.snapshot.notices:
        if notice.reason is None:
            c.settle.append(KeepMessage(notice.message_id, f"not a notice kiln understands: {notice.detail}", poison=True))
        elif c.snapshot.nodes is None:
            c.settle.append(KeepMessage(notice.message_id, "the cluster could not be read; retried"))
        elif notice.reason is Reason.LIFECYCLE:
            _lifecycle_notice(c, notice)
        else:
            _instance_notice(c, notice)


def _lifecycle_notice(c: _Cycle, notice: Notice) -> None:
    [instance_id] = notice.instance_ids[:1] or [""]
    if notice.asg not in c.snapshot.groups:
        c.settle.append(DeleteMessage(notice.message_id, (), f"{notice.asg!r} is not one of this cluster's ASGs"))
        return
    if notice.hook != c.settings.hook_name:
        c.settle.append(DeleteMessage(notice.message_id, (), f"hook {notice.hook!r} is not kiln's ({c.settings.hook_name})"))
        return
    instance = c.snapshot.instances.get(instance_id)
    if instance is None or instance.lifecycle_state in PAST_THE_HOOK:
        state = instance.lifecycle_state if instance else "gone"
        c.settle.append(DeleteMessage(notice.message_id, (), f"{instance_id} is past the hook ({state})"))
        return
    if instance.lifecycle_state != WAITING:
        # Auto Scaling's describe can lag the event by a moment: look again when the message returns.
        c.settle.append(KeepMessage(notice.message_id, f"{instance_id} is {instance.lifecycle_state}, "
                                                       f"not yet {WAITING}"))
        return
    c.notice_started[instance_id] = min(notice.time, c.notice_started.get(instance_id, notice.time))
    c.settle.append(DeleteMessage(notice.message_id, (instance_id,), f"lifecycle action of {instance_id} taken up"))


def _instance_notice(c: _Cycle, notice: Notice) -> None:
    unknown = []
    for instance_id in notice.instance_ids:
        node = c.nodes_by_instance.get(instance_id)
        if node is not None:
            have = marks_of(node)
            if notice.reason not in have and notice.reason not in c.new_marks.get(node.name, {}):
                c.new_marks[node.name][notice.reason] = notice.time
        elif instance_id not in c.snapshot.instances:
            unknown.append(instance_id)
    jobs = c.unmapped_jobs()
    if unknown and jobs:
        # It may be one of the nodes that have no provider ID yet, and a Job runs there: look again later.
        c.settle.append(KeepMessage(notice.message_id, f"{', '.join(unknown)} may be one of the nodes without a "
                                                       f"provider ID ({', '.join(sorted(n.name for n in c.unmapped))}) "
                                                       "that run Jobs; retried"))
        return
    why = (f"{notice.reason.value} for {', '.join(notice.instance_ids) or 'no instance'}"
           + (f" ({', '.join(unknown)}: not a node of this cluster)" if unknown else ""))
    c.settle.append(DeleteMessage(notice.message_id, tuple(i for i in notice.instance_ids if i not in unknown), why))


def finish_notices(c: _Cycle) -> None:
    c.actions.extend(c.settle)


# ---- marks ----------------------------------------------------------------------------------------------


def _lifecycle_start(c: _Cycle, instance_id: str, node: Optional[Node]) -> float:
    """When the lifecycle action began: the node's mark (persisted), else what a notice said, else now."""
    if node is not None:
        marked = marks_of(node).get(Reason.LIFECYCLE)
        if marked is not None:
            return marked
    known = [t for t in (c.notice_started.get(instance_id), c.snapshot.started.get(instance_id)) if t is not None]
    return min(known) if known else c.now


def mark_lifecycle_nodes(c: _Cycle, waiting: Sequence[Instance]) -> None:
    """Every node whose instance waits on the hook gets the lifecycle mark — unless it is already
    fenced and empty (the rollout drained it, or nothing ran there): that one completes untouched."""
    for instance in waiting:
        node = c.nodes_by_instance.get(instance.id)
        if node is None or Reason.LIFECYCLE in marks_of(node):
            continue
        if is_fenced(node) and not _work_left(c, node):
            continue
        c.new_marks[node.name][Reason.LIFECYCLE] = _lifecycle_start(c, instance.id, None)


def _work_left(c: _Cycle, node: Node) -> list[Pod]:
    kinds = c.settings.job_kinds
    return [p for p in c.pods_by_node.get(node.name, ())
            if is_job(p, kinds) or needs_eviction(p, kinds) or still_leaving(p)]


def apply_marks(c: _Cycle) -> None:
    by_name = {n.name: n for n in c.snapshot.nodes or ()}
    for node in sorted(by_name.values(), key=lambda n: n.name):
        new = c.new_marks.get(node.name) or {}
        if new:
            reasons = tuple(sorted(new.items(), key=lambda kv: (kv[1], kv[0].value)))
            c.actions.append(Mark(node.name, node.instance_id, reasons))
            for reason, at in reasons:
                _announce(c, node, reason, at)
        elif marks_of(node) and not (node.unschedulable and has_kiln_taint(node)):
            # Someone uncordoned a node kiln is draining (the rollout finishing, say): fence it again.
            existing = tuple(sorted(marks_of(node).items(), key=lambda kv: (kv[1], kv[0].value)))
            c.actions.append(Mark(node.name, node.instance_id, existing))


def _announce(c: _Cycle, node: Node, reason: Reason, at: float) -> None:
    """Events for a new mark, on the node and on each Job pod running there."""
    jobs = c.jobs_on(node)
    notice = next((n for n in c.snapshot.notices if n.reason is reason and node.instance_id in n.instance_ids), None)
    effect = notice.at if notice else None
    iid = node.instance_id
    if reason is Reason.LIFECYCLE:
        release = at + c.settings.job_grace_seconds
        text = (f"Auto Scaling is terminating instance {iid}: cordoned; non-Job pods are evicted; "
                + (f"kiln holds the instance while {len(jobs)} Job pod(s) run, until {_when(release)} at most"
                   if jobs else "no Job pod runs here"))
        pod_text = lambda p: (f"node {node.name} is being terminated; kiln keeps it until this pod finishes, "  # noqa: E731
                              f"until {_when(_job_due(c, p, at))} at most")
        warn = False
    elif reason in UNHOLDABLE:
        what = "spot interruption" if reason is Reason.SPOT else "instance stopping or shutting down"
        text = (f"{what} of {iid} at {_when(effect)}: cordoned; non-Job pods are evicted now; "
                f"{len(jobs)} Job pod(s) get the kubelet's graceful shutdown (kiln cannot hold this)")
        pod_text = lambda p: (f"node {node.name} goes away at {_when(effect)} ({what}); kiln cannot hold it: "  # noqa: E731
                              "this pod gets SIGTERM from the kubelet's graceful shutdown")
        warn = True
    else:
        what = ("rebalance recommendation" if reason is Reason.REBALANCE
                else f"AWS Health scheduled change {notice.detail if notice else ''}".rstrip())
        when = f" from {_when(effect)}" if effect else ""
        text = f"{what} for {iid}{when}: cordoned so new work goes elsewhere; running pods stay"
        pod_text = None
        warn = False
    c.actions.append(Event(iid, Ref("Node", node.name), "TerminationNotice", text, warning=warn))
    if pod_text is not None:
        for pod in jobs:
            c.actions.append(Event(iid, Ref("Pod", pod.name, pod.namespace), "NodeTerminating", pod_text(pod),
                                   warning=warn))


# ---- evictions ------------------------------------------------------------------------------------------


def evict_from_draining_nodes(c: _Cycle) -> None:
    """Non-Job pods leave every node with a draining mark, through the Eviction API.

    For a spot reclaim or a stop that is at once. For a lifecycle termination it
    is for as long as the instance waits on the hook: the hold itself waits for
    them only until the grace ends; a pod a PodDisruptionBudget still protects
    then dies with the node (the completion's Event names it).
    """
    kinds = c.settings.job_kinds
    waiting = {i.id: i for i in c.snapshot.instances.values() if i.lifecycle_state == WAITING}
    for node in sorted(c.snapshot.nodes or (), key=lambda n: n.name):
        marks = {**marks_of(node), **c.new_marks.get(node.name, {})}
        draining = DRAINING & set(marks)
        if not draining:
            continue
        if draining == {Reason.LIFECYCLE} and node.instance_id not in waiting:
            continue              # the action is over: nothing to drain for
        for pod in sorted(c.pods_by_node.get(node.name, ()), key=lambda p: p.key):
            if needs_eviction(pod, kinds) and c.budgets.try_spend(pod):
                c.actions.append(Evict(node.name, node.instance_id, pod.namespace, pod.name))


# ---- lifecycle actions ----------------------------------------------------------------------------------


def _job_due(c: _Cycle, pod: Pod, started: float) -> float:
    """When a Job pod's time on a terminating node is up: the grace, plus its deadline
    extension, never later than the hook allows. An extension kiln cannot read holds to the
    hook's limit: the rollout never forces such a Job (fail closed), nor does the handler early."""
    if unreadable_extension(pod):
        return _hard_limit(c, started)
    release = started + c.settings.job_grace_seconds
    return min(pod_deadline(pod, release), _hard_limit(c, started))


def _hard_limit(c: _Cycle, started: float) -> float:
    return started + c.settings.global_timeout_seconds - COMPLETE_MARGIN_SECONDS


def hold_or_complete(c: _Cycle, instance: Instance) -> None:
    hook = c.settings.hook_name
    node = c.nodes_by_instance.get(instance.id)
    started = _lifecycle_start(c, instance.id, node)
    hard = _hard_limit(c, started)

    def complete(why: str, warning: bool = False) -> None:
        c.actions.append(Complete(instance.id, instance.asg, hook, why))
        if node is not None:
            c.actions.append(Event(instance.id, Ref("Node", node.name), "TerminationContinued",
                                   f"lifecycle action of {instance.id} completed (CONTINUE): {why}", warning=warning))

    def hold(until: float, waiting_for: list[str]) -> None:
        c.holds.append(Hold(instance.id, node.name if node else None, min(until, hard), tuple(waiting_for)))
        last = c.snapshot.heartbeats.get(instance.id)
        if last is None or c.now - last >= c.settings.heartbeat_every_seconds:
            c.actions.append(Heartbeat(instance.id, instance.asg, hook))

    if c.now >= hard:
        complete(f"the hook's global timeout ({c.settings.global_timeout_seconds:.0f}s from {format_time(started)}) "
                 "is near; AWS would continue now anyway", warning=True)
        return
    if c.snapshot.nodes is None:
        hold(hard, ["the cluster to be readable (fail closed: Jobs may be running)"])
        return
    if node is None:
        jobs = c.unmapped_jobs()
        release = started + c.settings.job_grace_seconds
        if jobs and c.now < release:
            names = ", ".join(sorted(n.name for n in c.unmapped))
            hold(release, [f"a node for {instance.id}: node(s) {names} have no provider ID and run Jobs"])
            for n in c.unmapped:
                if c.jobs_on(n):
                    c.actions.append(Event(instance.id, Ref("Node", n.name), "NodeWithoutProviderID",
                                           f"kiln cannot tell whether this node is instance {instance.id}, which "
                                           f"Auto Scaling is terminating (no spec.providerID): the instance is held "
                                           f"until {format_time(release)} in case it is", warning=True))
            return
        complete("no node of this cluster runs on the instance")
        return
    _hold_or_complete_node(c, instance, node, started, hard, complete, hold)


def _hold_or_complete_node(c: _Cycle, instance: Instance, node: Node, started: float, hard: float,
                           complete, hold) -> None:
    kinds = c.settings.job_kinds
    pods = c.pods_by_node.get(node.name, ())
    release = started + c.settings.job_grace_seconds
    jobs = [p for p in pods if is_job(p, kinds) and not p.deleting]
    due = {p.key: _job_due(c, p, started) for p in jobs}
    running = [p for p in jobs if c.now < due[p.key]]
    overdue = [p for p in jobs if c.now >= due[p.key]]      # evicted now; they get time to stop like leaving pods
    for pod in sorted(jobs, key=lambda p: p.key):
        if c.now >= due[pod.key]:
            c.actions.append(Evict(node.name, instance.id, pod.namespace, pod.name, job=True))
            c.actions.append(Event(instance.id, Ref("Pod", pod.name, pod.namespace), "JobGraceExpired",
                                   f"node {node.name} is being terminated and this pod's time there ended at "
                                   f"{format_time(due[pod.key])}: evicted, it has until "
                                   f"{format_time(_leave_limit(c, started, due.values(), hard))} to stop",
                                   warning=True))
    evictable = [p for p in pods if needs_eviction(p, kinds)]
    leaving = [p for p in pods if still_leaving(p)]
    # A Job pod already stopping (evicted at its due time, or deleted) keeps its own due time for the
    # limit on stopping: one evicted at an extended due time gets its AFTER_GRACE_SECONDS too.
    stopping_dues = [_job_due(c, p, started) for p in leaving if p.owner_kind is None or p.owner_kind in kinds]
    leave_limit = _leave_limit(c, started, [*due.values(), *stopping_dues], hard)
    if not is_fenced(node):
        # Marked this cycle: what runs there can only be trusted once the node is seen fenced.
        hold(max(release, *due.values()) if due else release, ["the node to be seen cordoned"])
        return
    waiting_for = []
    if running:
        waiting_for.append(f"{len(running)} Job pod(s): {_pods(running)}")
    if evictable and c.now < release:
        blocked = {p.key: c.budgets.blocking(p) for p in evictable}
        waiting_for.append(f"{len(evictable)} pod(s) to be evicted: {_pods(evictable)}"
                           + (" (PodDisruptionBudget " + ", ".join(sorted({b for bs in blocked.values() for b in bs}))
                              + " allows no disruption)" if any(blocked.values()) else ""))
    if (leaving or overdue) and c.now < leave_limit:
        waiting_for.append(f"{len(leaving) + len(overdue)} pod(s) to stop: {_pods(leaving + overdue)}")
    if waiting_for:
        until = max([release, *due.values()]) if running or (evictable and c.now < release) else leave_limit
        hold(until, waiting_for)
        return
    left = evictable + leaving + overdue
    if drained_by_rollout(node) and not left:
        complete("kiln's rollout drained the node")
    elif left:
        complete(f"the grace is over; still on the node, stopped by its shutdown: {_pods(left)}", warning=True)
    else:
        complete("no Job pod runs on the node and every other pod has left")


def _leave_limit(c: _Cycle, started: float, dues: Iterable[float], hard: float) -> float:
    """Until when pods that are stopping are waited for: after the last Job's time is up, AFTER_GRACE_SECONDS."""
    release = started + c.settings.job_grace_seconds
    return min(hard, max([release, *dues]) + AFTER_GRACE_SECONDS)
