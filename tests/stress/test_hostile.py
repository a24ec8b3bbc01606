"""Hostile input: refused cleanly (4xx or a closed connection), nothing forwarded, the proxy stays
healthy. And secrets: a read-only health port, loopback by default, nothing sensitive in logs."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stress.conftest import Report, scale
from tests.support.faulty_upstreams import AnsweringServer
from tests.support.loadclient import ProtocolError, Tunnel
from tests.support.processes import ManagedProcess, port_open, wait_until
from tests.support.proxy import Proxy, generate_ca
from tests.support.raw_client import read_until_closed
from tests.support.testnet import HOSTS, LoopbackNet

HOSTNAMES = scale(300, 10_000)
CERT_CACHE = 50


@pytest.fixture(scope="module")
def sink() -> Iterator[AnsweringServer]:
    """A plain upstream that answers, and records every byte: nothing hostile may reach it."""
    s = AnsweringServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def hostile_proxy(testnet: LoopbackNet, sink: AnsweringServer, tmp_path_factory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("hostile")
    hosts = work / "hosts"
    lines = [HOSTS] + [f"127.0.0.1 h{i}.many.test" for i in range(HOSTNAMES)]
    hosts.write_text("\n".join(lines) + "\n")
    policy = testnet.write_policy(
        work / "policy.yaml",
        "sink.test",
        "upstream.test",
        "*.many.test",
        ports=(sink.port, testnet.tls_port),
    )
    proxy = Proxy(
        "auth-proxy",
        work,
        hosts,
        testnet.ca_pem,
        policy,
        ["--set", "client_header_timeout=2", "--set", f"cert_cache_size={CERT_CACHE}"],
    ).start()
    yield proxy
    proxy.stop()


def exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, return whatever comes back until the proxy closes or `wait` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        try:
            s.sendall(data)
        except OSError:
            return b""
        return read_until_closed(s, wait)


def refused_cleanly(reply: bytes) -> bool:
    if not reply:
        return True  # closed
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return match is not None and 400 <= int(match.group(1)) < 500


def hostile_inputs(sink_port: int) -> list[tuple[str, bytes]]:
    s = f"sink.test:{sink_port}"
    return [
        ("connect-no-port", b"CONNECT sink.test HTTP/1.1\r\nHost: sink.test\r\n\r\n"),
        ("connect-empty", b"CONNECT  HTTP/1.1\r\n\r\n"),
        ("connect-double-dot", f"CONNECT a..b:{sink_port} HTTP/1.1\r\n\r\n".encode()),
        ("connect-userinfo", f"CONNECT user@sink.test:{sink_port} HTTP/1.1\r\n\r\n".encode()),
        ("connect-bad-port", b"CONNECT sink.test:99999 HTTP/1.1\r\n\r\n"),
        ("connect-neg-port", b"CONNECT sink.test:-1 HTTP/1.1\r\n\r\n"),
        ("connect-nul", f"CONNECT sink.test\x00.evil:{sink_port} HTTP/1.1\r\n\r\n".encode()),
        ("connect-spaces", f"CONNECT sink .test:{sink_port} HTTP/1.1\r\n\r\n".encode()),
        ("connect-ipv6-junk", b"CONNECT [::1:443 HTTP/1.1\r\n\r\n"),
        ("connect-unicode", f"CONNECT sïnk.test:{sink_port} HTTP/1.1\r\n\r\n".encode()),
        ("connect-no-version", f"CONNECT {s}\r\n\r\n".encode()),
        ("absolute-garbage", b"GET http://%%%/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("absolute-no-host", b"GET http:/// HTTP/1.1\r\n\r\n"),
        ("absolute-ftp", f"GET ftp://{s}/ HTTP/1.1\r\nHost: {s}\r\n\r\n".encode()),
        ("absolute-bad-port", b"GET http://sink.test:0/ HTTP/1.1\r\nHost: sink.test:0\r\n\r\n"),
        ("origin-form-no-host", b"GET / HTTP/1.1\r\n\r\n"),
        ("missing-host", f"GET http://{s}/ HTTP/1.0\r\n\r\n".encode()),
        (
            "doubled-host",
            f"GET http://{s}/ HTTP/1.1\r\nHost: {s}\r\nHost: evil.test\r\n\r\n".encode(),
        ),
        ("mismatched-host", f"GET http://{s}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n".encode()),
        (
            "oversized-request-line",
            f"GET http://{s}/{'a' * 200_000} HTTP/1.1\r\nHost: {s}\r\n\r\n".encode(),
        ),
        (
            "oversized-headers",
            f"GET http://{s}/ HTTP/1.1\r\nHost: {s}\r\n".encode()
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 8000) for i in range(100))
            + b"\r\n",
        ),
        ("non-http-bytes", bytes(range(256)) * 4),
        ("tls-on-proxy-port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
        ("ssh-banner", b"SSH-2.0-OpenSSH_9.0\r\n"),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 30),
        (
            "chunked-and-length",
            f"POST http://{s}/ HTTP/1.1\r\nHost: {s}\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(),
        ),
    ]


def test_malformed_requests_refused_nothing_forwarded(
    hostile_proxy: Proxy, sink: AnsweringServer, testnet: LoopbackNet, report: Report
) -> None:
    cases = hostile_inputs(sink.port)
    row = report.add("hostile", "malformed requests", tried=len(cases))
    bad = []
    for name, data in cases:
        reply = exchange(hostile_proxy.port, data)
        if not refused_cleanly(reply):
            bad.append(f"{name}: {reply[:60]!r}")
    row.errors = len(bad)
    row.detail = f"{len(cases)} kinds, sink saw {len(sink.received)} bytes"
    assert bad == [], "\n".join(bad)
    assert sink.received == b"", "something reached the upstream"
    assert healthy(hostile_proxy, testnet)
    row.passed = True


def healthy(proxy: Proxy, testnet: LoopbackNet) -> bool:
    status, _, _ = proxy.status_and_headers(f"https://upstream.test:{testnet.tls_port}/echo")
    return status == 200 and proxy.health("/healthz")[0] == 200


def tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    return raw


def test_tls_garbage_and_bad_sni_after_connect(
    hostile_proxy: Proxy, testnet: LoopbackNet, report: Report
) -> None:
    snis = ["bad_name!.test", "a" * 300, "upstream.test\x00.evil", "xn--garbage-.test", "..", "*"]
    row = report.add("hostile", "TLS garbage / bad SNI in tunnel", tried=4 + len(snis))
    garbage = [
        b"\x16\x03\x01\xff\xff" + b"\x01" * 200,
        b"GET / HTTP/1.1\r\n\r\n",
        bytes(range(256)),
        b"\x16\x03\x03\x00\x05\x01\x00\x00\x01\x00",
    ]
    for data in garbage:
        with tunnel(hostile_proxy, "upstream.test", testnet.tls_port) as raw:
            raw.sendall(data)
            raw.settimeout(5)
            try:
                reply = raw.recv(65536)
            except (TimeoutError, OSError):
                reply = b""
            assert b"echo" not in reply and b"200 OK" not in reply
    for sni in snis:
        with tunnel(hostile_proxy, "upstream.test", testnet.tls_port) as raw:
            hello = client_hello_with_sni(sni.encode("latin-1"))
            raw.sendall(hello)
            raw.settimeout(5)
            try:
                reply = raw.recv(65536)
            except (TimeoutError, OSError):
                reply = b""
            # A handshake alert or a close, never a ServerHello that completes.
            assert not reply or reply[:1] in (b"\x15", b"\x16")
    assert healthy(hostile_proxy, testnet)
    row.passed = True


def client_hello_with_sni(sni: bytes) -> bytes:
    """A minimal TLS 1.2 ClientHello whose server_name is exactly `sni` (no validation)."""
    name = b"\x00" + len(sni).to_bytes(2, "big") + sni
    sni_ext = b"\x00\x00" + (len(name) + 2).to_bytes(2, "big") + len(name).to_bytes(2, "big") + name
    body = (
        b"\x03\x03"
        + b"\x11" * 32
        + b"\x00"
        + b"\x00\x04\xc0\x2f\x00\x9c"
        + b"\x01\x00"
        + len(sni_ext).to_bytes(2, "big")
        + sni_ext
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def test_many_hostnames_keep_cert_cache_bounded(
    hostile_proxy: Proxy, testnet: LoopbackNet, report: Report
) -> None:
    row = report.add("hostile", f"{HOSTNAMES} distinct hostnames", tried=HOSTNAMES)
    context = ssl.create_default_context(cafile=str(hostile_proxy.ca_cert))

    async def handshake(i: int) -> bool:
        host = f"h{i}.many.test"
        tunnel = Tunnel(hostile_proxy.port, host, testnet.tls_port, context)
        try:
            await tunnel.open(timeout=30)
        except (OSError, TimeoutError, ssl.SSLError, ProtocolError):
            return False
        assert tunnel.writer is not None
        cert = tunnel.writer.get_extra_info("peercert")
        tunnel.close()
        return any(v == host for _, v in cert.get("subjectAltName", ()))

    async def run() -> tuple[int, int]:
        ok = peak = 0
        for start in range(0, HOSTNAMES, 50):
            results = await asyncio.gather(
                *(handshake(i) for i in range(start, min(start + 50, HOSTNAMES)))
            )
            ok += sum(results)
            if start % 1000 == 0:
                peak = max(peak, cert_cache_entries(hostile_proxy))
        return ok, max(peak, cert_cache_entries(hostile_proxy))

    ok, peak = asyncio.run(run())
    row.errors = HOSTNAMES - ok
    row.detail = f"{ok} certs minted, cache peak {peak} (cap {CERT_CACHE})"
    assert ok == HOSTNAMES
    assert 0 < peak <= CERT_CACHE + 1
    assert healthy(hostile_proxy, testnet)
    row.passed = True


def cert_cache_entries(proxy: Proxy) -> int:
    _, text = proxy.health("/metrics")
    match = re.search(r"^auth_proxy_cert_cache_entries (\d+)$", text, re.M)
    assert match, text
    return int(match.group(1))


@pytest.mark.parametrize("style", ["idle", "slowloris", "half-open", "slow-in-tunnel"])
def test_slow_clients_closed_after_timeout(
    hostile_proxy: Proxy, testnet: LoopbackNet, sink: AnsweringServer, report: Report, style: str
) -> None:
    row = report.add("hostile", f"{style} client closed", tried=1)
    before = len(sink.received)
    start = time.monotonic()
    if style == "slow-in-tunnel":
        s = tunnel(hostile_proxy, "upstream.test", testnet.tls_port)
    else:
        s = socket.create_connection(("127.0.0.1", hostile_proxy.port), timeout=10)
    with s:
        s.settimeout(0.5)
        if style == "half-open":
            s.sendall(f"GET http://sink.test:{sink.port}/ HTTP/1.1\r\n".encode())
            s.shutdown(socket.SHUT_WR)
        closed = False
        for i in range(60):  # at most 30 s; the proxy is set to 2 s
            if style == "slowloris":
                try:
                    s.sendall(b"GET http://sink.test/ HTTP/1.1\r\n"[i : i + 1] or b"X")
                except OSError:
                    closed = True
                    break
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            assert refused_cleanly(data), data
        elapsed = time.monotonic() - start
    row.detail = f"closed after {elapsed:.1f}s"
    assert closed, "the proxy kept the slow connection open"
    assert elapsed < 25
    assert len(sink.received) == before
    assert healthy(hostile_proxy, testnet)
    row.passed = True


def test_connection_cap_gives_503(testnet: LoopbackNet, tmp_path: Path, report: Report) -> None:
    cap = 20
    row = report.add("hostile", f"connections over cap {cap}", tried=cap + 5)
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = Proxy(
        "auth-proxy",
        tmp_path,
        testnet.hosts_file,
        testnet.ca_pem,
        policy,
        ["--set", f"max_connections={cap}", "--set", "client_header_timeout=60"],
    ).start()
    try:
        held = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(cap)]
        time.sleep(0.5)
        statuses = []
        for _ in range(5):
            reply = exchange(
                proxy.port,
                f"GET http://upstream.test:{testnet.plain_port}/echo HTTP/1.1\r\n"
                f"Host: upstream.test:{testnet.plain_port}\r\n\r\n".encode(),
            )
            statuses.append(reply.split(b"\r\n\r\n")[0])
        for s in held:
            s.close()
        assert all(b" 503 " in h and b"too-many-connections" in h for h in statuses), statuses
        time.sleep(0.5)
        assert proxy.status_and_headers(f"https://upstream.test:{testnet.tls_port}/echo")[0] == 200
        row.detail = "503 too-many-connections beyond the cap; served again after"
        row.passed = True
    finally:
        proxy.stop()


# -- secrets and exposure ----------------------------------------------------------------------


def test_health_port_changes_nothing(hostile_proxy: Proxy, report: Report) -> None:
    paths = ["/", "/healthz", "/readyz", "/metrics", "/reload", "/shutdown", "/policy", "/x"]
    methods = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
    row = report.add("secrets", "health port read-only", tried=len(paths) * len(methods))
    for path in paths:
        for method in methods:
            reply = exchange(
                hostile_proxy.health_port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            assert reply.startswith(b"HTTP/1.1 405"), (method, path, reply[:80])
    row.passed = True


def test_auth_proxy_binds_loopback_by_default(
    testnet: LoopbackNet, tmp_path: Path, report: Report
) -> None:
    row = report.add("secrets", "auth-proxy listens on 127.0.0.1")
    proxy = Proxy(
        "auth-proxy",
        tmp_path,
        testnet.hosts_file,
        testnet.ca_pem,
        testnet.write_policy(tmp_path / "policy.yaml", "upstream.test"),
    )
    command = proxy.command()
    at = command.index("--listen-host")
    del command[at : at + 2]  # no --listen-host: the runtime's default decides
    generate_ca(proxy.confdir)
    process = ManagedProcess(command, tmp_path, "auth-proxy-default-host")
    try:
        wait_until(lambda: port_open(proxy.port) or not process.alive(), 30, "the proxy port")
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{proxy.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        local = [w for w in listening if w.endswith(f":{proxy.port}")]
        row.detail = ", ".join(local)
        assert local == [f"127.0.0.1:{proxy.port}"], listening
    finally:
        process.stop()
    row.passed = True


SECRETS = {
    "query": "q=sekret-query-value",
    "authorization": "Bearer sekret-authorization-value",
    "proxy-authorization": "Basic sekret-proxy-authorization-value",
    "cookie": "session=sekret-cookie-value",
    "body": "sekret-body-value",
}


def test_logs_hold_no_secrets(hostile_proxy: Proxy, testnet: LoopbackNet, report: Report) -> None:
    row = report.add("secrets", "no secrets in logs", tried=3)
    for url in (
        f"https://upstream.test:{testnet.tls_port}/echo?{SECRETS['query']}",
        f"http://upstream.test:{testnet.plain_port}/echo?{SECRETS['query']}",
        f"https://denied.test/echo?{SECRETS['query']}",
    ):
        hostile_proxy.curl(
            "-H",
            f"Authorization: {SECRETS['authorization']}",
            "-H",
            f"Cookie: {SECRETS['cookie']}",
            "--proxy-header",
            f"Proxy-Authorization: {SECRETS['proxy-authorization']}",
            "-H",
            f"Proxy-Authorization: {SECRETS['proxy-authorization']}",
            "--data",
            SECRETS["body"],
            url,
        )
    logs = hostile_proxy.logs()
    assert '"event":"request"' in logs
    leaked = [k for k, v in SECRETS.items() if v.split("=")[-1].split()[-1] in logs]
    row.errors = len(leaked)
    assert leaked == []
    row.passed = True
