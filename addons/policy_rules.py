"""The policy's `rules`: per host, the methods and paths a request may have.

    rules:
      - host: github.com                  # exact, or "*.suffix", as in allowed_domains
        methods: [GET]                    # optional: any method when left out
        paths: ["/myorg/*/info/refs"]     # optional: any path when left out

A host that any rule names is held to its rules: every request to it (inside a tunnel, through
the transparent listener, or plain HTTP) must match one, method and path, else it is refused
with `blocked-by-rule`. Rules only narrow: the host must still be allowed by `allowed_domains`
(a rule for a host nothing allows is a load error, since it could never apply). Paths are
matched after one normalization (addons.core.paths); the query string is never matched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from addons.core import paths
from addons.policy import (
    InvalidHost,
    Policy,
    PolicyError,
    compile_domain,
    entry_error,
    match_name,
    match_rule,
    normalize_host,
    parse_ip,
)
from addons.policy_file import excerpt

RULE_KEYS = ("host", "methods", "paths")
# RFC 9110 token characters; methods are case-sensitive, and every registered one is upper case.
_METHOD = re.compile(r"^[A-Z0-9!#$%&'*+.^_`|~-]{1,32}$")


@dataclass(frozen=True)
class HostRule:
    index: int  # its place in `rules`, for errors, logs and `explain`
    host: str  # a normalized name, "*.suffix", or an IP address
    methods: frozenset[str] | None  # None: any method
    paths: tuple[paths.Pattern, ...] | None  # None: any path

    @property
    def label(self) -> str:
        return f"rules[{self.index}]"

    def describe(self) -> str:
        """`GET,HEAD /a/**, /b` style text for denials and `explain`."""
        methods = ",".join(sorted(self.methods)) if self.methods else "any method"
        where = ", ".join(p.text for p in self.paths) if self.paths else "any path"
        return f"{methods} {where}"

    def admits(self, method: str, readings: tuple[str, ...] | None) -> bool:
        """Whether a request with this method and path readings (addons.core.paths.
        path_readings; None: ambiguous) matches: every reading must."""
        if self.methods is not None and method not in self.methods:
            return False
        if readings is None or self.paths is None:
            return readings is not None
        return all(any(p.matches(r) for p in self.paths) for r in readings)


def _rule_error(source: str, index: int, entry: object, problem: str, fix: str) -> PolicyError:
    return PolicyError(f"{source}: rules[{index}] {excerpt(entry)}: {problem}. Fix: {fix}")


def _host(policy: Policy, index: int, entry: Mapping[str, Any]) -> str:
    raw = entry.get("host")
    kind, value = compile_domain(policy.source, index, raw, key="rules")
    host = str(value)
    if kind == "wildcard":
        host = f"*.{value}"
        admitted = match_name(policy.exact, policy.wildcard_suffixes, f"x.{value}")
    else:
        admitted = match_rule(policy, host)
    if admitted is None:
        raise entry_error(
            policy.source,
            "rules",
            index,
            raw,
            "no allowed_domains entry allows this host, so the rule could never apply",
            "add the host to allowed_domains, or remove the rule",
        )
    return host


def _methods(source: str, index: int, raw: object) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise _rule_error(
            source, index, raw, "methods must be a non-empty list", "e.g. [GET, HEAD]"
        )
    for method in raw:
        if not isinstance(method, str) or not _METHOD.match(method):
            raise _rule_error(
                source,
                index,
                method,
                "is not an upper-case HTTP method",
                "write methods as requests send them, e.g. GET, POST",
            )
    return frozenset(raw)


def _paths(source: str, index: int, raw: object) -> tuple[paths.Pattern, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise _rule_error(source, index, raw, "paths must be a non-empty list", 'e.g. ["/org/**"]')
    compiled = []
    for pattern in raw:
        if not isinstance(pattern, str):
            raise _rule_error(source, index, pattern, "is not a string", 'e.g. "/org/*/info/refs"')
        try:
            compiled.append(paths.compile_pattern(pattern))
        except ValueError as e:
            raise _rule_error(source, index, pattern, str(e), "see docs/policy.md, Rules") from None
    return tuple(compiled)


def compile_rules(policy: Policy, raw: list[Any]) -> tuple[HostRule, ...]:
    """Validate and compile the `rules` list of a policy whose domains are compiled."""
    compiled = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise _rule_error(
                policy.source, index, entry, "is not a mapping", "give host, methods and paths"
            )
        unknown = [key for key in entry if key not in RULE_KEYS]
        if unknown:
            raise _rule_error(
                policy.source,
                index,
                unknown[0],
                "is not a rule key",
                f"use only {', '.join(RULE_KEYS)}",
            )
        compiled.append(
            HostRule(
                index,
                _host(policy, index, entry),
                _methods(policy.source, index, entry.get("methods")),
                _paths(policy.source, index, entry.get("paths")),
            )
        )
    return tuple(compiled)


def index(rules: tuple[HostRule, ...]) -> dict[str, tuple[HostRule, ...]]:
    by_host: dict[str, list[HostRule]] = {}
    for rule in rules:
        by_host.setdefault(rule.host, []).append(rule)
    return {host: tuple(found) for host, found in by_host.items()}


def rules_for(policy: Policy, host: str) -> tuple[HostRule, ...]:
    """The rules that apply to requests to `host` (none: the host is not held to rules): those
    naming it exactly and those of every wildcard over it."""
    if not policy.rules:
        return ()
    address = parse_ip(host)
    try:
        name = str(address) if address is not None else normalize_host(host)
    except InvalidHost:
        return ()
    found = list(policy.rules_by_host.get(name, ()))
    dot = name.find(".") if address is None else -1
    while dot != -1:
        found += policy.rules_by_host.get(f"*.{name[dot + 1 :]}", ())
        dot = name.find(".", dot + 1)
    return tuple(found)
