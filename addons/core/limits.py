"""How large a request head may be when it is forwarded. mitmproxy reads a head of any size;
these bound what reaches an upstream, and addons.patches.head_limits bounds what is read at all."""

from __future__ import annotations

from collections.abc import Sequence

from addons.core import reasons

MAX_REQUEST_TARGET = 16 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 200


def too_large(target: bytes, fields: Sequence[tuple[bytes, bytes]]) -> bool:
    if len(target) > MAX_REQUEST_TARGET or len(fields) > MAX_HEADER_COUNT:
        return True
    return sum(len(name) + len(value) for name, value in fields) > MAX_HEADER_BYTES


def shape_refusal(target: bytes, fields: Sequence[tuple[bytes, bytes]], http1: bool) -> str | None:
    """A reason to refuse a request for its shape alone: an oversized target or head, or an
    HTTP/1 request that names no Host (the Host binding needs one)."""
    if too_large(target, fields):
        return reasons.REQUEST_TOO_LARGE.name
    if http1 and not any(name.lower() == b"host" for name, _ in fields):
        return reasons.HOST_MISMATCH.name
    return None
