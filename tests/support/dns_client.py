"""A small DNS client on the standard library: build queries (well-formed or not), send them
over UDP or TCP, and read the answers. Independent of mitmproxy's own DNS code on purpose."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

A, NS, CNAME, SOA, NULL, PTR, MX, TXT, AAAA, SRV, OPT, SVCB, HTTPS, ANY = (
    1,
    2,
    5,
    6,
    10,
    12,
    15,
    16,
    28,
    33,
    41,
    64,
    65,
    255,
)
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

SocketFactory = Callable[[int, int], socket.socket]


def plain_socket(family: int, kind: int) -> socket.socket:
    return socket.socket(family, kind)


def encode_name(name: str | bytes | Sequence[bytes]) -> bytes:
    """Wire form of a name: a str or bytes is split on dots, a sequence is taken as raw labels
    (so a label may hold anything, dots included)."""
    if isinstance(name, str):
        name = name.encode()
    labels = [x for x in name.split(b".") if x] if isinstance(name, bytes) else list(name)
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def question(name: str | bytes | Sequence[bytes], qtype: int = A, qclass: int = 1) -> bytes:
    return encode_name(name) + struct.pack("!HH", qtype, qclass)


def query(
    name: str | bytes | Sequence[bytes] = "",
    qtype: int = A,
    *,
    qid: int | None = None,
    qclass: int = 1,
    questions: Sequence[bytes] | None = None,
    opcode: int = 0,
    edns: bool = False,
) -> bytes:
    """A query packet. `questions` replaces the single question built from name/type/class."""
    qid = random.randrange(65536) if qid is None else qid
    body = list(questions) if questions is not None else [question(name, qtype, qclass)]
    flags = 0x0100 | (opcode << 11)  # recursion desired
    additional = b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, 0) if edns else b""
    header = struct.pack("!HHHHHH", qid, flags, len(body), 0, 0, 1 if edns else 0)
    return header + b"".join(body) + additional


@dataclass
class Answer:
    qid: int
    rcode: int
    questions: int
    records: list[tuple[int, int, bytes]] = field(default_factory=list)  # (type, ttl, rdata)

    def addresses(self) -> list[str]:
        return [
            str(ipaddress.ip_address(rdata))
            for rtype, _, rdata in self.records
            if rtype in (A, AAAA)
        ]


def _skip_name(data: bytes, offset: int) -> int:
    for _ in range(128):  # bounded: a name has at most 127 labels
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset
    raise ValueError("name too long")


def parse(data: bytes) -> Answer:
    qid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    answer = Answer(qid, flags & 0xF, qd)
    offset = 12
    for _ in range(qd):
        offset = _skip_name(data, offset) + 4
    for _ in range(an):
        offset = _skip_name(data, offset)
        rtype, _cls, ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        answer.records.append((rtype, ttl, data[offset : offset + length]))
        offset += length
    return answer


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_exchange(
    port: int,
    packet: bytes,
    timeout: float = 5.0,
    sockets: SocketFactory = plain_socket,
    host: str = "127.0.0.1",
) -> bytes | None:
    """Send one datagram; the first datagram back, or None if none came within `timeout`."""
    with sockets(family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _recv_exact(s: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = s.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def tcp_exchange(
    port: int,
    packet: bytes,
    timeout: float = 5.0,
    sockets: SocketFactory = plain_socket,
    framed: bool = True,
    host: str = "127.0.0.1",
) -> bytes | None:
    """Send one length-prefixed message (or `packet` as is when not `framed`); the first message
    back, or None when the proxy closed or said nothing within `timeout`."""
    with sockets(family(host), socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(struct.pack("!H", len(packet)) + packet if framed else packet)
        try:
            head = _recv_exact(s, 2)
            if head is None:
                return None
            return _recv_exact(s, struct.unpack("!H", head)[0])
        except (TimeoutError, ConnectionError):
            return None


def ask(
    port: int,
    name: str | bytes | Sequence[bytes],
    qtype: int = A,
    transport: str = "udp",
    sockets: SocketFactory = plain_socket,
    host: str = "127.0.0.1",
    **options,
) -> Answer:
    """One query, one parsed answer (its id checked); raises AssertionError if none came."""
    packet = query(name, qtype, **options)
    exchange = udp_exchange if transport == "udp" else tcp_exchange
    reply = exchange(port, packet, sockets=sockets, host=host)
    assert reply is not None, f"no DNS answer over {transport} for {name!r} type {qtype}"
    answer = parse(reply)
    assert answer.qid == struct.unpack_from("!H", packet)[0], "answer for another query id"
    return answer
