"""The runtime's TLS contexts: idle buffers released from the start; classic key exchange on the
workload's leg only, unless tls_ecdh_curve_client says otherwise; and the other runtime changes
answer as mitmproxy does."""

from __future__ import annotations

import gc
import logging
import typing
import weakref

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import http, options, optmanager
from mitmproxy.proxy import context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.test import tflow
from OpenSSL import SSL

from addons.patches import tls_contexts, tuning
from tests.support.tlspair import TlsPair


def plain_context(**_options) -> SSL.Context:
    return SSL.Context(SSL.TLS_METHOD)


def client_offering(groups: bytes) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    assert SSL._lib.SSL_CTX_set1_curves_list(context._context, groups) == 1
    return context


def mode_of(context: SSL.Context) -> int:
    return SSL._lib.SSL_CTX_set_mode(context._context, 0)  # adds nothing, returns the mode


@pytest.mark.parametrize(
    ("groups", "options", "client_groups", "handshakes"),
    [
        pytest.param(tls_contexts.CLIENT_LEG_GROUPS, {}, b"X25519MLKEM768", False, id="client-leg-no-mlkem"),
        pytest.param(tls_contexts.CLIENT_LEG_GROUPS, {}, b"X25519MLKEM768:X25519", True, id="client-leg-x25519"),
        pytest.param(tls_contexts.CLIENT_LEG_GROUPS, {}, b"P-256", True, id="client-leg-p256"),
        pytest.param(None, {}, b"X25519MLKEM768", True, id="upstream-leg-defaults"),
        pytest.param(
            tls_contexts.CLIENT_LEG_GROUPS, {"ecdh_curve": object()}, b"X25519MLKEM768", True,
            id="ecdh-curve-option-wins",
        ),
    ],
)  # fmt: skip
def test_lean_contexts(groups, options, client_groups, handshakes) -> None:
    context = tls_contexts._lean_contexts(plain_context, groups)(**options)
    assert mode_of(context) & SSL._lib.SSL_MODE_RELEASE_BUFFERS

    client = client_offering(client_groups)
    client.set_verify(SSL.VERIFY_NONE)
    pair = TlsPair(server_context=context, client_context=client)
    if handshakes:
        pair.handshake()
        assert pair.send(pair.client, pair.server, b"ping") == b"ping"
    else:
        with pytest.raises((SSL.Error, AssertionError)):
            pair.handshake()


def leaf() -> tuple[x509.Certificate, object]:
    issued = trustme.CA().issue_cert("leaf.test")
    cert = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    return cert, key


def test_connections_share_one_openssl_copy_of_a_leaf_and_its_key() -> None:
    cert, key = leaf()
    other_cert, other_key = leaf()
    conns = [SSL.Connection(SSL.Context(SSL.TLS_METHOD)) for _ in range(3)]
    for conn, (c, k) in zip(
        conns, [(cert, key), (cert, key), (other_cert, other_key)], strict=True
    ):
        tls_contexts._use_shared_certificate(conn, c)
        tls_contexts._use_shared_privatekey(conn, k)

    def pointer(conn: SSL.Connection) -> int:
        return int(SSL._ffi.cast("uintptr_t", SSL._lib.SSL_get_certificate(conn._ssl)))

    assert pointer(conns[0]) == pointer(conns[1]) != pointer(conns[2])
    assert tls_contexts._private_keys.get(key) is tls_contexts._private_keys.get(key)
    assert conns[0].get_certificate().to_cryptography() == cert
    assert conns[2].get_certificate().to_cryptography() == other_cert


def test_converted_keeps_the_most_recently_used() -> None:
    made: list[str] = []
    converted = tls_contexts.Converted(lambda o: made.append(o) or f"converted {o}", size=2)
    a, b, c = "a", "b", "c"
    assert [converted.get(x) for x in (a, b, a, c, a, b)] == [
        "converted a", "converted b", "converted a", "converted c", "converted a", "converted b",
    ]  # fmt: skip
    assert made == ["a", "b", "c", "b"]  # b was least recently used when c came


HEADERS = http.Headers(
    [(b"Host", b"api.test"), (b"Accept", b"a"), (b"accept", b"b"), (b"X-Raw", b"\xff")]
)


@pytest.mark.parametrize(
    ("name", "get_all", "get", "contained"),
    [
        pytest.param("host", ["api.test"], "api.test", True, id="other-case"),
        pytest.param(b"HOST", ["api.test"], "api.test", True, id="bytes-name"),
        pytest.param("accept", ["a", "b"], "a, b", True, id="repeated-folded"),
        pytest.param("x-raw", ["\udcff"], "\udcff", True, id="non-utf8-value"),
        pytest.param("absent", [], None, False, id="absent"),
    ],
)  # fmt: skip
def test_header_lookups_answer_as_mitmproxys(name, get_all, get, contained) -> None:
    assert tuning._headers_get_all(HEADERS, name) == get_all == HEADERS.get_all(name)
    assert tuning._headers_get(HEADERS, name) == get == HEADERS.get(name)
    assert tuning._headers_get(HEADERS, name, "default") == (get or "default")
    assert tuning._headers_contains(HEADERS, name) is contained is (name in HEADERS)


def test_option_reads_copy_only_mutable_values() -> None:
    opts = optmanager.OptManager()
    opts.add_option("flag", bool, True, "a flag")
    opts.add_option("names", typing.Sequence[str], ["a"], "some names")
    flag, names = opts._options["flag"], opts._options["names"]

    assert tuning._option_value(flag) is True
    copied = tuning._option_value(names)
    copied.append("b")
    assert tuning._option_value(names) == ["a"]
    opts.update(names=["c"])
    assert tuning._option_value(names) == ["c"] and tuning._option_value(names) is not names.value


@pytest.mark.parametrize(
    ("message", "level", "handler_level", "logged"),
    [
        pytest.param("Streaming response from api.test.", logging.INFO, logging.INFO, False, id="notice-unshown"),
        pytest.param("Streaming request to api.test.", logging.INFO, logging.DEBUG, True, id="notice-at-debug-verbosity"),
        pytest.param("server connect api.test", logging.INFO, logging.INFO, True, id="other-info"),
        pytest.param("Streaming response from api.test.", logging.WARNING, logging.INFO, True, id="notice-at-warning"),
    ],
)  # fmt: skip
def test_per_request_notices_are_not_made_when_nothing_shows_them(
    monkeypatch, message, level, handler_level, logged
) -> None:
    made: list[str] = []
    monkeypatch.setattr(tuning, "_connection_log", lambda self, m, lvl, exc: made.append(m))
    handler = logging.NullHandler(handler_level)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(logging.getLogger("mitmproxy"), "handlers", [])

    tuning._log_unless_unshown_notice(object(), message, level)
    assert made == ([message] if logged else [])


def finished_stream(status: int) -> http_layers.HttpStream:
    flow = tflow.tflow(resp=True)
    flow.response.status_code = status
    stream = http_layers.HttpStream(context.Context(flow.client_conn, options.Options()), 1)
    stream.flow = flow
    stream.client_state = stream.server_state = stream.state_done
    return stream


def test_a_finished_stream_is_freed_without_the_garbage_collector() -> None:
    stream = finished_stream(200)
    expected = [type(c) for c in http_layers.HttpStream.flow_done(finished_stream(200))]

    emitted = [type(c) for c in tuning._flow_done_and_unlinked(stream)]

    assert emitted == expected == [http_layers.DropStream, http_layers.SendHttp]
    assert list(stream.client_state(None)) == list(stream.server_state(None)) == []
    freed = weakref.ref(stream)
    gc.collect()  # earlier garbage (frames of the test's own calls) may still refer to it
    gc.disable()
    try:
        del stream
        assert freed() is None
    finally:
        gc.enable()


def test_an_upgraded_stream_keeps_its_states() -> None:
    stream = finished_stream(101)
    list(tuning._flow_done_and_unlinked(stream))
    assert stream.client_state.__self__ is stream and stream in stream.context.layers
