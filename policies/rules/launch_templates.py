"""Launch templates: IMDSv2, encrypted EBS, no public IP, no SSH key, a warm model volume.

IMDSv1 or a hop limit above 2 lets any pod reach the node role's credentials;
an unencrypted or public node undoes the rest of the design.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import ADVISORY, MANDATORY, as_number, config, get, iter_mappings, schema, truthy

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
DEFAULT_MAX_HOP_LIMIT = 2
DEFAULT_MODEL_VOLUME_DEVICE = "/dev/xvdb"


def _is_launch_template(args) -> bool:
    return args.resource_type == LAUNCH_TEMPLATE


def validate_imdsv2(args, report_violation) -> None:
    if not _is_launch_template(args):
        return
    max_hops = int(config(args, "maxHopLimit", DEFAULT_MAX_HOP_LIMIT))
    metadata = get(args.props, "metadataOptions", default={})
    if get(metadata, "httpTokens") != "required":
        report_violation("metadataOptions.httpTokens must be 'required' (IMDSv2 only)", None)
    hops = as_number(get(metadata, "httpPutResponseHopLimit"))
    if hops is None:
        report_violation(f"metadataOptions.httpPutResponseHopLimit must be set (at most {max_hops})", None)
    elif hops > max_hops:
        report_violation(f"metadataOptions.httpPutResponseHopLimit is {int(hops)}; at most {max_hops} allowed", None)


def validate_ebs_encrypted(args, report_violation) -> None:
    if not _is_launch_template(args):
        return
    for mapping in iter_mappings(get(args.props, "blockDeviceMappings")):
        ebs = get(mapping, "ebs")
        if ebs is not None and not truthy(get(ebs, "encrypted")):
            report_violation(f"EBS volume {get(mapping, 'deviceName', default='?')} is not encrypted", None)


def validate_no_public_ip(args, report_violation) -> None:
    if not _is_launch_template(args):
        return
    for i, nic in enumerate(iter_mappings(get(args.props, "networkInterfaces"))):
        if truthy(get(nic, "associatePublicIpAddress")):
            report_violation(f"networkInterfaces[{i}].associatePublicIpAddress must not be true", None)


def validate_no_key_pair(args, report_violation) -> None:
    if not _is_launch_template(args):
        return
    if get(args.props, "keyName"):
        report_violation(f"keyName is {get(args.props, 'keyName')!r}; nodes are reached through SSM, not SSH", None)


def validate_model_volume_init_rate(args, report_violation) -> None:
    if not _is_launch_template(args):
        return
    device = config(args, "modelVolumeDevice", DEFAULT_MODEL_VOLUME_DEVICE)
    for mapping in iter_mappings(get(args.props, "blockDeviceMappings")):
        if get(mapping, "deviceName") == device:
            rate = as_number(get(mapping, "ebs", "volumeInitializationRate"))
            if rate is None or not 100 <= rate <= 300:
                report_violation(f"model volume {device} needs ebs.volumeInitializationRate between 100 and 300 MiB/s "
                                 "(a volume restored from a snapshot otherwise reads cold at ~9 MB/s)", None)
            return
    report_violation(f"no block device mapping for the model volume {device}", None)


POLICIES = [
    ResourceValidationPolicy(
        name="lt-imdsv2-required",
        description="Launch templates require IMDSv2 with a hop limit of at most maxHopLimit.",
        validate=validate_imdsv2,
        enforcement_level=MANDATORY,
        config_schema=schema(maxHopLimit={"type": "integer", "minimum": 1, "maximum": 64,
                                          "default": DEFAULT_MAX_HOP_LIMIT}),
    ),
    ResourceValidationPolicy(
        name="lt-ebs-encrypted",
        description="Every EBS volume of a launch template is encrypted.",
        validate=validate_ebs_encrypted,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="lt-no-public-ip",
        description="Launch templates do not give nodes a public IP address.",
        validate=validate_no_public_ip,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="lt-no-key-pair",
        description="Launch templates carry no SSH key pair.",
        validate=validate_no_key_pair,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="lt-model-volume-init-rate",
        description="The model volume has an EBS volume initialization rate.",
        validate=validate_model_volume_init_rate,
        enforcement_level=ADVISORY,
        config_schema=schema(modelVolumeDevice={"type": "string", "default": DEFAULT_MODEL_VOLUME_DEVICE}),
    ),
]
