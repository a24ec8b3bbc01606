"""Hostile bytes inside approved tunnels, at volume (issue 12 items 1, 2, 5, 6): split writes,
bytes that are neither TLS nor HTTP, upgrades other than WebSocket, header bytes read two ways.
Each spelling goes in on its own connection; the sink counts every byte that reaches it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.stress.conftest import Report, scale
from tests.support.faulty_upstreams import AnsweringServer
from tests.support.proxy import Proxy
from tests.support.raw_client import read_until_closed
from tests.support.testnet import LoopbackNet

ROUNDS = scale(2, 25)


@pytest.fixture(scope="module")
def sink() -> Iterator[AnsweringServer]:
    s = AnsweringServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def tunnel_proxy(testnet: LoopbackNet, sink: AnsweringServer, tmp_path_factory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp("hostile-tunnels")
    policy = testnet.write_policy(work / "policy.yaml", "sink.test", ports=(sink.port,))
    proxy = Proxy(
        "auth-proxy",
        work,
        testnet.hosts_file,
        testnet.ca_pem,
        policy,
        ["--set", "client_header_timeout=3"],
    ).start()
    yield proxy
    proxy.stop()


def attacks(port: int) -> list[tuple[str, tuple[bytes, ...], bytes]]:
    """(name, writes, the answer's required start: b"" for a closed connection)."""
    host = f"sink.test:{port}".encode()
    wrong = b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"
    return [
        ("split-2", (wrong[:2], wrong[2:]), b"HTTP/1.1 403"),
        ("split-line", (wrong[:14], wrong[14:]), b"HTTP/1.1 403"),
        ("blank-line", (b"\r\n", wrong), b"HTTP/1.1 403"),
        ("binary", (b"\x00", b"\x01\x02\x03"), b""),
        ("ssh", (b"SSH-2.0-x\r\n",), b""),
        ("tls-lookalike", (b"\x16\x04", b"\x00" * 20), b""),
        ("long-token", (b"A" * 20, b"B" * 20), b""),
        (
            "upgrade-h2c",
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: H2C\r\n\r\n",),
            b"HTTP/1.1 403",
        ),
        (
            "upgrade-tls",
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: TLS/1.2\r\n\r\n",),
            b"HTTP/1.1 403",
        ),
        (
            "bare-cr",
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX: a\rHost: e\r\n\r\n",),
            b"HTTP/1.1 400",
        ),
        ("nul-target", (b"GET /\x00 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",), b"HTTP/1.1 400"),
        (
            "obs-fold",
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX: a\r\n Host: e\r\n\r\n",),
            b"HTTP/1.1 400",
        ),
        (
            "conn-host",
            (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: host\r\n\r\n",),
            b"HTTP/1.1 400",
        ),
    ]


def attempt(proxy: Proxy, port: int, writes: tuple[bytes, ...]) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(
            f"CONNECT sink.test:{port} HTTP/1.1\r\nHost: sink.test:{port}\r\n\r\n".encode()
        )
        if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
            return b"CONNECT refused"
        for index, data in enumerate(writes):
            if index:
                time.sleep(0.05)
            sock.sendall(data)
        return read_until_closed(sock)


def test_tunnel_attacks_refused_nothing_relayed(
    tunnel_proxy: Proxy, sink: AnsweringServer, report: Report
) -> None:
    cases = attacks(sink.port)
    row = report.add("hostile", "tunnel: raw relay, upgrade, bytes", tried=len(cases) * ROUNDS)
    bad = []
    for _ in range(ROUNDS):
        for name, writes, expected in cases:
            answer = attempt(tunnel_proxy, sink.port, writes)
            ok = answer.startswith(expected) if expected else answer == b""
            if not ok:
                bad.append(f"{name}: {answer[:60]!r}")
    row.errors = len(bad)
    row.detail = f"{len(cases)} kinds x {ROUNDS}, sink saw {len(sink.received)} bytes"
    assert bad == [], "\n".join(bad[:20])
    assert sink.received == b"", "hostile bytes reached the upstream"
    assert tunnel_proxy.health("/healthz")[0] == 200
    row.passed = True
