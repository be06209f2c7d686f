"""The Kubernetes-side ports (ClusterPort, RolloutStore, AutoscalerPort) over the official ``kubernetes`` client.

Reads are paginated lists (``limit`` + ``_continue``) across all namespaces:
four calls' worth of pages per reconcile (nodes, live pods with their Jobs, PDBs)
at any fleet size, never a call per node or pod. Between reconciles the
adapter watches pods and nodes (two watch streams, from the last lists'
resourceVersions) and wakes the rollout on the first change it reads. Responses are read as plain JSON
(``_preload_content=False``) rather than turned into generated model objects:
at tens of thousands of pods the model deserialisation costs more than the
HTTP.

Writes that edit a list (a node's taints) or take the lock are
read-modify-write patches carrying ``metadata.resourceVersion``: the API server
answers 409 if someone else changed the object in between, and the change is
recomputed from the fresh object (optimistic concurrency, not a retry of a
failed request).

The rollout's lock is a ``coordination.k8s.io/v1`` Lease; its intent is JSON
in an annotation of the same Lease, so the lock and the intent live, move and
are permitted together (one object, one RBAC rule) and an intent write is a
compare-and-swap on the same resourceVersion as the lock.

Events are ``events.k8s.io/v1`` Events (``regarding`` the node or pod, with a
``series`` for repeats), the API ``kubectl describe`` reads through core/v1: an
Event about a node carries the node's name as its uid, as kubelet's do, which
is how ``kubectl describe node`` finds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import socket
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from infra.labels import REPORTER_ROLLOUT

from .model import ANNOTATION_DEADLINE_EXTENSION, GroupIntent, Node, Pod, PodDisruptionBudget, RolloutIntent, Taint
from .ports import ClusterEvent, EvictionResult, Throttled

MERGE_PATCH = "application/merge-patch+json"
ANNOTATION_INTENT = "kiln.dev/rollout-intent"
ANNOTATION_MIRROR = "kubernetes.io/config.mirror"
DEFAULT_LEASE_NAMESPACE = "kube-system"
DEFAULT_LEASE_NAME = "kiln-rollout"
DEFAULT_AUTOSCALER_NAMESPACE = "kube-system"
DEFAULT_AUTOSCALER_NAME = "cluster-autoscaler"
CONFLICT_ATTEMPTS = 5
# The API server's 500 for a pod selected by several PDBs (it cannot pick one to honour).
MULTIPLE_PDBS = "more than one PodDisruptionBudget"
# Pods that are not finished: the field selector ``list_pods`` sends (status.phase is a pod field selector).
LIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
REPORTING_CONTROLLER = REPORTER_ROLLOUT
# Container states that mean a pod cannot run (kubectl shows them as the pod's status).
FAILED_WAITING = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                            "CreateContainerError", "InvalidImageName", "RunContainerError"})
log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class ClusterError(RuntimeError):
    """The cluster refused a change after repeated conflicting writes."""


# 429 is API priority and fairness saying "slow down"; 502/503/504 are an API server (or
# the load balancer in front of it) briefly unable to answer: a restart, an upgrade, an etcd
# leader election. The official client retries none of them, and over a two-hour rollout
# one of them must not end the run: they are the port's transient ``Throttled``.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


def _port_call(method: F) -> F:
    """A transient API answer (anywhere but an eviction's 429) becomes the port's ``Throttled``.

    So does a lost connection (urllib3 gave up after its own retries: an API server
    restart, a control-plane upgrade, a network blip) once the API server has answered
    this adapter at least once; before that it is most likely a wrong endpoint or
    context, and that must fail at once rather than be retried.
    """
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except ApiException as error:
            self._answered = True
            if error.status in TRANSIENT_STATUSES:
                raise Throttled(f"{method.__name__}: {error.status} {error.reason}") from error
            raise
        except urllib3.exceptions.HTTPError as error:
            if getattr(self, "_answered", False):
                raise Throttled(f"{method.__name__}: API server unreachable: {error}") from error
            raise
        self._answered = True
        return result
    return wrapper  # type: ignore[return-value]


# ---- conversions (pure) -------------------------------------------------------------------

def quantities(raw: Optional[Mapping[str, Any]]) -> dict[str, float]:
    """``{"cpu": "3920m", "nvidia.com/gpu": "4"}`` -> ``{"cpu": 3.92, "nvidia.com/gpu": 4.0}``."""
    return {name: float(parse_quantity(value)) for name, value in (raw or {}).items()}


def pod_requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """What the scheduler reserves for a pod: the sum over its containers, or the largest
    init container's request when that is bigger."""
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, value in quantities((container.get("resources") or {}).get("requests")).items():
            total[name] = total.get(name, 0.0) + value
    for container in spec.get("initContainers") or []:
        for name, value in quantities((container.get("resources") or {}).get("requests")).items():
            total[name] = max(total.get(name, 0.0), value)
    return total


def parse_time(value: Optional[str]) -> float:
    """RFC 3339 (``2026-01-02T03:04:05Z``, with or without fraction) -> epoch seconds; 0.0 if absent."""
    if not value:
        return 0.0
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def format_micro_time(epoch: float) -> str:
    """Epoch seconds -> the MicroTime a Lease stores (``2026-01-02T03:04:05.123456Z``)."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instance_id_from_provider_id(provider_id: Optional[str]) -> Optional[str]:
    """``aws:///us-east-2a/i-0abc`` -> ``i-0abc``; None for anything else."""
    if not provider_id or not provider_id.startswith("aws://"):
        return None
    last = provider_id.rstrip("/").rsplit("/", 1)[-1]
    return last if last.startswith("i-") else None


def node_from_json(raw: Mapping[str, Any]) -> Node:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    conditions = (raw.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return Node(
        name=meta["name"],
        instance_id=instance_id_from_provider_id(spec.get("providerID")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        taints=tuple(
            Taint(key=t["key"], value=t.get("value") or "", effect=t.get("effect") or "NoSchedule")
            for t in spec.get("taints") or []
        ),
        unschedulable=bool(spec.get("unschedulable", False)),
        ready=ready,
        created_at=parse_time(meta.get("creationTimestamp")),
        allocatable=quantities((raw.get("status") or {}).get("allocatable")),
    )


def node_fingerprint(node: Node) -> tuple:
    """What the rollout reads of a node: a change here wakes it (a status heartbeat does not)."""
    return (node.ready, node.unschedulable, tuple(sorted((t.key, t.value, t.effect) for t in node.taints)),
            tuple(sorted(node.labels.items())))


def container_failure(status: Mapping[str, Any]) -> Optional[str]:
    """Why a pod's containers cannot run, as kubectl shows it (``Init:CrashLoopBackOff``, ``Init:Error``,
    ``ImagePullBackOff``); None while nothing failed."""
    for prefix, key in (("Init:", "initContainerStatuses"), ("", "containerStatuses")):
        for container in status.get(key) or []:
            state = container.get("state") or {}
            waiting = (state.get("waiting") or {}).get("reason")
            if waiting in FAILED_WAITING:
                return prefix + waiting
            terminated = state.get("terminated") or {}
            if prefix and terminated and int(terminated.get("exitCode") or 0) != 0:
                return prefix + (terminated.get("reason") or "Error")
    return None


def pod_from_json(raw: Mapping[str, Any]) -> Pod:
    meta = raw.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    annotations = dict(meta.get("annotations") or {})
    owner_kind = owner.get("kind") if owner else None
    owner_name = owner.get("name") if owner else None
    if owner_kind is None and ANNOTATION_MIRROR in annotations:
        owner_kind = "Node"   # a static pod's mirror: the kubelet owns it, eviction cannot move it
    spec = raw.get("spec") or {}
    return Pod(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        node_name=spec.get("nodeName"),
        phase=(raw.get("status") or {}).get("phase") or "Pending",
        owner_kind=owner_kind,
        owner_name=owner_name,
        labels=dict(meta.get("labels") or {}),
        annotations=annotations,
        created_at=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        requests=pod_requests(spec),
        node_selector=dict(spec.get("nodeSelector") or {}),
        uid=meta.get("uid"),
        failure=container_failure(raw.get("status") or {}),
        ready=pod_ready(raw.get("status") or {}),
    )


def pod_ready(status: Mapping[str, Any]) -> Optional[bool]:
    """The pod's Ready condition (True/False), None when the status reports no such condition."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return None


def with_job_deadline_extensions(pods: Sequence[Pod], jobs: Sequence[Mapping[str, Any]]) -> list[Pod]:
    """Pods of a Job that carry no deadline extension of their own get their Job's.

    The extension may be set on the Job (so every pod it creates inherits it) or
    on the pod; the pod's own annotation wins.
    """
    extensions: dict[tuple[str, str], str] = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        value = (meta.get("annotations") or {}).get(ANNOTATION_DEADLINE_EXTENSION)
        if value is not None:
            extensions[meta.get("namespace", "default"), meta["name"]] = value
    out = []
    for pod in pods:
        value = extensions.get((pod.namespace, pod.owner_name or "")) if pod.owner_kind == "Job" else None
        if value is not None and ANNOTATION_DEADLINE_EXTENSION not in pod.annotations:
            pod = dataclasses.replace(pod, annotations={**pod.annotations, ANNOTATION_DEADLINE_EXTENSION: value})
        out.append(pod)
    return out


def pdb_from_json(raw: Mapping[str, Any]) -> PodDisruptionBudget:
    meta = raw.get("metadata") or {}
    selector = (raw.get("spec") or {}).get("selector") or {}
    return PodDisruptionBudget(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        match_labels=dict(selector.get("matchLabels") or {}),
        disruptions_allowed=int((raw.get("status") or {}).get("disruptionsAllowed") or 0),
    )


def intent_to_json(intent: RolloutIntent) -> str:
    return json.dumps(dataclasses.asdict(intent), sort_keys=True, separators=(",", ":"))


def intent_from_json(text: str) -> RolloutIntent:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(RolloutIntent)}
    group_known = {f.name for f in dataclasses.fields(GroupIntent)}
    groups = tuple(GroupIntent(**{k: v for k, v in g.items() if k in group_known}) for g in data.get("groups", []))
    fields = {k: v for k, v in data.items() if k in known and k != "groups"}
    return RolloutIntent(**fields, groups=groups)


def _status_message(error: ApiException) -> str:
    """The ``message`` of the Status an API error carries ("" when the body is not one)."""
    try:
        return str((json.loads(error.body or "{}") or {}).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""


def _body(response: Any) -> dict[str, Any]:
    data = response.data
    return json.loads(data) if data else {}


# ---- the adapter --------------------------------------------------------------------------

class KubeCluster:
    """:class:`~automation.rollout.ports.ClusterPort`, :class:`~automation.rollout.ports.RolloutStore` and
    :class:`~automation.rollout.ports.AutoscalerPort` over ``kubernetes.client``, on one API connection."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        lease_namespace: str = DEFAULT_LEASE_NAMESPACE,
        lease_name: str = DEFAULT_LEASE_NAME,
        autoscaler_namespace: str = DEFAULT_AUTOSCALER_NAMESPACE,
        autoscaler_name: str = DEFAULT_AUTOSCALER_NAME,
        page_size: int = 500,
        wall_clock: Callable[[], float] = time.time,
        request_timeout: float = 60.0,
    ) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.events = client.EventsV1Api(api_client)
        self.lease_namespace = lease_namespace
        self.lease_name = lease_name
        self.autoscaler_namespace = autoscaler_namespace
        self.autoscaler_name = autoscaler_name
        self.page_size = page_size
        self.wall_clock = wall_clock
        self.request_timeout = request_timeout
        # What the last pod list saw: the watch starts there and ignores replays of it.
        self._pods_resource_version: Optional[str] = None
        self._pods_seen: dict[str, Optional[str]] = {}
        self._nodes_resource_version: Optional[str] = None
        self._nodes_seen: dict[str, tuple] = {}
        self._misconfigured_pdbs_warned: set[tuple[str, str]] = set()
        self.reporting_instance = f"kiln-rollout@{socket.gethostname()}"[:128]

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Optional[str] = None, context: Optional[str] = None, **kwargs: Any) -> "KubeCluster":
        """Client from a kubeconfig (``--kubeconfig``/``--context``, else ``$KUBECONFIG``), else in-cluster."""
        try:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except config.ConfigException as kubeconfig_error:
            if kubeconfig or context:
                raise
            try:
                config.load_incluster_config()
            except config.ConfigException as incluster_error:
                raise config.ConfigException(
                    f"no usable kubeconfig ({kubeconfig_error}) and not inside a cluster ({incluster_error})"
                ) from None
            api_client = client.ApiClient()
        return cls(api_client, **kwargs)

    # ---- reads -----------------------------------------------------------------------------

    def _list_all(self, list_call: Callable[..., Any], **params: Any) -> tuple[list[dict[str, Any]], Optional[str]]:
        """Every item of a paginated list and the list's resourceVersion (its first page's).

        If the continue token expires midway (410), the list starts over once, from
        scratch, so the result is still one consistent snapshot.
        """
        for attempt in range(2):
            items: list[dict[str, Any]] = []
            version: Optional[str] = None
            token: Optional[str] = None
            try:
                while True:
                    kwargs = dict(params, limit=self.page_size, _preload_content=False,
                                  _request_timeout=self.request_timeout)
                    if token:
                        kwargs["_continue"] = token
                    page = _body(list_call(**kwargs))
                    meta = page.get("metadata") or {}
                    if version is None:
                        version = meta.get("resourceVersion")
                    items.extend(page.get("items") or [])
                    token = meta.get("continue")
                    if not token:
                        return items, version
            except ApiException as error:
                if error.status != 410 or not token or attempt:
                    raise
        raise AssertionError("unreachable")

    @_port_call
    def list_nodes(self, label_selector: str = "") -> list[Node]:
        params = {"label_selector": label_selector} if label_selector else {}
        items, version = self._list_all(self.core.list_node, **params)
        nodes = [node_from_json(item) for item in items]
        if not label_selector:
            self._nodes_resource_version = version
            self._nodes_seen = {n.name: node_fingerprint(n) for n in nodes}
        return nodes

    @_port_call
    def list_pods(self) -> list[Pod]:
        # Finished pods (a Job's Succeeded/Failed pods kept until their TTL) can outnumber live
        # ones many times over on an ML cluster, and nothing in the rollout reads them: the API
        # server filters them out rather than sending and parsing them on every reconcile.
        items, version = self._list_all(self.core.list_pod_for_all_namespaces, field_selector=LIVE_PODS)
        pods = [pod_from_json(item) for item in items]
        self._pods_resource_version = version
        self._pods_seen = {pod.key: (item.get("metadata") or {}).get("resourceVersion") for pod, item in zip(pods, items)}
        if any(p.owner_kind == "Job" and ANNOTATION_DEADLINE_EXTENSION not in p.annotations for p in pods):
            # One cluster-wide list of Jobs, not a read per pod: a Job's annotation extends its pods' deadline.
            jobs, _ = self._list_all(self.batch.list_job_for_all_namespaces)
            pods = with_job_deadline_extensions(pods, jobs)
        return pods

    @_port_call
    def list_pdbs(self) -> list[PodDisruptionBudget]:
        items, _ = self._list_all(self.policy.list_pod_disruption_budget_for_all_namespaces)
        return [pdb_from_json(item) for item in items]

    @_port_call
    def wait_for_change(self, timeout_seconds: float) -> None:
        """Watch pods and nodes from the last lists' resourceVersions; return on the first real change.

        Two watch streams, each in a thread; the first change (or the timeout) ends the
        wait. The server ends a watch after ``timeout_seconds``; the client-side read
        timeout is a second guard for servers that do not. Events that merely replay
        what the last list already showed (same pod at the same resourceVersion, a node
        whose Ready, taints, labels and cordon are unchanged — e.g. a status heartbeat)
        are not changes. 410 Gone means the version is too old: return, the caller
        relists anyway.
        """
        if timeout_seconds <= 0:
            return
        if self._pods_resource_version is None:
            self.list_pods()
        if self._nodes_resource_version is None:
            self.list_nodes()
        changed = threading.Event()
        stop = threading.Event()
        errors: list[BaseException] = []
        streams: list[Any] = []
        self._woke = False
        watches = ((self.core.list_pod_for_all_namespaces, "_pods_resource_version", self._is_change),
                   (self.core.list_node, "_nodes_resource_version", self._is_node_change))
        threads = [threading.Thread(target=self._watch, args=(call, attr, is_change, timeout_seconds, changed, stop,
                                                              errors, streams), daemon=True, name=f"kiln-watch-{attr}")
                   for call, attr, is_change in watches]
        for thread in threads:
            thread.start()
        changed.wait(timeout_seconds)
        stop.set()
        for stream in list(streams):
            try:
                stream.shutdown()    # unblocks a read still waiting on the other watch
            except (RuntimeError, ValueError, OSError):
                pass                 # that stream has ended already
        for thread in threads:
            thread.join(2.0)
        if errors and not self._woke:
            raise errors[0]

    def _watch(self, list_call: Callable[..., Any], version_attr: str, is_change: Callable[[Mapping[str, Any]], bool],
               timeout_seconds: float, changed: threading.Event, stop: threading.Event,
               errors: list[BaseException], streams: list[Any]) -> None:
        """One watch stream, read line by line (the client's own line splitter) from the raw
        response, so :meth:`wait_for_change` can shut it down the moment the other one fires."""
        kwargs: dict[str, Any] = {
            "watch": True,
            "timeout_seconds": max(1, int(math.ceil(timeout_seconds))),
            "allow_watch_bookmarks": True,
            "_preload_content": False,
            "_request_timeout": (10, timeout_seconds + 1),
        }
        version = getattr(self, version_attr)
        if version and version != "...":
            kwargs["resource_version"] = version
        response = None
        try:
            response = list_call(**kwargs)
            streams.append(response)
            if stop.is_set():
                return
            for line in watch.watch.iter_resp_lines(response):
                if stop.is_set():
                    return
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if int(status.get("code") or 0) == 410:
                        setattr(self, version_attr, None)   # too old to watch from: the next wait lists afresh
                        self._woke = True
                    else:
                        errors.append(ApiException(status=int(status.get("code") or 500),
                                                   reason=str(status.get("message") or status.get("reason"))))
                    changed.set()
                    return
                if event.get("type") != "BOOKMARK" and is_change(event):
                    self._woke = True
                    changed.set()
                    return
        except ApiException as error:
            if error.status == 410:
                setattr(self, version_attr, None)
                self._woke = True
            else:
                errors.append(error)
            changed.set()
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
            return           # timed out, or shut down by the other stream's change
        finally:
            if response is not None:
                response.close()     # an interrupted watch connection is not reused

    def _is_node_change(self, event: Mapping[str, Any]) -> bool:
        raw = event.get("object") or {}
        name = (raw.get("metadata") or {}).get("name")
        if event.get("type") == "DELETED":
            return True
        try:
            fingerprint = node_fingerprint(node_from_json(raw))
        except (KeyError, TypeError, ValueError):
            return True
        return self._nodes_seen.get(name) != fingerprint

    def _is_change(self, event: Mapping[str, Any]) -> bool:
        meta = (event.get("object") or {}).get("metadata") or {}
        key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        if event.get("type") == "ADDED" and key in self._pods_seen:
            return self._pods_seen[key] != meta.get("resourceVersion")
        return True

    # ---- node marks ------------------------------------------------------------------------

    def _read(self, read_call: Callable[..., Any], *args: Any) -> Optional[dict[str, Any]]:
        """One object as plain JSON; None when it does not exist (404)."""
        try:
            return _body(read_call(*args, _preload_content=False, _request_timeout=self.request_timeout))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _read_node(self, node: str) -> Optional[dict[str, Any]]:
        return self._read(self.core.read_node, node)

    def _patch_node_cas(self, node: str, make_patch: Callable[[dict[str, Any]], Optional[dict[str, Any]]]) -> None:
        """Read the node, build a patch from it, write it guarded by its resourceVersion; redo on 409."""
        for _ in range(CONFLICT_ATTEMPTS):
            current = self._read_node(node)
            if current is None:
                return   # the node is gone: nothing to mark
            patch = make_patch(current)
            if patch is None:
                return   # already as wanted
            version = (current.get("metadata") or {}).get("resourceVersion")
            if version:
                patch.setdefault("metadata", {})["resourceVersion"] = version
            try:
                self.core.patch_node(node, patch, _content_type=MERGE_PATCH, _preload_content=False,
                                     _request_timeout=self.request_timeout)
                return
            except ApiException as error:
                if error.status == 404:
                    return
                if error.status != 409:
                    raise
        raise ClusterError(f"node {node}: {CONFLICT_ATTEMPTS} conflicting writes in a row")

    @_port_call
    def cordon(self, node: str, taint: Taint, annotations: Mapping[str, str]) -> None:
        wanted = {"key": taint.key, "effect": taint.effect}
        if taint.value:
            wanted["value"] = taint.value

        def patch(current: dict[str, Any]) -> Optional[dict[str, Any]]:
            spec = current.get("spec") or {}
            taints = list(spec.get("taints") or [])
            others = [t for t in taints if t.get("key") != taint.key]
            have = (current.get("metadata") or {}).get("annotations") or {}
            if (spec.get("unschedulable") and wanted in taints and len(others) == len(taints) - 1
                    and all(have.get(k) == v for k, v in annotations.items())):
                return None
            return {
                "metadata": {"annotations": dict(annotations)},
                "spec": {"unschedulable": True, "taints": others + [wanted]},
            }

        self._patch_node_cas(node, patch)

    @_port_call
    def uncordon(self, node: str, taint_key: str, annotation_keys: Sequence[str]) -> None:
        def patch(current: dict[str, Any]) -> Optional[dict[str, Any]]:
            spec = current.get("spec") or {}
            taints = list(spec.get("taints") or [])
            kept = [t for t in taints if t.get("key") != taint_key]
            have = (current.get("metadata") or {}).get("annotations") or {}
            if not spec.get("unschedulable") and len(kept) == len(taints) and not any(k in have for k in annotation_keys):
                return None
            return {
                "metadata": {"annotations": {k: None for k in annotation_keys}},
                # null removes the field: schedulable again, no taints list left empty.
                "spec": {"unschedulable": None, "taints": kept or None},
            }

        self._patch_node_cas(node, patch)

    @_port_call
    def annotate_node(self, node: str, annotations: Mapping[str, Optional[str]]) -> None:
        # Annotations merge key by key, so a plain merge patch cannot lose anyone else's write.
        if not annotations:
            return
        try:
            self.core.patch_node(node, {"metadata": {"annotations": dict(annotations)}}, _content_type=MERGE_PATCH,
                                 _preload_content=False, _request_timeout=self.request_timeout)
        except ApiException as error:
            if error.status != 404:
                raise

    @_port_call
    def evict(self, namespace: str, name: str) -> EvictionResult:
        body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                                 metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False,
                                                     _request_timeout=self.request_timeout)
        except ApiException as error:
            if error.status == 429:
                return EvictionResult.BLOCKED
            if error.status == 404:
                return EvictionResult.GONE
            message = _status_message(error)
            if error.status == 500 and MULTIPLE_PDBS in message:
                # A misconfiguration only a person can fix, and only this pod's node waits
                # for it: blocked (retried each cycle), not a failure that ends the rollout.
                if (namespace, name) not in self._misconfigured_pdbs_warned:   # once per pod, not per cycle
                    self._misconfigured_pdbs_warned.add((namespace, name))
                    log.warning("cannot evict %s/%s until its PodDisruptionBudgets are fixed: %s", namespace, name, message)
                return EvictionResult.BLOCKED
            raise
        return EvictionResult.EVICTED

    # ---- Events ----------------------------------------------------------------------------

    @_port_call
    def record_event(self, event: ClusterEvent) -> None:
        """Create the events.k8s.io/v1 Event, or update its series when it exists (a repeat, or a
        rerun after a crash that made it before: 409 on create). An Event that expired (404 on
        the update; Events live about an hour) is created again."""
        regarding = {"apiVersion": "v1", "kind": event.kind, "name": event.object_name}
        if event.object_namespace:
            regarding["namespace"] = event.object_namespace
        if event.object_uid:
            regarding["uid"] = event.object_uid
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": event.name, "namespace": event.namespace},
            "eventTime": format_micro_time(event.first_seen),
            "reportingController": REPORTING_CONTROLLER, "reportingInstance": self.reporting_instance,
            "action": event.action, "reason": event.reason, "note": event.note[:1024], "type": event.type,
            "regarding": regarding,
        }
        series = {"count": max(2, event.count), "lastObservedTime": format_micro_time(event.last_seen)}
        if event.count > 1:
            body["series"] = series
        else:
            try:
                self.events.create_namespaced_event(event.namespace, body, _preload_content=False,
                                                    _request_timeout=self.request_timeout)
                return
            except ApiException as error:
                if error.status != 409:
                    raise
        try:
            self.events.patch_namespaced_event(event.name, event.namespace, {"series": series},
                                               _content_type=MERGE_PATCH, _preload_content=False,
                                               _request_timeout=self.request_timeout)
        except ApiException as error:
            if error.status != 404:
                raise
            body["series"] = series
            self.events.create_namespaced_event(event.namespace, body, _preload_content=False,
                                                _request_timeout=self.request_timeout)

    # ---- cluster-autoscaler ----------------------------------------------------------------

    @_port_call
    def get_autoscaler_replicas(self) -> Optional[int]:
        scale = self._read(self.apps.read_namespaced_deployment_scale, self.autoscaler_name, self.autoscaler_namespace)
        if scale is None:
            return None
        return int((scale.get("spec") or {}).get("replicas") or 0)

    @_port_call
    def scale_autoscaler(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            self.autoscaler_name, self.autoscaler_namespace, {"spec": {"replicas": int(replicas)}},
            _content_type=MERGE_PATCH, _preload_content=False, _request_timeout=self.request_timeout)

    # ---- the Lease: lock and intent --------------------------------------------------------

    def _read_lease(self) -> Optional[dict[str, Any]]:
        return self._read(self.coordination.read_namespaced_lease, self.lease_name, self.lease_namespace)

    def _create_lease(self, spec: Mapping[str, Any], annotations: Optional[Mapping[str, str]] = None) -> bool:
        """Create the Lease; False when someone else created it first (409)."""
        meta: dict[str, Any] = {"name": self.lease_name, "namespace": self.lease_namespace}
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": dict(spec)}
        try:
            self.coordination.create_namespaced_lease(self.lease_namespace, body, _preload_content=False,
                                                      _request_timeout=self.request_timeout)
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise

    def _patch_lease(self, current: Mapping[str, Any], patch: dict[str, Any]) -> bool:
        """Patch guarded by the Lease's resourceVersion; False when it changed meanwhile (409)."""
        version = (current.get("metadata") or {}).get("resourceVersion")
        if version:
            patch.setdefault("metadata", {})["resourceVersion"] = version
        try:
            self.coordination.patch_namespaced_lease(
                self.lease_name, self.lease_namespace, patch, _content_type=MERGE_PATCH,
                _preload_content=False, _request_timeout=self.request_timeout)
            return True
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise

    @_port_call
    def acquire_lock(self, holder: str, ttl_seconds: float) -> bool:
        now = self.wall_clock()
        duration = max(1, int(math.ceil(ttl_seconds)))
        lease = self._read_lease()
        if lease is None:
            return self._create_lease({
                "holderIdentity": holder, "leaseDurationSeconds": duration,
                "acquireTime": format_micro_time(now), "renewTime": format_micro_time(now),
                "leaseTransitions": 0,
            })
        spec = lease.get("spec") or {}
        current = spec.get("holderIdentity")
        renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
        live = renewed + float(spec.get("leaseDurationSeconds") or 0) > now
        if current and current != holder and live:
            return False
        patch: dict[str, Any] = {"spec": {
            "holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": format_micro_time(now),
        }}
        if current != holder:
            patch["spec"]["acquireTime"] = format_micro_time(now)
            patch["spec"]["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        # A 409 here means another process wrote the Lease between our read and write: it won.
        return self._patch_lease(lease, patch)

    @_port_call
    def release_lock(self, holder: str) -> None:
        for _ in range(CONFLICT_ATTEMPTS):
            lease = self._read_lease()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != holder:
                return
            if self._patch_lease(lease, {"spec": {"holderIdentity": None, "renewTime": None}}):
                return
        # Still ours after repeated conflicts: the lease lapses by itself after its duration.

    @_port_call
    def read_intent(self) -> Optional[RolloutIntent]:
        lease = self._read_lease()
        text = ((lease or {}).get("metadata") or {}).get("annotations", {}).get(ANNOTATION_INTENT)
        return intent_from_json(text) if text else None

    def _write_intent_annotation(self, value: Optional[str]) -> None:
        for _ in range(CONFLICT_ATTEMPTS):
            lease = self._read_lease()
            if lease is None:
                if value is None or self._create_lease({}, {ANNOTATION_INTENT: value}):
                    return
                continue
            if self._patch_lease(lease, {"metadata": {"annotations": {ANNOTATION_INTENT: value}}}):
                return
        raise ClusterError(f"lease {self.lease_namespace}/{self.lease_name}: {CONFLICT_ATTEMPTS} conflicting writes in a row")

    @_port_call
    def write_intent(self, intent: RolloutIntent) -> None:
        self._write_intent_annotation(intent_to_json(intent))

    @_port_call
    def clear_intent(self) -> None:
        self._write_intent_annotation(None)
