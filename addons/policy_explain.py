"""`auth-proxy-policy explain`: what the proxy would decide for one URL, and why, offline.

The facts are built the way the proxy's addon builds them for a client using `HTTPS_PROXY` /
`HTTP_PROXY` (a CONNECT then a request inside the tunnel for https, an absolute-form request
for http), and the proxy's own `addons.core.decide.decide` decides: nothing here re-implements
a decision. Nothing is resolved either: the address check runs only for an IP-literal host or
for the addresses given with `--address`; otherwise it is named as decided at run time.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any

from addons import policy_rules
from addons.core.decide import Facts, Stage, decide
from addons.core.decision import Decision
from addons.core.reasons import BLOCKED_BY_DENYLIST, BLOCKED_BY_RULE
from addons.policy import IPAddress, Policy, parse_ip
from addons.policy_rules import HostRule

DEFAULT_PORTS = {"https": 443, "http": 80}


class BadURL(ValueError):
    """A URL explain cannot read; the message names it and the fix."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    authority: str  # host[:port] as a client writes it in Host (and absolute-form)
    request_target: str  # path and query, as sent on the request line
    path: str  # without the query: the query is never matched, and never printed

    @property
    def has_query(self) -> bool:
        return self.request_target != self.path


@dataclass(frozen=True)
class StageResult:
    stage: str  # "connect" or "request"
    decision: Decision


@dataclass
class Explanation:
    target: Target
    method: str
    mode: str
    stages: list[StageResult] = field(default_factory=list)
    run_time: str | None = None  # the check left for run time, in words

    @property
    def final(self) -> Decision:
        denied = [s.decision for s in self.stages if not s.decision.allow]
        return denied[0] if denied else self.stages[-1].decision


def parse_url(url: str) -> Target:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BadURL(f"URL {url!r}: {e}. Fix: write e.g. https://github.com/org/repo") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadURL(
            f"URL {url!r}: the scheme must be http or https. Fix: e.g. https://github.com/"
        )
    if not parts.hostname:
        raise BadURL(f"URL {url!r} names no host. Fix: write e.g. https://github.com/")
    host = parts.hostname
    if not host.isascii():
        try:  # a client sends the IDNA (punycode) form
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadURL(f"URL {url!r}: the host is not a valid IDNA name") from None
    port = port if port is not None else DEFAULT_PORTS[scheme]
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    path = parts.path or "/"
    request_target = f"{path}?{parts.query}" if parts.query else path
    return Target(scheme, host, port, authority, request_target, path)


def explain(
    policy: Policy, url: str, method: str = "GET", addresses: tuple[IPAddress, ...] = ()
) -> Explanation:
    """Decide `method url` under `policy` as the proxy would. Raises BadURL."""
    target = parse_url(url)
    literal = parse_ip(target.host)
    known = (literal,) if literal is not None else tuple(addresses) or None
    result = Explanation(target, method, policy.mode)
    request = Facts(
        Stage.REQUEST,
        target.host,
        target.port,
        http1=True,
        method=method.encode("latin-1", "replace"),
        target=target.request_target.encode("utf-8", "surrogateescape"),
        fields=((b"Host", target.authority.encode("ascii")),),
        addresses=known,
    )
    if target.scheme == "https":
        connect = decide(Facts(Stage.CONNECT, target.host, target.port, addresses=known), policy)
        result.stages.append(StageResult("connect", connect))
        if connect.allow:
            inside = replace(request, in_tunnel=True, addresses=None)
            result.stages.append(StageResult("request", decide(inside, policy)))
    else:
        absolute = replace(request, scheme="http", authority=target.authority)
        result.stages.append(StageResult("request", decide(absolute, policy)))
    if result.final.allow and any(s.decision.needs_addresses for s in result.stages):
        result.run_time = (
            f"decided at run time: the addresses {target.host} resolves to must not be "
            "private/metadata unless allow_ranges covers them"
        )
    return result


def _named(policy: Policy, label: str | None) -> tuple[list[str], list[HostRule]]:
    """The policy entries and the rules a decision's `rule` names ("github.com rules[0]",
    "rules[0],rules[2]")."""
    words = (label or "").replace(",", " ").split()
    entries = [w for w in words if not w.startswith("rules[")]
    rules = [policy.rules[int(w[6:-1])] for w in words if w.startswith("rules[")]
    return entries, rules


def _rules_json(rules: list[HostRule]) -> list[dict[str, Any]]:
    return [
        {
            "rule": r.label,
            "host": r.host,
            "methods": sorted(r.methods) if r.methods else None,
            "paths": [p.text for p in r.paths] if r.paths else None,
        }
        for r in rules
    ]


def _by(policy: Policy, d: Decision) -> str:
    entries, rules = _named(policy, d.rule)
    parts = []
    if entries:
        denied = BLOCKED_BY_DENYLIST.name in (d.reason, d.would_deny)
        key = "denied_domains" if denied else "allowed_domains"
        parts.append(f"{key} entry {entries[0]}")
    if rules:
        described = "; ".join(f"{r.label} {r.describe()}" for r in rules)
        none = d.reason == BLOCKED_BY_RULE.name
        parts.append(f"matches none of {described}" if none else described)
    return f"  ({', '.join(parts)})" if parts else ""


def to_json(policy: Policy, result: Explanation) -> dict[str, Any]:
    final = result.final
    rules = _named(policy, final.rule)[1]
    if final.would_deny == BLOCKED_BY_RULE.name:
        rules = list(policy_rules.rules_for(policy, result.target.host))
    return {
        "allow": final.allow,
        "reason": final.reason,
        "would_deny": final.would_deny,
        "rule": final.rule,
        "rules": _rules_json(rules),
        "mode": result.mode,
        "method": result.method,
        "scheme": result.target.scheme,
        "host": result.target.host,
        "port": result.target.port,
        "path": result.target.path,
        "stages": [
            {
                "stage": s.stage,
                "allow": s.decision.allow,
                "reason": s.decision.reason,
                "would_deny": s.decision.would_deny,
                "rule": s.decision.rule,
            }
            for s in result.stages
        ],
        "run_time": result.run_time,
    }


def _line(stage: StageResult, policy: Policy) -> str:
    d = stage.decision
    verdict = "allowed" if d.allow else f"denied: {d.reason}"
    if d.would_deny:
        verdict += f", would deny: {d.would_deny} (report mode)"
    return f"  {stage.stage:<8} {verdict}{_by(policy, d)}"


def to_text(policy: Policy, result: Explanation) -> str:
    t, final = result.target, result.final
    lines = [
        f"policy   {policy.source} (mode {result.mode})",
        f"request  {result.method} {t.scheme}://{t.authority}{t.path}"
        + ("  (the query is never matched)" if t.has_query else ""),
        *(_line(stage, policy) for stage in result.stages),
    ]
    if final.allow:
        would = f", would deny: {final.would_deny}" if final.would_deny else ""
        lines.append(f"result   allowed{would}")
    else:
        lines.append(f"result   denied: {final.reason}")
    if final.would_deny == BLOCKED_BY_RULE.name:
        held = policy_rules.rules_for(policy, t.host)
        lines.append(f"rules    {t.host}: " + "; ".join(f"{r.label} {r.describe()}" for r in held))
    if result.run_time:
        lines.append(result.run_time)
    return "\n".join(lines) + "\n"
