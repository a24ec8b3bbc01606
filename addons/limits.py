"""Bounds on what clients can hold: connections, time to send a request, certificates minted.

- `max_connections`: client connections admitted at once. A connection beyond it is answered,
  at its first request, with a 503 `too-many-connections` and closed; it gets only
  `REFUSED_DEADLINE` seconds to send that request, so refused connections do not hold descriptors.
  Beyond `CEILING_FACTOR` times the cap a new connection is closed at once, before it is read.
- `client_header_timeout`: whenever a connection has no request in flight (it just connected, a
  CONNECT was approved, or its last response finished or failed), the client must send a complete
  request head within this many seconds, or it is closed. This ends slowloris, idle and half-open
  connections, and a head dripped on a keep-alive connection or inside a tunnel; it also closes an
  idle keep-alive connection (HTTP/1 or HTTP/2) after this many seconds. While a request the proxy
  accepted is in flight (waiting on the upstream, streaming a body), the deadline does not close
  the connection; a refused request must still have its body sent within it. A WebSocket is no
  longer waiting for heads and has no deadline.
- `cert_cache_size`: leaf certificates kept by mitmproxy's CertStore (its STORE_CAP).
- The open-file limit is raised so that the cap, its refused connections, their upstreams and the
  health port all fit; when the hard limit does not allow that, the cap is lowered to what fits.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import certs, ctx, exceptions, http

from addons import accept_errors, events
from addons.core import limits as core_limits
from addons.core import reasons
from addons.descriptors import CEILING_FACTOR, raise_fd_limit

logger = logging.getLogger(__name__)

TOO_MANY_CONNECTIONS = reasons.TOO_MANY_CONNECTIONS.name
REQUEST_TOO_LARGE = reasons.REQUEST_TOO_LARGE.name

# mitmproxy reads a request head of any size; these bound what is forwarded (the core decides).
MAX_REQUEST_TARGET = core_limits.MAX_REQUEST_TARGET
MAX_HEADER_BYTES = core_limits.MAX_HEADER_BYTES
MAX_HEADER_COUNT = core_limits.MAX_HEADER_COUNT

# Sized for the sidecar's 128Mi limit: an idle tunnel holds about 150 KiB (two TLS sessions and
# mitmproxy's per-connection state) on top of about 60 MiB at rest.
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 30
DEFAULT_CERT_CACHE = certs.CertStore.STORE_CAP
# Seconds a connection over the cap has to send the request that its 503 answers.
REFUSED_DEADLINE = 2
# mitmproxy's flow.metadata key that Allowlist._deny sets on a request it refused.
DENIED = "auth_proxy_denied"


def close_client(client_id: str, why: str) -> bool:
    """Close a client connection the way mitmproxy's own inactivity timeout does."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client_id) if proxyserver else None
    transport = handler.transports.get(handler.client) if handler else None
    if transport is None or transport.handler is None:
        return False
    transport.handler.cancel(why)
    return True


class ConnectionLimits:
    def __init__(self) -> None:
        self.admitted: set[str] = set()
        self.refused: set[str] = set()
        # max_connections as enforced: lowered when the open-file limit cannot hold it.
        self.cap = DEFAULT_MAX_CONNECTIONS
        self._running = False
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # Requests whose head arrived and whose response has not finished, per client.
        self._in_flight: dict[str, dict[str, http.HTTPFlow]] = {}
        # Clients that became a WebSocket: no more heads to wait for.
        self._upgraded: set[str] = set()
        self.accept_errors = accept_errors.AcceptErrorLog()
        self.refused_total = 0
        self.closed_over_ceiling = 0
        self.header_timeouts = 0

    # -- options -------------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option(
            "max_connections",
            int,
            DEFAULT_MAX_CONNECTIONS,
            "Client connections served at once (lowered to fit the open-file limit); beyond it a connection's request gets a 503 too-many-connections within 2 seconds, and beyond twice it the connection is closed at once.",
        )
        loader.add_option(
            "client_header_timeout",
            int,
            DEFAULT_HEADER_TIMEOUT,
            "Seconds a client has to send a complete request head whenever none is in flight (after connecting, after a CONNECT, after each response); slower (slowloris, idle, half-open) connections are closed, and idle keep-alive connections too. WebSockets are exempt. 0 disables.",
        )
        loader.add_option(
            "cert_cache_size",
            int,
            DEFAULT_CERT_CACHE,
            "Leaf certificates kept in memory (mitmproxy's CertStore); older ones are dropped and minted again when needed.",
        )

    def configure(self, updated: set[str]) -> None:
        if "cert_cache_size" in updated:
            size = ctx.options.cert_cache_size
            if size < 1:
                raise exceptions.OptionsError(
                    f"cert_cache_size={size}: must be at least 1. Fix: --set cert_cache_size=100"
                )
            # CertStore.expire reads the class attribute; a new store (confdir change) keeps it.
            certs.CertStore.STORE_CAP = size
        if "max_connections" in updated:
            if ctx.options.max_connections < 1:
                raise exceptions.OptionsError(
                    f"max_connections={ctx.options.max_connections}: must be at least 1"
                )
            self.cap = ctx.options.max_connections
            if self._running:
                self.cap = raise_fd_limit(self.cap)

    def running(self) -> None:
        self._running = True
        self.cap = raise_fd_limit(ctx.options.max_connections)
        self.accept_errors.install(asyncio.get_running_loop())

    # -- connections ---------------------------------------------------------------------------

    def done(self) -> None:
        self.cancel_all()

    def client_connected(self, client) -> None:
        try:
            self._admit(client)
        except Exception:
            logger.exception("connection accounting failed; refusing the connection")
            client.error = "auth-proxy: policy-error"

    def _admit(self, client) -> None:
        if self.open_connections >= self.cap * CEILING_FACTOR:
            # Far over the cap: mitmproxy closes a client whose error is set before reading it.
            self.refused_total += 1
            self.closed_over_ceiling += 1
            client.error = f"auth-proxy: {TOO_MANY_CONNECTIONS}"
            return
        if len(self.admitted) >= self.cap:
            self.refused.add(client.id)
            self.refused_total += 1
        else:
            self.admitted.add(client.id)
        self._arm(client.id)

    def client_disconnected(self, client) -> None:
        self.admitted.discard(client.id)
        self.refused.discard(client.id)
        self._in_flight.pop(client.id, None)
        self._upgraded.discard(client.id)
        self._disarm(client.id)

    @property
    def open_connections(self) -> int:
        return len(self.admitted) + len(self.refused)

    def is_over_cap(self, client_id: str) -> bool:
        """Whether this connection came over the cap (its requests get a 503)."""
        return client_id in self.refused

    # Hooks: run after the allowlist's, so a refused request is already marked.

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and not flow.error:
            self.request_seen(flow, connect=True)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.request_seen(flow, connect=False)

    def response(self, flow: http.HTTPFlow) -> None:
        self.request_done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.request_done(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self.websocket_started(flow)

    # -- the client deadline: every request head, not only the first ----------------------------

    def request_seen(self, flow: http.HTTPFlow, connect: bool) -> None:
        """A complete request head arrived. After an approved CONNECT, the first request in the
        tunnel gets a fresh deadline; any other head is in flight until its response finishes.

        The deadline restarts rather than stops: if this request is refused, the client must
        still send its body in time; if it is accepted, the deadline spares it (`_expire`)."""
        client_id = flow.client_conn.id
        if not connect:
            self._in_flight.setdefault(client_id, {})[flow.id] = flow
        self._arm(client_id)

    def request_done(self, flow: http.HTTPFlow) -> None:
        """A response finished or a request failed: with nothing accepted left in flight, the
        connection waits for its next head, within a fresh deadline."""
        client_id = flow.client_conn.id
        pending = self._in_flight.get(client_id)
        if pending is None or pending.pop(flow.id, None) is None:
            return
        if not pending:
            del self._in_flight[client_id]
        if not self._serving(client_id):
            self._arm(client_id)

    def websocket_started(self, flow: http.HTTPFlow) -> None:
        """A WebSocket reads frames, not heads: its connection has no header deadline any more."""
        client_id = flow.client_conn.id
        self._upgraded.add(client_id)
        self._in_flight.pop(client_id, None)
        self._disarm(client_id)

    def _serving(self, client_id: str) -> bool:
        """Whether a request the proxy accepted is in flight (refused ones wait on the client)."""
        pending = self._in_flight.get(client_id, {})
        return any(DENIED not in f.metadata for f in pending.values())

    def _arm(self, client_id: str) -> None:
        self._disarm(client_id)
        if client_id in self._upgraded:
            return
        seconds = ctx.options.client_header_timeout
        if client_id in self.refused:
            # Refused anyway: a short deadline, even with the header timeout off, so that
            # connections over the cap give their descriptors back quickly.
            seconds = min(seconds, REFUSED_DEADLINE) if seconds > 0 else REFUSED_DEADLINE
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
            if self._serving(client_id):
                return  # request_done arms a fresh deadline when it finishes
            if close_client(client_id, "client-header-timeout"):
                self.header_timeouts += 1
                events.emit("client-timeout", reason="client-header-timeout", client=client_id)
        except Exception:  # a timer must never take the loop down
            logger.exception("closing a slow client failed")

    def cancel_all(self) -> None:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        self.accept_errors.uninstall()
        self._running = False

    # -- metrics -------------------------------------------------------------------------------

    def cert_cache_entries(self) -> int:
        tlsconfig = ctx.master.addons.get("tlsconfig")
        store = getattr(tlsconfig, "certstore", None)
        return len(store.certs) if store is not None else 0

    def render_open(self) -> str:
        return (
            "# HELP auth_proxy_open_connections Client connections open now.\n"
            "# TYPE auth_proxy_open_connections gauge\n"
            f"auth_proxy_open_connections {self.open_connections}\n"
        )

    def render_metrics(self) -> str:
        lines = [
            "# HELP auth_proxy_connections_refused_total Client connections refused over max_connections.",
            "# TYPE auth_proxy_connections_refused_total counter",
            f"auth_proxy_connections_refused_total {self.refused_total}",
            "# HELP auth_proxy_connections_closed_unread_total Client connections closed at once, far over max_connections.",
            "# TYPE auth_proxy_connections_closed_unread_total counter",
            f"auth_proxy_connections_closed_unread_total {self.closed_over_ceiling}",
            "# HELP auth_proxy_max_connections Client connections admitted at once (max_connections, lowered to fit the open-file limit).",
            "# TYPE auth_proxy_max_connections gauge",
            f"auth_proxy_max_connections {self.cap}",
            "# HELP auth_proxy_accept_errors_total Failed accepts for lack of descriptors or memory.",
            "# TYPE auth_proxy_accept_errors_total counter",
            f"auth_proxy_accept_errors_total {self.accept_errors.total}",
            "# HELP auth_proxy_client_header_timeouts_total Clients closed for sending no request in time.",
            "# TYPE auth_proxy_client_header_timeouts_total counter",
            f"auth_proxy_client_header_timeouts_total {self.header_timeouts}",
            "# HELP auth_proxy_cert_cache_entries Leaf certificates in mitmproxy's cache.",
            "# TYPE auth_proxy_cert_cache_entries gauge",
            f"auth_proxy_cert_cache_entries {self.cert_cache_entries()}",
        ]
        return "\n".join(lines) + "\n"
