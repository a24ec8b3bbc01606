"""The runtime's TLS contexts: idle buffers released from the start; classic key exchange on the
workload's leg only, unless tls_ecdh_curve_client says otherwise."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from addons import tuning
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
        pytest.param(tuning.CLIENT_LEG_GROUPS, {}, b"X25519MLKEM768", False, id="client-leg-no-mlkem"),
        pytest.param(tuning.CLIENT_LEG_GROUPS, {}, b"X25519MLKEM768:X25519", True, id="client-leg-x25519"),
        pytest.param(tuning.CLIENT_LEG_GROUPS, {}, b"P-256", True, id="client-leg-p256"),
        pytest.param(None, {}, b"X25519MLKEM768", True, id="upstream-leg-defaults"),
        pytest.param(
            tuning.CLIENT_LEG_GROUPS, {"ecdh_curve": object()}, b"X25519MLKEM768", True,
            id="ecdh-curve-option-wins",
        ),
    ],
)  # fmt: skip
def test_lean_contexts(groups, options, client_groups, handshakes) -> None:
    context = tuning._lean_contexts(plain_context, groups)(**options)
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
