"""Bake a node AMI: builder instance -> SSM steps -> image, or reuse one.

Flow: resolve the base AMI (public SSM parameter unless given) and the model's
checksum manifest, hash the recipe, and return an existing AMI with that hash if
there is one. Otherwise launch a builder in a private subnet with a security
group that has no inbound rules, run the builder steps through SSM, stop it,
create the image with all its volumes, tag it, wait until it is available, and
terminate the builder *on every path* (the ``finally``). Waits are botocore
waiters; retries are botocore's adaptive retry mode.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.labels import BUILDER_ROLE, TAG_ROLE

from .recipe import (MANIFEST_NAME, TAG_BASE_AMI, TAG_MODEL_VERSION, TAG_RECIPE, BakeInputError, BakeRequest,
                     builder_script, recipe_for, split_s3_uri)
from .ssm import SsmRunner

RETRY_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})
STEPS = ("mount-volume", "copy-model", "verify-model", "prefetch", "record")

Progress = Callable[[str], None]


@dataclass
class AwsClients:
    """The boto3 clients a bake uses; honours profiles, AWS_REGION and AWS_ENDPOINT_URL."""

    ec2: Any
    ssm: Any
    s3: Any
    autoscaling: Any
    session: Any = None

    @classmethod
    def create(cls, region: Optional[str] = None, session: Any = None) -> "AwsClients":
        session = session or boto3.Session(region_name=region)
        make = lambda name: session.client(name, config=RETRY_CONFIG)  # noqa: E731
        return cls(ec2=make("ec2"), ssm=make("ssm"), s3=make("s3"), autoscaling=make("autoscaling"), session=session)

    def ec2_in(self, region: str) -> Any:
        return (self.session or boto3.Session()).client("ec2", region_name=region, config=RETRY_CONFIG)


@dataclass
class BakeResult:
    ami_id: str
    recipe: str
    reused: bool
    model_version: str
    base_ami: str
    builder_instance_id: Optional[str] = None
    copies: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"amiId": self.ami_id, "recipe": self.recipe, "reused": self.reused, "modelVersion": self.model_version,
                "baseAmi": self.base_ami, "builderInstanceId": self.builder_instance_id, "copies": self.copies,
                "steps": self.steps, "seconds": round(self.seconds, 1)}


def resolve_base_ami(clients: AwsClients, request: BakeRequest) -> str:
    if request.base_ami:
        return request.base_ami
    try:
        return clients.ssm.get_parameter(Name=request.base_ami_parameter)["Parameter"]["Value"]
    except ClientError as e:
        raise BakeInputError(f"could not read the EKS-optimized AMI from SSM parameter {request.base_ami_parameter} "
                             f"({e.response['Error'].get('Code')}); pass --base-ami") from e


def read_manifest(clients: AwsClients, request: BakeRequest) -> bytes:
    bucket, prefix = split_s3_uri(request.model_uri)
    key = prefix + MANIFEST_NAME
    try:
        return clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        raise BakeInputError(f"--model-uri: s3://{bucket}/{key} could not be read "
                             f"({e.response['Error'].get('Code')}); the model needs a checksum manifest") from e


def find_by_recipe(ec2: Any, recipe_hash: str) -> Optional[str]:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": f"tag:{TAG_RECIPE}", "Values": [recipe_hash]}])
    usable = [i for i in images["Images"] if i.get("State") in ("available", "pending")]
    usable.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    return usable[0]["ImageId"] if usable else None


def step_commands(step: str, request: BakeRequest, region: str) -> list[str]:
    env = {
        "KILN_MODEL_URI": request.model_uri, "KILN_MODEL_VERSION": request.model_version,
        "KILN_MODEL_PATH": request.model_path, "KILN_MODEL_DEVICE": request.model_device,
        "KILN_IMAGES": " ".join(request.images_to_pull), "KILN_REGION": region,
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return [
        "set -euo pipefail",
        f"cat > /tmp/kiln-builder.sh <<'KILN_BUILDER_EOF'\n{builder_script()}KILN_BUILDER_EOF",
        f"env {exports} bash /tmp/kiln-builder.sh {shlex.quote(step)}",
    ]


def _tags(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in d.items()]


def bake(request: BakeRequest, clients: AwsClients, *, runner: Optional[SsmRunner] = None,
         progress: Progress = lambda msg: None, waiter_delay: float = 15) -> BakeResult:
    started = time.monotonic()
    region = clients.ec2.meta.region_name
    base_ami = resolve_base_ami(clients, request)
    recipe = recipe_for(request, base_ami, read_manifest(clients, request))
    recipe_hash = recipe.digest()
    progress(f"recipe {recipe_hash} (base {base_ami}, model {request.model_version})")

    existing = find_by_recipe(clients.ec2, recipe_hash)
    if existing:
        progress(f"reusing {existing}: an AMI with this recipe already exists")
        clients.ec2.get_waiter("image_available").wait(ImageIds=[existing], WaiterConfig={"Delay": waiter_delay})
        result = BakeResult(existing, recipe_hash, True, request.model_version, base_ami)
        _distribute(request, clients, result, progress, waiter_delay)
        result.seconds = time.monotonic() - started
        return result

    runner = runner or SsmRunner(clients.ssm, log_group=request.log_group)
    ec2 = clients.ec2
    subnet = ec2.describe_subnets(SubnetIds=[request.subnet_id])["Subnets"][0]
    name = f"kiln-{request.model_version}-{recipe_hash[:12]}"
    common_tags = {"Name": f"kiln-bake-{request.model_version}", TAG_RECIPE: recipe_hash,
                   TAG_MODEL_VERSION: request.model_version}
    # No inbound rules at all: SSM is outbound-only from the builder.
    sg_id = ec2.create_security_group(
        GroupName=f"{name}-{int(time.time())}", Description="kiln bake builder: no inbound",
        VpcId=subnet["VpcId"],
        TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(common_tags)}])["GroupId"]
    instance_id: Optional[str] = None
    result = BakeResult("", recipe_hash, False, request.model_version, base_ami)
    try:
        instance_id = ec2.run_instances(
            ImageId=base_ami, InstanceType=request.instance_type, MinCount=1, MaxCount=1,
            SubnetId=request.subnet_id, SecurityGroupIds=[sg_id],
            IamInstanceProfile={"Name": request.instance_profile},
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            BlockDeviceMappings=[{"DeviceName": request.model_device, "Ebs": {
                "VolumeSize": request.model_volume_size_gib, "VolumeType": "gp3", "Encrypted": True,
                "DeleteOnTermination": True}}],
            # The rollout role acts only on instances carrying the builder tag (infra/roles.py).
            TagSpecifications=[{"ResourceType": kind, "Tags": _tags({**common_tags, TAG_ROLE: BUILDER_ROLE})}
                               for kind in ("instance", "volume")],
        )["Instances"][0]["InstanceId"]
        result.builder_instance_id = instance_id
        progress(f"builder {instance_id} launched in {request.subnet_id}")
        ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": waiter_delay})
        runner.wait_until_managed(instance_id)
        for step in STEPS:
            progress(f"builder step {step}")
            t0 = time.monotonic()
            out = runner.run(instance_id, step, step_commands(step, request, region), request.step_timeout_seconds)
            result.steps.append({"step": step, "seconds": round(time.monotonic() - t0, 1), "commandId": out.command_id})
        progress("stopping the builder")
        ec2.stop_instances(InstanceIds=[instance_id])
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": waiter_delay})
        image_tags = {TAG_MODEL_VERSION: request.model_version, TAG_BASE_AMI: base_ami, TAG_RECIPE: recipe_hash,
                      "Name": name}
        ami_id = ec2.create_image(
            InstanceId=instance_id, Name=name, Description=f"kiln node image, model {request.model_version}",
            TagSpecifications=[{"ResourceType": "image", "Tags": _tags(image_tags)}])["ImageId"]
        result.ami_id = ami_id
        progress(f"creating image {ami_id}")
        ec2.get_waiter("image_available").wait(ImageIds=[ami_id], WaiterConfig={"Delay": waiter_delay, "MaxAttempts": 240})
        snapshots = _snapshots_of(ec2, ami_id)
        if snapshots:
            ec2.create_tags(Resources=snapshots, Tags=_tags(image_tags))
    finally:
        _cleanup(ec2, instance_id, sg_id, progress, waiter_delay)
    _distribute(request, clients, result, progress, waiter_delay)
    result.seconds = time.monotonic() - started
    progress(f"baked {result.ami_id} in {result.seconds:.0f}s")
    return result


def _snapshots_of(ec2: Any, ami_id: str) -> list[str]:
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]


def _cleanup(ec2: Any, instance_id: Optional[str], sg_id: str, progress: Progress, waiter_delay: float) -> None:
    """Terminate the builder and remove its security group, whatever happened before."""
    if instance_id:
        progress(f"terminating builder {instance_id}")
        ec2.terminate_instances(InstanceIds=[instance_id])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": waiter_delay})
    ec2.delete_security_group(GroupId=sg_id)


def _distribute(request: BakeRequest, clients: AwsClients, result: BakeResult, progress: Progress,
                waiter_delay: int) -> None:
    ec2 = clients.ec2
    if request.share_with_accounts:
        perms = {"Add": [{"UserId": a} for a in request.share_with_accounts]}
        ec2.modify_image_attribute(ImageId=result.ami_id, LaunchPermission=perms)
        for snap in _snapshots_of(ec2, result.ami_id):
            ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                          OperationType="add", UserIds=list(request.share_with_accounts))
        progress(f"shared {result.ami_id} with {', '.join(request.share_with_accounts)}")
    source = ec2.describe_images(ImageIds=[result.ami_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in source.get("Tags", [])}
    for region in request.copy_to_regions:
        remote = clients.ec2_in(region)
        copy = find_by_recipe(remote, result.recipe)
        if copy is None:
            copy = remote.copy_image(SourceImageId=result.ami_id, SourceRegion=ec2.meta.region_name,
                                     Name=source["Name"], Description=source.get("Description", ""))["ImageId"]
            remote.create_tags(Resources=[copy], Tags=_tags(tags))
        remote.get_waiter("image_available").wait(ImageIds=[copy], WaiterConfig={"Delay": waiter_delay, "MaxAttempts": 240})
        result.copies[region] = copy
        progress(f"copied to {region}: {copy}")
