"""The termination handler's loop: elect -> observe -> decide -> execute, until stopped.

Only the leader (``kube.LeaseElector``) touches the queue or the world; a
standby replica only tries for the Lease. Each cycle the leader reads this
cluster's ASG instances, then receives a batch of messages (long polling paces
the loop), reads the nodes and the pods of the nodes that matter, asks
:func:`~.decisions.decide` what to do and does it, in order, making sure before
every action that it still leads.

Messages are deleted only after the actions they depend on succeeded (a failed
mark leaves its message to come back after the visibility timeout); a message
nobody understands is left alone and moves to the dead-letter queue after the
redrive policy's receive count. A lifecycle action needs nothing from its
message once its node is marked: a new leader finds the instance in
``Terminating:Wait`` through Auto Scaling, the start time on the node, and
heartbeats at once.

Failure modes, each failing closed: Auto Scaling unreadable -> the last known
instances are used (heartbeats go on), or, with none known yet, the cycle is
skipped and the messages stay in the queue; the cluster unreadable -> every
lifecycle action is held (heartbeats) and no message is deleted; the queue
unreadable -> the world is still reconciled (holds and completions need no
message).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import decisions as d
from .aws import LifecycleActions, Queue, Received
from .events import parse_message
from .kube import EvictionResult, KubeTermination, LeaseElector
from .rules import DEFAULT_JOB_OWNER_KINDS

log = logging.getLogger("kiln.termination")


@dataclass(frozen=True)
class HandlerOptions:
    cluster_name: str
    queue_url: str
    identity: str
    hook_name: str = d.HOOK_NAME
    job_grace_seconds: float = 7200.0
    heartbeat_timeout_seconds: float = 300.0
    job_kinds: frozenset[str] = DEFAULT_JOB_OWNER_KINDS
    lease_namespace: str = "kube-system"
    lease_name: str = "kiln-termination-handler"
    poll_seconds: float = 5.0            # SQS long poll, and the standby's retry period
    liveness_file: Optional[str] = None  # touched every cycle; the Deployment's liveness probe reads its age

    @property
    def settings(self) -> d.Settings:
        return d.Settings(hook_name=self.hook_name, job_grace_seconds=self.job_grace_seconds,
                          heartbeat_timeout_seconds=self.heartbeat_timeout_seconds, job_kinds=self.job_kinds)


def emit(event: str, **fields: Any) -> None:
    """One JSON line per decision and action: what operators grep and ship to their log store."""
    log.info(json.dumps({"event": event, **fields}, sort_keys=True, default=str))


@dataclass
class Handler:
    options: HandlerOptions
    queue: Queue
    lifecycle: LifecycleActions
    kube: KubeTermination
    elector: LeaseElector
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # What this process remembers (lost on restart, which only makes the next heartbeat come at once).
    started: dict[str, float] = field(default_factory=dict)
    heartbeats: dict[str, float] = field(default_factory=dict)
    groups: Optional[frozenset[str]] = None
    instances: dict[str, d.Instance] = field(default_factory=dict)
    stopping: bool = False
    _last_elected: float = float("-inf")

    # ---- the loop --------------------------------------------------------------------------------

    def run(self, max_cycles: Optional[int] = None) -> int:
        cycles = 0
        try:
            while not self.stopping and (max_cycles is None or cycles < max_cycles):
                cycles += 1
                if self.cycle() is None and not self.stopping:
                    self.sleep(self.options.poll_seconds)
        finally:
            self.elector.release()
        return 0

    def leading(self) -> bool:
        """Still the leader: renew the Lease when a retry period has passed, then ask."""
        now = self.elector.clock()
        if now - self._last_elected >= min(self.options.poll_seconds, self.elector.renew_deadline / 2):
            self._last_elected = now
            self.elector.try_acquire_or_renew()
        return self.elector.is_leader()

    def cycle(self) -> Optional[d.Decision]:
        """One cycle; None when this replica is not the leader (or could not read Auto Scaling yet)."""
        self._touch_liveness()
        if not self.leading():
            return None
        if not self._read_instances():
            return None
        received = self._receive()
        notices = tuple(parse_message(r.message_id, r.body) for r in received)
        for notice in notices:
            if notice.reason is d.Reason.LIFECYCLE:
                for iid in notice.instance_ids:
                    self.started[iid] = min(notice.time, self.started.get(iid, notice.time))
        snapshot = self._observe(notices)
        decision = d.decide(snapshot, self.clock(), self.options.settings)
        for hold in decision.holds:
            emit("holding", instance=hold.instance_id, node=hold.node, until=d.format_time(hold.until),
                 waiting_for=list(hold.waiting_for))
        self.execute(decision, {r.message_id: r for r in received})
        self._forget_finished()
        return decision

    # ---- observe ---------------------------------------------------------------------------------

    def _read_instances(self) -> bool:
        try:
            self.groups, self.instances = self.lifecycle.describe()
        except Exception as error:  # noqa: BLE001 - botocore already retried; go on with what we knew
            if self.groups is None:
                emit("skipped", reason=f"cannot describe this cluster's ASGs yet: {type(error).__name__}: {error}")
                return False
            emit("stale", reason=f"DescribeAutoScalingGroups failed, using the last answer: {type(error).__name__}: {error}")
        return True

    def _receive(self) -> list[Received]:
        try:
            return self.queue.receive()
        except Exception as error:  # noqa: BLE001 - holds and completions need no message
            emit("queue_unreadable", reason=f"{type(error).__name__}: {error}")
            return []

    def _observe(self, notices: tuple[d.Notice, ...]) -> d.Snapshot:
        base = dict(groups=self.groups or frozenset(), instances=dict(self.instances), notices=notices,
                    started=dict(self.started), heartbeats=dict(self.heartbeats))
        try:
            nodes = self.kube.list_nodes()
            waiting = {i.id for i in self.instances.values() if i.lifecycle_state == d.WAITING}
            named = waiting | {iid for n in notices for iid in n.instance_ids}
            interesting = sorted({n.name for n in nodes
                                  if not n.instance_id or n.instance_id in named or d.marks_of(n)})
            pods = self.kube.list_pods_on(interesting) if interesting else []
            pdbs = self.kube.list_pdbs() if pods else []
        except Exception as error:  # noqa: BLE001 - fail closed: hold everything, settle nothing
            emit("cluster_unreadable", reason=f"{type(error).__name__}: {error}")
            return d.Snapshot(nodes=None, **base)
        return d.Snapshot(nodes=tuple(nodes), pods=tuple(pods), pdbs=tuple(pdbs), **base)

    # ---- execute ---------------------------------------------------------------------------------

    def execute(self, decision: d.Decision, messages: dict[str, Received]) -> None:
        failed: set[str] = set()
        for action in decision.actions:
            if not self.leading():
                emit("lost_leadership", reason="another replica leads now; the rest of this cycle is left to it")
                return
            instance = getattr(action, "instance_id", None)
            try:
                self.apply(action, messages, failed)
            except Exception as error:  # noqa: BLE001 - the world moved; the next cycle decides again
                emit("action_failed", action=type(action).__name__, instance=instance, detail=repr(action),
                     reason=f"{type(error).__name__}: {error}")
                if instance and not isinstance(action, d.Event):
                    failed.add(instance)

    def apply(self, action: d.Action, messages: dict[str, Received], failed: set[str]) -> None:
        if isinstance(action, d.Mark):
            found = self.kube.mark(action.node, action.reasons)
            emit("marked", node=action.node, instance=action.instance_id, found=found,
                 reasons={r.value: d.format_time(t) for r, t in action.reasons})
        elif isinstance(action, d.Evict):
            result = self.kube.evict(action.namespace, action.name)
            emit("evict", pod=f"{action.namespace}/{action.name}", node=action.node, job=action.job, result=result.value)
            if result is EvictionResult.EVICTED:
                self.kube.record_event(d.Ref("Pod", action.name, action.namespace), "EvictedForTermination",
                                       f"evicted: node {action.node} (instance {action.instance_id}) is going away",
                                       warning=action.job, action="Evict")
        elif isinstance(action, d.Heartbeat):
            pending = self.lifecycle.heartbeat(action.asg, action.hook, action.instance_id)
            if pending:
                self.heartbeats[action.instance_id] = self.clock()
            emit("heartbeat", instance=action.instance_id, asg=action.asg, pending=pending)
        elif isinstance(action, d.Complete):
            pending = self.lifecycle.complete(action.asg, action.hook, action.instance_id)
            emit("completed", instance=action.instance_id, asg=action.asg, why=action.why, was_pending=pending)
            self.started.pop(action.instance_id, None)
            self.heartbeats.pop(action.instance_id, None)
        elif isinstance(action, d.Event):
            self.kube.record_event(action.regarding, action.reason, action.message, warning=action.warning)
        elif isinstance(action, d.DeleteMessage):
            if failed & set(action.instance_ids):
                emit("message_kept", message=action.message_id, reason="an action it depends on failed; redelivered")
                return
            received = messages.get(action.message_id)
            if received is not None:
                self.queue.delete(received.receipt_handle)
            emit("message_done", message=action.message_id, why=action.why)
        elif isinstance(action, d.KeepMessage):
            received = messages.get(action.message_id)
            emit("message_poison" if action.poison else "message_kept", message=action.message_id, why=action.why,
                 receive_count=received.receive_count if received else None)
        else:  # pragma: no cover - a new action without an executor is a bug
            raise TypeError(f"no executor for {action!r}")

    def _forget_finished(self) -> None:
        waiting = {i.id for i in self.instances.values() if i.lifecycle_state == d.WAITING}
        for memory in (self.started, self.heartbeats):
            for iid in [i for i in memory if i not in waiting]:
                memory.pop(iid, None)

    def _touch_liveness(self) -> None:
        if self.options.liveness_file:
            path = Path(self.options.liveness_file)
            path.touch()
            os.utime(path, None)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("kiln.termination")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
