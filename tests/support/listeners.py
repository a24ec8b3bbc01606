"""A loopback TCP listener that never answers: it counts the connections it accepts and records
the bytes they send. The upstream that a denied or refused connection must never reach (tests
and the bench both use it)."""

from __future__ import annotations

import socket
import threading

POLL = 0.2
MAX_POLLS_PER_CONNECTION = 50  # 10 s


class TcpSink:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(POLL)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            with conn:
                self._drain(conn)

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(POLL)
        for _ in range(MAX_POLLS_PER_CONNECTION):
            if self._stop.is_set():
                return
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += data

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.close()
