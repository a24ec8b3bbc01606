"""Idle TLS connections give their memory BIOs back, without losing a byte or the session."""

from __future__ import annotations

import gc
import socket

from OpenSSL import SSL

from addons import tls_buffers
from tests.support.tlspair import TlsPair

BIG = bytes(range(256)) * 1024  # 256 KiB: grows both BIOs well past their first allocation


def test_renewed_bios_carry_on_both_ways_byte_exact() -> None:
    pair = TlsPair()
    pair.handshake()
    assert pair.send(pair.server, pair.client, BIG) == BIG
    old = (pair.server._into_ssl, pair.server._from_ssl)

    assert tls_buffers.renew_empty_bios(pair.server) is True

    assert (pair.server._into_ssl, pair.server._from_ssl) != old
    assert pair.send(pair.server, pair.client, BIG) == BIG
    assert pair.send(pair.client, pair.server, BIG) == BIG


def test_bios_with_bytes_queued_are_left_alone() -> None:
    pair = TlsPair()
    pair.handshake()
    pair.client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    pair.server.bio_write(pair.client.bio_read(65536))  # arrived, not yet decrypted
    before = (pair.server._into_ssl, pair.server._from_ssl)

    assert tls_buffers.renew_empty_bios(pair.server) is False

    assert (pair.server._into_ssl, pair.server._from_ssl) == before
    assert pair.server.recv(65536) == b"GET / HTTP/1.1\r\n\r\n"


def test_socket_connections_are_not_touched() -> None:
    left, right = socket.socketpair()
    with left, right:
        conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), left)
        assert tls_buffers.renew_empty_bios(conn) is False


def test_sweeper_renews_every_tracked_idle_connection_and_forgets_closed_ones() -> None:
    sweeper = tls_buffers.BioSweeper()
    pairs = [TlsPair() for _ in range(3)]
    for pair in pairs:
        pair.handshake()
        sweeper.track(pair.server)
        sweeper.track(pair.client)
    sweeper.track(None)
    pairs[0].client.sendall(b"pending")  # the client's outgoing BIO holds a record

    assert sweeper.sweep() == 5

    del pairs[1:], pair
    gc.collect()
    assert sweeper.sweep() == 1  # the first server; its client still has a record queued
