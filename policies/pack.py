"""The kiln policy pack: its name, its policies and their config schemas.

Importing this module starts nothing; :func:`serve` constructs the
``PolicyPack``, which starts the analyzer's gRPC server and blocks (that is
what ``policies/__main__.py`` does when Pulumi launches the pack).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, Policy, PolicyPack

from policies.rules import (asgs, ci_roles, compute, cost, ecr, eks, iam, kubernetes, launch_templates, s3,
                            safe_to_evict, security_groups, stack)

PACK_NAME = "kiln"


def policies() -> list[Policy]:
    """Every policy of the pack, in a stable order."""
    return [
        *ecr.POLICIES, *compute.POLICIES, *launch_templates.POLICIES, *asgs.POLICIES, *eks.POLICIES,
        *security_groups.POLICIES, *iam.POLICIES, *ci_roles.POLICIES, *s3.POLICIES, *kubernetes.POLICIES, *safe_to_evict.POLICIES,
        *cost.POLICIES, *stack.POLICIES,
    ]


def level_of(policy: Policy) -> EnforcementLevel:
    return policy.enforcement_level or EnforcementLevel.MANDATORY


def config_defaults(policy: Policy) -> dict[str, Any]:
    """The defaults of a policy's config schema, as the CLI fills them in."""
    schema = policy.config_schema
    if schema is None:
        return {}
    return {k: v["default"] for k, v in schema.properties.items() if "default" in v}


def settings_problems(name: str, settings: dict[str, Any]) -> list[str]:
    """What a policy's settings get wrong together (each one alone is checked against its schema)."""
    if name == "cost-volume-size-bounds":
        low = settings.get("minVolumeSizeGiB", cost.DEFAULT_MIN_VOLUME_GIB)
        high = settings.get("maxVolumeSizeGiB", cost.DEFAULT_MAX_VOLUME_GIB)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            return [f"{name}: minVolumeSizeGiB ({low}) must not be above maxVolumeSizeGiB ({high})"]
    return []


def serve() -> None:
    """Construct the pack: starts the analyzer server, prints its port, blocks."""
    PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
