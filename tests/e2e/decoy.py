"""The decoy: counting listeners inside the upstream's network namespace, at addresses the
policy never allows. Whatever reaches them got past the pod's egress enforcement.

    python -m tests.e2e.decoy --state FILE --answer-v4 A --answer-v6 B ADDR [ADDR ...]

listens on every ADDR: TCP 443, 80, 8443, 22 and 53, UDP 443, 53 and 9999. Port 53 (UDP and TCP)
is a DNS server that answers any question (A -> A, AAAA -> B: never the real upstream). Every
other TCP connection gets the banner ``DECOY tcp <port>`` and is closed; every other datagram
(one that is no DNS question, on 53 too) gets ``DECOY udp <port>`` back. After each event it rewrites FILE (JSON, atomically):
``{"ready": true, "counts": {"tcp/ADDR/PORT": n, "udp/ADDR/PORT": n, "dns/ADDR": n}, "names": [...]}``
(``dns/ADDR`` counts parsed questions over either transport; ``names``, the last questions).

`Decoy` starts it with ``ip netns exec`` and reads the counters for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.e2e` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.probes import build_answer, read_name

TCP_PORTS = (443, 80, 8443, 22, 53)
UDP_PORTS = (443, 53, 9999)
DNS_PORT = 53
BANNER = "DECOY"
MAX_TCP_BYTES = 65536
IDLE_SECONDS = 5.0
KEEP_NAMES = 50
START_TIMEOUT = 20.0
ROOT = Path(__file__).resolve().parents[2]


class Counters:
    def __init__(self, path: Path):
        self.path = path
        self.counts: dict[str, int] = {}
        self.names: list[str] = []

    def bump(self, key: str, name: str | None = None) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        if name is not None:
            self.names = [*self.names, name][-KEEP_NAMES:]
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"ready": True, "counts": self.counts, "names": self.names}))
        os.replace(tmp, self.path)


class Answers:
    def __init__(self, counters: Counters, v4: str, v6: str):
        self.counters, self.v4, self.v6 = counters, v4, v6

    def dns(self, local: str, query: bytes) -> bytes | None:
        """Count a parsed question and answer it; None for bytes that are no question."""
        try:
            name, _ = read_name(query, 12)
            answer = build_answer(query, self.v4, self.v6)
        except (ValueError, IndexError, struct.error, OSError):
            return None
        self.counters.bump(f"dns/{local}", name)
        return answer


class TcpCounter(asyncio.Protocol):
    def __init__(self, answers: Answers, local: str, port: int):
        self.answers, self.local, self.port = answers, local, port
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.answers.counters.bump(f"tcp/{self.local}/{self.port}")
        if self.port != DNS_PORT:
            transport.write(f"{BANNER} tcp {self.port}\n".encode())
            transport.close()
            return
        self.idle = asyncio.get_running_loop().call_later(IDLE_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if len(self.buf) > MAX_TCP_BYTES:
            self.transport.close()
            return
        while len(self.buf) >= 2:
            size = struct.unpack("!H", self.buf[:2])[0]
            if len(self.buf) < 2 + size:
                return
            query, self.buf = self.buf[2 : 2 + size], self.buf[2 + size :]
            answer = self.answers.dns(self.local, query)
            if answer is not None:
                self.transport.write(struct.pack("!H", len(answer)) + answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()


class UdpCounter(asyncio.DatagramProtocol):
    def __init__(self, answers: Answers, local: str, port: int):
        self.answers, self.local, self.port = answers, local, port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        assert self.transport is not None
        self.answers.counters.bump(f"udp/{self.local}/{self.port}")
        answer = self.answers.dns(self.local, data) if self.port == DNS_PORT else None
        # Anything but a question (on 53 too) gets the banner: proof it arrived here.
        self.transport.sendto(answer or f"{BANNER} udp {self.port}\n".encode(), addr)


async def serve(addrs: list[str], counters: Counters, v4: str, v6: str) -> None:
    loop = asyncio.get_running_loop()
    answers = Answers(counters, v4, v6)
    for addr in addrs:
        for port in TCP_PORTS:
            tcp = functools.partial(TcpCounter, answers, addr, port)
            await loop.create_server(tcp, addr, port, reuse_address=True)
        for port in UDP_PORTS:
            udp = functools.partial(UdpCounter, answers, addr, port)
            await loop.create_datagram_endpoint(udp, local_addr=(addr, port))
    counters.write()  # ready: every listener is bound
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--answer-v4", required=True)
    parser.add_argument("--answer-v6", required=True)
    parser.add_argument("addrs", nargs="+")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.addrs, Counters(args.state), args.answer_v4, args.answer_v6))
    return 0


class Decoy:
    """The decoy process in `netns` (``ip netns exec``), its counters read from its state file."""

    def __init__(self, workdir: Path, netns: str, addrs: list[str], v4: str, v6: str):
        self.workdir, self.netns, self.addrs = workdir, netns, addrs
        self.answer = (v4, v6)
        self.state = workdir / "decoy.json"
        self.log_path = workdir / "decoy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Decoy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "ip", "netns", "exec", self.netns, sys.executable, "-I", str(Path(__file__)),
            "--state", str(self.state), "--answer-v4", self.answer[0],
            "--answer-v6", self.answer[1], *self.addrs,
        ]  # fmt: skip
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=ROOT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the decoy did not start (exit {self.proc.poll()}):\n{self.logs()}"
                )
            time.sleep(0.05)
        return self

    def counts(self) -> dict[str, int]:
        return dict(json.loads(self.state.read_text())["counts"])

    def names(self) -> list[str]:
        return list(json.loads(self.state.read_text())["names"])

    def logs(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
