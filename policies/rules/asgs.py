"""Auto Scaling groups: one AZ each, autoscaler discovery, a pinned template version, desired capacity left alone.

One ASG per AZ keeps cluster-autoscaler's scale-up zonal and predictable; a
``$Latest`` version would roll every node on the next scale-out without a
rollout; and a desired capacity Pulumi resets on each ``up`` would fight the
autoscaler and the node rollout.
"""

from __future__ import annotations

import re

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, as_list, get, tags_of

ASG = "aws:autoscaling/group:Group"
CA_ENABLED = "k8s.io/cluster-autoscaler/enabled"
CA_PREFIX = "k8s.io/cluster-autoscaler/"
_VERSION_NUMBER = re.compile(r"[0-9]+")


def _is_asg(args) -> bool:
    return args.resource_type == ASG


def validate_single_zone(args, report_violation) -> None:
    if not _is_asg(args):
        return
    # len() only: subnet ids are often unknown during preview, their count is not.
    zones = get(args.props, "availabilityZones")
    subnets = get(args.props, "vpcZoneIdentifiers")
    n_zones = len(zones) if zones is not None else 0
    n_subnets = len(subnets) if subnets is not None else 0
    if n_zones > 1 or n_subnets > 1:
        report_violation(f"spans {max(n_zones, n_subnets)} zones/subnets; kiln uses one ASG per availability zone", None)
    elif n_zones == 0 and n_subnets == 0:
        report_violation("names neither availabilityZones nor vpcZoneIdentifiers (exactly one zone expected)", None)


def validate_discovery_tags(args, report_violation) -> None:
    if not _is_asg(args):
        return
    tags = tags_of(args.props)
    if str(tags.get(CA_ENABLED, "")).lower() != "true":
        report_violation(f"missing tag {CA_ENABLED}=true (cluster-autoscaler auto-discovery)", None)
    cluster_tags = [k for k in tags if k.startswith(CA_PREFIX) and k != CA_ENABLED and "/node-template/" not in k]
    if not cluster_tags:
        report_violation(f"missing tag {CA_PREFIX}<cluster-name> (cluster-autoscaler auto-discovery)", None)


def _template_specs(props) -> list[tuple[str, object]]:
    specs = []
    if get(props, "launchTemplate") is not None:
        specs.append(("launchTemplate.version", get(props, "launchTemplate", "version")))
    mixed = get(props, "mixedInstancesPolicy", "launchTemplate", "launchTemplateSpecification")
    if mixed is not None:
        specs.append(("mixedInstancesPolicy.launchTemplate.launchTemplateSpecification.version", get(mixed, "version")))
    for i, override in enumerate(as_list(get(props, "mixedInstancesPolicy", "launchTemplate", "overrides"))):
        spec = get(override, "launchTemplateSpecification")
        if spec is not None:
            specs.append((f"mixedInstancesPolicy.launchTemplate.overrides[{i}].launchTemplateSpecification.version",
                          get(spec, "version")))
    return specs


def _version_number(version: object) -> bool:
    """A launch-template version number (``"3"``, or 3.0 as protobuf numbers arrive); anything else — ``$Latest``,
    ``$Default`` in any spelling, a name, a fraction, a boolean — is not a pinned version."""
    if isinstance(version, float) and version.is_integer():
        version = int(version)
    text = str(version).strip()  # True, None, a list: never digits
    return bool(_VERSION_NUMBER.fullmatch(text)) and int(text) >= 1


def validate_version_pinned(args, report_violation) -> None:
    if not _is_asg(args):
        return
    specs = _template_specs(args.props)
    if not specs:
        report_violation("uses no launch template", None)
    for where, version in specs:
        if not _version_number(version):
            report_violation(f"{where} is {version!r}; pin a launch-template version number, not $Latest/$Default", None)


def validate_desired_capacity_ignored(args, report_violation) -> None:
    if not _is_asg(args):
        return
    ignored = set(args.opts.ignore_changes or [])
    if not ignored & {"desiredCapacity", "desired_capacity"}:
        report_violation("desiredCapacity must be in ignore_changes, or every `pulumi up` resets what the "
                         "autoscaler and the rollout chose", None)


POLICIES = [
    ResourceValidationPolicy(
        name="asg-single-zone",
        description="Every ASG runs in exactly one availability zone (one subnet).",
        validate=validate_single_zone,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="asg-autoscaler-discovery-tags",
        description="Every ASG carries the cluster-autoscaler auto-discovery tags.",
        validate=validate_discovery_tags,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="asg-launch-template-version-pinned",
        description="ASGs pin a launch-template version, never $Latest or $Default.",
        validate=validate_version_pinned,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="asg-desired-capacity-ignored",
        description="ASGs leave desired capacity to the autoscaler (ignore_changes).",
        validate=validate_desired_capacity_ignored,
        enforcement_level=MANDATORY,
    ),
]
