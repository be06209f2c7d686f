"""Bake a node AMI: builder instance -> SSM steps -> image, or reuse one.

Flow: sweep builders an earlier run left behind, resolve the base AMI (public
SSM parameter unless given), read the model's checksum manifest, size the
builder's root volume, hash the recipe, and return an existing AMI with that
hash if there is one. Otherwise launch a builder in a private subnet, with no
public IP (even where the subnet maps them) and a security group that has no
inbound rules, run the builder steps through SSM,
stop it, create the image with all its volumes, tag it (with its AMI family),
wait until it is available, and terminate the builder *on every path* (the
``finally``) — on SIGTERM too, without waiting, leaving only what the next
run's sweep removes. Waits are botocore waiters; retries are botocore's
adaptive retry mode.

The builder's root volume is sized from the images it pulls (ECR reports each
image's compressed size; containerd keeps the compressed layers *and* the
unpacked snapshot, so each compressed byte is counted
:data:`IMAGE_EXPANSION` times; an image whose size the registry does not tell
counts :data:`UNKNOWN_IMAGE_GIB`), on top of the base AMI's root, or taken from
``--root-volume-gib``. Its volumes are encrypted with ``--kms-key`` when given;
sharing (``--share-with``) requires such a customer-managed key, checks that
every snapshot of the AMI is encrypted with it, and grants the target accounts
the use of the key.
"""

from __future__ import annotations

import math
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.images import NODE_SYSTEM_IMAGES
from infra.labels import BAKE_KEY_GRANT_OPERATIONS, BUILDER_ROLE, TAG_CLUSTER, TAG_ROLE

from .recipe import (MANIFEST_NAME, TAG_BASE_AMI, TAG_FAMILY, TAG_MODEL_VERSION, TAG_RECIPE, BakeInputError,
                     BakeRequest, builder_script, recipe_for, split_s3_uri)
from .ssm import SsmRunner

RETRY_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})
STEPS = ("mount-volume", "copy-model", "verify-model", "prefetch", "record")
TAG_CREATED_AT = "kiln:created-at"     # epoch seconds, on the builder's security group (the sweep reads it)
TAG_BAKE_ID = "kiln:bake-id"           # one bake run: on its security group, builder and volumes
IMAGE_EXPANSION = 3                    # compressed layers + unpacked snapshot ~ 3x the compressed size
UNKNOWN_IMAGE_GIB = 8                  # an image whose size the registry does not report
SYSTEM_IMAGE_GIB = 1                   # the warm-up agent and pause images (small, public)
ROOT_HEADROOM_GIB = 4
DEFAULT_BUILDER_MAX_AGE = 6 * 3600.0   # a builder older than this is left over from a dead run
SHARE_KEY_OPERATIONS = BAKE_KEY_GRANT_OPERATIONS   # what the rollout role may grant (infra/roles.py)
GIB = 1024 ** 3

Progress = Callable[[str], None]


class BakeShareError(RuntimeError):
    """The AMI cannot be shared as asked (e.g. a snapshot is encrypted with an AWS managed key)."""


@dataclass
class AwsClients:
    """The boto3 clients a bake uses; honours profiles, AWS_REGION and AWS_ENDPOINT_URL."""

    ec2: Any
    ssm: Any
    s3: Any
    autoscaling: Any
    session: Any = None
    ecr: Any = None
    kms: Any = None

    @classmethod
    def create(cls, region: Optional[str] = None, session: Any = None) -> "AwsClients":
        session = session or boto3.Session(region_name=region)
        make = lambda name: session.client(name, config=RETRY_CONFIG)  # noqa: E731
        return cls(ec2=make("ec2"), ssm=make("ssm"), s3=make("s3"), autoscaling=make("autoscaling"), session=session,
                   ecr=make("ecr"), kms=make("kms"))

    def ec2_in(self, region: str) -> Any:
        return (self.session or boto3.Session()).client("ec2", region_name=region, config=RETRY_CONFIG)

    def ecr_in(self, region: str) -> Any:
        return (self.session or boto3.Session()).client("ecr", region_name=region, config=RETRY_CONFIG)


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
    root_volume_gib: int = 0
    swept: list[str] = field(default_factory=list)
    ami_family: str = "standard"

    def to_dict(self) -> dict[str, Any]:
        return {"amiId": self.ami_id, "recipe": self.recipe, "reused": self.reused, "modelVersion": self.model_version,
                "amiFamily": self.ami_family, "baseAmi": self.base_ami, "builderInstanceId": self.builder_instance_id,
                "rootVolumeGiB": self.root_volume_gib, "copies": self.copies, "steps": self.steps,
                "swept": self.swept, "seconds": round(self.seconds, 1)}


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


# --------------------------------------------------------------------------- root volume size


def base_root(ec2: Any, base_ami: str) -> tuple[str, int]:
    """The base AMI's root device name and size (GiB)."""
    try:
        image = ec2.describe_images(ImageIds=[base_ami])["Images"][0]
    except (ClientError, IndexError) as e:
        raise BakeInputError(f"--base-ami {base_ami} does not exist or is not visible in this region") from e
    device = image.get("RootDeviceName") or "/dev/xvda"
    for m in image.get("BlockDeviceMappings", []):
        if m.get("DeviceName") == device and m.get("Ebs", {}).get("VolumeSize"):
            return device, int(m["Ebs"]["VolumeSize"])
    return device, 20


def _ecr_parts(image: str) -> Optional[tuple[str, str, str, dict]]:
    """``<acct>.dkr.ecr.<region>.amazonaws.com/<repo>[:<tag>][@<digest>]`` -> (account, region, repo, image id).

    A digest wins over a tag (``repo:1.0@sha256:…``, as kiln:terminationHandlerImage may be written): it is
    what a node pulls."""
    registry, _, rest = image.partition("/")
    parts = registry.split(".")
    if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"] or not rest:
        return None
    if "@" in rest:
        name, digest = rest.split("@", 1)
        repo = name.rpartition(":")[0] if ":" in name else name
        ref = {"imageDigest": digest}
    else:
        repo, _, tag = rest.rpartition(":") if ":" in rest else (rest, "", "latest")
        ref = {"imageTag": tag or "latest"}
    return parts[0], parts[3], repo, ref


def image_sizes(clients: AwsClients, images: tuple[str, ...]) -> dict[str, Optional[int]]:
    """Compressed size in bytes of each image the registry reports (ECR), else None."""
    sizes: dict[str, Optional[int]] = {}
    for image in images:
        parts = _ecr_parts(image)
        sizes[image] = None
        if parts is None:
            continue
        account, region, repo, ref = parts
        try:
            ecr = clients.ecr_in(region)
            found = ecr.describe_images(registryId=account, repositoryName=repo, imageIds=[ref])["imageDetails"]
            sizes[image] = int(found[0]["imageSizeInBytes"]) if found and found[0].get("imageSizeInBytes") else None
        except (ClientError, KeyError, ValueError):
            pass   # unknown: counted as UNKNOWN_IMAGE_GIB
    return sizes


def root_size(base_root_gib: int, sizes: dict[str, Optional[int]]) -> int:
    """GiB for the builder's root (and so the AMI's root snapshot): base root + images + headroom. Pure."""
    total = 0.0
    for image, size in sizes.items():
        if size is not None:
            total += size * IMAGE_EXPANSION / GIB
        else:
            total += SYSTEM_IMAGE_GIB if image in NODE_SYSTEM_IMAGES else UNKNOWN_IMAGE_GIB
    return base_root_gib + math.ceil(total) + ROOT_HEADROOM_GIB


# --------------------------------------------------------------------------- KMS


def customer_key_arn(kms: Any, key_id: str) -> str:
    """The ARN of ``key_id`` after checking it is an enabled customer-managed key (not aws/ebs)."""
    try:
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        aliases = [a["AliasName"] for a in kms.list_aliases(KeyId=meta["KeyId"]).get("Aliases", [])]
    except ClientError as e:
        code = e.response["Error"].get("Code", "")
        hint = (f" (the rollout role may use only customer-managed keys tagged {TAG_CLUSTER}=<cluster name>, "
                "whose key policy delegates to IAM)" if "AccessDenied" in code else "")
        raise BakeInputError(f"--kms-key {key_id}: {code}: {e.response['Error'].get('Message', '')}{hint}") from e
    if meta.get("KeyManager") != "CUSTOMER" or any(a.startswith("alias/aws/") for a in aliases):
        raise BakeInputError(f"--kms-key {key_id} is an AWS managed key ({', '.join(aliases) or meta.get('KeyManager')}); "
                             "other accounts cannot use it: create a customer-managed key")
    if meta.get("KeyState") != "Enabled":
        raise BakeInputError(f"--kms-key {key_id} is {meta.get('KeyState')}, not Enabled")
    return meta["Arn"]


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


# --------------------------------------------------------------------------- sweep


def sweep_builders(ec2: Any, *, older_than_seconds: float = DEFAULT_BUILDER_MAX_AGE,
                   now: Optional[float] = None, progress: Progress = lambda msg: None) -> list[str]:
    """Terminate builders (tagged ``kiln.dev/role=ami-builder``) launched more than ``older_than_seconds`` ago and
    delete builder security groups that old; returns what was removed. A group still in use stays for next time."""
    now = time.time() if now is None else now
    removed: list[str] = []
    stale = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{TAG_ROLE}", "Values": [BUILDER_ROLE]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                launched = i.get("LaunchTime")
                if launched is not None and now - launched.timestamp() > older_than_seconds:
                    stale.append(i["InstanceId"])
    if stale:
        ec2.terminate_instances(InstanceIds=stale)
        progress(f"swept {len(stale)} builder(s) left by earlier runs: {', '.join(stale)}")
        removed.extend(stale)
    groups = ec2.describe_security_groups(Filters=[{"Name": f"tag:{TAG_ROLE}", "Values": [BUILDER_ROLE]}])
    for g in groups["SecurityGroups"]:
        created = {t["Key"]: t["Value"] for t in g.get("Tags", [])}.get(TAG_CREATED_AT, "")
        if not created.isdigit() or now - int(created) <= older_than_seconds:
            continue
        try:
            ec2.delete_security_group(GroupId=g["GroupId"])
            removed.append(g["GroupId"])
            progress(f"swept builder security group {g['GroupId']}")
        except ClientError:
            pass   # still attached to a builder that is shutting down: the next sweep gets it
    return removed


# --------------------------------------------------------------------------- bake


def bake(request: BakeRequest, clients: AwsClients, *, runner: Optional[SsmRunner] = None,
         progress: Progress = lambda msg: None, waiter_delay: float = 15,
         sweep_after_seconds: Optional[float] = DEFAULT_BUILDER_MAX_AGE) -> BakeResult:
    """Bake (or reuse) the AMI ``request`` describes; the flow is in the module docstring. The builder is
    terminated on every path here, where its id is known, so no step can forget it."""
    started = time.monotonic()
    region = clients.ec2.meta.region_name
    swept = sweep_builders(clients.ec2, older_than_seconds=sweep_after_seconds, progress=progress) \
        if sweep_after_seconds is not None else []
    key_arn = customer_key_arn(clients.kms, request.kms_key_id) if request.kms_key_id else None
    recipe = _recipe(request, clients, progress)
    result = BakeResult("", recipe.digest, False, request.model_version, recipe.base_ami,
                        root_volume_gib=recipe.root_gib, swept=swept, ami_family=request.ami_family)
    if _reuse_existing(clients.ec2, recipe, result, progress, waiter_delay):
        _distribute(request, clients, result, progress, waiter_delay, key_arn)
        result.seconds = time.monotonic() - started
        return result

    runner = runner or SsmRunner(clients.ssm, log_group=request.log_group)
    ec2 = clients.ec2
    # Tagged on the builder at launch (atomically): how this run finds a builder whose RunInstances answer it lost.
    bake_id = uuid.uuid4().hex
    sg_id = _builder_security_group(ec2, request, recipe, bake_id, region, progress)
    instance_id: Optional[str] = None
    interrupted = False
    try:
        instance_id = _launch_builder(ec2, request, recipe, bake_id, sg_id, key_arn)
        result.builder_instance_id = instance_id
        progress(f"builder {instance_id} launched in {request.subnet_id} (root {recipe.root_gib} GiB)")
        _run_builder_steps(ec2, runner, instance_id, request, region, result, progress, waiter_delay)
        _image(ec2, instance_id, request, recipe, result, progress, waiter_delay)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)   # SIGTERM / Ctrl-C: clean up fast, the sweep does the rest
        raise
    finally:
        try:
            _cleanup(ec2, instance_id, bake_id, sg_id, progress, waiter_delay, wait=not interrupted)
        except BaseException as again:
            if isinstance(again, Exception):
                raise
            # Another SIGTERM while cleaning up (CI runners send more than one before they kill): the builder
            # must still be told to terminate; then stop.
            _cleanup(ec2, instance_id, bake_id, sg_id, progress, waiter_delay, wait=False)
            raise
    _distribute(request, clients, result, progress, waiter_delay, key_arn)
    result.seconds = time.monotonic() - started
    progress(f"baked {result.ami_id} in {result.seconds:.0f}s")
    return result


@dataclass(frozen=True)
class _Recipe:
    """What a bake produces, decided before anything is launched: its hash is how an earlier bake is reused."""

    base_ami: str
    root_device: str
    root_gib: int
    digest: str
    image_name: str


def _recipe(request: BakeRequest, clients: AwsClients, progress: Progress) -> _Recipe:
    """Resolve the base AMI, size the root volume and hash the recipe. All of it is read-only, so bad input
    (an unknown AMI, a root smaller than the base's, a model without a manifest) stops the bake before it has
    created anything."""
    base_ami = resolve_base_ami(clients, request)
    root_device, base_root_gib = base_root(clients.ec2, base_ami)
    root_gib = request.root_volume_gib or root_size(base_root_gib, image_sizes(clients, request.images_to_pull))
    if root_gib < base_root_gib:
        raise BakeInputError(f"--root-volume-gib ({root_gib}) is smaller than the base AMI's root ({base_root_gib} GiB)")
    digest = recipe_for(request, base_ami, read_manifest(clients, request), root_volume_gib=root_gib).digest()
    progress(f"recipe {digest} (base {base_ami}, model {request.model_version}, {request.ami_family}, "
             f"root {root_gib} GiB)")
    return _Recipe(base_ami, root_device, root_gib, digest,
                   image_name=f"kiln-{request.model_version}-{request.ami_family}-{digest[:12]}")


def _reuse_existing(ec2: Any, recipe: _Recipe, result: BakeResult, progress: Progress, waiter_delay: float) -> bool:
    """An AMI with the same recipe hash is the same image: reuse it (once it is available) instead of paying for
    another builder. Fills ``result`` and answers True then."""
    existing = find_by_recipe(ec2, recipe.digest)
    if not existing:
        return False
    progress(f"reusing {existing}: an AMI with this recipe already exists")
    ec2.get_waiter("image_available").wait(ImageIds=[existing], WaiterConfig={"Delay": waiter_delay})
    result.ami_id, result.reused = existing, True
    return True


def _builder_tags(request: BakeRequest, recipe: _Recipe, bake_id: str) -> dict[str, str]:
    """Tags on everything a bake creates for its builder: the recipe it serves and the run it belongs to."""
    return {"Name": f"kiln-bake-{request.model_version}", TAG_RECIPE: recipe.digest,
            TAG_MODEL_VERSION: request.model_version, TAG_FAMILY: request.ami_family, TAG_BAKE_ID: bake_id}


def _builder_security_group(ec2: Any, request: BakeRequest, recipe: _Recipe, bake_id: str, region: str,
                            progress: Progress) -> str:
    """Check the subnet and create the builder's security group. The group has no inbound rules at all (SSM is
    outbound-only from the builder); it is tagged with its creation time so the next run's sweep can remove it if
    this run dies before its own cleanup."""
    try:
        subnet = ec2.describe_subnets(SubnetIds=[request.subnet_id])["Subnets"][0]
    except ClientError as e:
        if e.response["Error"].get("Code", "").startswith("InvalidSubnetID"):
            raise BakeInputError(f"--subnet-id {request.subnet_id} does not exist in {region}") from None
        raise
    if subnet.get("MapPublicIpOnLaunch"):
        progress(f"subnet {request.subnet_id} maps public IPs on launch; the builder asks for no public IP, so it "
                 "reaches SSM and S3 only through a NAT gateway or VPC endpoints")
    return ec2.create_security_group(
        GroupName=f"{recipe.image_name}-{int(time.time())}", Description="kiln bake builder: no inbound",
        VpcId=subnet["VpcId"],
        TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(
            {**_builder_tags(request, recipe, bake_id), TAG_ROLE: BUILDER_ROLE,
             TAG_CREATED_AT: str(int(time.time()))})}])["GroupId"]


def _launch_builder(ec2: Any, request: BakeRequest, recipe: _Recipe, bake_id: str, sg_id: str,
                    key_arn: Optional[str]) -> str:
    """Launch the builder and return its id, as soon as EC2 answers, so the caller's cleanup knows what to
    terminate. Its volumes are encrypted (with the customer-managed key when given) and tagged at launch."""
    encryption = {"Encrypted": True, **({"KmsKeyId": key_arn} if key_arn else {})}
    return _run_builder(
        ec2, request.instance_profile,
        ImageId=recipe.base_ami, InstanceType=request.instance_type, MinCount=1, MaxCount=1,
        # One interface, never a public IP, whatever the subnet's MapPublicIpOnLaunch says. (The subnet and
        # group move into the interface: EC2 refuses them beside NetworkInterfaces.)
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": request.subnet_id, "Groups": [sg_id],
                            "AssociatePublicIpAddress": False, "DeleteOnTermination": True}],
        IamInstanceProfile={"Name": request.instance_profile},
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        BlockDeviceMappings=[
            {"DeviceName": recipe.root_device, "Ebs": {"VolumeSize": recipe.root_gib, "VolumeType": "gp3",
                                                       "DeleteOnTermination": True, **encryption}},
            {"DeviceName": request.model_device, "Ebs": {"VolumeSize": request.model_volume_size_gib,
                                                         "VolumeType": "gp3", "DeleteOnTermination": True,
                                                         **encryption}}],
        # The rollout role acts only on instances carrying the builder tag (infra/roles.py).
        TagSpecifications=[{"ResourceType": kind,
                            "Tags": _tags({**_builder_tags(request, recipe, bake_id), TAG_ROLE: BUILDER_ROLE})}
                           for kind in ("instance", "volume")],
    )["Instances"][0]["InstanceId"]


def _run_builder_steps(ec2: Any, runner: SsmRunner, instance_id: str, request: BakeRequest, region: str,
                       result: BakeResult, progress: Progress, waiter_delay: float) -> None:
    """Wait until the builder runs and SSM manages it, then run :data:`STEPS` in order, recording each step's
    time and command id in ``result`` (the report shows where a slow or failed bake spent its time)."""
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": waiter_delay})
    runner.wait_until_managed(instance_id)
    for step in STEPS:
        progress(f"builder step {step}")
        t0 = time.monotonic()
        out = runner.run(instance_id, step, step_commands(step, request, region), request.step_timeout_seconds)
        result.steps.append({"step": step, "seconds": round(time.monotonic() - t0, 1), "commandId": out.command_id})


def _image(ec2: Any, instance_id: str, request: BakeRequest, recipe: _Recipe, result: BakeResult,
           progress: Progress, waiter_delay: float) -> None:
    """Stop the builder (a consistent filesystem), image it with all its volumes and wait until the AMI is
    available. The image and its snapshots carry the recipe hash: how the next bake finds it to reuse."""
    progress("stopping the builder")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": waiter_delay})
    image_tags = {TAG_MODEL_VERSION: request.model_version, TAG_BASE_AMI: recipe.base_ami, TAG_RECIPE: recipe.digest,
                  TAG_FAMILY: request.ami_family, "Name": recipe.image_name}
    ami_id = ec2.create_image(
        InstanceId=instance_id, Name=recipe.image_name,
        Description=f"kiln node image, model {request.model_version} ({request.ami_family})",
        TagSpecifications=[{"ResourceType": "image", "Tags": _tags(image_tags)}])["ImageId"]
    result.ami_id = ami_id
    progress(f"creating image {ami_id}")
    ec2.get_waiter("image_available").wait(ImageIds=[ami_id], WaiterConfig={"Delay": waiter_delay, "MaxAttempts": 240})
    snapshots = _snapshots_of(ec2, ami_id)
    if snapshots:
        ec2.create_tags(Resources=snapshots, Tags=_tags(image_tags))


def _run_builder(ec2: Any, profile: str, **params: Any) -> dict:
    """RunInstances; an instance profile that does not exist is bad input naming the flag (AWS answers
    InvalidParameterValue on iamInstanceProfile, moto NoSuchEntity). Nothing is launched then."""
    try:
        return ec2.run_instances(**params)
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "NoSuchEntity" or "iaminstanceprofile" in str(error.get("Message", "")).lower():
            raise BakeInputError(f"--instance-profile {profile}: {error.get('Message') or error.get('Code')}") from None
        raise


def _snapshots_of(ec2: Any, ami_id: str) -> list[str]:
    image = ec2.describe_images(ImageIds=[ami_id])["Images"][0]
    return [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]


def _cleanup(ec2: Any, instance_id: Optional[str], bake_id: str, sg_id: str, progress: Progress,
             waiter_delay: float, *, wait: bool = True) -> None:
    """Terminate the builder and remove its security group, whatever happened before. Interrupted
    (``wait=False``): terminate without waiting; a group still attached is left for the next run's sweep.

    Without an instance id (RunInstances raised, or SIGTERM arrived while it was in flight) the builder may still
    exist: AWS launched it and only the answer was lost. It is found by this run's ``kiln:bake-id`` tag (set at
    launch), so it is not left running until the next bake's sweep."""
    ids = [instance_id] if instance_id else _instances_of_bake(ec2, bake_id)
    if ids:
        progress(f"terminating builder {', '.join(ids)}")
        ec2.terminate_instances(InstanceIds=ids)
        if wait:
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": waiter_delay})
    try:
        ec2.delete_security_group(GroupId=sg_id)
    except ClientError:
        if wait:
            raise
        progress(f"security group {sg_id} is still attached to the terminating builder: the next bake sweeps it")


def _instances_of_bake(ec2: Any, bake_id: str) -> list[str]:
    """Instances (not yet terminated) this bake run launched. (By tag, not by the run's security group: moto's
    ``instance.group-id`` filter does not see groups given on a network interface, as the builder's are.)"""
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{TAG_BAKE_ID}", "Values": [bake_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]):
        found.extend(i["InstanceId"] for r in page["Reservations"] for i in r["Instances"])
    return found


def _distribute(request: BakeRequest, clients: AwsClients, result: BakeResult, progress: Progress,
                waiter_delay: float, key_arn: Optional[str]) -> None:
    ec2 = clients.ec2
    if request.share_with_accounts:
        _check_shareable(clients, result.ami_id, key_arn)
        for account in request.share_with_accounts:
            _grant_key(clients.kms, key_arn, account)
        perms = {"Add": [{"UserId": a} for a in request.share_with_accounts]}
        ec2.modify_image_attribute(ImageId=result.ami_id, LaunchPermission=perms)
        for snap in _snapshots_of(ec2, result.ami_id):
            ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                          OperationType="add", UserIds=list(request.share_with_accounts))
        progress(f"shared {result.ami_id} with {', '.join(request.share_with_accounts)} (key {key_arn} granted)")
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


def _check_shareable(clients: AwsClients, ami_id: str, key_arn: Optional[str]) -> None:
    """Every snapshot of the AMI must be encrypted with the customer-managed key being shared."""
    if key_arn is None:
        raise BakeShareError("--share-with needs --kms-key (a customer-managed key)")
    snapshots = _snapshots_of(clients.ec2, ami_id)
    if not snapshots:
        raise BakeShareError(f"{ami_id} has no EBS snapshots to check; not shared")
    for snap in clients.ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        kms_id = snap.get("KmsKeyId")
        if not snap.get("Encrypted") or not kms_id:
            raise BakeShareError(f"snapshot {snap['SnapshotId']} of {ami_id} is not encrypted with {key_arn}; not shared")
        if kms_id == key_arn:
            continue
        # Another key (aws/ebs, most likely): the rollout role may describe only kiln's keys, so the name is a
        # courtesy; the verdict does not depend on it.
        try:
            arn = clients.kms.describe_key(KeyId=kms_id)["KeyMetadata"]["Arn"]
            aliases = [a["AliasName"] for a in clients.kms.list_aliases(KeyId=arn).get("Aliases", [])]
        except ClientError:
            arn, aliases = kms_id, []
        if arn != key_arn:
            which = ", ".join(aliases) or arn
            raise BakeShareError(f"snapshot {snap['SnapshotId']} of {ami_id} is encrypted with {which}, not {key_arn}: "
                                 "other accounts cannot use an AWS managed key (aws/ebs); bake again with --kms-key")


def _grant_key(kms: Any, key_arn: Optional[str], account: str) -> None:
    """Let ``account`` use the key to launch the shared AMI (idempotent: one named grant per account)."""
    name = f"kiln-ami-share-{account}"
    principal = f"arn:aws:iam::{account}:root"
    grants = kms.list_grants(KeyId=key_arn).get("Grants", [])
    if any(g.get("Name") == name and g.get("GranteePrincipal") == principal for g in grants):
        return
    kms.create_grant(KeyId=key_arn, GranteePrincipal=principal, Operations=list(SHARE_KEY_OPERATIONS), Name=name)
