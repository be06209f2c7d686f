"""Launch templates: a warm model volume.

IMDSv2, encryption, public IPs and SSH keys are judged for everything that
launches instances, launch templates included, in ``compute.py``.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy

from infra.config import default as config_default
from policies.rules._props import ADVISORY, as_number, config, get, iter_mappings, schema

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
DEFAULT_MODEL_VOLUME_DEVICE = config_default("modelVolumeDevice")


def _is_launch_template(args) -> bool:
    return args.resource_type == LAUNCH_TEMPLATE


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
        name="lt-model-volume-init-rate",
        description="The model volume has an EBS volume initialization rate.",
        validate=validate_model_volume_init_rate,
        enforcement_level=ADVISORY,
        config_schema=schema(modelVolumeDevice={"type": "string", "default": DEFAULT_MODEL_VOLUME_DEVICE}),
    ),
]
