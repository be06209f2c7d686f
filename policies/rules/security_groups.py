"""Security groups: no ingress from the internet, judged per security group over all its rules.

A security group's ingress comes from its inline ``ingress`` blocks (also on the
VPC's default security group, ``aws.ec2.DefaultSecurityGroup``) and from separate
rule resources (``aws.vpc.SecurityGroupIngressRule``, ``aws.ec2.SecurityGroupRule``)
that name it, and may point at a managed prefix list declared in the stack. The
sources are combined before they are judged (``infra/netranges.py``):
``0.0.0.0/1`` and ``128.0.0.0/1`` in two rules are the whole internet,
``::ffff:0.0.0.0/96`` is every IPv4 address, and more public addresses than one /8
(``ipv4MinPrefix``) or /32 of IPv6 (``ipv6MinPrefix``) is too much. Private ranges
do not count.

What the rule cannot read is not let through: a source that is not a CIDR, or a
prefix list this stack does not declare (an AWS-managed list such as CloudFront's
is thousands of public ranges) is a violation unless listed in
``allowedPrefixListIds``. While a new group's id is not known (a preview), a rule
resource is matched to its group through the property dependency the engine
reports; what still cannot be placed is judged on its own and the rule reports
"can't run during preview" besides the violations it found.
"""

from __future__ import annotations

from typing import Any, Iterator

from pulumi_policy import StackValidationPolicy

from infra import netranges
from policies.rules._props import (MANDATORY, Deferred, as_list, config, dependency_urns, get, iter_mappings, known,
                                   known_items, schema, unknown_error)

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
GROUPS = (SECURITY_GROUP, DEFAULT_SECURITY_GROUP)
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
PREFIX_LIST = "aws:ec2/managedPrefixList:ManagedPrefixList"
PREFIX_LIST_ENTRY = "aws:ec2/managedPrefixListEntry:ManagedPrefixListEntry"


class _Unplaced:
    """A source whose security group cannot be known yet: combined with nothing, judged alone."""

    def __init__(self, urn: str) -> None:
        self.urn = urn


def _prefix_lists(resources, deferred: Deferred) -> tuple[dict[Any, list[Any]], set[Any]]:
    """Prefix list id (or URN, while the id is unknown) -> its CIDRs, for the lists and entries the stack declares;
    and the ids of lists the stack only adds entries to (created elsewhere: their other entries are unknown)."""
    lists: dict[Any, list[Any]] = {}
    partial: set[Any] = set()

    def declared(r) -> None:
        if r.resource_type == PREFIX_LIST:
            cidrs = lists.setdefault(r.urn, [])
            cidrs.extend(get(e, "cidr") for e in iter_mappings(get(r.props, "entries")))
            if known(r.props, "id"):
                lists[r.props["id"]] = cidrs
    for r in resources:
        deferred.attempt(declared, r)

    def entry(r) -> None:
        if r.resource_type == PREFIX_LIST_ENTRY:
            owners = [known(r.props, "prefixListId")] + dependency_urns(r, "prefixListId")
            target = next((lists[o] for o in owners if o in lists and o not in partial), None)
            if target is None:  # an entry of a list from outside the stack: the rest of that list is unknown
                pl = get(r.props, "prefixListId")
                partial.add(pl)
                target = lists.setdefault(pl, [])
            target.append(get(r.props, "cidr"))
    for r in resources:
        deferred.attempt(entry, r)
    return lists, partial


def _group_key(r, prop: str, group_keys: dict[str, Any]) -> Any:
    """The security group a rule resource adds to: its known id, else the group it was computed from."""
    value = known(r.props, prop)
    if value is not None:
        return value
    for urn in dependency_urns(r, prop):
        if urn in group_keys:
            return group_keys[urn]
    get(r.props, prop)  # neither known nor traceable: "can't run during preview" (after the rest is judged)
    return _Unplaced(r.urn)


def ingress_sources(r, prefix_lists: dict[Any, list[Any]], partial: set[Any], group_keys: dict[str, Any]
                    ) -> Iterator[tuple[Any, str, list[Any], list[Any]]]:
    """``(security group, where, CIDRs, prefix lists the stack does not declare)`` for each ingress source."""
    t, p = r.resource_type, r.props

    def listed(scope: Any, key: str, prop: str) -> tuple[list[Any], list[Any]]:
        """CIDRs of the declared prefix lists named at ``scope[key]``, and the ids of lists from outside the stack.
        Ids not known yet are traced to the lists they were computed from (``prop``'s property dependencies)."""
        ids, unknown = known_items(scope, key)
        cidrs, foreign = [], []
        for i in ids:
            cidrs += prefix_lists.get(i, [])
            if i not in prefix_lists or i in partial:
                foreign.append(i)
        if unknown:
            deps = [d for d in dependency_urns(r, prop) if d in prefix_lists]
            if not deps:
                raise unknown_error(f"{r.name}.{key}")  # not traceable: "can't run during preview"
            cidrs += [c for d in deps for c in prefix_lists[d]]
        return cidrs, foreign

    if t in GROUPS:
        group = group_keys[r.urn]
        for i, rule in enumerate(iter_mappings(get(p, "ingress"))):
            lists, foreign = listed(rule, "prefixListIds", "ingress")
            cidrs = [*as_list(get(rule, "cidrBlocks")), *as_list(get(rule, "ipv6CidrBlocks")), *lists]
            yield group, f"ingress[{i}]", cidrs, foreign
    elif t == INGRESS_RULE:
        lists, foreign = listed(p, "prefixListId", "prefixListId")
        cidrs = [c for c in (get(p, "cidrIpv4"), get(p, "cidrIpv6")) if c] + lists
        yield _group_key(r, "securityGroupId", group_keys), "ingress rule", cidrs, foreign
    elif t == SG_RULE and get(p, "type") == "ingress":
        lists, foreign = listed(p, "prefixListIds", "prefixListIds")
        cidrs = [*as_list(get(p, "cidrBlocks")), *as_list(get(p, "ipv6CidrBlocks")), *lists]
        yield _group_key(r, "securityGroupId", group_keys), "ingress rule", cidrs, foreign


def validate_no_world_ingress(args, report_violation) -> None:
    v4, v6 = int(config(args, "ipv4MinPrefix", netranges.DEFAULT_IPV4_MIN_PREFIX)), \
        int(config(args, "ipv6MinPrefix", netranges.DEFAULT_IPV6_MIN_PREFIX))
    allowed_lists = set(config(args, "allowedPrefixListIds", []))
    deferred = Deferred()
    prefix_lists, partial = _prefix_lists(args.resources, deferred)
    # A group is its id; while a new group's id is unknown, its URN (rules reach it through property dependencies).
    group_keys = {r.urn: known(r.props, "id") or r.urn for r in args.resources if r.resource_type in GROUPS}
    groups: dict[Any, list[tuple[Any, str, list[Any]]]] = {}

    def collect(r) -> None:
        for group, where, cidrs, foreign in list(ingress_sources(r, prefix_lists, partial, group_keys)):
            groups.setdefault(group, []).append((r, where, cidrs))
            for cidr in netranges.unreadable(cidrs):
                report_violation(f"{r.resource_type} {r.name!r}: {where} allows {cidr!r}, which is not a CIDR block; "
                                 "what it admits cannot be checked", r.urn)
            for pl in foreign:
                if pl not in allowed_lists:
                    report_violation(f"{r.resource_type} {r.name!r}: {where} allows prefix list {pl!r}, which this stack "
                                     "does not declare (at most adds entries to), so what it admits cannot be checked "
                                     "(AWS-managed lists hold public ranges); declare it, or list it in "
                                     "allowedPrefixListIds", r.urn)
    for r in args.resources:
        deferred.attempt(collect, r)

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
    deferred.finish()


POLICIES = [
    StackValidationPolicy(
        name="sg-no-ingress-from-internet",
        description="No security group admits ingress from the internet: its inline and separate rules (and "
                    "prefix lists) together stay within a /8 of public IPv4 (ipv4MinPrefix) or /32 of IPv6; "
                    "sources the pack cannot read (not a CIDR, a prefix list from outside the stack) are refused.",
        validate=validate_no_world_ingress,
        enforcement_level=MANDATORY,
        config_schema=schema(
            ipv4MinPrefix={"type": "integer", "minimum": 1, "maximum": 32, "default": netranges.DEFAULT_IPV4_MIN_PREFIX},
            ipv6MinPrefix={"type": "integer", "minimum": 1, "maximum": 128, "default": netranges.DEFAULT_IPV6_MIN_PREFIX},
            allowedPrefixListIds={"type": "array", "items": {"type": "string", "pattern": "^pl-[0-9a-f]+$"},
                                  "default": [], "description": "prefix lists from outside the stack that may be "
                                                                "ingress sources (reviewed by hand)"}),
    ),
]
