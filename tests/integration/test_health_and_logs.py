"""The health port reports and changes nothing; the logs hold one JSON line per decision and per
forwarded request, and never query strings, bodies or credentials."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from tests.support.processes import free_port, wait_until
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet


def test_healthz_and_readyz(proxy: Proxy) -> None:
    assert proxy.health("/healthz") == (200, "ok\n")
    status, body = proxy.readyz()
    assert status == 200
    assert body["ready"] is True and body["listening"] is True
    assert body["policy"].endswith("policy.yaml") and body["entries"] == 8
    assert body["last_reload_error"] is None


def test_readyz_lists_every_listener(make_proxy, testnet: LoopbackNet, tmp_path) -> None:
    """The pod's rules send traffic to all three listeners, so ready means all three are up."""
    transparent, dns = free_port(), free_port()
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    running = make_proxy(
        policy,
        "--mode", "regular",
        "--mode", f"transparent@127.0.0.1:{transparent}",
        "--set", f"dns_listen=127.0.0.1:{dns}",
    )  # fmt: skip
    status, body = running.readyz()
    assert status == 200 and body["listening"] is True, body
    assert body["listeners"] == {
        "regular": True,
        f"transparent@127.0.0.1:{transparent}": True,
        f"dns@127.0.0.1:{dns}": True,
    }


def test_metrics_count_decisions(proxy: Proxy, testnet: LoopbackNet) -> None:
    proxy.curl(f"https://other.test:{testnet.tls_port}/")
    status, text = proxy.health("/metrics")
    assert status == 200
    assert 'auth_proxy_decisions_total{result="deny",reason="blocked-by-allowlist"}' in text
    assert "# TYPE auth_proxy_open_connections gauge" in text
    assert "auth_proxy_ready 1" in text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/reload", "/"])
def test_health_port_changes_nothing(proxy: Proxy, method: str, path: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy.health_port}{path}", method=method, data=b"x"
    )
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("a write to the health port was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_refused_connect_body_names_host_and_reason(proxy: Proxy, testnet: LoopbackNet) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n")
        chunks = []
        for _ in range(100):  # the proxy closes after a denial
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 403")
    assert "X-Proxy-Error: blocked-by-allowlist" in reply
    assert (
        "other.test:443 (blocked-by-allowlist): the host is not on this sandbox's allowlist"
        in reply
    )


def test_log_lines(proxy: Proxy, testnet: LoopbackNet) -> None:
    url = f"https://upstream.test:{testnet.tls_port}/logged/path?token=SECRET-QUERY"
    result = proxy.curl(
        "--fail",
        "-H",
        "Authorization: Bearer SECRET-AUTH",
        "-H",
        "Cookie: session=SECRET-COOKIE",
        "--proxy-header",
        "Proxy-Authorization: Basic SECRET-PROXY-AUTH",
        "--data-binary",
        "SECRET-BODY",
        url,
    )
    assert result.returncode == 0, result.stderr

    def logged() -> list[dict]:
        return [e for e in proxy.events("request") if e["path"] == "/logged/path"]

    # The line is written when the response is complete, which can be just after curl is done.
    wait_until(lambda: bool(logged()), 5, "the request line")
    requests = logged()
    assert len(requests) == 1
    line = requests[0]
    assert (line["method"], line["host"], line["status"]) == ("POST", "upstream.test", 200)
    assert line["bytes_sent"] == len("SECRET-BODY") and line["bytes_received"] > 0
    assert line["duration_ms"] >= 0
    # The session's proxy serves other tests too, and a later connection can reuse this client's
    # port: only the lines written while this one was open count.
    opened = line["ts"] - line["duration_ms"] / 1000 - 5
    decisions = [
        e
        for e in proxy.events("decision")
        if e["client"] == line["client"] and opened <= e["ts"] <= line["ts"]
    ]
    assert len(decisions) == 1, "exactly one decision line for the tunnel"
    assert set(decisions[0]) >= {"ts", "event", "allow", "reason", "host", "port", "client", "rule"}
    assert decisions[0]["rule"] == "upstream.test"
    everything = proxy.logs()
    for secret in (
        "SECRET-QUERY",
        "SECRET-AUTH",
        "SECRET-COOKIE",
        "SECRET-PROXY-AUTH",
        "SECRET-BODY",
    ):
        assert secret not in everything
    for raw in proxy.stdout_lines():
        if raw.startswith("{"):
            json.loads(raw)
