"""The layer choice after a CONNECT: a table of first bytes, and the property that makes it
independent of how a client splits its writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addons.protocol_gate import MAX_LEADING_EMPTY, MAX_METHOD, Protocol, classify

MORE, TLS, HTTP, NEITHER = Protocol.MORE, Protocol.TLS, Protocol.HTTP, Protocol.NEITHER


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", MORE, id="nothing-yet"),
        pytest.param(b"\x16", MORE, id="tls-one-byte"),
        pytest.param(b"\x16\x03", MORE, id="tls-two-bytes"),
        pytest.param(b"\x16\x03\x01", TLS, id="tls-1.0-record"),
        pytest.param(b"\x16\x03\x03\x00\x10", TLS, id="tls-1.2-record"),
        pytest.param(b"\x16\x03\x04", NEITHER, id="tls-bad-minor"),
        pytest.param(b"\x16\x02\x00", NEITHER, id="sslv2-ish"),
        pytest.param(b"\x17\x03\x03", NEITHER, id="application-data-record"),
        pytest.param(b"G", MORE, id="method-one-byte"),
        pytest.param(b"GET", MORE, id="method-no-space"),
        pytest.param(b"GET ", HTTP, id="method-and-space"),
        pytest.param(b"GET / HTTP/1.1", HTTP, id="request-line-unended"),
        pytest.param(b"M-SEARCH * HTTP/1.1\r\n", HTTP, id="token-with-dash"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP, id="h2-preface"),
        pytest.param(b"\r\n", MORE, id="blank-line-only"),
        pytest.param(b"\r\nGET / HTTP/1.1\r\n", HTTP, id="blank-line-then-request"),
        pytest.param(b"\n\nGET ", HTTP, id="bare-lf-lines"),
        pytest.param(b" GET / HTTP/1.1", NEITHER, id="leading-space"),
        pytest.param(b"\r\n \r\n", NEITHER, id="space-among-blank-lines"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", NEITHER, id="ssh-greeting"),
        pytest.param(b"\x00\x01", NEITHER, id="binary"),
        pytest.param(b"GE\x00T ", NEITHER, id="nul-in-method"),
        pytest.param(b"A" * MAX_METHOD, MORE, id="longest-token-waits"),
        pytest.param(b"A" * (MAX_METHOD + 1), NEITHER, id="token-too-long"),
        pytest.param(b"A" * MAX_METHOD + b" ", HTTP, id="longest-token-then-space"),
        pytest.param(b"\r\n" * (MAX_LEADING_EMPTY // 2), MORE, id="many-blank-lines-wait"),
        pytest.param(b"\n" * (MAX_LEADING_EMPTY + 1), NEITHER, id="too-many-blank-lines"),
    ],
)
def test_classify(data: bytes, expected: Protocol) -> None:
    assert classify(data) is expected


@given(st.binary(max_size=80), st.integers(min_value=0, max_value=80))
def test_a_decided_prefix_never_changes_its_answer(data: bytes, cut: int) -> None:
    """Whatever the split, the answer on a prefix is MORE or the answer on the whole."""
    prefix = classify(data[:cut])
    assert prefix is MORE or prefix is classify(data)


@given(
    st.sampled_from([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00"]),
    st.integers(min_value=0, max_value=3),
)
def test_real_first_bytes_decide_the_same_whatever_the_split(data: bytes, blank: int) -> None:
    data = b"\r\n" * blank + data if data[:1] != b"\x16" else data
    answers = {classify(data[:cut]) for cut in range(len(data) + 1)} - {MORE}
    assert len(answers) == 1
