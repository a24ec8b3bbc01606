"""Every reason the proxy gives, in one table: its `X-Proxy-Error` value, its HTTP status, its
kind, and what it means. Metrics labels, log lines, response headers and the README's decisions
table all come from here; no other module spells a reason or its status."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    ALLOW = "allow"
    DENIAL = "denial"  # the policy or a limit refused it: retrying will not help
    FAULT = "fault"  # it was allowed, but the upstream could not be reached or failed


@dataclass(frozen=True)
class Reason:
    name: str  # the X-Proxy-Error value, the log and metrics label
    status: int | None  # None: the connection is closed, there is no response to carry a status
    kind: Kind
    description: str

    def __str__(self) -> str:
        return self.name


def _r(name: str, status: int | None, kind: Kind, description: str) -> Reason:
    return Reason(name, status, kind, description)


D, F = Kind.DENIAL, Kind.FAULT

ALLOWED = _r("allowed", 200, Kind.ALLOW, "the destination and the request are allowed")
BLOCKED_BY_ALLOWLIST = _r("blocked-by-allowlist", 403, D, "the host matches no entry")
BLOCKED_PORT = _r("blocked-port", 403, D, "the port is not in `allowed_ports`")
BLOCKED_BY_DENYLIST = _r(
    "blocked-by-denylist",
    403,
    D,
    "the host matches a `denied_domains` entry (it wins over any allow entry, exact or wildcard)",
)
BLOCKED_BY_RULE = _r(
    "blocked-by-rule",
    403,
    D,
    "the host has `rules`, and the request's method and path match none of them (a path that "
    "could be read two ways, such as an encoded `/` or `.`, matches none)",
)
BLOCKED_ADDRESS = _r(
    "blocked-address",
    403,
    D,
    "the name resolves to a loopback, private, link-local, CGNAT, multicast, unspecified, "
    "reserved or cloud-metadata address (IPv4 or IPv6, IPv4 embedded in IPv6 included) outside "
    "`allow_ranges`; every resolved address is checked",
)
HOST_MISMATCH = _r(
    "host-mismatch",
    403,
    D,
    "inside a tunnel, the Host header, `:authority` or TLS SNI names another host than the "
    "CONNECT target (domain fronting; for SNI the handshake ends); a doubled Host, or an HTTP/1 "
    "request without one",
)
UPGRADE_NOT_ALLOWED = _r(
    "upgrade-not-allowed",
    403,
    D,
    "an `Upgrade` other than `websocket` (h2c in any spelling, TLS, a list), or an upstream "
    "`101` that is not the WebSocket asked for (the connection ends)",
)
UNRECOGNIZED_PROTOCOL = _r(
    "unrecognized-protocol",
    None,
    D,
    "inside a tunnel, the client's first bytes are neither TLS nor an HTTP request: the "
    "connection is closed, never relayed raw",
)
BAD_REQUEST = _r(
    "bad-request",
    400,
    D,
    "a request head that two parsers could read differently: a CR, LF or NUL in a header "
    "value, a control character in the target, a header name that is not a token, a folded "
    "line, or `Connection` naming Host, Content-Length or Transfer-Encoding",
)
DESTINATION_IS_PROXY = _r(
    "destination-is-proxy",
    None,
    D,
    "through the transparent listener, a connection whose original destination is a loopback "
    "address or one of the proxy's own listeners (a loop): closed before anything is read",
)
MISSING_SNI = _r(
    "missing-sni",
    None,
    D,
    "through the transparent listener, TLS without SNI: the destination has no name to decide "
    "on, and the address the client chose is never trusted: the handshake fails",
)
DNS_QUERY_REFUSED = _r(
    "dns-query-refused",
    None,
    D,
    "a DNS question other than A or AAAA (TXT, MX, ANY, SRV, HTTPS/SVCB, PTR, NULL, ...), or a "
    "query that is not exactly one question: answered REFUSED; no query leaves the pod",
)
DNS_OVERLOADED = _r(
    "dns-overloaded",
    None,
    D,
    "more DNS lookups in flight than the listener admits: answered SERVFAIL at once",
)
POLICY_ERROR = _r("policy-error", 403, D, "anything raised while deciding, or no addon loaded")
REQUEST_TOO_LARGE = _r(
    "request-too-large",
    431,
    D,
    "a request target over 16 KiB, or a head over 64 KiB or 200 fields, while it is read",
)
TOO_MANY_CONNECTIONS = _r(
    "too-many-connections", 503, D, "more than `max_connections` client connections"
)
SHUTTING_DOWN = _r(
    "shutting-down", 503, D, "a request that arrives while the proxy drains after SIGTERM"
)
UPSTREAM_UNRESOLVABLE = _r("upstream-unresolvable", 502, F, "an allowed name does not resolve")
UPSTREAM_REFUSED = _r("upstream-refused", 502, F, "the upstream refuses the connection")
UPSTREAM_TLS_ERROR = _r(
    "upstream-tls-error",
    502,
    F,
    "the upstream's certificate is invalid, expired, untrusted or for another name: never "
    "forwarded insecurely",
)
UPSTREAM_TIMEOUT = _r(
    "upstream-timeout",
    504,
    F,
    "the upstream accepted the request and sent no response headers within `upstream_timeout`",
)
UPSTREAM_ERROR = _r("upstream-error", 502, F, "any other upstream failure")

ALL: tuple[Reason, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Reason))
BY_NAME: dict[str, Reason] = {reason.name: reason for reason in ALL}


def status_of(name: str, default: int = 403) -> int:
    reason = BY_NAME.get(name)
    return reason.status if reason is not None and reason.status is not None else default


def markdown_table() -> str:
    """The README's decisions table."""
    lines = ["| reason | status | kind | when |", "|---|---|---|---|"]
    for reason in ALL:
        if reason.kind is Kind.ALLOW:
            continue
        status = "connection closed" if reason.status is None else str(reason.status)
        lines.append(f"| `{reason.name}` | {status} | {reason.kind.value} | {reason.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
