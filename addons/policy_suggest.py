"""`auth-proxy-policy suggest`: from the proxy's decision lines, a policy that would allow what
was denied (or, in report mode, would have been), for a person to review.

It reads the JSON lines the proxy writes to stdout and takes the `decision` lines with
`"allow":false`, or `"allow":true` with `would_deny`. What it suggests is exactly what was seen:
host names as logged (no wildcard unless asked), the ports, and for hosts refused by their
`rules`, rules with the methods and normalized paths observed (no invented patterns). What a
policy must never allow (a private address, a Host that names another host, a malformed request,
a limit) and the deny list (a person put it there) are listed as comments, not suggested.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from addons import public_suffixes
from addons.core import paths, reasons
from addons.core.decide import RELAXED_IN_REPORT
from addons.policy import (
    DEFAULT_PORTS,
    VERSION,
    InvalidHost,
    Policy,
    match_rule,
    normalize_host,
    parse_ip,
    parse_policy,
)
from addons.policy_file import excerpt

MAX_LINE = 64 * 1024  # a decision line is a few hundred bytes; anything longer is not one
MAX_COMMENTS = 50  # "not suggested" notes shown; the rest are counted
WILDCARD_SIBLINGS = 3
# What the loader takes in a rule's `methods` (addons.policy_rules); the result is loaded anyway.
_METHOD = re.compile(
    r"[A-Z0-9!#$%&'*+.^_`|~-]{1,32}"
)  # --wildcards groups this many names (or more) under their parent


@dataclass
class Seen:
    lines: int = 0  # decision lines that asked for something
    hosts: set[str] = field(default_factory=set)  # normalized names and IP texts
    ports: set[int] = field(default_factory=set)
    # host -> method -> normalized paths, for requests refused by the host's rules
    rules: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    notes: dict[str, None] = field(default_factory=dict)  # "not suggested" comments, in order


def _host(record: Mapping[str, Any]) -> str | None:
    raw = record.get("host")
    if not isinstance(raw, str):
        return None
    address = parse_ip(raw)
    if address is not None:
        return str(address)
    try:
        return normalize_host(raw)
    except InvalidHost:
        return None


def _note(seen: Seen, reason: str, host: object, why: str) -> None:
    seen.notes[f"not suggested: {reason} for {excerpt(host)} - {why}"] = None


def _rule_path(seen: Seen, host: str, record: Mapping[str, Any]) -> None:
    method, raw = record.get("method"), record.get("path")
    if not isinstance(method, str) or not isinstance(raw, str):
        _note(seen, "blocked-by-rule", host, "the line has no method or path to suggest a rule")
        return
    if not _METHOD.fullmatch(method):
        _note(seen, "blocked-by-rule", host, f"{excerpt(method)} is not a method a rule can name")
        return
    readings = paths.path_readings(raw.encode("utf-8", "surrogateescape"))
    if readings is None or len(readings) > 1 or "*" in readings[0]:
        # Ambiguous, dot segments or a literal "*": no exact pattern can say it; never guess one.
        why = "the path could be read two ways, so no rule can allow it exactly"
        _note(seen, "blocked-by-rule", host, f"{excerpt(method)} {excerpt(raw)}: {why}")
        return
    seen.rules[host][method].add(readings[0])


def _take(seen: Seen, record: Mapping[str, Any]) -> None:
    allow = record.get("allow")
    reason = record.get("would_deny") if allow is True else record.get("reason")
    if allow not in (True, False) or not isinstance(reason, str):
        return
    if reason == reasons.BLOCKED_BY_DENYLIST.name:
        _note(seen, reason, record.get("host"), "it is on denied_domains: a person put it there")
        return
    if reason not in RELAXED_IN_REPORT:
        kind = reasons.BY_NAME.get(reason)
        why = (
            "the upstream failed; not a policy denial"
            if kind is not None and kind.kind is reasons.Kind.FAULT
            else "a policy cannot and should not allow these"
        )
        _note(seen, reason, record.get("host") or "(no host)", why)
        return
    host = _host(record)
    port = record.get("port")
    if host is None or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        _note(seen, reason, record.get("host"), "the line names no valid host and port")
        return
    seen.lines += 1
    seen.hosts.add(host)
    seen.ports.add(port)
    if reason == reasons.BLOCKED_BY_RULE.name:
        _rule_path(seen, host, record)


def read_decisions(lines: Iterable[str]) -> Seen:
    """The requests that decision lines show were (or would have been) denied. Lines that are
    not JSON decision lines (mitmproxy's own output, request lines) are skipped."""
    seen = Seen()
    for line in lines:
        if len(line) > MAX_LINE or not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "decision":
            _take(seen, record)
    return seen


def group_wildcards(hosts: Iterable[str]) -> list[str]:
    """Names with WILDCARD_SIBLINGS or more siblings become "*.parent", unless the parent is a
    public suffix (anyone can register under it) or a top-level name."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for host in hosts:
        parent = host.partition(".")[2]
        if parse_ip(host) is None and "." in parent:
            by_parent[parent].append(host)
    grouped = {
        parent
        for parent, children in by_parent.items()
        if len(children) >= WILDCARD_SIBLINGS and public_suffixes.suffix_kind(parent) is None
    }
    kept = [h for h in hosts if h.partition(".")[2] not in grouped or parse_ip(h) is not None]
    return sorted(kept) + sorted(f"*.{parent}" for parent in grouped)


def _rules(seen: Seen) -> list[dict[str, Any]]:
    return [
        {"host": host, "methods": [method], "paths": sorted(seen.rules[host][method])}
        for host in sorted(seen.rules)
        for method in sorted(seen.rules[host])
    ]


def _merge(base: dict[str, Any], base_policy: Policy | None, seen: Seen, wildcards: bool) -> None:
    hosts = sorted(seen.hosts)
    if base_policy is not None:  # what the base already admits needs no entry
        hosts = [h for h in hosts if match_rule(base_policy, h) is None]
    domains = list(base.get("allowed_domains") or [])
    new = group_wildcards(hosts) if wildcards else hosts
    domains += [h for h in new if h not in domains]
    if domains:
        base["allowed_domains"] = domains
    ports = set(base.get("allowed_ports") or DEFAULT_PORTS)
    if not seen.ports <= ports:
        base["allowed_ports"] = sorted(ports | seen.ports, key=_port_order)
    rules = [*(base.get("rules") or []), *_rules(seen)]
    if rules:
        base["rules"] = rules


def _port_order(port: int) -> tuple[int, int]:
    return (DEFAULT_PORTS.index(port) if port in DEFAULT_PORTS else len(DEFAULT_PORTS), port)


def suggest(
    lines: Iterable[str],
    source: str,
    wildcards: bool = False,
    base: Mapping[str, Any] | None = None,
    base_policy: Policy | None = None,
) -> str:
    """Policy YAML allowing what the decision lines show was denied, with a review header and the
    lines not suggested as comments. `base` (a policy document, loaded) is extended instead of an
    empty one. The result is checked with the proxy's loader before it is returned."""
    seen = read_decisions(lines)
    document: dict[str, Any] = dict(base) if base is not None else {"version": VERSION}
    _merge(document, base_policy, seen, wildcards)
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    header = [
        f"# Generated by auth-proxy-policy suggest from {source}: "
        f"{seen.lines} denied (or would-deny) decision lines.",
        "# REVIEW BEFORE USE: it allows what was seen, not what should be allowed.",
        "# Check it with `auth-proxy-policy check`; roll it out with `mode: report` first.",
    ]
    if seen.rules and base is None:
        header.append(
            "# Hosts with rules here are held to them: merge them with your policy's own rules."
        )
    notes = list(seen.notes)
    footer = [f"# {note}" for note in notes[:MAX_COMMENTS]]
    if len(notes) > MAX_COMMENTS:
        footer.append(f"# ... and {len(notes) - MAX_COMMENTS} more not suggested")
    text = "\n".join([*header, body.rstrip("\n"), *footer]) + "\n"
    parse_policy(text, f"suggested policy from {source}")  # never hand out a policy that fails
    return text
