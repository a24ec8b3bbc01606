"""Allowed requests reach the upstream unmodified, over HTTP/1.1, HTTP/2 and WebSocket, with
streaming and large bodies intact."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet
from tests.support.upstream_app import pattern


def client_context(proxy: Proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


@pytest.mark.parametrize("http_version", ["--http1.1", "--http2"])
def test_request_arrives_unmodified(proxy: Proxy, testnet: LoopbackNet, http_version: str) -> None:
    body = b"payload \x00\xff" * 1000
    done = subprocess.run(
        [
            *("curl", "--silent", "--show-error", "--fail", http_version),
            *("--proxy", proxy.url, "--cacert", str(proxy.ca_cert)),
            *("-X", "PUT", "-H", "X-Custom: kept as sent"),
            *("-H", "Content-Type: application/octet-stream", "--data-binary", "@-"),
            f"https://upstream.test:{testnet.tls_port}/a/b%20c?q=1&r=%2F",
        ],
        input=body,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["method"] == "PUT"
    assert report["raw_path"] == "/a/b%20c"
    assert report["query_string"] == "q=1&r=%2F"
    assert report["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = {k: v for k, v in report["headers"]}
    assert headers["x-custom"] == "kept as sent"
    assert headers["content-type"] == "application/octet-stream"


def test_http2_end_to_end(proxy: Proxy, testnet: LoopbackNet) -> None:
    with httpx.Client(http2=True, proxy=proxy.url, verify=client_context(proxy)) as client:
        response = client.get(f"https://upstream.test:{testnet.tls_port}/echo?h2=1")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert response.json()["http_version"] == "2"


def test_websocket_echo(proxy: Proxy, testnet: LoopbackNet) -> None:
    with ws_connect(
        f"wss://upstream.test:{testnet.tls_port}/ws",
        proxy=proxy.url,
        ssl=client_context(proxy),
        open_timeout=10,
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"


def test_streaming_response_is_not_buffered(proxy: Proxy, testnet: LoopbackNet) -> None:
    """The upstream sends an event every 300 ms; a buffering proxy delivers them all at once."""
    arrivals = []
    with httpx.Client(proxy=proxy.url, verify=client_context(proxy), timeout=20) as client:
        url = f"https://upstream.test:{testnet.tls_port}/events/5"
        with client.stream("GET", url) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] > 0.6


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
def test_download_is_byte_exact(proxy: Proxy, testnet: LoopbackNet, size: int) -> None:
    with httpx.Client(proxy=proxy.url, verify=client_context(proxy), timeout=60) as client:
        response = client.get(f"https://upstream.test:{testnet.tls_port}/bytes/{size}")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(pattern(size)).digest()


def test_upload_is_byte_exact(proxy: Proxy, testnet: LoopbackNet) -> None:
    data = pattern(3 * 1024 * 1024 + 7)
    with httpx.Client(proxy=proxy.url, verify=client_context(proxy), timeout=60) as client:
        response = client.post(f"https://upstream.test:{testnet.tls_port}/echo", content=data)
    assert response.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_leaf_certificate_chains_to_the_proxy_ca(proxy: Proxy, testnet: LoopbackNet) -> None:
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(proxy.ca_cert.read_bytes())
    der = tunnel_peer_certificate(proxy, "upstream.test", testnet.tls_port)
    leaf = x509.load_der_x509_certificate(der)
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "upstream.test" in names.get_values_for_type(x509.DNSName)


def tunnel_peer_certificate(proxy: Proxy, host: str, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with client_context(proxy).wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


@pytest.mark.parametrize("name", ["upstream.test.", "UPSTREAM.Test.", "Upstream.TEST"])
def test_host_spellings_reach_the_upstream(proxy: Proxy, testnet: LoopbackNet, name: str) -> None:
    """A trailing dot or upper case is a legal spelling of an allowed name; the upstream's
    certificate is checked against the name as certificates spell it (a trailing dot made
    OpenSSL's host check fail before the handshake, and the client waited for nothing)."""
    result = proxy.curl(
        "-o", "/dev/null", "-w", "%{http_code}", f"https://{name}:{testnet.tls_port}/", timeout=10
    )
    assert result.stdout == "200", (result.stdout, result.stderr)
