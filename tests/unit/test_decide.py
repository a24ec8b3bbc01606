"""Every decision the proxy makes, one row per case (in the style of Smokescreen's ACL tests):
the facts the addon gathered, the policy in force, and the decision the core must give."""

from __future__ import annotations

import ipaddress

import pytest

from addons.core import reasons
from addons.core.decide import Decision, Facts, Stage, decide
from addons.policy import compile_policy

POLICY = compile_policy(
    {
        "version": "v1",
        "allowed_domains": [
            "api.test",
            "*.wild.test",
            "93.184.216.34",
            "127.0.0.1",
            "2606:4700::1",
        ],
        "allow_ranges": ["10.1.2.0/24", "fd00:1::/64"],
    },
    "policy.yaml",
)
OTHER_PORTS = compile_policy(
    {"version": "v1", "allowed_domains": ["api.test"], "allowed_ports": [8443]}, "p"
)
WITHOUT_API = compile_policy({"version": "v1", "allowed_domains": ["other.test"]}, "p")

RULED_DOC = {
    "version": "v1",
    "allowed_domains": ["api.test", "*.wild.test", "git.test"],
    "denied_domains": ["uploads.wild.test", "*.secret.wild.test"],
    "rules": [
        {"host": "git.test", "methods": ["GET"], "paths": ["/org/*/info/refs"]},
        {"host": "git.test", "methods": ["POST"], "paths": ["/org/*/git-upload-pack"]},
        {"host": "*.wild.test", "methods": ["GET", "HEAD"]},
    ],
}
RULED = compile_policy(RULED_DOC, "ruled.yaml")
REPORT = compile_policy({**RULED_DOC, "mode": "report"}, "report.yaml")

PUBLIC = (ipaddress.ip_address("93.184.216.34"),)
HOST = (b"Host", b"api.test")
ALLOWED, BLOCKED, PORT = (
    reasons.ALLOWED.name,
    reasons.BLOCKED_BY_ALLOWLIST.name,
    reasons.BLOCKED_PORT.name,
)
ADDRESS, MISMATCH = reasons.BLOCKED_ADDRESS.name, reasons.HOST_MISMATCH.name
UNRESOLVABLE, TOO_LARGE = reasons.UPSTREAM_UNRESOLVABLE.name, reasons.REQUEST_TOO_LARGE.name
CAP, DRAINING = reasons.TOO_MANY_CONNECTIONS.name, reasons.SHUTTING_DOWN.name
BAD, UPGRADE = reasons.BAD_REQUEST.name, reasons.UPGRADE_NOT_ALLOWED.name
LOOP, NO_SNI = reasons.DESTINATION_IS_PROXY.name, reasons.MISSING_SNI.name
DENYLIST, RULE = reasons.BLOCKED_BY_DENYLIST.name, reasons.BLOCKED_BY_RULE.name


def ips(*texts: str) -> tuple:
    return tuple(ipaddress.ip_address(t) for t in texts)


def connect(host: str = "api.test", port: int = 443, **facts) -> Facts:
    return Facts(Stage.CONNECT, host, port, **facts)


def tunneled(*fields: tuple[bytes, bytes], host="api.test", port=443, **facts) -> Facts:
    """A request inside an approved tunnel to host:port (HTTP/1 unless told)."""
    facts = {"http1": True, "method": b"GET", "target": b"/", **facts}
    return Facts(Stage.REQUEST, host, port, in_tunnel=True, fields=fields, **facts)


def absolute(*fields: tuple[bytes, bytes], host="api.test", port=80, **facts) -> Facts:
    """An absolute-form request (HTTP_PROXY): GET http://host:port/ HTTP/1.1."""
    facts = {"scheme": "http", "http1": True, "method": b"GET", "target": b"/", **facts}
    facts.setdefault("authority", f"{host}:{port}")
    return Facts(Stage.REQUEST, host, port, fields=fields, **facts)


def tls(sni: str | None, host="api.test", in_tunnel=True, **facts) -> Facts:
    return Facts(Stage.TLS, host, 443, in_tunnel=in_tunnel, sni=sni, **facts)


def dialled(address: str | None) -> dict:
    """Facts of a connection the pod's rules redirected: the address the client dialled."""
    return {"transparent": True, "original_address": ips(address)[0] if address else None}


def accepted(address: str | None) -> Facts:
    return Facts(Stage.ACCEPT, "", 443, **dialled(address))


def plain(
    *fields: tuple[bytes, bytes], host="api.test", dialled_to="203.0.113.9", **facts
) -> Facts:
    """Plain HTTP through the transparent listener: origin form, host from its Host header."""
    facts = {"scheme": "http", "http1": True, "method": b"GET", "target": b"/", **facts}
    return Facts(Stage.REQUEST, host, 80, fields=fields, **dialled(dialled_to), **facts)


def allow(rule: str | None, needs_addresses: bool = False) -> Decision:
    return Decision(True, ALLOWED, rule, needs_addresses)


def deny(reason: str, rule: str | None = None) -> Decision:
    return Decision(False, reason, rule)


def reported(would_deny: str, rule: str | None = None, needs_addresses: bool = False) -> Decision:
    return Decision(True, ALLOWED, rule, needs_addresses, would_deny=would_deny)


def git(method: bytes, target: bytes, host: str = "git.test") -> Facts:
    return tunneled((b"Host", host.encode()), host=host, method=method, target=target)


def many_fields(count: int, value: bytes = b"1") -> tuple[tuple[bytes, bytes], ...]:
    return (HOST, *((b"X-F%d" % i, value) for i in range(count - 1)))


CASES = [
    # -- CONNECT: name and port ---------------------------------------------------------------
    pytest.param(connect(), None, deny(BLOCKED), id="connect-no-policy"),
    pytest.param(connect(addresses=PUBLIC), None, deny(BLOCKED), id="connect-no-policy-resolved"),
    pytest.param(connect(), POLICY, allow("api.test", True), id="connect-exact-needs-addresses"),
    pytest.param(connect(addresses=PUBLIC), POLICY, allow("api.test"), id="connect-exact"),
    pytest.param(connect("API.Test.", addresses=PUBLIC), POLICY, allow("api.test"), id="connect-case-and-dot"),
    pytest.param(connect("x.wild.test", addresses=PUBLIC), POLICY, allow("*.wild.test"), id="connect-wildcard"),
    pytest.param(connect("a.b.wild.test", addresses=PUBLIC), POLICY, allow("*.wild.test"), id="connect-wildcard-deep"),
    pytest.param(connect("wild.test"), POLICY, deny(BLOCKED), id="connect-wildcard-not-apex"),
    pytest.param(connect("other.test"), POLICY, deny(BLOCKED), id="connect-unlisted"),
    pytest.param(connect("api.test.evil.test"), POLICY, deny(BLOCKED), id="connect-listed-as-prefix"),
    pytest.param(connect("evilapi.test"), POLICY, deny(BLOCKED), id="connect-listed-as-suffix"),
    pytest.param(connect("api.test%00.evil"), POLICY, deny(BLOCKED), id="connect-invalid-name"),
    pytest.param(connect("2130706433"), POLICY, deny(BLOCKED), id="connect-numeric-name"),
    pytest.param(connect(""), POLICY, deny(BLOCKED), id="connect-empty-host"),
    pytest.param(connect("93.184.216.34", addresses=PUBLIC), POLICY, allow("93.184.216.34"), id="connect-ipv4-literal"),
    pytest.param(connect("93.184.216.35"), POLICY, deny(BLOCKED), id="connect-ipv4-unlisted"),
    pytest.param(connect("2606:4700:0::1", addresses=ips("2606:4700::1")), POLICY, allow("2606:4700::1"), id="connect-ipv6-literal"),
    pytest.param(connect("[2606:4700::1]", addresses=ips("2606:4700::1")), POLICY, allow("2606:4700::1"), id="connect-ipv6-bracketed"),
    pytest.param(connect(port=8443), POLICY, deny(PORT, "api.test"), id="connect-port-not-allowed"),
    pytest.param(connect(port=80, addresses=PUBLIC), POLICY, allow("api.test"), id="connect-port-80"),
    pytest.param(connect(port=8443, addresses=PUBLIC), OTHER_PORTS, allow("api.test"), id="connect-port-listed"),
    pytest.param(connect(port=443), OTHER_PORTS, deny(PORT, "api.test"), id="connect-default-port-not-listed"),
    # -- CONNECT: the resolved addresses ------------------------------------------------------
    pytest.param(connect(resolve_failed=True), POLICY, deny(UNRESOLVABLE, "api.test"), id="connect-unresolvable"),
    pytest.param(connect(addresses=()), POLICY, deny(UNRESOLVABLE, "api.test"), id="connect-no-addresses"),
    pytest.param(connect("other.test", resolve_failed=True), POLICY, deny(BLOCKED), id="connect-unresolvable-unlisted"),
    pytest.param(connect(port=8443, resolve_failed=True), POLICY, deny(PORT, "api.test"), id="connect-unresolvable-port"),
    *(
        pytest.param(connect(addresses=ips(a)), POLICY, deny(ADDRESS, "api.test"), id=f"connect-forbidden-{name}")
        for name, a in [
            ("loopback", "127.0.0.2"), ("private-10", "10.0.0.1"), ("private-172", "172.16.5.4"),
            ("private-192", "192.168.1.1"), ("link-local", "169.254.1.1"),
            ("metadata", "169.254.169.254"), ("cgnat", "100.100.100.200"),
            ("multicast", "224.0.0.1"), ("unspecified", "0.0.0.0"), ("reserved", "240.0.0.1"),
            ("broadcast", "255.255.255.255"), ("documentation", "192.0.2.1"),
            ("v6-loopback", "::1"), ("v6-unspecified", "::"), ("v6-unique-local", "fd00:ec2::254"),
            ("v6-link-local", "fe80::1"), ("v6-multicast", "ff02::1"),
            ("v4-mapped", "::ffff:127.0.0.1"), ("v4-mapped-metadata", "::ffff:169.254.169.254"),
            ("v4-compatible", "::10.0.0.1"), ("nat64", "64:ff9b::a9fe:a9fe"),
            ("6to4", "2002:7f00:1::1"), ("v4-translated", "::ffff:0:10.0.0.1"),
        ]
    ),
    pytest.param(connect(addresses=ips("93.184.216.34", "10.0.0.1")), POLICY, deny(ADDRESS, "api.test"), id="connect-one-of-many-forbidden"),
    pytest.param(connect("127.0.0.1", addresses=ips("127.0.0.1")), POLICY, deny(ADDRESS, "127.0.0.1"), id="connect-listed-literal-still-forbidden"),
    pytest.param(connect(addresses=ips("10.1.2.3")), POLICY, allow("api.test"), id="connect-allow-ranges-v4"),
    pytest.param(connect(addresses=ips("::ffff:10.1.2.3")), POLICY, allow("api.test"), id="connect-allow-ranges-embedded"),
    pytest.param(connect(addresses=ips("fd00:1::5")), POLICY, allow("api.test"), id="connect-allow-ranges-v6"),
    pytest.param(connect(addresses=ips("10.1.3.1")), POLICY, deny(ADDRESS, "api.test"), id="connect-outside-allow-ranges"),
    pytest.param(connect(addresses=ips("10.1.2.3", "10.0.0.1")), POLICY, deny(ADDRESS, "api.test"), id="connect-one-outside-allow-ranges"),
    # -- CONNECT: re-checking an approval under a reloaded policy ------------------------------
    pytest.param(connect(addresses=PUBLIC), WITHOUT_API, deny(BLOCKED), id="recheck-host-dropped"),
    pytest.param(connect(addresses=PUBLIC), OTHER_PORTS, deny(PORT, "api.test"), id="recheck-port-dropped"),
    pytest.param(connect(addresses=ips("10.1.2.3")), OTHER_PORTS, deny(PORT, "api.test"), id="recheck-range-dropped-port"),
    # -- limits before anything else ----------------------------------------------------------
    pytest.param(connect(over_connection_cap=True), POLICY, deny(CAP), id="connect-over-cap"),
    pytest.param(connect("other.test", over_connection_cap=True), None, deny(CAP), id="connect-over-cap-no-policy"),
    pytest.param(connect(draining=True), POLICY, deny(DRAINING), id="connect-draining"),
    pytest.param(connect(over_connection_cap=True, draining=True), POLICY, deny(CAP), id="connect-cap-before-draining"),
    pytest.param(tunneled(HOST, over_connection_cap=True), POLICY, deny(CAP), id="request-over-cap"),
    pytest.param(tunneled(draining=True), POLICY, deny(DRAINING), id="request-draining-before-shape"),
    pytest.param(absolute(HOST, scheme="ftp", draining=True), POLICY, deny(DRAINING), id="absolute-draining"),
    # -- requests in a tunnel -----------------------------------------------------------------
    pytest.param(tunneled(HOST), POLICY, allow("api.test"), id="tunnel-allowed"),
    pytest.param(tunneled(HOST, addresses=ips("127.0.0.1")), POLICY, allow("api.test"), id="tunnel-no-address-check"),
    pytest.param(tunneled(HOST), None, deny(BLOCKED), id="tunnel-no-policy"),
    pytest.param(tunneled(HOST), WITHOUT_API, deny(BLOCKED), id="tunnel-policy-reloaded"),
    pytest.param(tunneled((b"Host", b"api.test:443")), OTHER_PORTS, deny(PORT, "api.test"), id="tunnel-port-reloaded"),
    pytest.param(tunneled((b"Host", b"api.test:443")), POLICY, allow("api.test"), id="tunnel-host-with-port"),
    pytest.param(tunneled((b"host", b"API.TEST.")), POLICY, allow("api.test"), id="tunnel-host-spelling"),
    pytest.param(tunneled((b"Host", b"x.wild.test"), host="x.wild.test"), POLICY, allow("*.wild.test"), id="tunnel-wildcard"),
    pytest.param(tunneled(), POLICY, deny(MISMATCH), id="tunnel-http1-no-host"),
    pytest.param(tunneled(), None, deny(MISMATCH), id="tunnel-http1-no-host-no-policy"),
    pytest.param(tunneled((b"X-Host", b"api.test")), POLICY, deny(MISMATCH), id="tunnel-http1-only-x-host"),
    pytest.param(tunneled(http1=False, authority="api.test:443"), POLICY, allow("api.test"), id="tunnel-http2-authority"),
    pytest.param(tunneled(http1=False, authority="api.test"), POLICY, allow("api.test"), id="tunnel-http2-authority-no-port"),
    pytest.param(tunneled(http1=False), POLICY, allow("api.test"), id="tunnel-http2-no-host"),
    pytest.param(tunneled(http1=False, authority="other.test:443"), POLICY, deny(MISMATCH), id="tunnel-http2-authority-other"),
    pytest.param(tunneled(http1=False, authority="api.test:8443"), POLICY, deny(MISMATCH), id="tunnel-http2-authority-other-port"),
    pytest.param(tunneled(HOST, http1=False, authority="other.test"), POLICY, deny(MISMATCH), id="tunnel-http2-host-and-authority-differ"),
    pytest.param(tunneled((b"Host", b"other.test"), http1=False, authority="api.test"), POLICY, deny(MISMATCH), id="tunnel-http2-host-differs"),
    pytest.param(tunneled(HOST, HOST), POLICY, deny(MISMATCH), id="tunnel-doubled-host"),
    pytest.param(tunneled(HOST, (b"HOST", b"api.test")), POLICY, deny(MISMATCH), id="tunnel-doubled-host-spellings"),
    pytest.param(tunneled((b"Host", b"api.test:8443")), POLICY, deny(MISMATCH), id="tunnel-host-other-port"),
    pytest.param(tunneled((b"Host", b"api.test:80")), POLICY, deny(MISMATCH), id="tunnel-host-port-80"),
    pytest.param(tunneled(HOST, port=8443), OTHER_PORTS, allow("api.test"), id="tunnel-host-without-port"),
    pytest.param(tunneled((b"Host", b"other.test")), POLICY, deny(MISMATCH), id="tunnel-host-other"),
    pytest.param(tunneled((b"Host", b"x.wild.test"), host="y.wild.test"), POLICY, deny(MISMATCH), id="tunnel-host-same-wildcard"),
    pytest.param(tunneled((b"Host", b"api.test:443x")), POLICY, deny(MISMATCH), id="tunnel-host-garbage-port"),
    pytest.param(tunneled((b"Host", b"")), POLICY, deny(MISMATCH), id="tunnel-host-empty"),
    pytest.param(tunneled((b"Host", b"[2606:4700::1]:443"), host="2606:4700::1"), POLICY, allow("2606:4700::1"), id="tunnel-ipv6-host"),
    pytest.param(tunneled((b"Host", b"[2606:4700:0:0::1]"), host="2606:4700::1"), POLICY, allow("2606:4700::1"), id="tunnel-ipv6-other-spelling"),
    pytest.param(tunneled((b"Host", b"[2606:4700::2]"), host="2606:4700::1"), POLICY, deny(MISMATCH), id="tunnel-ipv6-other-address"),
    pytest.param(tunneled((b"Host", b"[2606:4700::1]:80"), host="2606:4700::1"), POLICY, deny(MISMATCH), id="tunnel-ipv6-other-port"),
    pytest.param(tunneled(http1=False, authority="[2606:4700::1]:443", host="2606:4700::1"), POLICY, allow("2606:4700::1"), id="tunnel-ipv6-authority"),
    # -- request shape --------------------------------------------------------------------------
    pytest.param(tunneled(HOST, target=b"/" * 16384), POLICY, allow("api.test"), id="shape-target-at-limit"),
    pytest.param(tunneled(HOST, target=b"/" * 16385), POLICY, deny(TOO_LARGE), id="shape-target-over"),
    pytest.param(tunneled(*many_fields(200)), POLICY, allow("api.test"), id="shape-fields-at-limit"),
    pytest.param(tunneled(*many_fields(201)), POLICY, deny(TOO_LARGE), id="shape-fields-over"),
    pytest.param(tunneled(HOST, (b"X-Big", b"a" * (65536 - 4 - 8 - 5))), POLICY, allow("api.test"), id="shape-bytes-at-limit"),
    pytest.param(tunneled(HOST, (b"X-Big", b"a" * (65536 - 4 - 8 - 5 + 1))), POLICY, deny(TOO_LARGE), id="shape-bytes-over"),
    pytest.param(tunneled(*many_fields(2, b"a" * 40000), (b"X-G", b"a" * 30000)), POLICY, deny(TOO_LARGE), id="shape-bytes-over-summed"),
    pytest.param(tunneled((b"X-A", b"a\rb"), target=b"/" * 16385), POLICY, deny(TOO_LARGE), id="shape-before-hygiene"),
    pytest.param(tunneled((b"X-A", b"a\rb")), POLICY, deny(MISMATCH), id="shape-missing-host-before-hygiene"),
    pytest.param(tunneled(*many_fields(201), http1=False), None, deny(TOO_LARGE), id="shape-http2"),
    # -- request hygiene ------------------------------------------------------------------------
    pytest.param(tunneled(HOST, (b"X-A", b"a\rHost: evil")), POLICY, deny(BAD), id="hygiene-bare-cr"),
    pytest.param(tunneled(HOST, (b"X-A", b"a\nb")), POLICY, deny(BAD), id="hygiene-lf"),
    pytest.param(tunneled(HOST, (b"X-A", b"a\x00b")), POLICY, deny(BAD), id="hygiene-nul"),
    pytest.param(tunneled(HOST, (b"X-A", b"a\r\n b")), POLICY, deny(BAD), id="hygiene-folded"),
    pytest.param(tunneled(HOST, (b"Host ", b"evil.test")), POLICY, deny(BAD), id="hygiene-name-space"),
    pytest.param(tunneled(HOST, (b"X:A", b"v")), POLICY, deny(BAD), id="hygiene-name-colon"),
    pytest.param(tunneled(HOST, target=b"/a b"), POLICY, deny(BAD), id="hygiene-target-space"),
    pytest.param(tunneled(HOST, target=b"/a\x00"), POLICY, deny(BAD), id="hygiene-target-nul"),
    pytest.param(tunneled(HOST, target=b"/a\x7f"), POLICY, deny(BAD), id="hygiene-target-del"),
    pytest.param(tunneled(HOST, method=b"G\x00ET"), POLICY, deny(BAD), id="hygiene-method-nul"),
    pytest.param(tunneled(HOST, method=b""), POLICY, deny(BAD), id="hygiene-method-empty"),
    pytest.param(tunneled(HOST, (b"Connection", b"host")), POLICY, deny(BAD), id="hygiene-connection-host"),
    pytest.param(tunneled(HOST, (b"Connection", b"Content-Length")), POLICY, deny(BAD), id="hygiene-connection-cl"),
    pytest.param(tunneled(HOST, (b"Connection", b"transfer-encoding")), POLICY, deny(BAD), id="hygiene-connection-te"),
    pytest.param(tunneled(HOST, (b"Connection", b"x y")), POLICY, deny(BAD), id="hygiene-connection-not-token"),
    pytest.param(tunneled(HOST, (b"Connection", b"close, X-Hop")), POLICY, allow("api.test"), id="hygiene-connection-ok"),
    pytest.param(tunneled((b"Host", b"other.test"), (b"X-A", b"\x00")), POLICY, deny(BAD), id="hygiene-before-binding"),
    pytest.param(tunneled(HOST, (b"X-A", b"\x00")), None, deny(BAD), id="hygiene-before-policy"),
    pytest.param(tunneled(HOST, (b"X-A", b"caf\xc3\xa9\t1")), POLICY, allow("api.test"), id="hygiene-obs-text-ok"),
    # -- upgrades -------------------------------------------------------------------------------
    pytest.param(tunneled(HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")), POLICY, allow("api.test"), id="upgrade-websocket"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"WebSocket")), POLICY, allow("api.test"), id="upgrade-websocket-case"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"h2c")), POLICY, deny(UPGRADE), id="upgrade-h2c"),
    pytest.param(tunneled(HOST, (b"upgrade", b"H2C")), POLICY, deny(UPGRADE), id="upgrade-h2c-upper"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"TLS/1.2")), POLICY, deny(UPGRADE), id="upgrade-tls"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"websocket, h2c")), POLICY, deny(UPGRADE), id="upgrade-list"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"websocket"), (b"Upgrade", b"h2c")), POLICY, deny(UPGRADE), id="upgrade-two"),
    pytest.param(tunneled(HOST, (b"Upgrade", b"")), POLICY, deny(UPGRADE), id="upgrade-empty"),
    pytest.param(tunneled((b"Host", b"other.test"), (b"Upgrade", b"h2c")), POLICY, deny(UPGRADE), id="upgrade-before-binding"),
    pytest.param(absolute(HOST, (b"Upgrade", b"h2c")), POLICY, deny(UPGRADE), id="upgrade-absolute"),
    # -- absolute-form requests (HTTP_PROXY) ----------------------------------------------------
    pytest.param(absolute(HOST), POLICY, allow("api.test", True), id="absolute-needs-addresses"),
    pytest.param(absolute(HOST, addresses=PUBLIC), POLICY, allow("api.test"), id="absolute-allowed"),
    pytest.param(absolute(HOST, scheme="https", addresses=PUBLIC), POLICY, allow("api.test"), id="absolute-https"),
    pytest.param(absolute((b"Host", b"api.test:80"), addresses=PUBLIC), POLICY, allow("api.test"), id="absolute-host-with-port"),
    pytest.param(absolute(HOST, authority="", addresses=PUBLIC), POLICY, allow("api.test"), id="absolute-no-authority"),
    pytest.param(absolute(HOST, addresses=ips("169.254.169.254")), POLICY, deny(ADDRESS, "api.test"), id="absolute-forbidden"),
    pytest.param(absolute(HOST, addresses=ips("10.1.2.9")), POLICY, allow("api.test"), id="absolute-allow-ranges"),
    pytest.param(absolute(HOST, resolve_failed=True), POLICY, deny(UNRESOLVABLE, "api.test"), id="absolute-unresolvable"),
    pytest.param(absolute(HOST), None, deny(BLOCKED), id="absolute-no-policy"),
    pytest.param(absolute((b"Host", b"other.test"), host="other.test"), POLICY, deny(BLOCKED), id="absolute-unlisted"),
    pytest.param(absolute(HOST, port=8080), POLICY, deny(PORT, "api.test"), id="absolute-host-without-port"),
    pytest.param(absolute((b"Host", b"api.test:8080"), port=8080), POLICY, deny(PORT, "api.test"), id="absolute-port"),
    pytest.param(absolute(HOST, scheme="ftp"), POLICY, deny(BLOCKED), id="absolute-scheme-ftp"),
    pytest.param(absolute(HOST, scheme=""), POLICY, deny(BLOCKED), id="absolute-origin-form-outside-tunnel"),
    pytest.param(absolute(HOST, scheme="HTTP"), POLICY, deny(BLOCKED), id="absolute-scheme-upper"),
    pytest.param(absolute(HOST, host=""), POLICY, deny(BLOCKED), id="absolute-empty-host"),
    pytest.param(absolute((b"Host", b"other.test")), POLICY, deny(MISMATCH), id="absolute-host-differs"),
    pytest.param(absolute((b"Host", b"other.test")), None, deny(MISMATCH), id="absolute-host-differs-no-policy"),
    pytest.param(absolute((b"Host", b"api.test:8080")), POLICY, deny(MISMATCH), id="absolute-host-other-port"),
    pytest.param(absolute(HOST, HOST), POLICY, deny(MISMATCH), id="absolute-doubled-host"),
    pytest.param(absolute(HOST, authority="other.test"), POLICY, deny(MISMATCH), id="absolute-authority-differs"),
    pytest.param(absolute(), POLICY, deny(MISMATCH), id="absolute-http1-no-host"),
    pytest.param(absolute(http1=False), POLICY, allow("api.test", True), id="absolute-http2-no-host"),
    pytest.param(absolute((b"Host", b"[2606:4700::1]"), host="2606:4700::1", authority="[2606:4700::1]:80"), POLICY, allow("2606:4700::1", True), id="absolute-ipv6"),
    pytest.param(absolute((b"Host", b"[2606:4700::1]:81"), host="2606:4700::1", authority="[2606:4700::1]:80"), POLICY, deny(MISMATCH), id="absolute-ipv6-other-port"),
    # -- TLS inside a tunnel: the SNI must name the tunnel's host -------------------------------
    pytest.param(tls(None), POLICY, allow(None), id="tls-no-sni"),
    pytest.param(tls("api.test"), POLICY, allow(None), id="tls-sni-same"),
    pytest.param(tls("API.test."), POLICY, allow(None), id="tls-sni-spelling"),
    pytest.param(tls("other.test"), POLICY, deny(MISMATCH), id="tls-sni-other"),
    pytest.param(tls("x.wild.test", host="y.wild.test"), POLICY, deny(MISMATCH), id="tls-sni-same-wildcard"),
    pytest.param(tls(""), POLICY, deny(MISMATCH), id="tls-sni-empty"),
    pytest.param(tls("2606:4700::1", host="2606:4700:0::1"), POLICY, allow(None), id="tls-sni-ipv6"),
    pytest.param(tls("api.test"), None, allow(None), id="tls-no-policy-consulted"),
    pytest.param(tls(None, in_tunnel=False), POLICY, deny(MISMATCH), id="tls-no-tunnel"),
    pytest.param(tls("api.test", in_tunnel=False), POLICY, deny(MISMATCH), id="tls-no-tunnel-with-sni"),
    # -- the transparent listener: the client dialled an address, the name decides ---------------
    pytest.param(accepted("203.0.113.9"), POLICY, allow(None), id="transparent-accept"),
    pytest.param(accepted("fd00:1::9"), POLICY, allow(None), id="transparent-accept-ipv6"),
    pytest.param(accepted("127.0.0.1"), POLICY, deny(LOOP), id="transparent-accept-loopback"),
    pytest.param(accepted("127.8.9.10"), POLICY, deny(LOOP), id="transparent-accept-loopback-net"),
    pytest.param(accepted("::1"), POLICY, deny(LOOP), id="transparent-accept-ipv6-loopback"),
    pytest.param(accepted("::ffff:127.0.0.1"), POLICY, deny(LOOP), id="transparent-accept-mapped-loopback"),
    pytest.param(accepted("0.0.0.0"), POLICY, deny(LOOP), id="transparent-accept-unspecified"),
    pytest.param(accepted(None), POLICY, deny(LOOP), id="transparent-accept-origin-unknown"),
    pytest.param(connect(**dialled("203.0.113.9")), POLICY, allow("api.test", True), id="transparent-sni-allowed"),
    pytest.param(connect("other.test", **dialled("203.0.113.9")), POLICY, deny(BLOCKED), id="transparent-sni-not-allowed"),
    pytest.param(connect(port=8443, **dialled("203.0.113.9")), POLICY, deny(PORT, "api.test"), id="transparent-sni-port"),
    pytest.param(connect(addresses=ips("10.9.9.9"), **dialled("203.0.113.9")), POLICY, deny(ADDRESS, "api.test"), id="transparent-sni-private-address"),
    pytest.param(connect(**dialled("127.0.0.1")), POLICY, deny(LOOP), id="transparent-sni-dialled-loopback"),
    pytest.param(tls(None, in_tunnel=False, **dialled("203.0.113.9")), POLICY, deny(NO_SNI), id="transparent-tls-no-sni"),
    pytest.param(tls("", in_tunnel=False, **dialled("203.0.113.9")), POLICY, deny(NO_SNI), id="transparent-tls-empty-sni"),
    pytest.param(tls("api.test", **dialled("203.0.113.9")), POLICY, allow(None), id="transparent-tls-sni-decided"),
    pytest.param(plain(HOST), POLICY, allow("api.test", True), id="transparent-http"),
    pytest.param(plain((b"Host", b"API.test")), POLICY, allow("api.test", True), id="transparent-http-host-spelling"),
    pytest.param(plain((b"Host", b"other.test"), host="other.test"), POLICY, deny(BLOCKED), id="transparent-http-not-allowed"),
    pytest.param(plain((b"Host", b"api.test:8080")), POLICY, deny(MISMATCH), id="transparent-http-host-other-port"),
    pytest.param(plain(host=""), POLICY, deny(MISMATCH), id="transparent-http-no-host"),
    pytest.param(plain(HOST, HOST, host=""), POLICY, deny(MISMATCH), id="transparent-http-doubled-host"),
    pytest.param(plain(HOST, authority="other.test"), POLICY, deny(MISMATCH), id="transparent-http-absolute-other"),
    pytest.param(plain(HOST, dialled_to="::1"), POLICY, deny(LOOP), id="transparent-http-dialled-loopback"),
    # -- denied_domains: wins over any allow entry ---------------------------------------------
    pytest.param(connect("uploads.wild.test"), RULED, deny(DENYLIST, "uploads.wild.test"), id="deny-exact-under-wildcard"),
    pytest.param(connect("UPLOADS.wild.test."), RULED, deny(DENYLIST, "uploads.wild.test"), id="deny-spelling"),
    pytest.param(connect("a.b.secret.wild.test"), RULED, deny(DENYLIST, "*.secret.wild.test"), id="deny-wildcard"),
    pytest.param(connect("secret.wild.test"), RULED, allow("*.wild.test", True), id="deny-wildcard-not-its-apex"),
    pytest.param(connect("www.wild.test"), RULED, allow("*.wild.test", True), id="deny-list-others-allowed"),
    pytest.param(tunneled((b"Host", b"uploads.wild.test"), host="uploads.wild.test"), RULED, deny(DENYLIST, "uploads.wild.test"), id="deny-in-tunnel-after-reload"),
    # -- rules: method and normalized path, per host ---------------------------------------------
    pytest.param(git(b"GET", b"/org/repo/info/refs?service=git-upload-pack"), RULED, allow("git.test rules[0]"), id="rule-get-refs"),
    pytest.param(git(b"GET", b"/org/repo/info/refs?service=git-receive-pack"), RULED, allow("git.test rules[0]"), id="rule-query-not-matched"),
    pytest.param(git(b"POST", b"/org/repo/git-upload-pack"), RULED, allow("git.test rules[1]"), id="rule-post-upload-pack"),
    pytest.param(git(b"POST", b"/org/repo/git-receive-pack"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-push-denied"),
    pytest.param(git(b"GET", b"/org/repo/git-upload-pack"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-method-differs"),
    pytest.param(git(b"get", b"/org/repo/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-method-case"),
    pytest.param(git(b"GET", b"/other/repo/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-other-org"),
    pytest.param(git(b"GET", b"/org/a/b/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-star-one-segment"),
    pytest.param(git(b"GET", b"/org/repo/./info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-dot-segment-read-two-ways"),
    pytest.param(git(b"POST", b"/org/x/git-receive-pack/../git-upload-pack"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-dot-segments-both-readings"),
    pytest.param(git(b"GET", b"/org/x/..;/repo/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-dot-dot-params"),
    pytest.param(git(b"GET", b"/org/%72epo/info/refs"), RULED, allow("git.test rules[0]"), id="rule-unreserved-decoded"),
    pytest.param(git(b"GET", b"/org/a%2Fb/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-encoded-slash"),
    pytest.param(git(b"GET", b"/org/repo/%2e%2e/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-encoded-dots"),
    pytest.param(git(b"GET", b"/org//repo/info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-empty-segment"),
    pytest.param(git(b"GET", b"/org/repo\\info/refs"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-backslash"),
    pytest.param(git(b"POST", b"/org/r/git-receive-pack", host="api.test"), RULED, allow("api.test"), id="rule-other-host-free"),
    pytest.param(git(b"GET", b"/anything", host="www.wild.test"), RULED, allow("*.wild.test rules[2]"), id="rule-wildcard-host-any-path"),
    pytest.param(git(b"POST", b"/anything", host="deep.www.wild.test"), RULED, deny(RULE, "rules[2]"), id="rule-wildcard-host-method"),
    pytest.param(absolute((b"Host", b"git.test"), host="git.test", target=b"/org/r/git-receive-pack", method=b"POST"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-plain-http"),
    pytest.param(plain((b"Host", b"git.test"), host="git.test", method=b"POST", target=b"/org/r/git-receive-pack"), RULED, deny(RULE, "rules[0],rules[1]"), id="rule-transparent-http"),
    # -- report mode: names, ports and rules relaxed and said; nothing else ---------------------
    pytest.param(connect("other.test"), REPORT, reported(BLOCKED, None, True), id="report-not-allowed"),
    pytest.param(connect("uploads.wild.test"), REPORT, reported(DENYLIST, "uploads.wild.test", True), id="report-denylist"),
    pytest.param(connect(port=8443), REPORT, reported(PORT, "api.test", True), id="report-port"),
    pytest.param(git(b"POST", b"/org/r/git-receive-pack"), REPORT, reported(RULE, "git.test"), id="report-rule"),
    pytest.param(git(b"GET", b"/org/a%2Fb/info/refs"), REPORT, reported(RULE, "git.test"), id="report-ambiguous-path"),
    pytest.param(connect("other.test", addresses=ips("10.9.9.9")), REPORT, deny(ADDRESS), id="report-never-address"),
    pytest.param(connect("other.test", addresses=PUBLIC), REPORT, reported(BLOCKED), id="report-with-addresses"),
    pytest.param(tunneled((b"Host", b"other.test")), REPORT, deny(MISMATCH), id="report-never-binding"),
    pytest.param(tunneled(HOST, target=b"/a\x00b"), REPORT, deny(BAD), id="report-never-bad-request"),
    pytest.param(connect("other.test", over_connection_cap=True), REPORT, deny(CAP), id="report-never-limits"),
    pytest.param(connect("api.test"), RULED, allow("api.test", True), id="enforce-unchanged"),
]  # fmt: skip


@pytest.mark.parametrize(("facts", "policy", "expected"), CASES)
def test_decide(facts: Facts, policy, expected: Decision) -> None:
    assert decide(facts, policy) == expected


# Reasons that are not the core's to give: faults seen after connecting, the protocol gate's
# close, and the addon's answer when deciding itself failed.
NOT_DECIDED_HERE = {
    reasons.UPSTREAM_REFUSED,
    reasons.UPSTREAM_TLS_ERROR,
    reasons.UPSTREAM_TIMEOUT,
    reasons.UPSTREAM_ERROR,
    reasons.UNRECOGNIZED_PROTOCOL,
    reasons.POLICY_ERROR,
    # DNS questions are decided by addons.core.dns (tests/unit/test_core_dns.py).
    reasons.DNS_QUERY_REFUSED,
    reasons.DNS_OVERLOADED,
}


def test_the_table_covers_every_reason_and_stage() -> None:
    seen = {case.values[2].reason for case in CASES}
    assert seen == {r.name for r in reasons.ALL} - {r.name for r in NOT_DECIDED_HERE}
    assert {case.values[0].stage for case in CASES} == set(Stage)
