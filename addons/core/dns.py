"""Every decision the DNS listener makes, as pure functions over plain values.

A query gets an answer only when it is exactly one A or AAAA question, in class IN, for a name
the policy allows (any `allowed_domains` entry, whatever the port: the port is decided when the
client connects). Everything else is answered by the proxy itself (REFUSED or NXDOMAIN) and
never asked of any name server, so a workload cannot carry data out in the names or types it
asks about. The addon resolves an allowed name itself and asks `decide_answer` about what came
back; `keep_addresses` removes the addresses a sandbox may never reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from addons import policy as rules
from addons.addresses import is_forbidden
from addons.core import reasons
from addons.core.decision import Decision
from addons.policy import IPAddress, Policy

__all__ = [
    "AAAA",
    "ANSWERED_TYPES",
    "CLASS_IN",
    "OPCODE_QUERY",
    "A",
    "QueryFacts",
    "decide_answer",
    "decide_question",
    "keep_addresses",
    "type_name",
]

A, AAAA = 1, 28
ANSWERED_TYPES = (A, AAAA)
CLASS_IN = 1
OPCODE_QUERY = 0

# Names for the decision line; any other type is logged by number ("TYPE65" style, RFC 3597).
_TYPE_NAMES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    10: "NULL",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    41: "OPT",
    64: "SVCB",
    65: "HTTPS",
    252: "AXFR",
    251: "IXFR",
    255: "ANY",
}


def type_name(qtype: int) -> str:
    return _TYPE_NAMES.get(qtype, f"TYPE{qtype}")


@dataclass(frozen=True)
class QueryFacts:
    """One DNS query as the client sent it: the first question's name, type and class, and how
    many questions there were."""

    questions: int
    name: str = ""
    qtype: int = A
    qclass: int = CLASS_IN
    opcode: int = OPCODE_QUERY
    is_query: bool = True  # False: the client sent a response, not a query


def _deny(reason: reasons.Reason, rule: str | None = None) -> Decision:
    return Decision(False, reason.name, rule)


def _shape_allowed(facts: QueryFacts) -> bool:
    return (
        facts.is_query
        and facts.opcode == OPCODE_QUERY
        and facts.questions == 1
        and facts.qclass == CLASS_IN
        and facts.qtype in ANSWERED_TYPES
    )


def _name_decision(policy: Policy, name: str) -> Decision:
    """Whether `name` may be resolved, by the deny list and the allow list. An IP literal is not
    a DNS name (resolvers never ask for one), whatever addresses the policy lists."""
    if not name or rules.parse_ip(name) is not None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    try:
        denied = rules.match_denied(policy, name)
        rule = rules.match_rule(policy, name)
    except rules.InvalidHost:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    if denied is not None:
        return _deny(reasons.BLOCKED_BY_DENYLIST, denied)
    if rule is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    return Decision(True, reasons.ALLOWED.name, rule, needs_addresses=True)


def decide_question(facts: QueryFacts, policy: Policy | None) -> Decision:
    """Allowed (with the rule that matched): resolve the name for this type and answer. Denied:
    REFUSED for `dns-query-refused`, NXDOMAIN for `blocked-by-allowlist` or
    `blocked-by-denylist`. In report mode a valid name the lists would deny is resolved, and the
    decision says `would_deny`; the query's shape is never relaxed."""
    if not _shape_allowed(facts):
        return _deny(reasons.DNS_QUERY_REFUSED)
    if policy is None:
        return _deny(reasons.BLOCKED_BY_ALLOWLIST)
    decision = _name_decision(policy, facts.name)
    valid = bool(facts.name) and rules.parse_ip(facts.name) is None and _valid(facts.name)
    if decision.allow or not policy.reporting or not valid:
        return decision
    return Decision(
        True, reasons.ALLOWED.name, decision.rule, needs_addresses=True, would_deny=decision.reason
    )


def _valid(name: str) -> bool:
    try:
        rules.normalize_host(name)
    except rules.InvalidHost:
        return False
    return True


def keep_addresses(addresses: Iterable[IPAddress], policy: Policy | None) -> tuple[IPAddress, ...]:
    """The addresses a sandbox may be told about: forbidden ones (loopback, private, metadata,
    ...) removed unless the policy's `allow_ranges` cover them. Order kept, duplicates dropped."""
    ranges = policy.allow_ranges if policy is not None else ()
    return tuple(dict.fromkeys(a for a in addresses if not is_forbidden(a, ranges)))


def decide_answer(
    question: Decision, resolved: tuple[IPAddress, ...] | None, kept: tuple[IPAddress, ...]
) -> Decision:
    """After the lookup of an allowed name: `resolved` is None when the lookup failed, else
    every address found; `kept` is what `keep_addresses` left of it."""
    if resolved is None or not resolved:
        return _deny(reasons.UPSTREAM_UNRESOLVABLE, question.rule)
    if not kept:
        return _deny(reasons.BLOCKED_ADDRESS, question.rule)
    return Decision(True, reasons.ALLOWED.name, question.rule, would_deny=question.would_deny)
