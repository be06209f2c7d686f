"""Shared by the program tests: stack configs, a cached mock run, and decoders."""

from __future__ import annotations

import base64
import copy
import email
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from policies.program import ProgramRun, Registration, run_program

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
def _run_cached(frozen: str) -> ProgramRun:
    return run_program(json.loads(frozen))


def run(config: dict[str, Any]) -> ProgramRun:
    """Run ``__main__.py`` under mocks once per distinct config (runs are deterministic)."""
    return _run_cached(json.dumps(config, sort_keys=True))


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
