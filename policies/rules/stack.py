"""Stack-wide rules that compare what is declared with the stack's kiln configuration.

The configuration is read from the running engine (``pulumi.Config("kiln")``):
the CLI hands a policy pack the stack's config, and the offline runner sets it
before running the program. Without a valid kiln config the rules do not apply.
"""

from __future__ import annotations

from typing import Any, Optional

from pulumi_policy import StackValidationPolicy

from infra import config as kiln_config
from infra.labels import LABEL_MODEL_VERSION, TAG_NODE_GROUP
from policies.rules._props import (MANDATORY, Deferred, as_list, dependency_urns, get, iter_mappings, known,
                                   known_items, tags_of, under_path)

ASG = "aws:autoscaling/group:Group"
SUBNET = "aws:ec2/subnet:Subnet"
PERSISTENT_VOLUME = "kubernetes:core/v1:PersistentVolume"
PERSISTENT_VOLUME_CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
NODE_GROUP_TAG = TAG_NODE_GROUP
NODE_TEMPLATE_GROUP_TAG = "k8s.io/cluster-autoscaler/node-template/label/kiln.dev/node-group"
MODEL_VERSION_LABEL = LABEL_MODEL_VERSION


def stack_config(args) -> kiln_config.KilnConfig:
    try:
        return kiln_config.load()
    except kiln_config.ConfigError as exc:
        args.not_applicable(f"no valid kiln configuration: {'; '.join(exc.problems[:3])}")
        raise  # not reached: not_applicable raises


def _group_of(asg, group_names: set[str]) -> Optional[str]:
    tags = tags_of(asg.props)
    for key in (NODE_GROUP_TAG, NODE_TEMPLATE_GROUP_TAG):
        if tags.get(key) in group_names:
            return tags[key]
    parent = asg.parent
    while parent is not None:  # a NodeGroup component named after its group
        if parent.name in group_names:
            return parent.name
        parent = parent.parent
    return None


def _zones_of(asg, subnet_zones: dict[str, str]) -> set[str]:
    """The zones an ASG runs in: its zones, its subnets' zones; subnet ids not known yet (a preview) are traced to
    the subnets they were computed from."""
    zones = {z for z in known_items(asg.props, "availabilityZones")[0] if isinstance(z, str)}
    subnets, unknown = known_items(asg.props, "vpcZoneIdentifiers")
    for subnet in subnets + (dependency_urns(asg, "vpcZoneIdentifiers") if unknown else []):
        if subnet in subnet_zones:
            zones.add(subnet_zones[subnet])
    return zones


def validate_asg_per_group_and_zone(args, report_violation) -> None:
    cfg = stack_config(args)
    subnet_zones = dict(zip(cfg.private_subnet_ids, cfg.availability_zones))
    for r in args.resources:
        zone = known(r.props, "availabilityZone") if r.resource_type == SUBNET else None
        if zone:
            subnet_zones[r.urn] = zone
            if known(r.props, "id"):
                subnet_zones[r.props["id"]] = zone
    names = {g.name for g in cfg.node_groups}
    have: set[tuple[str, str]] = set()
    deferred = Deferred()
    for asg in (r for r in args.resources if r.resource_type == ASG):
        group = deferred.attempt(_group_of, asg, names)
        if group is not None:
            have.update((group, zone) for zone in _zones_of(asg, subnet_zones))
    if deferred.unknown is not None and any((g.name, z) not in have for g in cfg.node_groups
                                             for z in cfg.availability_zones):
        deferred.finish()  # an ASG whose tags are not known yet may be the missing one
    for group in cfg.node_groups:
        for zone in cfg.availability_zones:
            if (group.name, zone) not in have:
                report_violation(f"node group {group.name!r} has no ASG in {zone}", None)


def _requires_model_version(pv_props: Any, version: str) -> bool:
    terms = get(pv_props, "spec", "nodeAffinity", "required", "nodeSelectorTerms")
    for term in iter_mappings(terms):
        for expr in iter_mappings(get(term, "matchExpressions")):
            if (get(expr, "key") == MODEL_VERSION_LABEL and get(expr, "operator") == "In"
                    and version in as_list(get(expr, "values"))):
                return True
    return False


def validate_model_volume(args, report_violation) -> None:
    cfg = stack_config(args)
    volumes = [r for r in args.resources if r.resource_type == PERSISTENT_VOLUME
               and under_path(get(r.props, "spec", "hostPath", "path"), cfg.model_path)
               and _requires_model_version(r.props, cfg.model_version)]
    if not volumes:
        report_violation(f"no hostPath PersistentVolume at {cfg.model_path} requires "
                         f"{MODEL_VERSION_LABEL}={cfg.model_version}", None)
    claims = [r for r in args.resources if r.resource_type == PERSISTENT_VOLUME_CLAIM
              and get(r.props, "metadata", "name") == cfg.model_claim_name]
    if not claims:
        report_violation(f"no PersistentVolumeClaim named {cfg.model_claim_name!r} for model {cfg.model_version}", None)


POLICIES = [
    StackValidationPolicy(
        name="stack-asg-per-group-and-zone",
        description="Every configured node group has an ASG in every configured availability zone.",
        validate=validate_asg_per_group_and_zone,
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="stack-model-volume-for-version",
        description="The model PersistentVolume and claim exist for the configured model version.",
        validate=validate_model_volume,
        enforcement_level=MANDATORY,
    ),
]
