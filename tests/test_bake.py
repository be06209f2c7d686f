"""Bake against a moto server over HTTP: EC2, SSM, S3, IAM and Auto Scaling are real calls.

moto's SSM Run Command always reports Success with empty output, so to make a
builder step fail the test rewrites that step's GetCommandInvocation *response*
with a botocore ``after-call`` hook on the client — the send, the
``command_executed`` waiter and the error handling in kiln all run for real.
"""

from __future__ import annotations

import argparse
import datetime
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from automation.bake import cli as bake_cli
from automation.bake.baker import AwsClients, bake
from automation.bake.keep import KilnImage, choose_to_delete, prune
from automation.bake.recipe import TAG_BASE_AMI, TAG_MODEL_VERSION, TAG_RECIPE, BakeInputError, BakeRequest
from automation.bake.ssm import CommandFailed, SsmRunner
from automation.localaws import LocalAws, create_fleet, put_model
from infra.labels import BUILDER_ROLE, TAG_ROLE

K8S = "1.33"
PARAM = f"/aws/service/eks/optimized-ami/{K8S}/amazon-linux-2023/x86_64/standard/recommended/image_id"


@pytest.fixture(scope="module")
def aws():
    with LocalAws() as local:
        yield local


@pytest.fixture(scope="module")
def fleet(aws):
    fleet = create_fleet(aws.session(), cluster="bake", nodes_per_zone=1)
    aws.seed_public_parameter(PARAM, fleet.base_ami)
    return fleet


@pytest.fixture
def world(aws, fleet):
    """Fresh clients (hooks do not leak between tests) and a fresh model per test."""
    import uuid

    tag = uuid.uuid4().hex[:6]
    session = aws.session()
    uri = put_model(session, f"models-{tag}", "llm/v6", {"weights.bin": b"w" * 1024, "config.json": b"{}"})
    clients = AwsClients.create(session=session)
    return {"session": session, "fleet": fleet, "uri": uri, "clients": clients}


def request_for(world, **kw) -> BakeRequest:
    fleet = world["fleet"]
    base = dict(model_version="v6", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                instance_profile=fleet.instance_profile, kubernetes_version=K8S,
                prefetch_images=("123456789012.dkr.ecr.us-east-2.amazonaws.com/trainer:1.4",))
    base.update(kw)
    return BakeRequest(**base)


def runner(world) -> SsmRunner:
    return SsmRunner(world["clients"].ssm, poll_seconds=0.2, wait_for_agent=False)


def builders(ec2, recipe=None):
    filters = [{"Name": "tag-key", "Values": [TAG_RECIPE]}]
    if recipe:
        filters = [{"Name": f"tag:{TAG_RECIPE}", "Values": [recipe]}]
    return [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def test_bake_creates_tagged_ami_from_the_public_eks_ami_and_terminates_the_builder(world):
    clients = world["clients"]
    sent, ingress, groups = [], [], []
    clients.ssm.meta.events.register("before-parameter-build.ssm.SendCommand", lambda params, **_: sent.append(params))
    clients.ec2.meta.events.register("before-call.ec2.AuthorizeSecurityGroupIngress", lambda **_: ingress.append(1))
    clients.ec2.meta.events.register("after-call.ec2.CreateSecurityGroup",
                                     lambda parsed, **_: groups.append(parsed["GroupId"]))
    result = bake(request_for(world), clients, runner=runner(world), waiter_delay=0.2)

    assert not result.reused and result.base_ami == world["fleet"].base_ami
    image = clients.ec2.describe_images(ImageIds=[result.ami_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags[TAG_MODEL_VERSION] == "v6"
    assert tags[TAG_BASE_AMI] == world["fleet"].base_ami
    assert tags[TAG_RECIPE] == result.recipe and len(result.recipe) == 32
    assert image["State"] == "available"
    # Every builder step ran through SSM, in order, with the builder script and its inputs.
    assert [s["step"] for s in result.steps] == ["mount-volume", "copy-model", "verify-model", "prefetch", "record"]
    assert len(sent) == 5 and all(p["DocumentName"] == "AWS-RunShellScript" for p in sent)
    assert [p["Comment"] for p in sent][2] == "kiln bake: verify-model"
    assert "sha256sum --check --strict" in sent[2]["Parameters"]["commands"][1]
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    snap_tags = clients.ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"][0].get("Tags", [])
    assert {"Key": TAG_RECIPE, "Value": result.recipe} in snap_tags
    (instance,) = builders(clients.ec2, result.recipe)
    assert instance["InstanceId"] == result.builder_instance_id
    assert instance["State"]["Name"] == "terminated"
    # The builder's security group never gets an inbound rule and is removed afterwards.
    assert len(groups) == 1 and ingress == []
    remaining = clients.ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": groups}])
    assert remaining["SecurityGroups"] == []


def test_builder_instance_and_its_volume_carry_the_tag_the_rollout_role_requires(world):
    # The rollout role (infra/roles.py) lets the bake stop, image, terminate and SSM only instances
    # tagged TAG_ROLE=BUILDER_ROLE; look at the builder and its volume while they still exist.
    clients = world["clients"]
    volume_tags = []

    def read_volume_tags(parsed, **_):
        instance_id = parsed["Instances"][0]["InstanceId"]
        volumes = clients.ec2.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["Volumes"]
        volume_tags.extend({t["Key"]: t["Value"] for t in v.get("Tags", [])} for v in volumes)

    clients.ec2.meta.events.register("after-call.ec2.RunInstances", read_volume_tags)
    result = bake(request_for(world, model_version="v6-tagged"), clients, runner=runner(world), waiter_delay=0.2)

    (instance,) = builders(clients.ec2, result.recipe)
    assert {"Key": TAG_ROLE, "Value": BUILDER_ROLE} in instance["Tags"]
    tagged = clients.ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_ROLE}", "Values": [BUILDER_ROLE]}])
    assert result.builder_instance_id in [i["InstanceId"] for r in tagged["Reservations"] for i in r["Instances"]]
    assert volume_tags and all(tags.get(TAG_ROLE) == BUILDER_ROLE for tags in volume_tags)
    assert all(tags.get(TAG_RECIPE) == result.recipe for tags in volume_tags)


def test_step_commands_carry_the_script_and_inputs(world):
    from automation.bake.baker import step_commands

    cmds = step_commands("verify-model", request_for(world), "us-east-2")
    assert "sha256sum --check --strict" in cmds[1]
    assert cmds[-1].endswith("bash /tmp/kiln-builder.sh verify-model")
    assert "KILN_MODEL_VERSION=v6" in cmds[-1] and world["uri"] in cmds[-1]


def test_prefetch_also_bakes_the_images_every_node_runs_before_its_first_job(world):
    """A fresh node must warm its model without a registry pull: the warm-up images are baked too."""
    import shlex

    from automation.bake.baker import step_commands
    from infra.images import NODE_SYSTEM_IMAGES

    request = request_for(world)
    [env] = [tok for tok in shlex.split(step_commands("prefetch", request, "us-east-2")[-1]) if tok.startswith("KILN_IMAGES=")]
    pulled = env.split("=", 1)[1].split()
    assert pulled[0] == request.prefetch_images[0]
    assert set(NODE_SYSTEM_IMAGES) <= set(pulled) and len(pulled) == len(set(pulled))
    # ... and they are part of the recipe: a new warm-up image means a new AMI, not a reused one.
    from automation.bake.recipe import recipe_for
    assert set(NODE_SYSTEM_IMAGES) <= set(recipe_for(request, "ami-0123456789abcdef0", b"m").prefetch_images)


def test_failing_command_shows_its_output_and_terminates_the_builder(world):
    clients = world["clients"]
    commands: dict[str, str] = {}

    def remember(parsed, **_):
        commands[parsed["Command"]["CommandId"]] = parsed["Command"]["Comment"]

    def fail_verify(parsed, **_):
        if commands.get(parsed.get("CommandId")) == "kiln bake: verify-model":
            parsed.update(Status="Failed", StatusDetails="Failed", ResponseCode=1,
                          StandardOutputContent="kiln-bake[verify-model]: verifying 2 files against MANIFEST.sha256\n",
                          StandardErrorContent="weights.bin: FAILED\nsha256sum: WARNING: 1 computed checksum did NOT match\n")

    clients.ssm.meta.events.register("after-call.ssm.SendCommand", remember)
    clients.ssm.meta.events.register("after-call.ssm.GetCommandInvocation", fail_verify)
    with pytest.raises(CommandFailed) as info:
        bake(request_for(world, model_version="v7"), clients, runner=runner(world), waiter_delay=0.2)
    message = str(info.value)
    assert "'verify-model' failed" in message and "exit code 1" in message
    assert "verifying 2 files" in message  # stdout
    assert "weights.bin: FAILED" in message  # stderr
    (instance,) = [i for i in builders(clients.ec2) if any(
        t["Key"] == TAG_MODEL_VERSION and t["Value"] == "v7" for t in i.get("Tags", []))]
    assert instance["State"]["Name"] == "terminated"
    assert clients.ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{TAG_MODEL_VERSION}", "Values": ["v7"]}])["Images"] == []


def test_same_recipe_is_reused_without_a_second_builder(world):
    clients = world["clients"]
    first = bake(request_for(world, model_version="v8"), clients, runner=runner(world), waiter_delay=0.2)
    launches = []
    clients.ec2.meta.events.register("before-call.ec2.RunInstances", lambda **_: launches.append(1))
    again = bake(request_for(world, model_version="v8"), clients, runner=runner(world), waiter_delay=0.2)
    assert again.reused and again.ami_id == first.ami_id and again.recipe == first.recipe
    assert launches == []
    # Any input change is a new recipe: here, one more prefetch image.
    other = request_for(world, model_version="v8", prefetch_images=("public.ecr.aws/x/y:1", "public.ecr.aws/x/z:2"))
    changed = bake(other, clients, runner=runner(world), waiter_delay=0.2)
    assert not changed.reused and changed.recipe != first.recipe and launches == [1]


def test_new_manifest_under_the_same_uri_changes_the_recipe(world):
    clients = world["clients"]
    first = bake(request_for(world, model_version="v9"), clients, runner=runner(world), waiter_delay=0.2)
    bucket = world["uri"].split("/")[2]
    put_model(world["session"], bucket, "llm/v6", {"weights.bin": b"new bytes", "config.json": b"{}"})
    second = bake(request_for(world, model_version="v9"), clients, runner=runner(world), waiter_delay=0.2)
    assert second.recipe != first.recipe and not second.reused


def test_keep_never_deregisters_an_ami_a_launch_template_version_in_use_references(aws):
    session = aws.session("eu-west-1")  # its own region: only this test's images
    fleet = create_fleet(session, cluster="keep", nodes_per_zone=1)
    param = f"/aws/service/eks/optimized-ami/{K8S}/amazon-linux-2023/x86_64/standard/recommended/image_id"
    local = LocalAws.__new__(LocalAws)
    local.region = "eu-west-1"
    local.seed_public_parameter(param, fleet.base_ami)
    uri = put_model(session, "keep-models", "m", {"a": b"a"})
    clients = AwsClients.create(session=session)
    ssm_runner = SsmRunner(clients.ssm, poll_seconds=0.2, wait_for_agent=False)
    amis = [bake(BakeRequest(model_version=f"v{i}", model_uri=uri, subnet_id=fleet.subnet_ids[0],
                             instance_profile=fleet.instance_profile, kubernetes_version=K8S),
                 clients, runner=ssm_runner, waiter_delay=0.2).ami_id for i in range(3)]
    # moto stamps CreationDate to the second; give the four images distinct ages in the server.
    from moto.ec2.models import ec2_backends

    for i, ami in enumerate(amis):
        ec2_backends["123456789012"]["eu-west-1"].amis[ami].creation_date = datetime.datetime(2026, 1, i + 1)
    # The oldest kiln AMI is still what the ASGs boot: a launch-template version in use.
    ec2 = clients.ec2
    v2 = ec2.create_launch_template_version(LaunchTemplateId=fleet.launch_template_id, SourceVersion="1",
                                            LaunchTemplateData={"ImageId": amis[0]})["LaunchTemplateVersion"]
    for name in fleet.asgs:
        clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={
            "LaunchTemplateId": fleet.launch_template_id, "Version": str(v2["VersionNumber"])})
    # A newer version (the $Latest/$Default) boots the newest image.
    ec2.create_launch_template_version(LaunchTemplateId=fleet.launch_template_id, SourceVersion="1",
                                       LaunchTemplateData={"ImageId": amis[2]})
    snaps = {a: [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[a])["Images"][0]["BlockDeviceMappings"]]
             for a in amis}

    deleted = prune(ec2, clients.autoscaling, keep=1)

    assert deleted == [amis[1]]
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert amis[0] in left and amis[2] in left and amis[1] not in left
    live_snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snaps[amis[1]]) & live_snaps
    assert set(snaps[amis[0]]) <= live_snaps and set(snaps[amis[2]]) <= live_snaps


def test_share_and_copy_to_another_region(world):
    clients = world["clients"]
    result = bake(request_for(world, model_version="v11", share_with_accounts=("210987654321",),
                              copy_to_regions=("eu-central-1",)), clients, runner=runner(world), waiter_delay=0.2)
    perms = clients.ec2.describe_image_attribute(ImageId=result.ami_id, Attribute="launchPermission")
    assert {"UserId": "210987654321"} in perms["LaunchPermissions"]
    copy = result.copies["eu-central-1"]
    remote = world["session"].client("ec2", region_name="eu-central-1").describe_images(ImageIds=[copy])["Images"][0]
    assert {t["Key"]: t["Value"] for t in remote["Tags"]}[TAG_RECIPE] == result.recipe


def test_bad_input_names_the_flag(world):
    with pytest.raises(BakeInputError, match="--model-uri"):
        request_for(world, model_uri="https://example.com/model")
    with pytest.raises(BakeInputError, match="--base-ami"):
        request_for(world, base_ami="ami-nope")


def test_missing_manifest_is_bad_input(world):
    with pytest.raises(BakeInputError, match="MANIFEST.sha256"):
        bake(request_for(world, model_uri=world["uri"] + "missing/"), world["clients"], runner=runner(world))


def _cli_args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bake_cli.configure(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return parser.parse_args(argv)


def test_cli_bakes_with_json_output_and_exit_codes(world, capsys):
    fleet = world["fleet"]
    args = _cli_args(model_version="v10", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                     instance_profile=fleet.instance_profile, kubernetes_version=K8S, no_agent_wait=True, json=True)
    assert bake_cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["amiId"].startswith("ami-") and out["modelVersion"] == "v10" and out["reused"] is False
    bad = _cli_args(model_version="V10!", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                    instance_profile=fleet.instance_profile)
    assert bake_cli.main(bad) == 2
    assert "--model-version" in capsys.readouterr().err


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=12, unique_by=lambda t: t[0]),
       st.integers(1, 5))
def test_choose_to_delete_keeps_the_newest_and_everything_in_use(ages, keep):
    images = [KilnImage(f"ami-{age:08x}", f"2026-01-01T00:00:{age:02d}.000Z", ()) for age, _ in ages]
    in_use = {f"ami-{age:08x}" for age, used in ages if used}
    doomed = {i.ami_id for i in choose_to_delete(images, keep, in_use)}
    newest = {i.ami_id for i in sorted(images, key=lambda i: i.created, reverse=True)[:keep]}
    assert not doomed & in_use and not doomed & newest
    assert doomed | in_use | newest == {i.ami_id for i in images}


def _builder(step: str, tmp_path, **env):
    import os
    import subprocess

    from automation.bake.recipe import builder_script

    script = tmp_path / "builder.sh"
    script.write_text(builder_script())
    base = {"PATH": os.environ["PATH"], "KILN_MODEL_PATH": str(tmp_path / "models"), "KILN_MODEL_VERSION": "v6",
            "KILN_MODEL_URI": "s3://m/v6/", "KILN_MODEL_DEVICE": "/dev/xvdb", "KILN_IMAGES": "", "KILN_REGION": "us-east-2",
            "KILN_ETC_DIR": str(tmp_path / "etc")}
    return subprocess.run(["bash", str(script), step], env={**base, **env}, capture_output=True, text=True, timeout=30)


def test_builder_script_verifies_the_model_against_its_manifest(tmp_path):
    import hashlib

    model = tmp_path / "models" / "v6"
    model.mkdir(parents=True)
    files = {"weights.bin": b"w" * 4096, "config.json": b"{}"}
    for name, data in files.items():
        (model / name).write_bytes(data)
    (model / "MANIFEST.sha256").write_text(
        "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    ok = _builder("verify-model", tmp_path)
    assert ok.returncode == 0 and "model verified" in ok.stdout

    (model / "weights.bin").write_bytes(b"corrupted")
    bad = _builder("verify-model", tmp_path)
    assert bad.returncode != 0 and "weights.bin: FAILED" in bad.stdout + bad.stderr


def test_builder_script_records_the_model_version_and_skips_an_empty_prefetch(tmp_path):
    (tmp_path / "models" / "v6").mkdir(parents=True)
    assert _builder("prefetch", tmp_path).returncode == 0
    done = _builder("record", tmp_path)
    assert done.returncode == 0
    assert (tmp_path / "etc" / "model-version").read_text().strip() == "v6"
    assert (tmp_path / "models" / "current").resolve() == (tmp_path / "models" / "v6").resolve()
    assert _builder("no-such-step", tmp_path).returncode == 2
