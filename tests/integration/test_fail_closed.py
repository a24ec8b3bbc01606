"""When anything goes wrong, the proxy denies: a raising hook, a TLS name that differs from the
tunnel, a bad policy at start, no policy, and an addon script that fails to reload."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.faulty_upstreams import HangingServer
from tests.support.processes import wait_until
from tests.support.proxy import PROXY_COMMANDS, REPO, Proxy, with_faults
from tests.support.testnet import LoopbackNet


@pytest.fixture
def sink():
    s = HangingServer()  # records what it receives, never answers
    yield s
    s.close()


def handshake_through_tunnel(proxy: Proxy, host: str, port: int, sni: str) -> Exception | None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200"), "the CONNECT itself must be allowed"
        raw.settimeout(2)  # a handshake with the silent sink stalls; a refused one fails at once
        context = ssl.create_default_context(cafile=str(proxy.ca_cert))
        try:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                tls.settimeout(3)
                tls.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
                with contextlib.suppress(TimeoutError):
                    tls.recv(1)
        except (ssl.SSLError, OSError) as e:
            return e
    return None


@pytest.mark.parametrize(
    ("sni", "refused"),
    [
        pytest.param("sink.test", False, id="matching-sni-reaches-upstream"),
        pytest.param("other.test", True, id="mismatched-sni-ends-handshake"),
    ],
)
def test_sni_must_name_the_tunnel_target(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, sink: HangingServer, sni: str, refused: bool
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "sink.test", ports=(sink.port,))
    proxy = make_proxy(policy)
    error = handshake_through_tunnel(proxy, "sink.test", sink.port, sni)
    if refused:
        assert error is not None
        assert sink.received == b"", "the upstream saw TLS bytes from a refused handshake"
        mismatch = [e for e in proxy.events("decision") if e["reason"] == "host-mismatch"]
        assert mismatch and mismatch[-1]["sni"] == sni
    else:
        # The sink never answers, so the handshake stalls, but its ClientHello reached the sink.
        wait_until(lambda: len(sink.received) > 0, 5, "the ClientHello at the sink")
        assert sink.received[:1] == b"\x16"


def test_raising_decision_denies_connect(make_proxy, testnet: LoopbackNet, tmp_path: Path) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test", "boom.test")
    proxy = make_proxy(policy, base_command=with_faults(proxy_kind_of(make_proxy)))
    status, headers, _ = proxy.status_and_headers(f"https://boom.test:{testnet.tls_port}/")
    assert (status, headers["x-proxy-error"]) == (403, "policy-error")
    assert "injected fault in decide" in proxy.logs()


def test_raising_request_check_denies_request_in_tunnel(
    make_proxy, testnet: LoopbackNet, tmp_path: Path
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy, base_command=with_faults(proxy_kind_of(make_proxy)))
    url = f"https://upstream.test:{testnet.tls_port}/echo"
    assert proxy.status_and_headers(url)[0] == 200
    status, headers, _ = proxy.status_and_headers("-H", "X-Boom: 1", url)
    assert (status, headers["x-proxy-error"]) == (403, "policy-error")


def proxy_kind_of(make_proxy) -> str:
    return make_proxy.kind


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("version: v1\nallowed_domains: ['*']\n", "'*'", id="bare-wildcard"),
        pytest.param("version: v2\nallowed_domains: [a.test]\n", "version", id="unknown-version"),
        pytest.param("allowed_domains: [a.test]\n", "version", id="missing-version"),
        pytest.param("version: v1\nallowed_domain: [a.test]\n", "allowed_domains", id="typo-key"),
        pytest.param("version: v1\nallowed_domains: [foo.*.test]\n", "foo.*.test", id="mid-star"),
        pytest.param("", "empty", id="empty-file"),
    ],
)
def test_bad_policy_at_start_exits_nonzero_naming_the_problem(
    make_proxy, tmp_path: Path, content: str, expected: str
) -> None:
    policy = tmp_path / "bad-policy.yaml"
    policy.write_text(content)
    proxy = make_proxy(policy, wait_ready=False)
    wait_until(lambda: not proxy.process.alive(), 30, "the proxy to exit")
    assert proxy.process.proc.returncode != 0
    assert str(policy) in proxy.logs()
    assert expected in proxy.logs()


def test_no_policy_denies_everything_and_is_not_ready(make_proxy, testnet: LoopbackNet) -> None:
    proxy = make_proxy(None, wait_ready=False)
    wait_until(lambda: proxy.health("/healthz")[0] == 200, 30, "/healthz")
    status, body = proxy.readyz()
    assert status == 503
    assert body["ready"] is False and "no policy" in body["error"]
    status, headers, _ = proxy.status_and_headers(f"https://upstream.test:{testnet.tls_port}/")
    assert (status, headers["x-proxy-error"]) == (403, "blocked-by-allowlist")


def test_script_that_fails_to_reload_leaves_everything_denied(
    testnet: LoopbackNet, tmp_path: Path
) -> None:
    """mitmproxy keeps proxying without a -s script that fails to reload; the guard stops that.
    (Only mitmdump: auth-proxy loads the addon as code, not as a reloadable script.)"""
    script = tmp_path / "script" / "allowlist.py"
    script.parent.mkdir()
    shutil.copy(REPO / "addons" / "allowlist.py", script)
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = Proxy(
        "mitmdump",
        tmp_path / "work",
        testnet.hosts_file,
        testnet.ca_pem,
        policy,
        base_command=[PROXY_COMMANDS["mitmdump"][0], "-s", str(script)],
    )
    proxy.workdir.mkdir()
    proxy.start()
    try:
        url = f"https://upstream.test:{testnet.tls_port}/echo"
        assert proxy.status_and_headers(url)[0] == 200

        script.write_text("this is not python (\n")
        wait_until(lambda: "error in script" in proxy.logs(), 15, "mitmproxy to reload the script")
        status, headers, _ = proxy.status_and_headers(url)
        assert (status, headers["x-proxy-error"]) == (403, "policy-error")

        shutil.copy(REPO / "addons" / "allowlist.py", script)
        wait_until(lambda: proxy.status_and_headers(url)[0] == 200, 15, "the fixed script")
        assert proxy.readyz()[0] == 200

        script.unlink()
        wait_until(lambda: "Removing script" in proxy.logs(), 15, "mitmproxy to drop the script")
        status, headers, _ = proxy.status_and_headers(url)
        assert (status, headers["x-proxy-error"]) == (403, "policy-error")
    finally:
        proxy.stop()
