"""Every allow/deny decision the proxy makes, in one pure function: `decide(facts, policy)`.

The addon fills `Facts` from mitmproxy's objects and applies the `Decision`. The DNS lookup stays
in the addon: a destination allowed by name and port comes back with `needs_addresses`, and the
addon resolves the host and asks again with the answer as a fact. The same call, addresses
filled, re-checks an earlier approval under a reloaded policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from addons import policy as rules
from addons.addresses import any_forbidden, embedded_ipv4
from addons.core import reasons
from addons.core.authority import binding_holds
from addons.core.decision import Decision
from addons.core.limits import shape_refusal
from addons.core.requests import refusal
from addons.policy import IPAddress, Policy, same_host

__all__ = ["Decision", "Facts", "Stage", "decide"]


class Stage(enum.Enum):
    ACCEPT = "accept"  # a transparent connection was accepted: only where it was going is known
    CONNECT = "connect"
    REQUEST = "request"
    TLS = "tls"


@dataclass(frozen=True)
class Facts:
    stage: Stage
    # The CONNECT target, the absolute-form host, or the tunnel's host (requests in a tunnel, TLS).
    host: str
    port: int
    in_tunnel: bool = False  # a REQUEST or TLS inside an approved tunnel: host/port are its own
    scheme: str = ""  # an absolute-form request's scheme; "" otherwise
    over_connection_cap: bool = False
    draining: bool = False
    addresses: tuple[IPAddress, ...] | None = None  # None: not resolved (yet)
    resolve_failed: bool = False
    http1: bool = False
    method: bytes = b""
    target: bytes = b""  # the raw request target (mitmproxy's request.data.path)
    fields: tuple[tuple[bytes, bytes], ...] = ()  # raw header fields, in order
    authority: str = ""  # the request's :authority or absolute-form authority; "" if none
    sni: str | None = None  # TLS: the ClientHello's SNI
    # Through the transparent listener: the client dialled `original_address` itself, and the
    # pod's rules redirected it. The destination is then named by SNI or Host, never this address.
    transparent: bool = False
    original_address: IPAddress | None = None


def _deny(reason: reasons.Reason, rule: str | None = None) -> Decision:
    return Decision(False, reason.name, rule)


_ALLOWED = Decision(True, reasons.ALLOWED.name)


def decide(facts: Facts, policy: Policy | None) -> Decision:
    if facts.transparent and _loops(facts.original_address):
        return _deny(reasons.DESTINATION_IS_PROXY)
    if facts.stage is Stage.ACCEPT:
        return _ALLOWED if facts.transparent else _deny(reasons.POLICY_ERROR)
    if facts.stage is Stage.TLS:
        return _tls(facts)
    if facts.over_connection_cap:
        return _deny(reasons.TOO_MANY_CONNECTIONS)
    if facts.draining:
        return _deny(reasons.SHUTTING_DOWN)
    if facts.stage is Stage.CONNECT:
        return _destination(facts, policy)
    return _request(facts, policy)


def _destination(facts: Facts, policy: Policy | None) -> Decision:
    """A destination the proxy will connect to: by name and port, then by every address."""
    if policy is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    by_name = rules.decide(policy, facts.host, facts.port)
    if not by_name.allow:
        return by_name
    if facts.resolve_failed or facts.addresses == ():
        return _deny(reasons.UPSTREAM_UNRESOLVABLE, by_name.rule)
    if facts.addresses is None:
        return Decision(True, by_name.reason, by_name.rule, needs_addresses=True)
    if any_forbidden(facts.addresses, policy.allow_ranges):
        return _deny(reasons.BLOCKED_ADDRESS, by_name.rule)
    return by_name


def _request(facts: Facts, policy: Policy | None) -> Decision:
    refused = shape_refusal(facts.target, facts.fields, facts.http1) or refusal(
        facts.method, facts.target, facts.fields
    )
    if refused is not None:
        return Decision(False, refused)
    if facts.in_tunnel:
        return _in_tunnel(facts, policy)
    if facts.transparent and not facts.host:
        return _deny(reasons.HOST_MISMATCH)  # no Host: nothing names the destination
    # Absolute form (HTTP_PROXY), or transparent plain HTTP (host from its Host header): decided
    # like a CONNECT to the host it names.
    if facts.scheme not in ("http", "https") or not facts.host:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    if not binding_holds(facts.fields, facts.authority, facts.host, facts.port):
        return _deny(reasons.HOST_MISMATCH)
    return _destination(facts, policy)


def _in_tunnel(facts: Facts, policy: Policy | None) -> Decision:
    """The tunnel's destination is fixed and its connection pinned to checked addresses; the
    request must name it, and the policy in force now (it may have been reloaded) must still
    allow it."""
    if not binding_holds(facts.fields, facts.authority, facts.host, facts.port):
        return _deny(reasons.HOST_MISMATCH)
    if policy is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    return rules.decide(policy, facts.host, facts.port)


def _loops(address: IPAddress | None) -> bool:
    """A transparent connection to loopback (or of unknown origin) would come back to the proxy:
    the pod's rules never redirect loopback, so only a client dialling the listener gets here."""
    if address is None or address.is_unspecified:
        return True
    mapped = embedded_ipv4(address)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _tls(facts: Facts) -> Decision:
    """A TLS handshake must be inside an approved tunnel, and its SNI (if any) name the tunnel's
    host: the certificate the client checks is then for the host the policy approved."""
    if facts.transparent and not facts.sni:
        return _deny(reasons.MISSING_SNI)
    if not facts.in_tunnel:
        return _deny(reasons.HOST_MISMATCH)
    if facts.sni is not None and not same_host(facts.sni, facts.host):
        return _deny(reasons.HOST_MISMATCH)
    return _ALLOWED
