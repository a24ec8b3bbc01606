"""An asyncio HTTP/1.1 client over CONNECT tunnels: enough HTTP to check every byte.

A `Tunnel` is one client connection to the proxy: CONNECT, TLS with the proxy's CA, then
keep-alive requests. Bodies are checked with SHA-256 at both ends: the upstream reports the hash
of what it received (/echo), and /bytes/N sends a pattern both ends know.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from dataclasses import dataclass

from tests.support.upstream_app import pattern

READ_CHUNK = 256 * 1024


class ProtocolError(Exception):
    pass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Tunnel:
    def __init__(self, proxy_port: int, host: str, port: int, context: ssl.SSLContext) -> None:
        self.proxy_port, self.host, self.port, self.context = proxy_port, host, port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy_port)
            authority = f"{self.host}:{self.port}"
            writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                writer.close()
                raise ProtocolError(f"CONNECT refused: {head[:80]!r}")
            await writer.start_tls(self.context, server_hostname=self.host)
            self.reader, self.writer = reader, writer

    async def request(
        self, method: str, path: str, body: bytes = b"", timeout: float = 120
    ) -> Reply:
        assert self.reader is not None and self.writer is not None
        async with asyncio.timeout(timeout):
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            self.writer.write(head)
            for start in range(0, len(body), READ_CHUNK):
                self.writer.write(body[start : start + READ_CHUNK])
                await self.writer.drain()
            await self.writer.drain()
            return await read_reply(self.reader)

    async def echo(self, body: bytes) -> bool:
        """POST a body; true when the upstream received exactly it."""
        reply = await self.request("POST", "/echo", body)
        if reply.status != 200:
            raise ProtocolError(f"echo status {reply.status}")
        report = json.loads(reply.body)
        return report["body_length"] == len(body) and (
            report["body_sha256"] == hashlib.sha256(body).hexdigest()
        )

    async def download(self, size: int) -> bool:
        """GET /bytes/size; true when the bytes are exactly the upstream's pattern."""
        reply = await self.request("GET", f"/bytes/{size}")
        if reply.status != 200:
            raise ProtocolError(f"download status {reply.status}")
        return hashlib.sha256(reply.body).digest() == pattern_digest(size)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


_digests: dict[int, bytes] = {}


def pattern_digest(size: int) -> bytes:
    if size not in _digests:
        _digests[size] = hashlib.sha256(pattern(size)).digest()
    return _digests[size]


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.read()
    return Reply(int(parts[1]), headers, body)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    for _ in range(1_000_000):
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    raise ProtocolError("too many chunks")
