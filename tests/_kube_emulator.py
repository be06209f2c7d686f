"""kmock's KubernetesEmulator served over HTTP from a background event loop.

The official (synchronous) kubernetes client talks to it over a real socket.
kmock 0.8 stores objects, serves fetch/create/merge- and JSON-patch/delete,
list and watch streams, and renders Kubernetes ``Status`` errors. A few API
server behaviours the rollout relies on are not in kmock 0.8; this harness adds
them as kmock reactions or a subclass, the way kmock's docs suggest:

* ``resourceVersion`` on every write and 409 Conflict when a write carries a
  stale one (optimistic concurrency);
* ``labelSelector``, ``fieldSelector`` (``=``, ``==``, ``!=`` on a dotted field path such
  as ``status.phase``), ``limit`` and ``continue`` on lists;
* ``watch=True`` as the official client spells it (kmock recognises only
  ``watch=true``), routed to kmock's own watch stream;
* the ``pods/eviction`` subresource decided like the API server's eviction REST
  handler: 404 for a missing pod; a pod already terminating, finished or Pending is
  deleted without a budget check; 500 when more than one PodDisruptionBudget
  selects the pod; 429 (cause ``DisruptionBudget``) when the budget's
  ``status.disruptionsAllowed`` is 0; else the grant *decrements*
  ``disruptionsAllowed``, records the pod in ``status.disruptedPods`` and deletes
  the pod;
* the disruption controller, for a PodDisruptionBudget with ``spec.minAvailable``
  or ``spec.maxUnavailable`` (integer or percentage): ``status`` (``currentHealthy``,
  ``desiredHealthy``, ``expectedPods``, ``disruptionsAllowed``) recomputed every
  0.1 s from the pods as they go and come — healthy is Running, Ready and not
  terminating nor just disrupted; the expected count is the matching pods for an
  integer ``minAvailable``, else the replicas of the Deployments whose pod
  template the selector matches (none found: 0 disruptions allowed, as the real
  controller fails closed). A budget with neither field keeps the status the
  test wrote (the test plays the controller);
* graceful deletion of pods (DELETE and eviction): a pod bound to a node, not
  finished, with ``spec.terminationGracePeriodSeconds`` > 0 gets
  ``metadata.deletionTimestamp`` (now + grace) and ``deletionGracePeriodSeconds``
  and stays — terminating, on its node — until its grace period is over (the
  kubelet's part), then is removed. Unlike the API server's default of 30 s, a
  pod without the field is removed at once (``gracePeriodSeconds=0``), so tests
  that do not care about termination stay fast;
* the ``deployments/scale`` subresource rendered as an ``autoscaling/v1`` Scale;
* ``events.k8s.io/v1`` Events stored like any object (create answers 409 for a name
  that exists, a merge patch updates ``series``), which is all the rollout writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import re
import threading
import time
from typing import Any, Callable, Mapping, Optional

import aiohttp.web
import kmock
from kubernetes import client

NODES = kmock.resource("v1/nodes")
PODS = kmock.resource("v1/pods")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
LEASES = kmock.resource("coordination.k8s.io/v1/leases")
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
JOBS = kmock.resource("batch/v1/jobs")
EVENTS = kmock.resource("events.k8s.io/v1/events")


def _status(code: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details={})


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector syntax: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            inside = key in labels and labels[key] in values
            if inside != (op == "in"):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """Kubernetes field-selector syntax: terms ``path=v``, ``path==v``, ``path!=v``, all of them must hold.

    A field the object does not have reads as "" (a pod with no phase yet matches
    ``status.phase!=Succeeded``), as the API server's field sets do.
    """
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        negate = "!=" in term
        path, value = (s.strip() for s in (term.split("!=", 1) if negate else term.replace("==", "=").split("=", 1)))
        field: Any = obj
        for part in path.split("."):
            field = field.get(part) if isinstance(field, Mapping) else None
        if ((field if isinstance(field, str) else "") == value) == negate:
            return False
    return True


def _now_text(offset: float = 0.0) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(pdb: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    match = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _scaled(value: Any, total: int) -> int:
    """An IntOrString of a budget against ``total``, percentages rounded up (as the controller does)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus resourceVersions, 409 on stale writes and graceful pod deletion."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self.terminating: dict[tuple, float] = {}   # pods this emulator is terminating -> when they go (monotonic)

    def next_version(self) -> str:
        return str(next(self._versions))

    async def delete_pod(self, namespace: str, name: str) -> dict:
        """Delete a pod as the API server does: gracefully (kept, terminating) when it is bound, not finished and
        asks for a grace period; at once otherwise. Returns the pod as the API answers it."""
        key = (PODS, namespace, name)
        obj = self.objects[key]
        pod = obj.raw
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        grace = spec.get("terminationGracePeriodSeconds") or 0
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if meta.get("deletionTimestamp") and key in self.terminating:
            return dict(pod)                    # already terminating: nothing changes
        if grace > 0 and spec.get("nodeName") and not finished:
            obj.patch({"metadata": {"deletionTimestamp": _now_text(grace), "deletionGracePeriodSeconds": grace,
                                    "resourceVersion": self.next_version()}})
            self.terminating[key] = time.monotonic() + grace
            await self._buses[PODS].put({"type": "MODIFIED", "object": obj.raw})
            return dict(obj.raw)
        raw = dict(pod)
        obj.delete()
        self.terminating.pop(key, None)
        await self._buses[PODS].put({"type": "DELETED", "object": raw})
        return raw

    async def reap(self) -> None:
        """The kubelet's part of a graceful deletion: a terminating pod goes when its grace period is over."""
        now = time.monotonic()
        for key, when in list(self.terminating.items()):
            if when > now:
                continue
            del self.terminating[key]
            if key in self.objects and not self.objects[key].deleted:
                raw = dict(self.objects[key].raw)
                self.objects[key].delete()
                await self._buses[PODS].put({"type": "DELETED", "object": raw})

    async def _handle(self, request):
        if request.resource == PODS and request.action == kmock.action.DELETE and request.name is not None \
                and request.subresource is None:
            key = (PODS, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                return aiohttp.web.json_response(await self.delete_pod(request.namespace, request.name))
        if request.resource is not None and request.action in (kmock.action.UPDATE, kmock.action.CREATE) \
                and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.UPDATE:
                key = (request.resource, request.namespace, request.name)
                wanted = meta.get("resourceVersion")
                if wanted and key in self.objects and not self.objects[key].deleted:
                    have = (self.objects[key].raw.get("metadata") or {}).get("resourceVersion")
                    if have != wanted:
                        raise _status(409, "Conflict", f"the object has been modified; version {wanted} is stale")
            else:
                meta.setdefault("creationTimestamp", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta["resourceVersion"] = self.next_version()
        return await super()._handle(request)


class KubeEmulator:
    """Starts :class:`Emulator` + ``kmock.Server`` on 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"kmock did not start: {self._failure!r}")
        self.call(self._install_extensions)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # surfaced by __init__ when start-up fails
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Emulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            controllers = asyncio.ensure_future(self._controllers())
            self._ready.set()
            await self._stop.wait()
            controllers.cancel()

    async def _controllers(self) -> None:
        """The kubelet's end of graceful deletion and the disruption controller, every 0.1 s."""
        while True:
            await asyncio.sleep(0.1)
            await self.emulator.reap()
            await self.recompute_budgets()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop (object edits must not race requests)."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    # ---- objects ---------------------------------------------------------------------------

    def put(self, resource: kmock.resource, namespace: Optional[str], body: dict) -> None:
        def store() -> None:
            meta = body.setdefault("metadata", {})
            meta.setdefault("resourceVersion", self.emulator.next_version())
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            if namespace is not None:
                meta["namespace"] = namespace
            self.emulator.objects[resource, namespace, meta["name"]] = body
        self.call(store)

    def get(self, resource: kmock.resource, namespace: Optional[str], name: str) -> Optional[dict]:
        def read() -> Optional[dict]:
            key = (resource, namespace, name)
            if key not in self.emulator.objects or self.emulator.objects[key].deleted:
                return None
            return dict(self.emulator.objects[key].raw)
        return self.call(read)

    def requests(self, predicate: Callable[[Any], bool] = lambda r: True) -> list:
        return self.call(lambda: [r for r in self.emulator if predicate(r)])

    def clear_requests(self) -> None:
        self.call(lambda: self.emulator._requests.clear())   # kmock 0.8 has no public way

    def reset(self) -> None:
        """Forget every object and request (between tests sharing one server)."""
        def wipe() -> None:
            for key in list(self.emulator.objects):
                del self.emulator.objects[key]
            self.emulator._requests.clear()
            self.emulator.terminating.clear()
        self.call(wipe)

    # ---- extensions --------------------------------------------------------------------------

    def _install_extensions(self) -> None:
        emulator = self.emulator
        for resource, kind, namespaced in ((NODES, "Node", False), (PODS, "Pod", True), (PDBS, "PodDisruptionBudget", True),
                                           (LEASES, "Lease", True), (DEPLOYMENTS, "Deployment", True),
                                           (JOBS, "Job", True), (EVENTS, "Event", True)):
            emulator.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)
        emulator[kmock.action.LIST] << self._list
        emulator[kmock.method.POST, PODS, kmock.subresource("eviction")] << self._evict
        emulator[kmock.method.GET, DEPLOYMENTS, kmock.subresource("scale")] << self._scale
        emulator[kmock.method.PATCH, DEPLOYMENTS, kmock.subresource("scale")] << self._scale

    def _live(self, resource, namespace: Optional[str] = None) -> list[dict]:
        objects = []
        for (res, ns, _name), obj in self.emulator.objects.items():
            if res == resource and not obj.deleted and (namespace is None or ns == namespace):
                objects.append(obj.raw)
        return sorted(objects, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _list(self, request):
        if request.params.get("watch") in ("True", "true", "1"):
            return self.emulator._serve_watch(request)   # kmock's own watch stream
        items = self._live(request.resource, request.namespace)
        selector = request.params.get("labelSelector", "")
        if selector:
            items = [o for o in items if _selector_matches(selector, o["metadata"].get("labels") or {})]
        fields = request.params.get("fieldSelector", "")
        if fields:
            items = [o for o in items if _field_selector_matches(fields, o)]
        start = int(request.params.get("continue") or 0)
        limit = int(request.params.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta = {"resourceVersion": str(max((int(o["metadata"].get("resourceVersion") or 0) for o in items), default=0))}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        return {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page}

    async def _evict(self, request):
        """The API server's eviction: the budget's status decides, and a grant spends one disruption."""
        key = (PODS, request.namespace, request.name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            raise _status(404, "NotFound", f'pods "{request.name}" not found')
        pod = self.emulator.objects[key].raw
        if (pod.get("metadata") or {}).get("deletionTimestamp") or \
                (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending"):
            # canIgnorePDB: a pod already terminating, finished or not yet running is deleted without a budget.
            await self.emulator.delete_pod(request.namespace, request.name)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        selecting = [pdb for pdb in self._live(PDBS, request.namespace) if _matches(pdb, labels)]
        if len(selecting) > 1:
            # What the API server answers (errors.NewInternalError in its eviction REST handler).
            raise _status(500, "InternalError", "Internal error occurred: This pod has more than one "
                                                "PodDisruptionBudget, which the eviction subresource does not support.")
        for pdb in selecting:
            status = pdb.get("status") or {}
            if int(status.get("disruptionsAllowed") or 0) < 1:
                raise kmock.KubernetesError(
                    status=429, reason="TooManyRequests",
                    message="Cannot evict pod as it would violate the pod's disruption budget.",
                    details={"causes": [{"reason": "DisruptionBudget", "message":
                                         f"The disruption budget {pdb['metadata']['name']} needs "
                                         f"{status.get('desiredHealthy', 0)} healthy pods and has "
                                         f"{status.get('currentHealthy', 0)} currently"}]})
            # The grant spends a disruption before the pod goes: a second eviction in the same instant is refused.
            self._patch(PDBS, pdb, {"status": {"disruptionsAllowed": int(status["disruptionsAllowed"]) - 1,
                                               "disruptedPods": {request.name: _now_text()}}})
            await self.emulator._buses[PDBS].put({"type": "MODIFIED", "object": self._raw(PDBS, pdb)})
        await self.emulator.delete_pod(request.namespace, request.name)
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}

    async def recompute_budgets(self) -> None:
        """The disruption controller for budgets with minAvailable/maxUnavailable: status from the pods now."""
        for pdb in self._live(PDBS):
            spec, meta = pdb.get("spec") or {}, pdb["metadata"]
            if "minAvailable" not in spec and "maxUnavailable" not in spec:
                continue
            namespace = meta.get("namespace")
            status = pdb.get("status") or {}
            pods = [p for p in self._live(PODS, namespace) if _matches(pdb, (p["metadata"].get("labels") or {}))]
            live = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
            # A disrupted pod leaves the map once it is terminating or gone (the controller's DeletionTimeout
            # of 2 minutes for a deletion that never came is not modelled).
            disrupted = {n: t for n, t in (status.get("disruptedPods") or {}).items() if n in live}
            healthy = sum(1 for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp")
                          and p["metadata"]["name"] not in disrupted)
            if "minAvailable" in spec and not str(spec["minAvailable"]).endswith("%"):
                expected = len(pods)
                desired = int(spec["minAvailable"])
            else:
                replicas = [int((d.get("spec") or {}).get("replicas", 1)) for d in self._live(DEPLOYMENTS, namespace)
                            if _matches(pdb, (((d.get("spec") or {}).get("template") or {}).get("metadata") or {})
                                        .get("labels") or {})]
                expected = sum(replicas)
                if not replicas:
                    desired = healthy + 1           # no controller to scale from: fail closed, nothing allowed
                elif "minAvailable" in spec:
                    desired = _scaled(spec["minAvailable"], expected)
                else:
                    desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
            new = {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
                   "disruptionsAllowed": max(0, healthy - desired), "disruptedPods": disrupted,
                   "observedGeneration": meta.get("generation", 1)}
            if any(status.get(k) != v for k, v in new.items()):
                gone = {n: None for n in (status.get("disruptedPods") or {}) if n not in disrupted}
                self._patch(PDBS, pdb, {"status": {**new, "disruptedPods": {**gone, **disrupted}}})
                await self.emulator._buses[PDBS].put({"type": "MODIFIED", "object": self._raw(PDBS, pdb)})

    def _key(self, resource, body: Mapping[str, Any]) -> tuple:
        return (resource, body["metadata"].get("namespace"), body["metadata"]["name"])

    def _raw(self, resource, body: Mapping[str, Any]) -> dict:
        return self.emulator.objects[self._key(resource, body)].raw

    def _patch(self, resource, body: Mapping[str, Any], changes: dict) -> None:
        """A write of the stored object (a new version with a new resourceVersion); ``None`` removes a key."""
        changes.setdefault("metadata", {})["resourceVersion"] = self.emulator.next_version()
        self.emulator.objects[self._key(resource, body)].patch(changes)

    def _scale(self, request):
        key = (DEPLOYMENTS, request.namespace, request.name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            raise _status(404, "NotFound", f'deployments.apps "{request.name}" not found')
        deployment = self.emulator.objects[key].raw
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": request.name, "namespace": request.namespace,
                         "resourceVersion": deployment["metadata"].get("resourceVersion")},
            "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (deployment.get("status") or {}).get("replicas", 0)},
        }
