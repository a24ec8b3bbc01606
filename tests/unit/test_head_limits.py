"""head_limits: the recorded upstream sources, the limits on an unterminated head, and the
patched HTTP/1 server and h2 frame buffer driven directly."""

from __future__ import annotations

import dataclasses
import json

import h2.connection
import h2.frame_buffer
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame
from mitmproxy import connection, options
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import _http1, _http2

from addons import limits
from addons.patches import head_limits, registry
from addons.patches.head_limits import (
    MAX_HEAD_BYTES,
    MAX_HEAD_LINES,
    MAX_REQUEST_LINE,
    head_overflow,
)


@pytest.fixture(autouse=True)
def patched() -> None:
    head_limits.install()


def test_install_refuses_a_different_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    made = head_limits.patches

    def stale() -> list:
        first, *rest = made()
        return [dataclasses.replace(first, source_sha256="0" * 64), *rest]

    monkeypatch.setattr(head_limits, "patches", stale)
    monkeypatch.setattr(head_limits, "installed", lambda: False)
    with pytest.raises(registry.PatchRefused, match="does not start") as raised:
        head_limits.install()
    assert "http1-heads-bounded" in str(raised.value) and "Fix:" in str(raised.value)


def test_install_is_idempotent() -> None:
    handler = _http1.Http1Server._handle_event
    buffer_guard = h2.frame_buffer.FrameBuffer._update_header_buffer
    head_limits.install()
    head_limits.install(count=lambda decision: None)
    assert _http1.Http1Server._handle_event is handler
    assert h2.frame_buffer.FrameBuffer._update_header_buffer is buffer_guard
    assert head_limits.installed()
    assert all(registry.matches(p) for p in head_limits.patches())


def test_limits_cover_every_head_the_parsed_check_accepts() -> None:
    assert MAX_REQUEST_LINE > limits.MAX_REQUEST_TARGET
    assert MAX_HEAD_BYTES >= MAX_REQUEST_LINE + limits.MAX_HEADER_BYTES
    assert MAX_HEAD_LINES == limits.MAX_HEADER_COUNT + 1
    assert h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE <= (
        head_limits.H2_MAX_HEADER_BLOCK
    )


FIELD = b"X-Field: " + b"v" * 300 + b"\r\n"

OVERFLOW = [
    pytest.param(b"GET /" + b"a" * MAX_REQUEST_LINE, "request line", id="long-first-line"),
    pytest.param(b"\r\n\r\nGET /" + b"a" * MAX_REQUEST_LINE, "request line", id="after-blank"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"a:b\r\n" * MAX_HEAD_LINES, "lines", id="crlf-lines"),
    pytest.param(b"GET / HTTP/1.1\n" + b"a:b\n" * MAX_HEAD_LINES, "lines", id="lf-lines"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"x" * MAX_HEAD_BYTES, "bytes", id="one-huge-line"),
    pytest.param(b"\r\n" * (MAX_HEAD_BYTES // 2 + 1), "bytes", id="only-blank-lines"),
]

WITHIN = [
    pytest.param(b"", id="empty"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", id="small"),
    pytest.param(b"GET /" + b"a" * limits.MAX_REQUEST_TARGET + b" HTTP/1.1\r\n", id="max-target"),
    pytest.param(b"GET / HTTP/1.1\r\n" + b"a:b\r\n" * limits.MAX_HEADER_COUNT, id="max-fields"),
    pytest.param(
        b"GET /" + b"a" * limits.MAX_REQUEST_TARGET + b" HTTP/1.1\r\n" + FIELD * 200,
        id="max-everything",
    ),
]


@pytest.mark.parametrize("buffered,why", OVERFLOW)
def test_head_overflow(buffered: bytes, why: str) -> None:
    reason = head_overflow(buffered)
    assert reason is not None and why in reason


@pytest.mark.parametrize("buffered", WITHIN)
def test_head_within_limits(buffered: bytes) -> None:
    assert head_overflow(buffered) is None


# -- the patched server, driven with mitmproxy's own events ---------------------------------------


def server() -> tuple[_http1.Http1Server, connection.Client]:
    client = connection.Client(
        peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 8080), timestamp_start=0
    )
    layer = _http1.Http1Server(Context(client, options.Options()))
    assert list(layer.handle_event(events.Start())) == []
    return layer, client


def feed(layer, event) -> list:
    return list(layer.handle_event(event))


def test_unterminated_head_gets_431_and_a_decision_line(capsys) -> None:
    layer, client = server()
    out = feed(layer, events.DataReceived(client, b"GET / HTTP/1.1\r\nAuthorization: SECRET\r\n"))
    assert out == []
    out = feed(layer, events.DataReceived(client, FIELD * 300))
    assert [type(c) for c in out] == [commands.SendData, commands.CloseConnection]
    reply = out[0].data
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"X-Proxy-Error: request-too-large\r\n" in reply and b"Connection: close" in reply
    assert b"SECRET" not in reply and b"X-Field" not in reply
    assert len(layer.buf) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "decision" and line["allow"] is False
    assert line["reason"] == "request-too-large" and line["client"] == "127.0.0.1:40000"
    assert "SECRET" not in json.dumps(line)


def test_disconnect_mid_head_logs_a_size_only() -> None:
    layer, client = server()
    feed(layer, events.DataReceived(client, b"GET /?token=SECRET HTTP/1.1\r\nAuthorization: x\r\n"))
    client.state = connection.ConnectionState.CLOSED
    out = feed(layer, events.ConnectionClosed(client))
    logs = [c for c in out if isinstance(c, commands.Log)]
    assert len(logs) == 1 and "SECRET" not in logs[0].message
    assert "<47 bytes withheld>" in logs[0].message


def test_complete_head_in_limits_passes() -> None:
    layer, client = server()
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + FIELD * 150 + b"\r\n"
    out = []
    for i in range(0, len(head), 1000):  # dripped
        out += feed(layer, events.DataReceived(client, head[i : i + 1000]))
    assert not any(isinstance(c, (commands.SendData, commands.CloseConnection)) for c in out)
    assert layer.request is not None and len(layer.request.headers.fields) == 151


# -- h2: the encoded header block is capped -------------------------------------------------------


def test_h2_header_block_is_capped() -> None:
    buffer = h2.frame_buffer.FrameBuffer(server=False)
    buffer.max_frame_size = 2**17
    first = HeadersFrame(1, data=b"\x00" * 16000)
    buffer.add_data(first.serialize())
    assert list(buffer) == []
    with pytest.raises(head_limits.HeadTooLarge):
        for _ in range(20):
            buffer.add_data(ContinuationFrame(1, data=b"\x00" * 16000).serialize())
            list(buffer)
    assert buffer._headers_buffer == []


def test_h2_server_advertises_a_header_list_size() -> None:
    conn = h2.connection.H2Connection(_http2.Http2Server.h2_conf)
    size = conn.local_settings.max_header_list_size
    assert size is not None and size <= head_limits.H2_MAX_HEADER_BLOCK
    assert conn.decoder.max_header_list_size == size
