"""The DNS listener's sockets (addons/dns_listener.py) on real loopback sockets, with a handler
that stands in for the answers, and small limits so every bound is reached in milliseconds:
UDP answered per datagram, the UDP pending bound, TCP framing (pipelined, empty and truncated
frames), the per-connection pipeline bound, the connection cap (eviction and refusal), the idle
timeout, and start and stop."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from addons.dns_listener import (
    DnsServers,
    Limits,
    ListenAddress,
    parse_listen,
    parse_listens,
)
from tests.support.processes import free_port

WAIT = 2.0


class Handler:
    """Replies `message + b"!"`; while `held`, every call waits until `release()`."""

    def __init__(self, held: bool = False) -> None:
        self.calls: list[bytes] = []
        self.clients: list[str] = []
        self._open = asyncio.Event()
        if not held:
            self._open.set()

    async def __call__(self, message: bytes, client: str, limit: int) -> bytes | None:
        self.calls.append(message)
        self.clients.append(client)
        await self._open.wait()
        return None if message == b"no reply" else message + b"!"

    def release(self) -> None:
        self._open.set()


@pytest.fixture
def address() -> ListenAddress:
    return ListenAddress("127.0.0.1", free_port())


async def serve(handler: Handler, address: ListenAddress, **limits) -> DnsServers:
    servers = DnsServers(handler, Limits(**limits))
    servers.start([address])
    await until(lambda: all(servers.status().values()), "the listener to serve")
    return servers


@pytest.fixture
async def stopped() -> AsyncIterator[list[DnsServers]]:
    started: list[DnsServers] = []
    yield started
    for servers in started:
        servers.stop()


async def until(check, what: str, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


# -- UDP ---------------------------------------------------------------------------------------


async def udp_ask(address: ListenAddress, message: bytes, sock: socket.socket | None = None):
    loop = asyncio.get_running_loop()
    own = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, message, (address.host, address.port))
        async with asyncio.timeout(WAIT):
            return await loop.sock_recvfrom(sock, 65535)
    finally:
        if own:
            sock.close()


async def test_udp_answers_each_datagram_from_the_address_queried(
    address: ListenAddress, stopped
) -> None:
    handler = Handler()
    stopped.append(await serve(handler, address))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one:
        for i in range(50):  # one socket, many queries: no state per client stops it
            reply, source = await udp_ask(address, b"q%d" % i, one)
            assert (reply, source) == (b"q%d!" % i, (address.host, address.port))
    assert handler.clients[0].startswith("127.0.0.1:")


async def test_udp_datagrams_beyond_the_pending_bound_are_dropped(
    address: ListenAddress, stopped
) -> None:
    handler = Handler(held=True)
    servers = await serve(handler, address, udp_pending=3)
    stopped.append(servers)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for i in range(5):
            await loop.sock_sendto(s, b"q%d" % i, (address.host, address.port))
        await until(lambda: servers.counts["udp-busy"] == 2, "two datagrams dropped")
        assert len(handler.calls) == 3
        handler.release()
        replies = set()
        for _ in range(3):
            async with asyncio.timeout(WAIT):
                replies.add((await loop.sock_recvfrom(s, 100))[0])
    assert replies == {b"q0!", b"q1!", b"q2!"}


async def test_a_message_the_handler_drops_gets_no_datagram(
    address: ListenAddress, stopped
) -> None:
    stopped.append(await serve(Handler(), address))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await udp_ask(address, b"no reply")


# -- TCP ---------------------------------------------------------------------------------------


def frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


async def connect(address: ListenAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address.host, address.port)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT):
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)


async def closed(reader: asyncio.StreamReader, within: float = WAIT) -> bool:
    """Whether the server closes this connection within `within` seconds (reading nothing)."""
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_tcp_pipelined_queries_are_all_answered(address: ListenAddress, stopped) -> None:
    stopped.append(await serve(Handler(), address))
    reader, writer = await connect(address)
    queries = [b"q%d" % i for i in range(20)]
    writer.write(b"".join(frame(q) for q in queries))  # one write: frames split anywhere
    replies = {await read_frame(reader) for _ in queries}
    assert replies == {q + b"!" for q in queries}
    writer.close()


async def test_tcp_frames_split_across_writes_are_reassembled(
    address: ListenAddress, stopped
) -> None:
    stopped.append(await serve(Handler(), address))
    reader, writer = await connect(address)
    data = frame(b"first") + frame(b"second")
    for i in range(len(data)):  # one byte at a time
        writer.write(data[i : i + 1])
        await writer.drain()
    assert {await read_frame(reader), await read_frame(reader)} == {b"first!", b"second!"}
    writer.close()


async def test_tcp_pipelined_queries_in_flight_are_bounded_per_connection(
    address: ListenAddress, stopped
) -> None:
    handler = Handler(held=True)
    stopped.append(await serve(handler, address, tcp_pipelined=2))
    reader, writer = await connect(address)
    writer.write(b"".join(frame(b"q%d" % i) for i in range(5)))
    await until(lambda: len(handler.calls) == 2, "two queries in flight")
    await asyncio.sleep(0.1)
    assert len(handler.calls) == 2, "more queries in flight than the bound"
    handler.release()
    assert len({await read_frame(reader) for _ in range(5)}) == 5
    writer.close()


@pytest.mark.parametrize(
    ("sent", "eof", "answered"),
    [
        pytest.param(frame(b"q1") + b"\x00\x00" + frame(b"q2"), False, [b"q1!"], id="zero-length"),
        pytest.param(b"\x00\x00" + frame(b"q2"), False, [], id="zero-length-first"),
        pytest.param(frame(b"q1") + b"\x00\x64" + b"x" * 20, True, [b"q1!"], id="truncated-eof"),
        pytest.param(frame(b"q1") + b"\x00", True, [b"q1!"], id="half-a-prefix-eof"),
        pytest.param(b"\xff\xff" + b"x" * 100, True, [], id="longest-prefix-short-body-eof"),
    ],
)
async def test_tcp_empty_or_cut_frames_close_after_answering_what_came_before(
    address: ListenAddress, stopped, sent: bytes, eof: bool, answered: list[bytes]
) -> None:
    """Answers owed are sent (RFC 7766); then the connection closes at once, not at the idle
    timeout, and nothing after an empty frame is read."""
    handler = Handler()
    stopped.append(await serve(handler, address, tcp_idle=30))
    reader, writer = await connect(address)
    writer.write(sent)
    if eof:
        writer.write_eof()
    assert [await read_frame(reader) for _ in answered] == answered
    assert await closed(reader), "the connection stayed open"
    assert b"q2" not in handler.calls
    writer.close()


async def test_tcp_idle_and_dripped_connections_are_closed(address: ListenAddress, stopped) -> None:
    servers = await serve(Handler(), address, tcp_idle=0.3)
    stopped.append(servers)
    idle_reader, idle = await connect(address)
    idle.write(frame(b"q"))
    assert await read_frame(idle_reader) == b"q!"
    drip_reader, drip = await connect(address)
    drip.write(b"\x00\x10abc")  # a frame that never completes
    assert await closed(idle_reader, 2) and await closed(drip_reader, 2)
    assert servers.counts["tcp-idle"] == 2
    await until(lambda: servers.tcp_connections == 0, "both connections forgotten")


async def test_tcp_at_the_cap_the_longest_idle_connection_makes_room(
    address: ListenAddress, stopped
) -> None:
    servers = await serve(Handler(), address, tcp_connections=3, tcp_idle=30)
    stopped.append(servers)
    first = await connect(address)
    await until(lambda: servers.tcp_connections == 1, "the first connection")
    rest = [await connect(address) for _ in range(2)]
    await until(lambda: servers.tcp_connections == 3, "three connections")
    reader, writer = await connect(address)
    writer.write(frame(b"new"))
    assert await read_frame(reader) == b"new!"
    assert await closed(first[0]), "the longest idle connection was not closed"
    assert not any([await closed(r, 0.1) for r, _ in rest])
    assert servers.tcp_connections == 3 and servers.counts["tcp-evicted"] == 1


async def test_tcp_at_the_cap_with_every_connection_busy_a_newcomer_is_closed(
    address: ListenAddress, stopped
) -> None:
    handler = Handler(held=True)
    servers = await serve(handler, address, tcp_connections=2, tcp_idle=30)
    stopped.append(servers)
    busy = [await connect(address) for _ in range(2)]
    for _, writer in busy:
        writer.write(frame(b"slow"))
    await until(lambda: len(handler.calls) == 2, "two queries in flight")
    reader, _ = await connect(address)
    assert await closed(reader), "a connection beyond the cap stayed open"
    assert servers.counts["tcp-over-cap"] == 1
    handler.release()
    assert [await read_frame(r) for r, _ in busy] == [b"slow!", b"slow!"]


# -- start and stop ----------------------------------------------------------------------------


async def test_a_taken_port_fails_start_naming_the_transport_and_address(
    address: ListenAddress,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((address.host, address.port))
        servers = DnsServers(Handler())
        with pytest.raises(OSError, match=rf"UDP 127\.0\.0\.1:{address.port}: .*in use"):
            servers.start([address])
        servers.stop()


async def test_stop_closes_both_ports(address: ListenAddress) -> None:
    servers = await serve(Handler(), address)
    reader, _ = await connect(address)
    servers.stop()
    assert servers.status() == {}
    assert await closed(reader), "an open connection outlived stop()"
    with pytest.raises(ConnectionRefusedError):
        await connect(address)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect((address.host, address.port))
        await loop.sock_sendall(s, b"q")
        with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable
            async with asyncio.timeout(WAIT):
                await loop.sock_recv(s, 100)


# -- the option's syntax -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host", "port", "shown"),
    [
        ("127.0.0.1:8053", "127.0.0.1", 8053, "127.0.0.1:8053"),
        ("::1:8053", "::1", 8053, "[::1]:8053"),
        ("[::1]:8053", "::1", 8053, "[::1]:8053"),
        (" 10.0.0.1:53 ", "10.0.0.1", 53, "10.0.0.1:53"),
        ("[fd00::0001]:65535", "fd00::1", 65535, "[fd00::1]:65535"),
        ("127.0.0.2:1", "127.0.0.2", 1, "127.0.0.2:1"),
    ],
    ids=["v4", "v6-bare", "v6-brackets", "spaces", "v6-canonical", "lowest-port"],
)
def test_listen_addresses_parse(value: str, host: str, port: int, shown: str) -> None:
    address = parse_listen(value)
    assert (address.host, address.port, str(address)) == (host, port, shown)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1", "not HOST:PORT"),
        ("8053", "not HOST:PORT"),
        ("::1", "not an IP address"),
        ("[::1]8053", "not HOST:PORT"),
        ("localhost:8053", "not an IP address"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("127.0.0.1:65536", "port must be 1-65535"),
        ("127.0.0.1:-1", "port must be 1-65535"),
        ("127.0.0.1:८०", "port must be 1-65535"),
        ("127.0.0.1:", "port must be 1-65535"),
        ("0.0.0.0:8053", "wildcard"),
        ("[::]:8053", "wildcard"),
        ("", "not HOST:PORT"),
    ],
    ids=[
        "no-port",
        "port-only",
        "v6-no-port",
        "bracket-no-colon",
        "name",
        "port-zero",
        "port-too-big",
        "port-negative",
        "port-not-ascii",
        "port-empty",
        "wildcard-v4",
        "wildcard-v6",
        "empty",
    ],
)
def test_bad_listen_addresses_name_the_value_and_the_fix(value: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_listen(value)
    message = str(raised.value)
    assert repr(value) in message and problem in message and "Fix:" in message


def test_an_address_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'\[::1\]:8053'.* listed twice .*'::1:8053'"):
        parse_listens(["::1:8053", "127.0.0.1:8053", "[::1]:8053"])
