"""Hostile input on the transparent listener, both runtimes: bytes that are neither TLS nor HTTP
are closed without a byte relayed, and a flood of random SNIs is answered while the proxy stays
healthy and small. Every address a client dials here is a counting decoy in a private namespace."""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.stress.conftest import Report, scale
from tests.support.proxy import Proxy
from tests.support.raw_client import send_and_read
from tests.support.transparent import (
    DECOY_V4,
    DECOY_V6,
    TlsClient,
    TransparentNet,
    hello_with_sni,
    http_status,
    make_net,
    rss_kib,
    wait_for,
)

FLOOD = scale(300, 3000)
WORKERS = 16
RSS_LIMIT_KIB = 128 * 1024


@pytest.fixture(scope="module")
def tnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransparentNet]:
    net = make_net(tmp_path_factory.mktemp("hostile-transparent"))
    yield net
    net.close()


@pytest.fixture(scope="module")
def tproxy(proxy_kind: str, tnet: TransparentNet) -> Iterator[tuple[Proxy, Path]]:
    # Stalled heads (a partial ClientHello, a line that never ends) close after 2 s, not 60.
    proxy = tnet.proxy(proxy_kind, 8082, "--set", "client_header_timeout=2").start()
    yield proxy, tnet.publish(proxy.ca_cert, f"hostile-{proxy_kind}-ca.crt")
    proxy.stop()


def hostile_bytes() -> list[tuple[str, bytes]]:
    rng = random.Random(14)
    return [
        ("ssh-banner", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("ssh-banner-and-kex", b"SSH-2.0-x\r\n" + bytes(rng.randrange(256) for _ in range(600))),
        ("random-binary-a", bytes(rng.randrange(256) for _ in range(2048))),
        ("random-binary-b", bytes(rng.randrange(1, 32) for _ in range(300))),
        ("crlf-flood", b"\r\n" * 32_768),
        ("binary-over-64k", bytes(rng.randrange(256) for _ in range(70_000))),
        ("nul-flood", b"\x00" * 16_384),
        (
            "tls-record-garbage",
            b"\x16\x03\x01\x02\x00" + bytes(rng.randrange(256) for _ in range(512)),
        ),
        ("tls-not-a-hello", b"\x16\x03\x01\x00\x24\x63\x00\x00\x20" + b"\x00" * 32),
        ("tls-alert-first", b"\x15\x03\x03\x00\x02\x02\x28"),
        ("smtp-greeting-reply", b"EHLO evil.test\r\n"),
        ("h2-preface-no-tls", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00" * 8),
        ("method-then-binary", b"GET " + bytes(range(128, 256)) + b"\r\n\r\n"),
        ("smtp-line-unended", b"EHLO evil.test\r\n"),
        ("lone-handshake-byte", b"\x16"),
        ("partial-client-hello", hello_with_sni(b"allowed.test")[:100]),
    ]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def healthy(net: TransparentNet, proxy: Proxy, ca: Path) -> bool:
    client = TlsClient(net.connect(DECOY_V4, 443), "allowed.test", ca)
    with client.sock:
        client.handshake()
        reply = client.request(b"GET /echo HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    return http_status(reply)[0] == 200 and proxy.health("/healthz")[0] == 200


def test_bytes_neither_tls_nor_http_are_closed_and_never_relayed(
    tnet: TransparentNet, tproxy: tuple[Proxy, Path], proxy_kind: str, report: Report
) -> None:
    proxy, ca = tproxy
    cases = [
        (name, dialled, port, data)
        for name, data in hostile_bytes()
        for dialled, port in ((DECOY_V4, 443), (DECOY_V4, 80), (DECOY_V6, 8443))
    ]
    row = report.add("hostile", f"transparent raw bytes ({proxy_kind})", tried=len(cases))
    tnet.listeners.reset()
    assert proxy.process is not None
    pid = proxy.process.pid
    fds_before = open_fds(pid)

    def one(case: tuple[str, str, int, bytes]) -> str | None:
        name, dialled, port, data = case
        with tnet.connect(dialled, port) as s:
            outcome = send_and_read(s, [data], wait=8)
        status = outcome.status
        if outcome.closed and (status is None or status >= 400):
            return None
        return f"{name} to {dialled}:{port}: closed={outcome.closed} {outcome.reply[:60]!r}"

    # At once: the stalled ones each wait out the header deadline.
    with ThreadPoolExecutor(len(cases)) as pool:
        bad = [b for b in pool.map(one, cases) if b]
    reached = tnet.listeners.connections[:]
    # Every client has closed by now: a descriptor still held is a leak.
    fds_after = wait_for(lambda: open_fds(pid) <= fds_before + 2 and open_fds(pid), 5) or open_fds(
        pid
    )
    row.errors = len(bad)
    row.lost = len(reached)
    row.detail = (
        f"{len(hostile_bytes())} kinds x 3 destinations; {len(reached)} relayed; "
        f"fds {fds_before} -> {fds_after}"
    )
    assert bad == [], "\n".join(bad)
    assert reached == [], "bytes were relayed"
    assert fds_after <= fds_before + 2, f"descriptors held after the clients left: {fds_after}"
    assert healthy(tnet, proxy, ca)
    row.passed = True


def test_flood_of_random_snis_is_answered_and_the_proxy_stays_small(
    tnet: TransparentNet, tproxy: tuple[Proxy, Path], proxy_kind: str, report: Report
) -> None:
    proxy, ca = tproxy
    row = report.add("hostile", f"transparent random-SNI flood ({proxy_kind})", tried=FLOOD)
    tnet.listeners.reset()

    def one(i: int) -> str | None:
        sni = f"{secrets.token_hex(6)}.flood{i % 7}.test"
        dialled = DECOY_V6 if i % 5 == 0 else DECOY_V4
        try:
            client = TlsClient(tnet.connect(dialled, 443), sni, ca)
            with client.sock:
                client.handshake()
                reply = client.request(f"GET / HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode())
        except OSError as e:
            return f"{sni}: {e!r}"
        status, headers = http_status(reply)
        if (status, headers.get("x-proxy-error")) != (403, "blocked-by-allowlist"):
            return f"{sni}: {reply[:80]!r}"
        return None

    with ThreadPoolExecutor(WORKERS) as pool:
        failures = [f for f in pool.map(one, range(FLOOD)) if f]
    assert proxy.process is not None
    rss = rss_kib(proxy.process.pid)
    reached = tnet.listeners.connections[:]
    row.errors = len(failures)
    row.lost = len(reached)
    row.detail = f"{WORKERS} at once, RSS {rss // 1024} MiB after, {len(reached)} relayed"
    assert failures == [], "\n".join(failures[:10])
    assert reached == []
    assert rss < RSS_LIMIT_KIB, f"VmRSS {rss} KiB"
    assert healthy(tnet, proxy, ca)
    row.passed = True
