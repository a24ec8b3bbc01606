"""log_scrub: mitmproxy's real message formats lose their raw client parts, nothing else."""

from __future__ import annotations

import logging

import pytest

from addons import log_scrub
from addons.log_scrub import scrub

# (message as mitmproxy 12.3.1 / h11 / h2 write it, what must be left of it)
SCRUBBED = [
    pytest.param(
        "127.0.0.1:5555: Bad HTTP request line: b'GET /x?token=SECRET HTTP/1.1 x'",
        "127.0.0.1:5555: Bad HTTP request line: <30 bytes withheld>",
        id="bad-request-line",
    ),
    pytest.param(
        'Bad HTTP request line: b"GET /it\'s?token=SECRET HTTP/1.1"',
        "Bad HTTP request line: <31 bytes withheld>",
        id="bad-request-line-double-quoted",
    ),
    pytest.param(
        "Unknown HTTP version: b'HTTP/SECRET'",
        "Unknown HTTP version: <11 bytes withheld>",
        id="unknown-version",
    ),
    pytest.param(
        "Invalid header line: b'Authorization Bearer SECRET'",
        "Invalid header line: <27 bytes withheld>",
        id="invalid-header-line",
    ),
    pytest.param(
        "Invalid header line: b'Authorization: \\x00SECRET\\r'",
        "Invalid header line: <23 bytes withheld>",
        id="invalid-header-line-escapes",
    ),
    pytest.param(
        "HTTP/1 protocol error: illegal chunk header: bytearray(b'zz;SECRET')",
        "HTTP/1 protocol error: illegal chunk header: <9 bytes withheld>",
        id="h11-chunk-header",
    ),
    pytest.param(
        "HTTP/1 protocol error: malformed chunk footer: b'xS' (expected b'\\r\\n')",
        "HTTP/1 protocol error: malformed chunk footer: <24 bytes withheld>",
        id="h11-chunk-footer",
    ),
    pytest.param(
        "invalid content-length header: 'SECRET'",
        "invalid content-length header: <6 bytes withheld>",
        id="content-length",
    ),
    pytest.param(
        "multiple content-length headers: ['1', '2 SECRET']",
        "multiple content-length headers: <17 bytes withheld>",
        id="content-length-list",
    ),
    pytest.param(
        "unknown transfer-encoding header: 'SECRET'",
        "unknown transfer-encoding header: <6 bytes withheld>",
        id="transfer-encoding",
    ),
    pytest.param(
        "unexpected HTTP transfer-encoding 'chunked, SECRET' for HTTP/1.0",
        "unexpected HTTP transfer-encoding <15 bytes withheld> for HTTP/1.0",
        id="transfer-encoding-version",
    ),
    pytest.param(
        "invalid header name: b'Bad SECRET'",
        "invalid header name: <10 bytes withheld>",
        id="header-name",
    ),
    pytest.param(
        "Client closed connection before completing request headers: "
        "b'GET / HTTP/1.1\\r\\nAuthorization: Bearer SECRET\\r\\n'",
        "Client closed connection before completing request headers: <46 bytes withheld>",
        id="partial-head",
    ),
    pytest.param(
        "HTTP/2 protocol error: Received header value surrounded by whitespace b' SECRET'",
        "HTTP/2 protocol error: Received header value surrounded by whitespace <7 bytes withheld>",
        id="h2-whitespace",
    ),
    pytest.param(
        "HTTP/2 protocol error: Invalid value for TE header: b'SECRET'",
        "HTTP/2 protocol error: Invalid value for TE header: <6 bytes withheld>",
        id="h2-te",
    ),
    pytest.param(
        "Invalid HTTP/2 request headers: Unknown pseudo headers: {b':x': b'SECRET'}",
        "Invalid HTTP/2 request headers: Unknown pseudo headers: <18 bytes withheld>",
        id="h2-pseudo",
    ),
    pytest.param(
        "HTTP/2 connection closed: <ConnectionTerminated error_code:ErrorCodes.INTERNAL_ERROR,"
        " last_stream_id:1, additional_data:5345435245542d48322d474f41>",
        "HTTP/2 connection closed: <ConnectionTerminated error_code:ErrorCodes.INTERNAL_ERROR,"
        " last_stream_id:1, additional_data:<13 bytes withheld>>",
        id="h2-goaway",
    ),
    pytest.param(
        "Client TLS handshake failed. Cannot parse ClientHello: 160301003a0100",
        "Client TLS handshake failed. Cannot parse ClientHello: <7 bytes withheld>",
        id="clienthello-hex",
    ),
    pytest.param(
        "Expected TLS record, got b'GET /' instead.",
        "Expected TLS record, got <5 bytes withheld> instead.",
        id="tls-record",
    ),
    pytest.param(
        "Deferring layer decision, not enough data: '4745'",
        "Deferring layer decision, not enough data: <4 bytes withheld>",
        id="next-layer-hex",
    ),
    pytest.param(
        "WebSocket close (payload: b'SECRET')",
        "WebSocket close (payload: <6 bytes withheld>)",
        id="websocket-payload",
    ),
    pytest.param(
        "upstream https://upstream.test/p?token=SECRET failed",
        "upstream https://upstream.test/p?<query withheld> failed",
        id="url-query",
    ),
    pytest.param("GET /path?token=SECRET&a=b", "GET /path?<query withheld>", id="path-query"),
]

UNCHANGED = [
    pytest.param("Streaming request to upstream.test.", id="streaming"),
    pytest.param("client connect", id="connect"),
    pytest.param("server connect 127.0.0.1:443", id="server-connect"),
    pytest.param(
        "Client TLS handshake failed. The client may not trust the proxy's certificate for "
        "upstream.test (OpenSSL Error)",
        id="tls-trust",
    ),
    pytest.param("Is it ready? yes", id="question-mark"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("message,expected", SCRUBBED)
def test_scrub_withholds_raw_parts(message: str, expected: str) -> None:
    assert scrub(message) == expected
    assert "SECRET" not in scrub(message)


@pytest.mark.parametrize("message", UNCHANGED)
def test_scrub_leaves_other_text(message: str) -> None:
    assert scrub(message) == message


def test_scrub_is_idempotent() -> None:
    for case in SCRUBBED:
        once = scrub(case.values[0])
        assert scrub(once) == once


@pytest.fixture
def scrubbing():
    was = log_scrub.installed()
    log_scrub.install()
    yield
    if not was:
        log_scrub.uninstall()


def test_records_are_scrubbed_before_handlers(scrubbing, caplog) -> None:
    logger = logging.getLogger("mitmproxy.proxy.server")
    with caplog.at_level(logging.INFO):
        logger.info("Invalid header line: %r", b"Authorization SECRET")
        try:
            raise ValueError(f"Bad HTTP request line: {b'GET /?token=SECRET'!r}")
        except ValueError:
            logging.getLogger("some.other").exception("failed")
    text = caplog.text
    assert "SECRET" not in text
    assert "Invalid header line: <20 bytes withheld>" in text
    assert "Bad HTTP request line: <18 bytes withheld>" in text


def test_install_is_idempotent_and_chains(scrubbing) -> None:
    factory = logging.getLogRecordFactory()
    log_scrub.install()
    log_scrub.install()
    assert logging.getLogRecordFactory() is factory
    seen = []

    def outer(*args, **kwargs):
        record = factory(*args, **kwargs)
        seen.append(record.getMessage())
        return record

    logging.setLogRecordFactory(outer)
    try:
        log_scrub.install()  # a reload with someone else's factory on top: no loop, no loss
        logging.getLogger("x").warning("b'SECRET'")
        assert seen == ["<6 bytes withheld>"]
    finally:
        logging.setLogRecordFactory(factory)


def test_uninstall_restores_the_previous_factory() -> None:
    was = log_scrub.installed()
    before = logging.getLogRecordFactory()
    log_scrub.install()
    log_scrub.uninstall()
    log_scrub.uninstall()
    if not was:
        assert logging.getLogRecordFactory() is before
    record = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "b'SECRET'", (), None)
    assert record.getMessage() == "b'SECRET'"
    if was:
        log_scrub.install()
