"""Two pyOpenSSL connections talking TLS through memory BIOs, as mitmproxy drives them."""

from __future__ import annotations

import contextlib

import trustme
from OpenSSL import SSL

HOST = "pair.test"


class TlsPair:
    def __init__(
        self,
        server_context: SSL.Context | None = None,
        client_context: SSL.Context | None = None,
    ) -> None:
        ca = trustme.CA()
        self.server = SSL.Connection(server_context or SSL.Context(SSL.TLS_METHOD))
        ca.issue_cert(HOST).configure_cert(self.server)
        self.server.set_accept_state()
        if client_context is None:
            client_context = SSL.Context(SSL.TLS_METHOD)
            client_context.set_verify(SSL.VERIFY_PEER)
            ca.configure_trust(client_context)
        self.client = SSL.Connection(client_context)
        self.client.set_tlsext_host_name(HOST.encode())
        self.client.set_connect_state()

    def pump(self, rounds: int = 20) -> None:
        """Move bytes both ways until neither side has anything to send (bounded)."""
        for _ in range(rounds):
            moved = _move(self.client, self.server) + _move(self.server, self.client)
            if not moved:
                return
        raise AssertionError(f"still moving bytes after {rounds} rounds")

    def handshake(self) -> None:
        for _ in range(20):
            for side in (self.client, self.server):
                with contextlib.suppress(SSL.WantReadError):
                    side.do_handshake()
            self.pump()
            if self.client.get_peer_certificate() is not None and _done(self.server):
                self.pump()
                _done(self.client)  # reads the session tickets that the server sent after it
                return
        raise AssertionError("handshake did not finish")

    def send(self, sender: SSL.Connection, receiver: SSL.Connection, data: bytes) -> bytes:
        sender.sendall(data)
        received = bytearray()
        for _ in range(1000):
            self.pump()
            try:
                received += receiver.recv(65536)
            except SSL.WantReadError:
                break
            if len(received) >= len(data):
                break
        return bytes(received)


def _move(source: SSL.Connection, target: SSL.Connection) -> int:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return 0
    target.bio_write(data)
    return len(data)


def _done(conn: SSL.Connection) -> bool:
    try:
        conn.recv(1)
    except SSL.WantReadError:
        return conn.get_cipher_name() is not None
    return True
