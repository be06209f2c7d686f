"""EKS control plane: private-ish endpoint, encrypted secrets, audit logs, API authentication.

Covers the pulumi-eks component (``eks:index:Cluster``, what ``pulumi preview``
and the offline runner see) and the ``aws:eks/cluster:Cluster`` it creates (or
one declared directly), whose properties are spelled differently.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy

from infra import netranges

from policies.rules._props import MANDATORY, as_list, config, get, schema

EKS_COMPONENT = "eks:index:Cluster"
AWS_CLUSTER = "aws:eks/cluster:Cluster"
DEFAULT_LOG_TYPES = ["api", "audit", "authenticator"]
ALLOWED_AUTH_MODES = ("API",)


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
    for cidr in netranges.unreadable(cidrs):
        report_violation(f"{where} contains {cidr!r}, which is not a CIDR block: what it admits cannot be checked", None)
    v4, v6 = int(config(args, "ipv4MinPrefix", netranges.DEFAULT_IPV4_MIN_PREFIX)), \
        int(config(args, "ipv6MinPrefix", netranges.DEFAULT_IPV6_MIN_PREFIX))
    too_broad = False
    for cidr in cidrs:
        alone = netranges.reach([cidr])
        if alone.whole_internet:
            report_violation(f"{where} contains {cidr}: the API endpoint is open to the whole internet", None)
        elif alone.too_broad(v4, v6):
            report_violation(f"{where} contains {cidr}, which admits {alone.describe()}; "
                             f"{netranges.limit_text(v4, v6)} allowed", None)
        else:
            continue
        too_broad = True
    together = netranges.reach(cidrs)
    if not too_broad and together.too_broad(v4, v6):
        report_violation(f"{where} {', '.join(map(str, cidrs))} together admit {together.describe()}; "
                         f"{netranges.limit_text(v4, v6)} allowed", None)


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
        description="The EKS public API endpoint is off, or its CIDRs together admit at most a /8 of public IPv4 "
                    "(ipv4MinPrefix) or /32 of IPv6 — never 0.0.0.0/0 in any spelling.",
        validate=validate_endpoint,
        enforcement_level=MANDATORY,
        config_schema=schema(
            ipv4MinPrefix={"type": "integer", "minimum": 1, "maximum": 32, "default": netranges.DEFAULT_IPV4_MIN_PREFIX},
            ipv6MinPrefix={"type": "integer", "minimum": 1, "maximum": 128, "default": netranges.DEFAULT_IPV6_MIN_PREFIX}),
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
            "type": "array", "minItems": 1, "items": {"type": "string", "enum": [
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
