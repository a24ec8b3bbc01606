"""What a client's first bytes inside a tunnel are: TLS, an HTTP request, neither, or not yet
known. addons.protocol_gate closes a connection that is neither, so nothing is relayed raw.

`classify` reads the bytes the same way whatever the client's write sizes: it answers MORE until
a prefix decides, and a decided prefix never changes its answer as more bytes arrive.
"""

from __future__ import annotations

import enum

from addons.core.requests import TCHAR

# RFC 9110 5.6.2: a method is a token.
MAX_METHOD = 32
# RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line, as
# mitmproxy's HTTP/1 reader does. More than a few is not a client.
MAX_LEADING_EMPTY = 64
_TLS_HANDSHAKE = 0x16


class Protocol(enum.Enum):
    MORE = "more"  # no prefix of these bytes decides yet
    TLS = "tls"
    HTTP = "http"
    NEITHER = "neither"


def _classify_tls(data: bytes) -> Protocol:
    # A TLS record: content type 22, version 3.x with x <= 3 (SSLv3 to TLS 1.3 records).
    if len(data) < 2:
        return Protocol.MORE
    if data[1] != 3:
        return Protocol.NEITHER
    if len(data) < 3:
        return Protocol.MORE
    return Protocol.TLS if data[2] <= 3 else Protocol.NEITHER


def classify(data: bytes) -> Protocol:
    """What a client's first bytes are. Only MORE can change as more bytes arrive."""
    if data[:1] == bytes([_TLS_HANDSHAKE]):
        return _classify_tls(data)
    start = len(data) - len(data.lstrip(b"\r\n"))
    if start > MAX_LEADING_EMPTY:
        return Protocol.NEITHER
    for index in range(start, min(len(data), start + MAX_METHOD + 1)):
        byte = data[index]
        if byte == 0x20:  # SP after a method token: the HTTP/1 parser reads the rest strictly
            return Protocol.HTTP if index > start else Protocol.NEITHER
        if byte not in TCHAR:
            return Protocol.NEITHER
    if len(data) - start > MAX_METHOD:
        return Protocol.NEITHER
    return Protocol.MORE
