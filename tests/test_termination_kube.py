"""The handler's Kubernetes side, with the official client against the API emulator (kmock) over HTTP:
reads, node marks (compare-and-swap), evictions and PDBs, Events, and leader election on a Lease."""

from __future__ import annotations

import itertools

import kmock
import pytest

from automation.termination.decisions import TAINT_TERMINATING, Reason, Ref
from automation.termination.kube import EvictionResult, KubeTermination, LeaseElector
from tests._kube_emulator import JOBS, LEASES, NODES, PDBS, PODS

EVENTS = kmock.resource("events.k8s.io/v1/events")
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def server(kube_server):
    kube_server.call(lambda: kube_server.emulator.resources.__setitem__(
        EVENTS, kmock.ResourceInfo(kind="Event", namespaced=True)))
    return kube_server


@pytest.fixture
def kube(server):
    server.reset()
    return server


def node(name, iid="i-0aaaaaaaaaaaaaaaa", taints=(), annotations=None, unschedulable=False):
    spec = {"providerID": f"aws:///us-east-2a/{iid}" if iid else None, "taints": list(taints)}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "uid": f"uid-{name}", "annotations": annotations or {}, "labels": {}},
            "spec": {k: v for k, v in spec.items() if v is not None}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name, node_name, kind="Job", owner=None, phase="Running", labels=None, annotations=None):
    meta = {"name": name, "uid": f"uid-{name}", "labels": labels or {}, "annotations": annotations or {}}
    if kind:
        meta["ownerReferences"] = [{"kind": kind, "name": owner or f"{name}-owner", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node_name, "containers": [{"name": "c"}]}, "status": {"phase": phase}}


def adapter(kube, now=T0):
    return KubeTermination(kube.api_client(), identity="handler-0", wall_clock=lambda: now)


# ---- reads ---------------------------------------------------------------------------------------------------


def test_nodes_and_only_the_live_pods_of_the_nodes_asked_for(kube):
    kube.put(NODES, None, node("n1"))
    kube.put(NODES, None, node("n2", iid=None))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    kube.put(PODS, "ml", pod("done", "n1", phase="Succeeded"))
    kube.put(PODS, "ml", pod("other", "n2"))
    a = adapter(kube)
    nodes = {n.name: n for n in a.list_nodes()}
    assert nodes["n1"].instance_id == "i-0aaaaaaaaaaaaaaaa" and nodes["n2"].instance_id is None
    kube.clear_requests()
    assert [p.name for p in a.list_pods_on(["n1"])] == ["train-0"]
    [request] = kube.requests(lambda r: r.resource == PODS)
    assert request.params["fieldSelector"] == "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed"
    assert a.list_pods_on([]) == []


def test_a_jobs_deadline_extension_reaches_its_pods(kube):
    kube.put(NODES, None, node("n1"))
    kube.put(PODS, "ml", pod("train-0", "n1", owner="train"))
    kube.put(PODS, "ml", pod("own", "n1", owner="train", annotations={"kiln.dev/rollout-deadline-extension-seconds": "60"}))
    kube.put(PODS, "ml", pod("orphan", "n1", owner="deleted-job"))
    kube.put(JOBS, "ml", {"metadata": {"name": "train", "annotations": {"kiln.dev/rollout-deadline-extension-seconds": "3600"}}})
    pods = {p.name: p for p in adapter(kube).list_pods_on(["n1"])}
    ext = "kiln.dev/rollout-deadline-extension-seconds"
    assert pods["train-0"].annotations[ext] == "3600" and pods["own"].annotations[ext] == "60"
    assert ext not in pods["orphan"].annotations


# ---- node marks ----------------------------------------------------------------------------------------------


def test_mark_cordons_taints_and_records_each_reason_once(kube):
    other = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    kube.put(NODES, None, node("n1", taints=[other]))
    a = adapter(kube)
    assert a.mark("n1", [(Reason.REBALANCE, T0)]) is True
    assert a.mark("n1", [(Reason.LIFECYCLE, T0 + 60), (Reason.REBALANCE, T0 + 99)]) is True
    stored = kube.get(NODES, None, "n1")
    assert stored["spec"]["unschedulable"] is True
    assert stored["spec"]["taints"] == [other, {"key": TAINT_TERMINATING, "value": "rebalance-recommendation",
                                                "effect": "NoSchedule"}]
    assert {k: v for k, v in stored["metadata"]["annotations"].items() if k.startswith("kiln.dev/")} == {
        "kiln.dev/terminating-rebalance-recommendation": "2027-01-15T08:00:00Z",     # the first time stays
        "kiln.dev/terminating-lifecycle-termination": "2027-01-15T08:01:00Z"}
    kube.clear_requests()
    assert a.mark("n1", [(Reason.LIFECYCLE, T0 + 60)]) is True                     # nothing new: no write
    assert kube.requests(lambda r: r.method == "PATCH") == []
    assert a.mark("gone", [(Reason.SPOT, T0)]) is False


def test_mark_redoes_its_patch_when_someone_else_wrote_first(kube):
    kube.put(NODES, None, node("n1"))
    a = adapter(kube)
    real_read = a.core.read_node
    raced = []

    def racing_read(*args, **kwargs):
        seen = real_read(*args, **kwargs)
        if not raced:
            raced.append(True)
            kube.put(NODES, None, node("n1", taints=[{"key": "kiln.dev/rollout", "value": "old", "effect": "NoSchedule"}]))
        return seen

    a.core.read_node = racing_read
    assert a.mark("n1", [(Reason.LIFECYCLE, T0)]) is True
    taints = [t["key"] for t in kube.get(NODES, None, "n1")["spec"]["taints"]]
    assert taints == ["kiln.dev/rollout", TAINT_TERMINATING]                     # the rollout's taint was kept


# ---- evictions ---------------------------------------------------------------------------------------------------


def test_evictions_honour_pdbs(kube):
    kube.put(PODS, "web", pod("api-0", "n1", "ReplicaSet", labels={"app": "api"}))
    kube.put(PODS, "web", pod("api-1", "n1", "ReplicaSet", labels={"app": "api", "tier": "x"}))
    kube.put(PODS, "web", pod("free", "n1", "ReplicaSet"))
    kube.put(PDBS, "web", {"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}}},
                           "status": {"disruptionsAllowed": 0}})
    kube.put(PDBS, "web", {"metadata": {"name": "tier"}, "spec": {"selector": {"matchLabels": {"tier": "x"}}},
                           "status": {"disruptionsAllowed": 5}})
    a = adapter(kube)
    assert a.evict("web", "api-0") is EvictionResult.BLOCKED
    assert a.evict("web", "api-1") is EvictionResult.BLOCKED        # two PDBs select it: the API server's 500
    assert a.evict("web", "free") is EvictionResult.EVICTED and kube.get(PODS, "web", "free") is None
    assert a.evict("web", "free") is EvictionResult.GONE
    assert [(p.name, p.disruptions_allowed) for p in a.list_pdbs()] == [("api", 0), ("tier", 5)]


# ---- Events ---------------------------------------------------------------------------------------------------------


def test_events_name_the_object_where_kubectl_describe_finds_them_once(kube):
    kube.put(NODES, None, node("n1"))
    kube.put(PODS, "ml", pod("train-0", "n1"))
    now = [T0]
    a = KubeTermination(kube.api_client(), identity="handler-0", wall_clock=lambda: now[0])
    a.list_nodes()
    a.list_pods_on(["n1"])
    assert a.record_event(Ref("Node", "n1"), "TerminationNotice", "spot interruption", warning=True) is True
    assert a.record_event(Ref("Pod", "train-0", "ml"), "NodeTerminating", "x" * 5000) is True
    assert a.record_event(Ref("Node", "n1"), "TerminationNotice", "spot interruption", warning=True) is False
    now[0] += 601
    assert a.record_event(Ref("Node", "n1"), "TerminationNotice", "spot interruption", warning=True) is True
    created = [r for r in kube.requests(lambda r: r.resource == EVENTS and r.method == "POST")]
    bodies = [r.data for r in created]
    assert len(bodies) == 3
    node_event, pod_event = bodies[0], bodies[1]
    assert node_event["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-n1"}
    assert created[0].namespace == "default" and node_event["type"] == "Warning"
    assert node_event["reportingController"] == "kiln.dev/termination-handler" and node_event["reportingInstance"] == "handler-0"
    assert pod_event["regarding"] == {"apiVersion": "v1", "kind": "Pod", "name": "train-0", "namespace": "ml", "uid": "uid-train-0"}
    assert created[1].namespace == "ml" and len(pod_event["note"]) == 1024 and pod_event["type"] == "Normal"


# ---- leader election ----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def electors(kube, a_clock, b_clock):
    wall = itertools.count(int(T0)).__next__
    a = LeaseElector(kube.api_client(), namespace="kube-system", name="kiln-termination-handler", identity="a",
                     lease_seconds=30, renew_deadline_seconds=20, clock=a_clock, wall_clock=lambda: float(wall()))
    b = LeaseElector(kube.api_client(), namespace="kube-system", name="kiln-termination-handler", identity="b",
                     lease_seconds=30, renew_deadline_seconds=20, clock=b_clock, wall_clock=lambda: float(wall()))
    return a, b


def holder(kube):
    return (kube.get(LEASES, "kube-system", "kiln-termination-handler") or {}).get("spec", {}).get("holderIdentity")


def test_only_one_of_two_candidates_leads_and_the_other_takes_over_when_it_stops_renewing(kube):
    ca, cb = Clock(), Clock(1000.0)       # two machines, two unrelated clocks
    a, b = electors(kube, ca, cb)
    assert a.try_acquire_or_renew() is True and a.is_leader() and holder(kube) == "a"
    assert b.try_acquire_or_renew() is False and not b.is_leader()
    for _ in range(5):                     # a renews every 10 s; b keeps seeing a fresh record
        ca.t += 10
        cb.t += 10
        assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    # a stops (hangs, dies): b must wait a whole lease duration of its own clock after the last change it saw.
    ca.t += 21
    assert not a.is_leader()               # past its renew deadline a no longer acts
    cb.t += 29
    assert b.try_acquire_or_renew() is False
    cb.t += 2
    assert b.try_acquire_or_renew() is True and b.is_leader() and holder(kube) == "b"
    lease = kube.get(LEASES, "kube-system", "kiln-termination-handler")["spec"]
    assert lease["leaseTransitions"] == 1 and lease["leaseDurationSeconds"] == 30
    assert a.try_acquire_or_renew() is False and not a.is_leader()     # a is back: b's record is fresh to it


def test_stepping_down_hands_over_at_once(kube):
    ca, cb = Clock(), Clock()
    a, b = electors(kube, ca, cb)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader() and holder(kube) is None
    assert b.try_acquire_or_renew() is True and holder(kube) == "b"


def test_a_write_race_has_one_winner(kube):
    ca, cb = Clock(), Clock()
    a, b = electors(kube, ca, cb)
    assert a.try_acquire_or_renew()
    a.release()
    # Both read the released lease, then both write: the resourceVersion lets only the first through.
    lease = a.coordination.read_namespaced_lease("kiln-termination-handler", "kube-system", _preload_content=False)
    import json
    seen = json.loads(lease.data)
    now = 0.0
    assert a._write(seen, acquire=True, transitions=2, now=now) is True
    assert b._write(seen, acquire=True, transitions=2, now=now) is False
    assert holder(kube) == "a"


def test_an_unreadable_lease_means_not_leading(server):
    from tests._kube_emulator import KubeEmulator

    broken = KubeEmulator()
    try:
        failing = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd", details={})
        broken.call(lambda: broken.emulator[kmock.method.GET, LEASES] ** 10 << failing)
        a = LeaseElector(broken.api_client(), namespace="kube-system", name="x", identity="a")
        assert a.try_acquire_or_renew() is False and not a.is_leader()
    finally:
        broken.close()
