"""Small facts about flows and connections: printable hosts, client labels, a TLS refusal."""

from __future__ import annotations

from mitmproxy import http
from OpenSSL import SSL

MAX_LOGGED_HOST = 255


def printable(host: str) -> str:
    return host[:MAX_LOGGED_HOST].encode("ascii", "backslashreplace").decode("ascii")


def client_label(flow_or_conn: http.HTTPFlow | object) -> str:
    conn = getattr(flow_or_conn, "client_conn", flow_or_conn)
    peer = getattr(conn, "peername", None)
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def refusing_tls(server_side: bool) -> SSL.Connection:
    """A TLS connection that fails its handshake before sending a byte (no usable versions)."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    conn = SSL.Connection(context)
    if server_side:
        conn.set_connect_state()
    else:
        conn.set_accept_state()
    return conn
