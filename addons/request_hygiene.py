"""Request-head hygiene for mitmproxy Request objects: an adapter over addons.core.requests,
where the rules live (and say why)."""

from __future__ import annotations

from mitmproxy import http

from addons.core import reasons
from addons.core import requests as core

BAD_REQUEST = reasons.BAD_REQUEST.name
UPGRADE_NOT_ALLOWED = reasons.UPGRADE_NOT_ALLOWED.name
HOP_BY_HOP = core.HOP_BY_HOP


def is_websocket_upgrade(request: http.Request) -> bool:
    return core.is_websocket_upgrade(request.headers.fields)


def refusal(request: http.Request) -> str | None:
    """The reason to refuse this request head before anything is forwarded, or None."""
    return core.refusal(request.data.method, request.data.path, request.headers.fields)


def strip_hop_by_hop(request: http.Request) -> None:
    """Drop the headers meant for this proxy or this connection. `refusal` has passed."""
    fields = request.headers.fields
    kept = core.strip_hop_by_hop(fields)
    if kept is not fields:
        request.headers.fields = kept
