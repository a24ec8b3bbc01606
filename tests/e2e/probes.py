"""Network probes the e2e tests run INSIDE the pod's containers, plus the DNS codec they share
with the decoy (tests/e2e/decoy.py).

Standard library only, one file: the tests run it as ``python3 -c "<this file>" '<json specs>'``
in the workload (the executor image's python3) and in the sidecar (the sidecar image's), so no
file has to be copied into a read-only container. It prints one JSON list of results, in order.

A spec is a dict with ``kind`` in tcp | udp | dns | ping and the fields of that probe's function
below. No probe loops without bound: every wait has a timeout and every read a size.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
QTYPES |= {"SRV": 33, "SVCB": 64, "HTTPS": 65, "ANY": 255, "NULL": 10}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_DNS = 4096
MAX_READ = 4096


# --- DNS (RFC 1035), just what the probes and the decoy need ----------------------------------


def build_query(name: str, qtype: str, qid: int) -> bytes:
    """A recursive query for one question, class IN."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"DNS label {label!r} of {name!r} must be 1-63 bytes")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at `pos` (compression pointers followed, bounded) and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else pos + 1)
        labels.append(data[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    raise ValueError("DNS name with too many labels or a pointer loop")


def parse_message(data: bytes) -> dict:
    """id, flags, rcode name, the questions and the answers (A/AAAA as text, others as type)."""
    qid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    pos = 12
    questions = []
    for _ in range(qdcount):
        name, pos = read_name(data, pos)
        qtype, _qclass = struct.unpack("!HH", data[pos : pos + 4])
        questions.append([name, qtype])
        pos += 4
    answers = []
    for _ in range(ancount):
        name, pos = read_name(data, pos)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        rdata = data[pos + 10 : pos + 10 + rdlen]
        pos += 10 + rdlen
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        else:
            answers.append(f"type{rtype}")
    return {
        "id": qid,
        "response": bool(flags & 0x8000),
        "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
        "questions": questions,
        "answers": answers,
    }


def build_answer(query: bytes, v4: str, v6: str) -> bytes:
    """The decoy's answer to anything: A -> v4, AAAA -> v6, any other type: NOERROR, empty."""
    qid, flags = struct.unpack("!HH", query[:4])
    _name, end = read_name(query, 12)
    qtype = struct.unpack("!H", query[end : end + 2])[0]
    question = query[12 : end + 4]
    record = b""
    if qtype in (1, 28):
        family, addr = (socket.AF_INET, v4) if qtype == 1 else (socket.AF_INET6, v6)
        rdata = socket.inet_pton(family, addr)
        record = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 5, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1 if record else 0, 0, 0)
    return header + question + record


# --- probes ------------------------------------------------------------------------------------


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def tcp(host: str, port: int, send: str = "", timeout: float = 3.0) -> dict:
    """Connect, send `send`, read until EOF / reset / timeout. Never more than MAX_READ bytes."""
    out: dict = {"connect": "ok", "received": "", "end": ""}
    t0 = time.monotonic()
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except OSError as exc:
            out["connect"] = _error(exc)
            out["elapsed"] = round(time.monotonic() - t0, 3)
            return out
        got = b""
        try:
            if send:
                s.sendall(send.encode())
            while len(got) < MAX_READ:
                chunk = s.recv(MAX_READ - len(got))
                if not chunk:
                    out["end"] = "eof"
                    break
                got += chunk
            else:
                out["end"] = "limit"
        except OSError as exc:
            out["end"] = _error(exc)
        out["received"] = got[:200].decode("latin-1")
    out["elapsed"] = round(time.monotonic() - t0, 3)
    return out


def udp(host: str, port: int, send: str = "probe", timeout: float = 2.0) -> dict:
    """A connected UDP socket: send one datagram, wait for a reply or an ICMP error."""
    out: dict = {"sent": False, "reply": "", "error": ""}
    t0 = time.monotonic()
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            s.send(send.encode())
            out["sent"] = True
            out["reply"] = s.recv(MAX_READ)[:200].decode("latin-1")
        except OSError as exc:
            out["error"] = _error(exc)
    out["elapsed"] = round(time.monotonic() - t0, 3)
    return out


def dns(
    server: str, name: str, qtype: str = "A", port: int = 53, transport: str = "udp",
    timeout: float = 3.0,
) -> dict:  # fmt: skip
    """One question to `server`; the parsed answer, or the error."""
    qid = int.from_bytes(os.urandom(2), "big")
    query = build_query(name, qtype, qid)
    out: dict = {"error": ""}
    t0 = time.monotonic()
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(_family(server), kind) as s:
            s.settimeout(timeout)
            s.connect((server, port))
            if transport == "udp":
                s.send(query)
                data = s.recv(MAX_DNS)
            else:
                s.sendall(struct.pack("!H", len(query)) + query)
                data = _read_exact(s, struct.unpack("!H", _read_exact(s, 2))[0])
        answer = parse_message(data)
        if answer["id"] != qid or not answer["response"]:
            raise ValueError(f"not the answer to query {qid}: {answer}")
        out |= answer
    except (OSError, ValueError, struct.error, IndexError) as exc:
        out["error"] = _error(exc) if isinstance(exc, OSError) else f"bad answer: {exc}"
    out["elapsed"] = round(time.monotonic() - t0, 3)
    return out


def _read_exact(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise ConnectionError(errno.ECONNRESET, "closed before the whole answer")
        got += chunk
    return got


def ping(host: str, timeout: float = 1.5) -> dict:
    """One ICMP echo over an unprivileged ICMP socket (net.ipv4.ping_group_range)."""
    v6 = ":" in host
    out: dict = {"socket": "ok", "reply": False, "error": ""}
    t0 = time.monotonic()
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    try:
        s = socket.socket(_family(host), socket.SOCK_DGRAM, proto)
    except OSError as exc:
        # Not a network answer at all: the tests treat it as a broken probe, not a pass.
        out["socket"] = _error(exc)
        return out
    with s:
        s.settimeout(timeout)
        echo, reply = (128, 129) if v6 else (8, 0)
        try:
            # The kernel fills in the identifier and the checksum of a ping socket's packets.
            s.sendto(struct.pack("!BBHHH", echo, 0, 0, 0, 1) + b"e2e-probe", (host, 0))
            data = s.recv(MAX_READ)
            out["reply"] = bool(data) and data[0] == reply
        except OSError as exc:
            out["error"] = _error(exc)
    out["elapsed"] = round(time.monotonic() - t0, 3)
    return out


PROBES: dict[str, Callable[..., dict]] = {"tcp": tcp, "udp": udp, "dns": dns, "ping": ping}


def run(specs: list[dict]) -> list[dict]:
    results = []
    for spec in specs:
        args = {k: v for k, v in spec.items() if k != "kind"}
        results.append(PROBES[spec["kind"]](**args))
    return results


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
