"""The termination handler's Kubernetes side over the official ``kubernetes`` client.

Reads: nodes (paginated), the live pods of the few nodes that matter this cycle
(one field-selected list per node, never a cluster-wide pod list), the
PodDisruptionBudgets, and the Job behind a Job pod that lacks the
deadline-extension annotation (the annotation may sit on the Job). Writes: one
read-modify-write patch per node mark (guarded by ``resourceVersion``: a 409
re-reads and recomputes, as the rollout's cordon does), evictions through the
Eviction API (which honours PodDisruptionBudgets), and ``events.k8s.io/v1``
Events.

Leader election: a ``coordination.k8s.io/v1`` Lease, with client-go's rules —
a candidate takes the Lease only once the record it observed has not changed
for a whole lease duration *on its own clock* (no comparison of two machines'
clocks), every write is a compare-and-swap on the Lease's ``resourceVersion``,
and a leader that could not renew within the renew deadline stops acting. The
official client's ``kubernetes.leaderelection`` is not used: it locks on a
ConfigMap only, talks to a global default client, and runs the leader's work in
an unmanaged thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from infra.labels import REPORTER_TERMINATION_HANDLER

from .decisions import TAINT_TERMINATING, Reason, Ref, format_time
from .rules import (ANNOTATION_DEADLINE_EXTENSION, LIVE_PODS, Node, Pod, PodDisruptionBudget, node_from_json,
                    parse_time, pdb_from_json, pod_from_json, with_job_deadline_extensions)

MERGE_PATCH = "application/merge-patch+json"
CONFLICT_ATTEMPTS = 5
MULTIPLE_PDBS = "more than one PodDisruptionBudget"
REPORTING_CONTROLLER = REPORTER_TERMINATION_HANDLER
EVENT_NAMESPACE_FOR_NODES = "default"   # where the kubelet records node Events too
EVENT_REPEAT_SECONDS = 600.0            # the same Event on the same object is not recorded again within this
NOTE_LIMIT = 1024                       # events.k8s.io/v1 rejects a longer note
log = logging.getLogger(__name__)


class EvictionResult(Enum):
    EVICTED = "evicted"
    BLOCKED = "blocked"      # 429 (a PodDisruptionBudget says not now) or several PDBs select the pod
    GONE = "gone"            # 404


def _body(response: Any) -> dict[str, Any]:
    data = response.data
    return json.loads(data) if data else {}


def _micro_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def api_client_from_environment(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> client.ApiClient:
    """In the cluster: the pod's service account. Outside: ``--kubeconfig``/``--context`` or ``$KUBECONFIG``."""
    if kubeconfig or context:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException as incluster:
        try:
            return config.new_client_from_config()
        except config.ConfigException as kubeconfig_error:
            raise config.ConfigException(f"not inside a cluster ({incluster}) and no usable kubeconfig "
                                         f"({kubeconfig_error})") from None


class KubeTermination:
    """Nodes, pods, PDBs, node marks, evictions and Events for the handler."""

    def __init__(self, api_client: client.ApiClient, *, identity: str, request_timeout: float = 30.0,
                 page_size: int = 500, wall_clock: Callable[[], float] = time.time) -> None:
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.events = client.EventsV1Api(api_client)
        self.identity = identity
        self.request_timeout = request_timeout
        self.page_size = page_size
        self.wall_clock = wall_clock
        self._uids: dict[tuple[str, Optional[str], str], str] = {}
        self._recorded: dict[tuple, float] = {}
        self._last_event_name = 0

    # ---- reads ---------------------------------------------------------------------------------

    def _list(self, call: Callable[..., Any], **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: Optional[str] = None
        while True:
            kwargs = dict(params, limit=self.page_size, _preload_content=False, _request_timeout=self.request_timeout)
            if token:
                kwargs["_continue"] = token
            page = _body(call(**kwargs))
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _remember(self, kind: str, items: Iterable[Mapping[str, Any]]) -> None:
        for item in items:
            meta = item.get("metadata") or {}
            if meta.get("uid"):
                self._uids[(kind, meta.get("namespace"), meta.get("name"))] = meta["uid"]

    def list_nodes(self) -> list[Node]:
        items = self._list(self.core.list_node)
        self._remember("Node", items)
        return [node_from_json(item) for item in items]

    def list_pods_on(self, node_names: Sequence[str]) -> list[Pod]:
        """The live pods of these nodes (one field-selected list per node), Job deadline extensions applied."""
        pods: list[Pod] = []
        for name in sorted(set(node_names)):
            items = self._list(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={name},{LIVE_PODS}")
            self._remember("Pod", items)
            pods.extend(pod_from_json(item) for item in items)
        return self._with_job_extensions(pods)

    def _with_job_extensions(self, pods: list[Pod]) -> list[Pod]:
        wanted = sorted({(p.namespace, p.owner_name) for p in pods
                         if p.owner_kind == "Job" and p.owner_name and ANNOTATION_DEADLINE_EXTENSION not in p.annotations})
        jobs = []
        for namespace, name in wanted:
            try:
                jobs.append(_body(self.batch.read_namespaced_job(name, namespace, _preload_content=False,
                                                                  _request_timeout=self.request_timeout)))
            except ApiException as error:
                if error.status != 404:
                    raise
        return with_job_deadline_extensions(pods, jobs) if jobs else pods

    def list_pdbs(self) -> list[PodDisruptionBudget]:
        return [pdb_from_json(item) for item in self._list(self.policy.list_pod_disruption_budget_for_all_namespaces)]

    # ---- node marks ----------------------------------------------------------------------------

    def mark(self, node: str, reasons: Sequence[tuple[Reason, float]]) -> bool:
        """Cordon, taint ``kiln.dev/terminating`` (value: the earliest reason) and annotate every reason's
        time; marks already there stay as they are. False when the node is gone."""
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                current = _body(self.core.read_node(node, _preload_content=False, _request_timeout=self.request_timeout))
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            meta, spec = current.get("metadata") or {}, current.get("spec") or {}
            have = meta.get("annotations") or {}
            annotations = {r.annotation: format_time(at) for r, at in reasons if r.annotation not in have}
            taints = list(spec.get("taints") or [])
            if spec.get("unschedulable") and any(t.get("key") == TAINT_TERMINATING for t in taints) and not annotations:
                return True
            if not any(t.get("key") == TAINT_TERMINATING for t in taints):
                marked = [(parse_time(v), r) for r in Reason if (v := have.get(r.annotation))]
                first = min(marked + [(at, r) for r, at in reasons], key=lambda x: (x[0], x[1].value))[1]
                taints.append({"key": TAINT_TERMINATING, "value": first.value, "effect": "NoSchedule"})
            patch: dict[str, Any] = {"spec": {"unschedulable": True, "taints": taints},
                                     "metadata": {"resourceVersion": meta.get("resourceVersion")}}
            if annotations:
                patch["metadata"]["annotations"] = annotations
            try:
                self.core.patch_node(node, patch, _content_type=MERGE_PATCH, _preload_content=False,
                                     _request_timeout=self.request_timeout)
                return True
            except ApiException as error:
                if error.status == 404:
                    return False
                if error.status != 409:
                    raise
        raise RuntimeError(f"node {node}: {CONFLICT_ATTEMPTS} conflicting writes in a row")

    # ---- evictions and Events ------------------------------------------------------------------

    def evict(self, namespace: str, name: str) -> EvictionResult:
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False,
                                                     _request_timeout=self.request_timeout)
        except ApiException as error:
            if error.status == 429:
                return EvictionResult.BLOCKED
            if error.status == 404:
                return EvictionResult.GONE
            if error.status == 500 and MULTIPLE_PDBS in (error.body or ""):
                return EvictionResult.BLOCKED
            raise
        return EvictionResult.EVICTED

    def record_event(self, regarding: Ref, reason: str, message: str, *, warning: bool = False,
                     action: str = "Terminate") -> bool:
        """One ``events.k8s.io/v1`` Event; the same one on the same object only once per EVENT_REPEAT_SECONDS.
        Returns whether it was recorded."""
        now = self.wall_clock()
        key = (regarding, reason, message)
        if now - self._recorded.get(key, -math.inf) < EVENT_REPEAT_SECONDS:
            return False
        namespace = regarding.namespace or EVENT_NAMESPACE_FOR_NODES
        ref: dict[str, Any] = {"apiVersion": "v1", "kind": regarding.kind, "name": regarding.name}
        if regarding.namespace:
            ref["namespace"] = regarding.namespace
        uid = self._uids.get((regarding.kind, regarding.namespace, regarding.name))
        if uid:
            ref["uid"] = uid
        body = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            # Named as client-go's recorder names them: <object>.<hex nanoseconds> (made unique per process).
            "metadata": {"name": f"{regarding.name}.{max(int(now * 1e9), self._last_event_name + 1):x}",
                         "namespace": namespace},
            "eventTime": _micro_time(now), "type": "Warning" if warning else "Normal",
            "reason": reason, "note": message[:NOTE_LIMIT], "action": action, "regarding": ref,
            "reportingController": REPORTING_CONTROLLER, "reportingInstance": self.identity[:128],
        }
        self._last_event_name = int(body["metadata"]["name"].rsplit(".", 1)[1], 16)
        self.events.create_namespaced_event(namespace, body, _preload_content=False, _request_timeout=self.request_timeout)
        self._recorded[key] = now
        if len(self._recorded) > 10_000:   # forget the oldest half; a repeat after that is harmless
            for k in sorted(self._recorded, key=self._recorded.get)[:5_000]:
                del self._recorded[k]
        return True


# --------------------------------------------------------------------------- leader election


class LeaseElector:
    """Leader election on a ``coordination.k8s.io/v1`` Lease (client-go's algorithm)."""

    def __init__(self, api_client: client.ApiClient, *, namespace: str, name: str, identity: str,
                 lease_seconds: float = 30.0, renew_deadline_seconds: float = 20.0,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 request_timeout: float = 10.0) -> None:
        if renew_deadline_seconds >= lease_seconds:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.coordination = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_deadline = lease_seconds, renew_deadline_seconds
        self.clock, self.wall_clock, self.request_timeout = clock, wall_clock, request_timeout
        self._observed: Optional[tuple] = None
        self._observed_at = -math.inf
        self._renewed_at = -math.inf

    def is_leader(self) -> bool:
        """Leading, and sure of it: renewed within the renew deadline (so no other candidate can have taken over)."""
        return self.clock() < self._renewed_at + self.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        try:
            lease = _body(self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.request_timeout))
        except ApiException as error:
            if error.status != 404:
                log.warning("cannot read lease %s/%s: %s %s", self.namespace, self.name, error.status, error.reason)
                return False
            lease = None
        now = self.clock()
        if lease is None:
            return self._write(None, acquire=True, transitions=0, now=now)
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        return self._write(lease, acquire=holder != self.identity, transitions=transitions, now=now)

    def _write(self, lease: Optional[Mapping[str, Any]], *, acquire: bool, transitions: int, now: float) -> bool:
        stamp = _micro_time(self.wall_clock())
        spec: dict[str, Any] = {"holderIdentity": self.identity, "leaseDurationSeconds": int(math.ceil(self.lease_seconds)),
                                "renewTime": stamp, "leaseTransitions": transitions}
        if acquire:
            spec["acquireTime"] = stamp
        try:
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
                self.coordination.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                          _request_timeout=self.request_timeout)
            else:
                version = (lease.get("metadata") or {}).get("resourceVersion")
                self.coordination.patch_namespaced_lease(
                    self.name, self.namespace, {"metadata": {"resourceVersion": version}, "spec": spec},
                    _content_type=MERGE_PATCH, _preload_content=False, _request_timeout=self.request_timeout)
        except ApiException as error:
            if error.status in (404, 409):
                return False          # someone else wrote first: they lead
            log.warning("cannot write lease %s/%s: %s %s", self.namespace, self.name, error.status, error.reason)
            return False
        self._observed = (self.identity, stamp, transitions)
        self._observed_at = now
        self._renewed_at = now
        return True

    def release(self) -> None:
        """Step down (on SIGTERM): the standby takes over at once instead of after a lease duration."""
        if not self.is_leader():
            return
        self._renewed_at = -math.inf
        try:
            lease = _body(self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.request_timeout))
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            self.coordination.patch_namespaced_lease(
                self.name, self.namespace,
                {"metadata": {"resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")},
                 "spec": {"holderIdentity": None, "leaseDurationSeconds": 1}},
                _content_type=MERGE_PATCH, _preload_content=False, _request_timeout=self.request_timeout)
        except ApiException as error:
            log.info("lease not released (%s); it lapses by itself", error.status)
