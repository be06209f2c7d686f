"""EKS control plane: private-ish endpoint, encrypted secrets, audit logs, API authentication.

Covers the pulumi-eks component (``eks:index:Cluster``, what ``pulumi preview``
and the offline runner see) and the ``aws:eks/cluster:Cluster`` it creates (or
one declared directly), whose properties are spelled differently.
"""

from __future__ import annotations

import ipaddress

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, as_list, config, get, schema

EKS_COMPONENT = "eks:index:Cluster"
AWS_CLUSTER = "aws:eks/cluster:Cluster"
DEFAULT_LOG_TYPES = ["api", "audit", "authenticator"]
ALLOWED_AUTH_MODES = ("API",)


def _open_to_world(cidr: object) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False


def _covers_world(cidrs: list) -> bool:
    """True when the CIDRs together cover every IPv4 or every IPv6 address (e.g. 0.0.0.0/1 + 128.0.0.0/1)."""
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(str(cidr), strict=False))
        except ValueError:
            continue
    for version in (4, 6):
        same = [n for n in nets if n.version == version]
        if same and any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(same)):
            return True
    return False


def validate_endpoint(args, report_violation) -> None:
    props = args.props
    if args.resource_type == EKS_COMPONENT:
        public = get(props, "endpointPublicAccess", default=True)  # pulumi-eks default: public
        cidrs = get(props, "publicAccessCidrs")
        where = "publicAccessCidrs"
    elif args.resource_type == AWS_CLUSTER:
        public = get(props, "vpcConfig", "endpointPublicAccess", default=True)  # EKS API default: public
        cidrs = get(props, "vpcConfig", "publicAccessCidrs")
        where = "vpcConfig.publicAccessCidrs"
    else:
        return
    if public is False:
        return
    if cidrs is None or not len(cidrs):
        report_violation(f"the public endpoint is enabled without {where}, which defaults to 0.0.0.0/0", None)
        return
    cidrs = as_list(cidrs)
    world = [c for c in cidrs if _open_to_world(c)]
    for cidr in world:
        report_violation(f"{where} contains {cidr}: the API endpoint is open to the whole internet", None)
    if not world and _covers_world(cidrs):
        report_violation(f"{where} {', '.join(map(str, cidrs))} together cover the whole internet", None)


def validate_secrets_encryption(args, report_violation) -> None:
    if args.resource_type == EKS_COMPONENT:
        if not get(args.props, "encryptionConfigKeyArn"):
            report_violation("encryptionConfigKeyArn must name a KMS key for secrets envelope encryption", None)
    elif args.resource_type == AWS_CLUSTER:
        enc = get(args.props, "encryptionConfig")
        if "secrets" not in as_list(get(enc, "resources")) or not get(enc, "provider", "keyArn"):
            report_violation("encryptionConfig must encrypt 'secrets' with a KMS key", None)


def validate_logging(args, report_violation) -> None:
    if args.resource_type not in (EKS_COMPONENT, AWS_CLUSTER):
        return
    required = list(config(args, "requiredLogTypes", DEFAULT_LOG_TYPES))
    enabled = set(as_list(get(args.props, "enabledClusterLogTypes")))
    missing = [t for t in required if t not in enabled]
    if missing:
        report_violation(f"enabledClusterLogTypes lacks {', '.join(missing)}", None)


def validate_auth_mode(args, report_violation) -> None:
    if args.resource_type == EKS_COMPONENT:
        mode, where = get(args.props, "authenticationMode"), "authenticationMode"
    elif args.resource_type == AWS_CLUSTER:
        mode, where = get(args.props, "accessConfig", "authenticationMode"), "accessConfig.authenticationMode"
    else:
        return
    if mode not in ALLOWED_AUTH_MODES:
        report_violation(f"{where} is {mode!r}; use API (access entries, no aws-auth ConfigMap)", None)


POLICIES = [
    ResourceValidationPolicy(
        name="eks-endpoint-not-public-to-world",
        description="The EKS public API endpoint is off or limited to named CIDRs, never 0.0.0.0/0.",
        validate=validate_endpoint,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="eks-secrets-encryption",
        description="EKS encrypts Kubernetes secrets with a KMS key.",
        validate=validate_secrets_encryption,
        enforcement_level=MANDATORY,
    ),
    ResourceValidationPolicy(
        name="eks-control-plane-logging",
        description="EKS sends the control-plane logs in requiredLogTypes to CloudWatch.",
        validate=validate_logging,
        enforcement_level=MANDATORY,
        config_schema=schema(requiredLogTypes={
            "type": "array", "items": {"type": "string", "enum": [
                "api", "audit", "authenticator", "controllerManager", "scheduler"]},
            "default": DEFAULT_LOG_TYPES}),
    ),
    ResourceValidationPolicy(
        name="eks-api-authentication-mode",
        description="EKS uses the API authentication mode (access entries).",
        validate=validate_auth_mode,
        enforcement_level=MANDATORY,
    ),
]
