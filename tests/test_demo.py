"""``make demo`` end to end (moto server over HTTP, simulated cluster), and the stand-in stack against moto."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from automation.demo import gate_row, print_summary, run_demo
from automation.gate import EventRecorder, Expected
from automation.rotate.pipeline import STEPS
from automation.localaws import LocalAws, create_fleet
from automation.stack import StandInStack, open_stack


def test_demo_rotates_the_fleet_and_draws_the_timeline(tmp_path):
    buffer = io.StringIO()
    summary = run_demo(tmp_path, nodes_per_zone=2, console=Console(file=buffer, width=120), live=False)
    text = buffer.getvalue()

    assert summary["exitCode"] == 0 and summary["outcome"] == "done", summary["message"]
    assert summary["steps"] == list(STEPS)
    new_ami = summary["newAmi"]   # the GPU fleet boots the nvidia entry of the family map
    assert new_ami != summary["previousAmi"] and summary["newAmis"]["nvidia"] == new_ami
    assert set(summary["newAmis"]) == {"standard", "nvidia"} and summary["newAmis"]["standard"] != new_ami
    assert summary["amiTags"]["kiln:model-version"] == "v6" and summary["amiTags"]["kiln:ami-family"] == "nvidia"
    assert summary["amiTags"]["kiln:base-ami"] == summary["previousAmi"]
    assert summary["gate"]["allowed"] and gate_row(summary["gate"]).startswith("allowed: update kiln-demo-gpu")
    assert "update kiln-demo-system" in gate_row(summary["gate"])    # the system group boots the standard AMI
    # Every simulated old node was replaced (2 GPU and 1 system node per zone), and each moto group now boots
    # only the new AMI of its family.
    rollout = summary["rollout"]
    assert rollout["outcome"] == "completed" and rollout["nodes_terminated"] == 6 and rollout["old_nodes_remaining"] == 0
    assert rollout["jobs_force_evicted"] == 1   # the one Job that outlives the deadline
    standard = summary["newAmis"]["standard"]
    assert summary["moto_instances_by_image"] == {
        "kiln-demo-gpu-us-east-2a": {new_ami: 2}, "kiln-demo-gpu-us-east-2b": {new_ami: 2},
        "kiln-demo-system-us-east-2a": {standard: 1}, "kiln-demo-system-us-east-2b": {standard: 1}}
    assert summary["converged"]
    # It says what is simulated and that the stack ran through the stand-in.
    assert "SIMULATED" in text and "STAND-IN" in text
    png = tmp_path / "rotation-timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert json.loads((tmp_path / "rotation-report.json").read_text())["newAmi"] == new_ami
    assert summary["wall_seconds"] < 60


@pytest.fixture(scope="module")
def aws():
    with LocalAws() as local:
        yield local


@pytest.fixture
def stand_in(tmp_path, aws):
    import uuid

    import yaml

    cluster = f"si-{uuid.uuid4().hex[:6]}"
    session = aws.session()
    fleet = create_fleet(session, cluster, nodes_per_zone=1)
    (tmp_path / "Pulumi.s.yaml").write_text(yaml.safe_dump({"config": {
        "kiln:clusterName": cluster, "kiln:nodeAmi": fleet.base_ami, "kiln:modelVersion": "v5"}}))
    return StandInStack("s", tmp_path, session=session), fleet, session


def test_open_stack_uses_the_stand_in_without_the_pulumi_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi on PATH
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    stack = open_stack("s", tmp_path)
    assert stack.kind == "stand-in" and "STAND-IN" in stack.notice


def test_stand_in_applies_the_launch_template_change(stand_in):
    stack, fleet, session = stand_in
    ec2, asg = session.client("ec2"), session.client("autoscaling")
    new_ami = ec2.copy_image(SourceImageId=fleet.base_ami, SourceRegion=session.region_name, Name="new-ami")["ImageId"]
    stack.set_config({"kiln:nodeAmi": new_ami, "kiln:modelVersion": "v6"})
    assert stack.get_config("kiln:nodeAmi") == new_ami

    expected = Expected(to_model="v6", to_amis=frozenset({new_ami}), from_model="v5")
    before = EventRecorder()
    stack.preview(before)
    result = before.result(expected)
    assert result.allowed, result.render()
    assert result.summary == {"update": 3}
    assert sorted((c.op, c.type) for c in result.changes) == [
        ("update", "aws:autoscaling/group:Group"), ("update", "aws:autoscaling/group:Group"),
        ("update", "aws:ec2/launchTemplate:LaunchTemplate")]

    created = []
    stand_in_ec2 = stack.ec2
    stand_in_ec2.meta.events.register("before-call.ec2.CreateLaunchTemplateVersion",
                                      lambda params, **_: created.append(params))
    outputs = stack.up()
    latest = ec2.describe_launch_template_versions(LaunchTemplateId=fleet.launch_template_id,
                                                   Versions=["$Latest"])["LaunchTemplateVersions"][0]
    assert latest["VersionNumber"] == 2 and latest["LaunchTemplateData"]["ImageId"] == new_ami
    # The new version is made from the previous one, so AWS keeps everything else in the template
    # (moto does not copy the source version's data; the request is what kiln controls).
    (request,) = created
    assert request["body"]["SourceVersion"] == "1" and request["body"]["LaunchTemplateData.ImageId"] == new_ami
    for g in asg.describe_auto_scaling_groups(AutoScalingGroupNames=fleet.asgs)["AutoScalingGroups"]:
        assert g["LaunchTemplate"]["Version"] == "2"
    assert outputs["nodeGroups"]["gpu"][0]["launchTemplateId"] == fleet.launch_template_id
    assert outputs["privateSubnetIds"] == fleet.subnet_ids and outputs["nodeInstanceProfile"] == fleet.instance_profile

    after = EventRecorder()
    stack.preview(after)
    assert not after.result(expected).has_changes and after.result(expected).allowed       # converged
    stack.up()                                  # idempotent: no third version
    assert ec2.describe_launch_template_versions(LaunchTemplateId=fleet.launch_template_id,
                                                 Versions=["$Latest"])["LaunchTemplateVersions"][0]["VersionNumber"] == 2


def test_rotate_without_model_uri_reuses_the_newest_ami_of_that_model_and_family(stand_in):
    from automation.rotate.pipeline import BadInput, RotationIntent
    from automation.rotate.wiring import make_bake
    from automation.stack import kiln_config

    stack, fleet, session = stand_in
    ec2 = session.client("ec2")

    def baked(name, tags):
        ami = ec2.copy_image(SourceImageId=fleet.base_ami, SourceRegion=session.region_name, Name=name)["ImageId"]
        ec2.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        return ami

    standard = baked("kiln-v6-std", {"kiln:model-version": "v6", "kiln:ami-family": "standard"})
    nvidia = baked("kiln-v6-gpu", {"kiln:model-version": "v6", "kiln:ami-family": "nvidia"})
    untagged = baked("kiln-v6-old", {"kiln:model-version": "v6"})     # baked before family tags, and newer
    cfg = kiln_config({"kiln:clusterName": "c", "kiln:kubernetesVersion": "1.33",
                       "kiln:availabilityZones": '["us-east-2a", "us-east-2b"]',
                       "kiln:nodeAmi": json.dumps({"standard": fleet.base_ami, "nvidia": fleet.base_ami}),
                       "kiln:modelVersion": "v5",
                       "kiln:nodeGroups": json.dumps([
                           {"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2,
                            "desiredSize": 1},
                           {"name": "g", "instanceTypes": ["g5.xlarge"], "minSize": 0, "maxSize": 1, "desiredSize": 0,
                            "gpu": True}])})
    bake_step = make_bake(stack, cfg, session, lambda m: None)
    intent = RotationIntent("rotate", "s", "v6", None, fleet.base_ami, "v5")
    assert bake_step(intent, "standard", None) == standard
    assert bake_step(intent, "nvidia", None) == nvidia
    assert untagged not in (standard, nvidia)
    with pytest.raises(BadInput, match="--model-uri is required"):
        bake_step(RotationIntent("rotate", "s", "v7", None, fleet.base_ami, "v5"), "standard", None)


def test_the_demo_gate_row_shows_the_real_verdict():
    allowed = {"allowed": True, "problems": [], "changes": [{"op": "update", "name": "lt", "allowed": True}]}
    blocked = {"allowed": False, "problems": ["the engine counts 1 replace step(s), the gate saw 0: an event was lost"],
               "changes": [{"op": "replace", "name": "kiln-cluster", "allowed": False}]}
    assert gate_row(allowed) == "allowed: update lt"
    row = gate_row(blocked)
    assert row.startswith("BLOCKED: replace kiln-cluster (BLOCKED)") and "an event was lost" in row
    assert gate_row(None) == "not reached"
    buffer = io.StringIO()
    print_summary({"outcome": "blocked", "exitCode": 1, "previousAmi": "a", "newAmi": "b", "amiTags": {},
                   "gate": blocked, "rollout": None, "converged": False, "moto_instances_by_image": {},
                   "timeline": None, "wall_seconds": 1}, Console(file=buffer, width=200))
    assert "BLOCKED: replace kiln-cluster" in buffer.getvalue() and "allowed" not in buffer.getvalue()
