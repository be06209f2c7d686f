"""KubeCluster over HTTP against kmock's Kubernetes emulator (see tests/_kube_emulator.py)."""

from __future__ import annotations

import threading
import time

import kmock
import pytest
import urllib3

from automation.rollout.kube import ANNOTATION_INTENT, KubeCluster, format_micro_time
from automation.rollout.model import ANNOTATION_DEADLINE_EXTENSION, CA_SCALE_DOWN_DISABLED, TAINT_ROLLOUT, GroupIntent, RolloutIntent, Taint
from automation.rollout.ports import EvictionResult, Throttled
from tests._kube_emulator import DEPLOYMENTS, JOBS, LEASES, NODES, PDBS, PODS, KubeEmulator

NOW = 1_790_000_000.0   # a fixed wall clock for the lease tests


@pytest.fixture
def kube(kube_server):
    kube_server.reset()
    return kube_server


@pytest.fixture
def clock():
    return {"now": NOW}


@pytest.fixture
def cluster(kube, clock):
    return KubeCluster(kube.api_client(), page_size=3, wall_clock=lambda: clock["now"])


def node(name, *, group="gpu-a", ready=True, instance="i-0001", taints=(), unschedulable=False, annotations=None):
    body = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kiln.dev/node-group": group, "kiln.dev/model-version": "m1"},
                     "annotations": dict(annotations or {})},
        "spec": {"providerID": f"aws:///us-east-2a/{instance}", "taints": [dict(t) for t in taints]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if unschedulable:
        body["spec"]["unschedulable"] = True
    return body


def pod(name, namespace="ml", *, node_name="n1", phase="Running", owner=("Job", "train"), labels=None, annotations=None):
    meta = {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": owner[0], "name": owner[1], "uid": "u", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node_name},
            "status": {"phase": phase}}


def list_requests(kube, resource):
    return kube.requests(lambda r: r.resource == resource and r.method == "GET" and r.name is None)


# ---- lists --------------------------------------------------------------------------------

def test_list_nodes_converts_and_pages_with_limit_and_continue(kube, cluster):
    for n in range(7):
        kube.put(NODES, None, node(f"n{n}", instance=f"i-{n:04d}", ready=n != 3))

    nodes = {n.name: n for n in cluster.list_nodes()}

    assert sorted(nodes) == [f"n{n}" for n in range(7)]
    assert nodes["n2"].instance_id == "i-0002"
    assert nodes["n2"].ready and not nodes["n3"].ready
    assert nodes["n2"].labels["kiln.dev/node-group"] == "gpu-a"
    assert nodes["n2"].created_at == pytest.approx(1767225600.0)   # 2026-01-01T00:00:00Z
    pages = list_requests(kube, NODES)
    assert [(r.params.get("limit"), r.params.get("continue")) for r in pages] == [("3", None), ("3", "3"), ("3", "6")]


def test_list_nodes_passes_the_label_selector_to_the_server(kube, cluster):
    kube.put(NODES, None, node("a1", group="gpu-a"))
    kube.put(NODES, None, node("b1", group="gpu-b"))
    kube.put(NODES, None, node("a2", group="gpu-a"))

    assert sorted(n.name for n in cluster.list_nodes("kiln.dev/node-group=gpu-a")) == ["a1", "a2"]
    assert [n.name for n in cluster.list_nodes("kiln.dev/node-group notin (gpu-a)")] == ["b1"]
    assert {r.params.get("labelSelector") for r in list_requests(kube, NODES)} == {
        "kiln.dev/node-group=gpu-a", "kiln.dev/node-group notin (gpu-a)"}


def test_list_pods_across_namespaces_with_owners_phases_and_deletion(kube, cluster):
    kube.put(PODS, "ml", pod("train-1", annotations={"kiln.dev/rollout-deadline-extension-seconds": "600"}))
    kube.put(PODS, "ml", pod("done-1", phase="Succeeded"))
    kube.put(PODS, "ml", pod("crashed-1", phase="Failed"))
    kube.put(PODS, "web", pod("api-1", owner=("ReplicaSet", "api-5d8"), labels={"app": "api"}))
    kube.put(PODS, "kube-system", pod("proxy", owner=("DaemonSet", "kube-proxy")))
    mirror = pod("etcd-n1", owner=None, annotations={"kubernetes.io/config.mirror": "abc"})
    kube.put(PODS, "kube-system", mirror)
    leaving = pod("old-1")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    kube.put(PODS, "ml", leaving)
    kube.put(PODS, "ml", pod("pending-1", node_name=None, phase="Pending"))
    kube.put(PODS, "ml", pod("unknown-1", phase="Unknown"))   # node lost: not finished, still listed

    pods = {p.key: p for p in cluster.list_pods()}

    # Finished pods are not returned: the API server leaves them out of the list.
    assert set(pods) == {"ml/train-1", "web/api-1", "kube-system/proxy", "kube-system/etcd-n1", "ml/old-1",
                         "ml/pending-1", "ml/unknown-1"}
    assert (pods["ml/train-1"].owner_kind, pods["ml/train-1"].owner_name, pods["ml/train-1"].node_name) == ("Job", "train", "n1")
    assert pods["ml/train-1"].annotations["kiln.dev/rollout-deadline-extension-seconds"] == "600"
    assert pods["web/api-1"].owner_kind == "ReplicaSet" and pods["web/api-1"].labels == {"app": "api"}
    assert pods["kube-system/proxy"].owner_kind == "DaemonSet"
    assert pods["kube-system/etcd-n1"].owner_kind == "Node"
    assert pods["ml/old-1"].deleting and not pods["ml/train-1"].deleting
    assert pods["ml/pending-1"].node_name is None and pods["ml/pending-1"].phase == "Pending"
    assert pods["ml/unknown-1"].phase == "Unknown"
    # 7 live pods of 9, 3 a page: one paginated list of 3 pages, each page asking for live pods only.
    pages = list_requests(kube, PODS)
    assert [(r.params.get("fieldSelector"), r.params.get("continue")) for r in pages] == [
        ("status.phase!=Succeeded,status.phase!=Failed", None),
        ("status.phase!=Succeeded,status.phase!=Failed", "3"),
        ("status.phase!=Succeeded,status.phase!=Failed", "6")]


def test_a_pod_with_no_phase_yet_is_listed_as_pending(kube, cluster):
    fresh = pod("fresh-1", node_name=None)
    del fresh["status"]          # just created: the API server has not set a phase
    kube.put(PODS, "ml", fresh)
    [seen] = cluster.list_pods()
    assert (seen.key, seen.phase) == ("ml/fresh-1", "Pending")


def test_only_finished_pods_means_an_empty_list_and_no_job_list(kube, cluster):
    # A finished Job's pods are not read, so they cost no Job lookup either.
    kube.put(JOBS, "ml", job("train", "ml", {ANNOTATION_DEADLINE_EXTENSION: "900"}))
    for n in range(5):
        kube.put(PODS, "ml", pod(f"train-{n}", phase="Succeeded" if n % 2 else "Failed"))
    assert cluster.list_pods() == []
    assert len(list_requests(kube, PODS)) == 1
    assert list_requests(kube, JOBS) == []


def job(name, namespace, annotations=None):
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace,
                                                                   "annotations": dict(annotations or {})}}


def test_a_jobs_deadline_extension_reaches_its_pods_unless_the_pod_sets_its_own(kube, cluster):
    kube.put(JOBS, "ml", job("train", "ml", {ANNOTATION_DEADLINE_EXTENSION: "900"}))
    kube.put(JOBS, "ml", job("plain", "ml"))
    kube.put(JOBS, "ml", job("done", "ml", {ANNOTATION_DEADLINE_EXTENSION: "5"}))   # no pods left
    kube.put(JOBS, "other", job("train", "other", {ANNOTATION_DEADLINE_EXTENSION: "30"}))   # same name, other namespace
    for n in range(4):
        kube.put(PODS, "ml", pod(f"train-{n}", owner=("Job", "train")))
    kube.put(PODS, "ml", pod("own", owner=("Job", "train"), annotations={ANNOTATION_DEADLINE_EXTENSION: "60"}))
    kube.put(PODS, "ml", pod("plain-0", owner=("Job", "plain")))
    kube.put(PODS, "ml", pod("api-0", owner=("ReplicaSet", "train")))   # not a Job: nothing inherited
    kube.put(PODS, "other", pod("train-0", owner=("Job", "train")))

    pods = {p.key: p for p in cluster.list_pods()}

    extension = {key: p.annotations.get(ANNOTATION_DEADLINE_EXTENSION) for key, p in pods.items()}
    assert extension == {**{f"ml/train-{n}": "900" for n in range(4)}, "ml/own": "60", "ml/plain-0": None,
                         "ml/api-0": None, "other/train-0": "30"}
    # Jobs are read as one paginated, cluster-wide list (4 Jobs, 3 a page), not once per pod.
    jobs = list_requests(kube, JOBS)
    assert [(r.namespace, r.params.get("limit"), r.params.get("continue")) for r in jobs] == [
        (None, "3", None), (None, "3", "3")]
    assert kube.requests(lambda r: r.resource == JOBS and r.name is not None) == []


def test_pods_without_a_job_to_look_up_cost_no_job_list(kube, cluster):
    kube.put(PODS, "web", pod("api-1", owner=("ReplicaSet", "api-5d8")))
    kube.put(PODS, "ml", pod("own", annotations={ANNOTATION_DEADLINE_EXTENSION: "60"}))
    assert {p.key for p in cluster.list_pods()} == {"web/api-1", "ml/own"}
    assert list_requests(kube, JOBS) == []


def test_list_pdbs(kube, cluster):
    kube.put(PDBS, "web", {"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}}},
                           "status": {"disruptionsAllowed": 1}})
    kube.put(PDBS, "db", {"metadata": {"name": "pg"}, "spec": {"selector": {"matchLabels": {"app": "pg"}}}, "status": {}})

    pdbs = {p.name: p for p in cluster.list_pdbs()}

    assert pdbs["api"].namespace == "web" and pdbs["api"].match_labels == {"app": "api"}
    assert pdbs["api"].disruptions_allowed == 1 and pdbs["pg"].disruptions_allowed == 0


def test_capacity_fields_are_parsed_from_quantities(kube, cluster):
    gpu_node = node("g1")
    gpu_node["status"]["allocatable"] = {"cpu": "47900m", "memory": "180Gi", "nvidia.com/gpu": "4"}
    kube.put(NODES, None, gpu_node)
    job = pod("train-1")
    job["spec"].update({
        "nodeSelector": {"kiln.dev/node-group": "gpu-a"},
        "containers": [{"name": "main", "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": "2"}}},
                       {"name": "side", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
        "initContainers": [{"name": "fetch", "resources": {"requests": {"cpu": "8"}}}],
    })
    kube.put(PODS, "ml", job)

    [seen_node] = cluster.list_nodes()
    [seen_pod] = cluster.list_pods()

    assert seen_node.allocatable == {"cpu": 47.9, "memory": 180 * 2**30, "nvidia.com/gpu": 4.0}
    assert seen_pod.requests == {"cpu": 8.0, "nvidia.com/gpu": 2.0, "memory": 2.0**30}   # init container's 8 CPUs win
    assert seen_pod.node_selector == {"kiln.dev/node-group": "gpu-a"}


# ---- node marks ---------------------------------------------------------------------------

def test_cordon_taints_and_annotates_in_one_patch_keeping_other_taints(kube, cluster):
    kube.put(NODES, None, node("n1", taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]))
    kube.clear_requests()

    cluster.cordon("n1", Taint(TAINT_ROLLOUT, "old", "NoSchedule"), {CA_SCALE_DOWN_DISABLED: "true"})

    stored = kube.get(NODES, None, "n1")
    assert stored["spec"]["unschedulable"] is True
    assert stored["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                                        {"key": TAINT_ROLLOUT, "value": "old", "effect": "NoSchedule"}]
    assert stored["metadata"]["annotations"][CA_SCALE_DOWN_DISABLED] == "true"
    patches = kube.requests(lambda r: r.method == "PATCH")
    assert len(patches) == 1
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"

    [seen] = cluster.list_nodes()
    assert seen.unschedulable and Taint(TAINT_ROLLOUT, "old", "NoSchedule") in seen.taints

    kube.clear_requests()
    cluster.cordon("n1", Taint(TAINT_ROLLOUT, "old", "NoSchedule"), {CA_SCALE_DOWN_DISABLED: "true"})
    assert kube.requests(lambda r: r.method == "PATCH") == []   # already cordoned: no write


def test_cordon_recomputes_after_a_conflicting_write(kube, cluster):
    kube.put(NODES, None, node("n1"))
    real_read = cluster._read_node
    raced = []

    def read_then_someone_adds_a_taint(name):
        current = real_read(name)
        if not raced:   # another controller writes between our read and our patch
            raced.append(True)
            other = KubeCluster(kube.api_client())
            other.cordon(name, Taint("example.com/maintenance", "", "NoExecute"), {})
        return current

    cluster._read_node = read_then_someone_adds_a_taint
    cluster.cordon("n1", Taint(TAINT_ROLLOUT, "", "NoSchedule"), {})

    keys = [t["key"] for t in kube.get(NODES, None, "n1")["spec"]["taints"]]
    assert keys == ["example.com/maintenance", TAINT_ROLLOUT]
    assert len(kube.requests(lambda r: r.method == "PATCH")) == 3   # theirs, our 409, our retry


def test_uncordon_removes_only_kilns_taint_and_annotations(kube, cluster):
    kube.put(NODES, None, node("n1", unschedulable=True,
                               taints=[{"key": TAINT_ROLLOUT, "effect": "NoSchedule"},
                                       {"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                               annotations={CA_SCALE_DOWN_DISABLED: "true", "team": "ml"}))

    cluster.uncordon("n1", TAINT_ROLLOUT, [CA_SCALE_DOWN_DISABLED])

    stored = kube.get(NODES, None, "n1")
    assert "unschedulable" not in stored["spec"]
    assert stored["spec"]["taints"] == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert stored["metadata"]["annotations"] == {"team": "ml"}


def test_annotate_node_sets_and_removes_keys_in_one_merge_patch(kube, cluster):
    kube.put(NODES, None, node("n1", annotations={"team": "ml", "kiln.dev/rollout-protected": "true"}))
    kube.clear_requests()

    cluster.annotate_node("n1", {CA_SCALE_DOWN_DISABLED: "true", "kiln.dev/rollout-protected": None})

    assert kube.get(NODES, None, "n1")["metadata"]["annotations"] == {"team": "ml", CA_SCALE_DOWN_DISABLED: "true"}
    assert [r.method for r in kube.requests()] == ["PATCH"]
    cluster.annotate_node("gone", {"a": "b"})                    # a vanished node is not an error


def test_marks_on_a_missing_node_are_no_ops(kube, cluster):
    kube.put(NODES, None, node("n1"))
    kube.clear_requests()
    cluster.cordon("gone", Taint(TAINT_ROLLOUT), {})
    cluster.uncordon("gone", TAINT_ROLLOUT, [])
    assert kube.get(NODES, None, "n1") is not None and kube.get(NODES, None, "gone") is None
    assert "DELETE" not in [r.method for r in kube.requests()]


# ---- eviction -----------------------------------------------------------------------------

def test_eviction_evicts_blocks_on_a_pdb_and_reports_gone(kube, cluster):
    kube.put(PODS, "web", pod("api-0", owner=("ReplicaSet", "api"), labels={"app": "api"}))
    kube.put(PODS, "web", pod("api-1", owner=("ReplicaSet", "api"), labels={"app": "api"}))
    kube.put(PODS, "ml", pod("sidecar", owner=("ReplicaSet", "s")))
    kube.put(PDBS, "web", {"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}}},
                           "status": {"disruptionsAllowed": 0}})

    assert cluster.evict("web", "api-0") is EvictionResult.BLOCKED      # 429 from the server
    assert kube.get(PODS, "web", "api-0") is not None
    assert cluster.evict("ml", "sidecar") is EvictionResult.EVICTED
    assert kube.get(PODS, "ml", "sidecar") is None
    assert cluster.evict("ml", "sidecar") is EvictionResult.GONE        # 404 from the server

    evictions = kube.requests(lambda r: r.subresource == "eviction")
    assert [r.data["metadata"]["name"] for r in evictions] == ["api-0", "sidecar", "sidecar"]
    assert evictions[0].data["kind"] == "Eviction" and evictions[0].data["apiVersion"] == "policy/v1"


def ready_pod(name, namespace="web", *, labels, grace=None, node_name="n1"):
    body = pod(name, namespace, owner=("ReplicaSet", "api"), labels=labels, node_name=node_name)
    body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    if grace is not None:
        body["spec"]["terminationGracePeriodSeconds"] = grace
    return body


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def budget(kube, namespace="web", name="api"):
    return kube.get(PDBS, namespace, name).get("status") or {}


def test_an_eviction_spends_the_budget_and_the_budget_comes_back_with_the_pods(kube, cluster):
    """The API server's accounting (tests/_kube_emulator.py): a grant decrements disruptionsAllowed at once, so
    the next eviction in the same cycle gets a 429 the adapter reports as BLOCKED; the evicted pod stays
    terminating (deletionTimestamp) for its grace period; the budget comes back only when a replacement is
    Ready."""
    for n in range(3):
        kube.put(PODS, "web", ready_pod(f"api-{n}", labels={"app": "api"}, grace=1))
    kube.put(PDBS, "web", {"metadata": {"name": "api"},
                           "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}}})
    assert wait_for(lambda: budget(kube).get("disruptionsAllowed") == 1)
    assert budget(kube)["currentHealthy"] == 3 and budget(kube)["desiredHealthy"] == 2

    assert cluster.evict("web", "api-0") is EvictionResult.EVICTED
    assert budget(kube)["disruptionsAllowed"] == 0 and "api-0" in budget(kube)["disruptedPods"]
    assert cluster.evict("web", "api-1") is EvictionResult.BLOCKED         # 429: the budget was just spent
    terminating = {p.name: p for p in cluster.list_pods()}
    assert terminating["api-0"].deleting and not terminating["api-1"].deleting     # kept for its grace period
    assert kube.get(PODS, "web", "api-0")["metadata"]["deletionGracePeriodSeconds"] == 1
    assert cluster.evict("web", "api-0") is EvictionResult.EVICTED         # terminating: no budget needed

    assert wait_for(lambda: kube.get(PODS, "web", "api-0") is None)      # gone after its grace period
    time.sleep(0.3)
    assert budget(kube)["disruptionsAllowed"] == 0 and budget(kube)["currentHealthy"] == 2
    assert cluster.evict("web", "api-1") is EvictionResult.BLOCKED         # still 2 healthy of 2 needed

    kube.put(PODS, "web", ready_pod("api-3", labels={"app": "api"}))         # the ReplicaSet's replacement
    assert wait_for(lambda: budget(kube).get("disruptionsAllowed") == 1)
    assert cluster.evict("web", "api-1") is EvictionResult.EVICTED
    assert kube.get(PODS, "web", "api-1")["metadata"]["deletionTimestamp"]


def test_a_429_from_a_max_unavailable_budget_is_blocked_and_the_pod_stays(kube, cluster):
    kube.put(DEPLOYMENTS, "web", {"metadata": {"name": "api"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}}}})
    kube.put(PODS, "web", ready_pod("api-0", labels={"app": "api"}))
    not_ready = ready_pod("api-1", labels={"app": "api"})
    not_ready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    kube.put(PODS, "web", not_ready)
    kube.put(PDBS, "web", {"metadata": {"name": "api"},
                           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "api"}}}})
    assert wait_for(lambda: budget(kube).get("expectedPods") == 2)
    assert budget(kube)["disruptionsAllowed"] == 0      # one of two is already unavailable
    assert cluster.evict("web", "api-0") is EvictionResult.BLOCKED
    assert kube.get(PODS, "web", "api-0") is not None and not kube.get(PODS, "web", "api-0")["metadata"].get(
        "deletionTimestamp")
    refusal = kube.requests(lambda r: r.subresource == "eviction")[-1]
    assert refusal.data["metadata"]["name"] == "api-0"
    # A budget whose controller cannot be found (no Deployment) allows nothing, as the real controller does.
    kube.put(PDBS, "web", {"metadata": {"name": "api"},
                           "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "other"}}}})
    kube.put(PODS, "web", ready_pod("other-0", labels={"app": "other"}))
    assert wait_for(lambda: budget(kube).get("expectedPods") == 0)
    assert cluster.evict("web", "other-0") is EvictionResult.BLOCKED


def test_a_pod_under_two_pdbs_is_reported_blocked_not_a_failure(kube, cluster, caplog):
    # The API server refuses such an eviction with a 500; one misconfigured PDB must hold back
    # only its node, not fail the whole fleet's rollout after a few cycles.
    kube.put(PODS, "web", pod("api-0", owner=("ReplicaSet", "api"), labels={"app": "api", "tier": "front"}))
    for name, match in (("api", {"app": "api"}), ("front", {"tier": "front"})):
        kube.put(PDBS, "web", {"metadata": {"name": name}, "spec": {"selector": {"matchLabels": match}},
                               "status": {"disruptionsAllowed": 1}})

    with caplog.at_level("WARNING", logger="automation.rollout.kube"):
        assert cluster.evict("web", "api-0") is EvictionResult.BLOCKED
    assert kube.get(PODS, "web", "api-0") is not None
    assert "web/api-0" in caplog.text and "more than one PodDisruptionBudget" in caplog.text



# ---- cluster-autoscaler -------------------------------------------------------------------

def test_autoscaler_scale_is_read_and_patched_through_the_scale_subresource(kube, cluster):
    assert cluster.get_autoscaler_replicas() is None     # no Deployment: None

    kube.put(DEPLOYMENTS, "kube-system", {"metadata": {"name": "cluster-autoscaler"}, "spec": {"replicas": 2}})
    assert cluster.get_autoscaler_replicas() == 2
    cluster.scale_autoscaler(0)
    assert kube.get(DEPLOYMENTS, "kube-system", "cluster-autoscaler")["spec"]["replicas"] == 0
    assert cluster.get_autoscaler_replicas() == 0
    cluster.scale_autoscaler(2)
    assert cluster.get_autoscaler_replicas() == 2
    assert {r.subresource for r in kube.requests(lambda r: r.resource == DEPLOYMENTS)} == {"scale"}


def test_autoscaler_name_and_namespace_are_configurable(kube):
    kube.put(DEPLOYMENTS, "autoscaling", {"metadata": {"name": "ca"}, "spec": {"replicas": 1}})
    custom = KubeCluster(kube.api_client(), autoscaler_namespace="autoscaling", autoscaler_name="ca")
    assert custom.get_autoscaler_replicas() == 1


# ---- the lease ----------------------------------------------------------------------------

def lease_spec(kube):
    return kube.get(LEASES, "kube-system", "kiln-rollout")["spec"]


def test_lease_acquire_renew_contend_expire_release(kube, cluster, clock):
    assert cluster.acquire_lock("rollout-a", 120) is True
    spec = lease_spec(kube)
    assert spec["holderIdentity"] == "rollout-a" and spec["leaseDurationSeconds"] == 120
    assert spec["renewTime"] == format_micro_time(NOW)

    other = KubeCluster(kube.api_client(), wall_clock=lambda: clock["now"])
    clock["now"] = NOW + 60
    assert other.acquire_lock("rollout-b", 120) is False          # a live lease of another holder
    assert cluster.acquire_lock("rollout-a", 120) is True         # renewal by the holder
    assert lease_spec(kube)["renewTime"] == format_micro_time(NOW + 60)
    assert lease_spec(kube)["acquireTime"] == format_micro_time(NOW)      # a renewal keeps the acquire time

    # Past acquireTime + duration but within renewTime + duration: still live (expiry runs from the renewal,
    # as client-go's leader election judges it); a second holder taking it now would run two rollouts at once.
    clock["now"] = NOW + 150
    assert other.acquire_lock("rollout-b", 120) is False
    assert lease_spec(kube)["holderIdentity"] == "rollout-a"

    clock["now"] = NOW + 60 + 121
    assert other.acquire_lock("rollout-b", 120) is True           # expired: taken over
    spec = lease_spec(kube)
    assert spec["holderIdentity"] == "rollout-b" and spec["leaseTransitions"] == 1

    cluster.release_lock("rollout-a")                             # not the holder: nothing happens
    assert lease_spec(kube)["holderIdentity"] == "rollout-b"
    other.release_lock("rollout-b")
    assert "holderIdentity" not in lease_spec(kube)
    assert cluster.acquire_lock("rollout-a", 120) is True         # released: free at once


def test_lease_lost_race_returns_false(kube, cluster, clock):
    clock["now"] = NOW
    old = KubeCluster(kube.api_client(), wall_clock=lambda: NOW - 1000)
    assert old.acquire_lock("crashed", 30) is True                # long expired by NOW
    rival = KubeCluster(kube.api_client(), wall_clock=lambda: NOW)
    real_read = cluster._read_lease

    def read_then_rival_wins():
        lease = real_read()
        assert rival.acquire_lock("rival", 120) is True           # between our read and our write
        return lease

    cluster._read_lease = read_then_rival_wins
    assert cluster.acquire_lock("me", 120) is False               # our stale write gets 409
    assert lease_spec(kube)["holderIdentity"] == "rival"


def test_intent_round_trips_through_the_lease_annotation(kube, cluster):
    assert cluster.read_intent() is None
    intent = RolloutIntent(
        rollout_id="r-1", started_at=NOW, deadline_at=NOW + 7200, strategy="default", surge="25%",
        pause_autoscaler=True, autoscaler_replicas=1, ready_timeout_seconds=1800.0, phase="rolling",
        groups=(GroupIntent("kiln-gpu-a", 4, 8, "2", "1"), GroupIntent("kiln-gpu-b", 2, 4, "7", "6")),
    )

    cluster.write_intent(intent)                                  # no lease yet: created with the intent
    assert cluster.read_intent() == intent
    assert cluster.acquire_lock("rollout-a", 60) is True          # the intent does not hold the lock
    assert cluster.read_intent() == intent

    rolled = RolloutIntent(**{**intent.__dict__, "phase": "rolling_back"})
    cluster.write_intent(rolled)
    assert cluster.read_intent() == rolled
    assert lease_spec(kube)["holderIdentity"] == "rollout-a"      # writing intent keeps the lock

    cluster.clear_intent()
    assert cluster.read_intent() is None
    assert ANNOTATION_INTENT not in (kube.get(LEASES, "kube-system", "kiln-rollout")["metadata"].get("annotations") or {})


# ---- watching ------------------------------------------------------------------------------

def test_wait_for_change_returns_on_a_change_and_times_out_without_one(kube, cluster):
    kube.put(PODS, "ml", pod("train-1"))
    kube.put(PODS, "ml", pod("train-2"))
    cluster.list_pods()

    started = time.monotonic()
    cluster.wait_for_change(1.0)                              # replayed ADDED events are not changes
    quiet = time.monotonic() - started
    assert 0.9 <= quiet < 5

    def finish_later():
        time.sleep(0.3)
        other = KubeCluster(kube.api_client())
        other.core.patch_namespaced_pod("train-1", "ml", {"status": {"phase": "Succeeded"}},
                                        _content_type="application/merge-patch+json", _preload_content=False)

    threading.Thread(target=finish_later).start()
    started = time.monotonic()
    cluster.wait_for_change(10.0)
    assert time.monotonic() - started < 3                         # woke on the change, not the timeout
    watches = kube.requests(lambda r: r.resource == PODS and r.params.get("watch"))
    assert len(watches) == 2 and all(r.params.get("timeoutSeconds") for r in watches)
    listed = kube.get(PODS, "ml", "train-2")["metadata"]["resourceVersion"]   # the newest pod when listed
    assert {r.params.get("resourceVersion") for r in watches} == {listed}          # watched from the list


# ---- throttling ----------------------------------------------------------------------------

def test_api_server_throttling_surfaces_as_throttled_but_eviction_429_is_blocked():
    throttling = KubeEmulator()
    try:
        too_many = kmock.KubernetesError(status=429, reason="TooManyRequests", message="slow down", details={})
        throttling.call(lambda: throttling.emulator[kmock.action.LIST, NODES] ** 10 << too_many)
        throttled = KubeCluster(throttling.api_client())
        with pytest.raises(Throttled):
            throttled.list_nodes()
        throttling.put(PODS, "web", pod("api-0", labels={"app": "api"}))
        throttling.put(PDBS, "web", {"metadata": {"name": "api"}, "spec": {"selector": {"matchLabels": {"app": "api"}}},
                                     "status": {"disruptionsAllowed": 0}})
        assert throttled.evict("web", "api-0") is EvictionResult.BLOCKED
    finally:
        throttling.close()


def test_an_api_server_briefly_unavailable_is_transient_not_a_failure():
    # One 503 (an API server restart during a two-hour rollout) must be retried by the
    # runner, which retries Throttled; any other exception ends the rollout.
    restarting = KubeEmulator()
    try:
        answered: list[int] = []

        def unavailable_once(request):
            answered.append(503 if not answered else 200)
            if answered[-1] == 503:
                raise kmock.KubernetesError(status=503, reason="ServiceUnavailable",
                                            message="the server is currently unable to handle the request", details={})
            return restarting._list(request)

        restarting.call(lambda: restarting.emulator[kmock.action.LIST, PODS] ** 10 << unavailable_once)
        restarting.put(PODS, "ml", pod("train-0"))
        cluster = KubeCluster(restarting.api_client())
        with pytest.raises(Throttled):
            cluster.list_pods()
        assert [p.name for p in cluster.list_pods()] == ["train-0"]   # the next try gets through
        assert answered[0] == 503
    finally:
        restarting.close()


def test_a_lost_connection_is_transient_once_the_server_has_answered():
    # Mid-rollout the API server can vanish for seconds (a control-plane upgrade); a
    # server never reached (a wrong --context) must still fail at once.
    going = KubeEmulator()
    going.put(NODES, None, node("n1"))
    cluster = KubeCluster(going.api_client())
    never_reached = KubeCluster(going.api_client())
    assert [n.name for n in cluster.list_nodes()] == ["n1"]
    going.close()

    with pytest.raises(Throttled):
        cluster.list_nodes()
    with pytest.raises(urllib3.exceptions.HTTPError):
        never_reached.list_nodes()


def test_watch_from_an_expired_version_returns_and_relists_next_time():
    expired = KubeEmulator()
    try:
        gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                            "message": "too old resource version"}}
        expired.call(lambda: expired.emulator[kmock.method.GET, PODS, kmock.params(watch="True")] ** 10 << (gone,))
        expired.put(PODS, "ml", pod("train-1"))
        cluster = KubeCluster(expired.api_client())
        cluster.list_pods()
        expired.clear_requests()

        started = time.monotonic()
        cluster.wait_for_change(5.0)
        assert time.monotonic() - started < 2                    # 410 ends the wait at once
        cluster.wait_for_change(0.5)
        lists = expired.requests(lambda r: r.resource == PODS and not r.params.get("watch"))
        assert len(lists) == 1                                    # the second wait listed afresh first
    finally:
        expired.close()


def test_an_expired_continue_token_restarts_the_list_without_duplicates():
    expiring = KubeEmulator()
    try:
        expired = []

        def expire_once(request):
            if request.params.get("continue") and not expired:
                expired.append(request.params["continue"])
                raise kmock.KubernetesError(status=410, reason="Expired", message="continue token expired", details={})
            return expiring._list(request)

        expiring.call(lambda: expiring.emulator[kmock.action.LIST, NODES] ** 10 << expire_once)
        for n in range(7):
            expiring.put(NODES, None, node(f"n{n}", instance=f"i-{n:04d}"))

        nodes = KubeCluster(expiring.api_client(), page_size=3).list_nodes()

        assert sorted(n.name for n in nodes) == [f"n{n}" for n in range(7)]
        assert expired == ["3"]
        pages = list_requests(expiring, NODES)
        assert [r.params.get("continue") for r in pages] == [None, "3", None, "3", "6"]
    finally:
        expiring.close()


def test_every_kubernetes_port_method_is_implemented_with_its_signature():
    import inspect

    from automation.rollout.clock import SystemClock
    from automation.rollout.ports import AutoscalerPort, ClusterPort, Clock, KubernetesPorts, RolloutStore
    from automation.rollout.sim.ports import SimCluster

    # The three narrow ports together are exactly what run_rollout takes, with nothing left over.
    names = lambda port: {n for n, _ in inspect.getmembers(port, inspect.isfunction) if not n.startswith("_")}
    parts = [names(p) for p in (ClusterPort, RolloutStore, AutoscalerPort)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(names(KubernetesPorts))
    for port, adapter in ((ClusterPort, KubeCluster), (RolloutStore, KubeCluster), (AutoscalerPort, KubeCluster),
                          (ClusterPort, SimCluster), (RolloutStore, SimCluster), (AutoscalerPort, SimCluster),
                          (Clock, SystemClock)):
        for name, method in inspect.getmembers(port, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert hasattr(adapter, name), f"{adapter.__name__} lacks {name}"
            wanted = list(inspect.signature(method).parameters)
            have = list(inspect.signature(inspect.unwrap(getattr(adapter, name))).parameters)
            assert have[:len(wanted)] == wanted, f"{adapter.__name__}.{name}{have} != {wanted}"


# ---- watching nodes too --------------------------------------------------------------------

def test_wait_for_change_wakes_on_a_node_change_but_not_on_a_heartbeat(kube, cluster):
    kube.put(NODES, None, node("n1", taints=[{"key": "kiln.dev/model-warming", "value": "true", "effect": "NoSchedule"}]))
    kube.put(PODS, "ml", pod("train-1"))
    cluster.list_pods()
    cluster.list_nodes()
    other = KubeCluster(kube.api_client())

    def heartbeat():
        time.sleep(0.2)
        other.core.patch_node("n1", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:01:00Z"}]}},
            _content_type="application/merge-patch+json", _preload_content=False)

    threading.Thread(target=heartbeat).start()
    started = time.monotonic()
    cluster.wait_for_change(1.5)                                   # a heartbeat is not a change the rollout reads
    assert time.monotonic() - started >= 1.4

    def warmed():
        time.sleep(0.3)
        other.core.patch_node("n1", {"spec": {"taints": None}}, _content_type="application/merge-patch+json",
                              _preload_content=False)

    cluster.list_nodes()
    threading.Thread(target=warmed).start()
    started = time.monotonic()
    cluster.wait_for_change(10.0)
    assert time.monotonic() - started < 3                          # the warm-up taint went: wake now
    node_watches = kube.requests(lambda r: r.resource == NODES and r.params.get("watch"))
    assert node_watches and all(r.params.get("resourceVersion") for r in node_watches)


# ---- Events --------------------------------------------------------------------------------

def _event(name="n1.abc", kind="Node", object_name="n1", namespace="default", object_namespace="", uid=None,
           count=1, reason="RolloutCordoned", note="cordoned: rollout r1", **kw):
    from automation.rollout.ports import ClusterEvent
    return ClusterEvent(name=name, namespace=namespace, kind=kind, object_name=object_name,
                        object_namespace=object_namespace, object_uid=uid or (object_name if kind == "Node" else None),
                        reason=reason, note=note, count=count, first_seen=NOW, last_seen=NOW + 60 * count, **kw)


def test_events_are_created_about_nodes_and_pods_as_kubectl_describe_finds_them(kube, cluster):
    from tests._kube_emulator import EVENTS
    cluster.record_event(_event())
    cluster.record_event(_event(name="train-1.def", kind="Pod", object_name="train-1", namespace="ml",
                                object_namespace="ml", uid="uid-123", reason="RolloutWaiting",
                                note="node n1 is being replaced; the rollout waits for this pod until 12:00Z",
                                action="Wait"))
    on_node = kube.get(EVENTS, "default", "n1.abc")
    assert on_node["apiVersion"] == "events.k8s.io/v1" and on_node["reason"] == "RolloutCordoned"
    # kubectl describe node lists Events whose involvedObject (regarding) is the Node with uid = its name.
    assert on_node["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n1"}
    assert on_node["reportingController"] == "kiln.dev/rollout" and on_node["reportingInstance"]
    assert on_node["eventTime"].endswith("Z") and on_node["type"] == "Normal" and "series" not in on_node
    on_pod = kube.get(EVENTS, "ml", "train-1.def")
    assert on_pod["regarding"] == {"apiVersion": "v1", "kind": "Pod", "name": "train-1", "namespace": "ml",
                                   "uid": "uid-123"}
    assert on_pod["note"].startswith("node n1 is being replaced") and on_pod["action"] == "Wait"


def test_a_repeat_updates_the_series_and_a_rerun_finds_its_event(kube, cluster):
    from tests._kube_emulator import EVENTS
    cluster.record_event(_event())
    cluster.record_event(_event(count=7))                           # a repeat: the series, not a new Event
    stored = kube.get(EVENTS, "default", "n1.abc")
    assert stored["series"]["count"] == 7 and stored["note"] == "cordoned: rollout r1"
    creates = kube.requests(lambda r: r.resource == EVENTS and r.method == "POST")
    assert len(creates) == 1
    # A rerun after a crash makes the same name again: 409 on create, so it updates instead.
    cluster.record_event(_event())
    assert kube.get(EVENTS, "default", "n1.abc")["series"]["count"] == 2
    # An Event that expired meanwhile (Events live about an hour) is created again with its series.
    kube.reset()
    cluster.record_event(_event(count=3))
    assert kube.get(EVENTS, "default", "n1.abc")["series"]["count"] == 3


def test_an_event_write_the_api_refuses_raises_for_the_runner_to_count():
    refusing = KubeEmulator()
    try:
        from tests._kube_emulator import EVENTS
        forbidden = kmock.KubernetesError(status=403, reason="Forbidden", message="cannot create events", details={})
        refusing.call(lambda: refusing.emulator[kmock.method.POST, EVENTS] ** 10 << forbidden)
        with pytest.raises(Exception) as error:
            KubeCluster(refusing.api_client()).record_event(_event())
        assert "403" in str(error.value) or "Forbidden" in str(error.value)
    finally:
        refusing.close()


# ---- pods that cannot run -----------------------------------------------------------------

def test_a_failed_init_container_and_a_crash_loop_are_read_as_the_pods_failure(kube, cluster):
    warm = pod("kiln-model-warmup-x", "kube-system", owner=("DaemonSet", "kiln-model-warmup"), phase="Pending")
    warm["metadata"]["uid"] = "uid-w"
    warm["status"]["initContainerStatuses"] = [{"name": "warm-model", "state": {
        "waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]
    erred = pod("other", "kube-system", owner=("DaemonSet", "x"), phase="Pending")
    erred["status"]["initContainerStatuses"] = [{"name": "i", "state": {"terminated": {"exitCode": 2}}}]
    pulling = pod("train-2", node_name="n2", phase="Pending")
    pulling["status"]["containerStatuses"] = [{"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
    fine = pod("train-3", node_name="n3")
    fine["status"]["initContainerStatuses"] = [{"name": "i", "state": {"terminated": {"exitCode": 0}}}]
    for namespace, body in (("kube-system", warm), ("kube-system", erred), ("ml", pulling), ("ml", fine)):
        kube.put(PODS, namespace, body)
    failures = {p.name: (p.failure, p.uid) for p in cluster.list_pods()}
    assert failures["kiln-model-warmup-x"] == ("Init:CrashLoopBackOff", "uid-w")
    assert failures["other"][0] == "Init:Error"
    assert failures["train-2"][0] == "ImagePullBackOff" and failures["train-3"][0] is None


def test_a_pods_ready_condition_is_read_and_unknown_stays_unknown():
    """The engine tells a budget recovering from the rollout's own eviction (its replacement pod started
    and not Ready yet) from one that is stuck; it reads readiness from the pod's Ready condition."""
    from automation.rollout.kube import pod_from_json

    def pod(conditions):
        status = {"phase": "Running"} if conditions is None else {"phase": "Running", "conditions": conditions}
        return pod_from_json({"metadata": {"name": "api-1", "namespace": "default"}, "spec": {}, "status": status})

    assert pod([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]).ready is True
    assert pod([{"type": "Ready", "status": "False"}]).ready is False
    assert pod([{"type": "Ready", "status": "Unknown"}]).ready is False
    assert pod([{"type": "PodScheduled", "status": "True"}]).ready is None and pod(None).ready is None
