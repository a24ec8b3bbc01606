"""Request heads are bounded while they are read, and no log line carries client bytes (issue 12,
items 3 and 4), in both runtimes: plain-HTTP proxy requests, CONNECT tunnels, TLS tunnels, h2."""

from __future__ import annotations

import binascii
import socket
import ssl
from collections.abc import Callable

import h2.config
import h2.connection
import pytest
from hyperframe.frame import ContinuationFrame, GoAwayFrame, HeadersFrame

from tests.conftest import STANDARD_DOMAINS
from tests.support.processes import wait_until
from tests.support.proxy import Proxy
from tests.support.raw_client import ROUTES, endless_head, exchange, open_route, peak_rss_kib
from tests.support.testnet import LoopbackNet

MIB = 1024 * 1024
MEMORY_LIMIT_KIB = 128 * 1024


def target_for(testnet: LoopbackNet, route: str) -> str:
    port = testnet.tls_port if route == "tls" else testnet.plain_port
    return f"upstream.test:{port}"


def request_target(testnet: LoopbackNet, route: str, path: str) -> str:
    """The request target as the route needs it: absolute form for a plain proxy request."""
    if route == "plain":
        return f"http://upstream.test:{testnet.plain_port}{path}"
    return path


def assert_secret_never_logged(proxy: Proxy, secret: str) -> None:
    logs = proxy.logs()
    assert secret not in logs, f"{secret} reached the proxy's log"
    hexed = binascii.hexlify(secret.encode()).decode()
    assert hexed not in logs.lower(), f"{secret} reached the proxy's log as hex"


def too_large_decisions(proxy: Proxy) -> list[dict]:
    return [e for e in proxy.events("decision") if e["reason"] == "request-too-large"]


# -- item 3: heads bounded while read ---------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_oversized_unterminated_head_gets_431(
    proxy: Proxy, testnet: LoopbackNet, route: str
) -> None:
    secret = f"SECRET-OVERSIZED-{route}"
    target = request_target(testnet, route, "/")
    prefix = f"GET {target} HTTP/1.1\r\nHost: upstream.test\r\nAuthorization: Bearer {secret}\r\n"
    before = len(too_large_decisions(proxy))
    # 100 KiB, then nothing more: the proxy has read every byte when it answers.
    outcome = exchange(
        proxy.port,
        route,
        target_for(testnet, route),
        list(endless_head(prefix.encode(), 100 * 1024)),
        proxy.ca_cert,
    )
    assert outcome.status == 431, outcome.reply[:300]
    assert b"X-Proxy-Error: request-too-large" in outcome.reply
    assert b"Connection: close" in outcome.reply
    assert secret.encode() not in outcome.reply and b"X-Pad" not in outcome.reply
    assert outcome.closed
    wait_until(lambda: len(too_large_decisions(proxy)) > before, 10, "a decision line")
    decision = too_large_decisions(proxy)[-1]
    assert decision["allow"] is False and decision["client"].startswith("127.0.0.1:")
    if route != "plain":
        assert decision["host"] == "upstream.test"
    assert_secret_never_logged(proxy, secret)


@pytest.mark.parametrize(
    "name,head",
    [
        ("request-line", b"GET /" + b"a" * (40 * 1024)),
        ("many-lines", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 300),
        ("bare-lf-lines", b"GET / HTTP/1.1\n" + b"X: y\n" * 300),
        ("blank-lines", b"\r\n" * (50 * 1024)),
    ],
)
def test_head_limit_spellings(proxy: Proxy, testnet: LoopbackNet, name: str, head: bytes) -> None:
    """Each limit holds on its own: the first line, the line count, the byte count."""
    outcome = exchange(proxy.port, "plain", "", head)
    assert outcome.status == 431, (name, outcome.reply[:200])
    assert outcome.closed


def test_heads_within_limits_still_pass(proxy: Proxy, testnet: LoopbackNet) -> None:
    """A large head in limits (many fields, a long target), sent a byte-run at a time, works."""
    url = f"http://upstream.test:{testnet.plain_port}/echo?" + "q" * 8000
    head = f"GET {url} HTTP/1.1\r\nHost: upstream.test:{testnet.plain_port}\r\n".encode()
    head += b"".join(b"X-Field-%d: %s\r\n" % (i, b"v" * 250) for i in range(190))
    head += b"Connection: close\r\n\r\n"
    chunks = [head[i : i + 997] for i in range(0, len(head), 997)]
    outcome = exchange(proxy.port, "plain", "", chunks, wait=20)
    assert outcome.status == 200, outcome.reply[:300]


@pytest.mark.parametrize("route", ROUTES)
def test_multi_mib_head_keeps_memory_bounded(
    make_proxy: Callable[..., Proxy], testnet: LoopbackNet, tmp_path, route: str
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", *STANDARD_DOMAINS)
    proxy = make_proxy(policy)
    assert proxy.process is not None
    secret = f"SECRET-MIB-{route}"
    target = request_target(testnet, route, "/")
    prefix = f"GET {target} HTTP/1.1\r\nAuthorization: Bearer {secret}\r\n".encode()
    baseline = peak_rss_kib(proxy.process.pid)
    outcomes = [
        exchange(
            proxy.port,
            route,
            target_for(testnet, route),
            endless_head(prefix, 48 * MIB),
            proxy.ca_cert,
            wait=20,
        )
        for _ in range(3)
    ]
    for outcome in outcomes:
        assert outcome.closed, "the proxy kept reading an endless head"
        assert outcome.sent < 8 * MIB, f"the proxy took {outcome.sent} bytes of one head"
    peak = peak_rss_kib(proxy.process.pid)
    assert peak < MEMORY_LIMIT_KIB * 3 // 4, f"peak RSS {peak} KiB (baseline {baseline})"
    assert peak - baseline < 16 * 1024, f"peak RSS grew {peak - baseline} KiB to {peak}"
    wait_until(lambda: len(too_large_decisions(proxy)) >= 3, 10, "three decision lines")
    assert proxy.health("/healthz")[0] == 200
    assert_secret_never_logged(proxy, secret)


def test_pipelined_flood_while_waiting_is_cut(proxy: Proxy, testnet: LoopbackNet) -> None:
    """Bytes sent after a complete request, while its response is pending, are bounded too."""
    url = f"http://upstream.test:{testnet.plain_port}/echo"
    request = f"POST {url} HTTP/1.1\r\nHost: upstream.test:{testnet.plain_port}\r\n"
    request += "Content-Length: 1\r\n\r\nx"
    flood = (b"GET /?token=SECRET-PIPELINED HTTP/1.1\r\n" + b"X: y\r\n" * 10_000) * 200
    chunks = [request.encode()] + [flood[i : i + 65536] for i in range(0, len(flood), 65536)]
    s = open_route(proxy.port, "plain", "")
    sent = 0
    try:
        for chunk in chunks:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    finally:
        s.close()
    assert sent < len(request) + len(flood), "the proxy read a 12 MiB pipelined flood"
    assert_secret_never_logged(proxy, "SECRET-PIPELINED")


def test_endless_chunk_size_line_is_cut(proxy: Proxy, testnet: LoopbackNet) -> None:
    url = f"http://upstream.test:{testnet.plain_port}/echo"
    head = f"POST {url} HTTP/1.1\r\nHost: upstream.test:{testnet.plain_port}\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    chunks = [head.encode(), b"1" * 65536] + [b"f" * 65536] * 200
    outcome = exchange(proxy.port, "plain", "", chunks, wait=15)
    # Cut before the client got everything out (what the kernel buffers on loopback varies).
    assert outcome.closed and outcome.sent < sum(map(len, chunks))


# -- item 4: secrets in malformed input never reach a log line ----------------------------------


def malformed_inputs(testnet: LoopbackNet, route: str) -> list[tuple[str, str]]:
    """(name, text): each carries SECRET-<name> where a parser quotes it in an error."""
    host = f"upstream.test:{testnet.plain_port if route != 'tls' else testnet.tls_port}"
    t = request_target(testnet, route, "/echo")
    good = f"Host: {host}\r\n"
    return [
        ("bad-line-query", f"GET {t}?token=SECRET-bad-line-query x HTTP/1.1\r\n{good}\r\n"),
        ("bad-version", f"GET {t}?token=SECRET-bad-version HTTP/9\r\n{good}\r\n"),
        ("bad-header", f"GET {t} HTTP/1.1\r\n{good}Authorization Bearer SECRET-bad-header\r\n\r\n"),
        ("fold-first", f"GET {t} HTTP/1.1\r\n Authorization: SECRET-fold-first\r\n{good}\r\n"),
        ("bad-length", f"POST {t} HTTP/1.1\r\n{good}Content-Length: SECRET-bad-length\r\n\r\n"),
        (
            "two-lengths",
            f"POST {t} HTTP/1.1\r\n{good}Content-Length: 1\r\nContent-Length: 2 SECRET-two-lengths\r\n\r\nx",
        ),
        ("bad-te", f"POST {t} HTTP/1.1\r\n{good}Transfer-Encoding: SECRET-bad-te\r\n\r\n"),
        (
            "bad-chunk",
            f"POST {t} HTTP/1.1\r\n{good}Transfer-Encoding: chunked\r\n\r\nzz;SECRET-bad-chunk\r\n",
        ),
        (
            "bad-chunk-footer",
            f"POST {t} HTTP/1.1\r\n{good}Transfer-Encoding: chunked\r\n\r\n1\r\nxSECRET-bad-chunk-footer\r\n",
        ),
        (
            "nul-header",
            f"GET {t} HTTP/1.1\r\n{good}Authorization: Bearer \x00SECRET-nul-header\r\n\r\n",
        ),
        ("nul-target", f"GET {t}?token=\x00SECRET-nul-target HTTP/1.1\r\n{good}\r\n"),
        ("bad-name", f"GET {t} HTTP/1.1\r\n{good}Bad Name: SECRET-bad-name\r\n\r\n"),
        (
            "truncated",
            f"GET {t}?token=SECRET-truncated HTTP/1.1\r\nAuthorization: Bearer SECRET-truncated\r\n",
        ),
    ]


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_requests_log_no_secret(proxy: Proxy, testnet: LoopbackNet, route: str) -> None:
    cases = malformed_inputs(testnet, route)
    for _name, text in cases:
        exchange(
            proxy.port,
            route,
            target_for(testnet, route),
            text.encode("latin-1"),
            proxy.ca_cert,
            wait=2,
            half_close=True,
        )
    # mitmproxy logs some of these only when the connection ends: wait for the last one.
    wait_until(
        lambda: "Client closed connection before completing request headers" in proxy.logs(),
        10,
        "the truncated head to be logged",
    )
    for name, _ in cases:
        assert_secret_never_logged(proxy, f"SECRET-{name}")


def test_bad_tls_record_logs_no_secret(proxy: Proxy, testnet: LoopbackNet) -> None:
    """A ClientHello mitmproxy cannot parse is logged as hex upstream: never the bytes."""
    hello = b"\x03\x03SECRET-CLIENTHELLO" + b"\xff" * 40
    handshake = b"\x01\x00" + len(hello).to_bytes(2, "big") + hello
    junk = b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake
    exchange(proxy.port, "tunnel", target_for(testnet, "tls"), junk, wait=3)
    wait_until(lambda: "ClientHello" in proxy.logs(), 10, "the ClientHello error line")
    assert_secret_never_logged(proxy, "SECRET-CLIENTHELLO")


# -- HTTP/2 ------------------------------------------------------------------------------------


def h2_tunnel(
    proxy: Proxy, testnet: LoopbackNet
) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    s = open_route(proxy.port, "tls", f"upstream.test:{testnet.tls_port}", proxy.ca_cert, alpn="h2")
    assert isinstance(s, ssl.SSLSocket) and s.selected_alpn_protocol() == "h2"
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def read_until_closed(s: socket.socket, wait: float = 10) -> bytes:
    s.settimeout(wait)
    data = b""
    try:
        while len(data) < 4 * MIB:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, OSError, ssl.SSLError):
        pass
    s.close()
    return data


H2_BAD_HEADERS = {
    "whitespace": [(b"authorization", b" Bearer SECRET-H2-whitespace")],
    "te": [(b"te", b"SECRET-H2-te")],
    "nul": [(b"authorization", b"Bearer \x00SECRET-H2-nul")],
    "pseudo": [(b":token", b"SECRET-H2-pseudo")],
    "connection": [(b"connection", b"SECRET-H2-connection")],
}


@pytest.mark.parametrize("name", sorted(H2_BAD_HEADERS))
def test_bad_h2_headers_log_no_secret(proxy: Proxy, testnet: LoopbackNet, name: str) -> None:
    s, conn = h2_tunnel(proxy, testnet)
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", f"upstream.test:{testnet.tls_port}".encode()),
        (b":path", f"/echo?token=SECRET-H2-{name}".encode()),
    ]
    if name == "pseudo":
        headers = headers[:1] + H2_BAD_HEADERS[name] + headers[1:]
    else:
        headers += H2_BAD_HEADERS[name]
    conn.send_headers(1, headers, end_stream=True)
    s.sendall(conn.data_to_send())
    read_until_closed(s, wait=3)
    wait_until(lambda: "HTTP/2" in proxy.logs() or bool(proxy.events("request")), 10, "a line")
    assert_secret_never_logged(proxy, f"SECRET-H2-{name}")


def test_h2_goaway_debug_data_not_logged(proxy: Proxy, testnet: LoopbackNet) -> None:
    """A GOAWAY ends the streams in flight with an error quoting its debug data (flow.error)."""
    s, conn = h2_tunnel(proxy, testnet)
    path = f"/logged-goaway/{len(proxy.events('request'))}"
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", f"upstream.test:{testnet.tls_port}".encode()),
        (b":path", path.encode()),
    ]
    conn.send_headers(1, headers, end_stream=False)  # the body never comes: the stream stays open
    s.sendall(conn.data_to_send())
    goaway = GoAwayFrame(0, error_code=2, additional_data=b"SECRET-H2-GOAWAY")
    s.sendall(goaway.serialize())
    read_until_closed(s, wait=3)
    wait_until(
        lambda: any(e.get("path") == path for e in proxy.events("request")), 10, "the request line"
    )
    line = next(e for e in proxy.events("request") if e.get("path") == path)
    assert "HTTP/2 connection closed" in line["error"] and "withheld" in line["error"]
    assert_secret_never_logged(proxy, "SECRET-H2-GOAWAY")


def test_h2_continuation_flood_is_cut(proxy: Proxy, testnet: LoopbackNet) -> None:
    """HEADERS + CONTINUATION frames that never end the block: cut at the head limit, GOAWAY."""
    s, _ = h2_tunnel(proxy, testnet)
    before = len(too_large_decisions(proxy))
    first = HeadersFrame(1, data=b"\x00\x0dauthorization\x15Bearer SECRET-H2-FLOOD")
    first.flags.add("END_STREAM")
    frames = [first.serialize()]
    frames += [ContinuationFrame(1, data=b"\x00" * 16000).serialize() for _ in range(60)]
    try:
        for frame in frames:
            s.sendall(frame)
    except OSError:
        pass
    reply = read_until_closed(s, wait=10)
    assert b"\x00\x00\x00\x0b" in reply, "no GOAWAY ENHANCE_YOUR_CALM"  # error code 11
    wait_until(lambda: len(too_large_decisions(proxy)) > before, 10, "a decision line")
    assert_secret_never_logged(proxy, "SECRET-H2-FLOOD")
