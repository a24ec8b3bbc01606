"""A transparent connection opens no upstream connection before it is decided.

mitmproxy's transparent mode starts with the original destination (SO_ORIGINAL_DST) as its server
address, and with the default eager `connection_strategy` connects there at once, before a byte
of the client's is read. Here the destination is named by the ClientHello's SNI or the Host
header, decided like a CONNECT, and the connection goes to an address the decision checked, never
to the one the client chose. Without this patch the approvals addon refuses that early connection
and mitmproxy closes every transparent client; `connection_strategy=lazy` for the whole process
would change the regular listener too (an unreachable upstream would no longer get its 502 at
CONNECT). So only transparent connections start lazily: the same Start, minus the eager connect.
"""

from __future__ import annotations

from mitmproxy.proxy import events, layer
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.utils import expect

from addons.patches import registry
from addons.patches.registry import Patch, Scope

TRANSPARENT_START = "mitmproxy.proxy.layers.modes:TransparentProxy._handle_event"
EAGER_START = "mitmproxy.proxy.layers.modes:DestinationKnown.finish_start"
WHY = "transparent connections are decided on SNI/Host before any upstream connection (issue 14)"


@expect(events.Start)
def start_without_connecting(
    self: modes.TransparentProxy, event: events.Event
) -> layer.CommandGenerator[None]:
    # DestinationKnown.finish_start without its eager OpenConnection.
    assert self.context.server.address, "No server address set."
    self.child_layer = layer.NextLayer(self.context)
    self._handle_event = self.child_layer.handle_event
    yield from self.child_layer.handle_event(events.Start())


def patches() -> list[Patch]:
    """Required: without it, or with a changed start, transparent clients are all closed, or an
    upstream connection could open to an address no decision checked."""
    return [
        Patch(
            "transparent-starts-lazily",
            TRANSPARENT_START,
            "613cabc6639df9e82379638df55112ee327005e5645014c9e4b9b994754bd157",
            start_without_connecting,
            WHY,
            Scope.BOTH,
            required=True,
        ),
        Patch(
            "transparent-start-as-recorded",
            EAGER_START,
            "91f47432073a2bf6659c4d431a5220f495a2b10e04bbf1d59dd290eafe4340b8",
            None,
            "transparent-starts-lazily copies this start minus its eager connect",
            Scope.BOTH,
            required=True,
        ),
    ]


def install() -> None:
    """Once per process; raises PatchRefused when the installed mitmproxy differs."""
    if not registry.applied(TRANSPARENT_START):
        registry.apply(patches())
