"""Raw bytes to the proxy: plain, inside a CONNECT tunnel, or inside a TLS tunnel (HTTP/1 or h2).

For hostile-input tests that need to control every byte, including heads that never end."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# How the bytes travel: straight to the proxy, in a CONNECT tunnel, or in TLS inside one.
ROUTES = ("plain", "tunnel", "tls")


@dataclass
class Outcome:
    reply: bytes  # everything the proxy sent back (after the CONNECT reply, if any)
    sent: int  # bytes of the payload the proxy accepted before it closed
    closed: bool  # the proxy ended the connection (FIN or reset) within the wait

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/1\.[01] (\d{3})", self.reply)
        return int(match.group(1)) if match else None


def open_route(
    proxy_port: int,
    route: str,
    target: str,
    ca_cert: Path | None = None,
    alpn: str = "http/1.1",
    timeout: float = 10,
) -> socket.socket:
    """A connection through which the next bytes reach the proxy's HTTP layer over `route`."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    if route == "plain":
        return s
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        s.close()
        raise AssertionError(f"CONNECT {target} refused: {head[:200]!r}")
    if route == "tunnel":
        return s
    assert ca_cert is not None
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols([alpn])
    return context.wrap_socket(s, server_hostname=target.rsplit(":", 1)[0])


def send_and_read(
    s: socket.socket, chunks: Iterable[bytes], wait: float = 10, half_close: bool = False
) -> Outcome:
    """Send `chunks` until the proxy stops taking them, then read until it closes or `wait`."""
    sent, closed = 0, False
    reply = b""
    deadline = time.monotonic() + wait
    s.settimeout(wait)
    try:
        for chunk in chunks:
            if time.monotonic() > deadline:
                break
            s.sendall(chunk)
            sent += len(chunk)
            reply += _drain(s)  # an early answer: stop sending into a closed connection
            if reply:
                break
        if half_close and not isinstance(s, ssl.SSLSocket):
            s.shutdown(socket.SHUT_WR)
    except (ConnectionError, ssl.SSLError, OSError):
        closed = True
    while not closed and time.monotonic() < deadline:
        try:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except (ConnectionError, ssl.SSLError, OSError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        reply += chunk
    s.close()
    return Outcome(reply, sent, closed)


def _drain(s: socket.socket) -> bytes:
    data = b""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (BlockingIOError, ssl.SSLWantReadError):
        pass
    finally:
        s.setblocking(True)
    return data


def exchange(
    proxy_port: int,
    route: str,
    target: str,
    payload: bytes | Iterable[bytes],
    ca_cert: Path | None = None,
    wait: float = 10,
    half_close: bool = False,
) -> Outcome:
    chunks = [payload] if isinstance(payload, bytes) else payload
    s = open_route(proxy_port, route, target, ca_cert)
    return send_and_read(s, chunks, wait=wait, half_close=half_close)


def endless_head(prefix: bytes, total: int, chunk: int = 64 * 1024) -> Iterable[bytes]:
    """`prefix`, then header lines that never end in a blank line, `total` bytes in all."""
    yield prefix
    line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    block = line * max(chunk // len(line), 1)
    for _ in range(max(-(-(total - len(prefix)) // len(block)), 1)):
        yield block


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a process: the most resident memory it ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def read_until_closed(sock: socket.socket, wait: float = 5.0) -> bytes:
    """Whatever comes back until the peer closes or `wait` seconds pass."""
    received = b""
    deadline = time.monotonic() + wait
    sock.settimeout(wait)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        received += chunk
    return received


def is_closed(sock: socket.socket, wait: float) -> bool:
    """Whether the peer closed (EOF or reset) within `wait` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        return True
