"""Request heads two parsers could read differently, upgrades, and hop-by-hop headers, over raw
(method, target, fields) as the core sees them."""

from __future__ import annotations

import pytest

from addons.core.requests import is_websocket_upgrade, refusal, strip_hop_by_hop

BAD, UPGRADE = "bad-request", "upgrade-not-allowed"
HOST = (b"Host", b"example.com")


@pytest.mark.parametrize(
    ("method", "target", "fields", "expected"),
    [
        pytest.param(b"GET", b"/", (), None, id="plain"),
        pytest.param(b"GET", b"/", ((b"X-A", b"caf\xc3\xa9\t1"),), None, id="obs-text-and-tab"),
        pytest.param(b"GET", b"/", ((b"X-A", b"a\rHost: evil"),), BAD, id="bare-cr"),
        pytest.param(b"GET", b"/", ((b"X-A", b"a\nb"),), BAD, id="lf"),
        pytest.param(b"GET", b"/", ((b"X-A", b"a\r\n b"),), BAD, id="obs-fold"),
        pytest.param(b"GET", b"/", ((b"X-A", b"a\x00b"),), BAD, id="nul-value"),
        pytest.param(b"GET", b"/", ((b"Host ", b"evil"),), BAD, id="space-in-name"),
        pytest.param(b"GET", b"/", ((b"X:A", b"v"),), BAD, id="colon-in-name"),
        pytest.param(b"GET", b"/", ((b"", b"v"),), BAD, id="empty-name"),
        pytest.param(b"GET", b"/", ((b"X-\xc3\xa9", b"v"),), BAD, id="non-ascii-name"),
        pytest.param(b"GET", b"/a\x00b", (), BAD, id="nul-target"),
        pytest.param(b"GET", b"/a\rb", (), BAD, id="cr-target"),
        pytest.param(b"GET", b"/a b", (), BAD, id="space-target"),
        pytest.param(b"GET", b"/a\tb", (), BAD, id="tab-target"),
        pytest.param(b"GET", b"/a\x7f", (), BAD, id="del-target"),
        pytest.param(b"GET", b"/caf\xc3\xa9", (), None, id="non-ascii-target"),
        pytest.param(b"G\x00ET", b"/", (), BAD, id="nul-method"),
        pytest.param(b"", b"/", (), BAD, id="empty-method"),
        pytest.param(b"GE T", b"/", (), BAD, id="space-in-method"),
        pytest.param(b"GET", b"/", ((b"Connection", b"host"),), BAD, id="conn-host"),
        pytest.param(b"GET", b"/", ((b"Connection", b"Content-Length"),), BAD, id="conn-cl"),
        pytest.param(b"GET", b"/", ((b"Connection", b"transfer-encoding"),), BAD, id="conn-te"),
        pytest.param(b"GET", b"/", ((b"Connection", b"keep-alive, Connection"),), BAD, id="conn-conn"),
        pytest.param(b"GET", b"/", ((b"CONNECTION", b"x, HOST"),), BAD, id="conn-upper"),
        pytest.param(b"GET", b"/", ((b"Connection", b"x y"),), BAD, id="conn-not-token"),
        pytest.param(b"GET", b"/", ((b"Connection", b"close, ,keep-alive"),), None, id="conn-empty-items"),
        pytest.param(b"GET", b"/", ((b"Connection", b"Upgrade"),), None, id="conn-upgrade"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"websocket"),), None, id="websocket"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"WebSocket"),), None, id="websocket-case"),
        pytest.param(b"GET", b"/", ((b"upgrade", b" websocket "),), None, id="websocket-spaces"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"h2c"),), UPGRADE, id="h2c"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"H2C"),), UPGRADE, id="h2c-upper"),
        pytest.param(b"GET", b"/", ((b"UPGRADE", b"h2c"),), UPGRADE, id="h2c-name-upper"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"TLS/1.2"),), UPGRADE, id="tls"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"websocket, h2c"),), UPGRADE, id="list"),
        pytest.param(
            b"GET", b"/", ((b"Upgrade", b"websocket"), (b"Upgrade", b"h2c")), UPGRADE, id="two-upgrades"
        ),
        pytest.param(
            b"GET", b"/", ((b"Upgrade", b"websocket"), (b"Upgrade", b"websocket")), UPGRADE,
            id="websocket-twice",
        ),
        pytest.param(b"GET", b"/", ((b"Upgrade", b""),), UPGRADE, id="empty-upgrade"),
        pytest.param(b"GET", b"/", ((b"Upgrade", b"h2c\x00"),), BAD, id="bad-before-upgrade"),
    ],
)  # fmt: skip
def test_refusal(method: bytes, target: bytes, fields, expected: str | None) -> None:
    assert refusal(method, target, (HOST, *fields)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(((b"Upgrade", b"websocket"),), True, id="websocket"),
        pytest.param(((b"upgrade", b"WEBSOCKET"),), True, id="any-case"),
        pytest.param(((b"Upgrade", b"\twebsocket "),), True, id="whitespace"),
        pytest.param((), False, id="none"),
        pytest.param(((b"Upgrade", b"h2c"),), False, id="h2c"),
        pytest.param(((b"Upgrade", b"websocket, h2c"),), False, id="list"),
        pytest.param(((b"Upgrade", b"websocket"),) * 2, False, id="twice"),
        pytest.param(((b"X-Upgrade", b"websocket"),), False, id="other-name"),
    ],
)
def test_is_websocket_upgrade(fields, expected: bool) -> None:
    assert is_websocket_upgrade(fields) is expected


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        pytest.param(
            ((b"Proxy-Authorization", b"Basic x"), (b"X-A", b"1")),
            (HOST, (b"X-A", b"1")),
            id="proxy-authorization",
        ),
        pytest.param(
            ((b"proxy-connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")),
            (HOST,),
            id="proxy-connection-and-keep-alive",
        ),
        pytest.param(
            ((b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"x-hop", b"2")),
            (HOST, (b"Connection", b"keep-alive")),
            id="named-in-connection",
        ),
        pytest.param(
            ((b"Connection", b"close"), (b"Connection", b"X-Hop, close"), (b"X-Hop", b"1")),
            (HOST, (b"Connection", b"close")),
            id="two-connection-fields",
        ),
        pytest.param(
            ((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")),
            (HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")),
            id="websocket-untouched",
        ),
        pytest.param(
            ((b"Connection", b"X-Only"), (b"X-Only", b"1")),
            (HOST,),
            id="connection-left-empty",
        ),
        pytest.param(
            ((b"Connection", b"X-Absent, close"), (b"X-A", b"1")),
            (HOST, (b"Connection", b"X-Absent, close"), (b"X-A", b"1")),
            id="names-an-absent-field",
        ),
    ],
)
def test_strip_hop_by_hop(fields, kept) -> None:
    assert strip_hop_by_hop((HOST, *fields)) == kept


def test_strip_hop_by_hop_returns_the_same_fields_when_nothing_is_dropped() -> None:
    fields = (HOST, (b"Connection", b"keep-alive"), (b"X-A", b"1"))
    assert strip_hop_by_hop(fields) is fields
