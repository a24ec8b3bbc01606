"""A connection closed by the proxy always gives its socket back.

mitmproxy (12.3.1) closes a connection by cancelling the task that reads it. That task catches
the cancel while it reads or drains, but not while it waits to hand the bytes it read to the
layers (`server_event` waits for a lock that a hook's task may hold). A cancel landing there ends
the task before its cleanup: the socket is never closed and its descriptor never freed. Under
`mitmdump -s` (hooks run as tasks) a client could leak one descriptor per connection at will,
e.g. a first write over 64 KiB that the protocol gate refuses (measured: 20 connections, 20
descriptors held after the clients left). The replacement is the upstream function with that
one await treated like the others.
"""

from __future__ import annotations

import asyncio

from mitmproxy.connection import Connection, ConnectionState
from mitmproxy.proxy import events, server

from addons.patches import registry
from addons.patches.registry import Patch, Scope

HANDLE_CONNECTION = "mitmproxy.proxy.server:ConnectionHandler.handle_connection"


async def handle_connection(self: server.ConnectionHandler, connection: Connection) -> None:
    # mitmproxy 12.3.1's ConnectionHandler.handle_connection, one change marked.
    cancelled = None
    reader = self.transports[connection].reader
    assert reader
    while True:
        try:
            data = await reader.read(65535)
            if not data:
                raise OSError("Connection closed by peer.")
        except OSError:
            break
        except asyncio.CancelledError as e:
            cancelled = e
            break

        try:  # auth-proxy: a cancel while waiting to hand the data on closes like any other
            await self.server_event(events.DataReceived(connection, data))
        except asyncio.CancelledError as e:
            cancelled = e
            break

        try:
            await self.drain_writers()
        except asyncio.CancelledError as e:
            cancelled = e
            break

    if cancelled is None and connection.transport_protocol == "tcp":
        # TCP connections can be half-closed.
        connection.state &= ~ConnectionState.CAN_READ
    else:
        connection.state = ConnectionState.CLOSED

    await self.server_event(events.ConnectionClosed(connection))

    if connection.state is ConnectionState.CAN_WRITE:
        # we may still use this connection to *send* stuff,
        # even though the remote has closed their side of the connection.
        # to make this work we keep this task running and wait for cancellation.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as e:
            cancelled = e

    try:
        writer = self.transports[connection].writer
        assert writer
        writer.close()
    except OSError:
        pass
    self.transports.pop(connection)

    if cancelled:
        raise cancelled


def patches() -> list[Patch]:
    """Required: without it a hostile client exhausts the sidecar's descriptors."""
    return [
        Patch(
            "closed-connections-release-sockets",
            HANDLE_CONNECTION,
            "95c3f93e9824e527cd3c1af9656c0e04690562abcd23f0b029d547257fb53f94",
            handle_connection,
            "a connection closed while its data waits for the layers still closes its socket "
            "(under mitmdump one descriptor leaked per refused 64 KiB write)",
            Scope.BOTH,
            required=True,
        )
    ]


def install() -> None:
    """Once per process; raises PatchRefused when the installed mitmproxy differs."""
    if not registry.applied(HANDLE_CONNECTION):
        registry.apply(patches())
