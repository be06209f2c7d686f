"""Typed stack configuration for kiln.

The whole ``kiln:`` namespace is read once, validated, and turned into frozen
dataclasses *before* any resource is declared. Validation collects every
problem and raises one :class:`ConfigError` whose lines each name the key and
the rule, e.g. ``kiln:nodeGroups[1].maxSize (2) must be >= minSize (5)``.

This module deliberately does not import ``pulumi`` at module level: the
automation and policy tooling parse the same stack files without a Pulumi
engine, so the parser works on a plain mapping (:func:`parse`), and
:func:`load` is the thin adapter over ``pulumi.Config``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from infra import lifecycle, validation
from infra.imageref import image_reference_problem
from infra.labels import Taint

NAMESPACE = "kiln"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Key:
    """One ``kiln:`` key: the single place its type, default and description are written.

    ``type`` is the Pulumi config type (``string``, ``integer``, ``array`` of strings), or None for a key holding
    objects (Pulumi's config types cannot express them; :func:`parse` validates them). ``default`` is
    :data:`REQUIRED`, a value, or None for "not set" (Pulumi.yaml then declares the type's empty value, which
    :func:`parse` reads as not set). ``{default}`` in ``description`` is replaced by the default.
    """

    name: str
    type: Optional[str]
    description: str
    default: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def text(self) -> str:
        """The description as Pulumi.yaml and the docs show it."""
        return self.description.format(default=self.default)

    @property
    def absent(self) -> Any:
        """What :func:`parse` reads when a stack leaves the key out."""
        if self.default is None and self.type == "array":
            return []
        return None if self.required else self.default

    def pulumi_declaration(self) -> dict[str, Any]:
        """The key's entry in Pulumi.yaml's ``config:`` block."""
        out: dict[str, Any] = {}
        if self.type is not None:
            out["type"] = self.type
        if self.type == "array":
            out["items"] = {"type": "string"}
        out["description"] = self.text
        if not self.required:
            out["default"] = self.default if self.default is not None else {"string": "", "array": []}.get(self.type, {})
        return out


# Every key of the kiln: namespace. Pulumi.yaml declares the same keys with these types, defaults and
# descriptions (tests/test_config.py checks it against pulumi_yaml_config()); the dataclasses below take
# their defaults from here, and parse() reads an absent key as Key.absent.
CONFIG_KEYS: tuple[Key, ...] = (
    Key("clusterName", "string",
        "Name of the EKS cluster; also the ownership tag on everything kiln creates.", REQUIRED),
    Key("kubernetesVersion", "string", "EKS Kubernetes version, e.g. \"1.33\".", REQUIRED),
    Key("availabilityZones", "array", "AZs to run in; every node group gets one ASG per AZ.", REQUIRED),
    Key("vpcCidr", "string", "CIDR of the VPC kiln creates when no vpcId is given (default {default}).",
        "10.0.0.0/16"),
    Key("vpcId", "string", "Existing VPC to use instead of creating one (requires privateSubnetIds)."),
    Key("privateSubnetIds", "array", "With vpcId: one private subnet per availability zone, in the same order."),
    Key("nodeAmi", None,
        "Baked node AMI id, or a map of AMI family (standard, nvidia) to id. Set by `automation rotate`.", REQUIRED),
    Key("modelVersion", "string",
        "Version of the model baked into nodeAmi, e.g. \"v5\". Nodes are labelled with it.", REQUIRED),
    Key("modelPath", "string", "Where the baked model lives on the node (default {default}).", "/opt/models"),
    Key("modelVolumeDevice", "string", "Device name of the EBS volume that holds the model (default {default}).",
        "/dev/xvdb"),
    Key("modelVolumeSizeGiB", "integer", "Size of the model volume in GiB (default {default}).", 100),
    Key("modelVolumeInitRateMiBps", "integer",
        "EBS volume initialization rate for the model volume, 100-300 MiB/s (default {default}).", 300),
    Key("nodeGroups", None,
        "Node groups: list of {{name, instanceTypes, minSize, maxSize, desiredSize, spot, gpu, labels, taints, "
        "volumeSizeGiB, allowSingleSpotType}}; sizes are per availability zone (each zone has its own ASG).",
        REQUIRED),
    Key("endpointPublicAccessCidrs", "array",
        "CIDRs allowed to reach the public API endpoint; empty means a private endpoint only."),
    Key("jobsNamespace", "string", "Namespace for ML Jobs that mount the model (default {default}).", "ml-jobs"),
    Key("ecrRepositories", "array", "ECR repositories to create, by name."),
    Key("ecrKeepImages", "integer", "Tagged images each ECR repository keeps (default {default}).", 10),
    Key("prefetchImages", "array", "Images every node pulls as it joins (and the bake pre-pulls)."),
    Key("autoscalerChartVersion", "string",
        "cluster-autoscaler Helm chart version (default pinned in infra/autoscaler.py)."),
    Key("ciOidc", None,
        "Optional CI roles, one per purpose: {{providerUrl, audience, subject (the deploy role), preview: {{subject, "
        "audience}}, rotation: {{subject, audience}}, stateBackend, secretsKmsKey, providerArn, allowCustomIssuer}}; "
        "providerArn reuses an existing IAM OIDC provider."),
    Key("modelBucket", "string", "S3 bucket the bake reads the model from; kiln creates a builder instance profile "
                                 "that may read only this bucket."),
    Key("serviceCidr", "string", "Kubernetes service range (default: 172.20.0.0/16, or 10.100.0.0/16 when that "
                                 "overlaps a CIDR of the VPC)."),
    Key("terminationJobGraceSeconds", "integer",
        "How long an instance an ASG terminates is held for the Jobs on its node, in seconds (default {default}; at "
        "most the lifecycle hook's global timeout less 360).", lifecycle.DEFAULT_JOB_GRACE_SECONDS),
    Key("terminationHeartbeatSeconds", "integer",
        "Heartbeat timeout of the termination lifecycle hook on every ASG, 30-7200 seconds (default {default}); the "
        "hook's global timeout is min(48 h, 100 x this).", lifecycle.DEFAULT_HEARTBEAT_SECONDS),
    Key("terminationHandlerImage", "string",
        "The termination handler image by digest (<registry>/<repository>@sha256:<64 hex>), built by the CI "
        "templates; without it no termination hook or handler is deployed."),
)
SPEC: dict[str, Key] = {k.name: k for k in CONFIG_KEYS}
# Derived views, for the callers that need only one column.
KEYS: dict[str, str] = {k.name: k.text for k in CONFIG_KEYS}
REQUIRED_KEYS = tuple(k.name for k in CONFIG_KEYS if k.required)


def default(key: str) -> Any:
    """A key's default, from the table (a dataclass field's default is this)."""
    return SPEC[key].default


def pulumi_yaml_config() -> dict[str, dict[str, Any]]:
    """Pulumi.yaml's ``config:`` block as the table declares it."""
    return {k.name: k.pulumi_declaration() for k in CONFIG_KEYS}


AMI_FAMILIES = ("standard", "nvidia")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_AMI_RE = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
_CLUSTER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
_K8S_VERSION_RE = re.compile(r"^1\.([0-9]+)$")
# The model version becomes a label value and part of a PVC name (DNS-1123).
_MODEL_VERSION_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GROUP_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_AZ_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_VPC_RE = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_TAINT_RE = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>\w+)$")
_REPO_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")


class ConfigError(ValueError):
    """Invalid stack configuration. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid kiln configuration:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class NodeGroupConfig:
    name: str
    instance_types: tuple[str, ...]
    min_size: int
    max_size: int
    desired_size: int
    spot: bool = False
    gpu: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    volume_size_gib: int = 100

    @property
    def ami_family(self) -> str:
        return "nvidia" if self.gpu else "standard"

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class CiRoleTrust:
    """Who may assume one CI role: the token subject (a pattern only for the preview role) and audience."""

    subject: str
    audience: str


@dataclass(frozen=True)
class CiOidcConfig:
    """The CI roles, one per purpose (infra/roles.py, infra/ci_roles.py).

    ``subject``/``audience`` are the **deploy** role's (``up`` and the handler image); ``preview`` (pull requests,
    read-only) and ``rotation`` (the rollout role, trusted by the rotation job) are optional.
    """

    provider_url: str
    audience: str
    subject: str
    # An IAM OIDC provider that already exists for provider_url (an account holds one per URL):
    # used instead of creating one.
    provider_arn: Optional[str] = None
    preview: Optional[CiRoleTrust] = None
    rotation: Optional[CiRoleTrust] = None
    state_backend: Optional[str] = None      # s3://bucket[/prefix]: the preview role reads it, the rotation writes it
    secrets_kms_key: Optional[str] = None    # the stack's awskms secrets provider key: both may decrypt with it

    @property
    def deploy(self) -> CiRoleTrust:
        return CiRoleTrust(self.subject, self.audience)

    @property
    def audiences(self) -> tuple[str, ...]:
        """Every audience a CI role trusts: the OIDC provider's client IDs."""
        found = [self.audience] + [r.audience for r in (self.preview, self.rotation) if r is not None]
        return tuple(dict.fromkeys(found))

    @property
    def state_bucket(self) -> Optional[str]:
        return self.state_backend.removeprefix("s3://").split("/", 1)[0] if self.state_backend else None

    @property
    def state_prefix(self) -> str:
        """The key prefix of the backend's objects (``<prefix>/`` or empty); Pulumi keeps them under ``.pulumi/``."""
        rest = self.state_backend.removeprefix("s3://").partition("/")[2].strip("/") if self.state_backend else ""
        return f"{rest}/" if rest else ""


@dataclass(frozen=True)
class TerminationConfig:
    """The termination lifecycle hook and its handler (infra/termination.py, automation/termination)."""

    job_grace_seconds: int = default("terminationJobGraceSeconds")
    heartbeat_seconds: int = default("terminationHeartbeatSeconds")
    handler_image: Optional[str] = None      # by digest; None: no hook, no handler

    @property
    def global_timeout_seconds(self) -> int:
        return lifecycle.global_timeout(self.heartbeat_seconds)


@dataclass(frozen=True)
class KilnConfig:
    cluster_name: str
    kubernetes_version: str
    availability_zones: tuple[str, ...]
    node_amis: tuple[tuple[str, str], ...]  # (family, ami id)
    model_version: str
    node_groups: tuple[NodeGroupConfig, ...]
    vpc_cidr: str = default("vpcCidr")
    vpc_id: Optional[str] = None
    private_subnet_ids: tuple[str, ...] = ()
    model_path: str = default("modelPath")
    model_volume_device: str = default("modelVolumeDevice")
    model_volume_size_gib: int = default("modelVolumeSizeGiB")
    model_volume_init_rate_mibps: int = default("modelVolumeInitRateMiBps")
    endpoint_public_access_cidrs: tuple[str, ...] = ()
    jobs_namespace: str = default("jobsNamespace")
    ecr_repositories: tuple[str, ...] = ()
    ecr_keep_images: int = default("ecrKeepImages")
    prefetch_images: tuple[str, ...] = ()
    autoscaler_chart_version: Optional[str] = None
    ci_oidc: Optional[CiOidcConfig] = None
    model_bucket: Optional[str] = None
    service_cidr: Optional[str] = None
    termination: TerminationConfig = field(default_factory=TerminationConfig)

    @property
    def uses_existing_vpc(self) -> bool:
        return self.vpc_id is not None

    @property
    def model_claim_name(self) -> str:
        return f"model-{self.model_version}"

    def ami_for(self, group: NodeGroupConfig) -> str:
        """The AMI a group boots: its family's entry (parse() makes sure a GPU group has one)."""
        return dict(self.node_amis)[group.ami_family]


# --------------------------------------------------------------------------- parsing


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, rule: str) -> None:
        self.lines.append(f"{NAMESPACE}:{key} {rule}")


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to programs as JSON strings."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError:
                return value
    return value


def _is_empty(value: Any) -> bool:
    decoded = _decode(value)
    return isinstance(decoded, (str, list, dict)) and len(decoded) == 0


def _as_int(p: _Problems, key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> Optional[int]:
    if isinstance(value, bool):
        p.add(key, f"({value!r}) must be an integer")
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        p.add(key, f"({value!r}) must be an integer")
        return None
    if minimum is not None and value < minimum:
        p.add(key, f"({value}) must be >= {minimum}")
        return None
    if maximum is not None and value > maximum:
        p.add(key, f"({value}) must be <= {maximum}")
        return None
    return value


def _as_bool(p: _Problems, key: str, value: Any) -> Optional[bool]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    p.add(key, f"({value!r}) must be true or false")
    return None


def _as_str(p: _Problems, key: str, value: Any, pattern: re.Pattern[str] | None = None, rule: str = "") -> Optional[str]:
    if not isinstance(value, str) or not value:
        p.add(key, f"({value!r}) must be a non-empty string")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        p.add(key, f"({value!r}) {rule}")
        return None
    return value


def _as_list(p: _Problems, key: str, value: Any) -> Optional[list[Any]]:
    value = _decode(value)
    if not isinstance(value, list):
        p.add(key, f"({value!r}) must be a list")
        return None
    return value


def _as_cidr(p: _Problems, key: str, value: Any) -> Optional[str]:
    try:
        return str(ipaddress.ip_network(str(value), strict=True))
    except ValueError:
        p.add(key, f"({value!r}) must be a CIDR block such as 10.0.0.0/16")
        return None


def _parse_taint(p: _Problems, key: str, value: Any) -> Optional[Taint]:
    m = _TAINT_RE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        p.add(key, f"({value!r}) must look like key=value:Effect")
        return None
    if m["effect"] not in TAINT_EFFECTS:
        p.add(key, f"({value!r}) effect must be one of {', '.join(TAINT_EFFECTS)}")
        return None
    if not _LABEL_KEY_RE.fullmatch(m["key"]):
        p.add(key, f"({value!r}) key is not a valid Kubernetes key")
        return None
    if m["value"] and not _LABEL_VALUE_RE.fullmatch(m["value"]):
        p.add(key, f"({value!r}) value must be a Kubernetes label value: at most 63 ASCII letters, digits, "
                   "'-', '_' and '.', starting and ending with a letter or digit")
        return None
    return Taint(m["key"], m["value"] or "", m["effect"])


_GROUP_FIELDS = {
    "name", "instanceTypes", "minSize", "maxSize", "desiredSize", "spot", "gpu", "labels", "taints", "volumeSizeGiB",
    "allowSingleSpotType",  # read by infra/validation.py only
}


def _parse_group(p: _Problems, i: int, raw: Any) -> Optional[NodeGroupConfig]:
    base = f"nodeGroups[{i}]"
    if not isinstance(raw, Mapping):
        p.add(base, f"({raw!r}) must be a mapping")
        return None
    before = len(p.lines)
    for unknown in sorted(set(raw) - _GROUP_FIELDS):
        p.add(f"{base}.{unknown}", f"is not a node group field (known: {', '.join(sorted(_GROUP_FIELDS))})")
    for required in ("name", "instanceTypes", "minSize", "maxSize", "desiredSize"):
        if required not in raw:
            p.add(f"{base}.{required}", "is required")
    if len(p.lines) > before:
        return None

    name = _as_str(p, f"{base}.name", raw["name"], _GROUP_NAME_RE,
                   "must be lower-case letters, digits and '-', at most 32 characters")
    types = _as_list(p, f"{base}.instanceTypes", raw["instanceTypes"])
    if types is not None:
        if not types:
            p.add(f"{base}.instanceTypes", "must list at least one instance type")
        for j, t in enumerate(types):
            _as_str(p, f"{base}.instanceTypes[{j}]", t, re.compile(r"^[a-z0-9-]+\.[a-z0-9]+$"),
                    "must be an EC2 instance type such as g5.2xlarge")
        repeated = sorted({t for t in types if isinstance(t, str) and types.count(t) > 1})
        if repeated:
            # Each type is one override of the group's ASGs: a repeat adds no capacity (and no second spot pool).
            p.add(f"{base}.instanceTypes", f"({', '.join(map(str, types))}) must not repeat an instance type "
                                           f"({', '.join(repeated)}): a repeat adds no capacity and no second spot pool")
    min_size = _as_int(p, f"{base}.minSize", raw["minSize"], minimum=0)
    max_size = _as_int(p, f"{base}.maxSize", raw["maxSize"], minimum=0)
    desired = _as_int(p, f"{base}.desiredSize", raw["desiredSize"], minimum=0)
    if min_size is not None and max_size is not None and max_size < min_size:
        p.add(f"{base}.maxSize", f"({max_size}) must be >= minSize ({min_size})")
    if desired is not None and min_size is not None and desired < min_size:
        p.add(f"{base}.desiredSize", f"({desired}) must be >= minSize ({min_size})")
    if desired is not None and max_size is not None and desired > max_size:
        p.add(f"{base}.desiredSize", f"({desired}) must be <= maxSize ({max_size})")
    if max_size is not None and max_size == 0:
        p.add(f"{base}.maxSize", "(0) must be >= 1")
    spot = _as_bool(p, f"{base}.spot", raw.get("spot", False))
    gpu = _as_bool(p, f"{base}.gpu", raw.get("gpu", False))
    volume = _as_int(p, f"{base}.volumeSizeGiB", raw.get("volumeSizeGiB", 100), minimum=20, maximum=16384)

    labels: list[tuple[str, str]] = []
    raw_labels = _decode(raw.get("labels", {}))
    if not isinstance(raw_labels, Mapping):
        p.add(f"{base}.labels", f"({raw_labels!r}) must be a map of label to value")
    else:
        for k, v in raw_labels.items():
            key = f"{base}.labels.{k}"
            if not isinstance(k, str) or not _LABEL_KEY_RE.fullmatch(k):
                p.add(key, "is not a valid Kubernetes label key")
            elif k.startswith("kiln.dev/"):
                p.add(key, "uses the kiln.dev/ prefix, which kiln reserves for its own labels")
            elif not isinstance(v, str) or not _LABEL_VALUE_RE.fullmatch(v):
                p.add(key, f"({v!r}) is not a valid Kubernetes label value")
            else:
                labels.append((k, v))

    taints: list[Taint] = []
    raw_taints = _as_list(p, f"{base}.taints", raw.get("taints", []))
    for j, t in enumerate(raw_taints or []):
        parsed = _parse_taint(p, f"{base}.taints[{j}]", t)
        if parsed is not None:
            taints.append(parsed)
    if gpu and not any(t.key == "nvidia.com/gpu" for t in taints):
        # GPU nodes repel everything that does not ask for a GPU.
        taints.append(Taint("nvidia.com/gpu", "true", "NoSchedule"))

    if len(p.lines) > before:
        return None
    return NodeGroupConfig(
        name=name, instance_types=tuple(types), min_size=min_size, max_size=max_size,
        desired_size=desired, spot=spot, gpu=gpu, labels=tuple(sorted(labels)),
        taints=tuple(taints), volume_size_gib=volume,
    )


# ---- rules, one small function each ------------------------------------------------------------


def _check_zone_count(p: _Problems, zones: list[Any]) -> None:
    # EKS refuses a cluster whose subnets are not in at least two availability zones.
    if len(zones) < 2:
        p.add("availabilityZones", f"({len(zones)} given) must list at least two zones: EKS requires subnets "
                                   "in two or more availability zones")


def _check_gpu_groups_have_an_nvidia_ami(p: _Problems, raw_ami: Any, amis: Mapping[str, str],
                                         groups: list[NodeGroupConfig]) -> None:
    """A GPU group booting the standard AMI has no driver: no nvidia.com/gpu, and the autoscaler keeps adding nodes."""
    if not amis or "nvidia" in amis:
        return
    gpu = [g.name for g in groups if g.gpu]
    if not gpu:
        return
    if isinstance(raw_ami, Mapping):
        p.add("nodeAmi.nvidia", f"is required because nodeGroups ({gpu[0]!r}) has gpu: true")
    else:
        p.add("nodeAmi", f"({raw_ami!r}) must be a map with an nvidia entry (the GPU AMI) because nodeGroups "
                         f"({gpu[0]!r}) has gpu: true; a single AMI id is the standard AMI")


def instance_size(instance_type: str) -> str:
    """The size part of an EC2 instance type: ``2xlarge`` of ``g5.2xlarge``."""
    return instance_type.split(".", 1)[1]


def _check_one_instance_size(p: _Problems, i: int, group: NodeGroupConfig) -> None:
    """cluster-autoscaler builds a group's node template from its first instance type only.

    Types of different sizes in one group make it promise too little (pods that fit
    the larger types never scale the group up) or too much. Sizes across families are
    compared exactly (vCPU, memory, GPUs) at preview time, see infra/awsfacts.py.
    """
    sizes = sorted({instance_size(t) for t in group.instance_types})
    if len(sizes) > 1:
        p.add(f"nodeGroups[{i}].instanceTypes",
              f"({', '.join(group.instance_types)}) must all be one size, not {', '.join(sizes)}: cluster-autoscaler "
              f"sizes the group's nodes from the first type ({group.instance_types[0]}); put other sizes in another group")


# Taint effects that keep a pod without the matching toleration off a node.
_REPELLING_EFFECTS = ("NoSchedule", "NoExecute")


def _check_a_group_runs_cluster_services(p: _Problems, groups: list[NodeGroupConfig]) -> None:
    """Cluster services need a node that none of a group's own taints repel, from the first ``up`` on.

    CoreDNS, cluster-autoscaler and the charts' controllers tolerate no group taint (and every
    ``gpu: true`` group carries ``nvidia.com/gpu``). On a cluster whose every group is tainted, or
    starts empty, they never run: no cluster DNS, and no autoscaler to add the nodes Jobs wait for
    (its Helm release then times out on the first ``up``). Once running, cluster-autoscaler never
    removes the last node they fit on, so ``desiredSize >= 1`` is enough.
    """
    def repels(g: NodeGroupConfig) -> bool:
        return any(t.effect in _REPELLING_EFFECTS for t in g.taints)

    if any(g.desired_size >= 1 and not repels(g) for g in groups):
        return
    tainted = [g.name for g in groups if repels(g)]
    why = []
    if tainted:
        why.append(f"{', '.join(tainted)} {'carries' if len(tainted) == 1 else 'carry'} NoSchedule/NoExecute taints"
                   + (" (gpu: true adds nvidia.com/gpu)" if any(g.gpu for g in groups) else ""))
    empty = [g.name for g in groups if not repels(g)]
    if empty:
        why.append(f"{', '.join(empty)} {'starts' if len(empty) == 1 else 'start'} with no node (desiredSize 0)")
    p.add("nodeGroups", f"must include a group without NoSchedule/NoExecute taints and with desiredSize >= 1: "
                        f"{'; '.join(why)}, so CoreDNS and cluster-autoscaler, which tolerate no group taint, would "
                        "have no node to run on; add a small CPU group, e.g. {name: system, instanceTypes: "
                        "[m7i.large], minSize: 1, maxSize: 2, desiredSize: 1}")


_CI_OIDC_FIELDS = {"providerUrl", "audience", "subject", "providerArn", "allowCustomIssuer",  # allowCustomIssuer: infra/validation.py
                   "preview", "rotation", "stateBackend", "secretsKmsKey"}
_CI_ROLE_FIELDS = {"subject", "audience"}
_STATE_BACKEND_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$")
_KMS_KEY_ARN_RE = re.compile(r"^arn:aws(-[a-z-]+)?:kms:[a-z]{2}(-[a-z]+)+-[0-9]:[0-9]{12}:key/[0-9a-f-]{36}$|"
                             r"^arn:aws(-[a-z-]+)?:kms:[a-z]{2}(-[a-z]+)+-[0-9]:[0-9]{12}:key/mrk-[0-9a-f]{32}$")
_OIDC_PROVIDER_ARN_RE = re.compile(r"^arn:aws(-[a-z-]+)?:iam::[0-9]{12}:oidc-provider/(?P<issuer>\S+)$")


def _parse_ci_provider_arn(p: _Problems, value: Any, provider_url: Optional[str]) -> Optional[str]:
    """An existing IAM OIDC provider (an account holds one per URL; creating a second fails ``up``)."""
    if value is None:
        return None
    arn = _as_str(p, "ciOidc.providerArn", value, _OIDC_PROVIDER_ARN_RE,
                  "must be an IAM OIDC provider ARN such as "
                  "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com")
    if arn is None or provider_url is None:
        return None
    issuer = _OIDC_PROVIDER_ARN_RE.fullmatch(arn)["issuer"].rstrip("/")
    expected = provider_url.removeprefix("https://").rstrip("/")
    if issuer != expected:
        p.add("ciOidc.providerArn", f"({arn!r}) is the provider for {issuer}, not for ciOidc.providerUrl ({provider_url})")
        return None
    return arn


def _parse_ci_role(p: _Problems, purpose: str, value: Any, default_audience: Optional[str]) -> Optional[CiRoleTrust]:
    """``ciOidc.preview`` / ``ciOidc.rotation``: {subject, audience (default: ciOidc.audience)}; what the subject
    may be is infra/validation.py's (per purpose)."""
    if value is None:
        return None
    key = f"ciOidc.{purpose}"
    if not isinstance(value, Mapping):
        p.add(key, f"({value!r}) must be a map with subject (and optionally audience)")
        return None
    for unknown in sorted(set(value) - _CI_ROLE_FIELDS):
        p.add(f"{key}.{unknown}", f"is not a field of {key} (known: {', '.join(sorted(_CI_ROLE_FIELDS))})")
    subject = _as_str(p, f"{key}.subject", value.get("subject"))
    audience = default_audience if value.get("audience") is None else _as_str(p, f"{key}.audience", value.get("audience"))
    return CiRoleTrust(subject, audience) if subject and audience else None


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _parse_model_bucket(p: _Problems, value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str) and value.startswith("s3://"):
        p.add("modelBucket", f"({value!r}) must be a bucket name alone, without s3:// or a prefix")
        return None
    bucket = _as_str(p, "modelBucket", value, _BUCKET_RE,
                     "must be an S3 bucket name: 3-63 lower-case letters, digits, '.' and '-'")
    if bucket is None:
        return None
    try:
        ipaddress.ip_address(bucket)
        p.add("modelBucket", f"({bucket!r}) must not be formatted as an IP address")
        return None
    except ValueError:
        pass
    if ".." in bucket or bucket.startswith("xn--") or bucket.endswith(("-s3alias", "--ol-s3")):
        p.add("modelBucket", f"({bucket!r}) is not a valid S3 bucket name")
        return None
    return bucket


# EKS: the service range lies in one of these blocks, is /12 to /24, and overlaps no CIDR of the VPC.
SERVICE_CIDR_BLOCKS = tuple(ipaddress.ip_network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _parse_service_cidr(p: _Problems, value: Any, new_vpc_cidr: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    cidr = _as_cidr(p, "serviceCidr", value)
    if cidr is None:
        return None
    net = ipaddress.ip_network(cidr)
    if net.version != 4 or not any(net.subnet_of(block) for block in SERVICE_CIDR_BLOCKS):
        p.add("serviceCidr", f"({cidr}) must lie in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")
        return None
    if not 12 <= net.prefixlen <= 24:
        p.add("serviceCidr", f"({cidr}) must be between /12 and /24")
        return None
    if new_vpc_cidr is not None and net.overlaps(ipaddress.ip_network(new_vpc_cidr)):
        p.add("serviceCidr", f"({cidr}) must not overlap vpcCidr ({new_vpc_cidr})")
        return None
    return cidr


# ---- the termination hook and its handler ------------------------------------------------------------------
# Types and AWS's ranges here; whether the Job grace fits the hook's global timeout is infra/validation.py's.


def _parse_termination(p: _Problems, raw: Mapping[str, Any]) -> TerminationConfig:
    heartbeat = _as_int(p, "terminationHeartbeatSeconds", _value(raw, "terminationHeartbeatSeconds"),
                        minimum=lifecycle.MIN_HEARTBEAT_SECONDS, maximum=lifecycle.MAX_HEARTBEAT_SECONDS)
    grace = _as_int(p, "terminationJobGraceSeconds", _value(raw, "terminationJobGraceSeconds"), minimum=0)
    image = raw.get("terminationHandlerImage")
    if image is not None:
        problem = image_reference_problem(image, by_digest=True)  # infra/imageref.py, as for prefetchImages
        if problem:
            p.add("terminationHandlerImage", problem)
            image = None
    return TerminationConfig(grace if grace is not None else default("terminationJobGraceSeconds"),
                             heartbeat if heartbeat is not None else default("terminationHeartbeatSeconds"), image)


def _node_images(prefetch: list[str], termination: TerminationConfig) -> tuple[str, ...]:
    """What every node pre-pulls (and the bake bakes): the configured images and the handler's, once each."""
    return tuple(dict.fromkeys([*prefetch, *([termination.handler_image] if termination.handler_image else [])]))


def _value(raw: Mapping[str, Any], key: str) -> Any:
    """The stack's value for ``key``, or what an absent key means (the table's default, [] for a list)."""
    return raw.get(key, SPEC[key].absent)


def _required(p: _Problems, raw: Mapping[str, Any], key: str) -> Any:
    if raw.get(key) in (None, ""):
        p.add(key, "is required")
        return None
    return raw[key]


def _known_keys(p: _Problems, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys without their ``kiln:`` prefix, empty values dropped (not set); unknown keys are problems."""
    raw = {k.split(":", 1)[1] if k.startswith(NAMESPACE + ":") else k: v for k, v in raw.items()}
    raw = {k: v for k, v in raw.items() if k in REQUIRED_KEYS or not _is_empty(v)}
    for unknown in sorted(set(raw) - set(KEYS)):
        p.add(unknown, "is not a kiln configuration key")
    return raw


def _parse_cluster(p: _Problems, raw: Mapping[str, Any]) -> dict[str, Any]:
    cluster_name = _required(p, raw, "clusterName")
    if cluster_name is not None:
        cluster_name = _as_str(p, "clusterName", cluster_name, _CLUSTER_RE,
                               "must start with a letter and contain only letters, digits and '-'")
    k8s = _required(p, raw, "kubernetesVersion")
    if k8s is not None:
        k8s = _as_str(p, "kubernetesVersion", str(k8s), _K8S_VERSION_RE, "must look like 1.33")
        if k8s is not None and int(_K8S_VERSION_RE.fullmatch(k8s).group(1)) < 29:
            p.add("kubernetesVersion", f"({k8s!r}) must be >= 1.29 (AL2023 nodeadm and access entries)")
            k8s = None
    return {"cluster_name": cluster_name, "kubernetes_version": k8s}


def _parse_zones(p: _Problems, raw: Mapping[str, Any]) -> list[str]:
    zones: list[str] = []
    raw_zones = _required(p, raw, "availabilityZones")
    if raw_zones is not None:
        lst = _as_list(p, "availabilityZones", raw_zones)
        if lst is not None:
            _check_zone_count(p, lst)
            for i, z in enumerate(lst):
                if _as_str(p, f"availabilityZones[{i}]", z, _AZ_RE, "must be an availability zone such as us-east-2a"):
                    zones.append(z)
            if len(set(zones)) != len(zones):
                p.add("availabilityZones", "must not repeat a zone")
            # Which region the zones are in (one, existing, the stack's): infra/validation.py.
    return zones


def _parse_vpc_cidr(p: _Problems, raw: Mapping[str, Any]) -> Optional[str]:
    vpc_cidr = _as_cidr(p, "vpcCidr", _value(raw, "vpcCidr"))
    # IPv6 is refused by infra/validation.py (a VPC's primary CIDR is IPv4): one error per mistake.
    net = ipaddress.ip_network(vpc_cidr) if vpc_cidr is not None else None
    if net is not None and net.version == 4 and net.prefixlen > 20:
        p.add("vpcCidr", f"({vpc_cidr}) must be /20 or larger to hold a public and a private subnet per zone")
    elif net is not None and net.version == 4 and net.prefixlen < 16:
        p.add("vpcCidr", f"({vpc_cidr}) must be /16 or smaller: a VPC's CIDR block is /16 to /28 (EC2 refuses a larger one)")
    return vpc_cidr


def _parse_existing_vpc(p: _Problems, raw: Mapping[str, Any], zones: list[str]) -> tuple[Optional[str], list[str]]:
    vpc_id = raw.get("vpcId")
    subnet_ids: list[str] = []
    if vpc_id is not None:
        vpc_id = _as_str(p, "vpcId", vpc_id, _VPC_RE, "must be a VPC id such as vpc-0abc12345")
        raw_subnets = raw.get("privateSubnetIds")
        if raw_subnets is None:
            p.add("privateSubnetIds", "is required when vpcId is set")
        else:
            lst = _as_list(p, "privateSubnetIds", raw_subnets) or []
            for i, s in enumerate(lst):
                if _as_str(p, f"privateSubnetIds[{i}]", s, _SUBNET_RE, "must be a subnet id such as subnet-0abc12345"):
                    subnet_ids.append(s)
            if zones and len(lst) != len(zones):
                p.add("privateSubnetIds", f"({len(lst)} given) must list one subnet per availability zone ({len(zones)})")
    elif raw.get("privateSubnetIds") is not None:
        p.add("privateSubnetIds", "is only used with vpcId")
    return vpc_id, subnet_ids


def _parse_amis(p: _Problems, raw: Mapping[str, Any]) -> dict[str, str]:
    amis: dict[str, str] = {}
    raw_ami = _required(p, raw, "nodeAmi")
    if raw_ami is None:
        return amis
    raw_ami = _decode(raw_ami)
    if isinstance(raw_ami, str):
        if _as_str(p, "nodeAmi", raw_ami, _AMI_RE, "must be an AMI id such as ami-0123456789abcdef0"):
            amis["standard"] = raw_ami
    elif isinstance(raw_ami, Mapping):
        for fam, ami in raw_ami.items():
            if fam not in AMI_FAMILIES:
                p.add(f"nodeAmi.{fam}", f"is not an AMI family (known: {', '.join(AMI_FAMILIES)})")
            elif _as_str(p, f"nodeAmi.{fam}", ami, _AMI_RE, "must be an AMI id such as ami-0123456789abcdef0"):
                amis[fam] = ami
        if "standard" not in raw_ami:
            p.add("nodeAmi.standard", "is required when nodeAmi is a map")
    else:
        p.add("nodeAmi", f"({raw_ami!r}) must be an AMI id or a map of family to AMI id")
    return amis


def _parse_model(p: _Problems, raw: Mapping[str, Any]) -> dict[str, Any]:
    model_version = _required(p, raw, "modelVersion")
    if model_version is not None:
        model_version = _as_str(p, "modelVersion", str(model_version), _MODEL_VERSION_RE,
                                "must be lower-case letters, digits, '.' and '-' (it becomes a label value)")
    model_path = _as_str(p, "modelPath", _value(raw, "modelPath"), re.compile(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$"),
                         "must be an absolute path other than /, of ASCII letters, digits, '.', '_', '-' and '/', "
                         "without a trailing '/'")
    if model_path is not None and ".." in model_path.split("/"):
        p.add("modelPath", f"({model_path!r}) must not contain '..'")
    device = _as_str(p, "modelVolumeDevice", _value(raw, "modelVolumeDevice"),
                     re.compile(r"^/dev/(sd|xvd)[b-z]$"), "must be a secondary EBS device name such as /dev/xvdb")
    model_size = _as_int(p, "modelVolumeSizeGiB", _value(raw, "modelVolumeSizeGiB"), minimum=1, maximum=16384)
    init_rate = _as_int(p, "modelVolumeInitRateMiBps", _value(raw, "modelVolumeInitRateMiBps"), minimum=100, maximum=300)
    return {"model_version": model_version, "model_path": model_path, "model_volume_device": device,
            "model_volume_size_gib": model_size, "model_volume_init_rate_mibps": init_rate}


def _parse_node_groups(p: _Problems, raw: Mapping[str, Any]) -> list[NodeGroupConfig]:
    groups: list[NodeGroupConfig] = []
    raw_groups = _required(p, raw, "nodeGroups")
    if raw_groups is None:
        return groups
    lst = _as_list(p, "nodeGroups", raw_groups)
    if lst is None:
        return groups
    if not lst:
        p.add("nodeGroups", "must define at least one node group")
    for i, g in enumerate(lst):
        parsed = _parse_group(p, i, g)
        if parsed is not None:
            _check_one_instance_size(p, i, parsed)
            groups.append(parsed)
    seen: set[str] = set()
    for i, g in enumerate(groups):
        if g.name in seen:
            p.add(f"nodeGroups[{i}].name", f"({g.name!r}) is used by another node group")
        seen.add(g.name)
    if groups and len(groups) == len(lst):      # judged only once every group is valid
        _check_a_group_runs_cluster_services(p, groups)
    return groups


def _parse_endpoint_cidrs(p: _Problems, raw: Mapping[str, Any]) -> list[str]:
    cidrs: list[str] = []
    for i, c in enumerate(_as_list(p, "endpointPublicAccessCidrs", _value(raw, "endpointPublicAccessCidrs")) or []):
        parsed = _as_cidr(p, f"endpointPublicAccessCidrs[{i}]", c)
        if parsed is not None:
            if ipaddress.ip_network(parsed).prefixlen == 0:
                p.add(f"endpointPublicAccessCidrs[{i}]", f"({c}) must not open the API endpoint to the whole internet")
            else:
                cidrs.append(parsed)
    return cidrs


def _parse_registry(p: _Problems, raw: Mapping[str, Any]) -> tuple[list[str], Optional[int], list[str]]:
    """ECR repositories, how many images each keeps, and the images every node pre-pulls."""
    repos: list[str] = []
    for i, r in enumerate(_as_list(p, "ecrRepositories", _value(raw, "ecrRepositories")) or []):
        if _as_str(p, f"ecrRepositories[{i}]", r, _REPO_RE, "must be a valid ECR repository name"):
            if not 2 <= len(r) <= 256:
                p.add(f"ecrRepositories[{i}]", f"({r[:40]!r}…, {len(r)} characters) must be 2 to 256 characters (ECR's limit)")
            else:
                repos.append(r)
    if len(set(repos)) != len(repos):
        p.add("ecrRepositories", "must not repeat a repository")
    keep = _as_int(p, "ecrKeepImages", _value(raw, "ecrKeepImages"), minimum=1, maximum=1000)
    images: list[str] = []
    for i, img in enumerate(_as_list(p, "prefetchImages", _value(raw, "prefetchImages")) or []):
        problem = image_reference_problem(img)
        if problem:
            p.add(f"prefetchImages[{i}]", problem)
        else:
            images.append(img)
    return repos, keep, images


def _parse_autoscaler_chart(p: _Problems, raw: Mapping[str, Any]) -> Optional[str]:
    chart = raw.get("autoscalerChartVersion")
    if chart is None:
        return None
    return _as_str(p, "autoscalerChartVersion", str(chart), re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$"),
                   "must be a chart version such as 9.46.6")


def _parse_ci_oidc(p: _Problems, raw: Mapping[str, Any]) -> Optional[CiOidcConfig]:
    raw_ci = _decode(raw.get("ciOidc"))
    if raw_ci is None:
        return None
    if not isinstance(raw_ci, Mapping):
        p.add("ciOidc", f"({raw_ci!r}) must be a map with providerUrl, audience and subject")
        return None
    url = _as_str(p, "ciOidc.providerUrl", raw_ci.get("providerUrl"), re.compile(r"^https://[^\s/]+(/\S*)?$"),
                  "must be an https:// URL")
    aud = _as_str(p, "ciOidc.audience", raw_ci.get("audience"))
    sub = _as_str(p, "ciOidc.subject", raw_ci.get("subject"))
    if sub is not None and sub.strip() in ("*", "repo:*"):
        p.add("ciOidc.subject", f"({sub!r}) must name one repository (and branch), not any")
        sub = None
    for unknown in sorted(set(raw_ci) - _CI_OIDC_FIELDS):
        p.add(f"ciOidc.{unknown}", f"is not a ciOidc field (known: {', '.join(sorted(_CI_OIDC_FIELDS))})")
    provider_arn = _parse_ci_provider_arn(p, raw_ci.get("providerArn"), url)
    preview = _parse_ci_role(p, "preview", _decode(raw_ci.get("preview")), aud)
    rotation = _parse_ci_role(p, "rotation", _decode(raw_ci.get("rotation")), aud)
    backend = None if raw_ci.get("stateBackend") is None else _as_str(
        p, "ciOidc.stateBackend", raw_ci.get("stateBackend"), _STATE_BACKEND_RE,
        "must be the stack's S3 state backend, s3://BUCKET or s3://BUCKET/PREFIX")
    kms_key = None if raw_ci.get("secretsKmsKey") is None else _as_str(
        p, "ciOidc.secretsKmsKey", raw_ci.get("secretsKmsKey"), _KMS_KEY_ARN_RE,
        "must be the key ARN of the stack's awskms secrets provider (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    if url and aud and sub:
        return CiOidcConfig(url, aud, sub, provider_arn, preview, rotation, backend, kms_key)
    return None


def parse(raw: Mapping[str, Any], region: Optional[str] = None) -> KilnConfig:
    """Validate a mapping of kiln keys (without the ``kiln:`` prefix).

    Values may be native (YAML) or JSON strings (how Pulumi passes objects).
    ``region`` is the stack's AWS region (``aws:region``), when known: zones must be in it.
    Raises :class:`ConfigError` naming every offending key. Each area is read by its own function, in this
    order (the order problems are listed in); rules across areas run once both sides are read.
    """
    p = _Problems()
    raw = _known_keys(p, raw)
    cluster = _parse_cluster(p, raw)
    zones = _parse_zones(p, raw)
    vpc_cidr = _parse_vpc_cidr(p, raw)
    vpc_id, subnet_ids = _parse_existing_vpc(p, raw, zones)
    amis = _parse_amis(p, raw)
    model = _parse_model(p, raw)
    groups = _parse_node_groups(p, raw)
    _check_gpu_groups_have_an_nvidia_ami(p, _decode(raw.get("nodeAmi")), amis, groups)
    cidrs = _parse_endpoint_cidrs(p, raw)
    namespace = _as_str(p, "jobsNamespace", _value(raw, "jobsNamespace"), _DNS_LABEL_RE, "must be a DNS-1123 label")
    repos, keep, images = _parse_registry(p, raw)
    chart = _parse_autoscaler_chart(p, raw)
    ci = _parse_ci_oidc(p, raw)
    model_bucket = _parse_model_bucket(p, raw.get("modelBucket"))
    service_cidr = _parse_service_cidr(p, raw.get("serviceCidr"), None if vpc_id is not None else vpc_cidr)
    termination = _parse_termination(p, raw)

    for key, rule in validation.problems(raw, region):  # what well-formed values mean (infra/validation.py)
        p.add(key, rule)
    if p.lines:
        raise ConfigError(p.lines)
    return KilnConfig(
        **cluster, availability_zones=tuple(zones), node_amis=tuple(sorted(amis.items())),
        node_groups=tuple(groups), vpc_cidr=vpc_cidr, vpc_id=vpc_id, private_subnet_ids=tuple(subnet_ids), **model,
        endpoint_public_access_cidrs=tuple(cidrs), jobs_namespace=namespace, ecr_repositories=tuple(repos),
        ecr_keep_images=keep, prefetch_images=_node_images(images, termination), autoscaler_chart_version=chart,
        ci_oidc=ci, model_bucket=model_bucket, service_cidr=service_cidr, termination=termination,
    )


def load(get: Optional[Callable[[str], Any]] = None) -> KilnConfig:
    """Read the ``kiln:`` namespace from the running Pulumi program and validate it."""
    if get is None:
        import pulumi

        cfg = pulumi.Config(NAMESPACE)
        get = cfg.get
    raw = {key: get(key) for key in KEYS}
    return parse({k: v for k, v in raw.items() if v is not None}, region=stack_region())


def stack_region(config: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The stack's AWS region as the AWS provider resolves it: ``aws:region``, else AWS_REGION / AWS_DEFAULT_REGION.

    ``config`` is a stack file's ``config:`` mapping; without it, the running program's config.
    """
    if config is not None:
        region = config.get("aws:region")
    else:
        import pulumi

        region = pulumi.Config("aws").get("region")
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _stack_file_loader():
    """A PyYAML loader that reads a stack file as the Pulumi CLI does (Go's yaml.v3), not as YAML 1.1.

    * A key given twice is an error (yaml.v3: "mapping key already defined"), never "the last one wins".
    * Plain scalars resolve by YAML 1.2's core schema: only ``true``/``false`` are booleans (``yes``, ``on`` stay
      strings), no base-60 numbers (``16:40`` stays a string), ``0o17`` and ``0x1f`` are integers, and dates stay
      strings. Otherwise the offline check would judge a different config than the one Pulumi hands the program.
    """
    import yaml

    class StackFileLoader(yaml.SafeLoader):
        pass

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
               "tag:yaml.org,2002:timestamp"}
    StackFileLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    StackFileLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                          list("tTfF"))
    StackFileLoader.add_implicit_resolver("tag:yaml.org,2002:int",
                                          re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
    StackFileLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def construct_int(loader, node):
        text = loader.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text, 16)
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        return sign * (int(digits, 8) if len(digits) > 1 and digits.startswith("0") and set(digits) <= set("01234567")
                       else int(digits))

    def construct_mapping(loader, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first at line {seen[key] + 1}); Pulumi refuses "
                                "the file", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StackFileLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    StackFileLoader.add_constructor("tag:yaml.org,2002:map", lambda loader, node: _mapping(loader, node, construct_mapping))
    return StackFileLoader


def _mapping(loader, node, construct_mapping):
    data: dict[Any, Any] = {}
    yield data
    data.update(construct_mapping(loader, node))


def read_stack_yaml(text: str) -> Any:
    """A stack file's document, read as Pulumi reads it (see :func:`_stack_file_loader`); raises ``yaml.YAMLError``."""
    import yaml

    return yaml.load(text, Loader=_stack_file_loader())  # noqa: S506 - a SafeLoader subclass


def load_stack_file(path: str) -> KilnConfig:
    """Parse a ``Pulumi.<stack>.yaml`` file (secure values are not needed by kiln keys)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        try:
            doc = read_stack_yaml(fh.read()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    config = doc.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError([f"{path}: 'config' must be a mapping"])
    return parse({k: v for k, v in config.items() if str(k).startswith(NAMESPACE + ":")}, region=stack_region(config))
