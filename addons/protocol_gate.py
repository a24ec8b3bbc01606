"""No connection is ever relayed raw: inside a tunnel, the client speaks TLS or HTTP, or it is closed.

mitmproxy picks the layer that follows a CONNECT (or a TLS handshake inside one) from the first
bytes it has read. Bytes that do not look like TLS or an HTTP request line (a first write of two
bytes, a request line not yet ended, a leading blank line, another protocol) become a raw TCP
relay to the approved address: the client's own TLS then goes end to end with any SNI, or its
HTTP reaches the upstream with any Host, and no hook sees it. On a CDN address that serves many
names, that reaches every site behind it.

`classify` (addons.core.protocols) reads the bytes the same way whatever the client's write sizes:
it answers MORE until a prefix decides, and a decided prefix never changes its answer. The gate
runs after mitmproxy's own NextLayer (it is registered at the end of the addon chain) and keeps
mitmproxy's choice only when it agrees; undecided bytes wait (bounded: the longest wait is a
32-byte method token or 64 blank-line bytes, and the client deadline still runs); anything else
closes the connection with a decision line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HTTPMode

from addons.core import reasons
from addons.core.protocols import MAX_LEADING_EMPTY, MAX_METHOD, Protocol, classify

# classify and its constants live in the core; they stay importable from here.
__all__ = ["MAX_LEADING_EMPTY", "MAX_METHOD", "NAME", "Protocol", "ProtocolGate", "classify"]

logger = logging.getLogger(__name__)

NAME = "protocolgate"
UNRECOGNIZED_PROTOCOL = reasons.UNRECOGNIZED_PROTOCOL.name


class Refused(layer.Layer):
    """Closes the client connection (and any upstream connection) at its first event."""

    closed = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.closed:
            return
        self.closed = True
        if self.context.server.connected:
            yield commands.CloseConnection(self.context.server)
        yield commands.CloseConnection(self.context.client)


def _layers_below(context, chosen: layer.Layer | None) -> list[layer.Layer]:
    """The context's layers before this decision: a layer appends itself to `context.layers`
    when it is made, so mitmproxy's choice is already on the list when the gate runs."""
    for index, existing in enumerate(context.layers):
        if existing is chosen:
            return context.layers[:index]
    return list(context.layers)


def _is_proxy_entry(below: list[layer.Layer]) -> bool:
    """The first layer decision of a client connection (mitmproxy's regular-proxy setup)."""
    return len(below) == 1 and isinstance(below[0], modes.HttpProxy)


def _keeps(verdict: Protocol, chosen: layer.Layer | None, below: list[layer.Layer]) -> bool:
    """Whether mitmproxy's choice is the one the verdict asks for. TLS inside TLS is refused."""
    if verdict is Protocol.HTTP:
        return isinstance(chosen, layers.HttpLayer)
    if verdict is Protocol.TLS:
        inside_tls = any(isinstance(x, layers.ClientTLSLayer) for x in below)
        return isinstance(chosen, layers.ServerTLSLayer) and not inside_tls
    return False


def _drop_leading_empty_lines(nextlayer: layer.NextLayer) -> None:
    """mitmproxy's HTTP/1 reader skips empty lines before a request line, but then waits for the
    next read instead of parsing what follows: a request sent in one write after a blank line
    would stall until the client deadline. The blank lines go before the reader sees them."""
    client = nextlayer.context.client
    kept: list[events.Event] = []
    stripping = True
    for event in nextlayer.events:
        if stripping and isinstance(event, events.DataReceived) and event.connection is client:
            data = event.data.lstrip(b"\r\n")
            if not data:
                continue
            stripping = False
            event = events.DataReceived(client, data)
        kept.append(event)
    nextlayer.events[:] = kept


OnRefuse = Callable[[object, str], None]


class ProtocolGate:
    """Registered at the end of the addon chain, after mitmproxy's NextLayer (see module doc)."""

    name = NAME

    def __init__(self) -> None:
        self.on_refuse: OnRefuse | None = None

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        try:
            chosen = nextlayer.layer
            below = _layers_below(context, chosen)
            if _is_proxy_entry(below):
                return
            verdict = classify(nextlayer.data_client())
            if verdict is Protocol.HTTP:
                _drop_leading_empty_lines(nextlayer)
            if _keeps(verdict, chosen, below):
                return
            del context.layers[len(below) :]  # undo mitmproxy's choice before making ours
            if verdict is Protocol.MORE:
                nextlayer.layer = None  # wait for more bytes, whatever mitmproxy guessed
            elif verdict is Protocol.HTTP:
                nextlayer.layer = layers.HttpLayer(context, HTTPMode.transparent)
            else:
                self._refuse(nextlayer)
        except Exception:
            logger.exception("layer check failed; closing the connection")
            nextlayer.layer = Refused(context)

    def _refuse(self, nextlayer: layer.NextLayer) -> None:
        nextlayer.layer = Refused(nextlayer.context)
        if self.on_refuse is not None:
            self.on_refuse(nextlayer.context.client, UNRECOGNIZED_PROTOCOL)
