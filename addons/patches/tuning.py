"""Speed and memory changes to mitmproxy, h2 and pyOpenSSL for the `auth-proxy` runtime, as
registry entries (docs/internals.md lists each with its measured gain).

Each keeps what clients and upstreams see, except the two noted where they are set (key-exchange
groups on the in-pod leg; how long HTTP/2 remembers closed streams). `mitmdump -s
addons/allowlist.py` runs without them; the proxy test suite runs against both runtimes.
"""

from __future__ import annotations

import copy
import logging
import types
from typing import Any

import h2.events
from mitmproxy import http, optmanager
from mitmproxy.proxy import server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http2

from addons import events
from addons.patches.registry import Patch

# The h2 library remembers how each closed stream of a connection closed, up to 65,536 streams,
# to tell late frames of a stream it reset from protocol errors: about 20 MiB for one busy
# HTTP/2 client connection and its upstream (the soak test's RSS grew by that much). 1,024
# recent streams cover the stragglers; an older stream's late frame gets a RST_STREAM.
H2_CLOSED_STREAMS_KEPT = 1024


def _skip_message_type_check(self) -> None:
    pass


class EventQueue(list):
    """What a mitmproxy Layer needs of its paused-event deque (append, popleft, truth, iteration),
    at the size of an empty list: 56 bytes instead of about 1.1 KiB for an empty deque (object
    plus first block). Every layer has one, a tunnel holds about a dozen layers, and the queue is
    almost always empty (it fills only while a hook is pending), so popleft's O(n) never matters."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)


_handle_event = _http2.Http2Connection._handle_event
_handle_h2_event = _http2.Http2Connection.handle_h2_event
_END_OF_MESSAGE = (_http2.RequestEndOfMessage, _http2.ResponseEndOfMessage)


def _forget_if_closed(conn: _http2.Http2Connection, stream_id: int) -> None:
    stream = conn.h2_conn.streams.get(stream_id)
    if stream is None or stream.closed:
        conn.streams.pop(stream_id, None)
        if isinstance(conn, _http2.Http2Client):  # its map of client to upstream stream ids
            theirs = conn.their_stream_id.pop(stream_id, None)
            if theirs is not None:
                conn.our_stream_id.pop(theirs, None)


def _handle_event_forgetting_closed_streams(self, event):
    yield from _handle_event(self, event)
    if isinstance(event, _END_OF_MESSAGE):  # our side ended the stream
        _forget_if_closed(self, event.stream_id)


def _handle_h2_event_forgetting_closed_streams(self, event):
    stop = yield from _handle_h2_event(self, event)
    if isinstance(event, h2.events.StreamEnded):  # the peer's side ended it
        _forget_if_closed(self, event.stream_id)
    return stop


# Header lookups: mitmproxy's HTTP/1 code looks up about 25 headers per request (most of them
# absent). Headers inherits `get` and `in` from Mapping, which go through `[]` and catch a
# KeyError for every absent header, and compares each field through a method call. These give
# the same answers (values of equal names, case-insensitively, folded with ", ") in half the time.


def _headers_get_all(self: http.Headers, name: str | bytes) -> list[str]:
    key = http._always_bytes(name).lower()
    return [http._native(value) for field, value in self.fields if field.lower() == key]


def _headers_get(self: http.Headers, name: str | bytes, default: Any = None) -> Any:
    values = self.get_all(name)
    return ", ".join(values) if values else default


def _headers_contains(self: http.Headers, name: object) -> bool:
    return bool(self.get_all(name))  # type: ignore[arg-type]


# mitmproxy deep-copies an option's value on every read, so that callers cannot change it in
# place; its layers read about ten options per request. Immutable values need no copy.
_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})


def _option_value(self: optmanager._Option) -> Any:
    value = self._default if self.value is optmanager.unset else self.value
    return value if type(value) in _IMMUTABLE else copy.deepcopy(value)


_flow_done = http_layers.HttpStream.flow_done


def _finished(_event):
    """HttpStream.state_done, without a reference to the stream."""
    yield from ()


def _flow_done_and_unlinked(self: http_layers.HttpStream):
    """mitmproxy's HTTP stream is in two reference cycles: it keeps its states as bound methods of
    itself, and its context's list of layers holds it. So every finished request (stream, flow,
    messages, headers: about 40 objects) waited for the garbage collector instead of being freed
    when its connection layer dropped it: 9 MiB of the peak with 500 requests at once. Once the
    flow is done and the stream dropped (no protocol upgrade), neither refers back."""
    yield from _flow_done(self)
    response = self.flow.response
    if response is not None and response.status_code != 101:
        self.client_state = self.server_state = _finished
        layers = self.context.layers
        if layers and layers[-1] is self:
            layers.pop()


def _shown(logger: logging.Logger, level: int) -> bool:
    """Whether a handler would print a record of `level` from `logger` (its own filters aside)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(level >= handler.level for handler in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


_connection_log = server.ConnectionHandler.log


def _log_unless_unshown_notice(self, message: str, level: int = logging.INFO, exc_info=None):
    """The addon turns mitmproxy's per-request streaming notices into debug records, which no
    handler prints below debug verbosity; making the record first cost 3% of the keep-alive CPU."""
    if (
        level == logging.INFO
        and message.startswith(events.PER_REQUEST_NOTICES)
        and not _shown(server.logger, logging.DEBUG)
    ):
        return
    _connection_log(self, message, level, exc_info)


def _why(text: str) -> str:
    return " ".join(text.split())


def patches() -> list[Patch]:
    """The registry entries, made when asked (the wrappers close over mitmproxy's originals)."""
    return [
        Patch(
            "no-message-type-check",
            "mitmproxy.http:MessageData.__post_init__",
            "f65088e210cd9cc1dc277086ee4c7f5701d433b02e6f1d81a2ac22f94c484414",
            _skip_message_type_check,
            _why("""mitmproxy type-checks every field of every HTTP message it makes unless
            Python runs with -O, which would also drop the asserts that guard its invariants:
            a fifth of the CPU of a keep-alive request"""),
        ),
        Patch(
            "list-event-queues",
            "mitmproxy.proxy.layer:Layer.__init__",
            "fd5121f4df9d0eba6f69c84a90b841eea79572404b5f6c26f91074aaf81bb1dd",
            types.SimpleNamespace(deque=EventQueue),
            _why("""each layer's queue of events held during a hook is a list, not a deque
            (the module's only runtime use of `collections`): 4.6 MiB less at 500 tunnels"""),
            attribute="mitmproxy.proxy.layer:collections",
        ),
        Patch(
            "h2-closed-streams-kept",
            "h2.connection:H2Connection",
            "a0a805a8ad32d4828049c8b8b02544253503f732c8fba69a140c0e4162ae45db",
            H2_CLOSED_STREAMS_KEPT,
            _why("""h2 remembers 1,024 closed streams per connection instead of 65,536:
            about 20 MiB less for a busy HTTP/2 client and its upstream"""),
            attribute="mitmproxy.proxy.layers.http._http_h2:BufferedH2Connection.MAX_CLOSED_STREAMS",
        ),
        Patch(
            "h2-forget-streams-we-ended",
            "mitmproxy.proxy.layers.http._http2:Http2Connection._handle_event",
            "7fc814a8a507f234678605fecaf0c03ffbd948dcfac53792c1233399170ca601",
            _handle_event_forgetting_closed_streams,
            _why("""mitmproxy's HTTP/2 layers keep every stream's state and id map for the
            connection's lifetime (about 220 bytes per request); a stream is forgotten once
            both its ends are closed"""),
        ),
        Patch(
            "h2-forget-streams-the-peer-ended",
            "mitmproxy.proxy.layers.http._http2:Http2Connection.handle_h2_event",
            "f6b6a52b125481023258ba6169612b2812f28dbdb2b294f7d150cf4bbd677ea6",
            _handle_h2_event_forgetting_closed_streams,
            "the other half of h2-forget-streams-we-ended",
        ),
        Patch(
            "headers-get-all",
            "mitmproxy.http:Headers.get_all",
            "367b3317bc2ba45c0a5af45ea8f710a80c38234f8dc3c3030ce23a19b0cfa24e",
            _headers_get_all,
            _why("""header lookups without a method call per field and without a KeyError per
            absent header (about 25 lookups per request, most absent): with the option reads,
            about 4% of a keep-alive request"""),
        ),
        Patch(
            "headers-get",
            "mitmproxy.coretypes.multidict:_MultiDict.__getitem__",
            "482e7414c932e3e81efbc8888ab404e124ebc4bea48736746ead89e75db0b9d4",
            _headers_get,
            "Headers.get through headers-get-all, with Mapping.get's answers",
            attribute="mitmproxy.http:Headers.get",
        ),
        Patch(
            "headers-contains",
            "mitmproxy.coretypes.multidict:_MultiDict.__getitem__",
            "482e7414c932e3e81efbc8888ab404e124ebc4bea48736746ead89e75db0b9d4",
            _headers_contains,
            "`name in headers` through headers-get-all, with Mapping's answers",
            attribute="mitmproxy.http:Headers.__contains__",
        ),
        Patch(
            "option-reads-copy-only-mutable-values",
            "mitmproxy.optmanager:_Option.current",
            "6859c2d9c826806ed06b7b034ef608de3f655c67390e4badd26d70ec75811adb",
            _option_value,
            _why("""mitmproxy deep-copies an option's value on every read (about ten per
            request); immutable values need no copy"""),
        ),
        Patch(
            "unshown-notices-not-made",
            "mitmproxy.proxy.server:ConnectionHandler.log",
            "706760d6eecf10cd8ec40b6bc86f0da38576cd1e8c97ec305a7c3216533d0644",
            _log_unless_unshown_notice,
            _why("""per-request streaming notices are not formatted when no handler would
            print them: 3% of a keep-alive request"""),
        ),
        Patch(
            "finished-streams-freed-at-once",
            "mitmproxy.proxy.layers.http:HttpStream.flow_done",
            "ad9969744785c572bf38b70c9269469554e6fcf016ea7d7f89541b865cff6d85",
            _flow_done_and_unlinked,
            _why("""a finished HTTP stream no longer refers to itself, so each request is
            freed at once instead of by the garbage collector: 500-tunnel peak 126 -> 117
            MiB"""),
        ),
    ]
