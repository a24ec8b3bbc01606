"""Every allow/deny decision the proxy makes, in one pure function: `decide(facts, policy)`.

The addon fills `Facts` from mitmproxy's objects and applies the `Decision`. The DNS lookup stays
in the addon: a destination allowed by name and port comes back with `needs_addresses`, and the
addon resolves the host and asks again with the answer as a fact. The same call, addresses
filled, re-checks an earlier approval under a reloaded policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from addons import policy as rules
from addons import policy_rules
from addons.addresses import any_forbidden, embedded_ipv4
from addons.core import paths, reasons
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
RELAXED_IN_REPORT = frozenset(
    r.name
    for r in (
        reasons.BLOCKED_BY_ALLOWLIST,
        reasons.BLOCKED_BY_DENYLIST,
        reasons.BLOCKED_PORT,
        reasons.BLOCKED_BY_RULE,
    )
)


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


def _reported(policy: Policy, decision: Decision) -> Decision:
    """Report mode lets through what the names, ports and rules deny, saying so; never the
    address block, the Host/SNI binding, request limits or policy errors."""
    if decision.allow or not policy.reporting or decision.reason not in RELAXED_IN_REPORT:
        return decision
    return Decision(True, reasons.ALLOWED.name, decision.rule, would_deny=decision.reason)


def _by_name(facts: Facts, policy: Policy) -> Decision:
    return _reported(policy, rules.decide(policy, facts.host, facts.port))


def _destination(facts: Facts, policy: Policy | None) -> Decision:
    """A destination the proxy will connect to: by name and port, then by every address."""
    if policy is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    by_name = _by_name(facts, policy)
    if not by_name.allow:
        return by_name
    if facts.resolve_failed or facts.addresses == ():
        return _deny(reasons.UPSTREAM_UNRESOLVABLE, by_name.rule)
    if facts.addresses is None:
        # Built, not dataclasses.replace()d: this is every CONNECT's path, and replace costs more
        # than the rest of the decision.
        return Decision(True, by_name.reason, by_name.rule, True, by_name.would_deny)
    if any_forbidden(facts.addresses, policy.allow_ranges):
        return _deny(reasons.BLOCKED_ADDRESS, by_name.rule)
    return by_name


def _with_rules(facts: Facts, policy: Policy, decision: Decision) -> Decision:
    """A host that `rules` name is held to them: the request's method and normalized path must
    match one (a path that could be read two ways matches none)."""
    applicable = policy_rules.rules_for(policy, facts.host)
    if not applicable:
        return decision
    method = facts.method.decode("latin-1")
    # Normalized, and also as written when it has dot segments (servers differ on those).
    readings = paths.path_readings(facts.target)
    for rule in applicable:
        if rule.admits(method, readings):
            label = f"{decision.rule} {rule.label}" if decision.rule else rule.label
            return replace(decision, rule=label)
    labels = ",".join(rule.label for rule in applicable)
    if policy.reporting:
        return replace(decision, would_deny=decision.would_deny or reasons.BLOCKED_BY_RULE.name)
    return _deny(reasons.BLOCKED_BY_RULE, labels)


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
    destination = _destination(facts, policy)
    if not destination.allow or policy is None:
        return destination
    return _with_rules(facts, policy, destination)


def _in_tunnel(facts: Facts, policy: Policy | None) -> Decision:
    """The tunnel's destination is fixed and its connection pinned to checked addresses; the
    request must name it, and the policy in force now (it may have been reloaded) must still
    allow it."""
    if not binding_holds(facts.fields, facts.authority, facts.host, facts.port):
        return _deny(reasons.HOST_MISMATCH)
    if policy is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    by_name = _by_name(facts, policy)
    if not by_name.allow:
        return by_name
    return _with_rules(facts, policy, by_name)


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
