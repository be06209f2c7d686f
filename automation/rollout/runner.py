"""The rollout loop: observe -> decide -> execute, until done.

Everything stateful lives in the world. The runner holds the rollout Lease,
persists only *intent* (``RolloutIntent`` in the cluster, ``GroupIntent`` as
tags on each ASG) before it changes anything, and rebuilds the rest from a
fresh snapshot every cycle, so running the same command again after a crash
resumes where the world is. The autoscaler is restored on every exit path it
can reach (and by the next run after a hard crash, from the intent).

Outcomes (:data:`~automation.rollout.report.OUTCOMES`): ``completed``;
``rolled_back`` (a bad new version; recorded on the groups, so a rerun reports
it again until the target version changes); ``blocked`` (past the deadline
something kiln will not force keeps nodes from draining — a PodDisruptionBudget,
or in a rollback a Job — the intent stays and a rerun continues); ``failed``
(anything else: launches failing too long, a lost lock, an API error; the
intent stays); ``dry_run``. No exception leaves :func:`run_rollout` but a
simulated crash: every failure is a report with a one-line reason.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, TypeVar

from . import engine
from .engine import (AnnotateNode, ClearRolledBack, Command, Cordon, DeleteGroupIntent, Evict, MarkRolledBack,
                     Protect, ScaleAutoscaler, SetCapacity, SetVersion, Terminate, Uncordon)
from .events import EventRecorder
from .model import CA_SCALE_DOWN_DISABLED, TAINT_ROLLOUT, GroupIntent, RolloutIntent, Snapshot
from .ports import (AutoscalerPort, CloudPort, Clock, ClusterPort, EvictionResult, KubernetesPorts, RolloutStore,
                    Throttled)
from .report import RolloutReport
from .strategies import Strategy, get_strategy, parse_surge

T = TypeVar("T")


def _unique_holder() -> str:
    # Unique per RolloutOptions (host, process, random): two rollouts started
    # with default options must not both "hold" the Lease under one name.
    return f"kiln-rollout/{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class StopRequested(BaseException):
    """SIGTERM (or a first Ctrl-C) arrived. A BaseException, like KeyboardInterrupt, so the
    per-command ``except Exception`` in :meth:`_Session.execute` cannot swallow it."""


BACKOFF_FIRST, BACKOFF_MAX = 1.0, 10.0   # the runner's back-off for a call still throttled after the adapter's retries
OUTAGE_SECONDS = 900.0      # no call at all answered for this long: an outage, not throttling — the run fails
SETTLE_SECONDS = 5.0        # after acting, look again this soon (evicted pods reschedule)
MIN_RECONCILE_SECONDS = 5.0  # a busy cluster's watch fires constantly: at most one full relist per this
MAX_FAILING_CYCLES = 5      # consecutive cycles with a rejected command before the run fails
MAX_PASSES = 3              # rollouts in one run when the version moves on again while one finishes
LAST_LOOK_SECONDS = 2.0     # a last look before terminating is reused within a cycle for this long
_DEFERRED = object()        # a terminate (or version change) the last look held back
_OWNER_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")   # a Kubernetes kind: CamelCase, e.g. PyTorchJob


@dataclass(frozen=True)
class RolloutOptions:
    cluster_name: str
    strategy: str = "default"            # or "double-and-drain"
    surge: str | None = None             # "3" or "25%" of old nodes per group; None = on demand
    deadline_seconds: float = 7200
    ready_timeout_seconds: float = 1800   # registered but not Ready and warm by then: bad
    boot_timeout_seconds: float = 600     # no node registered by then: bad
    launch_failure_timeout_seconds: float = 900   # launches failing this long: stop (failed)
    pause_autoscaler: bool = False
    dry_run: bool = False
    poll_seconds: float = 30
    holder: str = field(default_factory=_unique_holder)   # lock identity; the default is unique per options
    # Owner kinds whose pods are Jobs: never interrupted before the deadline, force-evicted
    # after it. Read from the options on every run (not persisted): a rerun passes the same flags.
    job_owner_kinds: frozenset[str] = engine.DEFAULT_JOB_OWNER_KINDS
    events: bool = True                  # post Kubernetes Events on nodes and pods

    def validate(self) -> None:
        get_strategy(self.strategy)
        parse_surge(self.surge)
        validate_job_owner_kinds(self.job_owner_kinds)
        for name in ("deadline_seconds", "ready_timeout_seconds", "boot_timeout_seconds",
                     "launch_failure_timeout_seconds", "poll_seconds"):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-").removesuffix("-seconds")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{flag}: must be a finite number of seconds, got {value!r}")
            if value <= 0:
                raise ValueError(f"{flag}: must be positive")


def validate_job_owner_kinds(kinds) -> None:
    """Raise ValueError (naming --job-kinds) unless ``kinds`` is a non-empty set of CamelCase kinds."""
    if isinstance(kinds, str) or not isinstance(kinds, (frozenset, set, tuple, list)):
        raise ValueError(f"--job-kinds: expected a set of owner kinds, got {kinds!r}")
    if not kinds:
        raise ValueError("--job-kinds: must name at least one owner kind (e.g. Job)")
    for kind in sorted(kinds, key=str):
        if not isinstance(kind, str) or not _OWNER_KIND.fullmatch(kind):
            raise ValueError(f"--job-kinds: {kind!r} is not a Kubernetes kind (CamelCase, e.g. PyTorchJob)")
        if kind in engine.NEVER_EVICTED_OWNER_KINDS:
            raise ValueError(f"--job-kinds: {kind} pods are never evicted; they cannot be Jobs")


def one_line(exc: BaseException) -> str:
    """An exception as one line a person can act on (no traceback, no multi-line bodies).

    A Kubernetes API error says its status, reason and the API server's own message
    (not the headers and body its ``str`` dumps)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if isinstance(status, int) and hasattr(exc, "reason"):
        message = ""
        try:
            import json
            message = str((json.loads(body or "{}") or {}).get("message") or "")
        except (TypeError, ValueError, AttributeError):
            pass
        text = " ".join(f"{status} {exc.reason}{': ' + message if message else ''}".split())
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 400:
        text = text[:399] + "…"
    return f"{type(exc).__name__}: {text}"


class _Session:
    """One run of the loop against one set of ports."""

    def __init__(self, cloud: CloudPort, cluster: ClusterPort, store: RolloutStore, autoscaler: AutoscalerPort,
                 clock: Clock, options: RolloutOptions, on_event: Optional[Callable[[dict], None]]):
        self.cloud, self.cluster, self.clock, self.options = cloud, cluster, clock, options
        self.store, self.autoscaler = store, autoscaler
        self.on_event = on_event or (lambda event: None)
        self.report = RolloutReport(cluster=options.cluster_name, strategy=options.strategy)
        self.first_seen: dict[str, float] = {}
        self.lease_ttl = max(120.0, 4 * options.poll_seconds)
        self.lease_renewed_at = float("-inf")
        self.intent: Optional[RolloutIntent] = None
        self.autoscaler_restored = False
        self.failing_cycles = 0
        self.lock_lost = False
        self.started = clock.now()
        self.recorder: Optional[EventRecorder] = None
        self.launch_failures_seen: set[str] = set()
        self.events_broken = False
        self.last_progress = self.started   # a node terminated or a pod evicted (this process)
        self.last_answer = self.started     # the API last answered a call (throttling is not an answer)

    # ------------------------------------------------------------------ plumbing
    def emit(self, event: str, **fields) -> None:
        self.on_event({"event": event, "t": round(self.clock.now(), 3), **fields})

    def call(self, fn: Callable[[], T]) -> T:
        """Call a port, backing off while it is throttled (the adapters already retried with
        botocore's adaptive mode, the kube adapter turns 429/5xx into ``Throttled``). Never a
        fixed number of tries: throttling makes a rollout slower, not failed. Only an outage —
        no call at all answered for :data:`OUTAGE_SECONDS` — ends it (failed, one line)."""
        delay = BACKOFF_FIRST
        while True:
            try:
                result = fn()
            except Throttled:
                self.report.throttled_calls += 1
                if self.clock.now() + delay - self.last_answer > OUTAGE_SECONDS:
                    raise
                self.clock.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.last_answer = self.clock.now()
            return result

    def observe(self) -> Snapshot:
        # The snapshot is judged as of the instant its reading began: under heavy throttling the
        # reads can span minutes, and a timeout ("no node registered within 10m") must not be
        # measured against a later clock than the list it is read from.
        # Nodes before groups: an instance the group lists without a node then really had none when
        # the nodes were read (an instance removed in between is gone from the later group list).
        now = self.clock.now()
        nodes = self.call(lambda: self.cluster.list_nodes())
        groups = self.call(lambda: self.cloud.list_groups(self.options.cluster_name))
        pods = self.call(lambda: self.cluster.list_pods())
        pdbs = self.call(lambda: self.cluster.list_pdbs())
        replicas = self.call(lambda: self.autoscaler.get_autoscaler_replicas())
        for g in groups:
            for inst in g.instances:
                self.first_seen.setdefault(inst.id, now)
        activities = []
        since = self.intent.started_at if self.intent is not None else now
        for g in groups:
            live = sum(1 for i in g.instances if engine.is_live(i))
            if g.desired_capacity > live and self.intent is not None:
                # Short of instances: a launch is outstanding or failing. Say why in AWS's words.
                activities += self.call(lambda g=g: self.cloud.list_scaling_activities(g.name, since))
        return Snapshot(now=now, groups=tuple(groups), nodes=tuple(nodes), pods=tuple(pods), pdbs=tuple(pdbs),
                        autoscaler_replicas=replicas, activities=tuple(activities))

    def renew_lock(self) -> bool:
        now = self.clock.now()
        if now - self.lease_renewed_at < self.lease_ttl / 3:
            return True
        ok = self.call(lambda: self.store.acquire_lock(self.options.holder, self.lease_ttl))
        if ok:
            self.lease_renewed_at = now
        elif self.lease_renewed_at != float("-inf"):
            self.lock_lost = True        # we held it and another holder has it now: write nothing more
        return ok

    # ------------------------------------------------------------------ intent
    def group_intents(self, snapshot: Snapshot) -> dict[str, GroupIntent]:
        """Group intents from ASG tags (authoritative), else from the rollout intent."""
        stored = {g.asg: g for g in (self.intent.groups if self.intent else ())}
        out: dict[str, GroupIntent] = {}
        for asg in snapshot.groups:
            gi = engine.group_intent_from_tags(asg) or stored.get(asg.name)
            if gi is not None:
                out[asg.name] = gi
        return out

    def remember_groups(self, snapshot: Snapshot) -> dict[str, GroupIntent]:
        """Tag every group that has old instances and no intent yet, before touching it; follow a
        group whose launch template version moved on to a newer one mid-rollout."""
        intents = self.group_intents(snapshot)
        moved = False
        for asg in snapshot.groups:
            if asg.name in intents:
                follow = engine.moved_target(asg, intents[asg.name])
                if follow is not None:
                    self.call(lambda: self.cloud.put_tags(asg.name, engine.group_intent_tags(follow)))
                    self.emit("target_moved", group=asg.name, version=follow.target_version,
                              reason=f"{asg.name} moved on to launch template version {follow.target_version} "
                                     f"(was {intents[asg.name].target_version}): the rollout goes there instead")
                    intents[asg.name] = follow
                    moved = True
                continue
            gi = engine.initial_group_intent(asg)
            if gi is not None:
                self.call(lambda: self.cloud.put_tags(asg.name, engine.group_intent_tags(gi)))
                intents[asg.name] = gi
        if moved and self.intent is not None:
            self.intent = replace(self.intent, groups=tuple(
                intents.get(g.asg, g) for g in self.intent.groups))
            self.call(lambda: self.store.write_intent(self.intent))
        return intents

    def ensure_intent(self, snapshot: Snapshot, strategy: Strategy) -> Optional[RolloutIntent]:
        existing = self.call(lambda: self.store.read_intent())
        if existing is not None:
            self.intent = existing
            self.report.resumed = True
            self.emit("resumed", rollout_id=existing.rollout_id, phase=existing.phase,
                      reason=f"continuing rollout {existing.rollout_id} ({existing.phase})")
            return existing
        intents = self.remember_groups(snapshot)
        if not intents:
            return None
        now = self.clock.now()
        pause = self.options.pause_autoscaler or strategy.pause_autoscaler
        self.intent = RolloutIntent(
            rollout_id=uuid.uuid4().hex[:12], started_at=now, deadline_at=now + self.options.deadline_seconds,
            strategy=strategy.name, surge=self.options.surge, pause_autoscaler=pause,
            autoscaler_replicas=snapshot.autoscaler_replicas, ready_timeout_seconds=self.options.ready_timeout_seconds,
            phase="rolling", groups=tuple(intents[k] for k in sorted(intents)),
            boot_timeout_seconds=self.options.boot_timeout_seconds,
            launch_failure_timeout_seconds=self.options.launch_failure_timeout_seconds)
        self.call(lambda: self.store.write_intent(self.intent))
        return self.intent

    # ------------------------------------------------------------------ execution
    def execute(self, commands: tuple[Command, ...]) -> bool:
        """Run commands in order; a group whose command fails is skipped for the
        rest of this cycle (e.g. no capacity change after a failed terminate).
        Returns whether anything changed (False when every command was an
        eviction a PodDisruptionBudget refused: then the runner backs off)."""
        failed_groups: set[str] = set()
        error: Optional[Exception] = None
        progressed = False
        looks: dict[str, tuple[float, set[str]]] = {}

        def last_look(kind: str) -> set[str]:
            """Nodes with work ("pods") or instances with a node ("nodes"), read fresh: reused for
            LAST_LOOK_SECONDS within a cycle, so a cycle of a hundred terminates costs one read."""
            taken = looks.get(kind)
            if taken is None or self.clock.now() - taken[0] > LAST_LOOK_SECONDS:
                value = (self.nodes_with_work() if kind == "pods" else
                         {n.instance_id for n in self.call(lambda: self.cluster.list_nodes()) if n.instance_id})
                taken = looks[kind] = (self.clock.now(), value)
            return taken[1]

        for cmd in commands:
            # A long cycle (a thousand cordons, throttled calls) must not outlive
            # the Lease: renew it as we go, and stop acting the moment it is lost.
            if not self.renew_lock():
                return progressed
            group = getattr(cmd, "asg", None)
            if group and group in failed_groups:
                continue
            action: Callable[[], Optional[EvictionResult]] = (lambda cmd=cmd: self.apply(cmd))
            if isinstance(cmd, Terminate):
                action = (lambda cmd=cmd: self.terminate_if_still_removable(cmd, last_look))
            try:
                # A throttled write backs off and is tried again (not skipped): under heavy throttling
                # the rollout goes slower, it does not stall. A terminate looks again on every try.
                result = self.call(action)
                if result is _DEFERRED:
                    failed_groups.add(cmd.asg)       # the group's later commands assumed this terminate
                    continue
                progressed = (result is not EvictionResult.BLOCKED) or progressed
            except Throttled:
                if group:
                    failed_groups.add(group)
            except Exception as exc:  # noqa: BLE001 - the world moved since the snapshot; decide again
                error = exc
                self.emit("command_failed", command=repr(cmd), reason=one_line(exc))
                if group:
                    failed_groups.add(group)
        # A rejected command is retried from a fresh snapshot; the same failure
        # cycle after cycle is a real problem and ends the run.
        self.failing_cycles = self.failing_cycles + 1 if error else 0
        if error is not None and self.failing_cycles >= MAX_FAILING_CYCLES:
            raise error
        return progressed or error is not None

    def terminate_if_still_removable(self, cmd: Terminate, last_look: Callable[[str], set[str]]):
        """The last look before an exact terminate: a pod that bound to the node since the
        snapshot (one tolerating the cordon, say), or a node that registered for an instance
        the snapshot saw without one, keeps the instance for now."""
        if cmd.node is not None and cmd.node in last_look("pods"):
            self.emit("terminate_deferred", node=cmd.node, instance=cmd.instance_id,
                      reason="a pod arrived on the node after the snapshot")
            return _DEFERRED
        if cmd.node is None and cmd.instance_id in last_look("nodes"):
            self.emit("terminate_deferred", instance=cmd.instance_id, reason="its node registered after the snapshot")
            return _DEFERRED
        return self.apply(cmd)

    def nodes_with_work(self) -> set[str]:
        """Nodes that host a pod the drain waits for or must evict, read fresh:
        one more list call per cycle that terminates, to close the window between
        the snapshot and the terminate."""
        pods = self.call(lambda: self.cluster.list_pods())
        kinds = self.options.job_owner_kinds
        return {p.node_name for p in pods if p.node_name and engine.holds_node(p, kinds)}

    def apply(self, cmd: Command) -> Optional[EvictionResult]:
        now = self.clock.now()
        if isinstance(cmd, Cordon):
            taint = engine.SURPLUS_TAINT if cmd.surplus else engine.ROLLOUT_TAINT
            self.cluster.cordon(cmd.node, taint, {CA_SCALE_DOWN_DISABLED: "true"})
            self._tell("Node", "", cmd.node, "RolloutCordoned", f"cordoned: {cmd.why}" if cmd.why else "cordoned",
                       now, action="Cordon")
            for pod in cmd.waits_for:
                if not math.isfinite(pod.deadline):
                    until = "it finishes: its deadline extension annotation cannot be read, so it is never evicted"
                else:
                    until = (f"{engine._clock(pod.deadline)} ({engine._duration(pod.deadline - now)} from now)"
                             + (", then evicts it" if self.intent is None or self.intent.phase == "rolling" else ""))
                self._tell("Pod", pod.namespace, pod.name, "RolloutWaiting",
                           f"node {cmd.node} is being replaced; the rollout waits for this pod until {until}",
                           now, uid=pod.uid, action="Wait")
        elif isinstance(cmd, Uncordon):
            self.cluster.uncordon(cmd.node, TAINT_ROLLOUT, [CA_SCALE_DOWN_DISABLED])
            if cmd.why:
                self._tell("Node", "", cmd.node, "RolloutUncordoned", f"uncordoned: {cmd.why}", now,
                           action="Uncordon")
        elif isinstance(cmd, AnnotateNode):
            self.cluster.annotate_node(cmd.node, dict(cmd.annotations))
        elif isinstance(cmd, Evict):
            result = self.cluster.evict(cmd.namespace, cmd.name)
            if result is EvictionResult.EVICTED:
                self.report.pods_evicted += 1
                self.last_progress = now
                if cmd.forced:
                    self.report.jobs_force_evicted += 1
                self.emit("evicted", pod=f"{cmd.namespace}/{cmd.name}", node=cmd.node, forced=cmd.forced)
                self._tell("Pod", cmd.namespace, cmd.name,
                           "RolloutForceEvicted" if cmd.forced else "RolloutEvicted",
                           f"evicted from node {cmd.node}: {cmd.why}" if cmd.why else f"evicted from node {cmd.node}",
                           now, uid=cmd.uid, warning=cmd.forced, action="Evict")
            elif result is EvictionResult.BLOCKED:
                self.report.evictions_blocked += 1
            return result
        elif isinstance(cmd, Terminate):
            self.cloud.terminate_instance(cmd.instance_id, decrement_desired=cmd.decrement)
            self.report.nodes_terminated += 1
            self.last_progress = now
            self.emit("terminated", instance=cmd.instance_id, node=cmd.node, group=cmd.asg)
            if cmd.node:
                self._tell("Node", "", cmd.node, "RolloutTerminating",
                           f"terminating instance {cmd.instance_id} of {cmd.asg}" + (f": {cmd.why}" if cmd.why else ""),
                           now, action="Terminate")
        elif isinstance(cmd, SetCapacity):
            self.cloud.set_capacity(cmd.asg, desired=cmd.desired, max_size=cmd.max_size, raise_only=cmd.raise_only)
        elif isinstance(cmd, SetVersion):
            # Written only if the group still has the version the decision saw (read back in the same
            # call): a newer version published since (a ``pulumi up``) is followed next cycle, not undone.
            if self.cloud.set_launch_template_version(cmd.asg, cmd.launch_template_id, cmd.version,
                                                      expected=cmd.expected) is False:
                self.emit("version_deferred", group=cmd.asg, version=cmd.version,
                          reason=f"{cmd.asg} is no longer on launch template version {cmd.expected}: not set to "
                                 f"{cmd.version}; decided again from a fresh look")
                return _DEFERRED
        elif isinstance(cmd, Protect):
            self.cloud.set_instance_protection(cmd.asg, list(cmd.instance_ids), cmd.protected)
        elif isinstance(cmd, ScaleAutoscaler):
            self.autoscaler.scale_autoscaler(cmd.replicas)
        elif isinstance(cmd, DeleteGroupIntent):
            self.cloud.delete_tags(cmd.asg, engine.group_intent_tag_keys())
        elif isinstance(cmd, MarkRolledBack):
            self.cloud.put_tags(cmd.asg, engine.rolled_back_tags(cmd.from_version, cmd.to_version, cmd.reason))
        elif isinstance(cmd, ClearRolledBack):
            self.cloud.delete_tags(cmd.asg, list(engine.ROLLED_BACK_TAG_KEYS))
        else:  # pragma: no cover - a new command type without an executor is a bug
            raise TypeError(f"no executor for {cmd!r}")
        return None

    # ------------------------------------------------------------------ Events (best effort)
    def _tell(self, kind: str, namespace: str, name: str, reason: str, note: str, now: float, *,
              uid: Optional[str] = None, warning: bool = False, action: str = "Drain") -> None:
        if self.recorder is not None:
            self.recorder.observe(kind, namespace, name, reason, note, now=now, uid=uid, warning=warning,
                                  action=action, oneshot=True)

    def observe_notes(self, decision: engine.Decision) -> None:
        if self.recorder is None:
            return
        self.recorder.begin_cycle()
        now = self.clock.now()
        for n in decision.notes:
            self.recorder.observe(n.kind, n.namespace, n.name, n.reason, n.message, now=now, subject=n.subject,
                                  uid=n.uid, warning=n.warning, action="Wait" if not n.warning else "Drain")

    def post_events(self) -> None:
        """Write what the recorder says is due; an Event never stops or slows the rollout."""
        if self.recorder is None or self.events_broken:
            return
        now = self.clock.now()
        for event in self.recorder.due(now):
            if self.lock_lost:
                return
            try:
                self.cluster.record_event(event)
            except Throttled:
                self.report.events_failed += 1
                return                    # the API is busy: try the rest next cycle
            except Exception as exc:  # noqa: BLE001 - best effort, e.g. RBAC without events
                self.report.events_failed += 1
                if self.report.events_failed == 1:
                    self.emit("events_unavailable", reason=f"cannot record Kubernetes Events: {one_line(exc)}")
                if self.report.events_failed >= 20 and not self.report.events_written:
                    self.events_broken = True      # e.g. no RBAC for events: stop trying
                return
            self.recorder.written(event, now)
            self.report.events_written += 1

    def wait(self, strategy: Strategy, acted: bool, cycle_started: float, wake_at: Optional[float]) -> None:
        if acted:
            self.clock.sleep(SETTLE_SECONDS)
            return
        timeout = strategy.poll_seconds or self.options.poll_seconds
        if wake_at is not None:
            timeout = max(1.0, min(timeout, wake_at - self.clock.now()))
        if strategy.react_to_changes:
            self.call(lambda: self.cluster.wait_for_change(timeout))
            rest = MIN_RECONCILE_SECONDS - (self.clock.now() - cycle_started)
            if rest > 0:
                self.clock.sleep(rest)
        else:
            self.clock.sleep(timeout)

    # ------------------------------------------------------------------ the loop
    def run(self) -> RolloutReport:
        options = self.options
        options.validate()
        strategy = get_strategy(options.strategy)
        self.report.started_at = self.clock.now()
        self.emit("start", cluster=options.cluster_name, strategy=strategy.name, dry_run=options.dry_run)
        if options.dry_run:
            try:
                return self.dry_run(strategy)
            except Exception as exc:  # noqa: BLE001 - a report with one line, never a traceback
                self.report.reason = one_line(exc)
                self.emit("error", reason=self.report.reason)
                return self.finish_report("failed")
        previous = self._catch_signals()
        try:
            return self._run_locked(options, strategy)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    @staticmethod
    def _catch_signals() -> dict:
        """Turn the first SIGTERM (kubectl delete pod, systemd stop, CI cancel) or Ctrl-C into
        StopRequested, so the run stops where it is, restores the autoscaler, releases the Lease and
        reports (the default action would kill the process on the spot). CI cancels often send
        SIGINT, then SIGTERM seconds later: once stopping, a further SIGTERM is ignored so the clean-up
        finishes; a second Ctrl-C still forces (KeyboardInterrupt). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        stopping: list[int] = []

        def stop(signum, frame):
            if stopping:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                return                       # already stopping: let the clean-up finish
            stopping.append(signum)
            raise StopRequested(signal.Signals(signum).name)
        return {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}

    def _run_locked(self, options: RolloutOptions, strategy: Strategy) -> RolloutReport:
        outcome = "failed"
        snapshot: Optional[Snapshot] = None
        locked = False
        try:
            if not self.renew_lock():
                self.report.reason = "another rollout holds the lock"
                self.emit("locked", reason=self.report.reason)
                return self.finish_report("failed")
            locked = True
            snapshot = self.observe()
            earlier = None if self.call(lambda: self.store.read_intent()) is not None else next(
                (why for why in map(engine.earlier_rollback, snapshot.groups) if why), None)
            if earlier:
                # Durable outcome: the rollback is recorded on the groups, not in this process.
                self.report.reason = (f"{earlier}; publish a new launch template version (or delete the "
                                      f"kiln.dev/rolled-back-* tags on the group) to roll again")
                self.emit("rolled_back_earlier", reason=self.report.reason)
                outcome = "rolled_back"
                return self.finish_report(outcome, snapshot)
            for rollout_pass in range(MAX_PASSES):
                intent = self.ensure_intent(snapshot, strategy)
                if intent is None:
                    if rollout_pass == 0:
                        self.report.reason = "no old nodes"
                    outcome = "completed"
                    break
                strategy = get_strategy(intent.strategy)    # a resumed rollout keeps its strategy
                self.report.strategy = strategy.name
                self.report.rollout_id = intent.rollout_id
                self.report.deadline_at = intent.deadline_at
                if rollout_pass == 0:
                    self.report.started_at = intent.started_at
                    # Against each group's target: a group pinned to the previous version by an earlier
                    # run has its original nodes still to replace, not its canary.
                    self.report.old_nodes_at_start = engine.old_node_count(
                        snapshot, self.group_intents(snapshot).values())
                if options.events:
                    self.recorder = EventRecorder(intent.rollout_id)
                # A resumed rollout looks again: the first snapshot was read before the intent was, so
                # without the scaling activities that say launches are failing (read only for a
                # rollout under way) — a restart must not drain what cannot be replaced.
                outcome = self.loop(strategy, None if self.report.resumed else snapshot)
                snapshot = None
                if outcome != "completed":
                    break
                # Level-triggered to the end: a version published while the rollout was finishing (a
                # pulumi up during the last writes) leaves old nodes; "completed" would be a lie.
                snapshot = self.observe()
                left = engine.old_node_count(snapshot)
                if not left:
                    break
                if rollout_pass == MAX_PASSES - 1:
                    outcome = "failed"
                    self.report.reason = (f"{left} node{'s' if left != 1 else ''} run an older launch template "
                                          f"version than their group's after {MAX_PASSES} rollouts in a row: the version "
                                          f"keeps changing (or new instances never run it); rerun once it is stable")
                    break
                self.emit("another_rollout", reason=f"a newer launch template version was published while the rollout "
                                                    f"finished: {left} old node{'s' if left != 1 else ''}; rolling again")
                self.intent, self.recorder, self.first_seen = None, None, {}
        except Exception as exc:  # noqa: BLE001 - any failure must still restore the autoscaler
            self.report.reason = one_line(exc)
            self.emit("error", reason=self.report.reason)
            snapshot = None
        except StopRequested as stop:
            self.report.reason = f"stopped by {stop.args[0] if stop.args else 'SIGTERM'}; rerun the same command to resume"
            self.emit("error", reason=self.report.reason)
            snapshot = None
        finally:
            # Runs on every exit, a crash included (where the dead process's calls fail again).
            self.restore_autoscaler_if_paused()
            # Released on every exit we live through, failed ones too, so the rerun
            # resumes at once (the intent stays); never once another holder has it.
            if locked and not self.lock_lost:
                try:
                    self.call(lambda: self.store.release_lock(options.holder))
                except Exception:  # noqa: BLE001 - the lease expires by itself
                    pass
        return self.finish_report(outcome, snapshot)

    def loop(self, strategy: Strategy, first: Optional[Snapshot] = None) -> str:
        assert self.intent is not None
        snapshot: Optional[Snapshot] = first
        while True:
            if not self.renew_lock():
                self.report.reason = "lost the lock to another rollout"
                return "failed"
            if snapshot is None:
                snapshot = self.observe()
            intents = self.group_intents(snapshot)
            if self.intent.phase == "rolling":
                intents = self.remember_groups(snapshot)
            decision = engine.decide(snapshot, self.intent, intents, strategy, self.first_seen,
                                     job_kinds=self.options.job_owner_kinds, run_started_at=self.started)
            self.report.cycles += 1
            self.emit("cycle", phase=self.intent.phase, **decision.summary())
            self.tell_launch_failures(decision)
            self.observe_notes(decision)
            if decision.rollback_reason and self.intent.phase == "rolling" and not self.confirmed(decision, strategy):
                snapshot = None          # not seen again on a fresh look: a snapshot caught mid-change
                continue
            if decision.rollback_reason and self.intent.phase == "rolling":
                self.intent = replace(self.intent, phase="rolling_back", rollback_reason=decision.rollback_reason)
                self.call(lambda: self.store.write_intent(self.intent))
                self.report.reason = decision.rollback_reason
                self.emit("rollback", reason=decision.rollback_reason)
                self.post_events()
                snapshot = None
                continue
            if decision.done:
                self.post_events()
                self.finalize(snapshot, intents, strategy)
                return "completed" if self.intent.phase == "rolling" else "rolled_back"
            stop = decision.stop
            if stop is not None and stop.overdue and snapshot.now - self.last_progress < engine.GRACE_AFTER_DEADLINE:
                stop = None             # slow (heavy throttling, a budget allowing one eviction at a time), not stuck
            if stop is not None and stop.outcome == "completed":
                self.post_events()
                self.report.reason = stop.reason
                self.finalize(snapshot, intents, strategy)
                return "completed"
            decision = replace(decision, stop=stop)
            if decision.stop is not None:
                if decision.stop.commands:
                    self.execute(decision.stop.commands)
                self.post_events()
                self.report.reason = decision.stop.reason
                self.report.held = [{"node": h.node, "group": h.group, "holders": list(h.holders)}
                                    for h in decision.held]
                self.emit(decision.stop.outcome, reason=decision.stop.reason)
                return decision.stop.outcome
            progressed = self.execute(decision.commands)
            self.post_events()
            if self.lock_lost:
                self.report.reason = "lost the lock to another rollout"
                return "failed"
            self.wait(strategy, acted=progressed, cycle_started=snapshot.now, wake_at=decision.wake_at)
            snapshot = None

    def confirmed(self, decision: engine.Decision, strategy: Strategy) -> bool:
        """A rollback is decided on two looks: the reason must hold on a fresh snapshot too."""
        fresh = self.observe()
        intents = self.group_intents(fresh)
        again = engine.decide(fresh, self.intent, intents, strategy, self.first_seen,
                              job_kinds=self.options.job_owner_kinds, run_started_at=self.started)
        if again.rollback_reason:
            decision_reason = again.rollback_reason
            return bool(decision_reason)
        self.emit("rollback_not_confirmed", reason=f"not seen again on a fresh look: {decision.rollback_reason}")
        return False

    def tell_launch_failures(self, decision: engine.Decision) -> None:
        """Each failed launch once, as it happens, in AWS's words (progress line and JSON event)."""
        for failure in decision.launch_failures:
            if failure.activity_id in self.launch_failures_seen:
                continue
            self.launch_failures_seen.add(failure.activity_id)
            self.report.launch_failures.append({"group": failure.group, "message": failure.message,
                                                "activity": failure.activity_id})
            self.emit("launch_failure", group=failure.group, message=failure.message, activity=failure.activity_id,
                      since=round(failure.since, 3), invalid_template=failure.invalid_template,
                      reason=f"launch in {failure.group} failed: {failure.message}")

    def finalize(self, snapshot: Snapshot, intents: dict[str, GroupIntent], strategy: Strategy) -> None:
        assert self.intent is not None
        for cmd in engine.finish_commands(snapshot, self.intent, intents, strategy):
            if not self.renew_lock():
                raise RuntimeError("lost the lock to another rollout while finishing")
            self.call(lambda: self.apply(cmd))
        self.autoscaler_restored = True     # finish_commands restored it if this rollout paused it
        self.call(lambda: self.store.clear_intent())

    def restore_autoscaler_if_paused(self) -> None:
        """Every exit path: put cluster-autoscaler back if this rollout paused it.

        The intent stays when the rollout did not finish, so a rerun pauses it
        again and resumes; a hard crash never gets here, and the rerun restores
        it at the end from the intent."""
        intent = self.intent
        if intent is None or not intent.pause_autoscaler or intent.autoscaler_replicas is None \
                or self.autoscaler_restored or self.lock_lost:
            return      # lock lost: the rollout that holds it now owns the autoscaler too
        try:
            self.call(lambda: self.autoscaler.scale_autoscaler(intent.autoscaler_replicas))
            self.autoscaler_restored = True
        except Exception as exc:  # noqa: BLE001 - never mask the original failure; the rerun restores it
            self.emit("error", reason=f"could not restore cluster-autoscaler: {one_line(exc)}")

    def finish_report(self, outcome: str, snapshot: Optional[Snapshot] = None) -> RolloutReport:
        self.report.outcome = outcome
        self.report.finished_at = self.clock.now()
        try:
            snapshot = snapshot or self.observe()
            rolling = self.intent is not None and self.intent.phase == "rolling"
            self.report.old_nodes_remaining = engine.old_node_count(
                snapshot, self.intent.groups if rolling else ())
            if self.intent is not None:
                by_name = {g.name: g for g in snapshot.groups}
                self.report.max_size_restored = all(
                    by_name[g.asg].max_size == g.original_max for g in self.intent.groups if g.asg in by_name)
                if self.intent.autoscaler_replicas is not None:
                    self.report.autoscaler_restored = (
                        snapshot.autoscaler_replicas == self.intent.autoscaler_replicas
                        or (self.intent.pause_autoscaler and self.autoscaler_restored))
        except Exception:  # noqa: BLE001 - the report says what it knows; the outcome stands
            pass
        self.emit("finish", outcome=outcome, reason=self.report.reason)
        return self.report

    def dry_run(self, strategy: Strategy) -> RolloutReport:
        snapshot = self.observe()
        intents = {}
        for asg in snapshot.groups:
            gi = engine.group_intent_from_tags(asg) or engine.initial_group_intent(asg)
            if gi is not None:
                intents[asg.name] = gi
        intent = self.call(lambda: self.store.read_intent()) or RolloutIntent(
            rollout_id="dry-run", started_at=snapshot.now, deadline_at=snapshot.now + self.options.deadline_seconds,
            strategy=strategy.name, surge=self.options.surge,
            pause_autoscaler=self.options.pause_autoscaler or strategy.pause_autoscaler,
            autoscaler_replicas=snapshot.autoscaler_replicas, ready_timeout_seconds=self.options.ready_timeout_seconds,
            groups=tuple(intents.values()), boot_timeout_seconds=self.options.boot_timeout_seconds,
            launch_failure_timeout_seconds=self.options.launch_failure_timeout_seconds)
        decision = engine.decide(snapshot, intent, intents, strategy, {}, job_kinds=self.options.job_owner_kinds)
        self.report.old_nodes_at_start = engine.old_node_count(snapshot, intents.values())
        self.report.plan = [repr(c) for c in decision.commands]
        earlier = next((why for why in map(engine.earlier_rollback, snapshot.groups) if why), None)
        self.report.reason = (f"{earlier}; a run would report rolled_back" if earlier else
                              f"{len(intents)} group(s) with old nodes; nothing changed")
        self.emit("plan", plan=self.report.plan, **decision.summary())
        return self.finish_report("dry_run", snapshot)


def run_rollout(cloud: CloudPort, cluster: KubernetesPorts, clock: Clock, options: RolloutOptions,
                on_event: Callable[[dict], None] | None = None) -> RolloutReport:
    """Replace every node whose launch template is out of date, without
    interrupting a running Job before its deadline and without giving up a
    group's old nodes before a replacement there is proven. Returns the report;
    ``outcome`` is completed, rolled_back, blocked or failed (dry_run for
    ``--dry-run``). Raises only ValueError for invalid options."""
    return _Session(cloud, cluster, cluster, cluster, clock, options, on_event).run()
