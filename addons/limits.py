"""Bounds on what clients can hold: connections, time to send a request, certificates minted.

- `max_connections`: client connections admitted at once. A connection beyond it is answered,
  at its first request, with a 503 `too-many-connections` and closed.
- `client_header_timeout`: a client must send a complete request (a CONNECT, or a request in the
  tunnel after one) within this many seconds of connecting, or it is closed. This ends slowloris,
  idle and half-open connections that never get as far as a request. Idle keep-alive connections
  that did send requests are closed after mitmproxy's own `tcp_timeout`.
- `cert_cache_size`: leaf certificates kept by mitmproxy's CertStore (its STORE_CAP).
"""

from __future__ import annotations

import asyncio
import logging
import resource

from mitmproxy import certs, ctx, http

from addons import events, policy

logger = logging.getLogger(__name__)

TOO_MANY_CONNECTIONS = "too-many-connections"
SHUTTING_DOWN = "shutting-down"
REQUEST_TOO_LARGE = "request-too-large"
STATUS_FOR_REASON = {TOO_MANY_CONNECTIONS: 503, SHUTTING_DOWN: 503, REQUEST_TOO_LARGE: 431}

# mitmproxy reads a request head of any size; these bound what is forwarded.
MAX_REQUEST_TARGET = 16 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 200

# Sized for the sidecar's 128Mi limit: an idle tunnel holds about 150 KiB (two TLS sessions and
# mitmproxy's per-connection state) on top of about 60 MiB at rest.
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 30
DEFAULT_CERT_CACHE = certs.CertStore.STORE_CAP
# File descriptors per admitted client: its own socket and one upstream, with room to spare.
FDS_PER_CONNECTION = 3


def close_client(client_id: str, why: str) -> bool:
    """Close a client connection the way mitmproxy's own inactivity timeout does."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client_id) if proxyserver else None
    transport = handler.transports.get(handler.client) if handler else None
    if transport is None or transport.handler is None:
        return False
    transport.handler.cancel(why)
    return True


def raise_fd_limit(connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) so the cap, not the fds, binds."""
    want = connections * FDS_PER_CONNECTION + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        logger.warning(f"cannot raise the open-file limit to {target}: {e}")
    if target < want:
        logger.warning(
            f"open-file limit {target} is low for max_connections={connections}. "
            "Fix: raise `ulimit -n`, or lower --set max_connections"
        )


def request_shape_refusal(flow: http.HTTPFlow) -> str | None:
    """A reason to refuse a request for its shape alone: an oversized target or head, or an
    HTTP/1 request that names no Host (the Host binding needs one)."""
    request = flow.request
    if len(request.data.path) > MAX_REQUEST_TARGET:
        return REQUEST_TOO_LARGE
    fields = request.headers.fields
    if len(fields) > MAX_HEADER_COUNT or sum(len(k) + len(v) for k, v in fields) > MAX_HEADER_BYTES:
        return REQUEST_TOO_LARGE
    if request.http_version.startswith("HTTP/1") and "host" not in request.headers:
        return policy.HOST_MISMATCH
    return None


class ConnectionLimits:
    def __init__(self) -> None:
        self.admitted: set[str] = set()
        self.refused: set[str] = set()
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self.refused_total = 0
        self.header_timeouts = 0

    # -- options -------------------------------------------------------------------------------

    def configure(self, updated: set[str]) -> None:
        if "cert_cache_size" in updated:
            size = ctx.options.cert_cache_size
            if size < 1:
                from mitmproxy import exceptions

                raise exceptions.OptionsError(
                    f"cert_cache_size={size}: must be at least 1. Fix: --set cert_cache_size=100"
                )
            # CertStore.expire reads the class attribute; a new store (confdir change) keeps it.
            certs.CertStore.STORE_CAP = size
        if "max_connections" in updated and ctx.options.max_connections < 1:
            from mitmproxy import exceptions

            raise exceptions.OptionsError(
                f"max_connections={ctx.options.max_connections}: must be at least 1"
            )

    def running(self) -> None:
        raise_fd_limit(ctx.options.max_connections)

    # -- connections ---------------------------------------------------------------------------

    def client_connected(self, client) -> None:
        if len(self.admitted) >= ctx.options.max_connections:
            self.refused.add(client.id)
            self.refused_total += 1
        else:
            self.admitted.add(client.id)
        self._arm(client.id)

    def client_disconnected(self, client) -> None:
        self.admitted.discard(client.id)
        self.refused.discard(client.id)
        self._disarm(client.id)

    @property
    def open_connections(self) -> int:
        return len(self.admitted) + len(self.refused)

    def refusal(self, flow: http.HTTPFlow) -> str | None:
        """The reason to refuse this connection's request before any decision, if any."""
        if flow.client_conn.id in self.refused:
            return TOO_MANY_CONNECTIONS
        return None

    def request_seen(self, flow: http.HTTPFlow, connect: bool) -> None:
        """A complete request head arrived. After a CONNECT, the first request in the tunnel
        gets a fresh deadline; after any other request, the deadline is over."""
        if connect and flow.response is None:
            self._arm(flow.client_conn.id)
        else:
            self._disarm(flow.client_conn.id)

    def _arm(self, client_id: str) -> None:
        self._disarm(client_id)
        seconds = ctx.options.client_header_timeout
        if seconds > 0:
            loop = asyncio.get_running_loop()
            self._deadlines[client_id] = loop.call_later(seconds, self._expire, client_id)

    def _disarm(self, client_id: str) -> None:
        timer = self._deadlines.pop(client_id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client_id: str) -> None:
        self._deadlines.pop(client_id, None)
        try:
            if close_client(client_id, "client-header-timeout"):
                self.header_timeouts += 1
                events.emit("client-timeout", reason="client-header-timeout", client=client_id)
        except Exception:  # a timer must never take the loop down
            logger.exception("closing a slow client failed")

    def cancel_all(self) -> None:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()

    # -- metrics -------------------------------------------------------------------------------

    def cert_cache_entries(self) -> int:
        tlsconfig = ctx.master.addons.get("tlsconfig")
        store = getattr(tlsconfig, "certstore", None)
        return len(store.certs) if store is not None else 0

    def render_metrics(self) -> str:
        lines = [
            "# HELP auth_proxy_connections_refused_total Client connections refused over max_connections.",
            "# TYPE auth_proxy_connections_refused_total counter",
            f"auth_proxy_connections_refused_total {self.refused_total}",
            "# HELP auth_proxy_client_header_timeouts_total Clients closed for sending no request in time.",
            "# TYPE auth_proxy_client_header_timeouts_total counter",
            f"auth_proxy_client_header_timeouts_total {self.header_timeouts}",
            "# HELP auth_proxy_cert_cache_entries Leaf certificates in mitmproxy's cache.",
            "# TYPE auth_proxy_cert_cache_entries gauge",
            f"auth_proxy_cert_cache_entries {self.cert_cache_entries()}",
        ]
        return "\n".join(lines) + "\n"
