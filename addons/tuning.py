"""Changes to mitmproxy, pyOpenSSL and the garbage collector that the `auth-proxy` runtime
makes for CPU and memory (README: "What the sidecar's runtime does differently from mitmdump").

Each was measured with `make bench`, the stress suite or a tunnel memory check, and keeps what
clients and upstreams see, except the two noted where they are set (key-exchange groups on the
in-pod leg; how long HTTP/2 remembers closed streams). `mitmdump -s addons/allowlist.py` runs
without them, and the proxy test suite runs against both. They touch mitmproxy 12.3 internals
(pinned `~=12.3.1`): re-check on upgrade. `apply()` may be called more than once.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h2.events
from mitmproxy import http, optmanager
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import layer, server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http2, _http_h2
from OpenSSL import SSL, crypto

from addons import events

# The h2 library remembers how each closed stream of a connection closed, up to 65,536 streams,
# to tell late frames of a stream it reset from protocol errors: about 20 MiB for one busy
# HTTP/2 client connection and its upstream (the soak test's RSS grew by that much). 1,024
# recent streams cover the stragglers; an older stream's late frame gets a RST_STREAM.
H2_CLOSED_STREAMS_KEPT = 1024

# Key exchange on the workload-to-sidecar leg, which never leaves the pod (loopback). OpenSSL's
# default adds the hybrid X25519MLKEM768, whose key it keeps for the connection's lifetime:
# 9 KiB per tunnel. The upstream leg keeps OpenSSL's defaults, post-quantum included.
CLIENT_LEG_GROUPS = b"X25519:P-256:P-384"


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


def _lean_contexts(
    factory: Callable[..., SSL.Context], groups: bytes | None
) -> Callable[..., SSL.Context]:
    """Wrap one of mitmproxy's (cached) SSL context factories: connections made from the context
    free their record buffers whenever idle, from the handshake on. Set after the handshake (as
    the addon does under mitmdump), it misses the buffers of the handshake's record layers:
    25 KiB per tunnel."""

    @functools.wraps(factory)
    def make(*args, **kwargs) -> SSL.Context:
        context = factory(*args, **kwargs)
        if getattr(context, "auth_proxy_lean", False):  # cached: tuned at its first use
            return context
        SSL._lib.SSL_CTX_set_mode(context._context, SSL._lib.SSL_MODE_RELEASE_BUFFERS)
        if groups is not None and kwargs.get("ecdh_curve") is None:  # tls_ecdh_curve_client wins
            ok = SSL._lib.SSL_CTX_set1_curves_list(context._context, groups)
            SSL._openssl_assert(ok == 1)
        context.auth_proxy_lean = True  # type: ignore[attr-defined]
        return context

    make.lean = True  # type: ignore[attr-defined]
    return make


class Converted:
    """pyOpenSSL objects made from cryptography ones once per object, not once per call.

    tlsconfig hands every client connection the leaf certificate and key of its host as
    cryptography objects, and pyOpenSSL converts them to new OpenSSL X509 and EVP_PKEY objects
    every time: about 10 KiB per tunnel for copies of the same certificate. OpenSSL counts
    references to both, so connections can share one. Keyed by identity and holding the
    original, so an entry can never be mistaken for another object; the least recently used
    entries go beyond `size` (CertStore keeps 100 leaves by default)."""

    def __init__(self, convert: Callable[[Any], Any], size: int = 256) -> None:
        self._convert, self._size = convert, size
        self._cache: OrderedDict[int, tuple[object, Any]] = OrderedDict()

    def get(self, original: object) -> Any:
        hit = self._cache.get(id(original))
        if hit is not None and hit[0] is original:
            self._cache.move_to_end(id(original))
            return hit[1]
        converted = self._convert(original)
        self._cache[id(original)] = (original, converted)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return converted


_certificates = Converted(crypto.X509.from_cryptography)
_private_keys = Converted(crypto.PKey.from_cryptography_key)
_use_certificate = SSL.Connection.use_certificate
_use_privatekey = SSL.Connection.use_privatekey


def _use_shared_certificate(self: SSL.Connection, cert) -> None:
    if isinstance(cert, crypto.X509):
        return _use_certificate(self, cert)
    if not SSL._lib.SSL_use_certificate(self._ssl, _certificates.get(cert)._x509):
        SSL._raise_current_error()
    return None


def _use_shared_privatekey(self: SSL.Connection, pkey) -> None:
    if isinstance(pkey, crypto.PKey):
        return _use_privatekey(self, pkey)
    if not SSL._lib.SSL_use_PrivateKey(self._ssl, _private_keys.get(pkey)._pkey):
        self._context._raise_passphrase_exception()
    return None


def apply() -> None:
    # mitmproxy type-checks every field of every HTTP message it makes, unless Python runs with
    # -O (`if __debug__:` around MessageData.__post_init__): a fifth of the proxy's CPU per
    # keep-alive request. -O would also drop the asserts that guard mitmproxy's invariants,
    # which a security boundary keeps, so only the type check goes. The checks catch programming
    # errors in code that builds messages; the tests run the addon under mitmdump too.
    http.MessageData.__post_init__ = _skip_message_type_check  # type: ignore[method-assign]
    # Layer.__init__ makes its queue with `collections.deque()`, the module's only runtime use
    # of `collections`: 4.6 MiB less at 500 open tunnels.
    layer.collections = types.SimpleNamespace(deque=EventQueue)  # type: ignore[assignment]
    # Python 3.13 raised the young generation's threshold from 700 to 2,000 objects. Under many
    # requests at once, objects of requests still in flight then survive more young collections,
    # and the reference cycles that mitmproxy's layers and flows form reach the old generation,
    # which is collected far less often. With 700 the load test's 500 tunnels (500 requests at
    # once) peaked at 121 MiB instead of 131; CPU per request stayed within the bench's noise.
    gc.set_threshold(700, *gc.get_threshold()[1:])
    _http_h2.BufferedH2Connection.MAX_CLOSED_STREAMS = H2_CLOSED_STREAMS_KEPT
    # mitmproxy's HTTP/2 layer forgets a stream's state only when the peer's end of it comes
    # last (on the workload's side the response ends each stream), and the upstream side never
    # forgets its map of stream ids: every stream of a connection stays in memory for the
    # connection's lifetime, about 220 bytes each (10 MiB for the soak test's 46,000 requests on
    # one connection). Once both ends of a stream are closed, it is forgotten. Subclasses call
    # these through super(), so patching the base class covers both sides.
    _http2.Http2Connection._handle_event = _handle_event_forgetting_closed_streams  # type: ignore[method-assign]
    _http2.Http2Connection.handle_h2_event = _handle_h2_event_forgetting_closed_streams  # type: ignore[method-assign]
    http.Headers.get_all = _headers_get_all  # type: ignore[method-assign]
    http.Headers.get = _headers_get  # type: ignore[method-assign,assignment]
    http.Headers.__contains__ = _headers_contains  # type: ignore[method-assign,assignment]
    optmanager._Option.current = _option_value  # type: ignore[method-assign]
    server.ConnectionHandler.log = _log_unless_unshown_notice  # type: ignore[method-assign]
    http_layers.HttpStream.flow_done = _flow_done_and_unlinked  # type: ignore[method-assign]
    SSL.Connection.use_certificate = _use_shared_certificate  # type: ignore[method-assign]
    SSL.Connection.use_privatekey = _use_shared_privatekey  # type: ignore[method-assign]
    # tlsconfig calls these through the module at every handshake.
    if not getattr(net_tls.create_client_proxy_context, "lean", False):
        net_tls.create_client_proxy_context = _lean_contexts(  # type: ignore[assignment]
            net_tls.create_client_proxy_context, CLIENT_LEG_GROUPS
        )
        net_tls.create_proxy_server_context = _lean_contexts(  # type: ignore[assignment]
            net_tls.create_proxy_server_context, None
        )
