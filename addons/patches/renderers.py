"""mitmproxy's client-side error renderers, answering with a reason (both runtimes).

mitmproxy answers an upstream failure from inside its HTTP/1 and HTTP/2 layers with an HTML
page, no reason header, and `Server: mitmproxy <version>`; there is no hook for it. These
wrappers only change how the refusal looks (status 502 or 504, `X-Proxy-Error`, a plain-text
body, no Server header); they never forward anything. If a target changed, the patch is skipped
and mitmproxy's own page goes out instead: still a refusal.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from addons import upstream_errors
from addons.patches import registry
from addons.patches.registry import Patch, Scope

H1_SEND = "mitmproxy.proxy.layers.http._http1:Http1Server.send"
H2_HANDLE = "mitmproxy.proxy.layers.http._http2:Http2Server._handle_event"
H1_ERROR_PAGE = "mitmproxy.proxy.layers.http._http1:make_error_response"


def _h1_send(self, event):
    if (
        isinstance(event, ResponseProtocolError)
        and event.code in upstream_errors.UPSTREAM_CODES
        and not self.response
        and self.conn.state & ConnectionState.CAN_WRITE
    ):
        status, reason = upstream_errors.fault_for(self.context.client.id, event.message)
        response = http.Response.make(
            status,
            upstream_errors.body(status, reason),
            {
                "X-Proxy-Error": reason,
                "Content-Type": "text/plain; charset=utf-8",
                "Connection": "close",
            },
        )
        yield commands.SendData(self.conn, _http1.http1.assemble_response(response))
        yield commands.CloseConnection(self.conn)
        return
    yield from _ORIGINAL_H1_SEND(self, event)


def _h2_handle(self, event):
    if (
        isinstance(event, ResponseProtocolError)
        and event.code.http_status_code() is not None
        and not self.is_closed(event.stream_id)
        and self.is_open_for_us(event.stream_id)
        and not self.h2_conn.streams[event.stream_id].state_machine.headers_sent
    ):
        if event.code in upstream_errors.UPSTREAM_CODES:
            status, reason = upstream_errors.fault_for(self.context.client.id, event.message)
            payload = upstream_errors.body(status, reason)
            headers = [
                (b"x-proxy-error", reason.encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
            ]
        else:  # mitmproxy's own page, without its Server header
            status = event.code.http_status_code() or 502
            payload = _http2.format_error(status, event.message)
            headers = [(b"content-type", b"text/html")]
        self.h2_conn.send_headers(
            event.stream_id,
            [(b":status", b"%d" % status), *headers, (b"content-length", b"%d" % len(payload))],
        )
        self.h2_conn.send_data(event.stream_id, payload, end_stream=True)
        data = self.h2_conn.data_to_send()
        if data:
            yield commands.SendData(self.conn, data)
        return
    yield from _ORIGINAL_H2_HANDLE(self, event)


def _error_page_without_server(status_code: int, message: str = "") -> bytes:
    """mitmproxy's `_http1.make_error_response`, without the Server header."""
    response = http.Response.make(
        status_code,
        _http1.format_error(status_code, message),
        {"Connection": "close", "Content-Type": "text/html"},
    )
    return _http1.http1.assemble_response(response)


_ORIGINAL_H1_SEND = registry.original(H1_SEND)
_ORIGINAL_H2_HANDLE = registry.original(H2_HANDLE)


def patches() -> list[Patch]:
    return [
        Patch(
            "upstream-fault-h1",
            H1_SEND,
            "cc218a1337c0f5cfba087b270eab789eea877c9a5201eaf22f2b8927efcce85c",
            _h1_send,
            "an upstream failure answers HTTP/1 clients 502/504 with X-Proxy-Error",
            Scope.BOTH,
        ),
        Patch(
            "upstream-fault-h2",
            H2_HANDLE,
            "7282fa18e70a3eaac6f66a4b06dccafa34576a5bfe79feae6b2b212b42165b3c",
            _h2_handle,
            "the same for HTTP/2 streams, and mitmproxy's other error pages without Server",
            Scope.BOTH,
        ),
        Patch(
            "error-page-without-server",
            H1_ERROR_PAGE,
            "03ce75ab62e8e78ba1bc19e735d55a520bf878929c32866868dd234996b4b281",
            _error_page_without_server,
            "responses the proxy makes itself do not announce `Server: mitmproxy <version>`",
            Scope.BOTH,
        ),
    ]
