"""Which resolved addresses a sandbox may never reach: loopback, private, link-local, CGNAT,
multicast, unspecified, reserved and cloud-metadata, in IPv4 and IPv6, including IPv4 addresses
embedded in IPv6 ones. Pure functions."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from addons.policy import IPAddress, IPNetwork

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Listed explicitly, not left to `is_global`, whose coverage changes between Python releases.
FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = (
    _V4("0.0.0.0/8"),  # "this network", unspecified
    _V4("10.0.0.0/8"),  # private
    _V4("100.64.0.0/10"),  # CGNAT (also Alibaba's metadata 100.100.100.200)
    _V4("127.0.0.0/8"),  # loopback
    _V4("169.254.0.0/16"),  # link-local (AWS, GCP, Azure metadata 169.254.169.254)
    _V4("172.16.0.0/12"),  # private
    _V4("192.0.0.0/24"),  # IETF protocol assignments
    _V4("192.0.2.0/24"),  # documentation
    _V4("192.88.99.0/24"),  # 6to4 relay anycast
    _V4("192.168.0.0/16"),  # private
    _V4("198.18.0.0/15"),  # benchmarking
    _V4("198.51.100.0/24"),  # documentation
    _V4("203.0.113.0/24"),  # documentation
    _V4("224.0.0.0/4"),  # multicast
    _V4("240.0.0.0/4"),  # reserved, and broadcast 255.255.255.255
    _V6("::/128"),  # unspecified
    _V6("::1/128"),  # loopback
    _V6("64:ff9b:1::/48"),  # local-use NAT64
    _V6("100::/64"),  # discard-only
    _V6("2001:db8::/32"),  # documentation
    _V6("fc00::/7"),  # unique local (AWS metadata fd00:ec2::254)
    _V6("fe80::/10"),  # link-local
    _V6("fec0::/10"),  # deprecated site-local
    _V6("ff00::/8"),  # multicast
)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one (mapped, translated, compatible, NAT64, 6to4,
    Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if packed[:12] == bytes(12) and packed[12:] != bytes(4):  # ::a.b.c.d (deprecated compatible)
        return ipaddress.IPv4Address(packed[12:])
    if packed[:12] == bytes(8) + b"\xff\xff\x00\x00":  # ::ffff:0:a.b.c.d (IPv4-translated, SIIT)
        return ipaddress.IPv4Address(packed[12:])
    if address in _V6("64:ff9b::/96"):  # well-known NAT64 prefix
        return ipaddress.IPv4Address(packed[12:])
    return None


def _forbidden_alone(address: IPAddress) -> bool:
    return any(
        address in network for network in FORBIDDEN_NETWORKS if network.version == address.version
    )


def _exempt(address: IPAddress, allow_ranges: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in allow_ranges if network.version == address.version)


def is_forbidden(address: IPAddress, allow_ranges: Iterable[IPNetwork] = ()) -> bool:
    """Whether a sandbox must not connect to `address`, given the policy's `allow_ranges`.

    An address with an embedded IPv4 one is judged by both: either being forbidden is enough,
    unless that address is inside an allowed range.
    """
    allow_ranges = tuple(allow_ranges)
    for candidate in (address, embedded_ipv4(address)):
        if candidate is None:
            continue
        if _forbidden_alone(candidate) and not _exempt(candidate, allow_ranges):
            return True
    return False


def any_forbidden(addresses: Iterable[IPAddress], allow_ranges: Iterable[IPNetwork] = ()) -> bool:
    allow_ranges = tuple(allow_ranges)
    return any(is_forbidden(address, allow_ranges) for address in addresses)
