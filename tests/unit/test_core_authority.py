"""Authorities as mitmproxy reads them, and the Host binding: every authority a request names
must be the approved host and port."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mitmproxy.net.http import url

from addons.core.authority import binding_holds, parse_authority


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        pytest.param("api.test", ("api.test", None), id="host"),
        pytest.param("api.test:443", ("api.test", 443), id="host-port"),
        pytest.param("API.Test:8080", ("API.Test", 8080), id="case-kept"),
        pytest.param("api.test.:443", ("api.test.", 443), id="trailing-dot"),
        pytest.param("my_host.test", ("my_host.test", None), id="underscore"),
        pytest.param("10.0.0.1:80", ("10.0.0.1", 80), id="ipv4"),
        pytest.param("[::1]:443", ("::1", 443), id="ipv6-port"),
        pytest.param("[::1]", ("::1", None), id="ipv6"),
        pytest.param("[fe80::1%eth0]:443", ("fe80::1%eth0", 443), id="ipv6-zone"),
        pytest.param("::1", ("::1", None), id="ipv6-unbracketed-invalid"),
        pytest.param("api.test:443x", ("api.test:443x", None), id="garbage-port"),
        pytest.param("api.test:", ("api.test:", None), id="empty-port"),
        pytest.param("api.test:65536", ("api.test:65536", None), id="port-too-big"),
        pytest.param("api.test:0", ("api.test", 0), id="port-zero"),
        pytest.param("a b.test", ("a b.test", None), id="space-invalid"),
        pytest.param("", ("", None), id="empty"),
        pytest.param("b\u00fccher.test:443", ("b\u00fccher.test", 443), id="unicode-name"),
        pytest.param("a" * 64 + ".test", ("a" * 64 + ".test", None), id="long-label"),
        pytest.param("x.test:\u0664\u0664\u0663", ("x.test", 443), id="arabic-digits"),
    ],
)
def test_parse_authority(authority: str, expected) -> None:
    assert parse_authority(authority) == expected


AUTHORITY_CHARS = st.sampled_from([*"ab-_.:[]019Z%é\u0664 \n", "xn--", "::1", "65536"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(AUTHORITY_CHARS, max_size=12).map("".join) | st.text(max_size=30))
@example("[::ffff:127.0.0.1]:80")
@example("api.test\n")
@example("a..b:1")
def test_parse_authority_agrees_with_mitmproxy(authority: str) -> None:
    assert parse_authority(authority) == url.parse_authority(authority, check=False)


H = (b"Host", b"api.test:443")


@pytest.mark.parametrize(
    ("fields", "authority", "approved", "holds"),
    [
        pytest.param((H,), "", ("api.test", 443), True, id="host-and-port"),
        pytest.param(((b"Host", b"api.test"),), "", ("api.test", 443), True, id="host-without-port"),
        pytest.param(((b"host", b"API.Test:443"),), "", ("api.test", 443), True, id="other-case"),
        pytest.param(((b"Host", b"api.test.:443"),), "", ("api.test", 443), True, id="trailing-dot"),
        pytest.param(((b"Host", b"[::1]:443"),), "", ("::1", 443), True, id="ipv6-literal"),
        pytest.param(((b"Host", b"[0:0::1]"),), "", ("::1", 443), True, id="ipv6-other-spelling"),
        pytest.param(((b"Host", b"[::2]:443"),), "", ("::1", 443), False, id="ipv6-other-address"),
        pytest.param(((b"Host", b"::1"),), "", ("::1", 443), True, id="ipv6-unbracketed"),
        pytest.param(((b"Host", b"[::1]:8443"),), "", ("::1", 443), False, id="ipv6-other-port"),
        pytest.param((), "", ("api.test", 443), True, id="no-host-header"),
        pytest.param(((b"Host", b"api.test:8443"),), "", ("api.test", 443), False, id="other-port"),
        pytest.param(((b"Host", b"other.test:443"),), "", ("api.test", 443), False, id="other-host"),
        pytest.param(((b"Host", b"api.test:443x"),), "", ("api.test", 443), False, id="garbage-port"),
        pytest.param(((b"Host", b"api.test:443@x.test"),), "", ("api.test", 443), False, id="userinfo-trick"),
        pytest.param(((b"Host", b""),), "", ("api.test", 443), False, id="empty-host"),
        pytest.param((H, H), "", ("api.test", 443), False, id="two-host-headers"),
        pytest.param((H, (b"HOST", b"api.test")), "", ("api.test", 443), False, id="two-host-spellings"),
        pytest.param((H,), "other.test:443", ("api.test", 443), False, id="authority-differs"),
        pytest.param((H,), "api.test:8443", ("api.test", 443), False, id="authority-other-port"),
        pytest.param((), "api.test:443", ("api.test", 443), True, id="authority-only"),
        pytest.param((), "[::1]:443", ("::1", 443), True, id="authority-ipv6"),
        pytest.param((H,), "", ("api.test", 8443), False, id="approved-other-port"),
        pytest.param(((b"Host", b"b\xc3\xbccher.test"),), "", ("xn--bcher-kva.test", 443), True, id="idna"),
        pytest.param(((b"Host", b"\xff.test"),), "", ("api.test", 443), False, id="undecodable"),
    ],
)  # fmt: skip
def test_binding_holds(fields, authority: str, approved, holds: bool) -> None:
    assert binding_holds(fields, authority, *approved) is holds
