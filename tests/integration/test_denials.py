"""Denials an agent can act on, and report mode, end to end in both runtimes: the 403 body says
what was denied, why and what to do (JSON for `Accept: application/json`), `X-Proxy-Error` stays
the machine value; the deny list wins over a wildcard; rules refuse what they do not name and
every ambiguous spelling of a path; report mode lets through what names, ports and rules would
deny, saying so in the log, the metrics and /readyz, and never relaxes the address block or the
Host binding."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest

from tests.support import dns_client as dns
from tests.support.processes import free_port, wait_until
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet

RELOAD_BOUND = 6.0
JSON = ("-H", "Accept: application/json")
FIELDS = {"error", "reason", "host", "port", "method", "path", "rule", "allowed", "message"}


def write(path: Path, testnet: LoopbackNet, *domains: str, extra: str = "", **kwargs) -> Path:
    path.write_text(testnet.policy_text(*domains, **kwargs) + extra)
    return path


RULES = """\
rules:
  - host: upstream.test
    methods: [GET]
    paths: ["/get", "/a/**"]
"""


def raw(proxy: Proxy, data: bytes) -> bytes:
    """Send `data` to the proxy and read until it closes (it does after a refusal)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        for _ in range(100):
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def split_reply(reply: bytes) -> tuple[int, dict[str, str], str]:
    head, _, body = reply.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def decisions(proxy: Proxy, **match) -> list[dict]:
    return [e for e in proxy.events("decision") if all(e.get(k) == v for k, v in match.items())]


# -- the words of a denial -------------------------------------------------------------------


def test_allowlist_denial_says_what_to_do(proxy: Proxy, testnet: LoopbackNet) -> None:
    status, headers, body = proxy.status_and_headers(f"http://other.test:{testnet.plain_port}/x")
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-allowlist")
    assert headers["content-type"].startswith("text/plain")
    assert body == (
        f"auth-proxy denied other.test:{testnet.plain_port} (blocked-by-allowlist): the host is "
        "not on this sandbox's allowlist. Retrying, or reaching it another way (another proxy, a "
        "raw socket, DNS), will not work; ask the operator to add it to the policy.\n"
    )


@pytest.mark.parametrize(
    "accept",
    ["application/json", "text/html;q=0.9, application/json;q=0.5", "application/problem+json"],
    ids=["json", "json-second-lower-quality", "problem-json"],
)
def test_a_refused_connect_answers_json_when_asked(proxy: Proxy, accept: str) -> None:
    reply = raw(
        proxy,
        b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n"
        + f"Accept: {accept}\r\n\r\n".encode(),
    )
    status, headers, body = split_reply(reply)
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-allowlist")
    assert headers["content-type"] == "application/json"
    denial = json.loads(body)
    assert set(denial) == FIELDS
    assert denial["error"] == denial["reason"] == "blocked-by-allowlist"
    assert (denial["host"], denial["port"], denial["method"]) == ("other.test", 443, "CONNECT")
    assert denial["path"] is None and denial["rule"] is None and denial["allowed"] == []
    assert "not on this sandbox's allowlist" in denial["message"]


def test_accept_json_refused_by_quality_gets_text(proxy: Proxy) -> None:
    reply = raw(
        proxy,
        b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n"
        b"Accept: application/json;q=0, text/plain\r\n\r\n",
    )
    status, headers, body = split_reply(reply)
    assert status == 403 and headers["content-type"].startswith("text/plain")
    assert body.startswith("auth-proxy denied other.test:443 (blocked-by-allowlist): ")


@pytest.fixture
def rules_proxy(make_proxy, testnet: LoopbackNet, tmp_path: Path) -> Proxy:
    return make_proxy(write(tmp_path / "policy.yaml", testnet, "upstream.test", extra=RULES))


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_rules_allow_what_they_name(rules_proxy: Proxy, testnet: LoopbackNet, scheme: str) -> None:
    port = testnet.tls_port if scheme == "https" else testnet.plain_port
    for path in ("/get?x=1", "/a/b/c"):
        status, _, body = rules_proxy.status_and_headers(f"{scheme}://upstream.test:{port}{path}")
        assert status == 200, body
        assert json.loads(body)["method"] == "GET"


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_request_no_rule_names_gets_the_rules_in_its_403(
    rules_proxy: Proxy, testnet: LoopbackNet, scheme: str
) -> None:
    port = testnet.tls_port if scheme == "https" else testnet.plain_port
    url = f"{scheme}://upstream.test:{port}/post?token=SECRET-QUERY"
    status, headers, body = rules_proxy.status_and_headers("--data-binary", "x", url)
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-rule")
    assert body == (
        f"auth-proxy denied POST /post on upstream.test:{port} (blocked-by-rule): this host's "
        "rules allow only: GET /get, /a/**. Retrying will not work; send a request a rule "
        "allows, or ask the operator to add a rule to the policy.\n"
    )
    line = decisions(rules_proxy, reason="blocked-by-rule", method="POST")[-1]
    assert (line["allow"], line["host"], line["port"], line["path"]) == (
        False,
        "upstream.test",
        port,
        "/post",
    )
    assert line["rule"] == "rules[0]"
    assert "SECRET-QUERY" not in rules_proxy.logs()


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_an_agent_gets_the_rule_denial_as_json(
    rules_proxy: Proxy, testnet: LoopbackNet, scheme: str, version: str
) -> None:
    if scheme == "http" and version == "--http2":
        version = "--http1.1"  # plain HTTP through a proxy is HTTP/1
    port = testnet.tls_port if scheme == "https" else testnet.plain_port
    url = f"{scheme}://upstream.test:{port}/post?token=SECRET-QUERY"
    status, headers, body = rules_proxy.status_and_headers(version, *JSON, "-X", "DELETE", url)
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-rule")
    assert headers["content-type"] == "application/json"
    assert "SECRET-QUERY" not in body
    denial = json.loads(body)
    assert denial == {
        "error": "blocked-by-rule",
        "reason": "blocked-by-rule",
        "host": "upstream.test",
        "port": port,
        "method": "DELETE",
        "path": "/post",
        "rule": "rules[0]",
        "allowed": ["GET /get, /a/**"],
        "message": (
            f"auth-proxy denied DELETE /post on upstream.test:{port} (blocked-by-rule): this "
            "host's rules allow only: GET /get, /a/**. Retrying will not work; send a request a "
            "rule allows, or ask the operator to add a rule to the policy."
        ),
    }


AMBIGUOUS = [
    pytest.param("/get/..%2F", id="encoded-slash-after-dotdot"),
    pytest.param("/a%2Fb", id="encoded-slash"),
    pytest.param("/a%2fb", id="encoded-slash-lower"),
    pytest.param("/a/%2e%2e/get", id="encoded-dotdot"),
    pytest.param("/a/.%2E/get", id="half-encoded-dotdot"),
    pytest.param("/a//b", id="empty-segment"),
    pytest.param("/a%5Cb", id="encoded-backslash"),
    pytest.param("/a/..;/get", id="dotdot-with-params"),
    pytest.param("/a/%00", id="encoded-nul"),
    pytest.param("/a/%zz", id="invalid-escape"),
    pytest.param("/a/%252F", id="double-encoded-slash"),
    pytest.param("/a/../../get", id="above-the-root"),
]


@pytest.mark.parametrize("path", AMBIGUOUS)
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_an_ambiguous_path_is_refused_by_the_rules(
    rules_proxy: Proxy, testnet: LoopbackNet, path: str, scheme: str
) -> None:
    port = testnet.tls_port if scheme == "https" else testnet.plain_port
    status, headers, body = rules_proxy.status_and_headers(
        "--path-as-is", *JSON, f"{scheme}://upstream.test:{port}{path}"
    )
    assert (status, headers.get("x-proxy-error")) == (403, "blocked-by-rule"), body
    denial = json.loads(body)
    assert denial["path"] == path and denial["method"] == "GET"
    assert "could be read two ways" in denial["message"]


# -- the deny list ---------------------------------------------------------------------------


@pytest.fixture
def deny_proxy(make_proxy, testnet: LoopbackNet, tmp_path: Path) -> Proxy:
    extra = 'denied_domains: ["deep.a.wild.test"]\n'
    return make_proxy(write(tmp_path / "policy.yaml", testnet, "*.wild.test", extra=extra))


def test_a_denied_name_under_an_allowed_wildcard(deny_proxy: Proxy, testnet: LoopbackNet) -> None:
    allowed = deny_proxy.curl("--fail", f"https://www.wild.test:{testnet.tls_port}/")
    assert allowed.returncode == 0, allowed.stderr
    for scheme, port in (("https", testnet.tls_port), ("http", testnet.plain_port)):
        status, headers, body = deny_proxy.status_and_headers(
            *JSON, f"{scheme}://deep.a.wild.test:{port}/"
        )
        assert (status, headers["x-proxy-error"]) == (403, "blocked-by-denylist")
        if scheme == "http":  # curl shows no body for a refused CONNECT
            denial = json.loads(body)
            assert denial["rule"] == "deep.a.wild.test" and denial["host"] == "deep.a.wild.test"
            assert "deny list" in denial["message"]


@pytest.mark.parametrize(
    "target",
    ["deep.a.wild.test", "DEEP.A.Wild.Test", "deep.a.wild.test.", "Deep.A.WILD.test."],
    ids=["plain", "mixed-case", "trailing-dot", "mixed-case-trailing-dot"],
)
def test_every_spelling_of_a_denied_name_is_denied(deny_proxy: Proxy, target: str) -> None:
    reply = raw(deny_proxy, f"CONNECT {target}:443 HTTP/1.1\r\nHost: {target}:443\r\n\r\n".encode())
    status, headers, body = split_reply(reply)
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-denylist"), reply
    assert "(blocked-by-denylist): the host is on this sandbox's deny list" in body


# -- report mode -----------------------------------------------------------------------------


@pytest.fixture
def report_proxy(make_proxy, testnet: LoopbackNet, tmp_path: Path) -> Proxy:
    extra = "mode: report\n" + RULES
    policy = write(
        tmp_path / "policy.yaml", testnet, "upstream.test", extra=extra, ports=(testnet.tls_port,)
    )
    return make_proxy(policy)


def metric(proxy: Proxy, reason: str) -> int:
    _, text = proxy.health("/metrics")
    prefix = f'auth_proxy_report_would_deny_total{{reason="{reason}"}} '
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    return int(found[0].removeprefix(prefix)) if found else 0


def test_report_mode_lets_a_not_allowed_host_through(
    report_proxy: Proxy, testnet: LoopbackNet
) -> None:
    before = metric(report_proxy, "blocked-by-allowlist")
    result = report_proxy.curl("--fail", f"https://other.test:{testnet.tls_port}/seen?k=SECRET-Q")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/seen"
    connect = decisions(report_proxy, host="other.test", method="CONNECT")
    assert connect and connect[-1]["allow"] is True and connect[-1]["reason"] == "allowed"
    assert connect[-1]["would_deny"] == "blocked-by-allowlist"
    # Each request in the tunnel is logged too, with its method and path, for `suggest`.
    request = decisions(report_proxy, host="other.test", method="GET")
    assert request and request[-1]["path"] == "/seen"
    assert request[-1]["would_deny"] == "blocked-by-allowlist" and request[-1]["allow"] is True
    assert metric(report_proxy, "blocked-by-allowlist") >= before + 2
    assert "SECRET-Q" not in report_proxy.logs()


def test_report_mode_lets_a_port_and_a_rule_through(
    report_proxy: Proxy, testnet: LoopbackNet
) -> None:
    plain = report_proxy.curl("--fail", f"http://upstream.test:{testnet.plain_port}/get")
    assert plain.returncode == 0, plain.stderr
    line = decisions(report_proxy, host="upstream.test", port=testnet.plain_port)[-1]
    assert (line["allow"], line["would_deny"]) == (True, "blocked-port")

    posted = report_proxy.curl(
        "--fail", "--data-binary", "x", f"https://upstream.test:{testnet.tls_port}/post?q=SECRET-Q"
    )
    assert posted.returncode == 0, posted.stderr
    line = decisions(report_proxy, host="upstream.test", method="POST")[-1]
    assert (line["allow"], line["reason"], line["would_deny"]) == (
        True,
        "allowed",
        "blocked-by-rule",
    )
    assert line["path"] == "/post" and line["rule"] == "upstream.test"
    assert (
        metric(report_proxy, "blocked-by-rule") >= 1 and metric(report_proxy, "blocked-port") >= 1
    )
    assert "SECRET-Q" not in report_proxy.logs()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param(("https://private.test:{tls}/",), "blocked-address", id="address-https"),
        pytest.param(("http://private.test:{plain}/",), "blocked-address", id="address-http"),
        pytest.param(("https://metadata.test:{tls}/",), "blocked-address", id="metadata"),
        pytest.param(
            ("-H", "Host: other.test", "https://upstream.test:{tls}/get"),
            "host-mismatch",
            id="host-header-fronting",
        ),
        pytest.param(
            ("-H", "Host: other.test", "http://upstream.test:{plain}/get"),
            "host-mismatch",
            id="absolute-form-fronting",
        ),
    ],
)
def test_report_mode_never_relaxes_the_address_block_or_the_binding(
    report_proxy: Proxy, testnet: LoopbackNet, args: tuple[str, ...], reason: str
) -> None:
    filled = [a.format(tls=testnet.tls_port, plain=testnet.plain_port) for a in args]
    status, headers, _ = report_proxy.status_and_headers(*filled)
    assert (status, headers.get("x-proxy-error")) == (403, reason)


def test_report_mode_never_relaxes_the_sni_binding(
    report_proxy: Proxy, testnet: LoopbackNet
) -> None:
    """A tunnel to a host report mode lets through, with a TLS SNI naming another: the
    handshake ends, as in enforce mode."""
    port = testnet.tls_port
    with socket.create_connection(("127.0.0.1", report_proxy.port), timeout=10) as conn:
        conn.sendall(
            f"CONNECT other.test:{port} HTTP/1.1\r\nHost: other.test:{port}\r\n\r\n".encode()
        )
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(report_proxy.ca_cert))
        with (
            pytest.raises((ssl.SSLError, OSError)),
            context.wrap_socket(conn, server_hostname="upstream.test") as tls,
        ):
            tls.settimeout(5)
            tls.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
            assert tls.recv(1) == b""
    wait_until(
        lambda: bool(decisions(report_proxy, reason="host-mismatch", allow=False)),
        5,
        "the host-mismatch decision line",
    )


def test_readyz_and_the_log_say_report_mode(report_proxy: Proxy) -> None:
    status, body = report_proxy.readyz()
    assert status == 200 and body["ready"] is True
    assert body["mode"] == "report" and body["warnings"] == []
    assert body["warning"].startswith("REPORT MODE: the policy denies nothing")
    assert "REPORT MODE" in report_proxy.process.stderr() + report_proxy.process.stdout()


def test_enforce_mode_says_enforce(proxy: Proxy) -> None:
    status, body = proxy.readyz()
    assert status == 200 and body["mode"] == "enforce" and "warning" not in body
    assert "REPORT MODE" not in proxy.logs()
    assert "# TYPE auth_proxy_report_would_deny_total counter" in proxy.health("/metrics")[1]


def test_a_reload_into_report_mode_says_so(
    make_proxy, testnet: LoopbackNet, tmp_path: Path
) -> None:
    policy = write(tmp_path / "policy.yaml", testnet, "upstream.test")
    running = make_proxy(policy)
    assert running.readyz()[1]["mode"] == "enforce"
    assert "REPORT MODE" not in running.logs()
    write(policy, testnet, "upstream.test", extra="mode: report\n")
    wait_until(lambda: running.readyz()[1].get("mode") == "report", RELOAD_BOUND, "report mode")
    assert "REPORT MODE" in running.logs()
    assert running.events("policy-reload")[-1]["mode"] == "report"
    result = running.curl("--fail", f"https://other.test:{testnet.tls_port}/")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["enforce", "report"])
def test_dns_in_report_mode_answers_and_says_would_deny(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, mode: str
) -> None:
    port = free_port()
    policy = write(tmp_path / "policy.yaml", testnet, "upstream.test", extra=f"mode: {mode}\n")
    running = make_proxy(policy, "--set", f"dns_listen=127.0.0.1:{port}")
    answer = dns.ask(port, "other.test")
    line = decisions(running, protocol="dns", host="other.test")[-1]
    if mode == "enforce":
        assert answer.rcode == dns.NXDOMAIN
        assert (line["allow"], line["reason"]) == (False, "blocked-by-allowlist")
        assert "would_deny" not in line
    else:
        assert answer.rcode == dns.NOERROR and answer.addresses() == ["127.0.0.1"]
        assert (line["allow"], line["would_deny"]) == (True, "blocked-by-allowlist")
        assert metric(running, "blocked-by-allowlist") == 1
    # The address block holds in report mode too: private.test's 127.0.0.2 is not answered.
    private = dns.ask(port, "private.test")
    assert private.addresses() == []
