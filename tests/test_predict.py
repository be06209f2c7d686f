"""The dry run's predicted replacement: a fleet snapshot as a simulator scenario (pure), and the
prediction read through the real adapters (AwsCloud against a moto server, KubeCluster against
the kmock emulator, both over HTTP)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests._aws_env import use_dummy_aws_credentials
import yaml

from automation.localaws import create_fleet
from automation.rollout.model import (ANNOTATION_DEADLINE_EXTENSION, AutoScalingGroup, Instance, Node, Pod)
from automation.rollout.sim import ScenarioError, load_scenario, simulate
from automation.rotate.fleet import prediction
from automation.rotate.predict import describe, predict, scenario_from_snapshot
from automation.rotate.wiring import make_predict
from tests._kube_emulator import JOBS, NODES, PODS

REGION = "us-east-2"


# ---- hand-built snapshots --------------------------------------------------------------------

def group(name: str, versions: list[str], *, current: str = "2", zone: str = "us-east-2a", max_size: int = 6,
          states: dict[int, str] = {}) -> AutoScalingGroup:
    return AutoScalingGroup(
        name=name, node_group="gpu", zone=zone, min_size=0, max_size=max_size, desired_capacity=len(versions),
        launch_template_id="lt-0123", launch_template_version=current,
        instances=tuple(Instance(id=f"i-{name}-{k}", zone=zone, launch_template_version=v,
                                 lifecycle_state=states.get(k, "InService")) for k, v in enumerate(versions)))


def nodes_of(*groups: AutoScalingGroup) -> list[Node]:
    return [Node(name=f"node-{i.id[2:]}", instance_id=i.id, ready=True) for g in groups for i in g.instances]


def job_pod(name: str, node: str | None, *, kind: str = "Job", phase: str = "Running", extension: str | None = None,
            deleting: bool = False) -> Pod:
    annotations = {ANNOTATION_DEADLINE_EXTENSION: extension} if extension is not None else {}
    return Pod(namespace="ml", name=name, node_name=node, phase=phase, owner_kind=kind, owner_name=name,
               annotations=annotations, deleting=deleting)


OLD_A = group("kiln-gpu-a", ["1", "1", "1"], zone="us-east-2a", max_size=5)
OLD_B = group("kiln-gpu-b", ["1", "1"], zone="us-east-2b", max_size=1)   # max below its nodes: raised to fit


def test_groups_become_node_groups_with_zone_nodes_and_max_size():
    scenario = scenario_from_snapshot([OLD_B, OLD_A], nodes_of(OLD_A, OLD_B), [], deadline_seconds=3600)
    assert [(g.name, g.zone, g.nodes, g.max_size, g.pods_per_node) for g in scenario.node_groups] == [
        ("kiln-gpu-a", "us-east-2a", 3, 5, 1), ("kiln-gpu-b", "us-east-2b", 2, 2, 1)]
    assert scenario.deadline_seconds == 3600 and scenario.jobs.running == 0 and scenario.jobs.placement is None


def test_job_pods_are_placed_on_their_nodes_and_other_pods_are_ignored():
    pods = [
        job_pod("train-1", "node-kiln-gpu-a-2"), job_pod("train-2", "node-kiln-gpu-a-2"),
        job_pod("train-3", "node-kiln-gpu-b-0", kind="PyTorchJob"),
        job_pod("web-1", "node-kiln-gpu-a-0", kind="ReplicaSet"),
        job_pod("exporter", "node-kiln-gpu-a-1", kind="DaemonSet"),
        job_pod("bare", "node-kiln-gpu-a-1", kind=None),
        job_pod("ray-head", "node-kiln-gpu-b-1", kind="RayCluster"),     # not a Job kind by default
        job_pod("done", "node-kiln-gpu-a-0", phase="Succeeded"),
        job_pod("leaving", "node-kiln-gpu-a-0", deleting=True),
        job_pod("queued", None, phase="Pending"),
        job_pod("elsewhere", "node-cpu-0"),                              # on a node of no rotated group
    ]
    scenario = scenario_from_snapshot([OLD_A, OLD_B], nodes_of(OLD_A, OLD_B), pods, deadline_seconds=3600)
    assert scenario.jobs.running == 3
    assert scenario.jobs.placement == (("kiln-gpu-a", 2), ("kiln-gpu-a", 2), ("kiln-gpu-b", 0))
    assert [g.pods_per_node for g in scenario.node_groups] == [2, 1]   # two Jobs share node a-2
    assert scenario.jobs.remaining_seconds == (60.0, 3600.0)          # not knowable: the default spread

    with_ray = scenario_from_snapshot([OLD_A, OLD_B], nodes_of(OLD_A, OLD_B), pods, deadline_seconds=3600,
                                      job_owner_kinds=frozenset({"Job", "PyTorchJob", "RayCluster"}))
    assert with_ray.jobs.running == 4 and ("kiln-gpu-b", 1) in with_ray.jobs.placement


def test_only_the_groups_the_stack_names_are_replaced():
    pods = [job_pod("train-1", "node-kiln-gpu-a-0"), job_pod("train-2", "node-kiln-gpu-b-0")]
    scenario = scenario_from_snapshot([OLD_A, OLD_B], nodes_of(OLD_A, OLD_B), pods, deadline_seconds=3600,
                                      asg_names=["kiln-gpu-b"])
    assert [g.name for g in scenario.node_groups] == ["kiln-gpu-b"]
    assert scenario.jobs.placement == (("kiln-gpu-b", 0),)


def test_old_and_new_groups():
    """Before up (the dry run) every live node is replaced; with only_outdated, just the nodes
    not on their group's current version, and Jobs on up-to-date nodes stay out."""
    new = group("kiln-gpu-new", ["2", "2"])
    mixed = group("kiln-gpu-mixed", ["2", "1", "1", "1"], states={3: "Terminating"})
    pods = [job_pod("on-new", "node-kiln-gpu-new-0"), job_pod("on-current", "node-kiln-gpu-mixed-0"),
            job_pod("on-old", "node-kiln-gpu-mixed-2"), job_pod("on-terminating", "node-kiln-gpu-mixed-3")]
    snapshot = ([new, mixed], nodes_of(new, mixed), pods)

    everything = scenario_from_snapshot(*snapshot, deadline_seconds=3600)
    assert [(g.name, g.nodes) for g in everything.node_groups] == [("kiln-gpu-mixed", 3), ("kiln-gpu-new", 2)]
    assert everything.jobs.running == 3   # not the one on the terminating instance

    outdated = scenario_from_snapshot(*snapshot, deadline_seconds=3600, only_outdated=True)
    assert [(g.name, g.nodes) for g in outdated.node_groups] == [("kiln-gpu-mixed", 2)]
    assert outdated.jobs.placement == (("kiln-gpu-mixed", 1),)   # on-old: the second outdated node


def test_a_job_past_the_deadline_is_predicted_force_evicted_and_an_extended_one_is_not():
    pods = [job_pod("long", "node-kiln-gpu-a-0"), job_pod("extended", "node-kiln-gpu-a-1", extension="7200"),
            job_pod("bad-annotation", "node-kiln-gpu-b-0", extension="soon")]
    scenario = scenario_from_snapshot([OLD_A, OLD_B], nodes_of(OLD_A, OLD_B), pods, deadline_seconds=3600,
                                      remaining_seconds=(5000.0, 5000.0))
    assert scenario.jobs.deadline_extension_list == (0.0, 7200.0, 0.0)   # by pod key: bad-annotation, extended, long
    result = prediction(simulate(scenario))
    assert result["outcome"] == "completed" and result["nodes_replaced"] == 5
    assert result["jobs_running"] == 3
    assert result["jobs_outliving_deadline"] == 2          # "long" and the unparseable extension
    assert 5000 <= result["duration_seconds"] < 5000 + 3600   # waits for the extended Job to finish
    assert result["surge_node_seconds"] > 0 and 1 <= result["peak_surge_nodes"] <= 5
    line = describe({**result})
    assert "5 nodes replaced" in line and "2 of 3 running Jobs would outlive the deadline" in line

    relaxed = prediction(simulate(scenario_from_snapshot([OLD_A, OLD_B], nodes_of(OLD_A, OLD_B), pods,
                                                         deadline_seconds=6000, remaining_seconds=(5000.0, 5000.0))))
    assert relaxed["jobs_outliving_deadline"] == 0


def test_peak_surge_is_the_most_extra_nodes_at_once():
    """Empty old nodes go within seconds, so the surge is shorter than the timeline's 60 s samples:
    the peak is tracked by the simulator, not read off the samples."""
    scenario = scenario_from_snapshot([OLD_A], nodes_of(OLD_A), [], deadline_seconds=3600, surge="1")
    result = prediction(simulate(scenario))
    assert result["nodes_replaced"] == 3 and result["peak_surge_nodes"] == 1
    wide = prediction(simulate(scenario_from_snapshot([OLD_A], nodes_of(OLD_A), [], deadline_seconds=3600,
                                                      surge="3")))
    assert wide["peak_surge_nodes"] == 3 and wide["surge_node_seconds"] > result["surge_node_seconds"] > 0


def test_the_simulated_fleet_starts_with_each_job_on_its_node_and_its_extension():
    from automation.rollout.sim.world import World

    world = World(load_scenario({"node_groups": [{"name": "g", "nodes": 3, "pods_per_node": 2}, {"name": "h", "nodes": 1}],
                                 "jobs": {"running": 3, "placement": [["g", 1], ["g", 1], ["h", 0]],
                                          "deadline_extension_list": [0, 900, 0]}}))
    jobs_on = {node: [world.pods[k] for k in world.pods_by_node[node] if world.pinfo[k].kind == "job"]
               for nodes in world.initial_nodes.values() for node in nodes}
    g, h = world.initial_nodes["g"], world.initial_nodes["h"]
    assert [len(jobs_on[n]) for n in g + h] == [0, 2, 0, 1]
    assert sorted(p.annotations.get(ANNOTATION_DEADLINE_EXTENSION, "-") for p in jobs_on[g[1]]) == ["-", "900.0"]


@pytest.mark.parametrize("jobs, key", [
    ({"running": 1, "placement": [["nope", 0]]}, "jobs.placement[0]"),
    ({"running": 1, "placement": [["g", 2]]}, "jobs.placement[0]"),
    ({"running": 2, "placement": [["g", 0], ["g", 0]]}, "jobs.placement[1]"),   # more Jobs than slots on node 0
    ({"running": 2, "placement": [["g", 0]]}, "jobs.placement"),
    ({"running": 1, "deadline_extension_list": [-1]}, "jobs.deadline_extension_list[0]"),
])
def test_bad_placement_names_the_key(jobs, key):
    with pytest.raises(ScenarioError) as error:
        load_scenario({"node_groups": [{"name": "g", "nodes": 2}], "jobs": jobs})
    assert str(error.value).startswith(key + ":")


# ---- through the real adapters: AwsCloud on a moto server, KubeCluster on kmock ---------------

@pytest.fixture
def aws_env(monkeypatch, moto_url):
    use_dummy_aws_credentials(monkeypatch, "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def live_fleet(aws_env, kube_server):
    """Two ASGs (one per zone, two instances each) in moto; a Ready node per instance in kmock; Job pods:
    two on one node, one whose Job carries a deadline extension, and pods that are not Jobs."""
    kube_server.reset()
    session = boto3.Session(region_name=REGION)
    fleet = create_fleet(session, cluster=f"kiln-{uuid.uuid4().hex[:8]}", nodes_per_zone=2)
    autoscaling = session.client("autoscaling")
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=fleet.asgs)["AutoScalingGroups"]
    node_names = []
    for g in sorted(groups, key=lambda g: g["AutoScalingGroupName"]):
        for i in g["Instances"]:
            name = f"ip-{i['InstanceId']}"
            node_names.append(name)
            kube_server.put(NODES, None, {
                "metadata": {"name": name, "labels": {"kiln.dev/node-group": "gpu"}},
                "spec": {"providerID": f"aws:///{i['AvailabilityZone']}/{i['InstanceId']}"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}})

    def pod(name: str, node: str, kind: str, phase: str = "Running", owner: str | None = None) -> None:
        kube_server.put(PODS, "ml", {
            "metadata": {"name": name, "ownerReferences": [
                {"kind": kind, "name": owner or name, "controller": True}]},
            "spec": {"nodeName": node}, "status": {"phase": phase}})

    pod("train-1", node_names[0], "Job")
    pod("train-2", node_names[0], "Job")
    pod("train-3", node_names[3], "Job", owner="extended")
    kube_server.put(JOBS, "ml", {"metadata": {"name": "extended",
                                              "annotations": {ANNOTATION_DEADLINE_EXTENSION: "7200"}}})
    pod("web-1", node_names[1], "ReplicaSet")
    pod("exporter", node_names[2], "DaemonSet")
    pod("finished", node_names[2], "Job", phase="Succeeded")
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": kube_server.url}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
        "current-context": "kmock"})
    return fleet, kubeconfig


def test_prediction_reads_the_fleet_through_the_real_adapters(live_fleet, kube_server):
    from automation.rollout.aws import AwsCloud
    from automation.rollout.kube import KubeCluster

    fleet, _ = live_fleet
    result = predict(AwsCloud(), KubeCluster(kube_server.api_client()), fleet.cluster, deadline_seconds=3600,
                     remaining_seconds=(5000.0, 5000.0))
    assert result["groups"] == sorted(fleet.asgs)
    assert result["nodes_replaced"] == 4 and result["jobs_running"] == 3
    assert result["jobs_outliving_deadline"] == 2     # train-1 and train-2; train-3's Job extends its deadline
    assert result["outcome"] == "completed" and result["duration_seconds"] >= 5000
    assert result["surge_node_seconds"] > 0 and result["peak_surge_nodes"] >= 1
    # The same fleet built by hand predicts the same replacement: the adapters lose nothing on the way.
    a, b = group("a", ["1", "1"]), group("b", ["1", "1"], zone="us-east-2b")
    by_hand = prediction(simulate(scenario_from_snapshot(
        [a, b], nodes_of(a, b), [job_pod("t1", "node-a-0"), job_pod("t2", "node-a-0"),
                                 job_pod("t3", "node-b-1", extension="7200")],
        deadline_seconds=3600, remaining_seconds=(5000.0, 5000.0))))
    assert {k: result[k] for k in by_hand} == by_hand
    # Reads only: nothing was written to the cluster.
    assert not kube_server.requests(lambda r: r.method in ("POST", "PATCH", "PUT", "DELETE"))


def test_make_predict_builds_the_adapters_from_the_stack_outputs(live_fleet):
    fleet, kubeconfig = live_fleet
    outputs = {"clusterName": fleet.cluster, "kubeconfig": kubeconfig,
               "nodeGroups": {"gpu": [{"asgName": fleet.asgs[0]}]}}   # only the first zone's group rotates
    result = make_predict(deadline_seconds=7200, strategy="default")(outputs)
    assert result["groups"] == [fleet.asgs[0]] and result["nodes_replaced"] == 2
    assert result["jobs_running"] == 2                # train-1, train-2 on the first group's node
    assert result["assumed_remaining_seconds"] == [60.0, 3600.0]
    assert result["jobs_outliving_deadline"] == 0     # at most an hour left each, two hours of deadline
