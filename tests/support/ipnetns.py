"""Named network namespaces (`ip netns add apt-tp-<random>`) for tests and the bench: made, used
and removed by their maker, never the host's own.

Sockets are opened inside a namespace by switching only the calling thread into it (setns is
per-thread) for the moment the socket is made; the socket stays in that namespace afterwards.
The same trick with setfsuid (also per-thread) makes a socket owned by another uid, which is
what an nftables `meta skuid` rule matches (the credentials of the socket's file).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def _setfsuid(uid: int) -> int:
    """Set this thread's filesystem uid; returns the previous one."""
    return int(_libc.setfsuid(uid))


@contextlib.contextmanager
def entered(name: str, uid: int | None = None) -> Iterator[None]:
    """This thread inside namespace `name` (and with fsuid `uid`), for as long as the block."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    except OSError:
        os.close(home)
        raise
    previous_fsuid = None
    try:
        os.setns(target, os.CLONE_NEWNET)
        if uid is not None:
            previous_fsuid = _setfsuid(uid)
        yield
    finally:
        if previous_fsuid is not None:
            _setfsuid(previous_fsuid)
        os.setns(home, os.CLONE_NEWNET)
        os.close(target)
        os.close(home)


class Namespace:
    """`ip netns add <prefix>-<random>` with loopback up; `delete()` removes it and its files."""

    def __init__(self, prefix: str = "apt-tp") -> None:
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self.etc = Path("/etc/netns") / self.name
        self.ip("netns", "add", self.name, netns=False)
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def ip(self, *args: str, netns: bool = True) -> None:
        command = ["ip", *(["-n", self.name] if netns else []), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=10)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(
        self, command: Sequence[str], timeout: float = 10, **kwargs
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.exec_prefix(), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def write_etc(self, name: str, text: str) -> Path:
        """A file `ip netns exec` bind-mounts over /etc/<name> for processes in this namespace."""
        self.etc.mkdir(parents=True, exist_ok=True)
        path = self.etc / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def entered(self, uid: int | None = None) -> contextlib.AbstractContextManager[None]:
        return entered(self.name, uid)

    def make_socket(self, family: int = socket.AF_INET, uid: int | None = None) -> socket.socket:
        """A TCP socket that lives in this namespace, owned by `uid` (for skuid rules)."""
        with self.entered(uid):
            return socket.socket(family, socket.SOCK_STREAM)

    def connect(
        self, address: tuple[str, int], uid: int | None = None, timeout: float = 10
    ) -> socket.socket:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        s = self.make_socket(family, uid)
        s.settimeout(timeout)
        try:
            s.connect(address)
        except BaseException:
            s.close()
            raise
        return s

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        shutil.rmtree(self.etc, ignore_errors=True)
