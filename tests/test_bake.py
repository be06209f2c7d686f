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
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from automation.bake import cli as bake_cli
from automation.bake.baker import (IMAGE_EXPANSION, ROOT_HEADROOM_GIB, SYSTEM_IMAGE_GIB, TAG_CREATED_AT, UNKNOWN_IMAGE_GIB,
                                   AwsClients, BakeShareError, bake, customer_key_arn, root_size, sweep_builders)
from automation.bake.keep import KilnImage, choose_to_delete, prune
from automation.bake.recipe import (TAG_BASE_AMI, TAG_FAMILY, TAG_MODEL_VERSION, TAG_RECIPE, BakeInputError,
                                    BakeRequest)
from automation.bake.ssm import CommandFailed, SsmRunner
from automation.localaws import LocalAws, create_fleet, put_model
from infra.images import NODE_SYSTEM_IMAGES
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


def _dated_amis(session, region, n, uri, fleet):
    """``n`` baked AMIs with distinct ages in the server (moto stamps CreationDate to the second)."""
    from moto.ec2.models import ec2_backends

    clients = AwsClients.create(session=session)
    ssm_runner = SsmRunner(clients.ssm, poll_seconds=0.2, wait_for_agent=False)
    amis = [bake(BakeRequest(model_version=f"v{i}", model_uri=uri, subnet_id=fleet.subnet_ids[0],
                             instance_profile=fleet.instance_profile, kubernetes_version=K8S),
                 clients, runner=ssm_runner, waiter_delay=0.2).ami_id for i in range(n)]
    for i, ami in enumerate(amis):
        ec2_backends["123456789012"][region].amis[ami].creation_date = datetime.datetime(2026, 1, i + 1)
    return clients, amis


def test_keep_never_deregisters_an_ami_in_use_a_rollback_target_or_a_shared_one(aws):
    session = aws.session("eu-west-1")  # its own region: only this test's images
    fleet = create_fleet(session, cluster="keep", nodes_per_zone=1)
    local = LocalAws.__new__(LocalAws)
    local.region = "eu-west-1"
    local.seed_public_parameter(PARAM, fleet.base_ami)
    uri = put_model(session, "keep-models", "m", {"a": b"a"})
    clients, amis = _dated_amis(session, "eu-west-1", 5, uri, fleet)
    ec2 = clients.ec2
    # The launch template's history: v2 boots amis[0] (what a rollback goes back to), v3 boots amis[1] and the
    # ASGs point at it (in use).
    for ami in (amis[0], amis[1]):
        version = ec2.create_launch_template_version(LaunchTemplateId=fleet.launch_template_id, SourceVersion="1",
                                                     LaunchTemplateData={"ImageId": ami})["LaunchTemplateVersion"]
    for name in fleet.asgs:
        clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={
            "LaunchTemplateId": fleet.launch_template_id, "Version": str(version["VersionNumber"])})
    # amis[2] is shared with another account: deregistering it would break their launches.
    ec2.modify_image_attribute(ImageId=amis[2], LaunchPermission={"Add": [{"UserId": "210987654321"}]})
    snaps = {a: [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[a])["Images"][0]["BlockDeviceMappings"]]
             for a in amis}

    deleted = prune(ec2, clients.autoscaling, keep=1)

    assert deleted == [amis[3]]          # amis[4] is the newest kept; 0, 1 and 2 are needed
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert {amis[0], amis[1], amis[2], amis[4]} <= left and amis[3] not in left
    live_snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snaps[amis[3]]) & live_snaps and set(snaps[amis[0]]) <= live_snaps


def test_keep_protects_what_rollback_goes_back_to_after_a_restore_and_amis_a_running_rotation_baked(aws):
    region = "eu-north-1"      # its own region: only this test's images
    session = aws.session(region)
    fleet = create_fleet(session, cluster="keep-restore", nodes_per_zone=1)
    local = LocalAws.__new__(LocalAws)
    local.region = region
    local.seed_public_parameter(PARAM, fleet.base_ami)
    uri = put_model(session, "keep-restore-models", "m", {"a": b"a"})
    clients, (z, a, b, spare, newest) = _dated_amis(session, region, 5, uri, fleet)
    ec2 = clients.ec2
    # Z was rotated to A (done: `rollback` goes back to Z), A to B failed and was restored: Z, A, B, A.
    for ami in (z, a, b, a):
        version = ec2.create_launch_template_version(LaunchTemplateId=fleet.launch_template_id, SourceVersion="1",
                                                     LaunchTemplateData={"ImageId": ami})["LaunchTemplateVersion"]
    for name in fleet.asgs:
        clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName=name, LaunchTemplate={
            "LaunchTemplateId": fleet.launch_template_id, "Version": str(version["VersionNumber"])})
    # Two bakes of the last minutes: `newest` (a rotation's target, not yet on a launch template: no `up` yet)
    # and `spare`, a minute later, which `--keep 1` keeps as the newest.
    from moto.ec2.models import ec2_backends

    now = datetime.datetime.now(datetime.timezone.utc)
    ec2_backends["123456789012"][region].amis[newest].creation_date = now - datetime.timedelta(minutes=1)
    ec2_backends["123456789012"][region].amis[spare].creation_date = now
    assert prune(ec2, clients.autoscaling, keep=1, min_age_seconds=6 * 3600) == []
    assert prune(ec2, clients.autoscaling, keep=1) == [newest]
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert {z, a, b, spare} <= left


def test_keep_never_deregisters_an_ami_a_live_instance_booted_until_the_instance_is_gone(aws):
    """An instance running an AMI that no launch-template version names any more (launched by hand, or from a
    version since deleted) keeps its AMI: deregistering it would leave the instance unable to be replaced like
    for like, and its volumes' snapshots are what it was built from."""
    region = "ap-southeast-2"     # its own region: only this test's images
    session = aws.session(region)
    fleet = create_fleet(session, cluster="keep-live", nodes_per_zone=1)
    local = LocalAws.__new__(LocalAws)
    local.region = region
    local.seed_public_parameter(PARAM, fleet.base_ami)
    uri = put_model(session, "keep-live-models", "m", {"a": b"a"})
    clients, (old, booted, newest) = _dated_amis(session, region, 3, uri, fleet)
    ec2 = clients.ec2
    instance = ec2.run_instances(ImageId=booted, MinCount=1, MaxCount=1, SubnetId=fleet.subnet_ids[0])[
        "Instances"][0]["InstanceId"]

    assert prune(ec2, clients.autoscaling, keep=1) == [old]         # `booted` is older than the kept one, in use
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert {booted, newest} <= left and old not in left

    ec2.terminate_instances(InstanceIds=[instance])
    assert prune(ec2, clients.autoscaling, keep=1) == [booted]      # nothing boots it any more


def test_copy_to_another_region(world):
    clients = world["clients"]
    result = bake(request_for(world, model_version="v11", copy_to_regions=("eu-central-1",)), clients,
                  runner=runner(world), waiter_delay=0.2)
    copy = result.copies["eu-central-1"]
    remote = world["session"].client("ec2", region_name="eu-central-1").describe_images(ImageIds=[copy])["Images"][0]
    assert {t["Key"]: t["Value"] for t in remote["Tags"]}[TAG_RECIPE] == result.recipe


# ---- family tags, root size, KMS and sharing, sweeping ----------------------------------------------------


def _capture(client, operation):
    calls = []
    client.meta.events.register(f"before-parameter-build.{client.meta.service_model.service_name}.{operation}",
                                lambda params, **_: calls.append(params))
    return calls


def test_baked_amis_carry_their_family_and_the_root_is_sized_from_the_images(world):
    clients = world["clients"]
    ecr = world["session"].client("ecr")
    repo = f"trainer-{world['uri'].split('/')[2][-6:]}"
    ecr.create_repository(repositoryName=repo)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7 * 1024 ** 3,
                           "digest": "sha256:" + "c" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                            "digest": "sha256:" + "d" * 64}]}
    ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag="1.0")
    known = f"123456789012.dkr.ecr.us-east-2.amazonaws.com/{repo}:1.0"
    reported = ecr.describe_images(repositoryName=repo)["imageDetails"][0]["imageSizeInBytes"]
    launches = _capture(clients.ec2, "RunInstances")
    result = bake(request_for(world, model_version="v12", ami_family="nvidia", base_ami=world["fleet"].base_ami,
                              prefetch_images=(known, "docker.io/library/unknown:1")),
                  clients, runner=runner(world), waiter_delay=0.2)
    image = clients.ec2.describe_images(ImageIds=[result.ami_id])["Images"][0]
    assert {t["Key"]: t["Value"] for t in image["Tags"]}[TAG_FAMILY] == "nvidia"
    base = clients.ec2.describe_images(ImageIds=[world["fleet"].base_ami])["Images"][0]
    base_root = next(m["Ebs"]["VolumeSize"] for m in base["BlockDeviceMappings"]
                     if m["DeviceName"] == base["RootDeviceName"])
    expected = base_root + math.ceil(reported * IMAGE_EXPANSION / 1024 ** 3 + UNKNOWN_IMAGE_GIB
                                     + SYSTEM_IMAGE_GIB * len(NODE_SYSTEM_IMAGES)) + ROOT_HEADROOM_GIB
    (launch,) = launches
    root = next(m for m in launch["BlockDeviceMappings"] if m["DeviceName"] == base["RootDeviceName"])
    assert root["Ebs"]["VolumeSize"] == expected == result.root_volume_gib
    assert root["Ebs"]["Encrypted"] and "KmsKeyId" not in root["Ebs"]
    # The flag wins, and a root smaller than the base AMI's is refused before anything is launched.
    sized = bake(request_for(world, model_version="v12", root_volume_gib=200), clients, runner=runner(world),
                 waiter_delay=0.2)
    assert sized.root_volume_gib == 200 and sized.recipe != result.recipe
    with pytest.raises(BakeInputError, match="--root-volume-gib"):
        bake(request_for(world, model_version="v12", root_volume_gib=base_root - 1), clients, runner=runner(world))
    assert root_size(20, {"a": None, NODE_SYSTEM_IMAGES[0]: None, "b": 2 * 1024 ** 3}) == 20 + 8 + 1 + 6 + 4


def _cmk(session, description="kiln ami"):
    return session.client("kms").create_key(Description=description)["KeyMetadata"]


def _encrypt_snapshots_as_aws_does(clients, key_id):
    """moto creates an AMI's snapshots from a fresh unencrypted volume, not from the builder's encrypted ones;
    AWS reports them encrypted with the builder volumes' key. Rewrite DescribeSnapshots' response to say so."""
    def rewrite(parsed, **_):
        for snap in parsed.get("Snapshots", []):
            snap.update(Encrypted=True, KmsKeyId=key_id)
    clients.ec2.meta.events.register("after-call.ec2.DescribeSnapshots", rewrite)


def test_share_needs_a_customer_managed_key_encrypts_with_it_and_grants_it(world):
    clients = world["clients"]
    with pytest.raises(BakeInputError, match="--share-with needs --kms-key"):
        request_for(world, model_version="v13", share_with_accounts=("210987654321",))
    with pytest.raises(BakeInputError, match="AWS managed key"):
        request_for(world, model_version="v13", kms_key_id="alias/aws/ebs")
    key = _cmk(world["session"])
    launches = _capture(clients.ec2, "RunInstances")
    _encrypt_snapshots_as_aws_does(clients, key["Arn"])
    result = bake(request_for(world, model_version="v13", kms_key_id=key["KeyId"],
                              share_with_accounts=("210987654321", "109876543210")),
                  clients, runner=runner(world), waiter_delay=0.2)
    assert all(m["Ebs"]["KmsKeyId"] == key["Arn"] and m["Ebs"]["Encrypted"] for m in launches[0]["BlockDeviceMappings"])
    perms = clients.ec2.describe_image_attribute(ImageId=result.ami_id, Attribute="launchPermission")
    assert {p["UserId"] for p in perms["LaunchPermissions"]} == {"210987654321", "109876543210"}
    grants = clients.kms.list_grants(KeyId=key["KeyId"])["Grants"]
    assert {g["GranteePrincipal"] for g in grants} == {"arn:aws:iam::210987654321:root",
                                                       "arn:aws:iam::109876543210:root"}
    assert all({"Decrypt", "CreateGrant", "DescribeKey"} <= set(g["Operations"]) for g in grants)
    # Sharing again (reuse by recipe) adds no second grant per account.
    again = bake(request_for(world, model_version="v13", kms_key_id=key["KeyId"],
                             share_with_accounts=("210987654321",)), clients, runner=runner(world), waiter_delay=0.2)
    assert again.reused and len(clients.kms.list_grants(KeyId=key["KeyId"])["Grants"]) == 2


def test_snapshots_under_the_default_aws_ebs_key_are_never_shared(world):
    clients = world["clients"]
    key = _cmk(world["session"])
    # moto's snapshots as they are: not encrypted at all. Never shared either.
    with pytest.raises(BakeShareError, match="is not encrypted with"):
        bake(request_for(world, model_version="v14u", kms_key_id=key["KeyId"], share_with_accounts=("210987654321",)),
             clients, runner=runner(world), waiter_delay=0.2)
    aws_ebs = clients.kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]   # the account's default EBS key
    _encrypt_snapshots_as_aws_does(clients, aws_ebs["Arn"])   # e.g. EBS encryption by default overrode the request
    with pytest.raises(BakeShareError, match="aws/ebs"):
        bake(request_for(world, model_version="v14", kms_key_id=key["KeyId"], share_with_accounts=("210987654321",)),
             clients, runner=runner(world), waiter_delay=0.2)
    image = clients.ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{TAG_MODEL_VERSION}",
                                                                   "Values": ["v14"]}])["Images"][0]
    assert clients.ec2.describe_image_attribute(ImageId=image["ImageId"],
                                                Attribute="launchPermission")["LaunchPermissions"] == []
    assert clients.kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    # A key given by its alias/aws/ name is refused before anything starts; so is a disabled key.
    with pytest.raises(BakeInputError, match="AWS managed"):
        customer_key_arn(clients.kms, aws_ebs["KeyId"])
    disabled = _cmk(world["session"])
    clients.kms.disable_key(KeyId=disabled["KeyId"])
    with pytest.raises(BakeInputError, match="Disabled"):
        customer_key_arn(clients.kms, disabled["KeyId"])


def _deny_describe_key(clients, *, allowed=()):
    """IAM's answer to the rollout role for a key it may not read (not tagged for the cluster: aws/ebs among them).

    moto's KMS evaluates no IAM; botocore's before-call hook answers instead of the server, as AWS would."""
    import json as _json
    from types import SimpleNamespace

    def deny(params, **_):
        if _json.loads(params["body"] or b"{}").get("KeyId") in allowed:
            return None
        return (SimpleNamespace(status_code=400, headers={}, raw=None),
                {"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform: kms:DescribeKey"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}})
    clients.kms.meta.events.register("before-call.kms.DescribeKey", deny)


def test_keys_the_rollout_role_may_not_read_are_named_never_a_crash(world):
    """The rollout role reads only keys tagged for its cluster (infra/roles.py): a snapshot under aws/ebs is still
    refused for sharing, by its key ARN, and an untagged --kms-key is bad input that says what to tag."""
    clients = world["clients"]
    key = _cmk(world["session"])
    aws_ebs = clients.kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    _encrypt_snapshots_as_aws_does(clients, aws_ebs["Arn"])
    _deny_describe_key(clients, allowed=(key["KeyId"], key["Arn"]))
    with pytest.raises(BakeShareError, match=f"encrypted with {aws_ebs['Arn']}, not {key['Arn']}"):
        bake(request_for(world, model_version="v14d", kms_key_id=key["KeyId"], share_with_accounts=("210987654321",)),
             clients, runner=runner(world), waiter_delay=0.2)
    assert clients.kms.list_grants(KeyId=key["KeyId"])["Grants"] == []
    other = _cmk(world["session"], "not tagged for the cluster")
    with pytest.raises(BakeInputError, match=r"AccessDeniedException: .*tagged kiln.dev/cluster=<cluster name>"):
        customer_key_arn(clients.kms, other["KeyId"])


def test_sigterm_during_the_bake_terminates_the_builder_and_the_sweep_removes_the_rest(world):
    import os
    import signal
    import time

    from automation.signals import Interrupted, sigterm_raises

    clients = world["clients"]

    class KilledRunner(SsmRunner):
        def run(self, instance_id, step, commands, timeout_seconds=3600):
            if step == "copy-model":
                os.kill(os.getpid(), signal.SIGTERM)      # the CI runner is cancelled mid-copy
            return super().run(instance_id, step, commands, timeout_seconds)

    calls = []
    clients.ec2.meta.events.register("before-call.ec2", lambda model, **_: calls.append(model.name))
    with sigterm_raises(), pytest.raises(Interrupted):
        bake(request_for(world, model_version="v15"), clients,
             runner=KilledRunner(clients.ssm, poll_seconds=0.2, wait_for_agent=False), waiter_delay=0.2)
    (builder,) = [i for i in builders(clients.ec2) if {"Key": TAG_MODEL_VERSION, "Value": "v15"} in i["Tags"]]
    assert builder["State"]["Name"] in ("shutting-down", "terminated")
    assert clients.ec2.describe_images(Owners=["self"], Filters=[
        {"Name": f"tag:{TAG_MODEL_VERSION}", "Values": ["v15"]}])["Images"] == []
    # It did not sit in the instance_terminated waiter while being killed: nothing after the terminate but
    # the (failing or not) security-group delete.
    after = calls[calls.index("TerminateInstances") + 1:calls.index("TerminateInstances") + 2]
    assert after == ["DeleteSecurityGroup"]
    # A builder left running by a run that was killed outright (no handler): the next bake sweeps it once old.
    orphan = clients.ec2.run_instances(ImageId=world["fleet"].base_ami, InstanceType="m6i.large", MinCount=1,
                                       MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                           {"Key": TAG_ROLE, "Value": BUILDER_ROLE}]}])["Instances"][0]["InstanceId"]
    group = clients.ec2.create_security_group(
        GroupName=f"kiln-orphan-{orphan}", Description="kiln bake builder: no inbound",
        VpcId=world["fleet"].vpc_id, TagSpecifications=[{"ResourceType": "security-group", "Tags": [
            {"Key": TAG_ROLE, "Value": BUILDER_ROLE}, {"Key": TAG_CREATED_AT, "Value": str(int(time.time()))}]}])["GroupId"]
    assert orphan not in sweep_builders(clients.ec2, older_than_seconds=6 * 3600)      # young: maybe another bake's
    swept = sweep_builders(clients.ec2, older_than_seconds=6 * 3600, now=time.time() + 7 * 3600)
    assert orphan in swept and group in swept
    state = clients.ec2.describe_instances(InstanceIds=[orphan])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")
    untagged = clients.ec2.run_instances(ImageId=world["fleet"].base_ami, InstanceType="m6i.large", MinCount=1,
                                         MaxCount=1)["Instances"][0]["InstanceId"]
    assert untagged not in sweep_builders(clients.ec2, older_than_seconds=0, now=time.time() + 7 * 3600)


def test_sigterm_while_run_instances_is_in_flight_still_terminates_the_builder(world):
    """AWS launched the builder but the answer never reached kiln (SIGTERM during the call, or a read timeout):
    the builder is found by the run's own kiln:bake-id tag and terminated now, not left running for 6 hours
    until another bake's sweep."""
    from automation.signals import Interrupted

    clients = world["clients"]

    def lost_answer(**_):
        raise Interrupted("SIGTERM")

    clients.ec2.meta.events.register("after-call.ec2.RunInstances", lost_answer)
    with pytest.raises(Interrupted):
        bake(request_for(world, model_version="v41"), clients, runner=runner(world), waiter_delay=0.2)
    (builder,) = [i for i in builders(clients.ec2) if {"Key": TAG_MODEL_VERSION, "Value": "v41"} in i["Tags"]]
    assert builder["State"]["Name"] in ("shutting-down", "terminated")
    # The same without an interruption (RunInstances "failed", e.g. a read timeout): terminated and waited for,
    # then the security group goes too.
    clients.ec2.meta.events.unregister("after-call.ec2.RunInstances", lost_answer)

    def timed_out(**_):
        raise RuntimeError("Read timeout on endpoint URL")

    clients.ec2.meta.events.register("after-call.ec2.RunInstances", timed_out)
    with pytest.raises(RuntimeError, match="Read timeout"):
        bake(request_for(world, model_version="v42"), clients, runner=runner(world), waiter_delay=0.2)
    (builder,) = [i for i in builders(clients.ec2) if {"Key": TAG_MODEL_VERSION, "Value": "v42"} in i["Tags"]]
    assert builder["State"]["Name"] == "terminated"
    groups = clients.ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_MODEL_VERSION}", "Values": ["v42"]}])
    assert groups["SecurityGroups"] == []


def test_a_second_sigterm_during_the_cleanup_still_terminates_the_builder(world):
    """CI runners signal more than once: a SIGTERM that lands as the cleanup starts must not leave the builder."""
    from automation.signals import Interrupted

    clients = world["clients"]
    calls = []

    def sigterm_once(**_):
        calls.append("TerminateInstances")
        if len(calls) == 1:
            raise Interrupted("SIGTERM")

    clients.ec2.meta.events.register("before-call.ec2.TerminateInstances", sigterm_once)
    with pytest.raises(Interrupted):
        bake(request_for(world, model_version="v44"), clients, runner=runner(world), waiter_delay=0.2)
    (builder,) = [i for i in builders(clients.ec2) if {"Key": TAG_MODEL_VERSION, "Value": "v44"} in i["Tags"]]
    assert builder["State"]["Name"] in ("shutting-down", "terminated") and len(calls) == 2


def test_bad_input_names_the_flag(world):
    with pytest.raises(BakeInputError, match="--model-uri"):
        request_for(world, model_uri="https://example.com/model")
    with pytest.raises(BakeInputError, match="--base-ami"):
        request_for(world, base_ami="ami-nope")


@pytest.mark.parametrize("group", ["/kiln/bakery", "/kiln/bake-prod", "/kiln/bake/", "/aws/ssm/kiln", "kiln/bake",
                                   "/kiln/bake/a b", "/kiln/bake/" + "a" * 510])
def test_a_log_group_the_builder_cannot_write_is_bad_input(world, group):
    """The builder's role writes CloudWatch Logs only to /kiln/bake and below (infra/builder.py)."""
    with pytest.raises(BakeInputError, match=r"--log-group .* must be /kiln/bake or a group below it"):
        request_for(world, log_group=group)


def test_the_bake_logs_to_the_builder_s_own_group_by_default(world):
    from infra.builder import LOG_GROUP_PREFIX

    assert request_for(world).log_group == LOG_GROUP_PREFIX == "/kiln/bake"
    assert request_for(world, log_group="/kiln/bake/prod").log_group == "/kiln/bake/prod"
    assert request_for(world, log_group=None).log_group is None          # API callers may turn it off
    assert _cli_args(model_version="v6", model_uri=world["uri"]).log_group == "/kiln/bake"
    sent = _capture(world["clients"].ssm, "SendCommand")
    request = request_for(world, model_version="v6-logs")
    result = bake(request, world["clients"], waiter_delay=0.2,
                  runner=SsmRunner(world["clients"].ssm, log_group=request.log_group, poll_seconds=0.2,
                                   wait_for_agent=False))
    assert result.ami_id.startswith("ami-")
    assert sent and all(p["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "/kiln/bake",
                                                        "CloudWatchOutputEnabled": True} for p in sent)


def test_cli_refuses_a_log_group_outside_kiln_bake(world, capsys):
    fleet = world["fleet"]
    args = _cli_args(model_version="v6", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                     instance_profile=fleet.instance_profile, log_group="/kiln/bakery")
    assert bake_cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bad input: --log-group ('/kiln/bakery') must be /kiln/bake or a group below it")


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


def _stand_in_stack(tmp_path, world, name="s", builder=True, region="us-east-2", model_bucket=None, extra=None):
    import yaml

    fleet = world["fleet"]
    if not builder:
        world["session"].client("iam").remove_role_from_instance_profile(
            InstanceProfileName=fleet.builder_instance_profile, RoleName=fleet.builder_instance_profile)
        world["session"].client("iam").delete_instance_profile(InstanceProfileName=fleet.builder_instance_profile)
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": {
        "aws:region": region, "kiln:clusterName": fleet.cluster, "kiln:kubernetesVersion": K8S,
        "kiln:availabilityZones": fleet.zones, "kiln:nodeAmi": {"standard": fleet.base_ami, "nvidia": fleet.base_ami},
        "kiln:modelVersion": "v5",
        "kiln:nodeGroups": [{"name": "system", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2,
                             "desiredSize": 1},
                            {"name": "gpu", "instanceTypes": ["g5.2xlarge"], "minSize": 0, "maxSize": 4,
                             "desiredSize": 1, "gpu": True}],
        **({"kiln:modelBucket": model_bucket} if model_bucket else {}), **(extra or {})}}))


def test_cli_with_stack_takes_region_and_the_builder_profile_from_the_stack(world, tmp_path, monkeypatch, capsys):
    from automation import stack as stack_module

    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)    # the stand-in reads the stack file
    monkeypatch.chdir(tmp_path)
    _stand_in_stack(tmp_path, world, model_bucket=world["uri"].split("/")[2])   # the builder reads this bucket
    clients = world["clients"]
    launches = _capture(clients.ec2, "RunInstances")
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, region=None, session=None: (
        launches.append({"region": region}), clients)[1]))
    args = _cli_args(model_version="v16", model_uri=world["uri"], stack="acme/kiln/s", no_agent_wait=True, json=True)
    assert bake_cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert launches[0] == {"region": "us-east-2"}
    assert launches[1]["IamInstanceProfile"] == {"Name": world["fleet"].builder_instance_profile}
    assert out["amiId"].startswith("ami-")
    # --region must agree with the stack's aws:region
    wrong = _cli_args(model_version="v16", model_uri=world["uri"], stack="s", region="eu-west-1")
    assert bake_cli.main(wrong) == 2 and "--region eu-west-1 is not the stack's aws:region" in capsys.readouterr().err


@pytest.mark.parametrize("tagged", [False, True])
def test_cli_with_stack_bakes_the_termination_handler_image_and_sizes_the_root_for_it(world, tmp_path, monkeypatch,
                                                                                      capsys, tagged):
    """kiln:terminationHandlerImage is in every node's pre-pull list: the bake pulls it and the root volume counts
    its size as ECR reports it (by digest; a tag beside the digest changes nothing)."""
    from automation import stack as stack_module

    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    ecr = world["session"].client("ecr")
    repo = f"kiln-termination-handler-{world['uri'].split('/')[2][-6:]}"
    ecr.create_repository(repositoryName=repo)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 5 * 1024 ** 3,
                           "digest": "sha256:" + "e" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                            "digest": "sha256:" + "f" * 64}]}
    digest = ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest),
                           imageTag="0123abc")["image"]["imageId"]["imageDigest"]
    reported = ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": digest}])["imageDetails"][0][
        "imageSizeInBytes"]
    handler = f"123456789012.dkr.ecr.us-east-2.amazonaws.com/{repo}{':0123abc' if tagged else ''}@{digest}"
    _stand_in_stack(tmp_path, world, model_bucket=world["uri"].split("/")[2],
                    extra={"kiln:terminationHandlerImage": handler})
    clients = world["clients"]
    launches, commands = _capture(clients.ec2, "RunInstances"), _capture(clients.ssm, "SendCommand")
    monkeypatch.setattr(AwsClients, "create", classmethod(lambda cls, region=None, session=None: clients))
    args = _cli_args(model_version=f"v17{'t' if tagged else ''}", model_uri=world["uri"], stack="s",
                     no_agent_wait=True, json=True, base_ami=world["fleet"].base_ami)
    assert bake_cli.main(args) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    base = clients.ec2.describe_images(ImageIds=[world["fleet"].base_ami])["Images"][0]
    base_root = next(m["Ebs"]["VolumeSize"] for m in base["BlockDeviceMappings"]
                     if m["DeviceName"] == base["RootDeviceName"])
    expected = base_root + math.ceil(reported * IMAGE_EXPANSION / 1024 ** 3
                                     + SYSTEM_IMAGE_GIB * len(NODE_SYSTEM_IMAGES)) + ROOT_HEADROOM_GIB
    unknown = base_root + UNKNOWN_IMAGE_GIB + SYSTEM_IMAGE_GIB * len(NODE_SYSTEM_IMAGES) + ROOT_HEADROOM_GIB
    assert reported >= 5 * 1024 ** 3 and out["rootVolumeGiB"] == expected != unknown   # the size ECR reports
    (launch,) = launches
    assert next(m for m in launch["BlockDeviceMappings"] if m["DeviceName"] == base["RootDeviceName"])["Ebs"][
        "VolumeSize"] == expected
    prefetch = [c for c in commands if "KILN_IMAGES=" in " ".join(c["Parameters"]["commands"])]
    assert prefetch and handler in " ".join(prefetch[0]["Parameters"]["commands"])


def test_cli_with_stack_refuses_a_model_outside_the_builders_bucket(world, tmp_path, monkeypatch, capsys):
    """The stack's builder profile reads only kiln:modelBucket: another bucket would fail at the copy, after a
    builder was launched; it is bad input before anything starts."""
    from automation import stack as stack_module

    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    _stand_in_stack(tmp_path, world, model_bucket="the-models-bucket")
    launches = _capture(world["clients"].ec2, "RunInstances")
    assert bake_cli.main(_cli_args(model_version="v16", model_uri=world["uri"], stack="s")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bad input: --model-uri {world['uri']}: bucket ") and \
        "is not the stack's kiln:modelBucket (the-models-bucket)" in line
    assert launches == []


def test_cli_with_a_stack_lacking_the_builder_profile_or_an_unknown_stack_names_it(world, tmp_path, monkeypatch,
                                                                                  capsys):
    from automation import stack as stack_module

    monkeypatch.setattr(stack_module, "pulumi_cli_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    args = _cli_args(model_version="v16", model_uri=world["uri"], stack="nosuch")
    assert bake_cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bad input: --stack nosuch:") and "Pulumi.nosuch.yaml" in line
    fleet = create_fleet(world["session"], cluster="nobuilder", nodes_per_zone=1)
    _stand_in_stack(tmp_path, {**world, "fleet": fleet}, name="nb", builder=False)
    assert bake_cli.main(_cli_args(model_version="v16", model_uri=world["uri"], stack="nb")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "builderInstanceProfile" in line and "--instance-profile" in line


def test_cli_refuses_a_sweep_bound_that_would_kill_a_live_bake(world, capsys):
    """The sweep tells a dead run's builder from another bake still running only by its age."""
    args = _cli_args(model_version="v43", model_uri=world["uri"], subnet_id=world["fleet"].subnet_ids[0],
                     instance_profile=world["fleet"].instance_profile, sweep_after="30m")
    assert bake_cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bad input: --sweep-after (1800s) must be at least 1h")
    assert builders(world["clients"].ec2, None) == [] or not any(
        {"Key": TAG_MODEL_VERSION, "Value": "v43"} in i["Tags"] for i in builders(world["clients"].ec2))


def test_cli_names_a_subnet_or_instance_profile_that_does_not_exist(world, capsys):
    fleet = world["fleet"]
    missing_subnet = _cli_args(model_version="v45", model_uri=world["uri"], subnet_id="subnet-0123456789abcdef0",
                               instance_profile=fleet.instance_profile, no_agent_wait=True)
    assert bake_cli.main(missing_subnet) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "bad input: --subnet-id subnet-0123456789abcdef0 does not exist in us-east-2"
    missing_profile = _cli_args(model_version="v45", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                                instance_profile="no-such-profile", no_agent_wait=True)
    assert bake_cli.main(missing_profile) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("bad input: --instance-profile no-such-profile: ")
    ec2 = world["clients"].ec2
    assert not ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_MODEL_VERSION}", "Values": ["v45"]}])[
        "SecurityGroups"]                                            # nothing left behind


def test_cli_errors_are_one_plain_line(world, capsys):
    fleet = world["fleet"]
    args = _cli_args(model_version="v17", model_uri=world["uri"] + "[missing]/", subnet_id=fleet.subnet_ids[0],
                     instance_profile=fleet.instance_profile, kubernetes_version=K8S, no_agent_wait=True)
    assert bake_cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "[missing]" in line and "MANIFEST.sha256" in line and line.startswith("bad input:")


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


def test_cli_sigterm_exits_1_saying_what_was_cleaned_up(world, monkeypatch, capsys):
    import os
    import signal

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(bake_cli, "bake", killed)
    fleet = world["fleet"]
    before = signal.getsignal(signal.SIGTERM)
    args = _cli_args(model_version="v18", model_uri=world["uri"], subnet_id=fleet.subnet_ids[0],
                     instance_profile=fleet.instance_profile, kubernetes_version=K8S, no_agent_wait=True)
    assert bake_cli.main(args) == 1
    err = capsys.readouterr().err
    assert "bake interrupted (SIGTERM)" in err and "swept by the next bake" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_builder_gets_no_public_ip_even_in_a_subnet_that_maps_them(world):
    """A --subnet-id that maps public IPs on launch (a public subnet, or a private one someone flipped) must not
    put the builder on the internet: its one network interface asks for no public IP and keeps the
    builder's no-inbound security group."""
    clients, fleet = world["clients"], world["fleet"]
    ec2 = clients.ec2
    public = ec2.create_subnet(VpcId=fleet.vpc_id, CidrBlock="10.0.200.0/24",
                               AvailabilityZone=fleet.zones[0])["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})
    seen, groups, lines = [], [], []

    def look_at_the_builder(parsed, **_):   # while it runs: afterwards it is terminated and its ENI gone
        instance_id = parsed["Instances"][0]["InstanceId"]
        seen.extend(i for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"] for i in r["Instances"])
        groups.extend(ec2.describe_security_groups(
            GroupIds=[g["GroupId"] for nic in seen[-1]["NetworkInterfaces"] for g in nic["Groups"]])["SecurityGroups"])

    ec2.meta.events.register("after-call.ec2.RunInstances", look_at_the_builder)
    asked = []
    ec2.meta.events.register("before-parameter-build.ec2.RunInstances", lambda params, **_: asked.append(params))
    result = bake(request_for(world, model_version="v46", subnet_id=public), clients, runner=runner(world),
                  waiter_delay=0.2, progress=lines.append)
    [builder], [params] = seen, asked
    assert builder["InstanceId"] == result.builder_instance_id
    # What AWS gets: the subnet and group only inside the interface (EC2 answers InvalidParameterCombination to
    # SubnetId or SecurityGroupIds beside NetworkInterfaces; moto does not check that, so it is checked here).
    assert "SubnetId" not in params and "SecurityGroupIds" not in params
    assert "PublicIpAddress" not in builder and builder["SubnetId"] == public
    # (The groups are read from the interface: moto lists on the instance only groups given as SecurityGroupIds;
    # EC2 lists the primary interface's there too.)
    [nic] = builder["NetworkInterfaces"]
    assert not nic.get("Association", {}).get("PublicIp") and nic["SubnetId"] == public
    [group] = nic["Groups"]
    assert params["NetworkInterfaces"] == [{"DeviceIndex": 0, "SubnetId": public, "Groups": [group["GroupId"]],
                                           "AssociatePublicIpAddress": False, "DeleteOnTermination": True}]
    [described] = groups   # the bake's own group: builder-tagged, no inbound rules
    assert described["GroupId"] == group["GroupId"] and described["IpPermissions"] == []
    assert {"Key": TAG_ROLE, "Value": BUILDER_ROLE} in described["Tags"]
    assert any(public in line and "no public IP" in line for line in lines)   # said, not silently ignored
    # Control: the same subnet hands an instance launched the old way (subnet id only) a public IP.
    probe = ec2.run_instances(ImageId=fleet.base_ami, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                              SubnetId=public)["Instances"][0]["InstanceId"]
    assert ec2.describe_instances(InstanceIds=[probe])["Reservations"][0]["Instances"][0].get("PublicIpAddress")
    ec2.terminate_instances(InstanceIds=[probe])
