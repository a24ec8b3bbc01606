"""Which resolved addresses are forbidden, in every spelling, and how allow_ranges exempts them."""

from __future__ import annotations

import ipaddress

import pytest

from addons.addresses import any_forbidden, embedded_ipv4, is_forbidden

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        pytest.param("127.0.0.1", True, id="loopback"),
        pytest.param("127.255.255.254", True, id="loopback-range"),
        pytest.param("10.1.2.3", True, id="private-10"),
        pytest.param("172.16.0.1", True, id="private-172"),
        pytest.param("172.32.0.1", False, id="public-172-32"),
        pytest.param("192.168.1.1", True, id="private-192"),
        pytest.param("169.254.169.254", True, id="aws-gcp-azure-metadata"),
        pytest.param("100.100.100.200", True, id="alibaba-metadata-cgnat"),
        pytest.param("100.64.0.1", True, id="cgnat"),
        pytest.param("0.0.0.0", True, id="unspecified"),
        pytest.param("224.0.0.1", True, id="multicast"),
        pytest.param("255.255.255.255", True, id="broadcast"),
        pytest.param("240.0.0.1", True, id="reserved"),
        pytest.param("198.18.0.1", True, id="benchmarking"),
        pytest.param("192.0.2.1", True, id="documentation"),
        pytest.param("8.8.8.8", False, id="public-v4"),
        pytest.param("::1", True, id="v6-loopback"),
        pytest.param("::", True, id="v6-unspecified"),
        pytest.param("fe80::1", True, id="v6-link-local"),
        pytest.param("fd00:ec2::254", True, id="aws-v6-metadata"),
        pytest.param("fc00::1", True, id="v6-unique-local"),
        pytest.param("ff02::1", True, id="v6-multicast"),
        pytest.param("2001:db8::1", True, id="v6-documentation"),
        pytest.param("2606:4700::1111", False, id="public-v6"),
        pytest.param("::ffff:127.0.0.1", True, id="v4-mapped-loopback"),
        pytest.param("::ffff:169.254.169.254", True, id="v4-mapped-metadata"),
        pytest.param("::ffff:8.8.8.8", False, id="v4-mapped-public"),
        pytest.param("::ffff:0:10.0.0.1", True, id="v4-translated-private"),
        pytest.param("::ffff:0:169.254.169.254", True, id="v4-translated-metadata"),
        pytest.param("::ffff:0:127.0.0.1", True, id="v4-translated-loopback"),
        pytest.param("::ffff:0:8.8.8.8", False, id="v4-translated-public"),
        pytest.param("::127.0.0.1", True, id="v4-compatible-loopback"),
        pytest.param("64:ff9b::a00:1", True, id="nat64-private"),
        pytest.param("64:ff9b::808:808", False, id="nat64-public"),
        pytest.param("2002:a00:1::1", True, id="6to4-private"),
        pytest.param("2002:808:808::1", False, id="6to4-public"),
        pytest.param("2001:0:4136:e378:8000:63bf:f5ff:fffe", True, id="teredo-private-client"),
    ],
)
def test_is_forbidden(address: str, forbidden: bool) -> None:
    assert is_forbidden(ip(address)) is forbidden


@pytest.mark.parametrize(
    ("address", "ranges", "forbidden"),
    [
        pytest.param("10.1.2.3", ["10.1.2.0/24"], False, id="inside-range"),
        pytest.param("10.1.3.3", ["10.1.2.0/24"], True, id="outside-range"),
        pytest.param("::ffff:10.1.2.3", ["10.1.2.0/24"], False, id="mapped-inside-v4-range"),
        pytest.param("127.0.0.2", ["127.0.0.1/32"], True, id="neighbour-of-exemption"),
        pytest.param("fd00::5", ["10.0.0.0/8"], True, id="other-family"),
    ],
)
def test_allow_ranges_exempt_only_their_addresses(
    address: str, ranges: list[str], forbidden: bool
) -> None:
    networks = [ipaddress.ip_network(r) for r in ranges]
    assert is_forbidden(ip(address), networks) is forbidden


def test_any_forbidden_checks_every_address() -> None:
    assert any_forbidden([ip("8.8.8.8"), ip("10.0.0.1")])
    assert not any_forbidden([ip("8.8.8.8"), ip("1.1.1.1")])


def test_embedded_ipv4() -> None:
    assert embedded_ipv4(ip("::ffff:1.2.3.4")) == ip("1.2.3.4")
    assert embedded_ipv4(ip("2606:4700::1111")) is None
    assert embedded_ipv4(ip("1.2.3.4")) is None
