"""The DNS listener (`--set dns_listen=127.0.0.1:P --set dns_listen=::1:P`, our own sockets,
not mitmproxy's DNS mode), in both runtimes, in a network namespace of its own whose only name
server (127.0.0.1:53) counts every query it gets: A/AAAA for allowed names are answered from the
proxy's own resolver, and every refused or denied query is answered by the proxy without any
query leaving. Then the listener itself: a client idle longer than mitmproxy's UDP timeout, one
socket for many queries, TCP pipelining, cut and empty frames, the idle timeout, the connection
cap, start-up refusals, and a script that breaks (the port closes)."""

from __future__ import annotations

import contextlib
import random
import select
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import dns_client as dns
from tests.support.netns import DNS_PORT, CountingNameServer, Netns, NetnsProxy, start_dns_proxy
from tests.support.processes import wait_until
from tests.support.proxy import PROXY_COMMANDS, REPO
from tests.support.testnet import LoopbackNet

TRANSPORTS = ("udp", "tcp")


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netns]:
    ns = Netns(tmp_path_factory.mktemp("dns-netns"))
    yield ns
    ns.stop()


@pytest.fixture(scope="module")
def counter(netns: Netns) -> Iterator[CountingNameServer]:
    server = CountingNameServer(netns)
    yield server
    server.close()


@pytest.fixture(scope="module")
def dns_proxy(
    proxy_kind: str,
    netns: Netns,
    counter: CountingNameServer,
    testnet: LoopbackNet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NetnsProxy]:
    workdir = tmp_path_factory.mktemp(f"dns-{proxy_kind}")
    proxy = start_dns_proxy(proxy_kind, workdir, netns, testnet.ca_pem)
    yield proxy
    proxy.stop()


def ask(proxy: NetnsProxy, name, qtype: int = dns.A, transport: str = "udp", **options):
    return dns.ask(proxy.dns_port, name, qtype, transport, sockets=proxy.sockets, **options)


def dns_decisions(proxy: NetnsProxy) -> list[dict]:
    return [e for e in proxy.events("decision") if e.get("protocol") == "dns"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("name", "qtype", "addresses"),
    [
        pytest.param("upstream.test", dns.A, ["127.0.0.1"], id="a"),
        pytest.param("UpStream.TEST.", dns.A, ["127.0.0.1"], id="a-odd-case-trailing-dot"),
        pytest.param("www.wild.test", dns.A, ["127.0.0.1"], id="a-wildcard"),
        pytest.param("six.test", dns.AAAA, ["2001:4860:4860::8888"], id="aaaa"),
        # Resolved, but to addresses outside allow_ranges: NOERROR with no records.
        pytest.param("private.test", dns.A, [], id="private-removed"),
        pytest.param("metadata.test", dns.A, [], id="metadata-removed"),
        pytest.param("mapped.test", dns.AAAA, [], id="v4-mapped-loopback-removed"),
    ],
)
def test_allowed_names_are_answered_from_the_proxys_resolver(
    dns_proxy: NetnsProxy, transport: str, name: str, qtype: int, addresses: list[str]
) -> None:
    answer = ask(dns_proxy, name, qtype, transport)
    assert answer.rcode == dns.NOERROR
    assert answer.addresses() == addresses
    assert all(ttl == 30 for _, ttl, _ in answer.records)
    wanted = "allowed" if addresses else "blocked-address"
    assert wait_until_logged(dns_proxy, name.lower().rstrip("."), wanted)


def wait_until_logged(proxy: NetnsProxy, host: str, reason: str) -> bool:
    def logged() -> bool:
        return any(
            e["reason"] == reason and e.get("host", "").lower().rstrip(".") == host
            for e in dns_decisions(proxy)
        )

    wait_until(logged, 10, f"a dns decision line for {host} ({reason})")
    return True


def refused_queries() -> list[tuple[str, bytes, int, str]]:
    """(id, packet, expected rcode, reason): every query the proxy must answer itself."""
    token = f"{random.getrandbits(48):x}"
    allowed = "upstream.test"
    rows: list[tuple[str, bytes, int, str]] = []
    for label, qtype in (
        ("txt", dns.TXT),
        ("mx", dns.MX),
        ("any", dns.ANY),
        ("null", dns.NULL),
        ("srv", dns.SRV),
        ("https", dns.HTTPS),
        ("svcb", dns.SVCB),
        ("cname", dns.CNAME),
        ("ns", dns.NS),
    ):
        rows.append((f"{label}-allowed-name", dns.query(allowed, qtype), dns.REFUSED, "refused"))
    rows += [
        ("ptr", dns.query("1.0.0.127.in-addr.arpa", dns.PTR), dns.REFUSED, "refused"),
        ("class-chaos", dns.query(allowed, dns.A, qclass=3), dns.REFUSED, "refused"),
        (
            "two-questions",
            dns.query(questions=[dns.question(allowed), dns.question(f"{token}.evil.test")]),
            dns.REFUSED,
            "refused",
        ),
        ("zero-questions", dns.query(questions=[]), dns.REFUSED, "refused"),
        ("opcode-notify", dns.query(allowed, opcode=4), dns.REFUSED, "refused"),
        ("not-allowed", dns.query(f"{token}.evil.test"), dns.NXDOMAIN, "blocked-by-allowlist"),
        ("not-allowed-aaaa", dns.query(f"{token}.evil.test", dns.AAAA), dns.NXDOMAIN, "blocked"),
        ("exfil-label", dns.query(f"{'ab' * 31}.{token}.evil.test"), dns.NXDOMAIN, "blocked"),
        ("wildcard-apex", dns.query("wild.test"), dns.NXDOMAIN, "blocked"),
        ("suffix-trick", dns.query(f"upstream.test.{token}.evil"), dns.NXDOMAIN, "blocked"),
        ("ip-literal-name", dns.query("127.0.0.1"), dns.NXDOMAIN, "blocked"),
        ("edns-not-allowed", dns.query(f"{token}.evil.test", edns=True), dns.NXDOMAIN, "blocked"),
    ]
    return rows


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_and_denied_queries_never_leave(
    dns_proxy: NetnsProxy, counter: CountingNameServer, transport: str
) -> None:
    counter.reset()
    exchange = dns.udp_exchange if transport == "udp" else dns.tcp_exchange
    for case, packet, rcode, _ in refused_queries():
        reply = exchange(DNS_PORT, packet, sockets=dns_proxy.sockets)
        assert reply is not None, f"{case}: no answer over {transport}"
        answer = dns.parse(reply)
        assert answer.qid == struct.unpack_from("!H", packet)[0], case
        assert (answer.rcode, answer.records) == (rcode, []), case
    assert counter.queries == 0, "a refused or denied query reached the name server"
    reasons = {e["reason"] for e in dns_decisions(dns_proxy)}
    assert {"dns-query-refused", "blocked-by-allowlist"} <= reasons


def test_decision_lines_and_metrics(dns_proxy: NetnsProxy) -> None:
    ask(dns_proxy, "upstream.test", dns.TXT)
    ask(dns_proxy, "upstream.test")
    wait_until_logged(dns_proxy, "upstream.test", "dns-query-refused")
    lines = [e for e in dns_decisions(dns_proxy) if e.get("host") == "upstream.test"]
    txt = next(e for e in lines if e["qtype"] == "TXT")
    assert (txt["allow"], txt["reason"]) == (False, "dns-query-refused")
    a = next(e for e in lines if e["qtype"] == "A")
    assert (a["allow"], a["reason"], a["rule"]) == (True, "allowed", "upstream.test")
    assert a["client"].startswith("127.0.0.1:")
    metrics = dns_proxy.health("/metrics")[1]
    assert 'auth_proxy_decisions_total{result="deny",reason="dns-query-refused"}' in metrics


def hostile_packets() -> list[tuple[str, str, bytes]]:
    marker = b"SECRETMARKER"
    good = dns.query("upstream.test")
    loop = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    return [
        ("udp", "garbage", marker * 20),
        ("udp", "empty", b""),
        ("udp", "header-only", good[:12]),
        ("udp", "truncated-question", good[:-3]),
        ("udp", "compression-loop", loop),
        ("udp", "label-over-63", good[:12] + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01"),
        ("udp", "non-idna-label", good[:12] + b"\x04\xff" + marker[:3] + b"\x00\x00\x01\x00\x01"),
        ("udp", "counts-lie", struct.pack("!HHHHHH", 9, 0x0100, 65535, 65535, 0, 0) + marker),
        ("udp", "oversized-datagram", good + marker * 5000),
        ("tcp", "zero-length-prefix", b"\x00\x00" + good),
        ("tcp", "oversized-prefix-short-body", b"\xff\xff" + marker),
        ("tcp", "prefix-longer-than-body", struct.pack("!H", len(good) + 50) + good),
        ("tcp", "garbage-framed", struct.pack("!H", 40) + marker * 3 + b"0000"),
        ("tcp", "odd-byte", b"\x00"),
    ]


def send_hostile(proxy: NetnsProxy, transport: str, payload: bytes, wait: float = 0.3) -> None:
    """Send, then read whatever comes back within `wait` (an answer, a close, or nothing)."""
    if transport == "udp":
        with proxy.sockets(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(wait)
            s.sendto(payload, ("127.0.0.1", proxy.dns_port))
            with contextlib.suppress(TimeoutError):
                s.recv(65535)
        return
    with proxy.sockets(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(wait)
        s.connect(("127.0.0.1", proxy.dns_port))
        s.sendall(payload)
        with contextlib.suppress(TimeoutError, ConnectionError):
            s.recv(65535)


def test_hostile_packets_do_not_harm_the_proxy(
    dns_proxy: NetnsProxy, counter: CountingNameServer
) -> None:
    counter.reset()
    for transport, _, payload in hostile_packets():
        send_hostile(dns_proxy, transport, payload)
    assert dns_proxy.process is not None and dns_proxy.process.alive()
    assert dns_proxy.health("/healthz")[0] == 200
    for transport in TRANSPORTS:
        assert ask(dns_proxy, "upstream.test", transport=transport).addresses() == ["127.0.0.1"]
    assert counter.queries == 0
    assert "SECRETMARKER" not in dns_proxy.logs(), "client bytes reached a log line"


def test_a_flood_of_random_names_is_answered_in_bounded_memory(
    dns_proxy: NetnsProxy, counter: CountingNameServer
) -> None:
    """One socket, random names and ids (nothing may be kept per query, name or client), then
    many sockets."""
    counter.reset()
    before = dns_proxy.vm("VmRSS")
    window, total, answered = 32, 8000, 0
    with dns_proxy.sockets(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for batch in range(total // window):
            for i in range(window):
                name = f"{random.getrandbits(64):x}.flood.evil.test"
                qid = batch * window + i  # all different: the most flows one socket can hold
                s.sendto(dns.query(name, qid=qid), ("127.0.0.1", DNS_PORT))
            for _ in range(window):
                try:
                    answered += dns.parse(s.recv(512)).rcode == dns.NXDOMAIN
                except TimeoutError:
                    break
    for _ in range(200):
        reply = dns.udp_exchange(
            DNS_PORT, dns.query(f"{random.getrandbits(64):x}.evil.test"), 3, dns_proxy.sockets
        )
        answered += reply is not None
    grown = dns_proxy.vm("VmRSS") - before
    assert answered >= 0.99 * (total // window * window + 200)
    assert grown < 6 * 1024, f"RSS grew by {grown} KiB under the flood"
    assert dns_proxy.vm("VmHWM") < 128 * 1024
    assert counter.queries == 0


# -- the listener: addresses, readiness, one socket, TCP framing and bounds -----------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ipv6_loopback_is_answered_from_the_address_queried(
    dns_proxy: NetnsProxy, transport: str
) -> None:
    answer = ask(dns_proxy, "upstream.test", transport=transport, host="::1")
    assert answer.addresses() == ["127.0.0.1"]
    with dns_proxy.sockets(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(dns.query("upstream.test"), ("::1", DNS_PORT))
        _, source = s.recvfrom(512)
    assert source[:2] == ("::1", DNS_PORT)


def test_readyz_lists_the_dns_listener(dns_proxy: NetnsProxy) -> None:
    status, body = dns_proxy.readyz()
    assert status == 200, body
    assert body["listeners"][f"dns@127.0.0.1:{DNS_PORT}"] is True
    assert body["listeners"][f"dns@[::1]:{DNS_PORT}"] is True


def mixed_queries(count: int) -> list[tuple[bytes, int]]:
    """(query, expected rcode): allowed, denied and refused, each with its own id."""
    kinds = [("upstream.test", dns.A, dns.NOERROR), ("no.evil.test", dns.A, dns.NXDOMAIN)]
    kinds.append(("upstream.test", dns.TXT, dns.REFUSED))
    return [
        (dns.query(name, qtype, qid=i), rcode)
        for i, (name, qtype, rcode) in ((i, kinds[i % 3]) for i in range(count))
    ]


def test_one_udp_socket_for_many_queries(dns_proxy: NetnsProxy) -> None:
    """As c-ares and Node do: one socket, one source port, every query answered."""
    with dns_proxy.sockets(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        for packet, rcode in mixed_queries(300):
            s.sendto(packet, ("127.0.0.1", DNS_PORT))
            answer = dns.parse(s.recv(512))
            assert (answer.qid, answer.rcode) == (struct.unpack_from("!H", packet)[0], rcode)


def frame(packet: bytes) -> bytes:
    return struct.pack("!H", len(packet)) + packet


def read_frames(s: socket.socket, count: int) -> list[bytes]:
    data, frames = b"", []
    while len(frames) < count:
        while len(data) >= 2 and len(data) >= 2 + struct.unpack_from("!H", data)[0]:
            length = struct.unpack_from("!H", data)[0]
            frames.append(data[2 : 2 + length])
            data = data[2 + length :]
        if len(frames) >= count:
            break
        chunk = s.recv(65535)
        if not chunk:
            break
        data += chunk
    return frames


def test_tcp_pipelined_queries_are_all_answered(dns_proxy: NetnsProxy) -> None:
    """30 queries in one write, on one connection, then 30 more on the same one."""
    with dns_proxy.sockets(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", DNS_PORT))
        for _ in range(2):
            queries = mixed_queries(30)
            s.sendall(b"".join(frame(packet) for packet, _ in queries))
            answers = {a.qid: a.rcode for a in map(dns.parse, read_frames(s, len(queries)))}
            assert answers == {struct.unpack_from("!H", p)[0]: rcode for p, rcode in queries}


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        while s.recv(65535):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@pytest.mark.parametrize(
    ("sent", "eof", "answers"),
    [
        pytest.param(b"\x00\x00", False, 0, id="zero-length"),
        pytest.param(frame(dns.query("upstream.test")) + b"\x00\x00", False, 1, id="after-a-query"),
        pytest.param(
            b"\x00\x00" + frame(dns.query("upstream.test")), False, 0, id="query-after-zero"
        ),
        pytest.param(struct.pack("!H", 100) + b"x" * 20, True, 0, id="truncated"),
        pytest.param(frame(dns.query("upstream.test")) + b"\x00", True, 1, id="half-prefix"),
        pytest.param(b"\xff\xff" + b"SECRETMARKER", True, 0, id="longest-prefix-short-body"),
    ],
)
def test_tcp_zero_length_and_truncated_frames_close_the_connection(
    dns_proxy: NetnsProxy, sent: bytes, eof: bool, answers: int
) -> None:
    """What came before is answered; then the connection closes at once (not at the idle
    timeout), and nothing after an empty frame is answered."""
    with dns_proxy.sockets(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", DNS_PORT))
        s.sendall(sent)
        if eof:
            s.shutdown(socket.SHUT_WR)
        assert len(read_frames(s, answers)) == answers
        assert closed_within(s, 3), "the connection stayed open"


def tcp_connections(proxy: NetnsProxy) -> int:
    for line in proxy.health("/metrics")[1].splitlines():
        if line.startswith("auth_proxy_dns_tcp_connections "):
            return int(line.split()[1])
    raise AssertionError("no auth_proxy_dns_tcp_connections in /metrics")


TCP_CAP = 64


def test_too_many_tcp_connections(dns_proxy: NetnsProxy) -> None:
    """At the cap, a new connection takes the place of the one idle longest; the rest stay."""
    wait_until(lambda: tcp_connections(dns_proxy) == 0, 15, "earlier DNS connections to close")
    held: list[socket.socket] = []
    try:
        for _ in range(TCP_CAP):
            s = dns_proxy.sockets(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.connect(("127.0.0.1", DNS_PORT))
            s.sendall(b"\x00")  # half a length prefix: a connection that owes nothing
        wait_until(lambda: tcp_connections(dns_proxy) == TCP_CAP, 10, "every connection admitted")
        answer = dns.parse(
            dns.tcp_exchange(DNS_PORT, dns.query("upstream.test"), 5, dns_proxy.sockets) or b""
        )
        assert answer.addresses() == ["127.0.0.1"]
        assert closed_within(held[0], 3), "the longest idle connection was not closed at the cap"
        readable, _, _ = select.select(held[1:], [], [], 0.3)
        assert readable == [], "a connection other than the longest idle one was closed"
        assert tcp_connections(dns_proxy) <= TCP_CAP
    finally:
        for s in held:
            s.close()


# -- one long wait, both runtimes at once ---------------------------------------------------------

# mitmproxy 12.3.1's UDP server (mitmproxy_rs) stops answering a client address and port once it
# has been idle about 20 s; the TCP idle timeout is 10 s.
IDLE_WAIT = 26.0
TCP_IDLE = 10.0


def idle_clients(proxy: NetnsProxy) -> dict[str, socket.socket]:
    udp = proxy.sockets(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))  # one fixed source port, for the whole test
    udp.settimeout(3)
    udp.sendto(dns.query("upstream.test", qid=1), ("127.0.0.1", proxy.dns_port))
    assert dns.parse(udp.recv(512)).addresses() == ["127.0.0.1"]
    answered = proxy.sockets(socket.AF_INET, socket.SOCK_STREAM)
    answered.connect(("127.0.0.1", proxy.dns_port))
    answered.sendall(frame(dns.query("upstream.test")))
    answered.settimeout(5)
    assert len(read_frames(answered, 1)) == 1
    dripped = proxy.sockets(socket.AF_INET, socket.SOCK_STREAM)
    dripped.connect(("127.0.0.1", proxy.dns_port))
    dripped.sendall(struct.pack("!H", 40) + b"abc")  # a frame that never completes
    return {"udp": udp, "tcp-idle": answered, "tcp-dripped": dripped}


def test_idle_clients_udp_still_answered_after_mitmproxys_timeout_tcp_closed(
    netns: Netns, testnet: LoopbackNet, tmp_path: Path
) -> None:
    """The suite's one long wait, for both runtimes at once: a UDP socket bound to one port is
    answered, left idle for longer than mitmproxy's UDP server keeps a client, and answered
    again; meanwhile an idle TCP connection and one whose frame never completes are closed at
    the idle timeout."""
    ports = {"auth-proxy": DNS_PORT + 2, "mitmdump": DNS_PORT + 3}
    proxies = [
        start_dns_proxy(
            kind, tmp_path / kind, netns, testnet.ca_pem, wait_ready=False, dns_port=port
        )
        for kind, port in ports.items()
    ]
    sockets: list[socket.socket] = []
    try:
        for proxy in proxies:
            wait_until(proxy.ready_or_dead, 30, f"{proxy.kind} /readyz")
            assert proxy.process is not None and proxy.process.alive(), proxy.process
        clients = {proxy.kind: idle_clients(proxy) for proxy in proxies}
        start = time.monotonic()
        sockets = [s for c in clients.values() for s in c.values()]
        closed_at: dict[tuple[str, str], float] = {}
        watched = {
            s: (kind, name) for kind, c in clients.items() for name, s in c.items() if name != "udp"
        }
        while time.monotonic() - start < IDLE_WAIT:
            ready, _, _ = select.select(list(watched), [], [], 0.2)
            for s in ready:
                with contextlib.suppress(ConnectionError):
                    if s.recv(65535):
                        continue
                closed_at[watched.pop(s)] = time.monotonic() - start
        for kind, c in clients.items():
            c["udp"].sendto(dns.query("upstream.test", qid=2), ("127.0.0.1", ports[kind]))
            try:
                answer = dns.parse(c["udp"].recv(512))
            except TimeoutError:
                raise AssertionError(f"{kind}: no answer after {IDLE_WAIT:.0f} s idle") from None
            assert (answer.qid, answer.addresses()) == (2, ["127.0.0.1"]), kind
        for kind in ports:
            for name in ("tcp-idle", "tcp-dripped"):
                when = closed_at.get((kind, name))
                assert when is not None, f"{kind}: {name} connection still open after {IDLE_WAIT} s"
                assert TCP_IDLE - 2 < when < TCP_IDLE + 4, (
                    f"{kind}: {name} closed after {when:.1f} s"
                )
    finally:
        for s in sockets:
            s.close()
        for proxy in proxies:
            proxy.stop()


# -- start-up, and a script that breaks --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--set", "dns_listen=127.0.0.1:53"],
            "DNS listener cannot listen on UDP 127.0.0.1:53",
            id="port-taken",
        ),
        pytest.param(
            ["--mode", "regular", "--mode", f"dns@127.0.0.1:{DNS_PORT + 4}"],
            "--set dns_listen=HOST:PORT for DNS",
            id="mitmproxy-dns-mode",
        ),
        pytest.param(
            ["--set", "dns_listen=localhost:8053"],
            "dns_listen 'localhost:8053': 'localhost' is not an IP address",
            id="not-an-address",
        ),
    ],
)
def test_start_up_fails_with_a_clear_error(
    proxy_kind: str,
    netns: Netns,
    counter: CountingNameServer,
    testnet: LoopbackNet,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    """The counting name server holds 127.0.0.1:53 (UDP and TCP): the port is taken."""
    proxy = start_dns_proxy(
        proxy_kind, tmp_path, netns, testnet.ca_pem, wait_ready=False, extra_args=args
    )
    try:
        assert proxy.process is not None
        wait_until(lambda: not proxy.process.alive(), 30, f"{proxy_kind} to exit")  # type: ignore[union-attr]
        assert proxy.process.proc.returncode != 0
        assert message in proxy.logs(), proxy.process.describe()
    finally:
        proxy.stop()


def refused_at_once(proxy: NetnsProxy, transport: str) -> bool:
    """The port is closed: ICMP port unreachable (UDP) or a reset (TCP), not a timeout."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with proxy.sockets(socket.AF_INET, kind) as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", proxy.dns_port))
            s.send(dns.query("upstream.test") if transport == "udp" else b"\x00")
            s.recv(512)
        except ConnectionRefusedError:
            return True
        except (TimeoutError, ConnectionError):
            return False
    return False


def test_a_broken_script_closes_the_dns_port_and_none_leaves(
    netns: Netns, counter: CountingNameServer, testnet: LoopbackNet, tmp_path: Path
) -> None:
    """mitmdump keeps running when a `-s` script fails to reload, without the script's addons:
    the DNS listener's sockets close with it, so every query is refused by the kernel at once
    and nothing answers or forwards it; a fixed script opens them again. (auth-proxy loads the
    addon as code: it cannot lose it.)"""
    script = tmp_path / "script" / "allowlist.py"
    script.parent.mkdir()
    shutil.copy(REPO / "addons" / "allowlist.py", script)
    good = script.read_text()
    base = [PROXY_COMMANDS["mitmdump"][0], "-s", str(script)]
    proxy = start_dns_proxy(
        "mitmdump", tmp_path / "work", netns, testnet.ca_pem, base, dns_port=DNS_PORT + 1
    )
    try:
        assert ask(proxy, "upstream.test").addresses() == ["127.0.0.1"]
        script.write_text("this is not python (\n")
        wait_until(lambda: "error in script" in proxy.logs(), 15, "mitmproxy to reload the script")
        counter.reset()
        for transport in TRANSPORTS:
            assert refused_at_once(proxy, transport), f"the DNS port is still open ({transport})"
        assert counter.queries == 0, "a query left while the allowlist was not loaded"
        script.write_text(good)
        wait_until(
            lambda: (
                proxy.readyz()[0] == 200
                and proxy.readyz()[1]["listeners"].get(f"dns@127.0.0.1:{DNS_PORT + 1}") is True
            ),
            20,
            "the fixed script's DNS listener",
        )
        for transport in TRANSPORTS:
            assert ask(proxy, "upstream.test", transport=transport).addresses() == ["127.0.0.1"]
    finally:
        proxy.stop()
