"""The transparent listener's facts: where a redirected client was going, what names its
destination, what a decision line adds. The behaviour end to end is tests/integration/
test_transparent.py (real nftables redirects in a private network namespace)."""

from __future__ import annotations

import ipaddress

import pytest
from mitmproxy.proxy import mode_specs
from mitmproxy.test import tflow, tutils

from addons import transparent
from addons.patches import registry
from addons.patches import transparent as transparent_patch

TRANSPARENT = mode_specs.ProxyMode.parse("transparent@127.0.0.1:8082")
REGULAR = mode_specs.ProxyMode.parse("regular")


def client(mode=TRANSPARENT, sockname=("203.0.113.9", 443)):
    conn = tflow.tclient_conn()
    conn.proxy_mode = mode
    conn.sockname = sockname
    return conn


@pytest.mark.parametrize(
    ("conn", "original", "fields"),
    [
        pytest.param(
            client(),
            ("203.0.113.9", 443),
            {"mode": "transparent", "original_destination": "203.0.113.9:443"},
            id="ipv4",
        ),
        pytest.param(
            client(sockname=("2001:db8::9", 80, 0, 0)),
            ("2001:db8::9", 80),
            {"mode": "transparent", "original_destination": "[2001:db8::9]:80"},
            id="ipv6",
        ),
        pytest.param(client(mode=REGULAR), None, {}, id="regular-listener"),
        pytest.param(client(sockname=None), None, {}, id="no-sockname"),
    ],
)
def test_original_destination_and_log_fields(conn, original, fields) -> None:
    assert transparent.original_destination(conn) == original
    assert transparent.log_fields(conn) == fields
    expected = ipaddress.ip_address(original[0]) if original else None
    assert transparent.original_address(conn) == expected


def _plain(*headers: tuple[bytes, bytes], mode=TRANSPARENT, port=80):
    flow = tflow.tflow()
    flow.client_conn = client(mode=mode, sockname=("203.0.113.9", port))
    flow.request = tutils.treq(headers=headers or ())
    return flow


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        pytest.param(_plain((b"Host", b"api.test")), ("api.test", 80), id="host"),
        pytest.param(_plain((b"Host", b"api.test:8080")), ("api.test", 80), id="port-from-dial"),
        pytest.param(_plain((b"Host", b"[2001:db8::1]")), ("2001:db8::1", 80), id="ipv6-host"),
        pytest.param(_plain(), ("", 80), id="no-host"),
        pytest.param(_plain((b"Host", b"a.test"), (b"Host", b"b.test")), ("", 80), id="two-hosts"),
        pytest.param(_plain((b"Host", b"api.test"), mode=REGULAR), None, id="regular-listener"),
    ],
)
def test_plain_http_destination(flow, expected) -> None:
    destinations = transparent.TransparentDestinations(allowlist=None, approvals=None)  # type: ignore[arg-type]
    assert destinations.plain_http_destination(flow) == expected


def test_the_lazy_start_patch_matches_the_installed_mitmproxy() -> None:
    for patch in transparent_patch.patches():
        assert registry.matches(patch), patch.name
    assert all(p.required for p in transparent_patch.patches())
