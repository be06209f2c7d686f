"""How much of the internet a set of CIDRs admits — the one rule config and policy pack share.

Ranges are judged together, not one by one: ``0.0.0.0/1`` and ``128.0.0.0/1`` are
each "only half", together they are everything. IPv4 written as IPv6 counts as the
IPv4 it denotes: IPv4-mapped (``::ffff:0:0/96``), NAT64 (``64:ff9b::/96``) and
6to4 (``2002::/16``) addresses reach IPv4 hosts, so ``::ffff:0.0.0.0/96`` is the
whole IPv4 internet. Only *public* addresses count: private, shared (100.64/10),
loopback and link-local space is not the internet.

A set is too broad when it admits more public addresses than one network of the
broadest allowed prefix (by default a /8 of IPv4, a /32 of IPv6).

Pure Python, no Pulumi: ``infra.config`` and ``policies.rules`` both import it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_IPV4_MIN_PREFIX = 8
DEFAULT_IPV6_MIN_PREFIX = 32

_NOT_PUBLIC = {
    4: [ipaddress.ip_network(n) for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4")],
    6: [ipaddress.ip_network(n) for n in ("::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")],
}
# IPv6 ranges that embed an IPv4 address: (range, bit offset of the IPv4 address from the left).
_EMBEDS_IPV4 = [(ipaddress.ip_network("::ffff:0:0/96"), 96), (ipaddress.ip_network("64:ff9b::/96"), 96),
                (ipaddress.ip_network("2002::/16"), 16)]


def parse(cidr: object) -> Optional[Network]:
    """A network for any CIDR spelling (host bits allowed, as EC2 normalises them), or None."""
    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        return None


def unreadable(cidrs: Iterable[object]) -> list[object]:
    """The entries that are not a CIDR in any spelling: a rule cannot say what they admit, so it must not pass them."""
    return [c for c in cidrs if parse(c) is None]


def as_ipv4(net: Network) -> list[Network]:
    """The network itself, plus the IPv4 it reaches when it is IPv4 written as IPv6."""
    out: list[Network] = [net]
    if net.version == 6:
        for embedding, offset in _EMBEDS_IPV4:
            if net.subnet_of(embedding):
                shift = 128 - offset - 32
                first = (int(net.network_address) >> shift) & 0xFFFFFFFF
                out.append(ipaddress.IPv4Network((first, min(32, max(0, net.prefixlen - offset))), strict=False))
            elif embedding.subnet_of(net):  # e.g. ::/64 contains every IPv4-mapped address
                out.append(ipaddress.IPv4Network("0.0.0.0/0"))
    return out


def _public_count(nets: list[Network], version: int) -> int:
    nets = list(ipaddress.collapse_addresses(n for n in nets if n.version == version))
    total = sum(n.num_addresses for n in nets)
    for private in _NOT_PUBLIC[version]:
        total -= sum(n.num_addresses for n in nets if n.subnet_of(private))
        total -= sum(private.num_addresses for n in nets if private.subnet_of(n) and n != private)
    return total


@dataclass(frozen=True)
class Reach:
    """What a set of CIDRs admits."""

    whole_ipv4: bool
    whole_ipv6: bool
    public_ipv4: int
    public_ipv6: int

    @property
    def whole_internet(self) -> bool:
        return self.whole_ipv4 or self.whole_ipv6

    def too_broad(self, ipv4_min_prefix: int = DEFAULT_IPV4_MIN_PREFIX,
                  ipv6_min_prefix: int = DEFAULT_IPV6_MIN_PREFIX) -> bool:
        return (self.whole_internet or self.public_ipv4 > 2 ** (32 - ipv4_min_prefix)
                or self.public_ipv6 > 2 ** (128 - ipv6_min_prefix))

    def describe(self) -> str:
        if self.whole_internet:
            return "the whole internet"
        parts = []
        if self.public_ipv4:
            parts.append(f"{self.public_ipv4} public addresses (IPv4)")
        if self.public_ipv6:
            parts.append(f"about 2^{self.public_ipv6.bit_length() - 1} public addresses (IPv6)")
        return " and ".join(parts) or "no public addresses"


def reach(cidrs: Iterable[object]) -> Reach:
    """What these CIDRs admit together; unparseable entries are ignored (config refuses them itself)."""
    nets: list[Network] = []
    for cidr in cidrs:
        net = parse(cidr)
        if net is not None:
            nets.extend(as_ipv4(net))
    collapsed = list(ipaddress.collapse_addresses(n for n in nets if n.version == 4)) + \
        list(ipaddress.collapse_addresses(n for n in nets if n.version == 6))
    return Reach(
        whole_ipv4=any(n.version == 4 and n.prefixlen == 0 for n in collapsed),
        whole_ipv6=any(n.version == 6 and n.prefixlen == 0 for n in collapsed),
        public_ipv4=_public_count(nets, 4),
        public_ipv6=_public_count(nets, 6),
    )


def limit_text(ipv4_min_prefix: int = DEFAULT_IPV4_MIN_PREFIX, ipv6_min_prefix: int = DEFAULT_IPV6_MIN_PREFIX) -> str:
    return f"at most a /{ipv4_min_prefix} of IPv4 ({2 ** (32 - ipv4_min_prefix)} addresses) or a /{ipv6_min_prefix} of IPv6"


PRIVATE_VPC_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                              "100.64.0.0/10"))


def is_private_vpc_range(net: Network) -> bool:
    """RFC 1918 or RFC 6598 (shared address space), as AWS recommends for VPC CIDRs."""
    return net.version == 4 and any(net.subnet_of(r) for r in PRIVATE_VPC_RANGES)
