"""The test upstream: an ASGI app that reports exactly what it received.

Served by hypercorn over TLS (HTTP/1.1, HTTP/2 and WebSocket), so tests can prove that the proxy
forwards requests unmodified and keeps streaming and upgrades working.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

CHUNK = 64 * 1024


async def _read_body(receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


async def _send(send, status: int, body: bytes, content_type: str = "application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def pattern(size: int) -> bytes:
    """Deterministic bytes that both ends can check."""
    block = hashlib.sha256(b"auth-proxy").digest() * (CHUNK // 32)
    return (block * (size // len(block) + 1))[:size]


async def _echo(scope, receive, send) -> None:
    body = await _read_body(receive)
    report = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
    }
    await _send(send, 200, json.dumps(report).encode())


async def _bytes(scope, receive, send, size: int) -> None:
    await _read_body(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size).encode()),
            ],
        }
    )
    data = pattern(size)
    for start in range(0, size, CHUNK):
        await send(
            {"type": "http.response.body", "body": data[start : start + CHUNK], "more_body": True}
        )
    await send({"type": "http.response.body", "body": b""})


async def _events(scope, receive, send, count: int) -> None:
    """Server-sent events, one every 300 ms: a buffering proxy would deliver them all at once."""
    await _read_body(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for i in range(count):
        await send(
            {"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True}
        )
        await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": b""})


async def _websocket(scope, receive, send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"]
    if path.startswith("/bytes/"):
        await _bytes(scope, receive, send, int(path.rsplit("/", 1)[1]))
    elif path.startswith("/events/"):
        await _events(scope, receive, send, int(path.rsplit("/", 1)[1]))
    else:
        await _echo(scope, receive, send)
