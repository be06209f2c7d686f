"""A local AWS for ``make demo`` and the tests: a moto server over HTTP.

``LocalAws`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with a free
port and points boto3 at it through the standard ``AWS_ENDPOINT_URL`` and dummy
credentials, so the code under test talks HTTP exactly as it would to AWS.
``moto_server`` is the bare server (no environment changes) for tests that
point their clients at it explicitly. ``create_fleet`` builds a small kiln-shaped fleet there (VPC, private subnets,
instance profile, launch template, one ASG per zone tagged for the cluster).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import boto3

from infra.labels import TAG_AMI_FAMILY, TAG_CLUSTER, TAG_NODE_GROUP

ACCOUNT_ID = "123456789012"  # moto's default account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(port: Optional[int] = None) -> Iterator[str]:
    """``ThreadedMotoServer`` on 127.0.0.1 (a free port unless given); yields its URL, stops it on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class LocalAws:
    """Context manager: a moto server, and the environment pointing boto3 at it."""

    def __init__(self, region: str = "us-east-2"):
        self.region = region
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._saved: dict[str, Optional[str]] = {}
        self._server = contextlib.ExitStack()

    def __enter__(self) -> "LocalAws":
        self._server.enter_context(moto_server(self.port))
        self._reset()  # moto keeps its backends per process: start every local AWS empty
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_SESSION_TOKEN": "testing", "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        for k, v in env.items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        for k in ("AWS_PROFILE",):
            self._saved[k] = os.environ.pop(k, None)
        return self

    def _reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)

    def __exit__(self, *exc: Any) -> None:
        try:
            self._reset()  # and leave nothing behind for whatever runs next in this process
        finally:
            self._server.close()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def session(self, region: Optional[str] = None) -> boto3.Session:
        return boto3.Session(region_name=region or self.region)

    def seed_public_parameter(self, name: str, value: str) -> None:
        """Put an AWS-owned public parameter (``/aws/service/...``) into the server.

        The SSM API refuses writes under ``/aws/``, as AWS does; moto serves only
        some public parameters, not the EKS-optimized AMI ones, so the server's
        in-process backend is seeded directly (the server runs in this process).
        """
        from moto.ssm.models import Parameter, ssm_backends

        backend = ssm_backends[ACCOUNT_ID][self.region]
        backend._parameters[name].append(Parameter(
            account_id=ACCOUNT_ID, name=name, value=value, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=datetime.datetime.now(datetime.timezone.utc),
            version=1, data_type="aws:ec2:image"))


@dataclass
class Fleet:
    cluster: str
    vpc_id: str
    subnet_ids: list[str]
    zones: list[str]
    instance_profile: str
    builder_instance_profile: str
    launch_template_id: str    # the first group's
    base_ami: str
    asgs: list[str] = field(default_factory=list)
    launch_templates: dict[str, str] = field(default_factory=dict)   # group -> launch template id


def create_fleet(session: boto3.Session, cluster: str = "kiln-demo", *, group: str = "gpu",
                 nodes_per_zone: int = 2, zones: tuple[str, ...] = ("a", "b"), base_ami: Optional[str] = None,
                 ami_family: Optional[str] = None) -> Fleet:
    """A kiln-shaped fleet: one launch template, one ASG per zone, tagged for ``cluster`` (and, for the stand-in,
    with the AMI family its nodes boot)."""
    ec2, asg, iam = session.client("ec2"), session.client("autoscaling"), session.client("iam")
    region = session.region_name
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    zone_names = [f"{region}{z}" for z in zones]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
               for i, az in enumerate(zone_names, start=1)]
    profile = f"{cluster}-node"
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    # The program's builder profile (read access to the model bucket only): the stack output builderInstanceProfile.
    builder = f"{cluster}-builder"
    iam.create_role(RoleName=builder, AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    iam.create_instance_profile(InstanceProfileName=builder)
    iam.add_role_to_instance_profile(InstanceProfileName=builder, RoleName=builder)
    if base_ami is None:
        # One of the public Amazon Linux images moto serves (a name filter keeps the call fast).
        base_ami = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"][0]["ImageId"]
    fleet = Fleet(cluster, vpc, subnets, zone_names, profile, builder, "", base_ami)
    fleet.launch_template_id = add_group(session, fleet, group, nodes_per_zone=nodes_per_zone, ami_family=ami_family)
    return fleet


def add_group(session: boto3.Session, fleet: Fleet, group: str, *, nodes_per_zone: int,
              instance_type: str = "g5.2xlarge", min_size: int = 0, ami_family: Optional[str] = None) -> str:
    """Another node group of ``fleet``: its launch template and one ASG per zone; returns the template's id."""
    ec2, asg = session.client("ec2"), session.client("autoscaling")
    lt = ec2.create_launch_template(LaunchTemplateName=f"{fleet.cluster}-{group}", LaunchTemplateData={
        "ImageId": fleet.base_ami, "InstanceType": instance_type, "IamInstanceProfile": {"Name": fleet.instance_profile},
        "MetadataOptions": {"HttpTokens": "required"}})["LaunchTemplate"]["LaunchTemplateId"]
    fleet.launch_templates[group] = lt
    for az, subnet in zip(fleet.zones, fleet.subnet_ids):
        name = f"{fleet.cluster}-{group}-{az}"
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"},
            MinSize=min_size, MaxSize=nodes_per_zone * 2 + 2, DesiredCapacity=nodes_per_zone, VPCZoneIdentifier=subnet,
            Tags=[{"Key": TAG_CLUSTER, "Value": fleet.cluster, "PropagateAtLaunch": True},
                  {"Key": TAG_NODE_GROUP, "Value": group, "PropagateAtLaunch": True},
                  *([{"Key": TAG_AMI_FAMILY, "Value": ami_family, "PropagateAtLaunch": False}]
                    if ami_family else [])])
        fleet.asgs.append(name)
    return lt


def put_model(session: boto3.Session, bucket: str, prefix: str, files: dict[str, bytes]) -> str:
    """Upload model files and their sha256sum-format MANIFEST.sha256; returns the s3:// URI."""
    import hashlib

    s3 = session.client("s3")
    kwargs = {} if session.region_name == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": session.region_name}}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    prefix = prefix.strip("/") + "/"
    lines = []
    for name, data in sorted(files.items()):
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    s3.put_object(Bucket=bucket, Key=prefix + "MANIFEST.sha256", Body=("\n".join(lines) + "\n").encode())
    return f"s3://{bucket}/{prefix}"
