"""/healthz, /readyz and /metrics on the proxy's own event loop.

Read-only by design: no endpoint here changes any state, so exposing the port to the pod network
(for kubelet probes) gives nothing away but counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
MAX_REQUEST_LINE = 4096


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: dict[str, object]


class HealthServer:
    def __init__(
        self,
        readiness: Callable[[], Readiness],
        metrics: Callable[[], str],
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[asyncio.Server] | None = None

    def start(self, host: str, port: int) -> None:
        """Bind now, so that a taken port fails start-up at once; serve from the event loop.

        Synchronous because mitmproxy calls `running` and `done` synchronously when it
        reloads a script."""
        self._socket = socket.create_server((host, port), family=_family(host), reuse_port=False)
        self._task = asyncio.get_running_loop().create_task(
            asyncio.start_server(self._serve, sock=self._socket, limit=MAX_REQUEST_LINE)
        )
        logger.info("health server listening on %s:%s", host, port)

    def stop(self) -> None:
        if self._task is not None:
            if self._task.done() and not self._task.cancelled() and not self._task.exception():
                self._task.result().close()
            else:
                self._task.cancel()
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _route(self, method: str, path: str) -> tuple[int, str, str]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", "method not allowed: the health port is read-only\n"
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, "text/plain", "ok\n"
        if path == "/readyz":
            readiness = self._readiness()
            body = json.dumps({"ready": readiness.ready, **readiness.detail}) + "\n"
            return (200 if readiness.ready else 503), "application/json", body
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self._metrics()
        return 404, "text/plain", "not found: try /healthz, /readyz or /metrics\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            parts = request_line.decode("latin-1").split()
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", "bad request\n"
                method = "GET"
            else:
                method = parts[0]
                # Headers are read and dropped: nothing here depends on them.
                for _ in range(100):
                    line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                    if line in (b"\r\n", b"\n", b""):
                        break
                status, ctype, body = self._route(method, parts[1])
            payload = body.encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        except Exception:  # a probe must never take the proxy down
            logger.exception("health request failed")
        finally:
            writer.close()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
