"""Request heads that two parsers could read differently are refused; hop-by-hop headers are
dropped before a request is forwarded. Over raw (method, target, fields), as read off the wire.

mitmproxy's HTTP/1 reader keeps a bare CR, a NUL or folded lines inside header values, and
whitespace at the end of a header name: an upstream that splits lines on CR, or trims names, then
sees headers (a second Host) that the proxy never checked. RFC 9110 section 5.5 and RFC 9112
section 5.1 let a recipient reject them; a proxy must. The same rules hold for HTTP/2 requests.

Only `Upgrade: websocket` may change a connection's protocol: any other upgrade (h2c in any
spelling, TLS, a list) would turn the stream into something no hook reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from addons.core import reasons

Fields = tuple[tuple[bytes, bytes], ...]

# RFC 9110 5.6.2: the characters of a token (a method, a header name, a Connection option).
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# Never forwarded: they are meant for this proxy, or for one connection only (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset({b"proxy-authorization", b"proxy-connection", b"keep-alive"})
# Connection options that name no header to drop.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
# Naming these in Connection would change how the upstream frames or routes the request.
_PROTECTED = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"upgrade", b"connection"}
)


# The same sets as regular expressions: checked for every request, in C rather than per byte.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_VALUE = re.compile(rb"[\r\n\x00]")
_NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")


def is_token(value: bytes) -> bool:
    return _TOKEN.fullmatch(value) is not None


def _bad_target(target: bytes) -> bool:
    # Controls, spaces and DEL: the request line has exactly two spaces, and the target none.
    return _NOT_IN_TARGET.search(target) is not None


def values(fields: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The values of the fields called `name` (lower case), in order. A name that is not ASCII
    never lower-cases to an ASCII one here; mitmproxy's Unicode lower() agrees for these names."""
    return [value for field, value in fields if field.lower() == name]


def text(value: bytes) -> str:
    """A field value as mitmproxy's Headers hand it out."""
    return value.decode("utf-8", "surrogateescape")


def _connection_tokens(fields: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    tokens: list[bytes] = []
    for value in values(fields, b"connection"):
        tokens += [t.strip().lower() for t in value.split(b",") if t.strip()]
    return tokens


def is_websocket_upgrade(fields: Sequence[tuple[bytes, bytes]]) -> bool:
    upgrades = values(fields, b"upgrade")
    # Compared as mitmproxy's Headers read it (str strip and lower), so both agree on a WebSocket.
    return len(upgrades) == 1 and text(upgrades[0]).strip().lower() == "websocket"


def refusal(method: bytes, target: bytes, fields: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The reason to refuse this request head before anything is forwarded, or None."""
    if not is_token(method) or _bad_target(target):
        return reasons.BAD_REQUEST.name
    for name, value in fields:
        if _TOKEN.fullmatch(name) is None or _NOT_IN_VALUE.search(value) is not None:
            return reasons.BAD_REQUEST.name
    for token in _connection_tokens(fields):
        if not is_token(token) or (token in _PROTECTED and token != b"upgrade"):
            return reasons.BAD_REQUEST.name
    if values(fields, b"upgrade") and not is_websocket_upgrade(fields):
        return reasons.UPGRADE_NOT_ALLOWED.name
    return None


def strip_hop_by_hop(fields: Fields) -> Fields:
    """The fields without those meant for this proxy or this connection; `fields` itself when
    none is dropped. `refusal` has passed."""
    tokens = _connection_tokens(fields)
    named = {t for t in tokens if t not in _CONNECTION_OPTIONS}
    drop = HOP_BY_HOP | named
    kept = tuple((name, value) for name, value in fields if name.lower() not in drop)
    if named:
        # Connection itself stays for mitmproxy and the upstream, with only its options.
        options = b", ".join(t for t in dict.fromkeys(tokens) if t in _CONNECTION_OPTIONS)
        kept = tuple((n, v) for n, v in kept if n.lower() != b"connection")
        if options:
            kept += ((b"Connection", options),)
    # As many fields as before: nothing was dropped, and the head goes on as it came.
    return fields if len(kept) == len(fields) else kept
