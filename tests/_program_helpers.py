"""Shared by the program tests: stack configs, a cached mock run, and decoders."""

from __future__ import annotations

import base64
import copy
import email
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from policies.program import KilnMocks, ProgramRun, Registration, run_program

ROOT = Path(__file__).resolve().parent.parent
AMI = "ami-0123456789abcdef0"
GPU_AMI = "ami-0fedcba9876543210"

# New VPC, one on-demand CPU group, two zones, public endpoint for one range.
BASE: dict[str, Any] = {
    "aws:region": "us-east-2",
    "kiln:clusterName": "kiln-test",
    "kiln:kubernetesVersion": "1.33",
    "kiln:availabilityZones": ["us-east-2a", "us-east-2b"],
    "kiln:vpcCidr": "10.20.0.0/16",
    "kiln:nodeAmi": AMI,
    "kiln:modelVersion": "v5",
    "kiln:modelVolumeInitRateMiBps": 250,
    "kiln:nodeGroups": [
        {"name": "cpu", "instanceTypes": ["m7i.2xlarge"], "minSize": 1, "maxSize": 5, "desiredSize": 2,
         "labels": {"team": "ml"}},
    ],
    "kiln:endpointPublicAccessCidrs": ["203.0.113.0/24"],
}

# Existing VPC, three zones, a spot GPU group with several types and an on-demand CPU group.
EXISTING_GPU_SPOT: dict[str, Any] = {
    **BASE,
    "kiln:clusterName": "kiln-gpu",
    "kiln:availabilityZones": ["us-east-2a", "us-east-2b", "us-east-2c"],
    "kiln:vpcId": "vpc-0123456789abcdef0",
    "kiln:privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb", "subnet-0cccccccccccccccc"],
    "kiln:nodeAmi": {"standard": AMI, "nvidia": GPU_AMI},
    "kiln:modelVersion": "v6",
    "kiln:modelPath": "/srv/model",
    "kiln:nodeGroups": [
        {"name": "system", "instanceTypes": ["m7i.xlarge"], "minSize": 1, "maxSize": 2, "desiredSize": 1},
        {"name": "gpu", "instanceTypes": ["g5.2xlarge", "g6.2xlarge"], "minSize": 0, "maxSize": 4,
         "desiredSize": 0, "spot": True, "gpu": True, "labels": {"workload": "training"},
         "taints": ["workload=training:NoSchedule"]},
    ],
    "kiln:endpointPublicAccessCidrs": [],
}
del EXISTING_GPU_SPOT["kiln:vpcCidr"]


# ---- the AWS account the program checks its config against (infra/awsfacts.py) ------------------------

# DescribeInstanceTypes: vCPUs, memory (MiB), GPUs and their model, as AWS reports them.
INSTANCE_TYPES: dict[str, tuple[int, int, int, str]] = {
    "m7i.large": (2, 8192, 0, ""), "m7i.xlarge": (4, 16384, 0, ""), "m7i.2xlarge": (8, 32768, 0, ""),
    "r7i.2xlarge": (8, 65536, 0, ""), "c7i.2xlarge": (8, 16384, 0, ""),
    "g5.2xlarge": (8, 32768, 1, "A10G"), "g5.4xlarge": (16, 65536, 1, "A10G"), "g6.2xlarge": (8, 32768, 1, "L4"),
    "g6.xlarge": (4, 16384, 1, "L4"), "g6e.2xlarge": (8, 65536, 1, "L40S"), "p5.48xlarge": (192, 2097152, 8, "H100"),
    # Graviton (arm64 only), Gaudi (GPUs, not NVIDIA's), Inferentia (Neuron devices, no GPU).
    "m7g.2xlarge": (8, 32768, 0, ""), "g5g.2xlarge": (8, 16384, 1, "T4g"), "dl1.24xlarge": (96, 786432, 8, "Gaudi HL-205"),
    "inf2.xlarge": (4, 16384, 0, ""),
}
GPU_MAKERS = {"Gaudi HL-205": "Habana"}                      # every other GPU here is NVIDIA's
ARM64_TYPES = {"m7g.2xlarge", "g5g.2xlarge"}
# Every AMI of the account is a kiln bake: the root volume and the model volume (DescribeImages).
MODEL_SNAPSHOT_GIB = 100


class AccountMocks(KilnMocks):
    """KilnMocks plus the Describe calls of infra/awsfacts.py, answered from ``account``.

    ``account`` keys: ``vpcCidrs`` (the existing VPC's CIDR blocks, primary first),
    ``clusters`` ({name: service range} of the EKS clusters already in the region; none
    by default), ``amis`` ({ami id: {device: snapshot GiB}}; an AMI not listed maps the
    root and ``/dev/xvdb`` with a 100 GiB snapshot), ``architectures`` ({ami id: arch};
    x86_64 by default), ``oidcAudiences`` (client IDs of the account's existing IAM OIDC
    providers; ``sts.amazonaws.com``), ``failing`` (invoke tokens that fail), ``empty``
    (invoke tokens that answer with nothing).
    Unknown instance types fail as the provider's DescribeInstanceTypes read does.
    """

    def __init__(self, account: dict[str, Any]) -> None:
        super().__init__()
        self.world = account

    def call(self, args):
        token, a = args.token, dict(args.args)
        # A provider error reaches the program as the invoke's failures (as the engine reports it).
        if token in self.world.get("failing", ()):
            return {}, [("", "UnauthorizedOperation: You are not authorized to perform this operation")]
        if token in self.world.get("empty", ()):
            return {}
        if token == "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider":
            arn = a["arn"]
            if arn.split(":")[4] != self.account:      # IAM reads only this account's providers
                return {}, [("arn", f"reading IAM OIDC Provider ({arn}): NoSuchEntity: not found")]
            return {"arn": arn, "id": arn, "url": arn.split("oidc-provider/", 1)[1],
                    "clientIdLists": self.world.get("oidcAudiences", ["sts.amazonaws.com"]), "thumbprintLists": []}
        clusters = self.world.get("clusters", {})
        if token == "aws:eks/getClusters:getClusters":
            return {"id": self.region, "names": sorted(clusters)}
        if token == "aws:eks/getCluster:getCluster" and a.get("name") in clusters:
            answer = super().call(args)
            return {**answer, "kubernetesNetworkConfigs": [
                {"ipFamily": "ipv4", "serviceIpv4Cidr": clusters[a["name"]], "serviceIpv6Cidr": ""}]}
        if token == "aws:ec2/getVpc:getVpc":
            cidrs = self.world.get("vpcCidrs", ["10.40.0.0/16"])
            return {"id": a.get("id"), "cidrBlock": cidrs[0], "cidrBlockAssociations": [
                {"associationId": f"vpc-cidr-assoc-{i}", "cidrBlock": c, "state": "associated"}
                for i, c in enumerate(cidrs)]}
        if token == "aws:ec2/getInstanceType:getInstanceType":
            name = a["instanceType"]
            if name not in INSTANCE_TYPES:
                return {}, [("instanceType", f"reading EC2 Instance Type ({name}): couldn't find resource")]
            vcpus, memory, gpus, model = INSTANCE_TYPES[name]
            gpu_info = [{"count": gpus, "manufacturer": GPU_MAKERS.get(model, "NVIDIA"), "memorySize": 24576,
                         "name": model}] if gpus else []
            return {"instanceType": name, "defaultVcpus": vcpus, "memorySize": memory, "gpuses": gpu_info,
                    "supportedArchitectures": ["arm64"] if name in ARM64_TYPES else ["i386", "x86_64"]}
        if token == "aws:ec2/getAmi:getAmi":
            [ami] = [f["values"][0] for f in a["filters"] if f["name"] == "image-id"]
            devices = self.world.get("amis", {}).get(ami, {"/dev/xvdb": MODEL_SNAPSHOT_GIB})
            mappings = [{"deviceName": "/dev/xvda", "ebs": {"snapshot_id": "snap-0root", "volume_size": "20"}}]
            mappings += [{"deviceName": d, "ebs": {"snapshot_id": f"snap-0{i}", "volume_size": str(size)}}
                         for i, (d, size) in enumerate(devices.items())]
            return {"id": ami, "imageId": ami, "blockDeviceMappings": mappings,
                    "architecture": self.world.get("architectures", {}).get(ami, "x86_64")}
        return super().call(args)


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with ``kiln:`` keys replaced (``None`` removes a key)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(f"kiln:{key}", None)
        else:
            out[f"kiln:{key}"] = value
    return out


def example_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.example.yaml").read_text())["config"]


@lru_cache(maxsize=None)
def _run_cached(frozen: str, account: str) -> ProgramRun:
    return run_program(json.loads(frozen), mocks=AccountMocks(json.loads(account)))


# A child forked by mutmut (make mutate) runs a mutant of the code: it must run the program again, not
# answer from the runs its parent cached before the fork (a mutant of infra/ would then always live).
os.register_at_fork(after_in_child=_run_cached.cache_clear)


def mapping_for_mutmut() -> bool:
    """Whether mutmut is mapping each test to the functions it runs (its "stats" pass)."""
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def program_scope(fixture_name: str, config: Any) -> str:
    """The scope of a fixture holding a program run: one run per module, except while mutmut maps tests to
    code — then every test runs the program itself, so every test that reads a run is mapped to the code it
    exercises (with one run per module only the module's first test would be, and only it would run
    against that code's mutants)."""
    return "function" if mapping_for_mutmut() else "module"


def run(config: dict[str, Any], account: dict[str, Any] | None = None) -> ProgramRun:
    """Run ``__main__.py`` under mocks (:class:`AccountMocks`) once per distinct config and account."""
    return _run_cached(json.dumps(config, sort_keys=True), json.dumps(account or {}, sort_keys=True))


def user_data(lt: Registration) -> tuple[dict, str, list[str]]:
    """Decode a launch template's user data: (nodeadm NodeConfig, shell script, part content types)."""
    doc = email.message_from_bytes(base64.b64decode(lt.inputs["userData"]))
    assert doc.get_content_type() == "multipart/mixed"
    parts = doc.get_payload()
    types = [p.get_content_type() for p in parts]
    node_config = yaml.safe_load(next(p for p in parts if p.get_content_type() == "application/node.eks.aws").get_payload())
    script = next(p for p in parts if p.get_content_type() == "text/x-shellscript").get_payload()
    return node_config, script, types


def asg_tags(asg: Registration) -> dict[str, tuple[str, bool]]:
    return {t["key"]: (t["value"], t["propagateAtLaunch"]) for t in asg.inputs["tags"]}


def of_component(run_: ProgramRun, type_: str, component: Registration) -> list[Registration]:
    return [r for r in run_.children_of(component) if r.type == type_]
