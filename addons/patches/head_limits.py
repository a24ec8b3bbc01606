"""Request heads are bounded while they are read, not after (issue 12, item 3).

mitmproxy's HTTP/1 server reads a request head into one buffer until a blank line arrives, with no
limit ("FIXME: protect against header size DoS" in `Http1Server.read_headers`): one connection
that never ends its head takes the sidecar past its memory limit, and when the client then
disconnects the whole partial head, `Authorization` values included, is logged with `!r`. The
same buffer also grows without limit while a request waits for its response (pipelined bytes)
and while a chunked body waits for the end of a chunk-size or trailer line.

`install()` patches the HTTP/1 server side (plain-HTTP proxy requests and requests inside CONNECT
tunnels, plain or TLS: all use `Http1Server`) so that after every read:
- a still-unterminated head longer than MAX_HEAD_BYTES, with a first line longer than
  MAX_REQUEST_LINE, or with more than MAX_HEAD_LINES lines is answered 431 with
  `X-Proxy-Error: request-too-large` and closed;
- more than MAX_HEAD_BYTES waiting in the buffer while a request waits for its response, or while
  a chunked body waits for a line, closes the connection (a response may be on its way, so no
  status can be sent; the request ends with a `request-too-large` error);
- a client that disconnects mid-head is logged with a byte count, never the bytes.
Each refusal writes a decision line (`reason: request-too-large`) without any header content.

HTTP/2: h2 bounds a decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE, 64 KiB, advertised and
enforced by hpack), but the encoded HEADERS + CONTINUATION block it collects before decoding is
bounded only by 64 frames of mitmproxy's 128 KiB inbound frame size, 8 MiB per connection. The
patch caps that block at H2_MAX_HEADER_BLOCK; over it, the connection ends with GOAWAY
ENHANCE_YOUR_CALM (HPACK state cannot survive a skipped block, so no per-stream 431 is possible).

Every replaced or relied-upon upstream function is a required entry in the patch registry, with
the SHA-256 of its source: the proxy does not start when the installed mitmproxy or h2 differs,
since the patch relies on exactly how these functions buffer.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator
from typing import Any

import h2.connection
import h2.exceptions
import h2.frame_buffer
from h11._receivebuffer import ReceiveBuffer
from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, RequestProtocolError

from addons import events as event_log
from addons import flows, limits, tls_buffers
from addons.patches import registry
from addons.patches.registry import Patch, Scope
from addons.policy import Decision

logger = logging.getLogger(__name__)

REASON = limits.REQUEST_TOO_LARGE

# The largest head that limits.request_shape_refusal accepts, in wire bytes: a request line (the
# target plus room for a method and a version), the fields, and ": " and CRLF per field. A head
# inside the limits is never refused here; the exact limits still apply once it is parsed.
MAX_REQUEST_LINE = limits.MAX_REQUEST_TARGET + 1024
MAX_HEAD_BYTES = MAX_REQUEST_LINE + limits.MAX_HEADER_BYTES + 4 * limits.MAX_HEADER_COUNT
MAX_HEAD_LINES = limits.MAX_HEADER_COUNT + 1  # the fields and the request line

# RFC 9113 counts 32 bytes per field on top of name and value; an HPACK block that a sane
# encoder makes is never larger than that count (literals cost their length plus a few bytes).
H2_MAX_HEADER_BLOCK = (
    limits.MAX_REQUEST_TARGET + limits.MAX_HEADER_BYTES + 32 * (limits.MAX_HEADER_COUNT + 8)
)

_MARK = "_auth_proxy_head_limits"

# Counts refusals in the addon's decision metrics; replaced on every install (script reloads).
_count: Callable[[Decision], None] | None = None


class HeadTooLarge(h2.exceptions.DenialOfServiceError):
    """An HTTP/2 header block over H2_MAX_HEADER_BLOCK (GOAWAY ENHANCE_YOUR_CALM)."""


# -- the checks (pure) -----------------------------------------------------------------------


_LEADING_BLANK_LINES = re.compile(rb"[\r\n]*")


def head_overflow(buffered: bytes | bytearray) -> str | None:
    """Why an unterminated request head already breaks the limits, or None. Reads the buffer in
    place: a copy per read would be as large as what is being bounded."""
    if len(buffered) > MAX_HEAD_BYTES:
        return f"head over {MAX_HEAD_BYTES} bytes"
    if len(buffered) <= MAX_HEAD_LINES:
        return None  # too short to hold too many lines or too long a first line
    start = _LEADING_BLANK_LINES.match(buffered).end()  # type: ignore[union-attr]
    first_end = buffered.find(b"\n", start, start + MAX_REQUEST_LINE + 1)
    if first_end == -1 and len(buffered) - start > MAX_REQUEST_LINE:
        return f"request line over {MAX_REQUEST_LINE} bytes"
    if buffered.count(b"\n", start) > MAX_HEAD_LINES:
        return f"head over {MAX_HEAD_LINES} lines"
    return None


def buffered_bytes(buf: ReceiveBuffer) -> bytes | bytearray:
    """The bytes in h11's receive buffer, without copying them when h11 allows."""
    data = getattr(buf, "_data", None)
    return data if isinstance(data, bytearray) else bytes(buf)


def refusal_response(why: str) -> bytes:
    response = http.Response.make(
        431,
        f"auth-proxy: request denied: {REASON} ({why})\n",
        {
            "X-Proxy-Error": REASON,
            "Content-Type": "text/plain; charset=utf-8",
            "Connection": "close",
        },
    )
    return http1.assemble_response(response)


def record_refusal(context: Any) -> None:
    """The decision line: the same fields as Allowlist._record, no header content. (Which limit
    was hit goes only to the client, in the 431 body.)"""
    decision = Decision(False, REASON)
    if _count is not None:
        try:
            _count(decision)
        except Exception:  # metrics must never keep a refusal from happening
            logger.exception("counting a request-too-large refusal failed")
    address = getattr(context.server, "address", None)  # the tunnel's target, if any
    event_log.emit(
        "decision",
        allow=False,
        reason=REASON,
        host=flows.printable(str(address[0])) if address else None,
        port=address[1] if address else None,
        sni=flows.printable(context.client.sni) if context.client.sni else None,
        client=flows.client_label(context.client),
    )


_TRIM_INTERVAL = 1.0
_last_trim = 0.0


def give_back_memory() -> None:
    """Return the freed buffers to the OS, at most once a second. A flood of refused heads
    leaves freed ~100 KiB buffers all over glibc's heap, which keeps them (RSS ratchets up with
    each wave) unless asked (see tls_buffers). A trim costs well under a millisecond."""
    global _last_trim
    now = time.monotonic()
    if now - _last_trim >= _TRIM_INTERVAL:
        _last_trim = now
        tls_buffers.give_back_free_memory()


# -- HTTP/1 ------------------------------------------------------------------------------------

Commands = Generator[Any, Any, None]


def _make_http1_handler(original: Callable[..., Commands]) -> Callable[..., Commands]:
    def state_is(self: _http1.Http1Server, *names: str) -> bool:
        # Looked up when called, so a state another patch wrapped later is still recognized.
        current = getattr(self.state, "__func__", None)
        return any(current is getattr(type(self), name, None) for name in names)

    def closed_mid_head(self: _http1.Http1Server) -> Commands:
        # Upstream logs the partial head with !r here: secrets, and megabytes of them.
        if buffered_bytes(self.buf).strip():
            yield commands.Log(
                f"Client closed connection before completing request headers "
                f"(<{len(self.buf)} bytes withheld>)"
            )
        self.buf = ReceiveBuffer()
        yield commands.CloseConnection(self.conn)

    def refuse(self: _http1.Http1Server, why: str, head_pending: bool) -> Commands:
        record_refusal(self.context)
        self.buf = ReceiveBuffer()
        give_back_memory()
        self.state = self.done
        if head_pending:
            yield commands.SendData(self.conn, refusal_response(why))
            yield commands.CloseConnection(self.conn)
            return
        # A request is in flight: its response may have started, so no status can be sent.
        yield commands.CloseConnection(self.conn)
        yield ReceiveHttp(
            RequestProtocolError(
                self.stream_id, f"auth-proxy: {REASON} ({why})", ErrorCode.GENERIC_CLIENT_ERROR
            )
        )

    def guarded_handle_event(self: _http1.Http1Server, event: events.Event) -> Commands:
        if isinstance(event, events.ConnectionClosed) and state_is(self, "read_headers"):
            yield from closed_mid_head(self)
            return
        yield from original(self, event)
        if not isinstance(event, events.DataReceived) or len(self.buf) == 0:
            return
        if state_is(self, "read_headers"):
            why = head_overflow(buffered_bytes(self.buf))
            if why is not None:
                yield from refuse(self, why, head_pending=True)
        elif len(self.buf) > MAX_HEAD_BYTES and state_is(self, "wait", "read_body"):
            what = "pipelined data" if state_is(self, "wait") else "a chunk-size or trailer line"
            yield from refuse(self, f"{what} over {MAX_HEAD_BYTES} bytes", head_pending=False)

    return guarded_handle_event


# -- HTTP/2 ------------------------------------------------------------------------------------


def _make_header_buffer_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded_update_header_buffer(self: h2.frame_buffer.FrameBuffer, frame: Any) -> Any:
        result = original(self, frame)
        pending = self._headers_buffer
        if pending and sum(len(f.data) for f in pending) > H2_MAX_HEADER_BLOCK:
            self._headers_buffer = []
            raise HeadTooLarge(f"header block over {H2_MAX_HEADER_BLOCK} bytes")
        return result

    return guarded_update_header_buffer


def _make_h2_event_handler(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded_handle_h2_event(self: _http2.Http2Server, event: Any) -> Any:
        # h2 raises DenialOfServiceError for our block cap and for hpack's header list cap.
        if isinstance(event, h2.exceptions.DenialOfServiceError):
            record_refusal(self.context)
        return (yield from original(self, event))

    return guarded_handle_h2_event


def _check_h2_settings() -> None:
    """h2 must still advertise and enforce a header list size within the head limits."""
    size = h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
    if not isinstance(size, int) or size > H2_MAX_HEADER_BLOCK:
        raise RuntimeError(
            f"h2's default SETTINGS_MAX_HEADER_LIST_SIZE is {size!r}, over the head limit "
            f"{H2_MAX_HEADER_BLOCK}. Fix: install h2 4.4.1"
        )


# -- the registry entries --------------------------------------------------------------------

HTTP1_EVENTS = "mitmproxy.proxy.layers.http._http1:Http1Connection._handle_event"
HTTP1_SERVER_EVENTS = "mitmproxy.proxy.layers.http._http1:Http1Server._handle_event"
HEADER_BUFFER = "h2.frame_buffer:FrameBuffer._update_header_buffer"
H2_SERVER_EVENTS = "mitmproxy.proxy.layers.http._http2:Http2Server.handle_h2_event"
WHY = "request heads bounded while they are read (issue 12)"


def patches() -> list[Patch]:
    """Required: a different mitmproxy or h2 may buffer differently, which would silently undo
    the bound, so the proxy does not start with one."""
    return [
        Patch(
            "http1-heads-bounded",
            HTTP1_EVENTS,
            "2ac8db3e43ae743fd21f78709327091ff712e8c0addf4466f1f1f972c24750d2",
            _make_http1_handler(registry.original(HTTP1_SERVER_EVENTS)),
            f"HTTP/1 {WHY}; a client gone mid-head is logged by byte count",
            Scope.BOTH,
            required=True,
            attribute=HTTP1_SERVER_EVENTS,
        ),
        Patch(
            "http1-heads-read-as-recorded",
            "mitmproxy.proxy.layers.http._http1:Http1Server.read_headers",
            "3fe0945216bcf7bc505e296e44dd33908b19aa900d4157e977499bf7164027d6",
            None,
            "http1-heads-bounded relies on how this state buffers a head",
            Scope.BOTH,
            required=True,
        ),
        Patch(
            "http1-bodies-read-as-recorded",
            "mitmproxy.proxy.layers.http._http1:Http1Connection.read_body",
            "aece271029af36e4b7eaf84aa17ddcf4ee0efb35e7f04c842c2a7333804a71f1",
            None,
            "http1-heads-bounded relies on how this state buffers chunk-size lines",
            Scope.BOTH,
            required=True,
        ),
        Patch(
            "h2-header-blocks-bounded",
            HEADER_BUFFER,
            "e32970a56626afccf99b0d9a15c9ac564e3a3c203be17486a2833df6bd3e114c",
            _make_header_buffer_guard(registry.original(HEADER_BUFFER)),
            f"HTTP/2 header blocks (HEADERS + CONTINUATION) {WHY}",
            Scope.BOTH,
            required=True,
        ),
        Patch(
            "h2-header-block-refusals-logged",
            H2_SERVER_EVENTS,
            "d24a023c678de6ced81275c0ebf2aba54d976e5326965d8c0e952b4cd4f5fb76",
            _make_h2_event_handler(registry.original(H2_SERVER_EVENTS)),
            "an HTTP/2 header block refusal writes a decision line",
            Scope.BOTH,
            required=True,
        ),
    ]


def installed() -> bool:
    return registry.applied(HTTP1_SERVER_EVENTS)


def install(count: Callable[[Decision], None] | None = None) -> None:
    """Patch mitmproxy and h2 once per process; later calls only update `count`. Raises
    PatchRefused when the installed sources are not the ones the patch was written for."""
    global _count
    _count = count
    if installed():
        return
    _check_h2_settings()
    registry.apply(patches())


class HeadLimits:
    """Installs the bound at start. It stays installed when a reloaded script is missing or
    broken: mitmproxy keeps parsing client bytes then (the guard denies)."""

    def __init__(self, count: Callable[[Decision], None] | None = None) -> None:
        self._count = count

    def running(self) -> None:
        install(self._count)
