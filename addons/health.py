"""/healthz, /readyz and /metrics on the proxy's own event loop.

Read-only by design: no endpoint here changes any state, so exposing the port to the pod network
(for kubelet probes) gives nothing away but counts.

Reachable from the whole pod network, so it bounds what a client can hold: at most
`MAX_CONNECTIONS` connections at once, each with `REQUEST_DEADLINE` seconds for its whole
exchange (not per line, so a dripped request cannot stretch it). A connection arriving at the cap
takes the place of the oldest one still sending its request (a probe sends its request at once, so
only a flood faster than a probe's round trip can crowd it out); when every slot is writing a
response, the newcomer is closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
# asyncio accepts up to `backlog` connections per wakeup before any handler runs, so this bounds
# the descriptors a flood takes at once; large enough that a probe's SYN is queued, not dropped
# (a dropped SYN is retried only after a second, the default probe timeout).
BACKLOG = 4 * MAX_CONNECTIONS
REQUEST_DEADLINE = 2.0
MAX_REQUEST_LINE = 4096
MAX_HEADER_LINES = 100


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
        # Open connections, oldest first; True while the request is still being read.
        self._open: dict[asyncio.StreamWriter, bool] = {}
        self.closed_at_cap = 0

    def start(self, host: str, port: int) -> None:
        """Bind now, so that a taken port fails start-up at once; serve from the event loop.

        Synchronous because mitmproxy calls `running` and `done` synchronously when it
        reloads a script."""
        self._socket = socket.create_server((host, port), family=_family(host), reuse_port=False)
        self._task = asyncio.get_running_loop().create_task(
            asyncio.start_server(
                self._serve, sock=self._socket, limit=MAX_REQUEST_LINE, backlog=BACKLOG
            )
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

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Make room for a new connection, or refuse it: the cap bounds descriptors held here."""
        if len(self._open) >= MAX_CONNECTIONS:
            oldest = next((w for w, reading in self._open.items() if reading), None)
            self.closed_at_cap += 1
            if oldest is None:
                return False
            del self._open[oldest]
            oldest.transport.abort()
        self._open[writer] = True
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                method, target = await _read_request(reader)
                if writer not in self._open:
                    return  # closed meanwhile to make room for a newer connection
                self._open[writer] = False
                if method is None:
                    status, ctype, body = 400, "text/plain", "bad request\n"
                    method = "GET"
                else:
                    status, ctype, body = self._route(method, target)
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
            self._open.pop(writer, None)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str | None, str]:
    """The method and target of one request; headers are read and dropped (nothing here
    depends on them). (None, "") for a request line that is not three words."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3:
        return None, ""
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            break
    return parts[0], parts[1]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


ReadinessPart = Callable[[], tuple[bool, dict[str, object]]]


class Health:
    """/healthz, /readyz and /metrics, from the parts other addons report."""

    def __init__(self, readiness: list[ReadinessPart], metrics: list[Callable[[], str]]) -> None:
        self._parts = readiness
        self._metrics = metrics
        self._server = HealthServer(self.readiness, self.render_metrics)

    def load(self, loader) -> None:
        loader.add_option("health_host", str, "0.0.0.0", "Address of /healthz, /readyz, /metrics.")
        loader.add_option("health_port", int, 8081, "Port of /healthz, /readyz and /metrics.")

    def running(self) -> None:
        from mitmproxy import ctx

        host, port = ctx.options.health_host, ctx.options.health_port
        try:
            self._server.start(host, port)
        except OSError as e:
            logger.error(
                f"health server cannot listen on {host}:{port}: {e}. "
                "Fix: choose a free --set health_port"
            )

    def done(self) -> None:
        self._server.stop()

    def readiness(self) -> Readiness:
        listeners = _listeners()
        ready = bool(listeners) and all(listeners.values())
        detail: dict[str, object] = {"listening": ready, "listeners": listeners}
        for part in self._parts:
            part_ready, part_detail = part()
            ready = ready and part_ready
            # A part's own listeners (the DNS listener's sockets) join mitmproxy's.
            extra = part_detail.pop("listeners", None)
            if isinstance(extra, dict):
                listeners.update(extra)
                detail["listening"] = detail["listening"] and all(extra.values())
            detail.update(part_detail)
        return Readiness(ready, detail)

    def render_metrics(self) -> str:
        ready = int(self.readiness().ready)
        rendered = "".join(render() for render in self._metrics)
        return rendered + (
            "# HELP auth_proxy_ready Whether /readyz answers 200.\n"
            "# TYPE auth_proxy_ready gauge\n"
            f"auth_proxy_ready {ready}\n"
        )


def _listeners() -> dict[str, bool]:
    """Every configured listener (regular, transparent, DNS) and whether it is up: the proxy is
    ready only when all are, since the pod's rules send traffic to each."""
    from mitmproxy import ctx

    proxyserver = ctx.master.addons.get("proxyserver")
    if not proxyserver or not proxyserver.is_running:
        return {}
    return {server.mode.full_spec: server.is_running for server in proxyserver.servers}
