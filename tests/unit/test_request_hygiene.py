"""The adapter over mitmproxy Request objects: the rules are tested in test_core_requests.py; here,
that a Request's method, target and fields reach them, and that stripping edits the Request."""

from __future__ import annotations

import pytest
from mitmproxy.test import tutils

from addons.request_hygiene import (
    BAD_REQUEST,
    UPGRADE_NOT_ALLOWED,
    is_websocket_upgrade,
    refusal,
    strip_hop_by_hop,
)


def request(*fields: tuple[bytes, bytes], path: bytes = b"/", method: bytes = b"GET"):
    req = tutils.treq(method=method, path=path)
    req.headers.fields = ((b"Host", b"example.com"), *fields)
    return req


@pytest.mark.parametrize(
    ("fields", "path", "method", "expected"),
    [
        pytest.param((), b"/", b"GET", None, id="plain"),
        pytest.param(((b"X-A", b"a\rHost: evil"),), b"/", b"GET", BAD_REQUEST, id="bad-field"),
        pytest.param((), b"/a b", b"GET", BAD_REQUEST, id="bad-target"),
        pytest.param((), b"/", b"G\x00ET", BAD_REQUEST, id="bad-method"),
        pytest.param(((b"Upgrade", b"h2c"),), b"/", b"GET", UPGRADE_NOT_ALLOWED, id="h2c"),
        pytest.param(((b"Upgrade", b"websocket"),), b"/", b"GET", None, id="websocket"),
    ],
)
def test_refusal(fields, path: bytes, method: bytes, expected: str | None) -> None:
    assert refusal(request(*fields, path=path, method=method)) == expected


def test_reason_names() -> None:
    assert (BAD_REQUEST, UPGRADE_NOT_ALLOWED) == ("bad-request", "upgrade-not-allowed")


def test_is_websocket_upgrade() -> None:
    assert is_websocket_upgrade(request((b"Upgrade", b"WebSocket")))
    assert not is_websocket_upgrade(request((b"Upgrade", b"h2c")))


def test_strip_hop_by_hop_edits_the_request() -> None:
    req = request((b"Proxy-Authorization", b"Basic x"), (b"Connection", b"X-Hop"), (b"X-Hop", b"1"))
    strip_hop_by_hop(req)
    assert list(req.headers.fields) == [(b"Host", b"example.com")]


def test_strip_hop_by_hop_leaves_a_clean_request_alone() -> None:
    req = request((b"X-A", b"1"))
    before = req.headers.fields
    strip_hop_by_hop(req)
    assert req.headers.fields is before
