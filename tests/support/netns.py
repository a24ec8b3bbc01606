"""A private network namespace for one test: only its own loopback, with a counting name server
on 127.0.0.1:53, and a proxy whose /etc/resolv.conf points there. Whatever DNS query the proxy
lets out lands on that server and is counted; nothing can reach any other network.

The namespace is held by a sleeping process (`unshare --net`); the proxy joins it with
`nsenter`, and the test's own sockets are made inside it by a short-lived thread that `setns`es
first (a socket stays in the namespace it was made in; the test's main thread never moves).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.support.processes import ManagedProcess, wait_until
from tests.support.proxy import PROXY_COMMANDS, Proxy

T = TypeVar("T")
HOLD_SECONDS = 900  # the namespace outlives no test run by more than this


class Netns:
    def __init__(self, workdir: Path) -> None:
        self.holder = ManagedProcess(
            ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec sleep {HOLD_SECONDS}"],
            workdir,
            "netns-holder",
        )
        self.path = f"/proc/{self.holder.pid}/ns/net"
        wait_until(self._ready, 10, "the test network namespace")

    def _ready(self) -> bool:
        if not self.holder.alive():
            raise RuntimeError(f"unshare --net failed\n{self.holder.describe()}")
        try:
            if os.readlink(self.path) == os.readlink("/proc/self/ns/net"):
                return False
            probe = self.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            return False
        with probe:
            probe.bind(("127.0.0.1", 0))  # fails until lo is up
        return True

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """Call `func` in a new thread that has joined the namespace; return what it returns."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                with open(self.path) as ns:
                    os.setns(ns.fileno(), os.CLONE_NEWNET)
                outcome["value"] = func(*args)
            except BaseException as e:  # handed back to the caller
                outcome["error"] = e

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(60)
        if "error" in outcome:
            raise outcome["error"]
        if "value" not in outcome:
            raise TimeoutError("a call inside the test namespace did not finish")
        return outcome["value"]

    def socket(self, family: int, kind: int) -> socket.socket:
        return self.run(socket.socket, family, kind)

    def enter_command(self) -> list[str]:
        return ["nsenter", f"--net={self.path}"]

    def stop(self) -> None:
        self.holder.stop()


class CountingNameServer:
    """127.0.0.1:53 (UDP and TCP) inside the namespace: counts every query and answers REFUSED
    at once, so a resolver that asks it does not wait."""

    def __init__(self, netns: Netns) -> None:
        self.udp = netns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = netns.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp.bind(("127.0.0.1", 53))
        self.tcp.bind(("127.0.0.1", 53))
        self.tcp.listen(16)
        self.queries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        with self._lock:
            self.queries += 1

    @staticmethod
    def _refused(packet: bytes) -> bytes:
        if len(packet) < 12:
            return b""
        qid, flags = struct.unpack_from("!HH", packet)
        return struct.pack("!HH", qid, 0x8000 | (flags & 0x7900) | 5) + packet[4:12] + packet[12:]

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.1)
            for sock in ready:
                try:
                    if sock is self.udp:
                        packet, peer = self.udp.recvfrom(65535)
                        self._count()
                        self.udp.sendto(self._refused(packet), peer)
                    else:
                        conn, _ = self.tcp.accept()
                        self._count()
                        conn.close()
                except OSError:
                    continue

    def reset(self) -> None:
        with self._lock:
            self.queries = 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.udp.close()
        self.tcp.close()


def resolv_conf(path: Path) -> Path:
    path.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    return path


@dataclass
class NetnsProxy(Proxy):
    """A Proxy run inside `netns`, with /etc/resolv.conf naming the counting server there."""

    netns: Netns | None = None
    resolv: Path | None = None
    dns_port: int = 8053

    def __post_init__(self) -> None:
        assert self.netns is not None and self.resolv is not None
        inner = self.base_command or PROXY_COMMANDS[self.kind]
        mount = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        self.base_command = [
            *self.netns.enter_command(),
            "sh",
            "-c",
            mount,
            str(self.resolv),
            *inner,
        ]

    def health(self, path: str) -> tuple[int, str]:
        assert self.netns is not None
        return self.netns.run(Proxy.health, self, path)

    def sockets(self, family: int, kind: int) -> socket.socket:
        assert self.netns is not None
        return self.netns.socket(family, kind)

    def vm(self, field: str) -> int:
        """A /proc status field of the proxy process, in KiB (VmRSS, VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


DNS_PORT = 8053
# Beside the test hosts: a name with a public IPv6 address, for AAAA answers (only answered,
# never connected to: the namespace has no route anywhere).
EXTRA_HOSTS = "2001:4860:4860::8888 six.test\n"  # public: kept; never dialled
DNS_DOMAINS = (
    "upstream.test",
    "*.wild.test",
    "private.test",
    "metadata.test",
    "mapped.test",
    "six.test",
)


def dns_policy(path: Path) -> Path:
    quoted = ", ".join(f'"{d}"' for d in DNS_DOMAINS)
    path.write_text(
        f"version: v1\nallowed_domains: [{quoted}]\nallow_ranges: ['127.0.0.1/32', '::1/128']\n"
    )
    return path


def start_dns_proxy(
    kind: str,
    workdir: Path,
    netns: Netns,
    upstream_ca: Path,
    base_command: list[str] | None = None,
    wait_ready: bool = True,
    dns_port: int = DNS_PORT,
    extra_args: list[str] | None = None,
) -> NetnsProxy:
    """A proxy in `netns` with a regular and a DNS listener (127.0.0.1 and ::1 on `dns_port`,
    UDP and TCP), as the sidecar's entrypoint turns it on; `extra_args` replace those options."""
    from tests.support.testnet import HOSTS

    workdir.mkdir(parents=True, exist_ok=True)
    hosts = workdir / "hosts"
    hosts.write_text(HOSTS + EXTRA_HOSTS)
    proxy = NetnsProxy(
        kind,
        workdir,
        hosts,
        upstream_ca,
        dns_policy(workdir / "policy.yaml"),
        extra_args
        if extra_args is not None
        else ["--set", f"dns_listen=127.0.0.1:{dns_port}", "--set", f"dns_listen=::1:{dns_port}"],
        base_command,
        netns=netns,
        resolv=resolv_conf(workdir / "resolv.conf"),
        dns_port=dns_port,
    )
    return proxy.start(wait_ready=wait_ready)
