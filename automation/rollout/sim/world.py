"""A simulated EKS fleet on a virtual clock: ASGs, nodes, pods, a scheduler,
cluster-autoscaler, PodDisruptionBudgets, Job retries and faults.

Time only moves when the rollout sleeps or waits for a change; the world
then runs its event queue (a heap) up to that moment. Pods are indexed by node
and the read-only views handed to the rollout are cached frozen objects, so a
reconcile costs O(fleet) and a 1000-node rollout runs in seconds.

Pod lifecycle, in one place each so a later change can make it richer
(a Pending→Running delay, terminating pods with a grace period, PDB status
recomputed from pod readiness): :meth:`World._create_pod` (Pending),
:meth:`World._bind` (scheduled and Running at once), :meth:`World._on_finish`
(Succeeded), :meth:`World._pod_dies` (deleted at once: evicted, or gone with its
node; a Job's pod comes back Pending as its Job retries, up to backoffLimit),
and :meth:`World.pdb_views` (a budget read from the service pods' readiness).
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
BACKOFF_LIMIT = 6                 # a Job's pods are retried this often (batch/v1 default)
MAX_CYCLES = 400_000


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
    frozen: Optional[AutoScalingGroup] = None
    activities: deque = field(default_factory=lambda: deque(maxlen=ACTIVITIES_KEPT))
    retry_pending: bool = False


@dataclass
class _PodInfo:
    kind: str                 # job | service | ds | warmup
    run_seconds: float = 0.0  # job: how long it runs once started
    arrival: bool = False     # a Job pod created during the simulation (submitted, or a retry)
    service: str = ""
    ready: bool = False       # service pods: counted by their PDB
    job: str = ""             # job: the Job it belongs to
    attempt: int = 0          # job: pods of this Job before this one that failed
    started_at: Optional[float] = None


class World:
    def __init__(self, scenario: Scenario, *, start_at: float = 0.0, roll: bool = True):
        self.s = scenario
        self.rng = random.Random(scenario.seed)
        self.fault_rng = random.Random(scenario.seed + 1)
        self.now = start_at
        self.start_at = start_at
        self.roll = roll                  # False: the launch template never changes (the --no-rollout baseline)
        self._heap: list = []
        self._seq = 0
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
        self.service_ready: dict[str, int] = {}
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
        self.deadline_at = start_at + scenario.deadline_seconds
        self.latest_version = NEW_VERSION if roll else OLD_VERSION   # the newest launch template version
        # metrics
        self.reads = self.writes = self.mutations = 0
        self.throttled = 0
        self.reads_this_cycle = 0
        self.max_reads_per_cycle = 0
        self.cycles = 0
        self.generation = 0
        self.jobs_interrupted = 0
        self.jobs_force_evicted = 0
        self.jobs_lost = 0
        self.jobs_completed = 0
        self.jobs_retried = 0
        self.jobs_failed = 0              # Jobs out of retries (backoffLimit)
        self.job_seconds_lost = 0.0       # work lost by Job pods that died running
        self.pdb_violations = 0
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
            self._bind(key, node)
        for svc in s.services:
            self.service_ready[svc.name] = 0
            names = list(self.nodes)
            for i in range(svc.replicas):
                key = self._new_service_pod(svc.name)
                if names:
                    self._bind(key, names[(i * 7919) % len(names)])
                    self.pinfo[key].ready = True
                    self.service_ready[svc.name] += 1
        # The new launch template version became current (the stack update) — unless this is the baseline.
        if self.roll:
            for g in self.groups.values():
                g.version = NEW_VERSION
                g.frozen = None
        if s.jobs.arrivals_per_hour > 0:
            self._push(self.now + self.rng.expovariate(s.jobs.arrivals_per_hour / 3600.0), "arrival", None)
        if self.autoscaler_replicas is not None:
            self._push(self.now + CA_TICK_SECONDS, "ca", None)
        for i, f in enumerate(s.faults):
            if f.kind == "node_loss":
                self._push(self.start_at + (f.at_seconds or 0.0), "node_loss", i)
            elif f.kind == "publish" and self.roll:
                self._push(self.start_at + (f.at_seconds or 0.0), "publish", i)
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

    def _on_finish(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or pod.phase != "Running":
            return
        self.pods[key] = replace(pod, phase="Succeeded")
        self.jobs_completed += 1
        self.node_used[pod.node_name] -= 1
        self._refresh_node(pod.node_name)
        self.changed = True
        self._push(self.now + FINISHED_POD_TTL_SECONDS, "gc", key)

    def _on_gc(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is not None and pod.phase in ("Succeeded", "Failed"):
            self._remove_pod(key)      # ttlSecondsAfterFinished; not a change the rollout waits for

    def _on_service_ready(self, key: str) -> None:
        info = self.pinfo.get(key)
        if info is not None and key in self.pods and not info.ready and self.pods[key].phase == "Running":
            info.ready = True
            self.service_ready[info.service] += 1
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
                self._kill_instance(self.node_inst[name], cause="autoscaler", decrement=True)

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
        if inst.node:
            self._remove_node(inst.node, cause)
        g = self.groups[inst.group]
        del g.insts[iid]
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
                self._kill_instance(inst.id, cause="scale_in", decrement=False)

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
                  uid=f"uid-{self._ids}")
        key = self._add_pod(pod, _PodInfo(kind="service", service=service))
        self.pending[key] = None
        self._sched_dirty = True
        return key

    def _bind(self, key: str, node: str) -> None:
        pod = self.pods[key]
        info = self.pinfo[key]
        self.pods[key] = replace(pod, node_name=node, phase="Running")
        self.pending.pop(key, None)
        self.pods_by_node[node][key] = None
        self.changed = True
        if info.kind == "job":
            info.started_at = self.now
            self.node_used[node] += 1
            self._refresh_node(node)
            self._push(self.now + info.run_seconds, "finish", key)
            if info.arrival:
                self.waits.append(self.now - pod.created_at)
        elif info.kind == "service":
            self.service_pods_on[node] = self.service_pods_on.get(node, 0) + 1
            start = next(s.start_seconds for s in self.s.services if s.name == info.service)
            self._push(self.now + start, "service_ready", key)

    def _remove_pod(self, key: str) -> None:
        pod = self.pods.pop(key)
        info = self.pinfo.pop(key)
        self.pending.pop(key, None)
        if pod.node_name and pod.node_name in self.pods_by_node:
            self.pods_by_node[pod.node_name].pop(key, None)
            if info.kind == "job" and pod.phase == "Running":
                self.node_used[pod.node_name] -= 1
                self._refresh_node(pod.node_name)
            if info.kind == "service":
                self.service_pods_on[pod.node_name] -= 1
        if info.kind == "service" and info.ready:
            self.service_ready[info.service] -= 1

    def _pod_dies(self, key: str, cause: str) -> None:
        """A pod removed by eviction or with its node. ``cause``: rollout,
        scale_in, autoscaler (all blamed on the rollout's side) or fault. A Job's
        pod that dies running comes back Pending (its Job retries, from scratch)
        until the Job has used up its backoffLimit."""
        pod, info = self.pods[key], self.pinfo[key]
        retry = None
        if info.kind == "job" and pod.phase in ("Running", "Pending") and pod.node_name:
            if cause == "fault":
                self.jobs_lost += 1
            elif self.now < self._pod_deadline(pod):
                self.jobs_interrupted += 1
            else:
                self.jobs_force_evicted += 1
                if cause == "rollout" and self._pdb_holds(pod.node_name):
                    self.forced_on_held_nodes += 1
            if info.started_at is not None:
                self.job_seconds_lost += self.now - info.started_at
            retry = info
        was_ready = info.kind == "service" and info.ready
        self._remove_pod(key)
        self.changed = True
        if retry is not None:
            if retry.attempt < BACKOFF_LIMIT:
                self.jobs_retried += 1
                self._new_job_pod(retry.run_seconds, arrival=True, annotations=dict(pod.annotations),
                                  selector=dict(pod.node_selector), job=retry.job, attempt=retry.attempt + 1)
            else:
                self.jobs_failed += 1
        if info.kind == "service":
            svc = next(s for s in self.s.services if s.name == info.service)
            if was_ready and cause != "fault" and self.service_ready[svc.name] < svc.min_available:
                self.pdb_violations += 1
            self._new_service_pod(svc.name)

    def _pdb_holds(self, node: str) -> bool:
        """A service pod on ``node`` whose PodDisruptionBudget allows no disruption now."""
        for key in self.pods_by_node.get(node, ()):
            info = self.pinfo.get(key)
            if info is not None and info.kind == "service":
                svc = next(s for s in self.s.services if s.name == info.service)
                if self.service_ready[svc.name] - svc.min_available < 1:
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
                                    disruptions_allowed=max(0, self.service_ready[svc.name] - svc.min_available))
                for svc in self.s.services]

    def group_view(self, g: _Group) -> AutoScalingGroup:
        if g.frozen is None:
            insts = []
            for inst in g.insts.values():
                if inst.frozen is None:
                    inst.frozen = Instance(id=inst.id, zone=g.zone, launch_template_version=inst.version,
                                           lifecycle_state="InService" if inst.node else "Pending",
                                           protected_from_scale_in=inst.protected, launched_at=inst.launched_at)
                elif (inst.frozen.lifecycle_state == "Pending") != (inst.node is None):
                    inst.frozen = replace(inst.frozen, lifecycle_state="InService")
                insts.append(inst.frozen)
            g.frozen = AutoScalingGroup(name=g.name, node_group=g.node_group, zone=g.zone, min_size=g.min_size,
                                        max_size=g.max_size, desired_capacity=g.desired,
                                        launch_template_id="lt-sim" + g.name, launch_template_version=g.version,
                                        instances=tuple(insts), tags=dict(g.tags))
        return g.frozen

    def activities(self, name: str, since: float) -> list[ScalingActivity]:
        return [a for a in self.groups[name].activities if a.started_at >= since]

    def evict(self, key: str) -> str:
        pod = self.pods.get(key)
        if pod is None:
            return "gone"
        info = self.pinfo[key]
        if info.kind == "service":
            svc = next(s for s in self.s.services if s.name == info.service)
            ready = self.service_ready[svc.name]
            if (info.ready and ready - svc.min_available < 1) or (not info.ready and ready < svc.min_available):
                return "blocked"
        if pod.node_name is None:
            self._remove_pod(key)
            self.changed = True
            if info.kind == "service":
                self._new_service_pod(info.service)
        else:
            self._pod_dies(key, "rollout")
        if self._sched_dirty:
            self._schedule()
        return "evicted"

    def terminate(self, iid: str, decrement: bool) -> None:
        if iid not in self.insts:
            return      # as the AWS adapter: an instance Auto Scaling no longer has is already done
        g = self.groups[self.insts[iid].group]
        if decrement and g.desired <= g.min_size:
            # As Auto Scaling answers (ValidationError): the decrement would break the min size.
            raise ValueError(f"Currently, desiredSize equals minSize ({g.min_size}). Terminating instance "
                             "without replacement will violate group's min size constraint.")
        self._kill_instance(iid, cause="rollout", decrement=decrement)
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
        to start; one still pending at the end counts with what it has waited so far."""
        still = [self.now - self.pods[k].created_at for k in self.pending
                 if self.pinfo[k].kind == "job" and self.pinfo[k].arrival]
        return self.waits + still


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]
