"""Upstreams that misbehave, on 127.0.0.1, run in a thread of the test process.

- `refused_port()`: a port where nothing listens (connect is refused).
- `HangingServer(tls=...)`: accepts, (optionally) completes TLS, reads the request and never
  answers; records every byte it received.
- `BadCertServer`: a TLS server whose certificate the proxy must reject (expired, wrong name,
  signed by an untrusted CA); answers 200 if anyone ever gets through, so a test can tell.
- `CutServer`: answers with a Content-Length it does not honour, closing halfway.

Every thread is bounded: sockets time out and loops stop on `close()`.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import trustme


def refused_port() -> int:
    """A loopback port that was free a moment ago and has no listener."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """Accept loop in a thread; each connection handled in its own thread, bounded in time."""

    CONNECTION_SECONDS = 60.0

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            t = threading.Thread(target=self._guarded, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _guarded(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        try:
            if self.context is not None:
                conn.settimeout(5)
                conn = self.context.wrap_socket(conn, server_side=True)
                conn.settimeout(0.5)
            self.handle(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def read_some(self, conn: socket.socket) -> bytes:
        try:
            data = conn.recv(65536)
        except TimeoutError:
            return b""
        self.received += data
        return data

    def handle(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._accept.join(5)
        self.server.close()
        for t in self._threads:
            t.join(2)


class HangingServer(_Server):
    """Accepts, reads, never answers (until closed or CONNECTION_SECONDS pass)."""

    def handle(self, conn: socket.socket) -> None:
        for _ in range(int(self.CONNECTION_SECONDS / 0.5)):
            if self._stop.is_set():
                return
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            self.received += data


class AnsweringServer(_Server):
    """Answers every request with 200 "reached" (a bad-cert server that must never be reached)."""

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        for _ in range(20):
            if self._stop.is_set():
                return
            data = self.read_some(conn)
            buf += data
            if b"\r\n\r\n" in buf:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nreached"
                )
                return


class CutServer(_Server):
    """Promises `size` bytes and closes after `size // 2`: a download cut off halfway."""

    def __init__(self, context: ssl.SSLContext | None, size: int) -> None:
        self.size = size
        super().__init__(context)

    def handle(self, conn: socket.socket) -> None:
        buf = b""
        for _ in range(20):
            buf += self.read_some(conn)
            if b"\r\n\r\n" in buf:
                break
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n".encode()
            + b"x" * (self.size // 2)
        )


def server_context(ca: trustme.CA, *names: str, expired: bool = False) -> ssl.SSLContext:
    now = datetime.datetime.now(datetime.UTC)
    kwargs = {}
    if expired:
        kwargs = {
            "not_before": now - datetime.timedelta(days=30),
            "not_after": now - datetime.timedelta(days=1),
        }
    leaf = ca.issue_cert(*names, **kwargs)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def bad_cert_servers(trusted: trustme.CA, name: str) -> dict[str, AnsweringServer]:
    """One server per way a certificate can be wrong, each for the host `name`."""
    return {
        "expired": AnsweringServer(server_context(trusted, name, expired=True)),
        "wrong-name": AnsweringServer(server_context(trusted, "someone-else.invalid")),
        "untrusted-ca": AnsweringServer(server_context(trustme.CA(), name)),
    }


def write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
