"""What a refusal says to whoever reads it: an AI agent in the sandbox as much as a person.

A bare 403 reads as "try again another way", and an agent will: through another proxy, a raw
socket, a made-up DNS name, or forever. So each reason gets one or two plain sentences saying
what was denied, why, and what to do instead, and the same facts as JSON for a client that asks
for it (`Accept: application/json`). `X-Proxy-Error` stays the machine value; this is the prose.

Pure (no mitmproxy): the addon passes the raw method and target bytes. Nothing here repeats a
query string or a header value, and whatever came from the client is shown escaped and bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from addons.core import paths, reasons

MAX_SHOWN = 255  # a host or method, as addons.flows.printable bounds hosts in the logs
MAX_PATH = 16 * 1024  # the request target's own bound (request hygiene): never cut in the logs
MAX_PATH_SHOWN = 512  # in a sentence: enough to recognise the request

# Refused while their head was read, or because it could be read two ways: nothing of the
# request is repeated, in the body or the log.
UNREAD = frozenset({reasons.BAD_REQUEST.name, reasons.REQUEST_TOO_LARGE.name})

_NOT_ALLOWED = (
    "Retrying, or reaching it another way (another proxy, a raw socket, DNS), will not work"
)
_ASK = "ask the operator to change the policy if you need it"

# Filled in by `message`: {where} is "host:port", {reason} the X-Proxy-Error value.
_MESSAGES: dict[str, str] = {
    reasons.BLOCKED_BY_ALLOWLIST.name: (
        "auth-proxy denied {where} ({reason}): the host is not on this sandbox's allowlist. "
        "{not_allowed}; ask the operator to add it to the policy."
    ),
    reasons.BLOCKED_BY_DENYLIST.name: (
        "auth-proxy denied {where} ({reason}): the host is on this sandbox's deny list, which "
        "wins over any allow entry. {not_allowed}; {ask}."
    ),
    reasons.BLOCKED_PORT.name: (
        "auth-proxy denied {where} ({reason}): port {port} is not open in this sandbox's "
        "policy{ports}. Retrying will not work; use an open port, or ask the operator to open this "
        "one."
    ),
    reasons.BLOCKED_ADDRESS.name: (
        "auth-proxy denied {where} ({reason}): the name resolves to a private, loopback, "
        "link-local or cloud-metadata address, which this sandbox may not reach. Retrying, or "
        "using the address directly, will not work; {ask}."
    ),
    reasons.HOST_MISMATCH.name: (
        "auth-proxy denied a request to {where} ({reason}): its Host header, :authority or TLS SNI "
        "names another host than the one the connection was opened to (or it has none, or two). "
        "Open a new connection (CONNECT) to each host and send it only requests for that host."
    ),
    reasons.UPGRADE_NOT_ALLOWED.name: (
        "auth-proxy denied an Upgrade on {where} ({reason}): only WebSocket upgrades are allowed, "
        "not h2c, TLS or any other protocol. Send the request without the Upgrade header."
    ),
    reasons.UNRECOGNIZED_PROTOCOL.name: (
        "auth-proxy closed a connection to {where} ({reason}): its first bytes were neither TLS "
        "nor HTTP. Only HTTP and TLS are relayed; another protocol will not work."
    ),
    reasons.BAD_REQUEST.name: (
        "auth-proxy refused a request to {where} ({reason}): its head could be read two ways (a "
        "CR, LF or NUL in a header value, a control character in the target, a folded header, a "
        "header name that is not a token). Fix the request; sending it unchanged will not work."
    ),
    reasons.DESTINATION_IS_PROXY.name: (
        "auth-proxy closed a connection to {where} ({reason}): it was addressed to the proxy "
        "itself or to a loopback address. Connect to the host by name."
    ),
    reasons.MISSING_SNI.name: (
        "auth-proxy refused TLS to {where} ({reason}): the handshake named no host (no SNI), and "
        "the address alone is never trusted. Connect by host name, with SNI."
    ),
    reasons.DNS_QUERY_REFUSED.name: (
        "auth-proxy's DNS refused a query for {host} ({reason}): only single A or AAAA questions "
        "for allowed names are answered. Other record types will not work."
    ),
    reasons.DNS_OVERLOADED.name: (
        "auth-proxy's DNS is answering too many lookups at once ({reason}). Retry in a moment."
    ),
    reasons.POLICY_ERROR.name: (
        "auth-proxy denied {where} ({reason}): it could not decide on this request (no policy "
        "loaded, or an internal error), and it denies what it cannot decide. Tell the operator; "
        "the proxy's log says why."
    ),
    reasons.REQUEST_TOO_LARGE.name: (
        "auth-proxy refused a request to {where} ({reason}): its target is over 16 KiB, or its "
        "head over 64 KiB or 200 fields. Send a smaller request (a body, not a long URL or header)."
    ),
    reasons.TOO_MANY_CONNECTIONS.name: (
        "auth-proxy refused a request to {where} ({reason}): this sandbox has as many connections "
        "open as the proxy allows. Close idle connections, or retry once others have finished."
    ),
    reasons.SHUTTING_DOWN.name: (
        "auth-proxy refused a request to {where} ({reason}): the proxy is shutting down. Retry in "
        "a moment, on a new connection."
    ),
    reasons.UPSTREAM_UNRESOLVABLE.name: (
        "auth-proxy could not reach {where} ({reason}): the host is allowed, but its name does not "
        "resolve. Check the name; retry later if DNS is failing."
    ),
    reasons.UPSTREAM_REFUSED.name: (
        "auth-proxy could not reach {where} ({reason}): the host is allowed, but it refused the "
        "connection. Check the port; retry later."
    ),
    reasons.UPSTREAM_TLS_ERROR.name: (
        "auth-proxy did not connect to {where} ({reason}): the host is allowed, but its TLS "
        "certificate is invalid, expired, untrusted or for another name, and the proxy never "
        "forwards insecurely. Retrying will not help; tell the operator."
    ),
    reasons.UPSTREAM_TIMEOUT.name: (
        "auth-proxy gave up on {where} ({reason}): the host is allowed, but it sent no response "
        "headers in time. Retry later."
    ),
    reasons.UPSTREAM_ERROR.name: (
        "auth-proxy could not complete the request to {where} ({reason}): the host is allowed, but "
        "the connection to it failed. Retry later."
    ),
}


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """ASCII with every non-printable character escaped, at most `limit` characters of input:
    as addons.flows.printable, and control characters too (they end up in prose)."""
    ascii_text = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in ascii_text)


def without_query(path: str) -> str:
    return path.split("?", 1)[0]


def request_line(reason: str, method: bytes, target: bytes) -> tuple[str | None, str | None]:
    """The method and path (no query) of a request, as logs and refusals show them; (None,
    None) when the request was refused for its shape; no path for CONNECT (its target is the
    host and port)."""
    if reason in UNREAD or not method:
        return None, None
    shown = printable(method.decode("latin-1"))
    if method == b"CONNECT":
        return shown, None
    path = paths.request_path(target)
    return shown, (printable(without_query(path), MAX_PATH) if path is not None else None)


def _where(host: str, port: int) -> str:
    if not host:
        return "this destination"
    shown = printable(host)
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def _rule_message(where: str, method: str | None, path: str | None, allowed: tuple[str, ...]):
    request = " ".join(printable(p, MAX_PATH_SHOWN) for p in (method, path) if p)
    what = f"{request} on {where}" if request else where
    allows = (
        f"this host's rules allow only: {'; '.join(printable(a, 1024) for a in allowed)}"
        if allowed
        else "no rule for this host allows it"
    )
    if path is None or paths.normalize(path) is None:
        why = (
            "its path could be read two ways (an encoded '/', '\\' or '.', '//', or a '..' "
            f"above the root), so no rule matches it; {allows}"
        )
    else:
        why = allows
    return (
        f"auth-proxy denied {what} ({reasons.BLOCKED_BY_RULE.name}): {why}. Retrying will not "
        "work; send a request a rule allows, or ask the operator to add a rule to the policy."
    )


def message(
    reason: str,
    host: str,
    port: int,
    method: str | None,
    path: str | None,
    allowed: tuple[str, ...],
) -> str:
    """One or two sentences: what was denied, why, and what to do. `allowed`: for
    blocked-by-rule, the host's rules (HostRule.describe()); for blocked-port, the open ports."""
    where = _where(host, port)
    path = without_query(path) if path is not None else None
    if reason == reasons.BLOCKED_BY_RULE.name:
        return _rule_message(where, method, path, allowed)
    template = _MESSAGES.get(reason)
    if template is None:
        return f"auth-proxy denied {where} ({printable(reason)})."
    ports = f" (open: {', '.join(printable(a) for a in allowed)})" if allowed else ""
    return template.format(
        where=where,
        reason=reason,
        not_allowed=_NOT_ALLOWED,
        ask=_ASK,
        host=printable(host) or "a name",
        port=port,
        ports=ports,
    )


@dataclass(frozen=True)
class Denial:
    """Everything a refusal may say; `text()` and `json()` are the two bodies."""

    reason: str
    host: str
    port: int
    method: str | None = None
    path: str | None = None
    rule: str | None = None
    allowed: tuple[str, ...] = ()

    def message(self) -> str:
        return message(self.reason, self.host, self.port, self.method, self.path, self.allowed)

    def text(self) -> str:
        return self.message() + "\n"

    def json(self) -> str:
        path = without_query(self.path) if self.path is not None else None
        return (
            json.dumps(
                {
                    "error": self.reason,
                    "reason": self.reason,
                    "host": printable(self.host),
                    "port": self.port,
                    "method": self.method,
                    "path": path,
                    "rule": self.rule,
                    "allowed": list(self.allowed),
                    "message": self.message(),
                }
            )
            + "\n"
        )


def wants_json(accept: str) -> bool:
    """Whether an Accept header value takes JSON (application/json, or application/*+json) at
    any place in its list, with any quality but 0."""
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            continue
        if not any(_refused_quality(p) for p in params):
            return True
    return False


def _refused_quality(param: str) -> bool:
    name, _, value = param.partition("=")
    if name.strip() != "q":
        return False
    try:
        return float(value.strip()) == 0
    except ValueError:
        return False
