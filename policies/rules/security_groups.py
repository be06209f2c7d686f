"""Security groups: no ingress from the internet, judged per security group over all its rules.

A security group's ingress comes from its inline ``ingress`` blocks and from
separate rule resources (``aws.vpc.SecurityGroupIngressRule``,
``aws.ec2.SecurityGroupRule``) that name it, and may point at a managed prefix
list declared in the stack. The sources are combined before they are judged
(``infra/netranges.py``): ``0.0.0.0/1`` and ``128.0.0.0/1`` in two rules are the
whole internet, ``::ffff:0.0.0.0/96`` is every IPv4 address, and more public
addresses than one /8 (``ipv4MinPrefix``) or /32 of IPv6 (``ipv6MinPrefix``) is
too much. Private ranges do not count.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import StackValidationPolicy

from infra import netranges
from policies.rules._props import MANDATORY, as_list, config, get, iter_mappings, known, schema

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
PREFIX_LIST = "aws:ec2/managedPrefixList:ManagedPrefixList"
PREFIX_LIST_ENTRY = "aws:ec2/managedPrefixListEntry:ManagedPrefixListEntry"
WORLD = ("0.0.0.0/0", "::/0")


def _prefix_lists(resources) -> dict[str, list[str]]:
    """Prefix list id -> its CIDRs, for the lists (and entries) declared in the stack."""
    lists: dict[str, list[str]] = {}
    for r in resources:
        if r.resource_type == PREFIX_LIST and known(r.props, "id"):
            lists.setdefault(r.props["id"], []).extend(get(e, "cidr") for e in iter_mappings(get(r.props, "entries")))
    for r in resources:
        if r.resource_type == PREFIX_LIST_ENTRY and known(r.props, "prefixListId"):
            lists.setdefault(r.props["prefixListId"], []).append(get(r.props, "cidr"))
    return lists


def ingress_sources(r, prefix_lists: dict[str, list[str]]) -> Iterator[tuple[Any, str, list[Any]]]:
    """``(security group, where, CIDRs)`` for each ingress source a resource declares."""
    t, p = r.resource_type, r.props

    def listed(ids: Any) -> list[Any]:
        return [cidr for i in as_list(ids) for cidr in prefix_lists.get(i, [])]

    if t == SECURITY_GROUP:
        group = known(p, "id") or r.urn
        for i, rule in enumerate(iter_mappings(get(p, "ingress"))):
            cidrs = [*as_list(get(rule, "cidrBlocks")), *as_list(get(rule, "ipv6CidrBlocks")),
                     *listed(get(rule, "prefixListIds"))]
            yield group, f"ingress[{i}]", cidrs
    elif t == INGRESS_RULE:
        cidrs = [c for c in (get(p, "cidrIpv4"), get(p, "cidrIpv6")) if c] + listed(get(p, "prefixListId"))
        yield known(p, "securityGroupId") or r.urn, "ingress rule", cidrs
    elif t == SG_RULE and get(p, "type") == "ingress":
        cidrs = [*as_list(get(p, "cidrBlocks")), *as_list(get(p, "ipv6CidrBlocks")), *listed(get(p, "prefixListIds"))]
        yield known(p, "securityGroupId") or r.urn, "ingress rule", cidrs


def validate_no_world_ingress(args, report_violation) -> None:
    v4, v6 = int(config(args, "ipv4MinPrefix", netranges.DEFAULT_IPV4_MIN_PREFIX)), \
        int(config(args, "ipv6MinPrefix", netranges.DEFAULT_IPV6_MIN_PREFIX))
    prefix_lists = _prefix_lists(args.resources)
    groups: dict[Any, list[tuple[Any, str, list[Any]]]] = {}
    for r in args.resources:
        for group, where, cidrs in ingress_sources(r, prefix_lists):
            groups.setdefault(group, []).append((r, where, cidrs))
    for group, sources in groups.items():
        together = netranges.reach(c for _, _, cidrs in sources for c in cidrs)
        if not together.too_broad(v4, v6):
            continue
        for r, where, cidrs in sources:
            alone = netranges.reach(cidrs)
            if not (alone.public_ipv4 or alone.public_ipv6 or alone.whole_internet):
                continue  # this source adds no public address
            what = f"{where} allows {', '.join(map(str, cidrs))}"
            scope = (f"admitting {alone.describe()}" if alone.too_broad(v4, v6) else
                     f"with the security group's other ingress admitting {together.describe()}")
            report_violation(f"{r.resource_type} {r.name!r}: {what}, {scope}; "
                             f"{netranges.limit_text(v4, v6)} allowed", r.urn)


POLICIES = [
    StackValidationPolicy(
        name="sg-no-ingress-from-internet",
        description="No security group admits ingress from the internet: its inline and separate rules (and "
                    "prefix lists) together stay within a /8 of public IPv4 (ipv4MinPrefix) or /32 of IPv6.",
        validate=validate_no_world_ingress,
        enforcement_level=MANDATORY,
        config_schema=schema(
            ipv4MinPrefix={"type": "integer", "minimum": 1, "maximum": 32, "default": netranges.DEFAULT_IPV4_MIN_PREFIX},
            ipv6MinPrefix={"type": "integer", "minimum": 1, "maximum": 128, "default": netranges.DEFAULT_IPV6_MIN_PREFIX}),
    ),
]
