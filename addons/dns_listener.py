"""The DNS listener's sockets: UDP and TCP on each `dns_listen` address, on the proxy's event loop.

Not mitmproxy's `--mode dns@...`: mitmproxy 12.3.1's UDP server (in the mitmproxy_rs 0.12.15
extension) keeps a "connection" per client address and port, and once one has been idle for
about 20 s it never answers that address and port again. Resolvers that keep one socket (c-ares,
Node) or reuse source ports would lose DNS in a long-lived pod. Here every datagram is answered
on its own: no state is kept per client at all.

This module moves bytes and bounds the work; what to answer is the handler's (`DnsAnswers`):
it gets one message and the client's label and returns the reply, or None for no reply.

- UDP: one socket per address, bound to that exact address, so a reply comes from the address
  the client queried. At most `Limits.udp_pending` datagrams are being answered at once; beyond
  that a datagram is dropped (UDP is lossy; the client asks again).
- TCP (RFC 7766): two-byte length-prefixed messages, pipelined queries answered as they complete
  (at most `Limits.tcp_pipelined` at once per connection), at most `Limits.tcp_connections` open
  connections (at the cap a newcomer takes the place of the one idle longest, or is closed), each
  closed when idle for `Limits.tcp_idle` seconds or when a frame is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# (message, client label "ip:port", the longest reply the transport takes) -> reply or None.
Handler = Callable[[bytes, str, int], Awaitable[bytes | None]]

UDP_REPLY_LIMIT = 512  # RFC 1035: without EDNS (answers never carry OPT here)
TCP_REPLY_LIMIT = 65535
_LENGTH = struct.Struct("!H")
_UDP_BATCH = 64  # datagrams read per wakeup, so one busy socket cannot starve the loop

FIX = "Fix: give HOST:PORT with an IP address, e.g. 127.0.0.1:8053, ::1:8053 or [::1]:8053"


@dataclass(frozen=True)
class Limits:
    udp_pending: int = 512
    tcp_connections: int = 64
    tcp_pipelined: int = 16
    tcp_idle: float = 10.0
    # A TCP client that does not read its answers: the write gives up and the connection closes.
    tcp_write: float = 10.0
    # Answers still owed when a TCP connection ends (the handler's lookups time out before this).
    tcp_owed: float = 6.0


@dataclass(frozen=True)
class ListenAddress:
    host: str  # an IP address, without brackets
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """`HOST:PORT` with HOST an IP address; IPv6 as `::1:8053` (the last colon separates the
    port) or `[::1]:8053`. ValueError names the value and the fix."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"dns_listen {value!r} is not HOST:PORT. {FIX}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"dns_listen {value!r}: {host!r} is not an IP address. {FIX}") from None
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"dns_listen {value!r}: the port must be 1-65535. {FIX}")
    if address.is_unspecified:
        # A wildcard socket may answer from another address than the one queried, and would
        # take queries from the pod network too.
        raise ValueError(
            f"dns_listen {value!r}: a wildcard address listens everywhere. "
            "Fix: name each address, e.g. 127.0.0.1:8053 and ::1:8053"
        )
    return ListenAddress(str(address), int(port))


def parse_listens(values: Iterable[str]) -> tuple[ListenAddress, ...]:
    found: dict[ListenAddress, str] = {}
    for value in values:
        address = parse_listen(value)
        if address in found:
            raise ValueError(
                f"dns_listen {value!r}: {address} is listed twice ({found[address]!r}). "
                "Fix: list each address once"
            )
        found[address] = value
    return tuple(found)


def client_label(peer: tuple) -> str:
    return f"{peer[0]}:{peer[1]}"


class UdpListener:
    def __init__(self, address: ListenAddress, handler: Handler, limits: Limits, counts: Counter):
        self.address = address
        self._handler = handler
        self._limits = limits
        self._counts = counts
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray(65535)
        self._pending: set[asyncio.Task] = set()

    @property
    def up(self) -> bool:
        return self._sock is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(self.address.family, socket.SOCK_DGRAM)
        try:
            if self.address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind((self.address.host, self.address.port))
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop

    def stop(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = None
        for task in list(self._pending):
            task.cancel()

    def _readable(self) -> None:
        sock = self._sock
        for _ in range(_UDP_BATCH):
            if sock is None or sock.fileno() < 0:
                return
            try:
                size, peer = sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an error queued on the socket: the next datagram is still there
            if len(self._pending) >= self._limits.udp_pending:
                self._counts["udp-busy"] += 1
                continue
            message = bytes(memoryview(self._buffer)[:size])
            task = asyncio.ensure_future(self._reply(sock, message, peer))
            if not task.done():
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _reply(self, sock: socket.socket, message: bytes, peer: tuple) -> None:
        try:
            reply = await self._handler(message, client_label(peer), UDP_REPLY_LIMIT)
            if reply is not None:
                sock.sendto(reply, peer)
        except OSError:
            pass  # socket buffer full, or the socket closed meanwhile: the client asks again
        except Exception:
            logger.exception("DNS answer over UDP failed")


class _TcpClient:
    """One TCP connection: its writer, its queries in flight and when it last did anything."""

    def __init__(self, writer: asyncio.StreamWriter, pipelined: int) -> None:
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.label = client_label(peer) if peer else "unknown"
        self.slots = asyncio.Semaphore(pipelined)
        self.answering: set[asyncio.Task] = set()
        self.active_at = time.monotonic()

    async def close(self, timeout: float) -> None:
        """Send what is still buffered, then close; a client that does not read is cut off."""
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        self.abort()

    def abort(self) -> None:
        self.writer.transport.abort()


class TcpListener:
    def __init__(
        self,
        address: ListenAddress,
        handler: Handler,
        limits: Limits,
        counts: Counter,
        clients: dict[_TcpClient, None],
    ):
        self.address = address
        self._handler = handler
        self._limits = limits
        self._counts = counts
        # Shared by every TCP listener: the cap is on the process's connections.
        self._clients = clients
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Task | None = None

    @property
    def up(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind now (a taken port fails here, synchronously); serve from the loop."""
        self._sock = socket.create_server(
            (self.address.host, self.address.port), family=self.address.family
        )
        self._starting = loop.create_task(self._serve_on(self._sock))

    async def _serve_on(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=65536)

    def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is not None:
            self._server.close()
        if self._sock is not None:
            self._sock.close()
        self._server = self._sock = self._starting = None

    def _admit(self, client: _TcpClient) -> bool:
        if len(self._clients) >= self._limits.tcp_connections:
            idle = [c for c in self._clients if not c.answering]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c.active_at)
            del self._clients[oldest]
            oldest.abort()
            self._counts["tcp-evicted"] += 1
        self._clients[client] = None
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _TcpClient(writer, self._limits.tcp_pipelined)
        if not self._admit(client):
            self._counts["tcp-over-cap"] += 1
            client.abort()
            return
        try:
            await self._read_queries(client, reader)
            if client.answering:  # RFC 7766: answer what was asked before closing
                await asyncio.wait(client.answering, timeout=self._limits.tcp_owed)
            await client.close(self._limits.tcp_write)
        except Exception:
            logger.exception("DNS connection failed")
        finally:
            self._clients.pop(client, None)
            for task in client.answering:
                task.cancel()
            client.abort()

    async def _read_queries(self, client: _TcpClient, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                # The whole frame within the idle time: a dripped frame cannot hold the slot.
                async with asyncio.timeout(self._limits.tcp_idle):
                    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                    if length == 0:
                        self._counts["tcp-empty-frame"] += 1
                        return
                    message = await reader.readexactly(length)
            except TimeoutError:
                self._counts["tcp-idle"] += 1
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            client.active_at = time.monotonic()
            await client.slots.acquire()
            task = asyncio.ensure_future(self._answer(client, message))
            if not task.done():
                client.answering.add(task)
                task.add_done_callback(client.answering.discard)

    async def _answer(self, client: _TcpClient, message: bytes) -> None:
        try:
            reply = await self._handler(message, client.label, TCP_REPLY_LIMIT)
            if reply is None or client.writer.transport.is_closing():
                return
            client.writer.write(_LENGTH.pack(len(reply)) + reply)
            async with asyncio.timeout(self._limits.tcp_write):
                await client.writer.drain()
        except (TimeoutError, ConnectionError):
            client.abort()
        except Exception:
            logger.exception("DNS answer over TCP failed")
            client.abort()
        finally:
            client.slots.release()
            client.active_at = time.monotonic()


class DnsServers:
    """UDP and TCP on every address; started and stopped together."""

    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self._handler = handler
        self.limits = limits or Limits()
        self.counts: Counter[str] = Counter()
        self._tcp_clients: dict[_TcpClient, None] = {}
        self._listeners: dict[ListenAddress, tuple[UdpListener, TcpListener]] = {}

    def start(self, addresses: Iterable[ListenAddress]) -> None:
        """Bind every address (UDP and TCP) now. OSError names the address that failed; the
        ones bound before it stay up (stop() closes them)."""
        loop = asyncio.get_running_loop()
        for address in addresses:
            udp = UdpListener(address, self._handler, self.limits, self.counts)
            tcp = TcpListener(address, self._handler, self.limits, self.counts, self._tcp_clients)
            self._listeners[address] = (udp, tcp)
            for listener, transport in ((udp, "UDP"), (tcp, "TCP")):
                try:
                    listener.start(loop)
                except OSError as e:
                    problem = e.strerror or str(e)
                    raise OSError(e.errno, f"{transport} {address}: {problem}") from None
            logger.info("DNS listener on %s (UDP and TCP)", address)

    def stop(self) -> None:
        for udp, tcp in self._listeners.values():
            udp.stop()
            tcp.stop()
        self._listeners.clear()
        for client in list(self._tcp_clients):
            client.abort()
        self._tcp_clients.clear()

    def status(self) -> dict[ListenAddress, bool]:
        return {a: udp.up and tcp.up for a, (udp, tcp) in self._listeners.items()}

    @property
    def tcp_connections(self) -> int:
        return len(self._tcp_clients)
