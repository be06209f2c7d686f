"""Cost guardrails: how many nodes a group and the stack may grow to, which instance families, how big a volume.

kiln's savings come from baking the model into the AMI; they are lost as quickly
to a typo in ``maxSize``, a p5 where a g5 would do, or a 16 TiB root volume. The
limits are the pack's config (``--policy-pack-config``), so each team sets its
own budget; the defaults fit the example stack with room to grow.

Node counts are maximums (what the autoscaler may reach), not desired sizes:
an ASG's ``maxSize``, an EKS node group's ``scalingConfig.maxSize``, a fleet's
target capacity, one per instance. kiln's node groups are one ASG per zone; the
ASGs of one group (tag ``kiln.dev/node-group``) count together.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterator, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from infra.instance_types import family
from infra.labels import TAG_NODE_GROUP
from policies.rules import compute as c
from policies.rules._props import MANDATORY, Deferred, as_list, as_number, config, get, iter_mappings, schema, tags_of

NODE_GROUP_TAG = TAG_NODE_GROUP
DEFAULT_FAMILIES = [
    # burstable, general purpose, compute and memory optimised (current x86 and Graviton generations)
    "t3", "t3a", "t4g", "m5", "m5a", "m6i", "m6a", "m6g", "m7i", "m7i-flex", "m7a", "m7g", "m8g",
    "c5", "c5a", "c6i", "c6a", "c6g", "c7i", "c7a", "c7g", "c8g", "r5", "r5a", "r6i", "r6a", "r6g", "r7i", "r7a",
    "r7g", "r8g",
    # NVIDIA GPUs up to the L40S; p4d/p5 (A100/H100) are an explicit choice
    "g4dn", "g5", "g5g", "g6", "g6e",
]
DEFAULT_MIN_VOLUME_GIB, DEFAULT_MAX_VOLUME_GIB = 20, 1024
DEFAULT_MAX_NODES_PER_GROUP, DEFAULT_MAX_NODES_PER_STACK = 100, 300
# gp3's ceilings: io1/io2 go to 64,000-256,000 IOPS, billed per provisioned IOPS (io2 at 256,000 is ~$10,000 a month).
DEFAULT_MAX_IOPS, DEFAULT_MAX_THROUGHPUT = 16000, 1000


# --------------------------------------------------------------------------- what a resource launches


def instance_types(resource_type: str, props: Any) -> Iterator[tuple[str, Optional[str]]]:
    """``(where, instance type)``; the type is None where attribute-based selection leaves it open."""
    t = resource_type
    if t in (c.LAUNCH_TEMPLATE, c.LAUNCH_CONFIGURATION, *c.INSTANCES):
        if get(props, "instanceType"):
            yield "instanceType", get(props, "instanceType")
        if get(props, "instanceRequirements") is not None:
            yield "instanceRequirements", None
    elif t == c.ASG:
        for i, o in enumerate(iter_mappings(get(props, "mixedInstancesPolicy", "launchTemplate", "overrides"))):
            if get(o, "instanceType"):
                yield f"mixedInstancesPolicy.launchTemplate.overrides[{i}].instanceType", get(o, "instanceType")
            if get(o, "instanceRequirements") is not None:
                yield f"mixedInstancesPolicy.launchTemplate.overrides[{i}].instanceRequirements", None
    elif t in c.NODE_GROUPS:
        for i, it in enumerate(as_list(get(props, "instanceTypes"))):
            yield f"instanceTypes[{i}]", it
    elif t == c.BATCH_COMPUTE_ENVIRONMENT and c._batch_ec2(props):
        for i, it in enumerate(as_list(get(props, "computeResources", "instanceTypes"))):
            yield f"computeResources.instanceTypes[{i}]", it
    elif t in (c.FLEET, c.SPOT_FLEET_REQUEST):
        for i, spec in enumerate(iter_mappings(get(props, "launchSpecifications"))):
            yield f"launchSpecifications[{i}].instanceType", get(spec, "instanceType")
        for i, cfg in enumerate(iter_mappings(get(props, "launchTemplateConfigs"))):
            for j, o in enumerate(iter_mappings(get(cfg, "overrides"))):
                where = f"launchTemplateConfigs[{i}].overrides[{j}]"
                if get(o, "instanceType"):
                    yield f"{where}.instanceType", get(o, "instanceType")
                if get(o, "instanceRequirements") is not None:
                    yield f"{where}.instanceRequirements", None
    elif t in c.EKS_SELF_MANAGED_NODE_GROUPS or (t == c.EKS_CLUSTER and get(props, "skipDefaultNodeGroup") is not True):
        yield "instanceType", get(props, "instanceType", default="t2.medium")  # pulumi-eks's default


def volume_sizes(resource_type: str, props: Any) -> Iterator[tuple[str, float]]:
    t = resource_type

    def size(where: str, value: Any) -> Iterator[tuple[str, float]]:
        number = as_number(value)
        if number is not None:
            yield where, number

    if t == c.LAUNCH_TEMPLATE:
        for m in iter_mappings(get(props, "blockDeviceMappings")):
            yield from size(f"blockDeviceMappings {get(m, 'deviceName', default='?')}", get(m, "ebs", "volumeSize"))
    elif t in (c.LAUNCH_CONFIGURATION, *c.INSTANCES):
        yield from size("rootBlockDevice.volumeSize", get(props, "rootBlockDevice", "volumeSize"))
        for d in iter_mappings(get(props, "ebsBlockDevices")):
            yield from size(f"ebsBlockDevices {get(d, 'deviceName', default='?')}", get(d, "volumeSize"))
    elif t == c.EBS_VOLUME:
        yield from size("size", get(props, "size"))
    elif t in c.NODE_GROUPS:
        yield from size("diskSize", get(props, "diskSize"))
    elif t in c.EKS_SELF_MANAGED_NODE_GROUPS or t == c.EKS_CLUSTER:
        yield from size("nodeRootVolumeSize", get(props, "nodeRootVolumeSize"))


def volume_performance(resource_type: str, props: Any) -> Iterator[tuple[str, str, float]]:
    """``(where, "iops" | "throughput", value)`` of every EBS volume's provisioned performance."""
    t = resource_type

    def of(where: str, volume: Any) -> Iterator[tuple[str, str, float]]:
        for key, kind in (("iops", "iops"), ("throughput", "throughput")):
            number = as_number(get(volume, key))
            if number is not None:
                yield f"{where}.{key}", kind, number

    if t == c.LAUNCH_TEMPLATE:
        for m in iter_mappings(get(props, "blockDeviceMappings")):
            yield from of(f"blockDeviceMappings {get(m, 'deviceName', default='?')} ebs", get(m, "ebs"))
    elif t in (c.LAUNCH_CONFIGURATION, *c.INSTANCES):
        yield from of("rootBlockDevice", get(props, "rootBlockDevice"))
        for d in iter_mappings(get(props, "ebsBlockDevices")):
            yield from of(f"ebsBlockDevices {get(d, 'deviceName', default='?')}", d)
    elif t == c.EBS_VOLUME:
        for key, kind in (("iops", "iops"), ("throughput", "throughput")):
            number = as_number(get(props, key))
            if number is not None:
                yield key, kind, number


def _smallest_weight(configs: Any) -> float:
    """The smallest ``weightedCapacity`` of a fleet's overrides (1 when none): a target capacity of 100 with
    a weight of 0.01 is 10,000 instances."""
    weights = [as_number(get(o, "weightedCapacity")) for cfg in iter_mappings(configs)
               for o in iter_mappings(get(cfg, "overrides"))]
    weights += [as_number(get(spec, "weightedCapacity")) for spec in iter_mappings(configs)]
    positive = [w for w in weights if w is not None and w > 0]
    return min([1.0, *positive])


def _group_name(props: Any) -> Optional[str]:
    try:
        return tags_of(props).get(NODE_GROUP_TAG)
    except UnknownValueError:
        return None  # counted on its own while a tag is not known


def max_nodes(resource) -> Optional[tuple[str, float]]:
    """``(group, the most nodes it may run)`` for a resource that launches nodes, else None."""
    t, props = resource.resource_type, resource.props
    if t == c.ASG:
        group = _group_name(props)
        size = as_number(get(props, "maxSize")) or 0
        warm = get(props, "warmPool")
        if warm is not None:  # instances in the warm pool are instances too (stopped or running)
            size = max(size + (as_number(get(warm, "minSize")) or 0), as_number(get(warm, "maxGroupPreparedCapacity")) or 0)
        return (f"node group {group!r}" if group else f"ASG {resource.name!r}"), size
    if t in c.NODE_GROUPS:
        return f"EKS node group {resource.name!r}", as_number(get(props, "scalingConfig", "maxSize")) or 0
    if t in c.EKS_SELF_MANAGED_NODE_GROUPS:
        return f"node group {resource.name!r}", as_number(get(props, "maxSize", default=2)) or 0
    if t == c.SPOT_FLEET_REQUEST:
        weight = min(_smallest_weight(get(props, "launchTemplateConfigs")),
                     _smallest_weight(get(props, "launchSpecifications")))
        return f"spot fleet {resource.name!r}", (as_number(get(props, "targetCapacity")) or 0) / weight
    if t == c.FLEET:
        weight = _smallest_weight(get(props, "launchTemplateConfigs"))
        total = as_number(get(props, "targetCapacitySpecification", "totalTargetCapacity")) or 0
        return f"fleet {resource.name!r}", total / weight
    if t == c.BATCH_COMPUTE_ENVIRONMENT and c._batch_ec2(props):
        # Batch scales to maxVcpus; with no instance facts offline, one instance per vCPU is the bound.
        return f"Batch compute environment {resource.name!r}", as_number(get(props, "computeResources", "maxVcpus")) or 0
    if t in c.INSTANCES:
        return f"instance {resource.name!r}", 1
    return None


# --------------------------------------------------------------------------- the rules


def _allowed(instance_type: str, families: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(family(instance_type), pattern) for pattern in families)


def validate_families(args, report_violation) -> None:
    families = list(config(args, "allowedFamilies", DEFAULT_FAMILIES))
    for where, instance_type in instance_types(args.resource_type, args.props):
        if instance_type is None:
            report_violation(f"{where} lets EC2 pick instance types by attributes, which may be any family; "
                             "list the instance types", None)
        elif not isinstance(instance_type, str) or not _allowed(instance_type, families):
            report_violation(f"{where} is {instance_type!r}, whose family is not in allowedFamilies "
                             f"({', '.join(families)})", None)


def validate_volume_sizes(args, report_violation) -> None:
    low = int(config(args, "minVolumeSizeGiB", DEFAULT_MIN_VOLUME_GIB))
    high = int(config(args, "maxVolumeSizeGiB", DEFAULT_MAX_VOLUME_GIB))
    if low > high:  # the CLI checks each setting against the schema, not the two together
        report_violation(f"the pack's settings minVolumeSizeGiB ({low}) > maxVolumeSizeGiB ({high}) allow no volume; "
                         "fix the policy config", None)
        return
    for where, size in volume_sizes(args.resource_type, args.props):
        if not low <= size <= high:
            report_violation(f"{where} is {int(size)} GiB; volumes must be {low}-{high} GiB "
                             "(minVolumeSizeGiB, maxVolumeSizeGiB)", None)


def validate_volume_performance(args, report_violation) -> None:
    limits = {"iops": int(config(args, "maxIops", DEFAULT_MAX_IOPS)),
              "throughput": int(config(args, "maxThroughputMiBps", DEFAULT_MAX_THROUGHPUT))}
    units = {"iops": "IOPS (maxIops)", "throughput": "MiB/s (maxThroughputMiBps)"}
    for where, kind, value in volume_performance(args.resource_type, args.props):
        if value > limits[kind]:
            report_violation(f"{where} is {int(value)}; at most {limits[kind]} {units[kind]} allowed: provisioned "
                             "performance is billed per unit every month, whether used or not", None)


def _groups(resources, deferred: Deferred) -> dict[str, list[tuple[Any, float]]]:
    """Node count per group; a count not known during preview is left out (and reported as such at the end)."""
    groups: dict[str, list[tuple[Any, float]]] = {}
    for r in resources:
        found = deferred.attempt(max_nodes, r)
        if found is not None:
            groups.setdefault(found[0], []).append((r, found[1]))
    return groups


def validate_nodes_per_group(args, report_violation) -> None:
    limit = int(config(args, "maxNodesPerGroup", DEFAULT_MAX_NODES_PER_GROUP))
    deferred = Deferred()
    for group, members in _groups(args.resources, deferred).items():
        total = sum(n for _, n in members)
        if total > limit:
            for r, n in members:
                report_violation(f"{group} may grow to {int(total)} nodes ({r.resource_type} {r.name!r}: {int(n)}); "
                                 f"at most {limit} allowed (maxNodesPerGroup)", r.urn)
    deferred.finish()


def validate_nodes_per_stack(args, report_violation) -> None:
    limit = int(config(args, "maxNodesPerStack", DEFAULT_MAX_NODES_PER_STACK))
    deferred = Deferred()
    members = [m for ms in _groups(args.resources, deferred).values() for m in ms]
    total = sum(n for _, n in members)
    if total > limit:
        r, n = max(members, key=lambda m: m[1])
        report_violation(f"the stack may grow to {int(total)} nodes, the most ({int(n)}) from {r.resource_type} "
                         f"{r.name!r}; at most {limit} allowed (maxNodesPerStack)", r.urn)
    deferred.finish()


POLICIES = [
    StackValidationPolicy(
        name="cost-max-nodes-per-group",
        description="No node group (all its ASGs together) may grow beyond maxNodesPerGroup nodes.",
        validate=validate_nodes_per_group,
        enforcement_level=MANDATORY,
        config_schema=schema(maxNodesPerGroup={"type": "integer", "minimum": 1,
                                               "default": DEFAULT_MAX_NODES_PER_GROUP}),
    ),
    StackValidationPolicy(
        name="cost-max-nodes-per-stack",
        description="The stack's node groups, fleets and instances together stay within maxNodesPerStack nodes.",
        validate=validate_nodes_per_stack,
        enforcement_level=MANDATORY,
        config_schema=schema(maxNodesPerStack={"type": "integer", "minimum": 1,
                                               "default": DEFAULT_MAX_NODES_PER_STACK}),
    ),
    ResourceValidationPolicy(
        name="cost-instance-families-allowed",
        description="Instances are of an allowed family (allowedFamilies); no attribute-based selection.",
        validate=validate_families,
        enforcement_level=MANDATORY,
        config_schema=schema(allowedFamilies={"type": "array", "items": {"type": "string", "minLength": 1},
                                              "default": DEFAULT_FAMILIES}),
    ),
    ResourceValidationPolicy(
        name="cost-volume-size-bounds",
        description="EBS volumes are between minVolumeSizeGiB and maxVolumeSizeGiB.",
        validate=validate_volume_sizes,
        enforcement_level=MANDATORY,
        config_schema=schema(minVolumeSizeGiB={"type": "integer", "minimum": 1, "default": DEFAULT_MIN_VOLUME_GIB},
                             maxVolumeSizeGiB={"type": "integer", "minimum": 1, "maximum": 65536,
                                               "default": DEFAULT_MAX_VOLUME_GIB}),
    ),
    ResourceValidationPolicy(
        name="cost-volume-performance-bounds",
        description="EBS volumes provision at most maxIops IOPS and maxThroughputMiBps MiB/s.",
        validate=validate_volume_performance,
        enforcement_level=MANDATORY,
        config_schema=schema(maxIops={"type": "integer", "minimum": 3000, "maximum": 256000, "default": DEFAULT_MAX_IOPS},
                             maxThroughputMiBps={"type": "integer", "minimum": 125, "maximum": 4000,
                                                 "default": DEFAULT_MAX_THROUGHPUT}),
    ),
]
