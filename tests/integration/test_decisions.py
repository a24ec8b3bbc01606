"""Every decision reason, end to end: a real proxy process, real curl, a real TLS upstream."""

from __future__ import annotations

import json

import pytest

from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet


def echo(proxy: Proxy, url: str, *args: str) -> dict:
    result = proxy.curl("--fail", *args, url)
    assert result.returncode == 0, result.stderr + proxy.logs()[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("upstream.test", id="exact-name"),
        pytest.param("UPSTREAM.Test", id="case-ignored"),
        pytest.param("www.wild.test", id="wildcard-one-level"),
        pytest.param("deep.a.wild.test", id="wildcard-any-depth"),
        pytest.param("127.0.0.1", id="listed-ip-literal"),
    ],
)
def test_allowed_https_reaches_the_upstream(proxy: Proxy, testnet: LoopbackNet, host: str) -> None:
    report = echo(proxy, f"https://{host}:{testnet.tls_port}/echo")
    assert report["path"] == "/echo"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("https://other.test:{tls}/", "blocked-by-allowlist", id="unlisted-name"),
        pytest.param(
            "https://wild.test:{tls}/", "blocked-by-allowlist", id="wildcard-excludes-apex"
        ),
        pytest.param("https://127.0.0.3:{tls}/", "blocked-by-allowlist", id="unlisted-ip-literal"),
        pytest.param("https://upstream.test:8443/", "blocked-port", id="unlisted-port"),
        pytest.param(
            "https://private.test:{tls}/", "blocked-address", id="loopback-outside-ranges"
        ),
        pytest.param("https://metadata.test:{tls}/", "blocked-address", id="cloud-metadata"),
        pytest.param("https://mapped.test:{tls}/", "blocked-address", id="ipv4-mapped-ipv6"),
        pytest.param(
            "http://other.test:{plain}/", "blocked-by-allowlist", id="plain-http-unlisted"
        ),
        pytest.param("http://private.test:{plain}/", "blocked-address", id="plain-http-address"),
    ],
)
def test_denied_destinations_get_403_with_the_reason(
    proxy: Proxy, testnet: LoopbackNet, url: str, reason: str
) -> None:
    url = url.format(tls=testnet.tls_port, plain=testnet.plain_port)
    status, headers, body = proxy.status_and_headers(url)
    assert status == 403
    assert headers["x-proxy-error"] == reason
    if url.startswith("http:"):  # curl does not show the body of a refused CONNECT
        assert reason in body and "denied" in body
    host = url.split("/")[2].rsplit(":", 1)[0]
    decisions = [e for e in proxy.events("decision") if e["host"] == host and not e["allow"]]
    assert decisions and decisions[-1]["reason"] == reason


def test_denied_connect_opens_no_upstream_connection(proxy: Proxy, testnet: LoopbackNet) -> None:
    before = proxy.logs().count("server connect")
    status, headers, _ = proxy.status_and_headers(f"https://other.test:{testnet.tls_port}/")
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-allowlist")
    assert proxy.logs().count("server connect") == before


def test_host_header_naming_another_host_is_refused(proxy: Proxy, testnet: LoopbackNet) -> None:
    url = f"https://upstream.test:{testnet.tls_port}/echo"
    status, headers, _ = proxy.status_and_headers("-H", "Host: other.test", url)
    assert (status, headers["x-proxy-error"]) == (403, "host-mismatch")


def test_plain_http_host_header_must_match_the_target(proxy: Proxy, testnet: LoopbackNet) -> None:
    url = f"http://upstream.test:{testnet.plain_port}/echo"
    status, headers, _ = proxy.status_and_headers("-H", "Host: other.test", url)
    assert (status, headers["x-proxy-error"]) == (403, "host-mismatch")


def test_plain_http_allowed_is_forwarded(proxy: Proxy, testnet: LoopbackNet) -> None:
    report = echo(proxy, f"http://upstream.test:{testnet.plain_port}/plain?x=1")
    assert (report["path"], report["query_string"]) == ("/plain", "x=1")
