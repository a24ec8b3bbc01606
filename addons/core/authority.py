"""The Host binding: every authority a request names (its Host field, its `:authority` or
absolute-form authority) must be the destination that was approved, host and port.

`parse_authority` reads an authority exactly as mitmproxy's
`mitmproxy.net.http.url.parse_authority(authority, check=False)` does (12.3.1), so that the
binding judges the same host and port that mitmproxy routes by; tests/unit/test_core_authority.py
compares the two on generated input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from addons.core.requests import text, values
from addons.policy import same_host

_AUTHORITY = re.compile(r"^(?P<host>[^:]+|\[.+\])(?::(?P<port>\d+))?$")
_LABEL = re.compile(rb"[A-Z\d\-_]{1,63}$", re.IGNORECASE)


def _valid_host(host: str) -> bool:
    """mitmproxy.net.check.is_valid_host for a str: a DNS name (underscores allowed) or an IP."""
    try:
        encoded = host.encode("idna")
        encoded.decode("idna")
    except ValueError:  # UnicodeError is a ValueError
        return False
    if len(encoded) > 255:
        return False
    if encoded.endswith(b"."):
        encoded = encoded[:-1]
    if all(_LABEL.match(label) for label in encoded.split(b".")):
        return True
    try:
        ipaddress.ip_address(encoded.decode("idna"))
    except ValueError:
        return False
    return True


def parse_authority(authority: str) -> tuple[str, int | None]:
    """(host, port or None); brackets around an IPv6 host are stripped. An authority that does
    not parse comes back whole, with no port."""
    match = _AUTHORITY.match(authority)
    if not match:
        return authority, None
    host = match["host"]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not _valid_host(host):
        return authority, None
    if not match["port"]:
        return host, None
    port = int(match["port"])
    return (host, port) if 0 <= port <= 65535 else (authority, None)


def names(authority: str, host: str, port: int) -> bool:
    """Whether `authority` names `host` (a host that was approved, so well-formed) and `port`."""
    if authority == host or authority == f"{host}:{port}":
        return True  # the common spelling, as parse_authority would read it
    named_host, named_port = parse_authority(authority)
    if named_host != host and not same_host(named_host, host):
        return False
    return named_port is None or named_port == port


def binding_holds(
    fields: Sequence[tuple[bytes, bytes]], authority: str, host: str, port: int
) -> bool:
    """Whether the request names only `host:port`: at most one Host field, and every Host value
    and the authority (if any) name it. A different port is a different destination."""
    hosts = values(fields, b"host")
    if len(hosts) > 1:
        return False
    authorities = [text(value) for value in hosts]
    if authority:
        authorities.append(authority)
    return all(names(each, host, port) for each in authorities)
