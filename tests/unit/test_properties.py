"""Property-based tests of the pure policy: parsing, host normalization and the decision.

Any input either decides or raises the documented error, never anything else; normalization is
idempotent; and a fuzz run over raw CONNECT targets and Host headers finds nothing allowed that
does not match a rule.
"""

from __future__ import annotations

import ipaddress
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.net.http.url import parse_authority

from addons import policy
from addons.policy import Decision, InvalidHost, PolicyError

EXAMPLES = 3000 if os.environ.get("STRESS_FULL") == "1" else 300
FUZZ_EXAMPLES = 20000 if os.environ.get("STRESS_FULL") == "1" else 2000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

POLICY = policy.parse_policy(
    "version: v1\n"
    "allowed_domains: [upstream.test, '*.wild.test', 'bücher.test', 10.1.2.3, '::1']\n"
    "allowed_ports: [443, 8443]\n",
    "props.yaml",
)

# Characters that make host names interesting: case, dots, IDNA, separators, NUL, brackets.
HOSTY = st.lists(
    st.sampled_from([*"abcdeuwiltpsrxn.-_*:[]@%/\\ \t\x00ÄüßİK0123456789", "xn--", ".test"]),
    max_size=30,
).map("".join)
NEAR_ALLOWED = st.builds(
    lambda pre, base, post: pre + base + post,
    st.sampled_from(["", ".", "a.", "A.", "*.", "x.y.", "-", " "]),
    st.sampled_from(["upstream.test", "wild.test", "bücher.test", "UPSTREAM.TEST", "10.1.2.3"]),
    st.sampled_from(["", ".", "..", ".evil", ":443", "\x00", " ", "%2e", "evil"]),
)
ANY_HOST = st.one_of(st.text(max_size=80), HOSTY, NEAR_ALLOWED)
PORTS = st.one_of(st.integers(min_value=-1, max_value=70000), st.sampled_from([443, 8443, 80]))


def admitted_by_a_rule(host: str) -> bool:
    """The specification, independent of `match_rule`'s implementation."""
    address = policy.parse_ip(host)
    if address is not None:
        return address in POLICY.addresses
    name = policy.normalize_host(host)
    if name in POLICY.exact:
        return True
    return any(name.endswith("." + suffix) for suffix in POLICY.wildcard_suffixes)


@SETTINGS
@given(st.text(max_size=400))
def test_parse_policy_decides_or_raises_policy_error(text: str) -> None:
    try:
        result = policy.parse_policy(text, "fuzz.yaml")
    except PolicyError as e:
        assert str(e).startswith("fuzz.yaml")
    else:
        assert isinstance(result, policy.Policy)


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=15), children, max_size=5)
    ),
    max_leaves=20,
)
DOCUMENTS = st.fixed_dictionaries(
    {"version": st.sampled_from(["v1", "v1", "v2", 1])},
    optional={
        "allowed_domains": st.one_of(st.lists(ANY_HOST, max_size=6), YAML_VALUES),
        "allowed_ports": st.one_of(st.lists(PORTS, max_size=4), YAML_VALUES),
        "allow_ranges": st.one_of(
            st.lists(st.sampled_from(["10.0.0.0/8", "10.0.0.1/8", "::/0", "x", "1.2.3.4"])),
            YAML_VALUES,
        ),
        "extra": YAML_VALUES,
    },
)


@SETTINGS
@given(st.one_of(DOCUMENTS, YAML_VALUES))
def test_compiled_documents_decide_or_raise_policy_error(document: object) -> None:
    text = yaml.safe_dump(document)
    try:
        result = policy.parse_policy(text, "doc.yaml")
    except PolicyError:
        return
    # A policy that loads holds only valid entries.
    for name in result.exact | result.wildcard_suffixes:
        assert policy.normalize_host(name) == name
    assert all(1 <= p <= 65535 for p in result.ports)


@SETTINGS
@given(ANY_HOST)
def test_normalize_host_is_idempotent_or_raises_invalid_host(host: str) -> None:
    try:
        once = policy.normalize_host(host)
    except InvalidHost:
        return
    assert policy.normalize_host(once) == once
    assert once == once.lower() and once.isascii() and not once.endswith(".")


@SETTINGS
@given(ANY_HOST, PORTS)
def test_decide_always_decides_and_allows_only_what_a_rule_admits(host: str, port: int) -> None:
    decision = policy.decide(POLICY, host, port)
    assert isinstance(decision, Decision)
    assert decision.reason in (policy.ALLOWED, *policy.DENY_REASONS)
    if decision.allow:
        assert admitted_by_a_rule(host), host
        assert port in POLICY.ports
        assert decision.rule is not None


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(max_size=60), HOSTY, NEAR_ALLOWED), PORTS)
def test_fuzz_raw_connect_targets(target: str, port: int) -> None:
    """A CONNECT target as mitmproxy parses it, then the decision: never allowed unmatched."""
    raw = target if ":" in target else f"{target}:{port}"
    try:
        host, parsed_port = parse_authority(raw, check=True)
    except ValueError:
        return  # mitmproxy answers 400 before any addon runs
    if parsed_port is None:
        return
    decision = policy.decide(POLICY, host, parsed_port)
    if decision.allow:
        assert admitted_by_a_rule(host), raw
        assert parsed_port in POLICY.ports


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(NEAR_ALLOWED, st.one_of(st.text(max_size=40), HOSTY, NEAR_ALLOWED))
def test_fuzz_host_headers_bind_to_the_tunnel(tunnel_host: str, host_header: str) -> None:
    """`same_host` (the Host binding) holds only between spellings of one destination."""
    if not policy.same_host(host_header, tunnel_host):
        return
    a, b = policy.parse_ip(host_header), policy.parse_ip(tunnel_host)
    if a is not None or b is not None:
        assert a == b
        return
    assert policy.normalize_host(host_header) == policy.normalize_host(tunnel_host)


@SETTINGS
@given(st.ip_addresses())
def test_ip_literals_allowed_only_when_listed(address: ipaddress.IPv4Address) -> None:
    for spelled in (str(address), f"[{address}]" if address.version == 6 else str(address)):
        decision = policy.decide(POLICY, spelled, 443)
        assert decision.allow == (address in POLICY.addresses)
