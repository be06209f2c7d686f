"""Everything that launches EC2 instances: IMDSv2, encrypted EBS, no public IP, no SSH, templates the pack can see.

The rules judge behaviour, not one resource type: a node launched by an
``aws.ec2.Instance``, a spot request or fleet, a launch configuration, an EKS
managed node group, an AWS Batch compute environment or a pulumi-eks node group
is held to the same rules as kiln's own launch templates. Where a resource
launches from a launch template, the template is judged (and must be one this
stack declares, so the pack can see it); settings a resource cannot express
(an EKS node group without a template gets EKS's default one, which allows
IMDSv1 and does not encrypt its volume) are reported, not assumed safe.

IMDSv1 or a hop limit above 2 lets any pod reach the node role's credentials;
an unencrypted volume, a public IP or an SSH key undoes the rest of the design.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re

from typing import Any, Iterator, Optional

from pulumi_policy import ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from policies.rules._props import (MANDATORY, Deferred, as_number, config, dependency_urns, get, iter_mappings, known,
                                   schema, truthy, unknown_error)

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
LAUNCH_CONFIGURATION = "aws:ec2/launchConfiguration:LaunchConfiguration"
INSTANCE = "aws:ec2/instance:Instance"
SPOT_INSTANCE_REQUEST = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
SPOT_FLEET_REQUEST = "aws:ec2/spotFleetRequest:SpotFleetRequest"
FLEET = "aws:ec2/fleet:Fleet"
ASG = "aws:autoscaling/group:Group"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
BATCH_COMPUTE_ENVIRONMENT = "aws:batch/computeEnvironment:ComputeEnvironment"
EBS_VOLUME = "aws:ebs/volume:Volume"
SNAPSHOT_COPY = "aws:ebs/snapshotCopy:SnapshotCopy"
AMI_COPY = "aws:ec2/amiCopy:AmiCopy"
ENCRYPTION_BY_DEFAULT = "aws:ebs/encryptionByDefault:EncryptionByDefault"
SUBNETS = ("aws:ec2/subnet:Subnet", "aws:ec2/defaultSubnet:DefaultSubnet")
DEFAULT_SUBNET = "aws:ec2/defaultSubnet:DefaultSubnet"
EIP = "aws:ec2/eip:Eip"
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
# pulumi-eks components: their children (templates, ASGs, node groups) reach the pack under a real
# `pulumi preview`; their own inputs are judged here too, which is all the offline runner can see.
EKS_MANAGED_NODE_GROUP = "eks:index:ManagedNodeGroup"
EKS_SELF_MANAGED_NODE_GROUPS = ("eks:index:NodeGroup", "eks:index:NodeGroupV2")
EKS_CLUSTER = "eks:index:Cluster"
INSTANCES = (INSTANCE, SPOT_INSTANCE_REQUEST)
NODE_GROUPS = (EKS_NODE_GROUP, EKS_MANAGED_NODE_GROUP)

DEFAULT_MAX_HOP_LIMIT = 2


def _has_template(props: Any) -> bool:
    return get(props, "launchTemplate") is not None


def _batch_ec2(props: Any) -> bool:
    return str(get(props, "computeResources", "type", default="")).upper() in ("EC2", "SPOT")


def _default_node_group(args) -> bool:
    """pulumi-eks's Cluster creates a node group of its own unless told not to."""
    return args.resource_type == EKS_CLUSTER and get(args.props, "skipDefaultNodeGroup") is not True


def _eks_component_settings(args) -> Optional[Any]:
    """The inputs a pulumi-eks node group (or the cluster's default one) is launched with."""
    if args.resource_type in EKS_SELF_MANAGED_NODE_GROUPS:
        return args.props
    if _default_node_group(args):
        return args.props
    return None


# --------------------------------------------------------------------------- IMDSv2


def _imds_problems(metadata: Any, where: str, max_hops: int) -> Iterator[str]:
    if metadata is None:
        yield f"{where} is not set: IMDSv1 stays enabled (set httpTokens: required and a hop limit of at most {max_hops})"
        return
    if get(metadata, "httpTokens") != "required":
        yield f"{where}.httpTokens must be 'required' (IMDSv2 only)"
    hops = as_number(get(metadata, "httpPutResponseHopLimit"))
    if hops is None:
        yield f"{where}.httpPutResponseHopLimit must be set (at most {max_hops})"
    elif hops > max_hops:
        yield f"{where}.httpPutResponseHopLimit is {int(hops)}; at most {max_hops} allowed"


def imds_problems(args, max_hops: int) -> Iterator[str]:
    t, props = args.resource_type, args.props
    if t in (LAUNCH_TEMPLATE, LAUNCH_CONFIGURATION):
        yield from _imds_problems(get(props, "metadataOptions"), "metadataOptions", max_hops)
    elif t in INSTANCES:
        if not (_has_template(props) and get(props, "metadataOptions") is None):  # else the template decides
            yield from _imds_problems(get(props, "metadataOptions"), "metadataOptions", max_hops)
    elif t in NODE_GROUPS and not _has_template(props):
        yield "no launchTemplate: EKS's default launch template allows IMDSv1 (hop limit 2); use a launch template"
    elif t == BATCH_COMPUTE_ENVIRONMENT and _batch_ec2(props) and get(props, "computeResources", "launchTemplate") is None:
        yield "computeResources has no launchTemplate: Batch's instances keep IMDSv1; use a launch template"
    elif t == SPOT_FLEET_REQUEST and get(props, "launchSpecifications") is not None:
        yield "launchSpecifications cannot require IMDSv2; use launchTemplateConfigs"
    elif _default_node_group(args):
        yield "skipDefaultNodeGroup is not true: pulumi-eks launches a default node group; kiln declares its own"


def validate_imdsv2(args, report_violation) -> None:
    max_hops = int(config(args, "maxHopLimit", DEFAULT_MAX_HOP_LIMIT))
    for problem in imds_problems(args, max_hops):
        report_violation(problem, None)


# --------------------------------------------------------------------------- EBS encryption


def _block_devices(props: Any, *, root_required: bool) -> Iterator[str]:
    """``rootBlockDevice`` and ``ebsBlockDevices`` of an instance or launch configuration."""
    root = get(props, "rootBlockDevice")
    if root is None:
        if root_required:
            yield "rootBlockDevice is not set: the root volume is encrypted only if the account encrypts by default"
    elif get(root, "encrypted") is not True and not truthy(get(root, "encrypted")):
        yield "rootBlockDevice.encrypted must be true"
    for device in iter_mappings(get(props, "ebsBlockDevices")):
        if not truthy(get(device, "encrypted")) and get(device, "encrypted") is not True:
            yield f"ebsBlockDevices {get(device, 'deviceName', default='?')} is not encrypted"


def ebs_problems(args) -> Iterator[str]:
    t, props = args.resource_type, args.props
    if t == LAUNCH_TEMPLATE:
        for mapping in iter_mappings(get(props, "blockDeviceMappings")):
            ebs = get(mapping, "ebs")
            if ebs is not None and not truthy(get(ebs, "encrypted")):
                yield f"EBS volume {get(mapping, 'deviceName', default='?')} is not encrypted"
    elif t == LAUNCH_CONFIGURATION:
        yield from _block_devices(props, root_required=True)
    elif t in INSTANCES:
        yield from _block_devices(props, root_required=not _has_template(props))
    elif t in (EBS_VOLUME, SNAPSHOT_COPY, AMI_COPY):
        if not truthy(get(props, "encrypted")):
            yield "encrypted must be true"
    elif t == ENCRYPTION_BY_DEFAULT and not truthy(get(props, "enabled", default=True)):
        yield "enabled: false turns off the account's EBS encryption by default (every volume a rule cannot see)"
    elif t in NODE_GROUPS and not _has_template(props):
        yield "no launchTemplate: EKS's default launch template does not encrypt the node's volume"
    elif t == BATCH_COMPUTE_ENVIRONMENT and _batch_ec2(props) and get(props, "computeResources", "launchTemplate") is None:
        yield "computeResources has no launchTemplate: Batch's volumes are encrypted only if the account encrypts by default"
    elif t == SPOT_FLEET_REQUEST:
        for i, spec in enumerate(iter_mappings(get(props, "launchSpecifications"))):
            devices = [*iter_mappings(get(spec, "rootBlockDevices")), *iter_mappings(get(spec, "ebsBlockDevices"))]
            if not devices or any(not truthy(get(d, "encrypted")) for d in devices):
                yield f"launchSpecifications[{i}] has an unencrypted (or default) volume"
    else:
        settings = _eks_component_settings(args)
        if settings is not None and get(settings, "nodeRootVolumeEncrypted") is not True \
                and get(settings, "encryptRootBlockDevice") is not True:
            yield "nodeRootVolumeEncrypted must be true (pulumi-eks leaves the root volume unencrypted by default)"


def validate_ebs_encrypted(args, report_violation) -> None:
    for problem in ebs_problems(args):
        report_violation(problem, None)


# --------------------------------------------------------------------------- public IPs


def _explicit_private(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _primary(position: int, nic: Any) -> bool:
    """The interface a public IP is mapped to on launch: device index 0, which is not always listed first
    (the first listed is held to it too, so a template whose order and indexes disagree is not guessed)."""
    return position == 0 or as_number(get(nic, "deviceIndex")) == 0


def public_ip_problems(args) -> Iterator[str]:
    """A public address on an instance, however it gets one: an interface or instance that asks for it, one that
    leaves it to the subnet (whose ``mapPublicIpOnLaunch`` then decides), a subnet that maps public IPs on launch,
    or an Elastic IP associated with an instance or interface."""
    t, props = args.resource_type, args.props
    if t == LAUNCH_TEMPLATE:
        nics = list(iter_mappings(get(props, "networkInterfaces")))
        if not nics:
            yield ("networkInterfaces is not set: the subnet's mapPublicIpOnLaunch decides whether instances get a "
                   "public IP; set networkInterfaces[0].associatePublicIpAddress: 'false'")
        for i, nic in enumerate(nics):
            if truthy(get(nic, "associatePublicIpAddress")):
                yield f"networkInterfaces[{i}].associatePublicIpAddress must not be true"
            elif _primary(i, nic) and not _explicit_private(get(nic, "associatePublicIpAddress")):
                yield (f"networkInterfaces[{i}].associatePublicIpAddress is not set: the subnet's mapPublicIpOnLaunch "
                       "decides; set it to 'false'")
    elif t in (LAUNCH_CONFIGURATION, *INSTANCES):
        value = get(props, "associatePublicIpAddress")
        if truthy(value):
            yield "associatePublicIpAddress must not be true"
        elif not _explicit_private(value) and not (t in INSTANCES and _has_template(props)):
            yield "associatePublicIpAddress is not set: the subnet's mapPublicIpOnLaunch decides; set it to false"
    elif t == SPOT_FLEET_REQUEST:
        for i, spec in enumerate(iter_mappings(get(props, "launchSpecifications"))):
            if not _explicit_private(get(spec, "associatePublicIpAddress")):
                yield f"launchSpecifications[{i}].associatePublicIpAddress must be false"
    elif t in SUBNETS:
        default = t == DEFAULT_SUBNET  # a default subnet maps public IPs unless told not to
        value = get(props, "mapPublicIpOnLaunch")
        if truthy(value) or (default and not _explicit_private(value)):
            yield ("mapPublicIpOnLaunch gives every instance launched here without an explicit setting a public IP; "
                   "set it to false")
    elif t == EIP and any(get(props, k) for k in ("instance", "networkInterface", "associateWithPrivateIp")):
        yield "associates an Elastic IP (a public address) with an instance or network interface"
    elif t == EIP_ASSOCIATION and any(get(props, k) for k in ("instanceId", "networkInterfaceId")):
        yield "associates an Elastic IP (a public address) with an instance or network interface"
    else:
        settings = _eks_component_settings(args)
        if settings is not None and get(settings, "nodeAssociatePublicIpAddress") is not False:
            yield "nodeAssociatePublicIpAddress must be false (pulumi-eks gives nodes public IPs by default)"


def validate_no_public_ip(args, report_violation) -> None:
    for problem in public_ip_problems(args):
        report_violation(problem, None)


# --------------------------------------------------------------------------- SSH


# What user data does to let SSH in: install a public key, or turn on password logins.
_SSH_KEY = re.compile(r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                      r"\s+AAAA", re.IGNORECASE)
_SSH_SETTINGS = re.compile(r"authorized_keys|ssh_authorized_keys|ssh_pwauth\s*:\s*(true|yes|1)|"
                           r"PasswordAuthentication\s+yes|PermitRootLogin\s+yes|chpasswd", re.IGNORECASE)
USER_DATA_KEYS = ("userData", "userDataBase64")


def user_data_texts(value: Any) -> list[str]:
    """User data as a node would read it: the text itself, base64-decoded, and gunzipped (cloud-init accepts all)."""
    if not isinstance(value, str) or not value:
        return []
    texts, raw = [value], None
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = None
    for blob in (raw, value.encode("utf-8", "replace")):
        if blob is None:
            continue
        if blob[:2] == b"\x1f\x8b":
            try:
                blob = gzip.decompress(blob)
            except (OSError, EOFError):
                continue
        texts.append(blob.decode("utf-8", "replace"))
    return texts


def user_data_ssh_problem(where: str, value: Any) -> Optional[str]:
    for text in user_data_texts(value):
        found = _SSH_KEY.search(text) or _SSH_SETTINGS.search(text)
        if found:
            return f"{where} sets up SSH logins ({found.group(0)[:40]!r}); nodes are reached through SSM, not SSH"
    return None


def _user_data_sources(t: str, props: Any) -> Iterator[tuple[str, Any]]:
    if t in (LAUNCH_TEMPLATE, LAUNCH_CONFIGURATION, *INSTANCES):
        for key in USER_DATA_KEYS:
            yield key, get(props, key)
    elif t == SPOT_FLEET_REQUEST:
        for i, spec in enumerate(iter_mappings(get(props, "launchSpecifications"))):
            yield f"launchSpecifications[{i}].userData", get(spec, "userData")
    elif t in EKS_SELF_MANAGED_NODE_GROUPS or t == EKS_CLUSTER:
        for key in ("nodeUserData", "nodeUserDataOverride"):
            yield key, get(props, key)


def ssh_problems(args) -> Iterator[str]:
    t, props = args.resource_type, args.props
    if t in (LAUNCH_TEMPLATE, LAUNCH_CONFIGURATION, *INSTANCES) and get(props, "keyName"):
        yield f"keyName is {get(props, 'keyName')!r}; nodes are reached through SSM, not SSH"
    elif t in NODE_GROUPS and get(props, "remoteAccess") is not None:
        yield "remoteAccess opens SSH to the nodes; they are reached through SSM"
    elif t == BATCH_COMPUTE_ENVIRONMENT and get(props, "computeResources", "ec2KeyPair"):
        yield f"computeResources.ec2KeyPair is {get(props, 'computeResources', 'ec2KeyPair')!r}; use SSM, not SSH"
    elif t == SPOT_FLEET_REQUEST:
        for i, spec in enumerate(iter_mappings(get(props, "launchSpecifications"))):
            if get(spec, "keyName"):
                yield f"launchSpecifications[{i}].keyName is {get(spec, 'keyName')!r}; use SSM, not SSH"
    else:
        settings = _eks_component_settings(args)
        for key in ("nodePublicKey", "keyName"):
            if settings is not None and get(settings, key):
                yield f"{key} gives the nodes an SSH key; they are reached through SSM"


def validate_no_ssh(args, report_violation) -> None:
    for problem in ssh_problems(args):
        report_violation(problem, None)
    # User data last: it is often not known during preview, and the rest must be reported first.
    for where, value in _user_data_sources(args.resource_type, args.props):
        problem = user_data_ssh_problem(where, value)
        if problem:
            report_violation(problem, None)


# --------------------------------------------------------------------------- templates the pack can see


UNKNOWN = object()  # a reference not known during preview


def _maybe(value: Any, key: str) -> Any:
    """``get``, with a value not known during preview given as ``UNKNOWN``."""
    try:
        return get(value, key)
    except UnknownValueError:
        return UNKNOWN


def template_references(resource) -> Iterator[tuple[str, str, Any]]:
    """``(where, kind, value)`` for every launch template / configuration a resource launches from;
    ``kind`` is ``id``, ``name`` or ``configuration``; ``value`` is ``UNKNOWN`` while not known (a preview)."""
    t, props = resource.resource_type, resource.props

    def spec(where: str, value: Any, id_key: str, name_key: str) -> Iterator[tuple[str, str, Any]]:
        if value is None:
            return
        ident, name = _maybe(value, id_key), _maybe(value, name_key)
        if ident is not None:
            yield f"{where}.{id_key}", "id", ident
        elif name is not None:
            yield f"{where}.{name_key}", "name", name
        else:
            yield where, "id", None

    if t == ASG:
        yield from spec("launchTemplate", get(props, "launchTemplate"), "id", "name")
        mixed = get(props, "mixedInstancesPolicy", "launchTemplate")
        yield from spec("mixedInstancesPolicy.launchTemplate.launchTemplateSpecification",
                        get(mixed, "launchTemplateSpecification"), "launchTemplateId", "launchTemplateName")
        for i, override in enumerate(iter_mappings(get(mixed, "overrides"))):
            yield from spec(f"mixedInstancesPolicy.launchTemplate.overrides[{i}].launchTemplateSpecification",
                            get(override, "launchTemplateSpecification"), "launchTemplateId", "launchTemplateName")
        if _maybe(props, "launchConfiguration") is not None:
            yield "launchConfiguration", "configuration", _maybe(props, "launchConfiguration")
    elif t in (*INSTANCES, EKS_NODE_GROUP):
        yield from spec("launchTemplate", get(props, "launchTemplate"), "id", "name")
    elif t == FLEET:
        for i, cfg in enumerate(iter_mappings(get(props, "launchTemplateConfigs"))):
            yield from spec(f"launchTemplateConfigs[{i}].launchTemplateSpecification",
                            get(cfg, "launchTemplateSpecification"), "launchTemplateId", "launchTemplateName")
    elif t == SPOT_FLEET_REQUEST:
        for i, cfg in enumerate(iter_mappings(get(props, "launchTemplateConfigs"))):
            yield from spec(f"launchTemplateConfigs[{i}].launchTemplateSpecification",
                            get(cfg, "launchTemplateSpecification"), "id", "name")
    elif t == BATCH_COMPUTE_ENVIRONMENT:
        yield from spec("computeResources.launchTemplate", get(props, "computeResources", "launchTemplate"),
                        "launchTemplateId", "launchTemplateName")


def _template_prop(resource, where: str) -> str:
    """The top-level input a template reference sits in (what the engine's property dependencies are keyed by)."""
    return where.split(".", 1)[0].split("[", 1)[0]


def validate_templates_declared(args, report_violation) -> None:
    """A template is named by id or name; while a new template's id is not known (a preview), the reference is
    traced to the template it was computed from through the engine's property dependencies."""
    deferred = Deferred()
    templates: dict[str, set[Any]] = {"id": set(), "name": set(), "configuration": set()}
    urns = {"id": set(), "name": set(), "configuration": set()}
    for r in args.resources:
        if r.resource_type == LAUNCH_TEMPLATE:
            templates["id"].add(known(r.props, "id"))
            templates["name"].add(known(r.props, "name"))
            urns["id"].add(r.urn)
            urns["name"].add(r.urn)
        elif r.resource_type == LAUNCH_CONFIGURATION:
            templates["configuration"].update({known(r.props, "name"), known(r.props, "id")})
            urns["configuration"].add(r.urn)

    def judge(r) -> None:
        for where, kind, value in template_references(r):
            if value is UNKNOWN:
                deps = set(dependency_urns(r, _template_prop(r, where)))
                if deps & urns[kind]:
                    continue  # computed from a template (configuration) this stack declares
                raise unknown_error(f"{r.name}.{where}")
            if value is None or value not in templates[kind] - {None}:
                what = "launch configuration" if kind == "configuration" else "launch template"
                report_violation(f"{r.resource_type} {r.name!r}: {where} ({value!r}) is not a {what} declared in this "
                                 f"stack, so no rule can check what it launches", r.urn)
    for r in args.resources:
        deferred.attempt(judge, r)
    deferred.finish()


POLICIES = [
    ResourceValidationPolicy(
        name="compute-imdsv2-required",
        description="Everything that launches instances requires IMDSv2 with a hop limit of at most maxHopLimit.",
        validate=validate_imdsv2,
        enforcement_level=MANDATORY,
        config_schema=schema(maxHopLimit={"type": "integer", "minimum": 1, "maximum": 64,
                                          "default": DEFAULT_MAX_HOP_LIMIT}),
    ),
    ResourceValidationPolicy(
        name="compute-ebs-encrypted",
        description="Every EBS volume an instance launches with (and every EBS volume) is encrypted.",
        validate=validate_ebs_encrypted,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="compute-no-public-ip",
        description="Nothing launches instances with a public IP address.",
        validate=validate_no_public_ip,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="compute-no-ssh-access",
        description="Nothing launches instances with an SSH key pair or EKS remote access.",
        validate=validate_no_ssh,
        enforcement_level=MANDATORY,
    ),
    StackValidationPolicy(
        name="compute-launch-template-declared",
        description="Instances launch only from launch templates (or configurations) declared in this stack.",
        validate=validate_templates_declared,
        enforcement_level=MANDATORY,
    ),
]
