"""Faults on the way upstream: a clear status and an `X-Proxy-Error` reason, and a deadline.

mitmproxy answers an upstream failure itself, from inside its protocol layers, with an HTML page
and no reason header: a CONNECT whose eager upstream connection failed (`http_connect_error`
sees that response), and a request whose upstream connection, TLS handshake or response failed
(the HTTP/1 and HTTP/2 client-side layers render a `ResponseProtocolError`). The second has no
hook, so `install()` wraps the two renderers. A wrapped renderer only changes how the refusal
looks (status 502 or 504, a reason header, a plain-text body); it never forwards anything.

`UpstreamDeadlines` gives up on an upstream that accepted a request and then hangs: when no
response headers arrive within `upstream_timeout` seconds of the request being sent, the upstream
connection is closed and the client gets a 504 `upstream-timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.proxy.layers.http._events import ErrorCode

from addons.core import reasons
from addons.limits import DENIED

logger = logging.getLogger(__name__)

UPSTREAM_REFUSED = reasons.UPSTREAM_REFUSED.name
UPSTREAM_UNRESOLVABLE = reasons.UPSTREAM_UNRESOLVABLE.name
UPSTREAM_TLS_ERROR = reasons.UPSTREAM_TLS_ERROR.name
UPSTREAM_TIMEOUT = reasons.UPSTREAM_TIMEOUT.name
UPSTREAM_ERROR = reasons.UPSTREAM_ERROR.name

Fault = tuple[int, str]

# The error codes whose mitmproxy answer is a 502 about the upstream.
UPSTREAM_CODES = (ErrorCode.CONNECT_FAILED, ErrorCode.GENERIC_SERVER_ERROR)

# Faults decided by us for one request, keyed by (client connection id, error message): the
# renderers see only the connection and the message. Entries go when rendered or at disconnect.
_pending: dict[tuple[str, str], Fault] = {}


def _fault(reason: reasons.Reason) -> Fault:
    return reasons.status_of(reason.name), reason.name


def classify(message: str) -> Fault:
    text = message.lower()
    if "certificate" in text or "tls" in text or "ssl" in text or "handshake" in text:
        return _fault(reasons.UPSTREAM_TLS_ERROR)
    if "refused" in text or "connect call failed" in text or "errno 111" in text:
        return _fault(reasons.UPSTREAM_REFUSED)
    if "name or service not known" in text or "nodename" in text or "getaddrinfo" in text:
        return _fault(reasons.UPSTREAM_UNRESOLVABLE)
    if "timed out" in text or "timeout" in text:
        return _fault(reasons.UPSTREAM_TIMEOUT)
    return _fault(reasons.UPSTREAM_ERROR)


def body(status: int, reason: str) -> bytes:
    return f"auth-proxy: upstream failed ({status}): {reason}\n".encode()


def note(client_id: str, message: str, fault: Fault) -> None:
    _pending[(client_id, message)] = fault


def forget_client(client_id: str) -> None:
    for key in [k for k in _pending if k[0] == client_id]:
        _pending.pop(key, None)


def fault_for(client_id: str, message: str) -> Fault:
    return _pending.pop((client_id, message), None) or classify(message)


def mark_connect_error(flow: http.HTTPFlow) -> None:
    """`http_connect_error`: the eager upstream connection of an allowed CONNECT failed."""
    response = flow.response
    if response is None or response.status_code != 502 or "X-Proxy-Error" in response.headers:
        return
    text = response.get_text(strict=False) or ""
    status, reason = classify(text)
    response.status_code = status
    response.reason = "Gateway Timeout" if status == 504 else "Bad Gateway"
    response.headers["X-Proxy-Error"] = reason
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Connection"] = "close"
    response.content = body(status, reason)


# -- renderers ---------------------------------------------------------------------------------


def install() -> None:
    """Wrap mitmproxy's client-side error renderers (addons/patches/renderers.py). Idempotent."""
    from addons.patches import registry, renderers

    registry.apply(renderers.patches())


# -- deadlines ---------------------------------------------------------------------------------


class UpstreamDeadlines:
    """Closes the upstream connection of a request whose response headers are late."""

    def __init__(self, timeout: Callable[[], float]) -> None:
        self._timeout = timeout
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.timeouts = 0

    def started(self, flow: http.HTTPFlow) -> None:
        """The request is on its way upstream (the `request` hook: the body has been sent)."""
        seconds = self._timeout()
        if seconds <= 0 or flow.response is not None or flow.error or not flow.live:
            return
        self.stop(flow)
        loop = asyncio.get_running_loop()
        self._timers[flow.id] = loop.call_later(seconds, self._expire, flow)

    def stop(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, flow: http.HTTPFlow) -> None:
        self._timers.pop(flow.id, None)
        try:
            if flow.response is not None or flow.error or not flow.live:
                return
            proxyserver = ctx.master.addons.get("proxyserver")
            handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
            transport = handler.transports.get(flow.server_conn) if handler else None
            if transport is None or transport.handler is None:
                return
            self.timeouts += 1
            flow.metadata["auth_proxy_fault"] = UPSTREAM_TIMEOUT
            logger.info("upstream %s sent no response in time; closing it", flow.server_conn.id)
            transport.handler.cancel(UPSTREAM_TIMEOUT)
        except Exception:  # a timer must never take the loop down
            logger.exception("upstream deadline failed")

    def error(self, flow: http.HTTPFlow) -> None:
        """The `error` hook runs just before mitmproxy renders the 502: make it ours."""
        self.stop(flow)
        if flow.metadata.get("auth_proxy_fault") == UPSTREAM_TIMEOUT and flow.error:
            note(flow.client_conn.id, flow.error.msg, (504, UPSTREAM_TIMEOUT))

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class UpstreamFaults:
    """Upstream faults answered with a reason, and the upstream deadline (`upstream_timeout`)."""

    def __init__(self) -> None:
        self._deadlines = UpstreamDeadlines(lambda: ctx.options.upstream_timeout)

    def load(self, loader) -> None:
        loader.add_option(
            "upstream_timeout",
            int,
            60,
            "Seconds to wait for an upstream's response headers after sending it a request; then the client gets a 504 upstream-timeout. 0 disables.",
        )

    def running(self) -> None:
        install()

    def done(self) -> None:
        self._deadlines.cancel_all()

    def request(self, flow: http.HTTPFlow) -> None:
        if DENIED not in flow.metadata and flow.response is None:
            self._deadlines.started(flow)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        if DENIED not in flow.metadata:
            mark_connect_error(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._deadlines.stop(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._deadlines.stop(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._deadlines.error(flow)

    def client_disconnected(self, client) -> None:
        forget_client(client.id)
