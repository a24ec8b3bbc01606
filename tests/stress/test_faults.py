"""Faults: each gets a clear status and an X-Proxy-Error reason, and the proxy keeps serving."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stress.conftest import Report
from tests.support import faulty_upstreams as fu
from tests.support.processes import wait_until
from tests.support.proxy import PROXY_COMMANDS, Proxy, generate_ca
from tests.support.testnet import LoopbackNet

KINDS = sorted(PROXY_COMMANDS)


@pytest.fixture(scope="module")
def servers(testnet: LoopbackNet) -> Iterator[dict]:
    made = {
        "hang-tls": fu.HangingServer(fu.server_context(testnet.ca, "upstream.test")),
        "hang-plain": fu.HangingServer(),
        "cut": fu.CutServer(fu.server_context(testnet.ca, "upstream.test"), 4 * 1024 * 1024),
        **fu.bad_cert_servers(testnet.ca, "upstream.test"),
    }
    yield made
    for s in made.values():
        s.close()


@pytest.fixture(scope="module", params=KINDS)
def faulty_proxy(request, testnet: LoopbackNet, servers: dict, tmp_path_factory) -> Iterator[Proxy]:
    work = tmp_path_factory.mktemp(f"faults-{request.param}")
    refused = fu.refused_port()
    ports = (testnet.tls_port, testnet.plain_port, refused, *(s.port for s in servers.values()))
    policy = testnet.write_policy(
        work / "policy.yaml", "upstream.test", "nowhere.invalid", ports=ports
    )
    proxy = Proxy(
        request.param,
        work,
        testnet.hosts_file,
        testnet.ca_pem,
        policy,
        ["--set", "upstream_timeout=2"],
    ).start()
    proxy.refused_port = refused  # type: ignore[attr-defined]
    yield proxy
    proxy.stop()


def still_serving(proxy: Proxy, testnet: LoopbackNet) -> bool:
    status, _, _ = proxy.status_and_headers(f"https://upstream.test:{testnet.tls_port}/echo")
    return status == 200 and proxy.health("/healthz")[0] == 200


CERT_SERVER = {
    "expired-cert": "expired",
    "wrong-name-cert": "wrong-name",
    "untrusted-cert": "untrusted-ca",
}

CASES = [
    ("refused-https", "https://upstream.test:{refused}/", 502, "upstream-refused"),
    ("refused-http", "http://upstream.test:{refused}/", 502, "upstream-refused"),
    ("unresolvable", "https://nowhere.invalid:{refused}/", 502, "upstream-unresolvable"),
    ("hang-tls", "https://upstream.test:{hang-tls}/", 504, "upstream-timeout"),
    ("hang-plain", "http://upstream.test:{hang-plain}/", 504, "upstream-timeout"),
    ("expired-cert", "https://upstream.test:{expired}/", 502, "upstream-tls-error"),
    ("wrong-name-cert", "https://upstream.test:{wrong-name}/", 502, "upstream-tls-error"),
    ("untrusted-cert", "https://upstream.test:{untrusted-ca}/", 502, "upstream-tls-error"),
]


@pytest.mark.parametrize(("name", "url", "status", "reason"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_upstream_fault_gets_status_and_reason(
    faulty_proxy: Proxy,
    testnet: LoopbackNet,
    servers: dict,
    report: Report,
    name: str,
    url: str,
    status: int,
    reason: str,
    http: str,
) -> None:
    row = report.add("fault", f"{name} {http[2:]} ({faulty_proxy.kind})", tried=1)
    ports = {k: s.port for k, s in servers.items()} | {"refused": faulty_proxy.refused_port}  # type: ignore[attr-defined]
    target = url.replace("{", "{0[").replace("}", "]}").format(ports)
    if http == "--http2" and target.startswith("http://"):
        # curl asks a plain-HTTP upstream to upgrade to h2c: refused before anything is sent.
        status, reason = 403, "upgrade-not-allowed"
    got, headers, body = faulty_proxy.status_and_headers(http, target)
    row.detail = f"{got} {headers.get('x-proxy-error')}"
    assert (got, headers.get("x-proxy-error")) == (status, reason), body
    if name in CERT_SERVER:
        # Never forwarded insecurely: the bad-cert upstream never saw a request.
        assert b"GET" not in servers[CERT_SERVER[name]].received
    assert still_serving(faulty_proxy, testnet)
    row.passed = True


def test_download_cut_off_halfway(
    faulty_proxy: Proxy, testnet: LoopbackNet, servers: dict, report: Report
) -> None:
    row = report.add("fault", f"download cut halfway ({faulty_proxy.kind})", tried=1)
    result = faulty_proxy.curl(
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        f"https://upstream.test:{servers['cut'].port}/",
    )
    # The client must learn the body is short: curl fails (18 partial file, 56, 92 ...).
    assert result.returncode != 0, result.stdout
    row.detail = f"curl rc {result.returncode}, {result.stdout}"
    assert still_serving(faulty_proxy, testnet)
    row.passed = True


def test_client_disconnects_mid_upload(
    faulty_proxy: Proxy, testnet: LoopbackNet, report: Report
) -> None:
    import ssl

    row = report.add("fault", f"client gone mid-body ({faulty_proxy.kind})", tried=5)
    context = ssl.create_default_context(cafile=str(faulty_proxy.ca_cert))
    for _ in range(5):
        raw = socket.create_connection(("127.0.0.1", faulty_proxy.port), timeout=10)
        authority = f"upstream.test:{testnet.tls_port}"
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        tls = context.wrap_socket(raw, server_hostname="upstream.test")
        tls.sendall(
            f"POST /echo HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        tls.sendall(b"x" * 1_000_000)
        tls.close()
    assert still_serving(faulty_proxy, testnet)
    row.passed = True


# -- policy file faults ------------------------------------------------------------------------


def _break_deleted(path: Path) -> None:
    path.unlink()


def _break_emptied(path: Path) -> None:
    path.write_text("")


def _break_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _break_dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "gone.yaml")


@pytest.mark.parametrize(
    "breaker",
    [_break_deleted, _break_emptied, _break_directory, _break_dangling],
    ids=["deleted", "emptied", "unreadable-directory", "unreadable-dangling-symlink"],
)
def test_policy_file_broken_keeps_last_good(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, report: Report, breaker
) -> None:
    row = report.add("fault", f"policy {breaker.__name__[7:]} ({make_proxy.kind})", tried=1)
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy)
    breaker(policy)
    wait_until(
        lambda: proxy.readyz()[1].get("last_reload_error"), 15, "the reload error on /readyz"
    )
    _, body = proxy.readyz()
    row.detail = str(body.get("last_reload_error"))[:60]
    assert body["entries"] == 1 and str(policy) in body["last_reload_error"]
    assert still_serving(proxy, testnet)
    row.passed = True


# -- CA faults at start --------------------------------------------------------------------------


def _ca_missing(confdir: Path) -> Path:
    (confdir / "mitmproxy-ca.pem").unlink()
    return confdir / "mitmproxy-ca.pem"


def _ca_unreadable(confdir: Path) -> Path:
    path = confdir / "mitmproxy-ca.pem"
    path.unlink()
    path.mkdir()  # root reads any file; a directory cannot be read as one
    return path


def _ca_mismatched(confdir: Path) -> Path:
    other = generate_ca(confdir.parent / "other-ca")
    path = confdir / "mitmproxy-ca.pem"
    key = path.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    cert = (
        "-----BEGIN CERTIFICATE-----"
        + (other / "mitmproxy-ca.pem").read_text().split("-----BEGIN CERTIFICATE-----")[1]
    )
    path.write_text(key + cert)
    return path


def _ca_garbage(confdir: Path) -> Path:
    path = confdir / "mitmproxy-ca.pem"
    path.write_text("not a pem at all\n")
    return path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "breaker",
    [_ca_missing, _ca_unreadable, _ca_mismatched, _ca_garbage],
    ids=["missing", "unreadable", "mismatched", "garbage"],
)
def test_bad_ca_at_start_exits_naming_the_file(
    testnet: LoopbackNet, tmp_path: Path, report: Report, breaker, kind: str
) -> None:
    row = report.add("fault", f"CA {breaker.__name__[4:]} at start ({kind})", tried=1)
    proxy = Proxy(
        kind,
        tmp_path,
        testnet.hosts_file,
        testnet.ca_pem,
        testnet.write_policy(tmp_path / "policy.yaml", "upstream.test"),
    )
    generate_ca(proxy.confdir)
    # The file mitmproxy reads; with a CA made outside confdir (the sidecar's tls.crt/tls.key)
    # the entrypoint copies them into this one file.
    bad = breaker(proxy.confdir)
    proxy.start(wait_ready=False)
    assert proxy.process is not None
    proxy.process.proc.wait(30)
    code = proxy.process.proc.returncode
    logs = proxy.logs()
    row.detail = f"exit {code}"
    assert code != 0
    if kind == "mitmdump" and breaker is _ca_garbage:
        # mitmproxy's TlsConfig parses the CA before any `-s` script is loaded, and fails with
        # "Unable to load PEM file" without the path: the script cannot get in first. The
        # sidecar runs auth-proxy, whose check runs before TlsConfig and names the file.
        assert "Unable to load PEM file" in logs, logs[-2000:]
    else:
        assert str(bad) in logs, logs[-2000:]
    row.passed = True


# -- SIGTERM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_drains_in_flight_then_exits_zero(
    testnet: LoopbackNet, tmp_path: Path, report: Report, kind: str
) -> None:
    row = report.add("fault", f"SIGTERM drain ({kind})", tried=1)
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = Proxy(
        kind, tmp_path, testnet.hosts_file, testnet.ca_pem, policy, ["--set", "shutdown_grace=20"]
    ).start()
    assert proxy.process is not None
    result: dict = {}

    def slow() -> None:  # 10 server-sent events, 0.3 s apart: about 3 s in flight
        result["r"] = proxy.curl(
            "--http1.1", "-N", f"https://upstream.test:{testnet.tls_port}/events/10"
        )

    t = threading.Thread(target=slow)
    t.start()
    wait_until(
        lambda: any(e.get("allow") for e in proxy.events("decision")), 10, "the slow request"
    )
    time.sleep(0.5)
    proxy.process.signal(signal.SIGTERM)
    time.sleep(0.5)
    refused = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
            "--proxy",
            proxy.url,
            f"http://upstream.test:{testnet.plain_port}/echo",
        ],
        capture_output=True,
        text=True,
    )
    t.join(30)
    proxy.process.proc.wait(30)
    code = proxy.process.proc.returncode
    r = result["r"]
    row.detail = (
        f"in-flight rc {r.returncode}, new {refused.stdout or refused.returncode}, exit {code}"
    )
    assert r.returncode == 0 and r.stdout.count("data: ") == 10, r.stderr
    assert refused.stdout in ("000", "503"), refused.stdout
    assert code == 0, proxy.logs()[-2000:]
    row.passed = True


def test_shared_helpers_exist() -> None:
    assert shutil.which("curl")
