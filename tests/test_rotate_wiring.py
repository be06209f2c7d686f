"""``python -m automation rotate`` end to end through the real replacement wiring.

``automation/rotate/wiring.py`` as the CLI builds it — ``real_world`` and ``make_replace``: the stack's
outputs → its ``kubeconfig`` → the real ``AwsCloud`` (boto3 against the moto server over HTTP) and
``KubeCluster`` (the official client against the kmock API emulator) — with the intent in a ConfigMap and the
model volumes in the emulator, the AMI found in moto by its tags, and the CLI's own report.

Only the Pulumi stack is a stand-in (the Pulumi CLI cannot run here): ``WiredStack``, the strict fake of
``tests/_fake_stack.py``, whose outputs are what ``__main__.py`` exports (``clusterName``, ``kubeconfig``,
``nodeGroups``, ``nodeAmi``, ``modelVersion``) and whose ``up`` does to moto what the program's ``up`` does to
AWS: a new launch-template version with the new AMI, the Auto Scaling group pointed at it. A thread acts as
the kubelet (tests/test_replace_end_to_end.py).
"""

from __future__ import annotations

import json
import uuid

import boto3
import kmock
import pytest

from automation.bake.recipe import TAG_FAMILY, TAG_MODEL_VERSION
from automation.cli import main as automation_main
from automation.gate import claim_name, volume_name
from automation.rollout.model import TAG_CLUSTER, TAG_NODE_GROUP
from automation.rotate import cli as rotate_cli
from tests._aws_env import use_dummy_aws_credentials
from tests._fake_stack import NAMESPACE, FakeStack
from tests._kube_objects import KubeObjects
from _program_helpers import BASE
from tests.test_replace_end_to_end import REGION, Fleet, Kubelet, launched_versions  # noqa: F401 (a fixture)


@pytest.fixture(autouse=True)
def env(monkeypatch, moto_url, kube_server):
    use_dummy_aws_credentials(monkeypatch, "AWS_DEFAULT_REGION", "AWS_REGION", "KUBECONFIG")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_REGION", REGION)
    kube_server.reset()
    from automation.rollout import runner
    # The real clock, brisk: the runner's pauses shortened and a 1 s poll (rotate has no --poll flag).
    monkeypatch.setattr(runner, "SETTLE_SECONDS", 1.0)
    monkeypatch.setattr(runner, "MIN_RECONCILE_SECONDS", 1.0)
    flags = rotate_cli.rollout_options
    monkeypatch.setattr(rotate_cli, "rollout_options", lambda args: {**flags(args), "poll_seconds": 1.0})


class MotoFleet(Fleet):
    """One Auto Scaling group of three nodes on ``old_ami`` (launch-template version 1), tagged for the cluster."""

    def __init__(self, moto_url: str, kube, old_ami: str):
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=REGION)
        self.ec2 = session.client("ec2", endpoint_url=moto_url)
        self.asg = session.client("autoscaling", endpoint_url=moto_url)
        self.kube = kube
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                                        AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
        n = uuid.uuid4().hex[:8]
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName=f"kiln-{n}", LaunchTemplateData={"ImageId": old_ami})["LaunchTemplate"][
            "LaunchTemplateId"]
        self.cluster, self.group = f"kiln-{n}", f"kiln-{n}-cpu-a"
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.group, MinSize=0, MaxSize=6, DesiredCapacity=3, VPCZoneIdentifier=subnet,
            LaunchTemplate={"LaunchTemplateId": self.template, "Version": "1"},
            Tags=[{"Key": TAG_CLUSTER, "Value": self.cluster, "PropagateAtLaunch": True},
                  {"Key": TAG_NODE_GROUP, "Value": "cpu", "PropagateAtLaunch": True}])
        self.nodes: dict[str, str] = {}
        for instance in self.describe()["Instances"]:
            self.register(instance["InstanceId"], "1")


class WiredStack(FakeStack):
    """The fake stack of one group ``cpu`` in zone a, its outputs those of ``__main__.py`` for this cluster, and
    its ``up`` applied to the moto fleet."""

    def __init__(self, tmp_path, fleet: MotoFleet, kube, old_ami: str):
        super().__init__(tmp_path, ami=old_ami, groups={"cpu": ("standard", ["a"], 3)},
                         objects=KubeObjects(kube.api_client()))
        self.fleet, self.kube = fleet, kube
        self.config.update({k: v for k, v in BASE.items() if k not in self.config or k == "kiln:nodeGroups"})
        self.config["kiln:clusterName"] = fleet.cluster
        self.config["kiln:availabilityZones"] = [f"{REGION}a", f"{REGION}b"]
        for name in (volume_name("v5"), f"{NAMESPACE}/{claim_name('v5')}"):
            self.objects.create(name, adopt=False)                  # what the deployed model v5 created

    def up(self, **kw) -> dict:
        before = len(self.lt_versions["cpu"])
        outputs = super().up(**kw)
        if len(self.lt_versions["cpu"]) > before:     # the program's up: a new template version, the group on it
            ami, _ = self.lt_versions["cpu"][-1]
            version = self.fleet.ec2.create_launch_template_version(
                LaunchTemplateId=self.fleet.template, LaunchTemplateData={"ImageId": ami})["LaunchTemplateVersion"]
            self.fleet.set_version(str(version["VersionNumber"]))
        return self.outputs()

    def outputs(self) -> dict:
        out = super().outputs()
        out["clusterName"] = self.fleet.cluster
        out["nodeGroups"] = {"cpu": [{"zone": f"{REGION}a", "asgName": self.fleet.group,
                                      "launchTemplateId": self.fleet.template}]}
        out["kubeconfig"] = json.dumps({     # the program exports it as JSON (a secret), as EKS writes it
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.kube.url}}],
            "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}]})
        return out


def image(ec2, model: str) -> str:
    """An available AMI baked for ``model`` (family standard), as the bake tags it."""
    ami = ec2.register_image(Name=f"kiln-{model}-{uuid.uuid4().hex[:6]}", RootDeviceName="/dev/xvda",
                             BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20}}])["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[{"Key": TAG_MODEL_VERSION, "Value": model},
                                           {"Key": TAG_FAMILY, "Value": "standard"}])
    return ami


@pytest.fixture
def world(moto_url, kube_server, tmp_path, monkeypatch, launched_versions):  # noqa: F811
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    old_ami, new_ami = image(ec2, "v5"), image(ec2, "v6")
    fleet = MotoFleet(moto_url, kube_server, old_ami)
    stack = WiredStack(tmp_path, fleet, kube_server, old_ami)
    monkeypatch.setattr("automation.stack.open_stack", lambda name, work_dir=None, **kw: stack)
    return fleet, stack, old_ami, new_ami


def rotate(argv: list[str]) -> int:
    try:
        return automation_main(["rotate", "--stack", "prod", "--model-version", "v6", "--yes", *argv])
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_rotate_replaces_every_node_through_the_real_wiring_and_reports_done(world, kube_server, capsys):
    fleet, stack, old_ami, new_ami = world
    originals = set(fleet.nodes)
    kubelet = Kubelet(fleet, kube_server, boot=1.0)
    kubelet.start()
    try:
        code = rotate([])
    finally:
        kubelet.stopped.set()
        kubelet.join(5)
    assert kubelet.error is None, kubelet.error
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    # The CLI's success report, as an operator reads it.
    assert f"rotate done: rotate of prod to model v6 ({new_ami}) done" in err
    assert "  nodes: 3 old -> 0 remaining, 3 terminated, 0 pods evicted, 0 Jobs force-evicted after the deadline, " \
           "makespan " in err
    group = fleet.describe()
    assert group["LaunchTemplate"]["Version"] == "2" and group["DesiredCapacity"] == 3 and group["MaxSize"] == 6
    assert sorted(i["LaunchTemplate"]["Version"] for i in group["Instances"]) == ["2", "2", "2"]
    assert not originals & {i["InstanceId"] for i in group["Instances"]}       # every node replaced
    assert stack.config["kiln:nodeAmi"] == new_ami and stack.config["kiln:modelVersion"] == "v6"
    assert [u["refresh"] for u in stack.ups] == [False]        # the gated up; the converge found nothing to apply
    intent = kube_server.get(kmock.resource("v1/configmaps"), "kube-system", "kiln-rotation-prod")
    assert set(intent["data"]) == {"last"}                     # nothing in flight; `rollback` knows where to go
    assert json.loads(intent["data"]["last"])["previous_ami"] == old_ami
    assert stack.objects.exists(volume_name("v6")) and stack.objects.exists(volume_name("v5"))   # v5 retained


def test_rotate_to_a_bad_ami_through_the_real_wiring_rolls_back_restores_the_stack_and_keeps_every_node(
        world, kube_server, capsys):
    fleet, stack, old_ami, new_ami = world
    originals = sorted(fleet.nodes)
    kubelet = Kubelet(fleet, kube_server, boot=1.0, bad_version="2")       # new nodes never turn Ready
    kubelet.start()
    try:
        code = rotate(["--json", "--ready-timeout", "6s", "--boot-timeout", "6s"])
    finally:
        kubelet.stopped.set()
        kubelet.join(5)
    assert kubelet.error is None, kubelet.error
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert code == 1 and report["exit_code"] == 1, out.err[-3000:]
    assert report["outcome"] == "rolled_back" and report["rollout"]["outcome"] == "rolled_back"
    assert "not Ready" in report["rollout"]["reason"]
    assert report["restore"]["config"] == "restored"
    group = fleet.describe()
    assert sorted(i["InstanceId"] for i in group["Instances"]) == originals      # every original node kept
    assert group["DesiredCapacity"] == 3 and group["MaxSize"] == 6
    assert stack.config["kiln:nodeAmi"] == old_ami and stack.config["kiln:modelVersion"] == "v5"
    assert stack.deployed["amis"] == {"standard": old_ami} and stack.deployed["model"] == "v5"   # restored by an up
