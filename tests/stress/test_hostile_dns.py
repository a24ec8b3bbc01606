"""Hostile input on the DNS listener (`dns_listen`), both runtimes: a flood of made-up names (the
tunnel-out-through-DNS pattern), malformed packets over UDP and TCP, and a flood of TCP
connections that never finish a frame. Every query is answered by the proxy, none reaches the
namespace's name server, open connections and descriptors stay within the listener's cap, and
the proxy stays healthy and under 128 MiB (VmHWM) afterwards."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pytest

from tests.integration.test_dns_listener import (
    TCP_CAP,
    hostile_packets,
    send_hostile,
    tcp_connections,
)
from tests.stress.conftest import Report, scale
from tests.support import dns_client as dns
from tests.support.netns import CountingNameServer, Netns, NetnsProxy, start_dns_proxy
from tests.support.testnet import LoopbackNet

FLOOD = scale(3_000, 50_000)
HOSTILE_ROUNDS = scale(2, 30)
CONNECTION_FLOOD = scale(3 * TCP_CAP, 20 * TCP_CAP)
WINDOW = 32
MEMORY_LIMIT_KIB = 128 * 1024


@pytest.fixture(scope="module", params=["auth-proxy", "mitmdump"])
def dns_sidecar(
    request: pytest.FixtureRequest, testnet: LoopbackNet, tmp_path_factory
) -> Iterator[tuple[NetnsProxy, CountingNameServer]]:
    workdir = tmp_path_factory.mktemp(f"hostile-dns-{request.param}")
    netns = Netns(workdir)
    counter = CountingNameServer(netns)
    try:
        proxy = start_dns_proxy(request.param, workdir / "proxy", netns, testnet.ca_pem)
        try:
            yield proxy, counter
        finally:
            proxy.stop()
    finally:
        counter.close()
        netns.stop()


def flood(proxy: NetnsProxy, count: int) -> int:
    """`count` queries for random names under a denied domain (random ids, one socket, WINDOW
    in flight), and as many A/AAAA/TXT mixes under an allowed wildcard's denied sibling."""
    answered = 0
    with proxy.sockets(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(count // WINDOW):
            for _ in range(WINDOW):
                label = f"{random.getrandbits(120):x}"
                qtype = random.choice((dns.A, dns.AAAA, dns.TXT, dns.NULL))
                s.sendto(
                    dns.query(f"{label}.exfil.evil.test", qtype), ("127.0.0.1", proxy.dns_port)
                )
            for _ in range(WINDOW):
                try:
                    answered += dns.parse(s.recv(512)).rcode in (dns.NXDOMAIN, dns.REFUSED)
                except TimeoutError:
                    break
    return answered


def test_random_name_flood(
    dns_sidecar: tuple[NetnsProxy, CountingNameServer], report: Report
) -> None:
    proxy, counter = dns_sidecar
    counter.reset()
    tried = FLOOD // WINDOW * WINDOW
    row = report.add("hostile", f"DNS flood {proxy.kind}", tried=tried)
    answered = flood(proxy, FLOOD)
    row.lost = tried - answered
    row.errors = counter.queries
    peak = proxy.vm("VmHWM")
    row.detail = f"{answered} answered, {counter.queries} left, VmHWM {peak // 1024} MiB"
    assert counter.queries == 0
    assert answered >= 0.99 * tried
    assert peak < MEMORY_LIMIT_KIB
    assert proxy.health("/healthz")[0] == 200
    row.passed = True


def test_hostile_dns_packets(
    dns_sidecar: tuple[NetnsProxy, CountingNameServer], report: Report
) -> None:
    proxy, counter = dns_sidecar
    counter.reset()
    cases = hostile_packets()
    row = report.add("hostile", f"DNS bad packets {proxy.kind}", tried=len(cases) * HOSTILE_ROUNDS)
    for _ in range(HOSTILE_ROUNDS):
        for transport, _, payload in cases:
            send_hostile(proxy, transport, payload, wait=0.1)
    assert proxy.process is not None and proxy.process.alive()
    healthy = proxy.health("/healthz")[0] == 200
    good = dns.ask(proxy.dns_port, "upstream.test", sockets=proxy.sockets).addresses()
    row.errors = counter.queries + (not healthy) + (good != ["127.0.0.1"])
    row.detail = f"{len(cases)} kinds, UDP and TCP; VmHWM {proxy.vm('VmHWM') // 1024} MiB"
    assert counter.queries == 0 and healthy and good == ["127.0.0.1"]
    assert "SECRETMARKER" not in proxy.logs()
    assert proxy.vm("VmHWM") < MEMORY_LIMIT_KIB
    row.passed = True


def test_tcp_connection_flood(
    dns_sidecar: tuple[NetnsProxy, CountingNameServer], report: Report
) -> None:
    """Connections that each send half a length prefix and wait: at the cap each newcomer takes
    the place of the one idle longest, so the proxy holds at most the cap, and a real query
    still gets its answer at once."""
    proxy, counter = dns_sidecar
    counter.reset()
    assert proxy.process is not None
    fds_before = len(os.listdir(f"/proc/{proxy.process.pid}/fd"))
    row = report.add("hostile", f"DNS TCP connection flood {proxy.kind}", tried=CONNECTION_FLOOD)
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(CONNECTION_FLOOD):
            s = proxy.sockets(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            try:
                s.connect(("127.0.0.1", proxy.dns_port))
                s.sendall(b"\x00")
            except OSError:
                refused += 1
        open_now = tcp_connections(proxy)
        fds = len(os.listdir(f"/proc/{proxy.process.pid}/fd")) - fds_before
        answers = [
            dns.ask(proxy.dns_port, "upstream.test", transport=t, sockets=proxy.sockets)
            for t in ("tcp", "udp")
        ]
    finally:
        for s in held:
            s.close()
    good = all(a.addresses() == ["127.0.0.1"] for a in answers)
    healthy = proxy.health("/healthz")[0] == 200
    row.errors = (open_now > TCP_CAP) + (not good) + (not healthy) + counter.queries
    row.detail = f"{open_now} open (cap {TCP_CAP}), +{fds} fds, {refused} refused by the kernel"
    assert open_now <= TCP_CAP and fds <= TCP_CAP + 16
    assert good and healthy and counter.queries == 0
    assert proxy.vm("VmHWM") < MEMORY_LIMIT_KIB
    row.passed = True
