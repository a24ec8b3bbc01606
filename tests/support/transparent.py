"""A private network namespace in which TCP from the client uid is redirected to the proxy's
transparent listener, as the pod's egress lock does.

Inside it: the real upstream at 10.77.0.1 / fd77::1 (hypercorn over TLS on 443 and plain HTTP on
80, behind counting relays), decoys at 10.77.0.3 / fd77::3 (the address a client dials; they
accept, count and record, never answer), and nftables rules that redirect every TCP connection
of uid 1000 to anything but loopback to :TRANSPARENT_PORT. The proxy runs as root, so its own
upstream connections leave unredirected. Nothing here reaches outside the namespace.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.support.ipnetns import Namespace
from tests.support.processes import ManagedProcess, wait_until
from tests.support.proxy import Proxy

UPSTREAM_V4, DECOY_V4 = "10.77.0.1", "10.77.0.3"
UPSTREAM_V6, DECOY_V6 = "fd77::1", "fd77::3"
FORBIDDEN_V4 = "127.0.0.2"  # private.test: a name the policy lists, an address it forbids
CLIENT_UID = 1000
TRANSPARENT_PORT = 8082
DECOY_PORTS = (443, 80, 8443)
# hypercorn inside the namespace, on its loopback; the counting relays front it.
UPSTREAM_TLS_PORT, UPSTREAM_PLAIN_PORT = 9443, 9080
UPSTREAM_NAMES = ["allowed.test", "denied.test", "www.wild.test", "private.test"]

HOSTS = f"""\
127.0.0.1 localhost
::1 localhost
{UPSTREAM_V4} allowed.test denied.test www.wild.test
{UPSTREAM_V6} allowed.test denied.test www.wild.test
{FORBIDDEN_V4} private.test
"""

POLICY = f"""\
version: v1
allowed_domains: ["allowed.test", "*.wild.test", "private.test"]
allowed_ports: [443, 80]
allow_ranges: ["{UPSTREAM_V4}/32", "{UPSTREAM_V6}/128"]
"""

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number


def ruleset(port: int, uid: int = CLIENT_UID) -> str:
    """Every TCP connection of `uid` to a non-loopback address goes to the transparent port."""
    return f"""\
table inet apt_tp {{
    chain output {{
        type nat hook output priority -100; policy accept;
        meta skuid != {uid} return
        ip daddr 127.0.0.0/8 return
        ip6 daddr ::1 return
        meta l4proto tcp redirect to :{port}
    }}
}}
"""


@dataclass
class Connection:
    local: tuple[str, int]
    received: bytearray = field(default_factory=bytearray)


class Listeners:
    """Listening sockets in the namespace that record every accepted connection.

    A listener with a relay target forwards to it (the real upstream); one without is a decoy
    that reads what arrives and never answers."""

    MAX_RECORDED = 64 * 1024

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()

    def listen(self, address: tuple[str, int], relay_to: tuple[str, int] | None = None) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        s = self.ns.make_socket(family)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(512)
        s.settimeout(0.2)
        self._sockets.append(s)
        threading.Thread(target=self._accept, args=(s, relay_to), daemon=True).start()

    def _accept(self, listener: socket.socket, relay_to: tuple[str, int] | None) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection(conn.getsockname()[:2])
            with self._lock:
                self.connections.append(record)
            target = self._relay if relay_to else self._record
            threading.Thread(target=target, args=(conn, record, relay_to), daemon=True).start()

    def _record(self, conn: socket.socket, record: Connection, _relay_to) -> None:
        with conn:
            self._pump(conn, None, record)

    def _relay(self, conn: socket.socket, record: Connection, relay_to: tuple[str, int]) -> None:
        with conn, self.ns.make_socket() as upstream:
            try:
                upstream.connect(relay_to)
            except OSError:
                return
            back = threading.Thread(target=self._pump, args=(upstream, conn, None), daemon=True)
            back.start()
            self._pump(conn, upstream, record)
            back.join(30)

    def _pump(self, src: socket.socket, dst: socket.socket | None, record) -> None:
        src.settimeout(30)
        try:
            while chunk := src.recv(65536):
                if record is not None and len(record.received) < self.MAX_RECORDED:
                    record.received += chunk
                if dst is not None:
                    dst.sendall(chunk)
        except OSError:
            pass
        if dst is not None:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        with self._lock:
            self.connections.clear()

    def to(self, hosts: Sequence[str]) -> list[Connection]:
        with self._lock:
            return [c for c in self.connections if c.local[0] in hosts]

    def close(self) -> None:
        self._stop.set()
        for s in self._sockets:
            s.close()


@dataclass
class TransparentNet:
    ns: Namespace
    workdir: Path
    public: Path  # world-readable: files the uid-1000 clients read
    hosts_file: Path
    policy: Path
    ca: trustme.CA
    ca_pem: Path
    listeners: Listeners
    upstream: ManagedProcess | None = None

    @property
    def decoys(self) -> list[Connection]:
        return self.listeners.to((DECOY_V4, DECOY_V6))

    @property
    def upstream_connections(self) -> list[Connection]:
        return self.listeners.to((UPSTREAM_V4, UPSTREAM_V6))

    def reached(self) -> list[Connection]:
        """Every connection any listener here accepted since the last reset: the upstream, the
        decoys, and the forbidden loopback address private.test names."""
        return self.listeners.to((UPSTREAM_V4, UPSTREAM_V6, DECOY_V4, DECOY_V6, FORBIDDEN_V4))

    def proxy(self, kind: str, port: int = TRANSPARENT_PORT, *extra: str) -> Proxy:
        """A proxy (not yet started) in the namespace: regular listener and transparent v4 + v6."""
        work = self.workdir / f"proxy-{kind}"
        work.mkdir(exist_ok=True)
        modes = ["--mode", "regular"]
        modes += ["--mode", f"transparent@127.0.0.1:{port}", "--mode", f"transparent@::1:{port}"]
        return Proxy(
            kind,
            work,
            self.hosts_file,
            self.ca_pem,
            self.policy,
            [*modes, *extra],
            ip_netns=self.ns.name,
        )

    def publish(self, path: Path, name: str) -> Path:
        """A copy of `path` the client uid can read."""
        copy = self.public / name
        shutil.copyfile(path, copy)
        copy.chmod(0o644)
        return copy

    def curl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        """curl as the client uid inside the namespace, ignoring any proxy variables."""
        command = ["setpriv", "--reuid", str(CLIENT_UID), "--regid", str(CLIENT_UID)]
        command += ["--clear-groups", "curl", "--silent", "--show-error", "--noproxy", "*"]
        command += ["--max-time", str(timeout), *args]
        return self.ns.run(command, timeout=timeout + 5, env={"PATH": "/usr/bin:/bin"})

    def connect(self, host: str, port: int, timeout: float = 10) -> socket.socket:
        """A TCP connection from the client uid: redirected unless `host` is loopback."""
        return self.ns.connect((host, port), uid=CLIENT_UID, timeout=timeout)

    def close(self) -> None:
        self.listeners.close()
        if self.upstream is not None:
            self.upstream.stop()
        self.ns.delete()
        shutil.rmtree(self.public, ignore_errors=True)


def make_net(workdir: Path, port: int = TRANSPARENT_PORT, upstream: bool = True) -> TransparentNet:
    workdir.mkdir(parents=True, exist_ok=True)
    ns = Namespace()
    try:
        return _populate(ns, workdir, port, upstream)
    except BaseException:
        ns.delete()
        raise


def _populate(ns: Namespace, workdir: Path, port: int, with_upstream: bool) -> TransparentNet:
    # The kernel here has no dummy module: a veth pair with both ends in the namespace.
    ns.ip("link", "add", "tp0", "type", "veth", "peer", "name", "tp1")
    for link in ("tp0", "tp1"):
        ns.ip("link", "set", link, "up")
    for address in (UPSTREAM_V4, DECOY_V4):
        ns.ip("addr", "add", f"{address}/24", "dev", "tp0")
    for address in (UPSTREAM_V6, DECOY_V6):
        ns.ip("-6", "addr", "add", f"{address}/64", "dev", "tp0", "nodad")
    # Stray lookups stay inside the namespace (nothing listens there).
    ns.write_etc("resolv.conf", "nameserver 127.0.0.1\n")
    applied = ns.run(["nft", "-f", "-"], input=ruleset(port))
    if applied.returncode != 0:
        raise RuntimeError(f"nft failed in {ns.name}: {applied.stderr}")
    hosts = workdir / "hosts"
    hosts.write_text(HOSTS)
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    ca = trustme.CA()
    ca_pem = workdir / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    public = Path(tempfile.mkdtemp(prefix="apt-tp-public-"))
    public.chmod(0o755)
    net = TransparentNet(ns, workdir, public, hosts, policy, ca, ca_pem, Listeners(ns))
    for host in (DECOY_V4, DECOY_V6):
        for decoy_port in DECOY_PORTS:
            net.listeners.listen((host, decoy_port))
    for host in (UPSTREAM_V4, UPSTREAM_V6):
        net.listeners.listen((host, 8443))  # a port the policy does not allow
    for forbidden_port in (443, 80):
        net.listeners.listen((FORBIDDEN_V4, forbidden_port))
    if with_upstream:
        for host in (UPSTREAM_V4, UPSTREAM_V6):
            net.listeners.listen((host, 443), ("127.0.0.1", UPSTREAM_TLS_PORT))
            net.listeners.listen((host, 80), ("127.0.0.1", UPSTREAM_PLAIN_PORT))
        net.upstream = _start_upstream(net)
    return net


def _start_upstream(net: TransparentNet) -> ManagedProcess:
    leaf = net.ca.issue_cert(*UPSTREAM_NAMES)
    cert, key = net.workdir / "upstream.crt", net.workdir / "upstream.key"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    command = [
        *net.ns.exec_prefix(),
        str(Path(sys.executable).parent / "hypercorn"),
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        "--bind",
        f"127.0.0.1:{UPSTREAM_TLS_PORT}",
        "--insecure-bind",
        f"127.0.0.1:{UPSTREAM_PLAIN_PORT}",
        "tests.support.upstream_app:app",
    ]
    process = ManagedProcess(command, net.workdir, "tp-upstream")

    def listening() -> bool:
        if not process.alive():
            return True
        try:
            net.ns.connect(("127.0.0.1", UPSTREAM_TLS_PORT), timeout=0.5).close()
            net.ns.connect(("127.0.0.1", UPSTREAM_PLAIN_PORT), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(listening, 30, "the upstream in the namespace")
    if not process.alive():
        raise RuntimeError(process.describe())
    return process


def original_destination(conn: socket.socket) -> tuple[str, int]:
    """SO_ORIGINAL_DST of an accepted, redirected connection."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack("!H", raw[2:4])[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def tls_context(ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def wait_for(check, timeout: float = 5.0):
    """The first truthy result of `check()` within `timeout` seconds, else the last (falsy) one."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(0.05)
        result = check()
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class TlsClient:
    """Python's TLS client over a socket through memory BIOs, so a test controls how the bytes
    are written (one byte per write) and can replace the ClientHello's SNI bytes."""

    def __init__(self, sock: socket.socket, sni: str | None, ca: Path | None) -> None:
        context = tls_context(ca)
        if sni is None or ca is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=sni)

    def hello(self) -> bytes:
        """The ClientHello, not yet sent."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self._out.read()

    def handshake(self, hello: bytes | None = None, split: bool = False) -> None:
        """Send `hello` (or the real one), byte by byte when `split`, and finish the handshake.
        Raises ConnectionError or ssl.SSLError when the server closes or refuses it."""
        data = self.hello() if hello is None else hello
        if split:
            send_split(self.sock, data)
        else:
            self.sock.sendall(data)
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the TLS handshake")
            self._in.write(chunk)
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sock.sendall(self._out.read())
                continue
            self.sock.sendall(self._out.read())
            return

    def request(self, data: bytes, wait: float = 10) -> bytes:
        """Send `data`, return what comes back until the server closes or `wait` passes."""
        self.tls.write(data)
        self.sock.sendall(self._out.read())
        reply = bytearray()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            self._in.write(chunk)
            try:
                while piece := self.tls.read(65536):
                    reply += piece
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
            except ssl.SSLError:
                break
            if _complete(bytes(reply)):
                break
        return bytes(reply)


def send_split(sock: socket.socket, data: bytes, gap: float = 0.001) -> None:
    """One byte per segment (no Nagle, a pause between), so the proxy reads them apart."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        time.sleep(gap)


def _complete(reply: bytes) -> bool:
    """A whole HTTP/1 response with Content-Length has arrived."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def hello_with_sni(sni: bytes) -> bytes:
    """A real ClientHello whose SNI bytes are exactly `sni`, NUL or over-long labels included:
    made for a placeholder name of the same length, then those bytes replaced."""
    labels, rest = [], len(sni)
    while rest > 0:
        size = min(rest, 40)
        labels.append("p" * (size - 1) if rest > size else "p" * size)
        rest -= size
    placeholder = ".".join(labels)[: len(sni)]
    placeholder = placeholder + "p" * (len(sni) - len(placeholder))
    assert len(placeholder) == len(sni)
    with socket.socket() as unused:
        hello = TlsClient(unused, placeholder, None).hello()
    assert hello.count(placeholder.encode()) == 1
    return hello.replace(placeholder.encode(), sni)


def http_status(reply: bytes) -> tuple[int | None, dict[str, str]]:
    """Status code and lower-cased headers of an HTTP/1 reply (None when there is none)."""
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None, {}
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers
