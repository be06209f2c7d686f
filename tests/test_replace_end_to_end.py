"""Whole rollouts through ``python -m automation replace`` and the real adapters: boto3 against a moto
server and the official kubernetes client against the kmock API emulator, both over HTTP, on the
real clock.

Two stand-ins make that possible, each as small as the gap it fills:

* moto 5 reports every Auto Scaling instance's launch template version as the template's *default*
  version; AWS reports the version the instance was launched with. Without the difference a
  replacement looks exactly as old as the node it replaces (docs/adapters.md says so). ``launched_versions``
  makes moto's ``InstanceState`` remember the group's version at launch — only for these tests.
* No kubelet joins the emulator: ``Kubelet`` registers a Ready, labelled node for every instance of
  the group a moment after it appears, and removes the node of an instance that is gone.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import boto3
import pytest

from automation.cli import main as automation_main
from automation.rollout.model import TAG_CLUSTER, TAG_NODE_GROUP
from tests._aws_env import use_dummy_aws_credentials
from tests._kube_emulator import LEASES, NODES

REGION = "us-east-2"


@pytest.fixture
def launched_versions(monkeypatch):
    from moto.autoscaling import models

    original_init = models.InstanceState.__init__

    def init(self, instance, *args, **kwargs):
        original_init(self, instance, *args, **kwargs)
        group = self.auto_scaling_group
        version = str(group.launch_template_version) if group is not None else None
        if group is not None and group.ec2_launch_template is not None and version in ("$Default", "$Latest"):
            template = group.ec2_launch_template
            version = str(template.default_version_number if version == "$Default" else template.latest_version_number)
        self.launched_version = version

    def launch_template(self):
        group = self.auto_scaling_group
        if group is None or group.ec2_launch_template is None:
            return None
        return {"LaunchTemplateId": group.ec2_launch_template.id, "LaunchTemplateName": group.ec2_launch_template.name,
                "Version": getattr(self, "launched_version", None) or str(group.ec2_launch_template.default_version_number)}

    monkeypatch.setattr(models.InstanceState, "__init__", init)
    monkeypatch.setattr(models.InstanceState, "launch_template", property(launch_template))


@pytest.fixture(autouse=True)
def env(monkeypatch, moto_url, kube_server):
    use_dummy_aws_credentials(monkeypatch, "AWS_DEFAULT_REGION", "AWS_REGION", "KUBECONFIG")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_REGION", REGION)
    kube_server.reset()


@pytest.fixture
def kubeconfig(tmp_path, kube_server):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{kube_server.url}'}}}}]\n"
        "users: [{name: tester, user: {token: not-a-secret}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: tester}}]\n"
        "current-context: kmock\n")
    return str(path)


class Kubelet(threading.Thread):
    """Registers a Ready, labelled node for each instance of the group ``boot`` seconds after it
    appears, removes the node of an instance that is gone; ``on_tick`` runs every round."""

    def __init__(self, fleet: "Fleet", kube, boot: float, on_tick=None, bad_version: str | None = None):
        super().__init__(daemon=True)
        self.fleet, self.kube, self.boot, self.on_tick = fleet, kube, boot, on_tick
        self.bad_version = bad_version            # nodes of this version register but never turn Ready
        self.seen: dict[str, float] = {}
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.wait(0.2):
                group = self.fleet.describe()
                live = {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in group["Instances"]}
                for instance, version in live.items():
                    self.seen.setdefault(instance, time.monotonic())
                    if instance not in self.fleet.nodes and time.monotonic() - self.seen[instance] >= self.boot:
                        self.fleet.register(instance, version, ready=version != self.bad_version)
                for instance in set(self.fleet.nodes) - set(live):
                    self.fleet.deregister(instance)
                if self.on_tick:
                    self.on_tick(group)
        except BaseException as error:  # surfaced by the test
            self.error = error


class Fleet:
    def __init__(self, moto_url: str, kube, nodes: int = 3):
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=REGION)
        self.ec2 = session.client("ec2", endpoint_url=moto_url)
        self.asg = session.client("autoscaling", endpoint_url=moto_url)
        self.kube = kube
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                                        AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName=f"kiln-{uuid.uuid4().hex[:8]}",
            LaunchTemplateData={"ImageId": "ami-12c6146b"})["LaunchTemplate"]["LaunchTemplateId"]
        self.publish()                                               # version 2
        n = uuid.uuid4().hex[:8]
        self.cluster, self.group = f"kiln-{n}", f"kiln-{n}-gpu-a"
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.group, MinSize=0, MaxSize=2 * nodes, DesiredCapacity=nodes,
            VPCZoneIdentifier=subnet, LaunchTemplate={"LaunchTemplateId": self.template, "Version": "1"},
            Tags=[{"Key": TAG_CLUSTER, "Value": self.cluster, "PropagateAtLaunch": True},
                  {"Key": TAG_NODE_GROUP, "Value": "gpu-a", "PropagateAtLaunch": True}])
        self.nodes: dict[str, str] = {}
        for instance in self.describe()["Instances"]:
            self.register(instance["InstanceId"], "1")
        self.set_version("2")                                        # the stack moved on: replace every node

    def publish(self) -> str:
        answer = self.ec2.create_launch_template_version(LaunchTemplateId=self.template,
                                                         LaunchTemplateData={"ImageId": "ami-1234abcd"})
        return str(answer["LaunchTemplateVersion"]["VersionNumber"])

    def set_version(self, version: str) -> None:
        self.asg.update_auto_scaling_group(AutoScalingGroupName=self.group,
                                           LaunchTemplate={"LaunchTemplateId": self.template, "Version": version})

    def describe(self) -> dict:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"][0]

    def register(self, instance: str, version: str, ready: bool = True) -> None:
        name = f"node-{instance[-8:]}"
        self.nodes[instance] = name
        self.kube.put(NODES, None, {
            "metadata": {"name": name, "labels": {"kiln.dev/node-group": "gpu-a", "kiln.dev/model-version": f"m{version}"}},
            "spec": {"providerID": f"aws:///{REGION}a/{instance}"},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "allocatable": {"nvidia.com/gpu": "1"}}})

    def deregister(self, instance: str) -> None:
        name = self.nodes.pop(instance)

        def drop() -> None:
            if (NODES, None, name) in self.kube.emulator.objects:
                del self.kube.emulator.objects[NODES, None, name]
        self.kube.call(drop)


def replace(argv: list[str]) -> int:
    try:
        return automation_main(["replace", *argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture
def brisk(monkeypatch):
    """The runner's pauses after acting, shortened: the real clock, a few seconds per rollout."""
    from automation.rollout import runner
    monkeypatch.setattr(runner, "SETTLE_SECONDS", 1.0)
    monkeypatch.setattr(runner, "MIN_RECONCILE_SECONDS", 1.0)


def test_replace_rolls_a_group_through_the_real_adapters_and_follows_a_version_published_mid_rollout(
        launched_versions, brisk, moto_url, kube_server, kubeconfig, capsys):
    fleet = Fleet(moto_url, kube_server)
    published: list[str] = []

    def pulumi_up_while_pinned(group: dict) -> None:
        # The rollout pins the group to version 1 while its canary (version 2) boots: a pulumi up then
        # publishes version 3 and sets the group to it. Before the fix the rollout later unpinned to
        # its stale target, version 2, and reported completed with the newer version undone.
        if not published and group["LaunchTemplate"]["Version"] == "1" and len(group["Instances"]) > 3:
            version = fleet.publish()
            fleet.set_version(version)
            published.append(version)

    kubelet = Kubelet(fleet, kube_server, boot=3.0, on_tick=pulumi_up_while_pinned)
    kubelet.start()
    try:
        code = replace(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--json", "--poll", "1s"])
    finally:
        kubelet.stopped.set()
        kubelet.join(5)
    assert kubelet.error is None, kubelet.error
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines]          # every line is JSON; the last is the report
    report = events[-1]
    assert code == 0 and report["outcome"] == "completed" and report["old_nodes_remaining"] == 0, report
    assert published == ["3"] and any(e.get("event") == "target_moved" for e in events[:-1])
    group = fleet.describe()
    assert group["LaunchTemplate"]["Version"] == "3" and group["DesiredCapacity"] == 3 and group["MaxSize"] == 6
    assert sorted(i["LaunchTemplate"]["Version"] for i in group["Instances"]) == ["3", "3", "3"]
    assert not any(i["ProtectedFromScaleIn"] for i in group["Instances"])
    assert not [t for t in group["Tags"] if t["Key"].startswith("kiln.dev/rollout-")]
    lease = kube_server.get(LEASES, "kube-system", "kiln-rollout")
    assert "holderIdentity" not in lease["spec"] and "kiln.dev/rollout-intent" not in (
        lease["metadata"].get("annotations") or {})


def test_a_bad_ami_through_the_real_adapters_rolls_back_keeping_every_original_and_a_rerun_says_so(
        launched_versions, brisk, moto_url, kube_server, kubeconfig, capsys):
    fleet = Fleet(moto_url, kube_server)
    originals = sorted(fleet.nodes)
    kubelet = Kubelet(fleet, kube_server, boot=1.0, bad_version="2")
    kubelet.start()
    try:
        argv = ["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--json", "--poll", "1s",
                "--ready-timeout", "6s", "--boot-timeout", "6s"]
        first = replace(argv)
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        again = replace(argv)
        rerun = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        kubelet.stopped.set()
        kubelet.join(5)
    assert kubelet.error is None, kubelet.error
    assert first == 1 and report["outcome"] == "rolled_back" and "not Ready" in report["reason"], report
    group = fleet.describe()
    assert group["LaunchTemplate"]["Version"] == "1" and group["DesiredCapacity"] == 3 and group["MaxSize"] == 6
    assert sorted(i["InstanceId"] for i in group["Instances"]) == originals        # every original node kept
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["kiln.dev/rolled-back-from"] == "2" and tags["kiln.dev/rolled-back-to"] == "1"
    assert again == 1 and rerun["outcome"] == "rolled_back" and "was rolled back" in rerun["reason"]


def test_old_nodes_outlive_their_terminating_pods_through_the_real_adapters(
        launched_versions, brisk, moto_url, kube_server, kubeconfig, capsys):
    """A service with a PodDisruptionBudget (minAvailable 1 of 2) on the old nodes, through the real adapters and
    the API emulator's eviction accounting: each evicted pod stays terminating for its 2 s grace period on its
    node, and no instance is terminated before every pod on its node is gone."""
    from tests._kube_emulator import PDBS, PODS

    fleet = Fleet(moto_url, kube_server, nodes=2)
    old_nodes = dict(fleet.nodes)                       # instance -> node name
    names = iter(range(100))

    def pod(node_name: str) -> None:
        kube_server.put(PODS, "web", {
            "metadata": {"name": f"api-{next(names)}", "labels": {"app": "api"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api",
                                              "uid": "rs", "controller": True}]},
            "spec": {"nodeName": node_name, "terminationGracePeriodSeconds": 2},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})

    for name in old_nodes.values():
        pod(name)
    kube_server.put(PDBS, "web", {"metadata": {"name": "api"},
                                  "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}})
    violations, terminating_seen = [], set()

    def replica_set_and_watch(group: dict) -> None:
        pods = [p for p in kube_server.call(lambda: kube_server._live(PODS, "web"))]
        for p in pods:
            if p["metadata"].get("deletionTimestamp"):
                terminating_seen.add(p["metadata"]["name"])
        live = {i["InstanceId"] for i in group["Instances"]}
        for instance, name in old_nodes.items():
            on_node = [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == name]
            if instance not in live and on_node:
                violations.append((instance, name, on_node))
        # The ReplicaSet: two replicas, a replacement on a schedulable new node once one is terminating.
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        nodes = kube_server.call(lambda: kube_server._live(NODES))
        new = [n["metadata"]["name"] for n in nodes if not n["spec"].get("unschedulable")
               and n["metadata"]["name"] not in old_nodes.values()
               and n["status"]["conditions"][0]["status"] == "True"]
        if len(running) < 2 and new:
            pod(new[0])

    kubelet = Kubelet(fleet, kube_server, boot=1.0, on_tick=replica_set_and_watch)
    kubelet.start()
    try:
        code = replace(["--cluster", fleet.cluster, "--kubeconfig", kubeconfig, "--json", "--poll", "1s"])
    finally:
        kubelet.stopped.set()
        kubelet.join(5)
    assert kubelet.error is None, kubelet.error
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["outcome"] == "completed" and report["old_nodes_remaining"] == 0, report
    assert report["pods_evicted"] == 2 and report["nodes_terminated"] == 2
    assert terminating_seen == {"api-0", "api-1"}       # both evicted pods went through their grace period
    assert violations == []                             # no instance left while a pod on its node still stopped
    evictions = kube_server.requests(lambda r: r.subresource == "eviction")
    assert sorted({r.data["metadata"]["name"] for r in evictions}) == ["api-0", "api-1"]
