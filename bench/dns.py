"""DNS load: answers per second from a DNS listener, with a small UDP client on the standard
library (independent of mitmproxy's DNS code, as tests/support/dns_client.py is).

`parallel` connected UDP sockets each keep one query in flight, in one thread with a selector:
a query answered (with its id) is timed and the next one sent; a query unanswered after
`timeout` counts as lost and is replaced. The run ends when `count` queries are sent and
settled, or after `duration` seconds, so it is bounded in count and in time.
"""

from __future__ import annotations

import secrets
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

QTYPES = {"A": 1, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def query(qid: int, name: str, qtype: str) -> bytes:
    """One standard query (recursion desired) with one question of class IN."""
    labels = [label.encode("ascii") for label in name.strip(".").split(".")]
    wire = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        + wire
        + struct.pack("!HH", QTYPES[qtype], 1)
    )


def reply_id_and_rcode(reply: bytes) -> tuple[int, str] | None:
    """The id and response code of a DNS response; None for anything shorter than a header or
    not marked as a response."""
    if len(reply) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", reply)
    if not flags & 0x8000:
        return None
    return qid, RCODES.get(flags & 0xF, str(flags & 0xF))


@dataclass
class Answers:
    sent: int = 0
    expected: int = 0  # answers with the expected response code
    other: int = 0  # answers with another code
    lost: int = 0  # no answer within the timeout, or a socket error
    unfinished: int = 0  # still in flight when the time was up (neither answered nor lost)
    seconds: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rcodes: dict[str, int] = field(default_factory=dict)


SocketFactory = Callable[[], socket.socket]


def load(
    address: tuple[str, int],
    name: str,
    qtype: str,
    expect: str,
    *,
    count: int,
    duration: float,
    parallel: int = 8,
    timeout: float = 1.0,
    sockets: SocketFactory = lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
) -> Answers:
    """Ask `name` `qtype` up to `count` times (at most `duration` s); `expect` is the response
    code that counts as the listener's right answer (NOERROR, REFUSED, NXDOMAIN)."""
    out = Answers()
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, tuple[int, float]] = {}
    open_sockets = []
    try:
        for _ in range(parallel):
            s = sockets()
            open_sockets.append(s)
            s.connect(address)
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        cpu0, start = time.thread_time(), time.monotonic()
        deadline = start + duration
        while time.monotonic() < deadline:
            for s in open_sockets:
                if s not in pending and out.sent < count:
                    _send(s, name, qtype, pending, out)
            if not pending:
                break
            for key, _ in selector.select(timeout=min(0.05, timeout)):
                _receive(key.fileobj, pending, expect, out)  # type: ignore[arg-type]
            _expire(pending, timeout, out)
        out.unfinished = len(pending)
        out.seconds = time.monotonic() - start
        out.client_cpu = time.thread_time() - cpu0
    finally:
        selector.close()
        for s in open_sockets:
            s.close()
    return out


def _send(s: socket.socket, name: str, qtype: str, pending: dict, out: Answers) -> None:
    qid = secrets.randbelow(65536)
    try:
        s.send(query(qid, name, qtype))
    except OSError:
        out.lost += 1
        out.sent += 1
        return
    out.sent += 1
    pending[s] = (qid, time.monotonic())


def _receive(s: socket.socket, pending: dict, expect: str, out: Answers) -> None:
    for _ in range(16):  # bounded: drain what is queued, late answers to expired ids included
        try:
            reply = s.recv(65535)
        except BlockingIOError:
            return
        except OSError:  # an ICMP error: nothing listens there
            if s in pending:
                del pending[s]
                out.lost += 1
            return
        parsed = reply_id_and_rcode(reply)
        if parsed is None or s not in pending or parsed[0] != pending[s][0]:
            continue  # a late answer to a query already counted as lost
        _qid, sent_at = pending.pop(s)
        rcode = parsed[1]
        out.rcodes[rcode] = out.rcodes.get(rcode, 0) + 1
        if rcode == expect:
            out.expected += 1
            out.latencies.append(time.monotonic() - sent_at)
        else:
            out.other += 1


def _expire(pending: dict, timeout: float, out: Answers) -> None:
    now = time.monotonic()
    for s in [s for s, (_qid, sent_at) in pending.items() if now - sent_at > timeout]:
        del pending[s]
        out.lost += 1
