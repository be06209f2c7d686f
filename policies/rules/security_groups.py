"""Security groups: no ingress from the whole internet, inline or as separate rules."""

from __future__ import annotations

import ipaddress

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, as_list, as_number, get, iter_mappings

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
WORLD = ("0.0.0.0/0", "::/0")


def _is_world(cidr: object) -> bool:
    """Any spelling of a /0 (``::0/0``, ``0:0:0:0:0:0:0:0/0``, ``0.0.0.0/00``): EC2 normalises them all."""
    if cidr in WORLD:
        return True
    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _world(cidrs) -> list[str]:
    return [c for c in as_list(cidrs) if _is_world(c)]


def validate_no_world_ingress(args, report_violation) -> None:
    props = args.props
    if args.resource_type == SECURITY_GROUP:
        for i, rule in enumerate(iter_mappings(get(props, "ingress"))):
            for cidr in _world(get(rule, "cidrBlocks")) + _world(get(rule, "ipv6CidrBlocks")):
                ports = "-".join(str(int(as_number(get(rule, k)) or 0)) for k in ("fromPort", "toPort"))
                report_violation(f"ingress[{i}] allows {cidr} (ports {ports})", None)
    elif args.resource_type == INGRESS_RULE:
        for cidr in _world(get(props, "cidrIpv4")) + _world(get(props, "cidrIpv6")):
            report_violation(f"ingress rule allows {cidr}", None)
    elif args.resource_type == SG_RULE and get(props, "type") == "ingress":
        for cidr in _world(get(props, "cidrBlocks")) + _world(get(props, "ipv6CidrBlocks")):
            report_violation(f"ingress rule allows {cidr}", None)


POLICIES = [
    ResourceValidationPolicy(
        name="sg-no-ingress-from-internet",
        description="No security group allows ingress from 0.0.0.0/0 or ::/0.",
        validate=validate_no_world_ingress,
        enforcement_level=MANDATORY,
    ),
]
