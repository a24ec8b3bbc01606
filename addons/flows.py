"""Facts about flows and connections that the allowlist needs, gathered in one place."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http.url import parse_authority
from OpenSSL import SSL

from addons import policy

MAX_LOGGED_HOST = 255


def printable(host: str) -> str:
    return host[:MAX_LOGGED_HOST].encode("ascii", "backslashreplace").decode("ascii")


def client_label(flow_or_conn: http.HTTPFlow | object) -> str:
    conn = getattr(flow_or_conn, "client_conn", flow_or_conn)
    peer = getattr(conn, "peername", None)
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def host_binding_holds(request: http.Request, host: str, port: int) -> bool:
    """Whether every authority the request names (Host headers, :authority) is `host:port`."""
    authorities = request.headers.get_all("host")
    if len(authorities) > 1:
        return False
    if request.authority:
        authorities.append(request.authority)
    for authority in authorities:
        if authority == host or authority == f"{host}:{port}":
            continue  # the common spelling, as parse_authority would read it
        named_host, named_port = parse_authority(authority, check=False)
        # `host` was approved, so it is well-formed: the same spelling needs no normalizing.
        if named_host != host and not policy.same_host(named_host, host):
            return False
        if named_port is not None and named_port != port:
            return False
    return True


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
