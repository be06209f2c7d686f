"""A simulated EKS fleet on a virtual clock: ASGs, nodes, pods, a scheduler,
cluster-autoscaler, PodDisruptionBudgets, Job retries and faults.

Time only moves when the rollout sleeps or waits for a change; the world
then runs its event queue (a heap) up to that moment. Pods are indexed by node
and the read-only views handed to the rollout are cached frozen objects, so a
reconcile costs O(fleet) and a 1000-node rollout runs in seconds.

The pod lifecycle is Kubernetes': :meth:`World._new_job_pod` and
:meth:`World._new_service_pod` create a pod Pending; :meth:`World._bind` binds
it to a node, still Pending (pulling, starting) for ``pod_start_seconds``;
:meth:`World._on_start` runs it (a service pod turns Ready ``start_seconds``
later); :meth:`World._on_finish` ends a Job pod Succeeded. A deletion or an
eviction (:meth:`World._delete_pod`) sets the deletion timestamp
(``Pod.deleting``) and the pod keeps its node until it exits or its grace period
(``termination_grace_seconds``) ends (:meth:`World._on_pod_exit`): a Job pod may
finish in it (Succeeded) or fail; a service's ReplicaSet replaces the pod at
once. A pod still on a node that goes dies with it (:meth:`World._pod_dies`).
The Job controller recreates a failed Job pod once it has failed (what
``podReplacementPolicy: Failed`` does, so two pods of a Job never hold GPUs at
once), up to the Job's ``backoffLimit``.

PodDisruptionBudgets are kept as the API server keeps them: a status
(``currentHealthy``, ``desiredHealthy``, ``disruptionsAllowed``) that the
disruption controller recomputes from the pods as they go and come
(:meth:`World._on_pdb_sync`, just after a change, not inside the call that made
it), and an Eviction API (:meth:`World.evict`) that decides from that status
alone and spends one disruption on every grant — so a second eviction in the
same instant is refused until the controller has looked again.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Optional

from ..engine import is_ready_new, is_schedulable
from ..model import (
    ANNOTATION_DEADLINE_EXTENSION,
    CA_SCALE_DOWN_DISABLED,
    LABEL_MODEL_VERSION,
    LABEL_NODE_GROUP,
    RESOURCE_GPU,
    TAG_CLUSTER,
    TAG_INTENT_PREFIX,
    TAG_NODE_GROUP,
    TAINT_WARMING,
    WARMUP_DAEMONSET,
    AutoScalingGroup,
    Instance,
    Node,
    Pod,
    PodDisruptionBudget,
    RolloutIntent,
    ScalingActivity,
    Taint,
)
from .scenario import Scenario

OLD_VERSION, NEW_VERSION = "1", "2"
CLUSTER = "sim"
CA_TICK_SECONDS = 10.0
CA_SCALE_DOWN_UNNEEDED_SECONDS = 600.0
FINISHED_POD_TTL_SECONDS = 300.0
ASG_RETRY_SECONDS = 60.0          # a group whose launch failed tries again this much later (as Auto Scaling does)
ACTIVITIES_KEPT = 100             # DescribeScalingActivities returns at most the last 100 per group
MAX_CYCLES = 400_000
HANDLER_CYCLE_SECONDS = 5.0       # the termination handler's cadence (its SQS long poll)
HANDLER_RESTART_SECONDS = 10.0    # a restarted handler is back this much later, its memory empty
VISIBILITY_SECONDS = 60.0         # a message the handler keeps is delivered again this much later
MAX_RECEIVES = 5                  # then the redrive policy moves it to the dead-letter queue
SPOT_WARNING_SECONDS = 120.0      # a spot interruption warning comes two minutes before the reclaim
WAITING = "Terminating:Wait"


class SimulatedCrash(BaseException):
    """The rollout process died (a BaseException: no ``except Exception`` in
    the runner can swallow it, and every later call of the dead process fails
    the same way, as a killed process makes no calls)."""


class SimulationStuck(RuntimeError):
    pass


@dataclass
class _Inst:
    id: str
    group: str
    version: str
    launched_at: float
    original: bool = False
    protected: bool = False
    node: Optional[str] = None
    alive: bool = True
    bad: Optional[str] = None        # bad_ami mode: not_ready | no_join | warmup_fails
    frozen: Optional[Instance] = None
    # Terminating:Wait (the termination hook): who started it, when, the last heartbeat.
    leaving: Optional[str] = None    # rollout | scale_in | autoscaler | fault
    hook_started: float = 0.0
    hook_beat: float = 0.0


@dataclass
class _Group:
    name: str
    node_group: str
    zone: str
    min_size: int
    max_size: int
    desired: int
    version: str
    slots: int
    capacity_type: str
    tags: dict
    insts: dict = field(default_factory=dict)     # id -> _Inst (live only)
    waiting: dict = field(default_factory=dict)   # id -> _Inst in Terminating:Wait (not counted in desired)
    frozen: Optional[AutoScalingGroup] = None
    activities: deque = field(default_factory=lambda: deque(maxlen=ACTIVITIES_KEPT))
    retry_pending: bool = False


@dataclass
class _PodInfo:
    kind: str                 # job | service | ds | warmup
    run_seconds: float = 0.0  # job: how long it runs once started
    arrival: bool = False     # a Job pod created during the simulation (submitted, or a retry)
    service: str = ""
    ready: bool = False       # service pods: Ready and not terminating (healthy, as their PDB counts)
    job: str = ""             # job: the Job it belongs to
    attempt: int = 0          # job: pods of this Job before this one that failed
    started_at: Optional[float] = None
    slot: bool = False        # job: bound, holding one of its node's slots (GPUs) until it exits
    deleted_at: Optional[float] = None     # when the deletion timestamp was set (evicted or deleted)
    deleted_cause: str = ""   # who deleted it: rollout, handler, ...
    held_by_pdb: bool = False  # job: evicted by the rollout from a node a PDB-held service pod kept


class World:
    @property
    def s(self) -> Scenario:
        return self._scenario

    @s.setter
    def s(self, scenario: Scenario) -> None:
        """The scenario; a test may change it mid-run (a budget fixed, say): the disruption controller
        sees the new PodDisruptionBudget specs at its next sync, as a spec update triggers one."""
        self._scenario = scenario
        self.services = {svc.name: svc for svc in scenario.services}
        if getattr(self, "pdb_status", None):
            self._on_pdb_sync(None)

    def __init__(self, scenario: Scenario, *, start_at: float = 0.0, roll: bool = True):
        self._heap: list = []
        self._seq = 0
        self.now = start_at
        self.s = scenario
        self.rng = random.Random(scenario.seed)
        self.fault_rng = random.Random(scenario.seed + 1)
        self.start_at = start_at
        self.roll = roll                  # False: the launch template never changes (the --no-rollout baseline)
        self._ids = 0
        self.groups: dict[str, _Group] = {}
        self.insts: dict[str, _Inst] = {}
        self.nodes: dict[str, Node] = {}
        self.node_inst: dict[str, str] = {}
        self.node_used: dict[str, int] = {}
        self.free_by_group: dict[str, dict[str, None]] = {}
        self.schedulable: dict[str, None] = {}
        self.pods: dict[str, Pod] = {}
        self.pinfo: dict[str, _PodInfo] = {}
        self.pods_by_node: dict[str, dict[str, None]] = {}
        self.pending: dict[str, None] = {}
        self.service_ready: dict[str, int] = {}          # healthy pods per service (the truth)
        # Each PodDisruptionBudget's status as the API server stores it: [currentHealthy, desiredHealthy,
        # disruptionsAllowed]; behind the truth until the disruption controller syncs it.
        self.pdb_status: dict[str, list[int]] = {}
        self._pdb_sync_due = False
        self.service_pods_on: dict[str, int] = {}
        self.intent: Optional[RolloutIntent] = None
        self.lease: Optional[tuple[str, float]] = None
        self.autoscaler_replicas: Optional[int] = 1 if scenario.autoscaler else None
        self.ca_empty_since: dict[str, float] = {}
        self.changed = False              # a pod or a node changed (what the rollout's watches see)
        self._sched_dirty = False
        self.bad_ami = [f for f in scenario.faults if f.kind == "bad_ami"]
        self.launch_faults = [f for f in scenario.faults if f.kind == "launch_failure"]
        self.throttle_rate = max([f.rate or 0.0 for f in scenario.faults if f.kind == "throttle"] or [0.0])
        self.crash_points = sorted(f.after_actions for f in scenario.faults if f.kind == "crash")
        # The termination handler and its lifecycle hook (automation/termination): on, or neither.
        self.hook = bool(scenario.termination.handler)
        self.handler_settings = None
        self.handler_started: dict[str, float] = {}     # the handler process's memory (lost on a restart)
        self.handler_heartbeats: dict[str, float] = {}
        self.handler_down_until = start_at
        self.queue: dict[str, list] = {}                # message id -> [notice, visible at, receives]
        self.marked: dict[str, None] = {}               # nodes carrying a kiln.dev/terminating mark
        self.reclaims: dict[str, float] = {}            # spot instances warned -> reclaimed at
        self.handler_cycles = self.handler_decisions = 0
        self.handler_actions: dict[str, int] = {}
        self.handler_dead_letters = 0
        self.max_hold_seconds = 0.0
        self.max_rollout_hold_seconds = 0.0          # the rollout's own terminations, on the hook
        self.instances_completed_by_handler = 0
        self.hook_timeouts = 0
        self.faults_terminated = 0
        if self.hook:
            from ...termination import decisions as hd
            self._hd = hd
            self.handler_settings = hd.Settings(job_grace_seconds=float(scenario.termination.job_grace_seconds),
                                                heartbeat_timeout_seconds=float(scenario.termination.heartbeat_seconds),
                                                job_kinds=hd.DEFAULT_JOB_OWNER_KINDS | {scenario.jobs.owner_kind})
        self.deadline_at = start_at + scenario.deadline_seconds
        self.latest_version = NEW_VERSION if roll else OLD_VERSION   # the newest launch template version
        # metrics
        self.reads = self.writes = self.mutations = 0
        self.throttled = 0
        self.reads_this_cycle = 0
        self.max_reads_per_cycle = 0
        self.cycles = 0
        self.generation = 0
        self.last_groups_read_at = self.now
        self.jobs_interrupted = 0
        self.jobs_force_evicted = 0
        self.jobs_lost = 0
        self.jobs_completed = 0
        self.jobs_retried = 0
        self.jobs_failed = 0              # Jobs out of retries (backoffLimit)
        self.job_seconds_lost = 0.0       # work lost by Job pods that died running
        self.pdb_violations = 0
        self.evictions_refused = 0        # 429s: a budget allowed no disruption (or was short, for an unhealthy pod)
        self.pods_terminated = 0          # pods that had a deletion timestamp and left after (part of) their grace
        self.jobs_finished_in_grace = 0   # Job pods that succeeded while terminating
        self.terminating_pods_cut_short = 0   # terminating pods whose node went before they exited
        self.terminated_with_terminating_pods = 0   # the rollout terminated a node a pod was still leaving
        self.forced_on_held_nodes = 0     # Jobs forced off a node whose service pod no budget let go
        self.waits: list[float] = []
        self.live_count = 0
        self.surge_node_seconds = 0.0
        self.peak_live_count = 0                      # most instances alive at once
        self.initial_nodes: dict[str, list[str]] = {}  # group -> its nodes at start, in launch order
        self.original_removed: dict[str, int] = {}     # group -> original instances the rollout removed (or scaled in)
        self.proven_at: dict[str, float] = {}          # group -> first new node Ready, labelled, warm
        self.first_removed_at: dict[str, float] = {}   # group -> first original instance the rollout removed
        self.failed_launches = 0
        self.events: dict[tuple[str, str], object] = {}   # (namespace, name) -> last Event written
        self.events_created = self.events_updated = 0
        self.timeline: list[dict] = []
        self._next_sample = start_at
        self._build()
        self.start_count = self.live_count
        self.lower_bound = self._lower_bound()

    # ------------------------------------------------------------------ setup
    def _build(self) -> None:
        s = self.s
        for spec in s.node_groups:
            g = _Group(name=spec.name, node_group=spec.name, zone=spec.zone, min_size=spec.min_size,
                       max_size=spec.max, desired=spec.nodes, version=OLD_VERSION, slots=spec.pods_per_node,
                       capacity_type=spec.capacity_type,
                       tags={TAG_CLUSTER: CLUSTER, TAG_NODE_GROUP: spec.name})
            self.groups[g.name] = g
            self.free_by_group[g.name] = {}
            self.original_removed[g.name] = 0
            nodes_of_group = []
            for _ in range(spec.nodes):
                inst = self._launch(g, boot=False)
                inst.original = True
                self._register_node(inst, warm=False)
                nodes_of_group.append(inst.node)
            self.initial_nodes[g.name] = nodes_of_group
        # Jobs running at start: where the scenario places them, else on random slots of the old nodes.
        slots = [name for name in self.nodes for _ in range(self.groups[self._group_of(name)].slots)]
        remaining = list(s.jobs.remaining_list) if s.jobs.remaining_list is not None else [
            self.rng.uniform(*s.jobs.remaining_seconds) for _ in range(s.jobs.running)]
        if s.jobs.placement is not None:
            chosen = [self.initial_nodes[group][index] for group, index in s.jobs.placement]
        else:
            chosen = self.rng.sample(slots, len(remaining)) if remaining else []
        extensions = (list(s.jobs.deadline_extension_list) if s.jobs.deadline_extension_list is not None
                      else [s.jobs.deadline_extension_seconds] * len(remaining))
        for node, rem, extension in zip(chosen, remaining, extensions):
            annotations = {ANNOTATION_DEADLINE_EXTENSION: str(extension)} if extension else {}
            key = self._new_job_pod(rem, arrival=False, annotations=annotations)
            self._bind(key, node, started=True)
        for svc in s.services:
            self.service_ready[svc.name] = 0
            names = list(self.nodes)
            for i in range(svc.replicas):
                key = self._new_service_pod(svc.name)
                if names:
                    self._bind(key, names[(i * 7919) % len(names)], started=True)
                    self.pinfo[key].ready = True
                    self.pods[key] = replace(self.pods[key], ready=True)
                    self.service_ready[svc.name] += 1
            self.pdb_status[svc.name] = self._pdb_truth(svc)
        # The new launch template version became current (the stack update) — unless this is the baseline.
        if self.roll:
            for g in self.groups.values():
                g.version = NEW_VERSION
                g.frozen = None
        if s.jobs.arrivals_per_hour > 0:
            self._push(self.now + self.rng.expovariate(s.jobs.arrivals_per_hour / 3600.0), "arrival", None)
        if self.autoscaler_replicas is not None:
            self._push(self.now + CA_TICK_SECONDS, "ca", None)
        if self.hook:
            self._push(self.now + HANDLER_CYCLE_SECONDS, "handler", None)
        for i, f in enumerate(s.faults):
            if f.kind == "node_loss":
                self._push(self.start_at + (f.at_seconds or 0.0), "node_loss", i)
            elif f.kind == "publish" and self.roll:
                self._push(self.start_at + (f.at_seconds or 0.0), "publish", i)
            elif f.kind in ("asg_terminate", "spot_interruption", "handler_restart"):
                self._push(self.start_at + (f.at_seconds or 0.0), f.kind, i)
            elif f.kind == "launch_failure" and f.for_seconds is not None:
                # When the failure ends, the groups try again at once (not at their next retry).
                self._push(self.start_at + (f.at_seconds or 0.0) + f.for_seconds, "launch_recovered", f.group)
        self.changed = False

    def _lower_bound(self) -> float:
        old = [n for n, iid in self.node_inst.items() if self.insts[iid].version != self.groups[self.insts[iid].group].version]
        if not old:
            return 0.0
        longest = max((self.pinfo[k].run_seconds for n in old for k in self.pods_by_node.get(n, ())
                       if self.pinfo[k].kind == "job"), default=0.0)
        return max(longest, self.s.boot_seconds + self.s.warm_seconds)

    # ------------------------------------------------------------------ events and time
    def _push(self, t: float, kind: str, arg) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, arg))

    def _set_time(self, t: float) -> None:
        if t < self.now:
            return
        while self._next_sample <= t:
            self._sample(self._next_sample)
            self._next_sample += self.s.sample_seconds
        self.surge_node_seconds += max(0, self.live_count - self.start_count) * (t - self.now)
        self.now = t

    def advance_to(self, t: float, stop_on_change: bool = False) -> None:
        self.changed = False
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, kind, arg = heapq.heappop(heap)
            self._set_time(when)
            getattr(self, "_on_" + kind)(arg)
            if self._sched_dirty:
                self._schedule()
            if stop_on_change and self.changed:
                return
        self._set_time(t)

    def read_groups(self, cluster: str) -> list:
        """The cluster's groups as DescribeAutoScalingGroups answers now; when the rollout last read them is
        the last moment it could see a version published (a later one is the next rollout's)."""
        self.last_groups_read_at = self.now
        return [self.group_view(g) for g in self.groups.values() if g.tags.get(TAG_CLUSTER) == cluster]

    def begin_cycle(self) -> None:
        """A reconcile starts (the rollout lists its groups): the reads of the last one are counted."""
        self.max_reads_per_cycle = max(self.max_reads_per_cycle, self.reads_this_cycle)
        self.reads_this_cycle = 0
        self.cycles += 1
        if self.cycles > MAX_CYCLES:
            raise SimulationStuck(f"more than {MAX_CYCLES} reconcile cycles at t={self.now:.0f}s")

    # ------------------------------------------------------------------ handlers
    def _on_boot(self, iid: str) -> None:
        inst = self.insts.get(iid)
        if inst is not None and inst.alive and inst.bad != "no_join":
            self._register_node(inst, warm=True)

    def _on_warm(self, node: str) -> None:
        n = self.nodes.get(node)
        if n is None:
            return
        inst = self.insts[self.node_inst[node]]
        if inst.bad == "warmup_fails":
            # The warm-up pod's init container exits non-zero; the taint stays.
            for key in self.pods_by_node.get(node, ()):
                if self.pinfo[key].kind == "warmup":
                    self.pods[key] = replace(self.pods[key], failure="Init:CrashLoopBackOff")
                    self.changed = True
            return
        self.nodes[node] = replace(n, taints=tuple(t for t in n.taints if t.key != TAINT_WARMING))
        self._refresh_node(node)
        self.changed = True
        if is_ready_new(self.nodes[node]) and inst.version != OLD_VERSION:
            self.proven_at.setdefault(inst.group, self.now)

    def _on_start(self, key: str) -> None:
        """The containers of a bound pod run (images pulled, started): Pending -> Running."""
        pod = self.pods.get(key)
        if pod is None or pod.phase != "Pending" or pod.node_name is None or pod.deleting:
            return
        info = self.pinfo[key]
        self.pods[key] = replace(pod, phase="Running")
        self.changed = True
        if info.kind == "job":
            info.started_at = self.now
            self._push(self.now + info.run_seconds, "finish", key)
            if info.arrival:
                self.waits.append(self.now - pod.created_at)
        elif info.kind == "service":
            self._push(self.now + self.services[info.service].start_seconds, "service_ready", key)

    def _on_finish(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or pod.phase != "Running":
            return
        info = self.pinfo[key]
        self.pods[key] = replace(pod, phase="Succeeded")
        self.jobs_completed += 1
        self._free_slot(key)
        self.changed = True
        if pod.deleting:
            # It finished inside its grace period: the kubelet is done with it and the deletion completes.
            self.jobs_finished_in_grace += 1
            self.pods_terminated += 1
            self._remove_pod(key)
            return
        self._push(self.now + FINISHED_POD_TTL_SECONDS, "gc", key)

    def _on_pod_exit(self, key: str) -> None:
        """A terminating pod exits: its process stopped on SIGTERM, or its grace period ended (SIGKILL).
        A Job pod still running fails now, and its Job recreates it (or has failed)."""
        pod = self.pods.get(key)
        if pod is None or not pod.deleting:
            return
        info = self.pinfo[key]
        self.pods_terminated += 1
        if info.kind == "job" and pod.phase in ("Running", "Pending"):
            self._job_pod_failed(pod, info, info.deleted_cause, info.deleted_at)
        self._remove_pod(key)
        self.changed = True

    def _on_pdb_sync(self, _) -> None:
        """The disruption controller: each budget's status recomputed from the pods now."""
        self._pdb_sync_due = False
        for svc in self.s.services:
            self.pdb_status[svc.name] = self._pdb_truth(svc)

    def _pdb_truth(self, svc) -> list[int]:
        healthy, desired = self.service_ready[svc.name], svc.desired_healthy
        return [healthy, desired, max(0, healthy - desired)]

    def _pods_changed(self, service: str) -> None:
        """A service's pods went, came or changed health: the disruption controller will look (soon, not
        inside the call that changed them — an eviction's own decrement is all the status has until then)."""
        if not self._pdb_sync_due:
            self._pdb_sync_due = True
            self._push(self.now, "pdb_sync", None)

    def _on_gc(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is not None and pod.phase in ("Succeeded", "Failed"):
            self._remove_pod(key)      # ttlSecondsAfterFinished; not a change the rollout waits for

    def _on_service_ready(self, key: str) -> None:
        info = self.pinfo.get(key)
        pod = self.pods.get(key)
        if info is not None and pod is not None and not info.ready and pod.phase == "Running" and not pod.deleting:
            info.ready = True
            self.pods[key] = replace(pod, ready=True)
            self.service_ready[info.service] += 1
            self._pods_changed(info.service)
            self.changed = True

    def _on_arrival(self, _) -> None:
        lo, hi = self.s.jobs.duration_seconds
        selector = {}
        if self.s.jobs.selector_group and self.groups:
            selector = {LABEL_NODE_GROUP: self.rng.choice(sorted(self.groups))}
        self._new_job_pod(self.rng.uniform(lo, hi), arrival=True, selector=selector)
        self._push(self.now + self.rng.expovariate(self.s.jobs.arrivals_per_hour / 3600.0), "arrival", None)

    def _on_node_loss(self, index: int) -> None:
        f = self.s.faults[index]
        candidates = []
        for name in sorted(self.nodes):
            inst = self.insts[self.node_inst[name]]
            if f.group is not None and inst.group != f.group:
                continue
            is_new = inst.version == self.groups[inst.group].version
            if f.target == "any" or (f.target == "new") == is_new:
                candidates.append((inst.launched_at, name))
        if not candidates:
            return
        if f.target == "new":
            node = max(candidates)[1]        # the newest new node: early on, the canary
        else:
            node = self.fault_rng.choice([n for _, n in candidates])
        self._kill_instance(self.node_inst[node], cause="fault", decrement=False)

    def _on_publish(self, _index: int) -> None:
        """A ``pulumi up`` mid-rollout: a newer launch template version, every group set to it."""
        self.latest_version = str(int(self.latest_version) + 1)
        for g in self.groups.values():
            g.version = self.latest_version
            g.frozen = None

    def _on_launch_recovered(self, group: Optional[str]) -> None:
        for g in self.groups.values():
            if group is None or g.name == group:
                self._reconcile(g)

    def _on_asg_retry(self, name: str) -> None:
        g = self.groups[name]
        g.retry_pending = False
        self._reconcile(g)

    def _on_ca(self, _) -> None:
        self._push(self.now + CA_TICK_SECONDS, "ca", None)
        if not self.autoscaler_replicas:
            self.ca_empty_since.clear()
            return
        self._ca_scale_up()
        self._ca_scale_down()

    # ------------------------------------------------------------------ Auto Scaling terminating on its own
    def _on_asg_terminate(self, index: int) -> None:
        """A scale-in (desired drops by count; protected instances spared), or a rebalance/health
        replacement (desired stays: a replacement launches at once). Auto Scaling picks the instances."""
        f = self.s.faults[index]
        g = self.groups[f.group]
        candidates = sorted(i.id for i in g.insts.values() if i.node and (f.replace or not i.protected))
        chosen = self.fault_rng.sample(candidates, min(f.count, len(candidates)))
        if not f.replace:
            chosen = chosen[: max(0, g.desired - g.min_size)]
        for iid in sorted(chosen):
            self.faults_terminated += 1
            self._terminate(iid, cause="fault", decrement=not f.replace)

    def _on_spot_interruption(self, index: int) -> None:
        """The two-minute warning (an EventBridge event in the handler's queue), then the reclaim."""
        f = self.s.faults[index]
        g = self.groups[f.group]
        candidates = sorted(i.id for i in [*g.insts.values(), *g.waiting.values()]
                            if i.node and i.id not in self.reclaims)
        for iid in sorted(self.fault_rng.sample(candidates, min(f.count, len(candidates)))):
            self.faults_terminated += 1
            at = self.now + SPOT_WARNING_SECONDS
            self.reclaims[iid] = at
            if self.hook:
                self._notify(self._hd.Reason.SPOT, iid, at=at)
            self._push(at, "reclaim", iid)

    def _on_reclaim(self, iid: str) -> None:
        if iid in self.reclaims and self.reclaims[iid] <= self.now:
            self._kill_instance(iid, cause="fault", decrement=False)

    def _on_handler_restart(self, _index: int) -> None:
        self.handler_started.clear()
        self.handler_heartbeats.clear()
        self.handler_down_until = self.now + HANDLER_RESTART_SECONDS

    def _terminate(self, iid: str, *, cause: str, decrement: bool) -> None:
        """Auto Scaling terminating an instance: with kiln's hook it waits in Terminating:Wait (no
        longer counted in desired, so a replacement launches unless desired drops) until the handler
        completes the action or the hook times out; without the hook it is gone at once."""
        inst = self.insts.get(iid)
        if inst is None or not inst.alive or inst.leaving is not None:
            return
        if not self.hook:
            # No hook (no handler deployed): gone at once. What an ASG kills on its own this way
            # could have been held: its Jobs count as interrupted, not as lost to the fault.
            self._kill_instance(iid, cause="unheld" if cause == "fault" else cause, decrement=decrement)
            return
        g = self.groups[inst.group]
        del g.insts[iid]
        g.waiting[iid] = inst
        inst.leaving, inst.hook_started, inst.hook_beat = cause, self.now, self.now
        inst.frozen = None
        g.frozen = None
        if decrement:
            g.desired = max(g.min_size, g.desired - 1)
        hb = self.s.termination.heartbeat_seconds
        self._push(self.now + hb, "hook_timeout", iid)
        self._push(self.now + self.handler_settings.global_timeout_seconds, "hook_timeout", iid)
        self._notify(self._hd.Reason.LIFECYCLE, iid, asg=g.name, hook=self._hd.HOOK_NAME)
        self.changed = True
        self._reconcile(g)

    def _on_hook_timeout(self, iid: str) -> None:
        """The heartbeat timeout or the global timeout: Auto Scaling continues (the default result)."""
        inst = self.insts.get(iid)
        if inst is None or inst.leaving is None:
            return
        beat_over = self.now >= inst.hook_beat + self.s.termination.heartbeat_seconds
        global_over = self.now >= inst.hook_started + self.handler_settings.global_timeout_seconds
        if beat_over or global_over:
            self.hook_timeouts += 1
            self._end_wait(inst)

    def _end_wait(self, inst: _Inst) -> None:
        self.max_hold_seconds = max(self.max_hold_seconds, self.now - inst.hook_started)
        if inst.leaving == "rollout":
            self.max_rollout_hold_seconds = max(self.max_rollout_hold_seconds, self.now - inst.hook_started)
        self._kill_instance(inst.id, cause="hook" if inst.leaving == "fault" else inst.leaving, decrement=False)

    def _hold_limit(self, pod: Pod) -> Optional[float]:
        """How long the hook can keep a Job pod's node, as kiln documents it: the Job grace plus the
        pod's deadline extension from the hook's start, never past AWS's global timeout less the
        handler's margin. Starts are whole seconds, as the node's annotation records them."""
        iid = self.node_inst.get(pod.node_name or "")
        inst = self.insts.get(iid) if iid else None
        if inst is None or inst.leaving is None or self.handler_settings is None:
            return None                # not held at all
        hd, start = self._hd, math.floor(inst.hook_started)
        try:
            extension = float(pod.annotations.get(ANNOTATION_DEADLINE_EXTENSION, 0))
        except ValueError:
            extension = 0.0
        return min(start + self.s.termination.job_grace_seconds + extension,
                   start + self.handler_settings.global_timeout_seconds - hd.COMPLETE_MARGIN_SECONDS)

    # ------------------------------------------------------------------ the termination handler
    def _notify(self, reason, iid: str, *, asg: Optional[str] = None, hook: Optional[str] = None,
                at: Optional[float] = None) -> None:
        """An EventBridge event delivered to the handler's queue."""
        self._ids += 1
        mid = f"msg-{self._ids}"
        notice = self._hd.Notice(mid, reason, (iid,), time=float(math.floor(self.now)), asg=asg, hook=hook, at=at)
        self.queue[mid] = [notice, self.now, 0]

    def handler_busy(self) -> bool:
        """Something the handler acts on: an instance on the hook, a message, a marked node, a reclaim."""
        return bool(self.queue or self.marked or self.reclaims or any(g.waiting for g in self.groups.values()))

    def _on_handler(self, _) -> None:
        self._push(self.now + HANDLER_CYCLE_SECONDS, "handler", None)
        self.handler_cycles += 1
        if self.now < self.handler_down_until:
            return
        if not (self.queue or self.marked or any(g.waiting for g in self.groups.values())):
            return                     # decide() has nothing to say about a quiet cluster (tested)
        self.handler_decide()

    def handler_snapshot(self):
        hd = self._hd
        instances = {}
        for g in self.groups.values():
            for inst in g.insts.values():
                instances[inst.id] = hd.Instance(inst.id, g.name, "InService" if inst.node else "Pending")
            for inst in g.waiting.values():
                instances[inst.id] = hd.Instance(inst.id, g.name, WAITING)
        notices = []
        for mid, entry in list(self.queue.items()):
            if entry[1] <= self.now:
                entry[2] += 1
                notices.append(entry[0])
        named = {iid for n in notices for iid in n.instance_ids}
        named |= {iid for g in self.groups.values() for iid in g.waiting}
        wanted = {self.insts[iid].node for iid in named if iid in self.insts and self.insts[iid].node}
        wanted |= set(self.marked)
        pods = tuple(self.pods[k] for name in sorted(wanted) for k in self.pods_by_node.get(name, ())
                     if self.pods[k].phase not in ("Succeeded", "Failed"))
        return hd.Snapshot(groups=frozenset(self.groups), instances=instances, nodes=tuple(self.nodes.values()),
                           pods=pods, pdbs=tuple(self.pdb_views()), notices=tuple(notices),
                           started=dict(self.handler_started), heartbeats=dict(self.handler_heartbeats))

    def handler_decide(self) -> None:
        """One leader cycle: observe, decide (the handler's pure function), execute, as handler.py does."""
        hd = self._hd
        snapshot = self.handler_snapshot()
        for notice in snapshot.notices:
            if notice.reason is hd.Reason.LIFECYCLE:
                for iid in notice.instance_ids:
                    self.handler_started[iid] = min(notice.time, self.handler_started.get(iid, notice.time))
        decision = hd.decide(snapshot, self.now, self.handler_settings)
        self.handler_decisions += 1
        for action in decision.actions:
            kind = type(action).__name__
            self.handler_actions[kind] = self.handler_actions.get(kind, 0) + 1
            if isinstance(action, hd.Mark):
                self._mark(action)
            elif isinstance(action, hd.Evict):
                self.evict(f"{action.namespace}/{action.name}", cause="handler")
            elif isinstance(action, hd.Heartbeat):
                inst = self.insts.get(action.instance_id)
                if inst is not None and inst.leaving is not None:
                    inst.hook_beat = self.now
                    self._push(self.now + self.s.termination.heartbeat_seconds, "hook_timeout", inst.id)
                    self.handler_heartbeats[action.instance_id] = self.now
            elif isinstance(action, hd.Complete):
                inst = self.insts.get(action.instance_id)
                self.handler_started.pop(action.instance_id, None)
                self.handler_heartbeats.pop(action.instance_id, None)
                if inst is not None and inst.leaving is not None:
                    self.instances_completed_by_handler += 1
                    self._end_wait(inst)
            elif isinstance(action, hd.DeleteMessage):
                self.queue.pop(action.message_id, None)
            elif isinstance(action, hd.KeepMessage):
                entry = self.queue.get(action.message_id)
                if entry is not None:
                    if entry[2] >= MAX_RECEIVES:
                        self.queue.pop(action.message_id)
                        self.handler_dead_letters += 1
                    else:
                        entry[1] = self.now + VISIBILITY_SECONDS
        if self._sched_dirty:
            self._schedule()

    def _mark(self, action) -> None:
        """Cordon, taint kiln.dev/terminating=<first reason>:NoSchedule, annotate each reason (one patch)."""
        hd = self._hd
        n = self.nodes.get(action.node)
        if n is None or not action.reasons:
            return
        taints = n.taints if any(t.key == hd.TAINT_TERMINATING for t in n.taints) else \
            n.taints + (Taint(hd.TAINT_TERMINATING, action.reasons[0][0].value, "NoSchedule"),)
        annotations = {**{r.annotation: hd.format_time(t) for r, t in action.reasons}, **n.annotations}
        self.nodes[action.node] = replace(n, unschedulable=True, taints=taints, annotations=annotations)
        self.marked[action.node] = None
        self._refresh_node(action.node)
        self.changed = True

    # ------------------------------------------------------------------ cluster-autoscaler
    def _ca_scale_up(self) -> None:
        pending_jobs = sum(1 for k in self.pending if self.pinfo[k].kind == "job")
        if not pending_jobs:
            return
        upcoming = 0
        for g in self.groups.values():
            for inst in g.insts.values():
                node = self.nodes.get(inst.node) if inst.node else None
                if node is None or (not node.unschedulable and not is_schedulable(node)):
                    upcoming += g.slots
        need = pending_jobs - upcoming
        for g in sorted(self.groups.values(), key=lambda g: g.name):
            if need <= 0:
                break
            room = g.max_size - g.desired
            if room <= 0:
                continue
            add = min(room, math.ceil(need / g.slots))
            g.desired += add
            g.frozen = None
            need -= add * g.slots
            self._reconcile(g)

    def _ca_scale_down(self) -> None:
        for name, node in list(self.nodes.items()):
            busy = any(self.pinfo[k].kind not in ("ds", "warmup") and self.pods[k].phase not in ("Succeeded", "Failed")
                       for k in self.pods_by_node.get(name, ()))
            if (busy or not is_schedulable(node) or node.annotations.get(CA_SCALE_DOWN_DISABLED) == "true"):
                self.ca_empty_since.pop(name, None)
                continue
            since = self.ca_empty_since.setdefault(name, self.now)
            g = self.groups[self._group_of(name)]
            if self.now - since >= CA_SCALE_DOWN_UNNEEDED_SECONDS and g.desired > g.min_size:
                self._terminate(self.node_inst[name], cause="autoscaler", decrement=True)

    # ------------------------------------------------------------------ instances and nodes
    def _group_of(self, node: str) -> str:
        return self.insts[self.node_inst[node]].group

    def _launch_blocked(self, g: _Group) -> Optional[str]:
        """AWS's message when a launch in this group fails now (a launch_failure fault)."""
        t = self.now - self.start_at
        for f in self.launch_faults:
            if f.group is not None and f.group != g.name:
                continue
            if f.version == "new" and g.version == OLD_VERSION:
                continue
            if f.at_seconds <= t and (f.for_seconds is None or t < f.at_seconds + f.for_seconds):
                return f.reason
        return None

    def _activity(self, g: _Group, status: str, description: str, message: str = "") -> None:
        self._ids += 1
        g.activities.appendleft(ScalingActivity(group=g.name, activity_id=f"act-{self._ids:08d}", status=status,
                                                description=description, status_message=message,
                                                started_at=self.now))

    def _launch(self, g: _Group, boot: bool = True) -> Optional[_Inst]:
        if boot:
            failure = self._launch_blocked(g)
            if failure is not None:
                self.failed_launches += 1
                self._activity(g, "Failed", "Launching a new EC2 instance.  Status Reason: " + failure, failure)
                if not g.retry_pending:
                    g.retry_pending = True
                    self._push(self.now + ASG_RETRY_SECONDS, "asg_retry", g.name)
                return None
        self._ids += 1
        bad = None
        if g.version == NEW_VERSION:
            for f in self.bad_ami:
                if f.group is None or f.group == g.name:
                    bad = f.mode
        inst = _Inst(id=f"i-{self._ids:017x}", group=g.name, version=g.version, launched_at=self.now, bad=bad)
        self.insts[inst.id] = inst
        g.insts[inst.id] = inst
        g.frozen = None
        self.live_count += 1
        self.peak_live_count = max(self.peak_live_count, self.live_count)
        if boot:
            self._activity(g, "Successful", f"Launching a new EC2 instance: {inst.id}")
            self._push(self.now + self.s.boot_seconds, "boot", inst.id)
        return inst

    def _register_node(self, inst: _Inst, warm: bool) -> None:
        g = self.groups[inst.group]
        name = f"ip-10-{int(inst.id[2:], 16) // 256 % 256}-{int(inst.id[2:], 16) % 256}-{int(inst.id[2:], 16)}"
        labels = {LABEL_NODE_GROUP: g.node_group, LABEL_MODEL_VERSION: f"v{inst.version}",
                  "topology.kubernetes.io/zone": g.zone,
                  "eks.amazonaws.com/capacityType": "SPOT" if g.capacity_type == "spot" else "ON_DEMAND"}
        taints = (Taint(TAINT_WARMING, "true", "NoSchedule"),) if warm else ()
        self.nodes[name] = Node(name=name, instance_id=inst.id, labels=labels, taints=taints,
                                ready=inst.bad != "not_ready", created_at=self.now,
                                allocatable={RESOURCE_GPU: float(g.slots)})
        inst.node = name
        g.frozen = None
        self.node_inst[name] = inst.id
        self.node_used[name] = 0
        self.pods_by_node[name] = {}
        self.changed = True
        if self.s.daemonsets:
            key = self._add_pod(Pod(namespace="kube-system", name=f"node-exporter-{name}", node_name=name,
                                    phase="Running", owner_kind="DaemonSet", owner_name="node-exporter",
                                    created_at=self.now), _PodInfo(kind="ds"))
            self.pods_by_node[name][key] = None
        if warm:
            # The warm-up DaemonSet's pod: its init container reads the model, then removes the taint.
            key = self._add_pod(Pod(namespace="kube-system", name=f"{WARMUP_DAEMONSET}-{name}", node_name=name,
                                    phase="Running", owner_kind="DaemonSet", owner_name=WARMUP_DAEMONSET,
                                    created_at=self.now), _PodInfo(kind="warmup"))
            self.pods_by_node[name][key] = None
            if inst.bad != "not_ready":
                self._push(self.now + self.s.warm_seconds, "warm", name)
        self._refresh_node(name)

    def _refresh_node(self, name: str) -> None:
        node = self.nodes.get(name)
        group = self._group_of(name) if node is not None else None
        if node is not None and is_schedulable(node):
            if name not in self.schedulable:
                self.schedulable[name] = None
                self._sched_dirty = True
            free = self.groups[group].slots - self.node_used[name]
            if free > 0:
                if name not in self.free_by_group[group]:
                    self.free_by_group[group][name] = None
                    self._sched_dirty = True
            else:
                self.free_by_group[group].pop(name, None)
        else:
            self.schedulable.pop(name, None)
            for d in self.free_by_group.values():
                d.pop(name, None)
        if self.pending:
            self._sched_dirty = True

    def _kill_instance(self, iid: str, *, cause: str, decrement: bool) -> None:
        inst = self.insts.get(iid)
        if inst is None or not inst.alive:
            return
        inst.alive = False
        if inst.original and cause in ("rollout", "scale_in"):    # the rollout's doing, not the autoscaler's
            self.original_removed[inst.group] += 1
            self.first_removed_at.setdefault(inst.group, self.now)
        if inst.node and inst.node in self.nodes:
            self._remove_node(inst.node, cause)
        g = self.groups[inst.group]
        g.insts.pop(iid, None)
        g.waiting.pop(iid, None)
        self.reclaims.pop(iid, None)
        del self.insts[iid]
        g.frozen = None
        self.live_count -= 1
        if decrement:
            g.desired = max(g.min_size, g.desired - 1)
        self._reconcile(g)

    def _remove_node(self, name: str, cause: str) -> None:
        for key in list(self.pods_by_node.get(name, ())):
            self._pod_dies(key, cause)
        self.nodes.pop(name, None)
        self.schedulable.pop(name, None)
        for d in self.free_by_group.values():
            d.pop(name, None)
        self.pods_by_node.pop(name, None)
        self.node_used.pop(name, None)
        self.node_inst.pop(name, None)
        self.ca_empty_since.pop(name, None)
        self.marked.pop(name, None)
        self.changed = True

    def _reconcile(self, g: _Group) -> None:
        """The ASG converging on desired: launch, or scale in by its own policy."""
        while len(g.insts) < g.desired:
            if self._launch(g) is None:
                break                    # launches fail: retried later
        if len(g.insts) > g.desired:
            # Default termination policy: instances on the oldest launch template first (the "lottery").
            victims = sorted((i for i in g.insts.values() if not i.protected),
                             key=lambda i: (i.version == g.version, -i.launched_at))
            for inst in victims[: len(g.insts) - g.desired]:
                self._terminate(inst.id, cause="scale_in", decrement=False)

    # ------------------------------------------------------------------ pods
    def _add_pod(self, pod: Pod, info: _PodInfo) -> str:
        self.pods[pod.key] = pod
        self.pinfo[pod.key] = info
        self.changed = True
        return pod.key

    def _new_job_pod(self, seconds: float, *, arrival: bool, annotations=None, selector=None,
                     job: Optional[str] = None, attempt: int = 0) -> str:
        self._ids += 1
        job = job or f"job-{self._ids}"
        pod = Pod(namespace="ml", name=f"{job}-{self._ids}", node_name=None, phase="Pending",
                  owner_kind=self.s.jobs.owner_kind, owner_name=job, labels={"job-name": job},
                  annotations=annotations or {}, created_at=self.now, requests={RESOURCE_GPU: 1.0},
                  node_selector=selector or {}, uid=f"uid-{self._ids}")
        key = self._add_pod(pod, _PodInfo(kind="job", run_seconds=seconds, arrival=arrival, job=job, attempt=attempt))
        self.pending[key] = None
        self._sched_dirty = True
        return key

    def _new_service_pod(self, service: str) -> str:
        self._ids += 1
        pod = Pod(namespace="default", name=f"{service}-{self._ids}", node_name=None, phase="Pending",
                  owner_kind="ReplicaSet", owner_name=f"{service}-rs", labels={"app": service}, created_at=self.now,
                  uid=f"uid-{self._ids}", ready=False)
        key = self._add_pod(pod, _PodInfo(kind="service", service=service))
        self._pods_changed(service)          # a pod came: the disruption controller looks (expectedPods)
        self.pending[key] = None
        self._sched_dirty = True
        return key

    def _bind(self, key: str, node: str, started: bool = False) -> None:
        """The scheduler binds a pending pod: on its node, still Pending until it starts
        (``pod_start_seconds``; ``started``: already running when the simulation begins)."""
        pod = self.pods[key]
        info = self.pinfo[key]
        self.pods[key] = replace(pod, node_name=node)
        self.pending.pop(key, None)
        self.pods_by_node[node][key] = None
        self.changed = True
        if info.kind == "job":
            info.slot = True
            self.node_used[node] += 1
            self._refresh_node(node)
        elif info.kind == "service":
            self.service_pods_on[node] = self.service_pods_on.get(node, 0) + 1
        if started:
            self.pods[key] = replace(self.pods[key], phase="Running")
            if info.kind == "job":
                info.started_at = self.now
                self._push(self.now + info.run_seconds, "finish", key)
        elif self.s.pod_start_seconds > 0:
            self._push(self.now + self.s.pod_start_seconds, "start", key)
        else:
            self._on_start(key)

    def _free_slot(self, key: str) -> None:
        info = self.pinfo[key]
        node = self.pods[key].node_name
        if info.slot:
            info.slot = False
            if node in self.node_used:
                self.node_used[node] -= 1
                self._refresh_node(node)

    def _unhealthy(self, key: str) -> None:
        """A service pod stops counting as healthy (terminating, or gone)."""
        info = self.pinfo[key]
        if info.kind == "service" and info.ready:
            info.ready = False
            self.service_ready[info.service] -= 1
            self._pods_changed(info.service)

    def _remove_pod(self, key: str) -> None:
        self._free_slot(key)
        self._unhealthy(key)
        pod = self.pods.pop(key)
        info = self.pinfo.pop(key)
        self.pending.pop(key, None)
        if pod.node_name and pod.node_name in self.pods_by_node:
            self.pods_by_node[pod.node_name].pop(key, None)
            if info.kind == "service":
                self.service_pods_on[pod.node_name] -= 1
        if info.kind == "service":
            self._pods_changed(info.service)

    def _delete_pod(self, key: str, cause: str) -> None:
        """A DELETE (what an eviction does once granted): a pod bound to a node and not finished gets its
        deletion timestamp and keeps the node until it exits (a Job pod on SIGTERM after
        ``jobs.sigterm_exit_seconds``, or when its work ends; a service pod after its ``stop_seconds``) or
        its grace period ends; an unbound or finished pod goes at once, and so does one not yet started
        (the kubelet has no container to stop). A service's ReplicaSet creates the replacement now."""
        pod, info = self.pods[key], self.pinfo[key]
        if pod.deleting:
            return
        self.changed = True
        if pod.node_name is None or pod.phase in ("Succeeded", "Failed"):
            self._remove_pod(key)
            if info.kind == "service":
                self._new_service_pod(info.service)
            return
        self.pods[key] = replace(pod, deleting=True)
        info.deleted_at, info.deleted_cause = self.now, cause
        grace = self.s.termination_grace_seconds
        if info.kind == "service":
            was_ready = info.ready
            self._unhealthy(key)
            svc = self.services[info.service]
            if was_ready and cause not in ("fault", "hook", "unheld") and \
                    self.service_ready[svc.name] < svc.desired_healthy:
                self.pdb_violations += 1
            self._new_service_pod(svc.name)
            stay = min(grace, svc.stop_seconds)
        elif info.kind == "job" and self.s.jobs.sigterm_exit_seconds is not None:
            stay = min(grace, self.s.jobs.sigterm_exit_seconds)
        else:
            stay = grace
        if pod.phase == "Pending" or stay <= 0:
            self._on_pod_exit(key)
        else:
            self._push(self.now + stay, "pod_exit", key)

    def _job_pod_failed(self, pod: Pod, info: _PodInfo, cause: str, when: float) -> None:
        """A Job's pod failed (killed at the end of its grace period, or gone with its node): counted
        against whoever deleted it, at the moment they did (``when``), and recreated by the Job
        controller until the Job's backoffLimit is used up."""
        if cause in ("hook", "handler"):
            # Killed at the end of a hold, or evicted by the handler: lost to the termination that
            # started it (an ASG scale-in, a rebalance, ...) once the hook could hold it no longer;
            # before that (or on a node not held at all), kiln let it down.
            limit = self._hold_limit(pod)
            if limit is not None and when >= limit:
                self.jobs_lost += 1
            else:
                self.jobs_interrupted += 1
        elif cause == "fault":
            self.jobs_lost += 1
        elif cause == "unheld":
            self.jobs_interrupted += 1
        elif when < self._pod_deadline(pod):
            self.jobs_interrupted += 1
        else:
            self.jobs_force_evicted += 1
            held = info.held_by_pdb if info.deleted_at is not None else self._pdb_holds(pod.node_name)
            if cause == "rollout" and held:
                self.forced_on_held_nodes += 1
        if info.started_at is not None:
            self.job_seconds_lost += self.now - info.started_at
        if info.attempt < self.s.jobs.backoff_limit:
            self.jobs_retried += 1
            self._new_job_pod(info.run_seconds, arrival=True, annotations=dict(pod.annotations),
                              selector=dict(pod.node_selector), job=info.job, attempt=info.attempt + 1)
        else:
            self.jobs_failed += 1

    def _pod_dies(self, key: str, cause: str) -> None:
        """A pod gone with its node. ``cause``: rollout, scale_in, autoscaler (all blamed on the rollout's
        side), hook, unheld or fault. A pod that was terminating is cut short (and blamed on whoever
        deleted it); a Job's pod that dies running or starting fails."""
        pod, info = self.pods[key], self.pinfo[key]
        if pod.deleting:
            self.terminating_pods_cut_short += 1
            cause, when = info.deleted_cause, info.deleted_at
        else:
            when = self.now
        if info.kind == "job" and pod.phase in ("Running", "Pending") and pod.node_name:
            self._job_pod_failed(pod, info, cause, when)
        if info.kind == "service" and not pod.deleting:
            svc = self.services[info.service]
            was_ready = info.ready
            self._unhealthy(key)
            if was_ready and cause not in ("fault", "hook", "unheld") and \
                    self.service_ready[svc.name] < svc.desired_healthy:
                self.pdb_violations += 1
            self._remove_pod(key)
            self._new_service_pod(svc.name)
        else:
            self._remove_pod(key)
        self.changed = True

    def _pdb_holds(self, node: str) -> bool:
        """A service pod on ``node`` whose PodDisruptionBudget allows no disruption now (its status)."""
        for key in self.pods_by_node.get(node, ()):
            info = self.pinfo.get(key)
            if info is not None and info.kind == "service" and not self.pods[key].deleting:
                if self.pdb_status[info.service][2] < 1:
                    return True
        return False

    def _pod_deadline(self, pod: Pod) -> float:
        try:
            return self.deadline_at + float(pod.annotations.get(ANNOTATION_DEADLINE_EXTENSION, 0))
        except ValueError:
            return self.deadline_at

    def _schedule(self) -> None:
        self._sched_dirty = False
        for key in list(self.pending):
            pod, info = self.pods[key], self.pinfo[key]
            if info.kind == "job":
                wanted = pod.node_selector.get(LABEL_NODE_GROUP)
                for gname, free in self.free_by_group.items():
                    if free and (wanted is None or wanted == gname):
                        self._bind(key, next(iter(free)))
                        break
            elif self.schedulable:
                node = min(self.schedulable, key=lambda n: self.service_pods_on.get(n, 0))
                self._bind(key, node)

    # ------------------------------------------------------------------ the ports' world operations
    def pdb_views(self) -> list[PodDisruptionBudget]:
        return [PodDisruptionBudget(namespace="default", name=f"{svc.name}-pdb", match_labels={"app": svc.name},
                                    disruptions_allowed=self.pdb_status[svc.name][2])
                for svc in self.s.services]

    def group_view(self, g: _Group) -> AutoScalingGroup:
        if g.frozen is None:
            insts = []
            for inst in [*g.insts.values(), *g.waiting.values()]:
                if inst.frozen is None and inst.leaving is not None:
                    inst.frozen = Instance(id=inst.id, zone=g.zone, launch_template_version=inst.version,
                                           lifecycle_state=WAITING, protected_from_scale_in=inst.protected,
                                           launched_at=inst.launched_at)
                elif inst.frozen is None:
                    inst.frozen = Instance(id=inst.id, zone=g.zone, launch_template_version=inst.version,
                                           lifecycle_state="InService" if inst.node else "Pending",
                                           protected_from_scale_in=inst.protected, launched_at=inst.launched_at)
                elif inst.leaving is None and (inst.frozen.lifecycle_state == "Pending") != (inst.node is None):
                    inst.frozen = replace(inst.frozen, lifecycle_state="InService")
                insts.append(inst.frozen)
            g.frozen = AutoScalingGroup(name=g.name, node_group=g.node_group, zone=g.zone, min_size=g.min_size,
                                        max_size=g.max_size, desired_capacity=g.desired,
                                        launch_template_id="lt-sim" + g.name, launch_template_version=g.version,
                                        instances=tuple(insts), tags=dict(g.tags))
        return g.frozen

    def activities(self, name: str, since: float) -> list[ScalingActivity]:
        return [a for a in self.groups[name].activities if a.started_at >= since]

    def evict(self, key: str, cause: str = "rollout") -> str:
        """The Eviction API, as the API server's eviction handler decides: a pod already terminating,
        finished or not yet running is deleted without a budget; a healthy pod needs its budget's
        ``disruptionsAllowed`` (from the status, never recounted here) and the grant spends one; an
        unhealthy running pod goes only while the budget has its desired healthy pods
        (``unhealthyPodEvictionPolicy: IfHealthyBudget``, the default)."""
        pod = self.pods.get(key)
        if pod is None:
            return "gone"
        info = self.pinfo[key]
        exempt = pod.deleting or pod.phase != "Running"
        if info.kind == "service" and not exempt:
            status = self.pdb_status[info.service]
            if info.ready:
                if status[2] < 1:
                    self.evictions_refused += 1
                    return "blocked"
                status[2] -= 1             # the grant spends a disruption before the pod goes
            elif status[0] < status[1]:
                self.evictions_refused += 1
                return "blocked"
        if info.kind == "job" and not pod.deleting and cause == "rollout":
            info.held_by_pdb = bool(pod.node_name) and self._pdb_holds(pod.node_name)
        self._delete_pod(key, cause)
        if self._sched_dirty:
            self._schedule()
        return "evicted"

    def terminate(self, iid: str, decrement: bool) -> None:
        if iid not in self.insts or self.insts[iid].leaving is not None:
            return      # as the AWS adapter: an instance Auto Scaling no longer has is already done
        g = self.groups[self.insts[iid].group]
        node = self.insts[iid].node
        if node is not None and any(self.pods[k].deleting for k in self.pods_by_node.get(node, ())):
            # What the rollout must never do: a pod there is still stopping (within its grace period).
            self.terminated_with_terminating_pods += 1
        if decrement and g.desired <= g.min_size:
            # As Auto Scaling answers (ValidationError): the decrement would break the min size.
            raise ValueError(f"Currently, desiredSize equals minSize ({g.min_size}). Terminating instance "
                             "without replacement will violate group's min size constraint.")
        self._terminate(iid, cause="rollout", decrement=decrement)
        if self._sched_dirty:
            self._schedule()

    def set_capacity(self, name: str, desired: Optional[int], max_size: Optional[int], raise_only: bool = False) -> None:
        g = self.groups[name]
        new_max = g.max_size if max_size is None else max_size
        new_desired = g.desired if desired is None else desired
        if desired is not None:     # as the AWS adapter: read back, never below the instances (or desired)
            new_desired = max(new_desired, len(g.insts), g.desired if raise_only else 0)
        new_max = max(new_max, new_desired)       # and max never below desired
        if not (g.min_size <= new_desired <= new_max):
            raise ValueError(f"{name}: desired {new_desired} outside [{g.min_size}, {new_max}]")
        g.max_size, g.desired = new_max, new_desired
        g.frozen = None
        self._reconcile(g)

    def set_version(self, name: str, version: str, expected: Optional[str] = None) -> bool:
        g = self.groups[name]
        if expected is not None and g.version != expected:
            return False             # as the AWS adapter: the group moved on since the caller looked
        g.version = version
        g.frozen = None
        return True

    def protect(self, name: str, ids, protected: bool) -> None:
        g = self.groups[name]
        for iid in ids:
            inst = g.insts.get(iid)
            if inst is not None:
                inst.protected = protected
                inst.frozen = None
        g.frozen = None

    def cordon(self, name: str, taint: Taint, annotations) -> None:
        n = self.nodes.get(name)
        if n is None:
            return
        taints = n.taints if any(t.key == taint.key for t in n.taints) else n.taints + (taint,)
        self.nodes[name] = replace(n, unschedulable=True, taints=taints, annotations={**n.annotations, **annotations})
        self._refresh_node(name)

    def uncordon(self, name: str, taint_key: str, annotation_keys) -> None:
        n = self.nodes.get(name)
        if n is None:
            return
        self.nodes[name] = replace(n, unschedulable=False, taints=tuple(t for t in n.taints if t.key != taint_key),
                                   annotations={k: v for k, v in n.annotations.items() if k not in annotation_keys})
        self._refresh_node(name)
        if self._sched_dirty:
            self._schedule()

    def annotate(self, name: str, annotations) -> None:
        n = self.nodes.get(name)
        if n is None:
            return
        merged = dict(n.annotations)
        for k, v in annotations.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        self.nodes[name] = replace(n, annotations=merged)

    def record_event(self, event) -> None:
        """An Event write, as the API server keeps it: a new name creates, a known one updates."""
        key = (event.namespace, event.name)
        if key in self.events:
            self.events_updated += 1
        else:
            self.events_created += 1
        self.events[key] = event

    # ------------------------------------------------------------------ metrics
    def count_old_new(self) -> tuple[int, int]:
        """Instances on / off the version their group is going to: the target its rollout intent
        names while one is under way (a group may be pinned to the previous version meanwhile),
        else the group's current version."""
        old = new = 0
        for inst in self.insts.values():
            if inst.leaving is not None:
                continue              # in Terminating:Wait: gone for the group (and the rollout)
            g = self.groups[inst.group]
            target = g.tags.get(TAG_INTENT_PREFIX + "target-version", g.version) if self.intent is not None \
                and self.intent.phase == "rolling" else g.version
            if inst.version == target:
                new += 1
            else:
                old += 1
        return old, new

    def _sample(self, t: float) -> None:
        old = sum(1 for i in self.insts.values() if i.version == OLD_VERSION)
        running = sum(1 for k, p in self.pods.items() if p.phase == "Running" and self.pinfo[k].kind == "job")
        pending = sum(1 for k in self.pending if self.pinfo[k].kind == "job")
        self.timeline.append({"t": round(t - self.start_at, 3), "old_nodes": old, "new_nodes": len(self.insts) - old,
                              "jobs_running": running, "jobs_pending": pending,
                              "deadline_at": round(self.deadline_at - self.start_at, 3)})

    def pending_waits(self) -> list[float]:
        """How long each Job pod created during the simulation (submitted or retried) waited
        to run; one still pending at the end (unscheduled, or bound and starting) counts with
        what it has waited so far."""
        still = [self.now - pod.created_at for k, pod in self.pods.items()
                 if pod.phase == "Pending" and self.pinfo[k].kind == "job" and self.pinfo[k].arrival]
        return self.waits + still


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]
