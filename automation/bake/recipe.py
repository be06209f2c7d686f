"""What a bake is made of, validated, and the recipe hash over all of it.

Two bakes with the same recipe hash produce the same image, so an AMI tagged
with the hash is reused instead of rebuilt. The hash covers every input: base
AMI, model version and location, the model's checksum manifest (so new bytes
under the same URI make a new image), the prefetch images, the volume layout,
the builder instance type and the builder script itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Optional

from infra.config import default as config_default
from infra.imageref import image_reference_problem
from infra.images import NODE_SYSTEM_IMAGES
from infra.labels import BAKE_LOG_GROUP

TAG_MODEL_VERSION = "kiln:model-version"
TAG_BASE_AMI = "kiln:base-ami"
TAG_RECIPE = "kiln:recipe"
TAG_FAMILY = "kiln:ami-family"       # standard | nvidia: lookups pick the AMI of a group's family
MANIFEST_NAME = "MANIFEST.sha256"

_AMI_RE = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
_S3_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<prefix>.*))?$")
_VERSION_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# A CloudWatch Logs group name ([.-_/#A-Za-z0-9], at most 512) that is /kiln/bake or below it.
_LOG_GROUP_RE = re.compile(re.escape(BAKE_LOG_GROUP) + r"(/[.\-_/#A-Za-z0-9]+)?")
_KMS_RE = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]+)"
                     r"|[0-9a-f-]{36}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]+)$")


class BakeInputError(ValueError):
    """Bad bake input; the message names the flag."""


def builder_script() -> str:
    return resources.files("automation.bake").joinpath("builder.sh").read_text(encoding="utf-8")


def split_s3_uri(uri: str) -> tuple[str, str]:
    m = _S3_RE.fullmatch(uri or "")
    if not m:
        raise BakeInputError(f"--model-uri ({uri!r}) must look like s3://bucket/prefix/")
    prefix = (m["prefix"] or "").strip("/")
    return m["bucket"], (prefix + "/" if prefix else "")


@dataclass(frozen=True)
class BakeRequest:
    model_version: str
    model_uri: str
    subnet_id: str
    instance_profile: str
    kubernetes_version: str = "1.33"
    base_ami: Optional[str] = None          # None: the EKS-optimized AL2023 AMI from SSM
    ami_family: str = "standard"            # standard | nvidia
    prefetch_images: tuple[str, ...] = ()
    model_path: str = config_default("modelPath")
    model_device: str = config_default("modelVolumeDevice")
    model_volume_size_gib: int = config_default("modelVolumeSizeGiB")
    instance_type: str = "m6i.2xlarge"
    share_with_accounts: tuple[str, ...] = ()
    copy_to_regions: tuple[str, ...] = ()
    # CloudWatch Logs group for the builder's command output: /kiln/bake or below, the only groups kiln's builder
    # role may write (None: the command output stays in SSM only).
    log_group: Optional[str] = BAKE_LOG_GROUP
    step_timeout_seconds: int = 3600
    root_volume_gib: Optional[int] = None   # None: sized from the base AMI's root and the images (baker.root_size)
    kms_key_id: Optional[str] = None        # customer-managed key for the builder's volumes (and so the AMI)

    def __post_init__(self) -> None:
        problems = []
        if not _VERSION_RE.fullmatch(self.model_version or ""):
            problems.append(f"--model-version ({self.model_version!r}) must be lower-case letters, digits, '.' and '-'")
        try:
            split_s3_uri(self.model_uri)
        except BakeInputError as e:
            problems.append(str(e))
        if self.base_ami is not None and not _AMI_RE.fullmatch(self.base_ami):
            problems.append(f"--base-ami ({self.base_ami!r}) must be an AMI id such as ami-0123456789abcdef0")
        if not _SUBNET_RE.fullmatch(self.subnet_id or ""):
            problems.append(f"--subnet-id ({self.subnet_id!r}) must be a subnet id (or give --stack)")
        if not self.instance_profile:
            problems.append("--instance-profile is required (or give --stack)")
        if self.ami_family not in ("standard", "nvidia"):
            problems.append(f"--ami-family ({self.ami_family!r}) must be standard or nvidia")
        if not re.fullmatch(r"1\.\d+", self.kubernetes_version or ""):
            problems.append(f"--kubernetes-version ({self.kubernetes_version!r}) must look like 1.33")
        for image in self.prefetch_images:  # the rule kiln:prefetchImages follows
            problem = image_reference_problem(image)
            if problem:
                problems.append(f"--prefetch-image {problem}")
        for a in self.share_with_accounts:
            if not _ACCOUNT_RE.fullmatch(a):
                problems.append(f"--share-with ({a!r}) must be a 12-digit account id")
        for r in self.copy_to_regions:
            if not _REGION_RE.fullmatch(r):
                problems.append(f"--copy-to-region ({r!r}) must be a region such as eu-west-1")
        if self.log_group is not None and not (_LOG_GROUP_RE.fullmatch(self.log_group) and len(self.log_group) <= 512):
            problems.append(f"--log-group ({self.log_group!r}) must be {BAKE_LOG_GROUP} or a group below it, such as "
                            f"{BAKE_LOG_GROUP}/prod: the builder's role writes CloudWatch Logs only there")
        if self.root_volume_gib is not None and not 8 <= self.root_volume_gib <= 16384:
            problems.append(f"--root-volume-gib ({self.root_volume_gib}) must be between 8 and 16384")
        if self.kms_key_id is not None and not _KMS_RE.fullmatch(self.kms_key_id):
            problems.append(f"--kms-key ({self.kms_key_id!r}) must be a KMS key id, key ARN or alias")
        if self.kms_key_id is not None and self.kms_key_id.split(":")[-1].startswith("alias/aws/"):
            problems.append(f"--kms-key ({self.kms_key_id}) is an AWS managed key; use a customer-managed key")
        if self.share_with_accounts and not self.kms_key_id:
            problems.append("--share-with needs --kms-key (a customer-managed key): snapshots encrypted with the "
                            "default aws/ebs key cannot be used by other accounts")
        if problems:
            raise BakeInputError("; ".join(problems))

    @property
    def images_to_pull(self) -> tuple[str, ...]:
        """The prefetch images plus the images every kiln node runs before its first Job."""
        return tuple(dict.fromkeys((*self.prefetch_images, *NODE_SYSTEM_IMAGES)))

    @property
    def base_ami_parameter(self) -> str:
        return (f"/aws/service/eks/optimized-ami/{self.kubernetes_version}/amazon-linux-2023/"
                f"x86_64/{self.ami_family}/recommended/image_id")


@dataclass(frozen=True)
class Recipe:
    """Every input of one bake, resolved (base AMI known, manifest read)."""

    base_ami: str
    model_version: str
    model_uri: str
    manifest_sha256: str
    prefetch_images: tuple[str, ...]
    model_path: str
    model_device: str
    model_volume_size_gib: int
    instance_type: str
    kubernetes_version: str
    ami_family: str
    root_volume_gib: int = 0
    kms_key_id: str = ""
    builder_script_sha256: str = field(default_factory=lambda: hashlib.sha256(builder_script().encode()).hexdigest())

    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def recipe_for(request: BakeRequest, base_ami: str, manifest: bytes, root_volume_gib: int = 0) -> Recipe:
    return Recipe(
        base_ami=base_ami, model_version=request.model_version, model_uri=request.model_uri.rstrip("/") + "/",
        manifest_sha256=hashlib.sha256(manifest).hexdigest(), prefetch_images=tuple(sorted(request.images_to_pull)),
        model_path=request.model_path, model_device=request.model_device,
        model_volume_size_gib=request.model_volume_size_gib, instance_type=request.instance_type,
        kubernetes_version=request.kubernetes_version, ami_family=request.ami_family,
        root_volume_gib=root_volume_gib, kms_key_id=request.kms_key_id or "",
    )
