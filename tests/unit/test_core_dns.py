"""The DNS listener's decisions, one row per case: the question the client sent, the policy in
force, and the decision the core must give (and so the answer: allowed -> looked up,
dns-query-refused -> REFUSED, blocked-by-allowlist -> NXDOMAIN)."""

from __future__ import annotations

import ipaddress

import pytest

from addons.core import dns, reasons
from addons.core.dns import QueryFacts, decide_answer, decide_question, keep_addresses
from addons.policy import compile_policy

POLICY = compile_policy(
    {
        "version": "v1",
        "allowed_domains": ["api.test", "*.wild.test", "93.184.216.34", "2606:4700::1"],
        "allowed_ports": [8443],
        "allow_ranges": ["10.1.2.0/24", "fd00:1::/64"],
    },
    "policy.yaml",
)
ALLOWED, BLOCKED = reasons.ALLOWED.name, reasons.BLOCKED_BY_ALLOWLIST.name
REFUSED, ADDRESS = reasons.DNS_QUERY_REFUSED.name, reasons.BLOCKED_ADDRESS.name
UNRESOLVABLE = reasons.UPSTREAM_UNRESOLVABLE.name

# Wire type numbers (RFC 1035, 3596, 2782, 9460, 8482).
TXT, MX, NULL, ANY, SRV, HTTPS, SVCB, PTR, CNAME, NS, SOA, AXFR, OPT = (
    16,
    15,
    10,
    255,
    33,
    65,
    64,
    12,
    5,
    2,
    6,
    252,
    41,
)
CLASS_CH, CLASS_ANY = 3, 255


def q(name: str = "api.test", qtype: int = dns.A, **facts) -> QueryFacts:
    return QueryFacts(questions=facts.pop("questions", 1), name=name, qtype=qtype, **facts)


ROWS = [
    # Answered: A and AAAA for allowed names, whatever the spelling.
    ("a-allowed", q(), True, ALLOWED, "api.test"),
    ("aaaa-allowed", q(qtype=dns.AAAA), True, ALLOWED, "api.test"),
    ("upper-case", q("API.TEST"), True, ALLOWED, "api.test"),
    ("mixed-case-0x20", q("aPi.TeSt"), True, ALLOWED, "api.test"),
    ("trailing-dot", q("api.test."), True, ALLOWED, "api.test"),
    ("wildcard-child", q("www.wild.test"), True, ALLOWED, "*.wild.test"),
    ("wildcard-deep", q("a.b.c.wild.test", qtype=dns.AAAA), True, ALLOWED, "*.wild.test"),
    ("allowed-whatever-port", q("api.test"), True, ALLOWED, "api.test"),
    # Names the policy does not allow: NXDOMAIN.
    ("not-listed", q("evil.test"), False, BLOCKED, None),
    ("wildcard-apex", q("wild.test"), False, BLOCKED, None),
    ("suffix-trick", q("api.test.evil.test"), False, BLOCKED, None),
    ("prefix-trick", q("evilapi.test"), False, BLOCKED, None),
    ("exfil-label", q("ZXhmaWx0cmF0ZWQ.evil.test"), False, BLOCKED, None),
    ("ipv4-literal-listed", q("93.184.216.34"), False, BLOCKED, None),
    ("ipv6-literal-listed", q("2606:4700::1", qtype=dns.AAAA), False, BLOCKED, None),
    ("bracketed-literal", q("[2606:4700::1]"), False, BLOCKED, None),
    ("numeric-last-label", q("api.2130706433"), False, BLOCKED, None),
    ("over-long-name", q(".".join(["a" * 63] * 4) + ".wild.test"), False, BLOCKED, None),
    ("over-long-label", q("a" * 64 + ".wild.test"), False, BLOCKED, None),
    ("empty-label", q("a..wild.test"), False, BLOCKED, None),
    ("root-name", q(""), False, BLOCKED, None),
    ("nul-in-name", q("api.test\x00.evil"), False, BLOCKED, None),
    ("space-in-name", q("api .test"), False, BLOCKED, None),
    ("dot-inside-label", q("www.wild.test\\.evil"), False, BLOCKED, None),
    ("unicode-lookalike", q("\u0430pi.test"), False, BLOCKED, None),  # Cyrillic a
    # Every other type, class or shape: REFUSED, whatever the name.
    ("txt", q(qtype=TXT), False, REFUSED, None),
    ("mx", q(qtype=MX), False, REFUSED, None),
    ("null", q(qtype=NULL), False, REFUSED, None),
    ("any", q(qtype=ANY), False, REFUSED, None),
    ("srv", q("_x._tcp.api.test", qtype=SRV), False, REFUSED, None),
    ("https", q(qtype=HTTPS), False, REFUSED, None),
    ("svcb", q(qtype=SVCB), False, REFUSED, None),
    ("ptr", q("1.0.0.127.in-addr.arpa", qtype=PTR), False, REFUSED, None),
    ("cname", q(qtype=CNAME), False, REFUSED, None),
    ("ns", q(qtype=NS), False, REFUSED, None),
    ("soa", q(qtype=SOA), False, REFUSED, None),
    ("axfr", q(qtype=AXFR), False, REFUSED, None),
    ("opt-as-question", q(qtype=OPT), False, REFUSED, None),
    ("type-zero", q(qtype=0), False, REFUSED, None),
    ("type-65535", q(qtype=65535), False, REFUSED, None),
    ("txt-not-allowed-name", q("evil.test", qtype=TXT), False, REFUSED, None),
    ("class-chaos", q(qclass=CLASS_CH), False, REFUSED, None),
    ("class-any", q(qclass=CLASS_ANY), False, REFUSED, None),
    ("zero-questions", q(questions=0), False, REFUSED, None),
    ("two-questions", q(questions=2), False, REFUSED, None),
    ("many-questions", q(questions=65535), False, REFUSED, None),
    ("opcode-notify", q(opcode=4), False, REFUSED, None),
    ("opcode-update", q(opcode=5), False, REFUSED, None),
    ("a-response-not-a-query", q(is_query=False), False, REFUSED, None),
]


@pytest.mark.parametrize(
    ("facts", "allow", "reason", "rule"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_decide_question(facts: QueryFacts, allow: bool, reason: str, rule: str | None) -> None:
    decision = decide_question(facts, POLICY)
    assert (decision.allow, decision.reason, decision.rule) == (allow, reason, rule)
    # Only an allowed question is looked up; nothing else may reach a resolver.
    assert decision.needs_addresses is allow


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        pytest.param(q(), BLOCKED, id="a-without-policy"),
        pytest.param(q(qtype=TXT), REFUSED, id="txt-without-policy"),
    ],
)
def test_no_policy_answers_nothing(facts: QueryFacts, reason: str) -> None:
    decision = decide_question(facts, None)
    assert (decision.allow, decision.reason, decision.needs_addresses) == (False, reason, False)


def ips(*texts: str) -> tuple:
    return tuple(ipaddress.ip_address(t) for t in texts)


@pytest.mark.parametrize(
    ("found", "kept"),
    [
        pytest.param(ips("93.184.216.34"), ips("93.184.216.34"), id="public-v4"),
        pytest.param(ips("2606:4700::1"), ips("2606:4700::1"), id="public-v6"),
        pytest.param(ips("127.0.0.1"), (), id="loopback"),
        pytest.param(ips("169.254.169.254"), (), id="metadata"),
        pytest.param(ips("fd00:ec2::254"), (), id="aws-v6-metadata"),
        pytest.param(ips("::ffff:127.0.0.1"), (), id="mapped-loopback"),
        pytest.param(ips("64:ff9b::a9fe:a9fe"), (), id="nat64-metadata"),
        pytest.param(ips("10.1.2.3"), ips("10.1.2.3"), id="private-in-allow-ranges"),
        pytest.param(ips("10.1.3.3"), (), id="private-outside-allow-ranges"),
        pytest.param(ips("fd00:1::5"), ips("fd00:1::5"), id="ula-in-allow-ranges"),
        pytest.param(
            ips("10.9.9.9", "93.184.216.34", "127.0.0.1", "93.184.216.34"),
            ips("93.184.216.34"),
            id="mixed-keeps-public-once",
        ),
        pytest.param((), (), id="nothing-found"),
    ],
)
def test_keep_addresses(found: tuple, kept: tuple) -> None:
    assert keep_addresses(found, POLICY) == kept


def test_keep_addresses_without_policy_keeps_only_public() -> None:
    assert keep_addresses(ips("10.1.2.3", "93.184.216.34"), None) == ips("93.184.216.34")


ALLOWED_QUESTION = decide_question(q(), POLICY)


@pytest.mark.parametrize(
    ("resolved", "kept", "allow", "reason"),
    [
        pytest.param(None, (), False, UNRESOLVABLE, id="lookup-failed"),
        pytest.param((), (), False, UNRESOLVABLE, id="no-addresses"),
        pytest.param(ips("127.0.0.1"), (), False, ADDRESS, id="all-forbidden"),
        pytest.param(ips("93.184.216.34"), ips("93.184.216.34"), True, ALLOWED, id="kept"),
    ],
)
def test_decide_answer(resolved, kept, allow: bool, reason: str) -> None:
    decision = decide_answer(ALLOWED_QUESTION, resolved, kept)
    assert (decision.allow, decision.reason, decision.rule) == (allow, reason, "api.test")
    assert not decision.needs_addresses


@pytest.mark.parametrize(
    ("qtype", "name"),
    [
        pytest.param(dns.A, "A", id="a"),
        pytest.param(dns.AAAA, "AAAA", id="aaaa"),
        pytest.param(TXT, "TXT", id="txt"),
        pytest.param(HTTPS, "HTTPS", id="https"),
        pytest.param(4242, "TYPE4242", id="unknown"),
    ],
)
def test_type_name(qtype: int, name: str) -> None:
    assert dns.type_name(qtype) == name


def test_the_dns_core_is_pure() -> None:
    """The same probe as test_core_is_pure, on this module: no mitmproxy, OpenSSL or h2."""
    from tests.unit.test_core_is_pure import FORBIDDEN, PROBE, run

    code = PROBE.format(forbidden=FORBIDDEN).replace(
        "import addons.core.decide as core",
        "import addons.core.dns\nimport addons.core.decide as core",
    )
    result = run(code)
    assert result.returncode == 0 and result.stdout.strip() == "pure", result.stderr
