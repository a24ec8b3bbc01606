"""`auth-proxy-lock-egress` applied for real, in private network namespaces, and probed from inside.

Two namespaces per module, joined by a veth pair: POD (the lock goes there, as in a pod's network
namespace) at 10.66.0.2 / fd66::2, and UPSTREAM (the world) at 10.66.0.1 / fd66::1. The command
runs under `ip netns exec POD`, never in the host's namespace. Listeners stand in for the
sidecar's (127.0.0.1 / ::1 : 8082 transparent, 8053 DNS) and for upstream servers; probes run in
a forked child that enters POD and becomes the workload (uid 1000) or the sidecar (uid 10000).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from addons.egress.ruleset import EgressSettings, check_readback, render, rule_count

ROOT = Path(__file__).resolve().parents[2]
LOCK = [sys.executable, "-m", "addons.egress.lock"]
WORKLOAD, SIDECAR = 1000, 10000
TP, DP = 8082, 8053
ARGS = ["--sidecar-uid", str(SIDECAR), "--transparent-port", str(TP), "--dns-port", str(DP)]
UP = {"v4": "10.66.0.1", "v6": "fd66::1"}
POD = {"v4": "10.66.0.2", "v6": "fd66::2"}
LOOP = {"v4": "127.0.0.1", "v6": "::1"}
# Documentation addresses: routed to UPSTREAM, which forwards nothing.
ELSEWHERE = {"v4": "192.0.2.53", "v6": "2001:db8::53"}
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
WAIT = 5.0


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.fail(f"`{name}` is missing: apt-get install iproute2 util-linux nftables")
    return path


def sh(*cmd: str, check: bool = True, env: dict[str, str] | None = None, **kw):
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}: {result.stderr}")
    return result


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- namespaces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    pod: str
    upstream: str

    def nsexec(self, *cmd: str, **kw):
        return sh(_tool("ip"), "netns", "exec", self.pod, *cmd, **kw)

    def lock(self, *extra: str, prefix: tuple[str, ...] = (), **kw):
        return self.nsexec(*prefix, *LOCK, *ARGS, *extra, check=False, **kw)

    def table_exists(self) -> bool:
        listing = self.nsexec(_tool("nft"), "list", "tables", check=True).stdout
        return "auth_proxy_egress" in listing


@contextlib.contextmanager
def namespaces(with_upstream: bool = True) -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.fail("the egress lock tests make network namespaces: run them as root")
    ip = _tool("ip")
    tag = uuid.uuid4().hex[:6]
    pod, upstream = f"apt-egress-{tag}-p", f"apt-egress-{tag}-u"
    made: list[str] = []
    try:
        for ns in (pod, upstream) if with_upstream else (pod,):
            sh(ip, "netns", "add", ns)
            made.append(ns)
            sh(ip, "-n", ns, "link", "set", "lo", "up")
            sh(ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
            sh(ip, "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0")
        sh(ip, "netns", "exec", pod, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        if with_upstream:
            a, b = f"eg{tag}p", f"eg{tag}u"
            sh(ip, "link", "add", a, "netns", pod, "type", "veth", "peer", "name", b, "netns", upstream)  # fmt: skip
            for ns, dev, key in ((pod, a, POD), (upstream, b, UP)):
                sh(ip, "-n", ns, "addr", "add", f"{key['v4']}/24", "dev", dev)
                sh(ip, "-n", ns, "addr", "add", f"{key['v6']}/64", "dev", dev, "nodad")
                sh(ip, "-n", ns, "link", "set", dev, "up")
            # As in a pod, every address routes out; UPSTREAM forwards nothing further.
            sh(ip, "-n", pod, "route", "add", "default", "via", UP["v4"])
            sh(ip, "-n", pod, "-6", "route", "add", "default", "via", UP["v6"])
        yield Net(pod, upstream)
    finally:
        for ns in made:
            sh(ip, "netns", "del", ns, check=False)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace `ns`: sockets made there stay there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        yield
    finally:
        os.setns(home, os.CLONE_NEWNET)
        os.close(target)
        os.close(home)


# --- listeners (in the test process) ------------------------------------------------------------


class Listeners:
    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def make(self, ns: str, kind: int, host: str, port: int, proto: int = 0) -> socket.socket:
        with inside(ns):
            s = socket.socket(family(host), kind, proto)
            self.sockets.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            if kind == socket.SOCK_STREAM:
                s.listen(16)
        s.setblocking(False)
        return s

    def tcp(self, ns: str, host: str, port: int) -> socket.socket:
        return self.make(ns, socket.SOCK_STREAM, host, port)

    def udp(self, ns: str, host: str, port: int) -> socket.socket:
        return self.make(ns, socket.SOCK_DGRAM, host, port)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture
def listen() -> Iterator[Listeners]:
    listeners = Listeners()
    yield listeners
    listeners.close()


def ready(s: socket.socket, timeout: float) -> bool:
    return bool(select.select([s], [], [], timeout)[0])


def accept(s: socket.socket, timeout: float = WAIT) -> socket.socket | None:
    if not ready(s, timeout):
        return None
    conn, _ = s.accept()
    conn.settimeout(WAIT)
    return conn


def count(s: socket.socket, settle: float = 0.3) -> int:
    """Connections waiting on a TCP listener, or datagrams on a UDP/raw socket."""
    n = 0
    for _ in range(1000):
        if not ready(s, settle):
            return n
        if s.type == socket.SOCK_STREAM:
            s.accept()[0].close()
        else:
            s.recv(65535)
        n += 1
    return n


def original_dst(conn: socket.socket) -> tuple[str, int]:
    if conn.family == socket.AF_INET:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, addr = struct.unpack_from("!H4s", raw, 2)
    else:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port, addr = struct.unpack_from("!H4x16s", raw, 2)
    return socket.inet_ntop(conn.family, addr), port


# --- probes (in a forked child that entered POD and changed uid) -------------------------------


def outcome(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class Child:
    """`fn(*args)` in a forked child, in namespace `ns`, as `uid` (None: stay root)."""

    def __init__(self, ns: str, uid: int | None, fn: Callable[..., dict], *args: object) -> None:
        self.read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns into pytest
            payload: dict = {"error": "did not run"}
            try:
                os.close(self.read)
                fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
                os.setns(fd, os.CLONE_NEWNET)
                if uid is not None:
                    os.setgroups([])
                    os.setresgid(uid, uid, uid)
                    os.setresuid(uid, uid, uid)
                payload = fn(*args)
            except BaseException as exc:
                payload = {"error": repr(exc)}
            finally:
                os.write(write, json.dumps(payload).encode())
                os._exit(0)
        os.close(write)

    def result(self, timeout: float = 15.0) -> dict:
        try:
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not select.select([self.read], [], [], deadline - time.monotonic())[0]:
                    break
                chunk = os.read(self.read, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            if not chunks:
                os.kill(self.pid, 9)
                raise AssertionError(f"probe gave no result in {timeout} s")
            result = json.loads(b"".join(chunks))
            assert "error" not in result, result
            return result
        finally:
            os.waitpid(self.pid, 0)
            os.close(self.read)


def tcp_probe(host: str, port: int) -> dict:
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        s.sendall(b"hello")
        return {"outcome": "connected", "reply": s.recv(16).decode()}
    except OSError as exc:
        return {"outcome": outcome(exc)}
    finally:
        s.close()


def udp_probe(host: str, port: int, connected: bool = True) -> dict:
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(3)
    send_error = None
    try:
        if connected:
            s.connect((host, port))
        try:
            if connected:
                s.send(b"probe")
            else:
                s.sendto(b"probe", (host, port))
        except OSError as exc:
            send_error = outcome(exc)
        data, peer = s.recvfrom(512)
        return {"outcome": "reply", "data": data.decode(), "from": list(peer[:2])}
    except OSError as exc:
        return {"outcome": outcome(exc), "send_error": send_error}
    finally:
        s.close()


def ping_probe(host: str) -> dict:
    v6 = family(host) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    s = socket.socket(family(host), socket.SOCK_DGRAM, proto)
    s.settimeout(2)
    try:
        # The kernel fills in the identifier and the checksum of a ping socket's echo request.
        s.sendto(bytes([128 if v6 else 8, 0, 0, 0, 0, 0, 0, 1]) + b"egress", (host, 0))
        s.recv(512)
        return {"outcome": "reply"}
    except OSError as exc:
        return {"outcome": outcome(exc)}
    finally:
        s.close()


def raw_probe(host: str, proto: int) -> dict:
    s = socket.socket(family(host), socket.SOCK_RAW, proto)
    try:
        s.sendto(b"egress-raw-probe", (host, 0))
        return {"outcome": "sent"}
    except OSError as exc:
        return {"outcome": outcome(exc)}
    finally:
        s.close()


# --- the locked namespace -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked() -> Iterator[Net]:
    with namespaces() as net:
        result = net.lock()
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["event"] == "egress-locked", summary
        assert summary["rules"] == rule_count(EgressSettings(SIDECAR, TP, DP)), summary
        yield net


def test_the_lock_is_verified_idempotent_and_stays_in_its_namespace(locked: Net) -> None:
    again = locked.lock()
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert len(again.stdout.splitlines()) == 1
    tables = json.loads(locked.nsexec(_tool("nft"), "-j", "list", "tables").stdout)["nftables"]
    names = [t["table"]["name"] for t in tables if "table" in t]
    assert names == ["auth_proxy_egress"]
    readback = locked.nsexec(_tool("nft"), "-j", "list", "table", "inet", "auth_proxy_egress")
    assert check_readback(EgressSettings(SIDECAR, TP, DP), json.loads(readback.stdout)) == []
    host = sh(_tool("nft"), "list", "tables").stdout
    assert "auth_proxy_egress" not in host, "the lock reached the host's own ruleset"


TCP_CASES = (
    [pytest.param(UP["v4"], port, "v4", id=f"v4-{port}") for port in (443, 80, 22)]
    + [pytest.param(UP["v6"], port, "v6", id=f"v6-{port}") for port in (443, 80, 22)]
    + [
        # An IPv4 destination spelled as an IPv4-mapped IPv6 address is IPv4 on the wire.
        pytest.param(f"::ffff:{UP['v4']}", 443, "v4", id="v4mapped-443"),
        # The pod's own address is not loopback: it is redirected too.
        pytest.param(POD["v4"], 443, "v4", id="pod-address-443"),
    ]
)


@pytest.mark.parametrize(("host", "port", "fam"), TCP_CASES)
def test_workload_tcp_on_any_port_reaches_the_transparent_listener(
    locked: Net, listen: Listeners, host: str, port: int, fam: str
) -> None:
    transparent = listen.tcp(locked.pod, LOOP[fam], TP)
    upstream = listen.tcp(locked.upstream, UP[fam], port)
    child = Child(locked.pod, WORKLOAD, tcp_probe, host, port)
    conn = accept(transparent)
    assert conn is not None, child.result()
    with conn:
        dialled = host.removeprefix("::ffff:")
        assert original_dst(conn) == (dialled, port)
        assert conn.recv(16) == b"hello"
        conn.sendall(b"proxy")
        assert child.result() == {"outcome": "connected", "reply": "proxy"}
    assert count(upstream) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
@pytest.mark.parametrize("dns_host", ["upstream", "public"])
def test_workload_dns_over_udp_to_any_address_reaches_the_dns_listener(
    locked: Net, listen: Listeners, fam: str, dns_host: str
) -> None:
    server = UP[fam] if dns_host == "upstream" else ELSEWHERE[fam]
    dns = listen.udp(locked.pod, LOOP[fam], DP)
    upstream = listen.udp(locked.upstream, UP[fam], 53)
    child = Child(locked.pod, WORKLOAD, udp_probe, server, 53)
    assert ready(dns, WAIT), child.result()
    query, client = dns.recvfrom(512)
    assert query == b"probe"
    dns.sendto(b"answer", client)
    # The answer comes back from the address the client asked (conntrack undoes the redirect).
    assert child.result() == {"outcome": "reply", "data": "answer", "from": [server, 53]}
    assert count(upstream) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_workload_dns_over_tcp_reaches_the_dns_listener(
    locked: Net, listen: Listeners, fam: str
) -> None:
    dns = listen.tcp(locked.pod, LOOP[fam], DP)
    transparent = listen.tcp(locked.pod, LOOP[fam], TP)
    upstream = listen.tcp(locked.upstream, UP[fam], 53)
    child = Child(locked.pod, WORKLOAD, tcp_probe, UP[fam], 53)
    conn = accept(dns)
    assert conn is not None, child.result()
    with conn:
        assert original_dst(conn) == (UP[fam], 53)
        conn.sendall(b"dns")
        assert child.result()["reply"] == "dns"
    assert count(upstream) == 0 and count(transparent) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
@pytest.mark.parametrize("port", [443, 9999])
def test_workload_udp_is_refused_at_once_and_delivers_nothing(
    locked: Net, listen: Listeners, fam: str, port: int
) -> None:
    upstream = listen.udp(locked.upstream, UP[fam], port)
    started = time.monotonic()
    result = Child(locked.pod, WORKLOAD, udp_probe, UP[fam], port).result()
    # ICMP port-unreachable: the connected socket reports ECONNREFUSED (a silent drop would
    # time out after 3 s); the send itself may already fail with EPERM.
    assert result["outcome"] == "ECONNREFUSED", result
    assert time.monotonic() - started < 2.5
    assert count(upstream) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_workload_unconnected_udp_delivers_nothing(
    locked: Net, listen: Listeners, fam: str
) -> None:
    upstream = listen.udp(locked.upstream, UP[fam], 443)
    result = Child(locked.pod, WORKLOAD, udp_probe, UP[fam], 443, False).result()
    assert result["outcome"] != "reply", result
    assert count(upstream) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_ping_gets_no_reply_but_the_sidecar_gets_one(locked: Net, fam: str) -> None:
    assert Child(locked.pod, WORKLOAD, ping_probe, UP[fam]).result()["outcome"] != "reply"
    assert Child(locked.pod, SIDECAR, ping_probe, UP[fam]).result() == {"outcome": "reply"}


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_other_ip_protocols_are_dropped(locked: Net, listen: Listeners, fam: str) -> None:
    """Raw IP protocol 253 (for experiments), sent by root: root is not the sidecar either."""
    upstream = listen.make(locked.upstream, socket.SOCK_RAW, UP[fam], 0, 253)
    result = Child(locked.pod, None, raw_probe, UP[fam], 253).result()
    assert result["outcome"] in ("sent", "EPERM"), result
    assert count(upstream, settle=0.5) == 0


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_loopback_stays_open(locked: Net, listen: Listeners, fam: str) -> None:
    local = listen.tcp(locked.pod, LOOP[fam], 7000)
    transparent = listen.tcp(locked.pod, LOOP[fam], TP)
    child = Child(locked.pod, WORKLOAD, tcp_probe, LOOP[fam], 7000)
    conn = accept(local)
    assert conn is not None, child.result()
    with conn:
        conn.sendall(b"local")
        assert child.result()["reply"] == "local"
    assert count(transparent) == 0

    echo = listen.udp(locked.pod, LOOP[fam], 7001)
    child = Child(locked.pod, WORKLOAD, udp_probe, LOOP[fam], 7001)
    assert ready(echo, WAIT), child.result()
    data, peer = echo.recvfrom(512)
    echo.sendto(data, peer)
    assert child.result()["outcome"] == "reply"


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_replies_to_inbound_connections_pass(locked: Net, listen: Listeners, fam: str) -> None:
    """A server in the pod (kubelet probes, a dev server) still answers: its replies are
    established traffic, which the NAT chain never sees."""
    server = Child(locked.pod, WORKLOAD, _serve_once, POD[fam], 7002)
    reply = Child(locked.upstream, None, _dial_retrying, POD[fam], 7002).result()
    assert reply == {"outcome": "connected", "reply": "served"}, reply
    assert server.result()["outcome"] == "served"


def _serve_once(host: str, port: int) -> dict:
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1)
    s.settimeout(WAIT)
    try:
        conn, _ = s.accept()
        conn.sendall(b"served")
        conn.close()
        return {"outcome": "served"}
    except OSError as exc:
        return {"outcome": outcome(exc)}
    finally:
        s.close()


def _dial_retrying(host: str, port: int) -> dict:
    """Until the server child listens (at most 2 s)."""
    result: dict = {}
    for _ in range(20):
        result = tcp_probe(host, port)
        if result["outcome"] != "ECONNREFUSED":
            return result
        time.sleep(0.1)
    return result


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_the_sidecar_uid_goes_out_directly(locked: Net, listen: Listeners, fam: str) -> None:
    transparent = listen.tcp(locked.pod, LOOP[fam], TP)
    dns = listen.udp(locked.pod, LOOP[fam], DP)
    upstream_tcp = listen.tcp(locked.upstream, UP[fam], 443)
    child = Child(locked.pod, SIDECAR, tcp_probe, UP[fam], 443)
    conn = accept(upstream_tcp)
    assert conn is not None, child.result()
    with conn:
        conn.sendall(b"there")
        assert child.result()["reply"] == "there"

    for port in (443, 53):  # QUIC and DNS, which the workload cannot send
        upstream_udp = listen.udp(locked.upstream, UP[fam], port)
        child = Child(locked.pod, SIDECAR, udp_probe, UP[fam], port)
        assert ready(upstream_udp, WAIT), child.result()
        data, peer = upstream_udp.recvfrom(512)
        assert data == b"probe"
        upstream_udp.sendto(b"from-" + str(port).encode(), peer)
        assert child.result()["data"] == f"from-{port}"
    assert count(transparent) == 0 and count(dns) == 0


# --- failures -----------------------------------------------------------------------------------


@pytest.fixture
def bare() -> Iterator[Net]:
    with namespaces(with_upstream=False) as net:
        yield net


def test_without_net_admin_it_fails_and_says_so(bare: Net) -> None:
    no_net_admin = (_tool("setpriv"), "--inh-caps=-all", "--bounding-set=-net_admin")
    result = bare.lock(prefix=no_net_admin)
    assert result.returncode == 3, result
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "NET_ADMIN" in result.stderr and "Operation not permitted" in result.stderr
    assert not bare.table_exists()


def _no_nft_path(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir()
    return {"PATH": str(empty), "LANG": "C.UTF-8"}


def test_without_nft_it_fails_and_names_it(bare: Net, tmp_path: Path) -> None:
    result = bare.lock(env=_no_nft_path(tmp_path))
    assert result.returncode == 3, result
    assert "nft binary is not on PATH" in result.stderr and "nftables" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not bare.table_exists()


def test_dry_run_prints_the_ruleset_needs_no_nft_and_changes_nothing(
    bare: Net, tmp_path: Path
) -> None:
    result = bare.lock("--dry-run", env=_no_nft_path(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(EgressSettings(SIDECAR, TP, DP))
    assert "meta skuid 10000 accept" in result.stdout
    assert not bare.table_exists()


def _fake_nft(tmp_path: Path, on_apply: str, on_list: str) -> dict[str, str]:
    """An `nft` that applies nothing: shell snippets for `nft -f -` and `nft -j list ...`."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    nft = bindir / "nft"
    nft.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-f" ]; then cat >/dev/null; ' + on_apply + "; fi\n" + on_list + "\n"
    )
    nft.chmod(nft.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_a_readback_that_differs_fails(locked: Net, bare: Net, tmp_path: Path) -> None:
    real = locked.nsexec(_tool("nft"), "-j", "list", "table", "inet", "auth_proxy_egress").stdout
    doc = json.loads(real)
    # The UDP reject gone (flushed by someone, or never stored).
    doc["nftables"] = [
        i for i in doc["nftables"] if "port-unreachable" not in json.dumps(i.get("rule", {}))
    ]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    env = _fake_nft(tmp_path, "exit 0", f"cat {tampered}")
    result = bare.lock(env=env)
    assert result.returncode == 3, result
    assert "differs from the ruleset" in result.stderr, result.stderr
    assert "reject icmpx port-unreachable" in result.stderr
    assert not bare.table_exists()


def test_a_kernel_without_nat_redirect_is_named(bare: Net, tmp_path: Path) -> None:
    script = render(EgressSettings(SIDECAR, TP, DP)).splitlines()
    line = script.index(f"\t\tmeta l4proto tcp redirect to :{TP}") + 1
    # nft's own wording when the kernel lacks an expression (seen here with `synproxy`).
    message = f"/dev/stdin:{line}:3-36: Error: Could not process rule: Operation not supported"
    env = _fake_nft(tmp_path, f"echo '{message}' >&2; exit 1", "exit 1")
    result = bare.lock(env=env)
    assert result.returncode == 3, result
    assert "NAT redirect" in result.stderr and "CONFIG_NFT_REDIR" in result.stderr, result.stderr
