"""Policy v1: parsing, validation errors that name the entry and the fix, normalization,
wildcards, and every decision reason. Tables with descriptive ids."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from addons import policy
from addons.policy import Decision, PolicyError

BASE = "version: v1\nallowed_domains:\n  - httpbin.org\n  - '*.example.com'\n  - 203.0.113.7\n"


@pytest.fixture(scope="module")
def base() -> policy.Policy:
    return policy.parse_policy(BASE, "base.yaml")


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param("httpbin.org", 443, Decision(True, "allowed", "httpbin.org"), id="exact"),
        pytest.param("HTTPBIN.ORG", 443, Decision(True, "allowed", "httpbin.org"), id="case"),
        pytest.param(
            "httpbin.org.", 80, Decision(True, "allowed", "httpbin.org"), id="trailing-dot"
        ),
        pytest.param(" httpbin.org ", 443, Decision(True, "allowed", "httpbin.org"), id="spaces"),
        pytest.param(
            "a.example.com", 443, Decision(True, "allowed", "*.example.com"), id="wildcard"
        ),
        pytest.param(
            "a.b.c.example.com", 443, Decision(True, "allowed", "*.example.com"), id="wildcard-deep"
        ),
        pytest.param(
            "example.com", 443, Decision(False, "blocked-by-allowlist"), id="wildcard-not-apex"
        ),
        pytest.param(
            "badexample.com", 443, Decision(False, "blocked-by-allowlist"), id="suffix-not-label"
        ),
        pytest.param(
            "example.com.evil.net", 443, Decision(False, "blocked-by-allowlist"), id="prefix-trick"
        ),
        pytest.param(
            "httpbin.org.evil.net",
            443,
            Decision(False, "blocked-by-allowlist"),
            id="exact-as-prefix",
        ),
        pytest.param(
            "sub.httpbin.org",
            443,
            Decision(False, "blocked-by-allowlist"),
            id="exact-not-subdomain",
        ),
        pytest.param(
            "httpbin.org", 8443, Decision(False, "blocked-port", "httpbin.org"), id="port"
        ),
        pytest.param("203.0.113.7", 443, Decision(True, "allowed", "203.0.113.7"), id="listed-ip"),
        pytest.param("203.0.113.8", 443, Decision(False, "blocked-by-allowlist"), id="unlisted-ip"),
        pytest.param("[::1]", 443, Decision(False, "blocked-by-allowlist"), id="unlisted-ipv6"),
        pytest.param(
            "2130706433", 443, Decision(False, "blocked-by-allowlist"), id="decimal-ip-spelling"
        ),
        pytest.param("0x7f.1", 443, Decision(False, "blocked-by-allowlist"), id="hex-ip-spelling"),
        pytest.param("", 443, Decision(False, "blocked-by-allowlist"), id="empty"),
        pytest.param(
            "a..example.com", 443, Decision(False, "blocked-by-allowlist"), id="empty-label"
        ),
        pytest.param(
            "ex ample.com", 443, Decision(False, "blocked-by-allowlist"), id="space-inside"
        ),
        pytest.param(
            "httpbin.org\x00.evil", 443, Decision(False, "blocked-by-allowlist"), id="nul-byte"
        ),
        pytest.param(
            "*.example.com", 443, Decision(False, "blocked-by-allowlist"), id="star-as-host"
        ),
    ],
)
def test_decide(base: policy.Policy, host: str, port: int, expected: Decision) -> None:
    assert policy.decide(base, host, port) == expected


def test_idna_entries_match_punycode_and_unicode() -> None:
    compiled = policy.parse_policy("version: v1\nallowed_domains: [bücher.example]\n", "idna.yaml")
    assert "xn--bcher-kva.example" in compiled.exact
    assert policy.decide(compiled, "xn--bcher-kva.example", 443).allow
    assert policy.decide(compiled, "BÜCHER.example", 443).allow


def test_empty_allowlist_denies_everything() -> None:
    compiled = policy.parse_policy("version: v1\nallowed_domains: []\n", "empty.yaml")
    assert compiled.entry_count == 0
    assert policy.decide(compiled, "httpbin.org", 443) == Decision(False, "blocked-by-allowlist")


def test_defaults_and_optional_keys() -> None:
    compiled = policy.parse_policy(
        "version: v1\nallowed_domains: [a.test]\nallowed_ports: [8443]\n"
        "allow_ranges: [10.1.0.0/16, 'fd00::/8']\n",
        "full.yaml",
    )
    assert compiled.ports == frozenset({8443})
    assert compiled.allow_ranges == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert policy.parse_policy("version: v1\n", "min.yaml").ports == frozenset({443, 80})


def test_extra_domains_use_the_same_syntax() -> None:
    compiled = policy.parse_policy("version: v1\n", "p.yaml", extra_domains=["*.extra.test"])
    assert policy.decide(compiled, "a.extra.test", 443).rule == "*.extra.test"
    with pytest.raises(PolicyError, match=r"allowed_domains\[0\] 'foo\.\*'"):
        policy.parse_policy("version: v1\n", "p.yaml", extra_domains=["foo.*"])


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            "version: v1\nallowed_domains: ['*']\n",
            ["allowed_domains[0] '*'", "Fix:"],
            id="bare-star",
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['*foo.com']\n",
            ["'*foo.com'", "whole first label"],
            id="partial-star",
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['foo.*.com']\n", ["'foo.*.com'"], id="inner-star"
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['*.com']\n", ["'*.com'", "top-level"], id="tld-wildcard"
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['']\n",
            ["allowed_domains[0] ''", "empty"],
            id="empty-entry",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a..b]\n", ["'a..b'", "empty label"], id="empty-label"
        ),
        pytest.param(
            "version: v1\nallowed_domains: [-a.com]\n", ["'-a.com'", "starts or ends"], id="hyphen"
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['a b.com']\n", ["'a b.com'", "characters"], id="space"
        ),
        pytest.param(
            "version: v1\nallowed_domains: [123]\n",
            ["allowed_domains[0] 123", "not a string"],
            id="number",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [ok.test, 'x' ]\nallowed_domain: []\n",
            ["unknown key 'allowed_domain'", "did you mean 'allowed_domains'"],
            id="typo-key",
        ),
        pytest.param(
            "version: v2\n", ["unknown version 'v2'", "version: v1"], id="unknown-version"
        ),
        pytest.param("version: 1\n", ["unknown version 1"], id="numeric-version"),
        pytest.param("allowed_domains: [a.test]\n", ["missing 'version'"], id="missing-version"),
        pytest.param("", ["the file is empty"], id="empty-file"),
        pytest.param("- a\n- b\n", ["must be a YAML mapping"], id="not-a-mapping"),
        pytest.param(
            "version: v1\nallowed_domains: a.test\n",
            ["allowed_domains must be a list"],
            id="domains-not-list",
        ),
        pytest.param("version: v1\nallowed_ports: [0]\n", ["allowed_ports[0] 0"], id="port-zero"),
        pytest.param(
            "version: v1\nallowed_ports: [70000]\n", ["allowed_ports[0] 70000"], id="port-too-big"
        ),
        pytest.param(
            "version: v1\nallowed_ports: ['443']\n", ["allowed_ports[0] '443'"], id="port-string"
        ),
        pytest.param(
            "version: v1\nallowed_ports: [true]\n", ["allowed_ports[0] True"], id="port-bool"
        ),
        pytest.param("version: v1\nallowed_ports: []\n", ["allowed_ports is empty"], id="no-ports"),
        pytest.param(
            "version: v1\nallow_ranges: [10.0.0.1/8]\n",
            ["allow_ranges[0] '10.0.0.1/8'", "host bits"],
            id="cidr-host-bits",
        ),
        pytest.param(
            "version: v1\nallow_ranges: [nonsense]\n",
            ["allow_ranges[0] 'nonsense'"],
            id="cidr-garbage",
        ),
        pytest.param("version: v1\n  bad: [indent\n", ["not valid YAML"], id="yaml-syntax"),
        # -- issue 15: mode, denied_domains, rules, the public-suffix guard ---------------------
        pytest.param(
            "version: v1\nmode: audit\n", ["mode 'audit' is unknown", "'report'"], id="mode"
        ),
        pytest.param(
            "version: v1\ndenied_domains: ['a.*.com']\n",
            ["denied_domains[0] 'a.*.com'", "whole first label"],
            id="denied-inner-star",
        ),
        pytest.param(
            "version: v1\ndenied_domains: a.test\n",
            ["denied_domains must be a list"],
            id="denied-not-list",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: b.test}]\n",
            ["rules[0] 'b.test'", "no allowed_domains entry allows this host", "add the host"],
            id="rule-host-not-allowed",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: '*.a.test'}]\n",
            ["rules[0] '*.a.test'", "could never apply"],
            id="rule-wildcard-not-allowed",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: a.test, methods: [get]}]\n",
            ["rules[0] 'get'", "upper-case HTTP method", "GET"],
            id="rule-lower-method",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: a.test, methods: []}]\n",
            ["rules[0]", "non-empty list"],
            id="rule-no-methods",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: a.test, paths: ['x/y']}]\n",
            ["rules[0] 'x/y'"],
            id="rule-path-relative",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: a.test, paths: ['/a%2Fb']}]\n",
            ["rules[0] '/a%2Fb'"],
            id="rule-path-ambiguous",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [{host: a.test, path: ['/a']}]\n",
            ["rules[0] 'path'", "is not a rule key", "host, methods, paths"],
            id="rule-key-typo",
        ),
        pytest.param(
            "version: v1\nallowed_domains: [a.test]\nrules: [a.test]\n",
            ["rules[0] 'a.test'", "is not a mapping"],
            id="rule-not-mapping",
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['*.co.uk']\n",
            ["allowed_domains[0] '*.co.uk'", "ICANN section", "Fix:"],
            id="icann-suffix-wildcard",
        ),
        pytest.param(
            "version: v1\nallowed_domains: ['*.gov.uk']\n",
            ["'*.gov.uk'", "public suffix"],
            id="icann-suffix-two-labels",
        ),
    ],
)
def test_invalid_policies_name_the_source_entry_and_fix(text: str, fragments: list[str]) -> None:
    with pytest.raises(PolicyError) as error:
        policy.parse_policy(text, "/etc/auth-proxy/policy.yaml")
    message = str(error.value)
    assert message.startswith("/etc/auth-proxy/policy.yaml: ")
    for fragment in fragments:
        assert fragment in message


def test_load_policy_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read the policy file"):
        policy.load_policy(missing)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("_srv.example.com", "_srv.example.com"),
    ],
)
def test_normalize_host_is_idempotent(raw: str, normal: str) -> None:
    assert policy.normalize_host(raw) == normal
    assert policy.normalize_host(normal) == normal


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Example.com", "example.com.", True),
        ("bücher.example", "xn--bcher-kva.example", True),
        ("[::1]", "::1", True),
        ("127.0.0.1", "127.0.0.01", False),
        ("a.test", "b.test", False),
        ("a..test", "a..test", False),
    ],
)
def test_same_host(a: str, b: str, same: bool) -> None:
    assert policy.same_host(a, b) is same


def test_large_policy_compiles_to_sets() -> None:
    domains = [f"host{i}.example.org" for i in range(10_000)]
    compiled = policy.policy_from_domains([*domains, "*.wild.example.org"])
    assert compiled.entry_count == 10_001
    assert policy.decide(compiled, "host9999.example.org", 443).allow
    assert policy.decide(compiled, "x.wild.example.org", 443).rule == "*.wild.example.org"


def test_new_keys_compile() -> None:
    compiled = policy.parse_policy(
        "version: v1\nmode: report\nallowed_domains: [a.test, '*.b.test', '*.github.io']\n"
        "denied_domains: [x.b.test, '*.y.b.test', 203.0.113.9]\n"
        "rules: [{host: a.test, methods: [GET], paths: ['/r/**']}, {host: '*.b.test'}]\n",
        "p.yaml",
    )
    assert compiled.reporting and compiled.mode == "report"
    assert compiled.denied == {"x.b.test"} and compiled.denied_wildcard_suffixes == {"y.b.test"}
    assert [str(a) for a in compiled.denied_addresses] == ["203.0.113.9"]
    assert [r.label for r in compiled.rules] == ["rules[0]", "rules[1]"]
    assert compiled.rules[0].describe() == "GET /r/**"
    assert compiled.rules[1].describe() == "any method any path"
    # A wildcard over a private-section public suffix loads, with a warning naming it.
    assert len(compiled.warnings) == 1 and "'*.github.io'" in compiled.warnings[0]
    # Every v1 file without the new keys compiles exactly as before.
    plain = policy.parse_policy("version: v1\nallowed_domains: [a.test]\n", "p.yaml")
    assert (plain.mode, plain.denied, plain.rules, plain.warnings) == (
        "enforce",
        frozenset(),
        (),
        (),
    )
