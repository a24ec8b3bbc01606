"""Name resolution for decisions: every address a name resolves to is returned, so that every
one can be checked, and the connection can be pinned to one that was."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from addons import policy
from addons.policy import IPAddress

DNS_TIMEOUT = 10.0


@dataclass(frozen=True)
class Approval:
    """A destination that a decision allowed, with the addresses that were checked."""

    host: str
    port: int
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Refusal:
    """A destination a decision denied, answered later (inside TLS) with its reason."""

    host: str
    port: int
    reason: str


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    literal = policy.parse_ip(host)
    if literal is not None:
        return (literal,)
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(policy.normalize_host(host), port, type=socket.SOCK_STREAM), DNS_TIMEOUT
    )
    # Drop IPv6 zone ids ("fe80::1%eth0"): the address alone decides.
    found = (ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    return tuple(dict.fromkeys(found))
