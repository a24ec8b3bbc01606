"""The transparent listener, end to end in a private network namespace, both runtimes.

A client (uid 1000) dials a decoy address; nftables redirects it to the proxy, which must name
the destination from the SNI or Host header, decide it like a CONNECT, and connect to the address
it resolved and checked (the real upstream), never to the one dialled. Every listener in the
namespace counts what it accepted: a denial that opened any connection fails the test.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import Proxy
from tests.support.raw_client import is_closed, send_and_read
from tests.support.transparent import (
    CLIENT_UID,
    DECOY_V4,
    DECOY_V6,
    TRANSPARENT_PORT,
    TlsClient,
    TransparentNet,
    hello_with_sni,
    http_status,
    make_net,
    original_destination,
    send_split,
    wait_for,
)

DECOYS = {"v4": DECOY_V4, "v6": DECOY_V6}


@pytest.fixture(scope="module")
def tnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransparentNet]:
    net = make_net(tmp_path_factory.mktemp("transparent"))
    yield net
    net.close()


class Setup:
    def __init__(self, net: TransparentNet, proxy: Proxy, ca: Path) -> None:
        self.net, self.proxy, self.ca = net, proxy, ca

    def mark(self) -> int:
        return len(self.proxy.events("decision"))

    def decisions(self, mark: int, wait: float = 5.0) -> list[dict]:
        """Transparent decision lines written since `mark` (waits for the first)."""

        def new() -> list[dict]:
            found = self.proxy.events("decision")[mark:]
            return [d for d in found if d.get("mode") == "transparent"]

        return wait_for(new, wait)

    def tls(self, dialled: str, port: int, sni: str | None) -> TlsClient:
        return TlsClient(self.net.connect(dialled, port), sni, self.ca)


@pytest.fixture(scope="module")
def setup(proxy_kind: str, tnet: TransparentNet) -> Iterator[Setup]:
    proxy = tnet.proxy(proxy_kind).start()
    ca = tnet.publish(proxy.ca_cert, f"{proxy_kind}-ca.crt")
    yield Setup(tnet, proxy, ca)
    proxy.stop()


@pytest.fixture(autouse=True)
def fresh_counts(tnet: TransparentNet) -> None:
    tnet.listeners.reset()


def decided(setup: Setup, mark: int, **expected) -> dict:
    """The one new transparent decision line, checked against `expected`."""
    lines = setup.decisions(mark)
    assert lines, f"no transparent decision line; stdout tail:\n{setup.proxy.logs()[-3000:]}"
    line = lines[-1]
    assert {k: line.get(k) for k in expected} == expected, line
    return line


def curl_status(setup: Setup, *args: str) -> tuple[int, dict[str, str], str]:
    result = setup.net.curl("--include", "--cacert", str(setup.ca), *args)
    assert result.returncode == 0, result.stderr + setup.proxy.logs()[-3000:]
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def resolve_arg(name: str, port: int, address: str) -> str:
    return f"{name}:{port}:{f'[{address}]' if ':' in address else address}"


# -- the harness itself ------------------------------------------------------------------------


def test_harness_redirects_the_client_uid_and_keeps_the_address_dialled(
    tmp_path: Path,
) -> None:
    """Without this, "the decoy counted 0" could mean the redirect never happened."""
    net = make_net(tmp_path / "net", port=8999, upstream=False)
    try:
        listeners = []
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = net.ns.make_socket(family)
            s.bind((host, 8999))
            s.listen()
            s.settimeout(5)
            listeners.append(s)
        for listener, dialled in zip(listeners, (DECOY_V4, DECOY_V6), strict=True):
            with net.connect(dialled, 443):
                accepted, _ = listener.accept()
                with accepted:
                    assert original_destination(accepted) == (dialled, 443)
        assert net.decoys == []
        with net.ns.connect((DECOY_V4, 80)):  # root: not redirected
            assert wait_for(lambda: len(net.decoys) == 1)
        for s in listeners:
            s.close()
    finally:
        net.close()
    assert CLIENT_UID != 0


# -- 1, 2: TLS by SNI --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest.mark.parametrize("name", ["allowed.test", "www.wild.test"])
def test_allowed_sni_reaches_the_checked_address_not_the_dialled_one(
    setup: Setup, family: str, name: str
) -> None:
    decoy = DECOYS[family]
    mark = setup.mark()
    status, _, body = curl_status(
        setup, "--resolve", resolve_arg(name, 443, decoy), f"https://{name}/echo"
    )
    assert status == 200 and '"path": "/echo"' in body, body
    assert setup.net.decoys == []
    assert setup.net.upstream_connections, "the upstream saw no connection"
    shown = f"[{decoy}]:443" if family == "v6" else f"{decoy}:443"
    decided(
        setup,
        mark,
        mode="transparent",
        host=name,
        port=443,
        original_destination=shown,
        reason="allowed",
        allow=True,
    )


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_denied_sni_gets_a_403_inside_tls_and_no_connection(setup: Setup, family: str) -> None:
    decoy = DECOYS[family]
    mark = setup.mark()
    # curl trusts only the proxy's CA: a finished handshake means a leaf from it for denied.test.
    status, headers, _ = curl_status(
        setup, "--resolve", resolve_arg("denied.test", 443, decoy), "https://denied.test/echo"
    )
    assert (status, headers.get("x-proxy-error")) == (403, "blocked-by-allowlist")
    decided(setup, mark, host="denied.test", port=443, reason="blocked-by-allowlist", allow=False)
    assert setup.net.reached() == []


# -- 3: TLS without SNI ------------------------------------------------------------------------


def test_tls_without_sni_fails_its_handshake(setup: Setup) -> None:
    mark = setup.mark()
    client = setup.tls(DECOY_V4, 443, None)
    with client.sock, pytest.raises((ConnectionError, ssl.SSLError)):
        client.handshake()
    decided(setup, mark, reason="missing-sni", allow=False)
    # curl sends no SNI to an IP literal.
    result = setup.net.curl("--cacert", str(setup.ca), f"https://{DECOY_V4}/echo")
    assert result.returncode != 0 and '"path"' not in result.stdout
    assert setup.net.reached() == []


# -- 4: port -----------------------------------------------------------------------------------


def test_allowed_sni_on_an_unlisted_port_gets_blocked_port(setup: Setup) -> None:
    mark = setup.mark()
    status, headers, _ = curl_status(
        setup,
        "--resolve",
        resolve_arg("allowed.test", 8443, DECOY_V4),
        "https://allowed.test:8443/",
    )
    assert (status, headers.get("x-proxy-error")) == (403, "blocked-port")
    decided(setup, mark, host="allowed.test", port=8443, reason="blocked-port")
    assert setup.net.reached() == []


# -- 5: plain HTTP by Host ---------------------------------------------------------------------


def plain(setup: Setup, request: bytes, dialled: str = DECOY_V4, split: bool = False) -> bytes:
    s = setup.net.connect(dialled, 80)
    if split:
        send_split(s, request)
        return send_and_read(s, [], wait=10).reply
    return send_and_read(s, [request], wait=10).reply


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_plain_http_goes_to_the_host_headers_checked_address(setup: Setup, family: str) -> None:
    mark = setup.mark()
    reply = plain(
        setup,
        b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
        DECOYS[family],
    )
    assert http_status(reply)[0] == 200 and b'"path": "/echo"' in reply, reply[:300]
    assert setup.net.decoys == []
    assert setup.net.upstream_connections
    decided(setup, mark, host="allowed.test", port=80, reason="allowed", allow=True)


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n", "blocked-by-allowlist", id="denied-host"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: allowed.test:8080\r\n\r\n",
            "host-mismatch",
            id="host-port-differs-from-dialled",
        ),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", "host-mismatch", id="http10-no-host"),
        pytest.param(
            b"GET http://denied.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            "host-mismatch",
            id="absolute-form-other-name",
        ),
        pytest.param(
            b"GET http://10.77.0.1/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            "host-mismatch",
            id="absolute-form-ip",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: denied.test\r\n\r\n",
            "host-mismatch",
            id="two-host-fields",
        ),
    ],
)
def test_plain_http_refusals(setup: Setup, request_bytes: bytes, reason: str) -> None:
    mark = setup.mark()
    status, headers = http_status(plain(setup, request_bytes))
    assert (status, headers.get("x-proxy-error")) == (403, reason)
    decided(setup, mark, reason=reason, allow=False)
    assert setup.net.reached() == []


# -- 6: an allowed name at a forbidden address -------------------------------------------------


def test_allowed_name_resolving_to_a_forbidden_address_is_blocked(setup: Setup) -> None:
    mark = setup.mark()
    status, headers, _ = curl_status(
        setup, "--resolve", resolve_arg("private.test", 443, DECOY_V4), "https://private.test/"
    )
    assert (status, headers.get("x-proxy-error")) == (403, "blocked-address")
    plain_status, plain_headers = http_status(
        plain(setup, b"GET / HTTP/1.1\r\nHost: private.test\r\n\r\n")
    )
    assert (plain_status, plain_headers.get("x-proxy-error")) == (403, "blocked-address")
    lines = setup.decisions(mark)
    assert [d["reason"] for d in lines if d.get("host") == "private.test"] == [
        "blocked-address",
        "blocked-address",
    ]
    assert setup.net.reached() == []


# -- 7: loops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_dialling_the_transparent_port_directly_is_closed_at_once(setup: Setup, host: str) -> None:
    mark = setup.mark()
    with setup.net.connect(host, TRANSPARENT_PORT) as s:
        assert is_closed(s, 3), "the proxy kept a connection to itself open"
    decided(setup, mark, reason="destination-is-proxy", allow=False)
    with setup.net.connect(host, TRANSPARENT_PORT) as s:
        reply = send_and_read(s, [b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\n\r\n"], wait=3)
    assert b"200" not in reply.reply[:20]
    assert setup.net.reached() == []


# -- 8: hostile spellings and splits -----------------------------------------------------------


@pytest.mark.parametrize("sni", ["ALLOWED.TEST", "allowed.test.", "ALLOWED.TEST.", "Www.Wild.Test"])
def test_sni_spellings_of_an_allowed_name_are_allowed(setup: Setup, sni: str) -> None:
    mark = setup.mark()
    client = setup.tls(DECOY_V4, 443, sni)
    with client.sock:
        client.handshake()
        host = sni.rstrip(".").lower()
        reply = client.request(f"GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert http_status(reply)[0] == 200 and b'"path": "/echo"' in reply, reply[:300]
    assert setup.net.decoys == []
    decided(setup, mark, reason="allowed", allow=True)


def test_sni_that_only_starts_with_an_allowed_name_is_denied(setup: Setup) -> None:
    mark = setup.mark()
    client = setup.tls(DECOY_V4, 443, "allowed.test.evil")
    with client.sock:
        client.handshake()
        reply = client.request(b"GET / HTTP/1.1\r\nHost: allowed.test.evil\r\n\r\n")
    status, headers = http_status(reply)
    assert (status, headers.get("x-proxy-error")) == (403, "blocked-by-allowlist")
    decided(setup, mark, allow=False, reason="blocked-by-allowlist")
    assert setup.net.reached() == []


@pytest.mark.parametrize(
    "sni",
    [
        pytest.param(b"allowed.test\x00.evil", id="nul"),
        pytest.param(b"x" * 64 + b".wild.test", id="label-over-63-under-wildcard"),
        pytest.param(b"a" * 250, id="250-byte-label"),
        pytest.param(b"allowed.test\xff", id="non-ascii-byte"),
    ],
)
def test_malformed_sni_is_refused(setup: Setup, sni: bytes) -> None:
    mark = setup.mark()
    with setup.net.connect(DECOY_V4, 443) as s:
        s.sendall(hello_with_sni(sni))
        reply = send_and_read(s, [], wait=5)
    # Never a completed handshake nor any HTTP: an alert, a close, or at most a ServerHello
    # for a handshake whose request would get the 403 (not completable with this hello).
    assert b"HTTP/" not in reply.reply
    assert all(not d["allow"] for d in setup.decisions(mark, wait=2))
    assert setup.net.reached() == []


@pytest.mark.parametrize(
    ("sni", "status", "reason"),
    [
        pytest.param("allowed.test", 200, None, id="allowed"),
        pytest.param("denied.test", 403, "blocked-by-allowlist", id="denied"),
    ],
)
def test_client_hello_split_into_one_byte_writes_is_still_decided(
    setup: Setup, sni: str, status: int, reason: str | None
) -> None:
    mark = setup.mark()
    client = setup.tls(DECOY_V4, 443, sni)
    with client.sock:
        client.handshake(split=True)
        reply = client.request(f"GET /echo HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
    got, headers = http_status(reply)
    assert (got, headers.get("x-proxy-error")) == (status, reason), reply[:300]
    # The handshake was verified against the proxy's CA: a raw relay would have shown the
    # upstream's own certificate and failed.
    decided(setup, mark, host=sni, allow=status == 200)
    assert setup.net.decoys == []
    if reason:
        assert setup.net.reached() == []


@pytest.mark.parametrize(
    ("host", "status"), [pytest.param("allowed.test", 200), pytest.param("denied.test", 403)]
)
def test_http_head_split_byte_by_byte_is_still_decided(
    setup: Setup, host: str, status: int
) -> None:
    request = f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    got, _ = http_status(plain(setup, request, split=True))
    assert got == status
    assert setup.net.decoys == []
    if status != 200:
        assert setup.net.reached() == []


@pytest.mark.parametrize(
    ("port", "target"),
    [
        pytest.param(443, "allowed.test:443", id="on-443"),
        pytest.param(80, "allowed.test:443", id="on-80"),
        pytest.param(80, "10.77.0.1:80", id="to-an-address"),
        pytest.param(443, "denied.test:443", id="denied-name"),
    ],
)
def test_connect_sent_to_the_transparent_port_is_never_a_tunnel(
    setup: Setup, port: int, target: str
) -> None:
    with setup.net.connect(DECOY_V4, port) as s:
        reply = send_and_read(
            s,
            [f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()],
            wait=5,
        )
    status, _ = http_status(reply.reply)
    assert status is None or status >= 400, reply.reply[:200]
    assert setup.net.reached() == []


def test_host_header_inside_tls_must_match_the_sni(setup: Setup) -> None:
    mark = setup.mark()
    client = setup.tls(DECOY_V4, 443, "allowed.test")
    with client.sock:
        client.handshake()
        reply = client.request(b"GET /echo HTTP/1.1\r\nHost: denied.test\r\n\r\n")
    status, headers = http_status(reply)
    assert (status, headers.get("x-proxy-error")) == (403, "host-mismatch"), reply[:300]
    assert any(d["reason"] == "host-mismatch" for d in setup.decisions(mark))
    assert setup.net.decoys == []
