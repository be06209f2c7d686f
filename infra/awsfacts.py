"""What the stack file cannot say: facts of the AWS account the config is checked against.

These decide whether a valid-looking config works, and only the account
knows them:

* the CIDRs an **existing VPC** holds (primary and secondary): EKS refuses a
  Kubernetes service range that overlaps any of them;
* the **running cluster** of that name, if an earlier ``up`` created it: its
  service range cannot change (a new one replaces the cluster), so it is kept;
* the **sizes of the instance types**: cluster-autoscaler builds a group's node
  template from its first type only, so every type of a group must have the same
  vCPUs, memory and GPUs; and which GPU they carry (the
  ``k8s.amazonaws.com/accelerator`` label). Whether a ``gpu: true`` group's
  types have an NVIDIA GPU at all is decided from the type's family, offline, by
  ``infra/validation.py`` (``infra/instance_types.py``): one rule, one message,
  in every tool that parses the stack;
* the **client IDs of an existing CI OIDC provider** (``ciOidc.providerArn``):
  STS refuses a token whose audience the provider does not list;
* the **model snapshot in each node AMI**: EC2 refuses a launch whose volume is
  smaller than its snapshot, and an AMI without a snapshot on the model device
  was not baked by kiln (its nodes would find no model).

:func:`lookup` reads them with Pulumi invokes (DescribeVpcs, ListClusters and
DescribeCluster, DescribeInstanceTypes, DescribeImages, GetOpenIDConnectProvider), which run in ``pulumi
preview`` as in ``up``; ``__main__.py`` calls it before declaring any resource, so
a problem stops the program exactly like a config error
(:class:`~infra.config.ConfigError`, every line naming its key). :func:`plan` is
pure: it turns config and facts into what the program declares.

Fail closed: in a real ``preview``/``up`` a lookup that fails, or that answers
without the fact, is an error naming its key — a check is never skipped. Only
when the program runs under Pulumi's mocks (the tests and ``python -m policies
check``, which have no account) is a fact the mocks do not answer treated as
unknown, and the rule that needs it skipped with a warning.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from infra.config import NAMESPACE, ConfigError, KilnConfig

# EKS's own choice when no range is given: 172.20.0.0/16, else 10.100.0.0/16.
SERVICE_CIDR_CANDIDATES = ("172.20.0.0/16", "10.100.0.0/16")

# Values of the accelerator label (infra/labels.py LABEL_ACCELERATOR): cluster-autoscaler's AWS provider's
# names for the GPU types it knows (aws_cloud_provider.go availableGPUTypes); other GPUs get nvidia-<name>.
GENERIC_ACCELERATOR = "nvidia"
_CA_GPU_NAMES = {
    "K80": "nvidia-tesla-k80", "P100": "nvidia-tesla-p100", "V100": "nvidia-tesla-v100",
    "T4": "nvidia-tesla-t4", "A100": "nvidia-tesla-a100", "A10G": "nvidia-a10g",
    "L4": "nvidia-l4", "L40S": "nvidia-l40s",
}


@dataclass(frozen=True)
class InstanceSpec:
    vcpus: int
    memory_mib: int
    gpus: int = 0
    gpu_names: tuple[str, ...] = ()    # e.g. ("A10G",)
    gpu_makers: tuple[str, ...] = ()   # e.g. ("NVIDIA",)
    architectures: tuple[str, ...] = ("x86_64",)    # what AMIs it boots: x86_64, arm64, ...

    def __str__(self) -> str:
        gpus = f", {self.gpus} GPU ({'/'.join(self.gpu_names)})" if self.gpus else ""
        return f"{self.vcpus} vCPU, {self.memory_mib / 1024:g} GiB{gpus}"

    @property
    def size(self) -> tuple[int, int, int]:
        return self.vcpus, self.memory_mib, self.gpus


@dataclass(frozen=True)
class ModelSnapshot:
    """The AMI's mapping for the model device: its snapshot and size (None: the AMI maps no snapshot there).

    ``architecture`` is the AMI's (x86_64, arm64, ...): an instance type must support it.
    """

    snapshot_id: Optional[str]
    size_gib: Optional[int]
    architecture: str = "x86_64"


@dataclass(frozen=True)
class ExistingCluster:
    """The EKS cluster named ``kiln:clusterName`` in the region, if an earlier ``up`` created it."""

    exists: bool
    service_cidr: Optional[str] = None       # its Kubernetes service range (when it exists)


@dataclass(frozen=True)
class AwsFacts:
    vpc_cidrs: Optional[tuple[str, ...]] = None                       # existing VPC only; None: unknown
    cluster: Optional[ExistingCluster] = None                          # None: unknown
    instance_types: Mapping[str, InstanceSpec] = field(default_factory=dict)    # absent: unknown
    model_snapshots: Mapping[str, ModelSnapshot] = field(default_factory=dict)  # AMI id -> snapshot; absent: unknown
    ci_provider_audiences: Optional[tuple[str, ...]] = None           # ciOidc.providerArn's client IDs; None: unknown
    errors: tuple[str, ...] = ()                                       # lookups that failed, naming the key


@dataclass(frozen=True)
class Plan:
    """What the program declares where config alone cannot decide."""

    service_cidr: str
    accelerators: Mapping[str, str]          # GPU group name -> k8s.amazonaws.com/accelerator value
    model_volume_gib: Mapping[str, int]      # AMI family -> size of the launch templates' model volume
    warnings: tuple[str, ...] = ()


# ---- pure rules --------------------------------------------------------------------------------


def choose_service_cidr(vpc_cidrs: Sequence[str]) -> Optional[str]:
    """The first of EKS's two default ranges that overlaps none of ``vpc_cidrs`` (None: both do)."""
    nets = [ipaddress.ip_network(c) for c in vpc_cidrs]
    for candidate in SERVICE_CIDR_CANDIDATES:
        if not any(ipaddress.ip_network(candidate).overlaps(n) for n in nets):
            return candidate
    return None


def _overlapping(cidrs: Sequence[str], cidr: str) -> list[str]:
    return [c for c in cidrs if ipaddress.ip_network(c).overlaps(ipaddress.ip_network(cidr))]


def _service_cidr(cfg: KilnConfig, facts: AwsFacts, problems: list[str], warnings: list[str]) -> str:
    if cfg.uses_existing_vpc:
        vpc_cidrs, where = facts.vpc_cidrs, f"VPC {cfg.vpc_id}"
    else:
        vpc_cidrs, where = (cfg.vpc_cidr,), f"vpcCidr ({cfg.vpc_cidr})"
    running = facts.cluster
    if running is None:
        warnings.append(f"whether cluster {cfg.cluster_name} already exists is unknown: the service range was not "
                        f"checked against a running cluster's")
    elif running.exists and running.service_cidr:
        # EKS cannot change a cluster's service range: a different one would make `up` replace the cluster
        # (and everything running on it). The running cluster's range is the truth; keep it.
        current = running.service_cidr
        if cfg.service_cidr and ipaddress.ip_network(cfg.service_cidr) != ipaddress.ip_network(current):
            problems.append(
                f"{NAMESPACE}:serviceCidr ({cfg.service_cidr}) differs from the service range of the running cluster "
                f"{cfg.cluster_name} ({current}): EKS cannot change it, so `pulumi up` would replace the cluster; "
                f"set {NAMESPACE}:serviceCidr to {current} or remove it")
        clash = _overlapping(vpc_cidrs or (), current)
        if clash:
            warnings.append(f"{where} now holds {', '.join(clash)}, which overlaps the service range of the running "
                            f"cluster {cfg.cluster_name} ({current}); the range is kept (changing it would replace "
                            f"the cluster), but addresses in the overlap are not reachable from pods")
        return current
    if vpc_cidrs is None:
        warnings.append(f"the CIDRs of {where} are unknown: the service range was not checked against them")
        return cfg.service_cidr or SERVICE_CIDR_CANDIDATES[0]
    if cfg.service_cidr:
        clash = _overlapping(vpc_cidrs, cfg.service_cidr)
        if clash:
            problems.append(f"{NAMESPACE}:serviceCidr ({cfg.service_cidr}) must not overlap {where}, which holds "
                            f"{', '.join(clash)}: EKS refuses a service range inside the VPC")
        return cfg.service_cidr
    chosen = choose_service_cidr(vpc_cidrs)
    if chosen is None:
        problems.append(f"{NAMESPACE}:serviceCidr is required: {where} holds {', '.join(vpc_cidrs)}, which overlap both "
                        f"default service ranges ({' and '.join(SERVICE_CIDR_CANDIDATES)})")
        return SERVICE_CIDR_CANDIDATES[0]
    return chosen


def _one_size_per_group(cfg: KilnConfig, facts: AwsFacts, problems: list[str], warnings: list[str]) -> None:
    for i, g in enumerate(cfg.node_groups):
        specs = {t: facts.instance_types.get(t) for t in g.instance_types}
        if len(specs) < 2:
            continue
        if None in specs.values():
            warnings.append(f"sizes of {', '.join(t for t, s in specs.items() if s is None)} are unknown: "
                            f"nodeGroups[{i}] ({g.name}) was not checked for one size")
            continue
        if len({s.size for s in specs.values()}) > 1:
            problems.append(
                f"{NAMESPACE}:nodeGroups[{i}].instanceTypes must all be one size "
                f"({'; '.join(f'{t}: {s}' for t, s in specs.items())}): cluster-autoscaler sizes the group's nodes "
                f"from the first type ({g.instance_types[0]}); put other sizes in another group")


def _architectures_match(cfg: KilnConfig, facts: AwsFacts, problems: list[str]) -> None:
    """EC2 launches an AMI only on a type of its architecture: an arm64 type in an x86_64 group never boots."""
    for i, g in enumerate(cfg.node_groups):
        ami = cfg.ami_for(g)
        image = facts.model_snapshots.get(ami)
        if image is None:
            continue        # unknown: _model_volumes warns
        for j, t in enumerate(g.instance_types):
            spec = facts.instance_types.get(t)
            if spec is not None and image.architecture not in spec.architectures:
                problems.append(
                    f"{NAMESPACE}:nodeGroups[{i}].instanceTypes[{j}] ({t}) runs {'/'.join(spec.architectures)}, but "
                    f"{NAMESPACE}:{_ami_key(cfg, g.ami_family)} ({ami}) is {image.architecture}: EC2 cannot launch it "
                    f"and the group's ASGs would never get that node")


def accelerator_name(gpu_names: Sequence[str]) -> str:
    """The accelerator label value: cluster-autoscaler's name for the group's one GPU model, else ``nvidia``."""
    models = set(gpu_names)
    if len(models) != 1:
        return GENERIC_ACCELERATOR
    [model] = models
    name = _CA_GPU_NAMES.get(model.upper()) or "nvidia-" + model.lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", name).strip("-.")[:63]
    return name or GENERIC_ACCELERATOR


def _accelerators(cfg: KilnConfig, facts: AwsFacts) -> dict[str, str]:
    out = {}
    for g in cfg.node_groups:
        if not g.gpu:
            continue
        specs = [facts.instance_types.get(t) for t in g.instance_types]
        names = [n for s in specs if s is not None for n in s.gpu_names]
        known = all(s is not None and s.gpu_names for s in specs)
        out[g.name] = accelerator_name(names) if known else GENERIC_ACCELERATOR
    return out


def _ami_key(cfg: KilnConfig, family: str) -> str:
    return "nodeAmi" if len(cfg.node_amis) == 1 else f"nodeAmi.{family}"


def _model_volumes(cfg: KilnConfig, facts: AwsFacts, problems: list[str], warnings: list[str]) -> dict[str, int]:
    sizes = {}
    for family in sorted({g.ami_family for g in cfg.node_groups}):
        ami = cfg.ami_for(next(g for g in cfg.node_groups if g.ami_family == family))
        size = cfg.model_volume_size_gib
        snap = facts.model_snapshots.get(ami)
        if snap is None:
            warnings.append(f"the block devices of {ami} are unknown: its model snapshot size was not checked")
        elif snap.snapshot_id is None:
            problems.append(
                f"{NAMESPACE}:{_ami_key(cfg, family)} ({ami}) has no EBS snapshot on kiln:modelVolumeDevice "
                f"({cfg.model_volume_device}): it was not baked by kiln, or with another model device; its nodes "
                f"would find no model")
        elif snap.size_gib is not None and snap.size_gib > size:
            # EC2 refuses a volume smaller than its snapshot: the launch template takes the snapshot's size.
            warnings.append(
                f"kiln:modelVolumeSizeGiB ({size}) is smaller than the model snapshot of {ami} ({snap.size_gib} GiB): "
                f"its nodes get {snap.size_gib} GiB model volumes")
            size = snap.size_gib
        sizes[family] = size
    return sizes


def _existing_ci_provider_accepts_the_audience(cfg: KilnConfig, facts: AwsFacts, problems: list[str],
                                               warnings: list[str]) -> None:
    """An existing IAM OIDC provider refuses tokens whose audience is not among its client IDs."""
    ci = cfg.ci_oidc
    if ci is None or not ci.provider_arn:
        return
    if facts.ci_provider_audiences is None:
        warnings.append(f"the client IDs of {ci.provider_arn} are unknown: ciOidc.audience was not checked against them")
    elif ci.audience not in facts.ci_provider_audiences:
        problems.append(
            f"{NAMESPACE}:ciOidc.providerArn ({ci.provider_arn}) does not list ciOidc.audience ({ci.audience}) among its "
            f"client IDs ({', '.join(facts.ci_provider_audiences) or 'none'}): STS would refuse every CI token; add the "
            f"audience to the provider or use one of its client IDs")


def plan(cfg: KilnConfig, facts: AwsFacts) -> Plan:
    """Check ``cfg`` against ``facts``; raise :class:`ConfigError` naming every key at fault."""
    problems, warnings = list(facts.errors), []
    service_cidr = _service_cidr(cfg, facts, problems, warnings)
    _one_size_per_group(cfg, facts, problems, warnings)
    volumes = _model_volumes(cfg, facts, problems, warnings)
    _architectures_match(cfg, facts, problems)
    _existing_ci_provider_accepts_the_audience(cfg, facts, problems, warnings)
    if problems:
        raise ConfigError(problems)
    return Plan(service_cidr=service_cidr, accelerators=_accelerators(cfg, facts), model_volume_gib=volumes,
                warnings=tuple(warnings))


# ---- the lookups (Pulumi invokes) ---------------------------------------------------------------


def _get(obj: Any, name: str) -> Any:
    """Invoke results are typed objects (dicts under test mocks)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> Optional[int]:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _describe_vpc(vpc_id: str) -> Optional[tuple[str, ...]]:
    import pulumi_aws as aws

    vpc = aws.ec2.get_vpc(id=vpc_id)
    cidrs = [_get(a, "cidr_block") for a in (vpc.cidr_block_associations or [])
             if _get(a, "state") in (None, "associated", "associating")]
    cidrs.append(vpc.cidr_block)
    found = tuple(sorted({c for c in cidrs if c}))
    return found or None


def _describe_cluster(name: str) -> Optional[ExistingCluster]:
    import pulumi_aws as aws

    names = aws.eks.get_clusters().names
    if names is None:
        return None
    if name not in names:
        return ExistingCluster(exists=False)
    configs = aws.eks.get_cluster(name=name).kubernetes_network_configs or []
    cidrs = [_get(c, "service_ipv4_cidr") for c in configs if _get(c, "service_ipv4_cidr")]
    return ExistingCluster(exists=True, service_cidr=cidrs[0]) if cidrs else None


def _describe_instance_type(instance_type: str) -> Optional[InstanceSpec]:
    import pulumi_aws as aws

    r = aws.ec2.get_instance_type(instance_type=instance_type)
    vcpus, memory = _int(r.default_vcpus), _int(r.memory_size)
    architectures = tuple(r.supported_architectures or ())
    if vcpus is None or memory is None or not architectures:
        return None
    gpus = list(r.gpuses or [])
    return InstanceSpec(vcpus=vcpus, memory_mib=memory, gpus=sum(_int(_get(g, "count")) or 0 for g in gpus),
                        gpu_names=tuple(sorted({_get(g, "name") for g in gpus if _get(g, "name")})),
                        gpu_makers=tuple(sorted({_get(g, "manufacturer") for g in gpus if _get(g, "manufacturer")})),
                        architectures=architectures)


def _describe_model_snapshot(ami: str, device: str) -> Optional[ModelSnapshot]:
    import pulumi_aws as aws

    image = aws.ec2.get_ami(filters=[aws.ec2.GetAmiFilterArgs(name="image-id", values=[ami])],
                            include_deprecated=True)
    mappings, architecture = image.block_device_mappings, image.architecture
    if mappings is None or not architecture:
        return None
    for m in mappings:
        if _get(m, "device_name") == device:
            ebs = _get(m, "ebs") or {}
            snapshot, size = ebs.get("snapshot_id") or None, _int(ebs.get("volume_size"))
            if snapshot and size is None:
                return None         # a snapshot of unknown size: the size check could not be made
            return ModelSnapshot(snapshot, size, architecture)
    return ModelSnapshot(None, None, architecture)


def _describe_oidc_provider(arn: str) -> Optional[tuple[str, ...]]:
    import pulumi_aws as aws

    audiences = aws.iam.get_open_id_connect_provider(arn=arn).client_id_lists
    return None if audiences is None else tuple(audiences)


def running_under_mocks() -> bool:
    """True when Pulumi's runtime is mocked (the tests, ``python -m policies check``): there is no account."""
    from pulumi.runtime import mocks, settings

    return isinstance(settings.get_monitor(), mocks.MockMonitor)


def lookup(cfg: KilnConfig, *, strict: bool = True) -> AwsFacts:
    """Read the facts ``cfg`` depends on. A lookup that fails becomes an error line naming the key.

    ``strict`` (a real deployment): a lookup that answers without the fact is an error too, so no
    check is skipped. Otherwise (mocks) the fact stays unknown and :func:`plan` warns.
    """
    errors: list[str] = []

    def attempt(key: str, value: str, read, missing: str):
        try:
            found = read()
        except Exception as exc:  # noqa: BLE001 - the provider's message, reported against the key
            errors.append(f"{NAMESPACE}:{key} ({value}) could not be read from AWS: {exc}")
            return None
        if found is None and strict:
            errors.append(f"{NAMESPACE}:{key} ({value}) could not be checked: {missing}")
        return found

    vpc_cidrs = attempt("vpcId", cfg.vpc_id, lambda: _describe_vpc(cfg.vpc_id),
                        "DescribeVpcs answered without its CIDR blocks") if cfg.uses_existing_vpc else None
    cluster = attempt("clusterName", cfg.cluster_name, lambda: _describe_cluster(cfg.cluster_name),
                      "ListClusters/DescribeCluster answered without the cluster list or its service range")
    types: dict[str, InstanceSpec] = {}
    for i, g in enumerate(cfg.node_groups):
        for j, t in enumerate(g.instance_types):
            if t not in types:
                spec = attempt(f"nodeGroups[{i}].instanceTypes[{j}]", t, lambda t=t: _describe_instance_type(t),
                               "DescribeInstanceTypes answered without its vCPUs, memory or architectures")
                if spec is not None:
                    types[t] = spec
    snapshots: dict[str, ModelSnapshot] = {}
    for family, ami in cfg.node_amis:
        if any(g.ami_family == family for g in cfg.node_groups) and ami not in snapshots:
            snap = attempt(_ami_key(cfg, family), ami,
                           lambda ami=ami: _describe_model_snapshot(ami, cfg.model_volume_device),
                           "DescribeImages answered without its architecture or block device mappings")
            if snap is not None:
                snapshots[ami] = snap
    ci = cfg.ci_oidc
    audiences = attempt("ciOidc.providerArn", ci.provider_arn, lambda: _describe_oidc_provider(ci.provider_arn),
                        "GetOpenIDConnectProvider answered without its client IDs") \
        if ci is not None and ci.provider_arn else None
    return AwsFacts(vpc_cidrs=vpc_cidrs, cluster=cluster, instance_types=types, model_snapshots=snapshots,
                    ci_provider_audiences=audiences, errors=tuple(errors))


def check(cfg: KilnConfig, *, strict: Optional[bool] = None) -> Plan:
    """:func:`lookup`, then :func:`plan`; strict unless the runtime is mocked."""
    return plan(cfg, lookup(cfg, strict=not running_under_mocks() if strict is None else strict))
