"""auth-proxy-policy: check, explain and suggest policy files, with the proxy's own code.

    auth-proxy-policy check FILE [--json] [--strict]
    auth-proxy-policy explain FILE URL [--method M] [--address IP]... [--json]
    auth-proxy-policy suggest LOG [--wildcards] [--base FILE]

(or `python -m addons.policy_tool ...`). `check` loads the file with the proxy's loader
(addons.policy.load_policy), `explain` decides with the proxy's core (addons.core.decide), and
`suggest` checks what it prints with the same loader: one code path, nothing re-implemented.
See docs/policy.md.

Exit status: 0 valid / allowed / suggested; 1 an invalid policy or other bad input (the message
names it and the fix); 2 a malformed command line; 3 (explain) denied.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from addons import policy_explain, policy_suggest
from addons.policy import Policy, PolicyError, load_policy, parse_ip, parse_policy
from addons.policy_file import load_yaml, read_policy_text

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3


@dataclass(frozen=True)
class Check:
    """A valid policy and what `check` says about it."""

    policy: Policy

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.policy.warnings

    def summary(self) -> dict[str, Any]:
        p = self.policy
        by_host: dict[str, list[str]] = {}
        for rule in p.rules:
            by_host.setdefault(rule.host, []).append(f"{rule.label} {rule.describe()}")
        return {
            "source": p.source,
            "mode": p.mode,
            "allowed_domains": _counts(p.exact, p.wildcard_suffixes, p.addresses),
            "denied_domains": _counts(p.denied, p.denied_wildcard_suffixes, p.denied_addresses),
            "allowed_ports": sorted(p.ports),
            "allow_ranges": [str(r) for r in p.allow_ranges],
            "rules": by_host,
            "warnings": list(p.warnings),
        }

    def text(self) -> str:
        s = self.summary()
        lines = [f"{s['source']}: valid, mode {s['mode']}"]
        if self.policy.reporting:
            lines.append(
                "  REPORT MODE: what the names, ports and rules would deny is let through and "
                "logged with would_deny"
            )
        for key in ("allowed_domains", "denied_domains"):
            c = s[key]
            lines.append(
                f"  {key}: {c['total']} ({c['exact']} exact, {c['wildcard']} wildcard, "
                f"{c['address']} address)"
            )
        lines.append(f"  allowed_ports: {', '.join(map(str, s['allowed_ports']))}")
        lines.append(f"  allow_ranges: {', '.join(s['allow_ranges']) or 'none'}")
        count = sum(len(v) for v in s["rules"].values())
        lines.append(f"  rules: {count} for {len(s['rules'])} host(s)")
        for host, described in s["rules"].items():
            lines += [f"    {host}: {d}" for d in described]
        lines += [f"warning: {w}" for w in s["warnings"]]
        return "\n".join(lines) + "\n"


def _counts(exact: frozenset, wildcard: frozenset, addresses: frozenset) -> dict[str, int]:
    total = len(exact) + len(wildcard) + len(addresses)
    return {
        "total": total,
        "exact": len(exact),
        "wildcard": len(wildcard),
        "address": len(addresses),
    }


def check_file(path: str) -> Check:
    """Load a policy file with the proxy's loader. Raises PolicyError (naming entry and fix)."""
    return Check(load_policy(path))


def check_text(text: str, source: str) -> Check:
    """`check` for policy text already read (e.g. `python -m k8s policy`). Raises PolicyError."""
    return Check(parse_policy(text, source))


# -- subcommands ---------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    try:
        result = check_file(args.file)
    except PolicyError as e:
        _out(args, {"valid": False, "error": str(e)}, f"error: {e}", err=True)
        return EXIT_ERROR
    _out(args, {"valid": True, **result.summary()}, result.text())
    return EXIT_ERROR if args.strict and result.warnings else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    addresses = []
    for text in args.address:
        address = parse_ip(text)
        if address is None:
            raise policy_explain.BadURL(
                f"--address {text!r} is not an IP address. Fix: e.g. 140.82.112.3"
            )
        addresses.append(address)
    policy = load_policy(args.file)
    result = policy_explain.explain(policy, args.url, args.method, tuple(addresses))
    _out(args, policy_explain.to_json(policy, result), policy_explain.to_text(policy, result))
    return EXIT_OK if result.final.allow else EXIT_DENIED


def cmd_suggest(args: argparse.Namespace) -> int:
    base = base_policy = None
    if args.base:
        text = read_policy_text(args.base)
        base_policy = parse_policy(text, args.base)
        base = load_yaml(text, args.base)
    if args.log == "-":
        lines = sys.stdin
        source = "stdin"
    else:
        lines = open(args.log, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
        source = args.log
    with lines:
        text = policy_suggest.suggest(lines, source, args.wildcards, base, base_policy)
    sys.stdout.write(text)
    return EXIT_OK


def _out(args: argparse.Namespace, data: dict[str, Any], text: str, err: bool = False) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=False))
    else:
        (sys.stderr if err else sys.stdout).write(text if text.endswith("\n") else text + "\n")


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auth-proxy-policy",
        description="Check, explain and suggest auth-proxy policy files (docs/policy.md).",
        epilog="Exit status: 0 ok/allowed, 1 invalid policy or bad input, 2 bad command line, "
        "3 denied (explain).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="validate a policy file and summarize it",
        description="Load FILE with the proxy's own loader; print a summary (mode, entries, "
        "ports, ranges, rules per host) and its warnings. Exit 0 when valid, 1 when not (the "
        "message names the entry and the fix).",
    )
    check.add_argument("file", metavar="FILE", help="the policy file (version: v1)")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser(
        "explain",
        help="what the proxy would decide for a URL, and why (no network access)",
        description="Decide METHOD URL under FILE with the proxy's core, as for a client using "
        "HTTPS_PROXY/HTTP_PROXY: the CONNECT (https) and the request. Nothing is resolved: the "
        "address check is named as decided at run time, unless the host is an IP or --address "
        "gives what it resolves to. Exit 0 allowed (report mode included), 3 denied, 1 error.",
    )
    explain.add_argument("file", metavar="FILE", help="the policy file")
    explain.add_argument("url", metavar="URL", help="e.g. https://github.com/org/repo/info/refs")
    explain.add_argument("--method", default="GET", help="the request method (default GET)")
    explain.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="IP",
        help="an address the host resolves to, for the address check (repeatable)",
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(func=cmd_explain)

    suggest = sub.add_parser(
        "suggest",
        help="a policy allowing what a decision log shows was denied",
        description="Read the proxy's JSON decision lines from LOG ('-' for stdin): denials, "
        "and report mode's would_deny lines. Print a policy (version v1) allowing what was "
        "seen: exact host names, the ports, and for hosts refused by their rules, rules with "
        "the methods and paths observed. For a person to review, never to apply unread.",
    )
    suggest.add_argument("log", metavar="LOG", help="the proxy's stdout, saved ('-': stdin)")
    suggest.add_argument(
        "--wildcards",
        action="store_true",
        help="group 3 or more names under one parent as '*.parent' (never over a public suffix)",
    )
    suggest.add_argument(
        "--base", metavar="FILE", help="extend this policy instead of an empty one"
    )
    suggest.set_defaults(func=cmd_suggest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PolicyError, policy_explain.BadURL, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
