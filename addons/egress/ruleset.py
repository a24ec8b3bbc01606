"""The egress lock's nftables ruleset, rendered from a few settings, and the check of nft's readback.

One `inet` table (IPv4 and IPv6 alike) with two chains on the output hook. For every socket NOT
owned by the sidecar's uid:

* loopback destinations stay open (the proxy on 127.0.0.1, the workload's own local servers);
* DNS (UDP and TCP port 53, any address) is redirected to the sidecar's DNS listener;
* every other TCP connection, any port, is redirected to the sidecar's transparent listener;
* every other UDP datagram is rejected with ICMP port-unreachable (QUIC falls back to TCP at once);
* everything else (ICMP echo, SCTP, raw IP) meets the chain's drop policy.

The sidecar's uid goes out unrestricted: it enforces the policy itself. Replies of established
connections and IPv6 neighbour discovery are accepted. Pure: no I/O, no nft.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# The same values as k8s/constants.py (the sidecar image carries addons/ only, not k8s/).
TABLE = "auth_proxy_egress"
SIDECAR_UID = 10000
TRANSPARENT_PORT = 8082
DNS_PORT = 8053
FAMILY = "inet"

# What a line of the script needs from the kernel: nft's errors point at a line, the lock's
# message names the feature (kernel config options in parentheses).
NEEDS_TABLE = "nf_tables with the inet family (CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET)"
NEEDS_NAT = "nftables NAT on the output hook (CONFIG_NFT_NAT, CONFIG_NF_NAT)"
NEEDS_FILTER = "nftables filter chains on the output hook (CONFIG_NF_TABLES_INET)"
NEEDS_SKUID = "socket-owner matching, `meta skuid` (nf_tables meta expression)"
NEEDS_PAYLOAD = "nftables address and header matching (nf_tables payload expression)"
NEEDS_REDIRECT = "NAT redirect (CONFIG_NFT_REDIR, CONFIG_NF_NAT)"
NEEDS_SET_REDIRECT = "NAT redirect with an anonymous set (CONFIG_NFT_REDIR, nf_tables sets)"
NEEDS_CT = "connection tracking, `ct state` (CONFIG_NFT_CT, CONFIG_NF_CONNTRACK)"
NEEDS_REJECT = "reject (CONFIG_NFT_REJECT, CONFIG_NFT_REJECT_INET)"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"


@dataclass(frozen=True)
class EgressSettings:
    sidecar_uid: int = SIDECAR_UID
    transparent_port: int = TRANSPARENT_PORT
    dns_port: int = DNS_PORT
    table: str = TABLE

    def __post_init__(self) -> None:
        if not 1 <= self.sidecar_uid <= _MAX_UID:
            raise ValueError(
                f"sidecar uid {self.sidecar_uid} is out of range: use the sidecar's own uid "
                f"(1..{_MAX_UID}; 0 would exempt every root process from the lock)"
            )
        for name, port in (("transparent", self.transparent_port), ("dns", self.dns_port)):
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} port {port} is out of range: use 1..65535")
        if self.transparent_port == self.dns_port:
            raise ValueError(
                f"transparent port and dns port are both {self.dns_port}: TCP to port 53 and "
                "other TCP must reach different listeners; use two ports"
            )
        if not _NAME.fullmatch(self.table):
            raise ValueError(
                f"table name {self.table!r} is not a plain nft identifier: use letters, digits "
                "and underscores, starting with a letter"
            )


@dataclass(frozen=True)
class Rule:
    text: str  # nft syntax, one line
    shape: str  # how `nft -j` reads it back, in the notation of `shape_of`
    needs: str
    why: str  # rendered as a comment above the rule


@dataclass(frozen=True)
class Chain:
    name: str
    kind: str  # nft chain type: "nat" or "filter"
    priority: int
    policy: str
    needs: str
    rules: tuple[Rule, ...]

    @property
    def header(self) -> str:
        return f"type {self.kind} hook output priority {self.priority}; policy {self.policy};"


def _exempt(s: EgressSettings, verdict: str) -> tuple[Rule, ...]:
    """The sidecar's uid and loopback destinations, first in both chains."""
    return (
        Rule(
            f"meta skuid {s.sidecar_uid} {verdict}",
            f"meta skuid == {s.sidecar_uid}; {verdict}",
            NEEDS_SKUID,
            "the sidecar enforces the policy itself",
        ),
        Rule(
            f"ip daddr 127.0.0.0/8 {verdict}",
            f"ip daddr == 127.0.0.0/8; {verdict}",
            NEEDS_PAYLOAD,
            "loopback (also what a redirect rewrites to)",
        ),
        Rule(f"ip6 daddr ::1 {verdict}", f"ip6 daddr == ::1; {verdict}", NEEDS_PAYLOAD, ""),
    )


def chains(s: EgressSettings) -> tuple[Chain, Chain]:
    # Priority -100 is nft's "dstnat" for the output hook: NAT before the filter chain (0), which
    # then sees the rewritten loopback destination (though still the original output interface).
    nat = Chain(
        "nat_output",
        "nat",
        -100,
        "accept",
        NEEDS_NAT,
        (
            *_exempt(s, "return"),
            Rule(
                f"meta l4proto {{ tcp, udp }} th dport 53 redirect to :{s.dns_port}",
                f"meta l4proto == {{tcp, udp}}; th dport == 53; redirect to :{s.dns_port}",
                NEEDS_SET_REDIRECT,
                "DNS to any address goes to the sidecar's DNS listener",
            ),
            Rule(
                f"meta l4proto tcp redirect to :{s.transparent_port}",
                f"meta l4proto == tcp; redirect to :{s.transparent_port}",
                NEEDS_REDIRECT,
                "every other TCP connection goes to the sidecar's transparent listener",
            ),
        ),
    )
    filt = Chain(
        "filter_output",
        "filter",
        0,
        "drop",
        NEEDS_FILTER,
        (
            *_exempt(s, "accept"),
            Rule(
                "ct state established,related accept",
                "ct state == {established, related}; accept",
                NEEDS_CT,
                "replies, and ICMP errors about them",
            ),
            Rule(
                "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept",
                "icmpv6 type == {nd-neighbor-advert, nd-neighbor-solicit}; "
                "ip6 hoplimit == 255; accept",
                NEEDS_PAYLOAD,
                "IPv6 neighbour discovery (the kernel's, owned by no uid)",
            ),
            Rule(
                "meta l4proto udp reject with icmpx port-unreachable",
                "meta l4proto == udp; reject icmpx port-unreachable",
                NEEDS_REJECT,
                "other UDP (QUIC too) fails at once, so clients fall back to TCP",
            ),
        ),
    )
    return nat, filt


def script_lines(s: EgressSettings) -> list[tuple[str, str]]:
    """The nft script as (line, what the line needs from the kernel) pairs.

    The first two lines make the script idempotent in ONE transaction: declare the table (a no-op
    when it exists), delete it, then create it whole. Nothing is open in between.
    """
    t = f"{FAMILY} {s.table}"
    lines = [
        (f"table {t} {{}}", NEEDS_TABLE),
        (f"delete table {t}", NEEDS_TABLE),
        (f"table {t} {{", NEEDS_TABLE),
    ]
    for chain in chains(s):
        lines += [(f"\tchain {chain.name} {{", chain.needs), (f"\t\t{chain.header}", chain.needs)]
        for rule in chain.rules:
            if rule.why:
                lines.append((f"\t\t# {rule.why}", rule.needs))
            lines.append((f"\t\t{rule.text}", rule.needs))
        lines.append(("\t}", chain.needs))
    lines.append(("}", NEEDS_TABLE))
    return lines


def render(s: EgressSettings) -> str:
    return "".join(f"{line}\n" for line, _ in script_lines(s))


def needs_at(s: EgressSettings, line_number: int) -> str | None:
    """What line `line_number` (1-based, as nft counts) of `render(s)` needs from the kernel."""
    lines = script_lines(s)
    if 1 <= line_number <= len(lines):
        return lines[line_number - 1][1]
    return None


def rule_count(s: EgressSettings) -> int:
    return sum(len(c.rules) for c in chains(s))


# --- readback ---------------------------------------------------------------------------------


def check_readback(s: EgressSettings, doc: object) -> list[str]:
    """Problems found in `nft -j list table inet <table>` output (parsed); [] when it matches."""
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return ["the readback is not nft JSON (no `nftables` list)"]
    objects = [(k, v) for i in items if isinstance(i, dict) for k, v in i.items()]
    mine = [(k, v) for k, v in objects if isinstance(v, dict) and _in_table(s, k, v)]
    if not any(k == "table" for k, _ in mine):
        return [f"table {FAMILY} {s.table} is missing"]
    problems = [
        f"unexpected {k} {v.get('name')!r} in table {FAMILY} {s.table}"
        for k, v in mine
        if k not in ("table", "chain", "rule")
    ]
    found = {v.get("name"): v for k, v in mine if k == "chain"}
    wanted = chains(s)
    problems += [
        f"unexpected chain {name!r} in table {FAMILY} {s.table}"
        for name in found
        if name not in {c.name for c in wanted}
    ]
    for chain in wanted:
        got = found.get(chain.name)
        if got is None:
            problems.append(f"chain {chain.name} is missing")
            continue
        problems += _check_chain(chain, got)
        shapes = [
            shape_of(v.get("expr")) for k, v in mine if k == "rule" and v.get("chain") == chain.name
        ]
        problems += _check_rules(chain, shapes)
    return problems


def _in_table(s: EgressSettings, kind: str, obj: dict) -> bool:
    if obj.get("family") != FAMILY:
        return False
    return obj.get("name" if kind == "table" else "table") == s.table


def _check_chain(chain: Chain, got: dict) -> list[str]:
    wanted = {"type": chain.kind, "hook": "output", "prio": chain.priority, "policy": chain.policy}
    return [
        f"chain {chain.name}: {key} is {got.get(key)!r}, expected {value!r}"
        for key, value in wanted.items()
        if got.get(key) != value
    ]


def _check_rules(chain: Chain, shapes: list[str]) -> list[str]:
    wanted = [r.shape for r in chain.rules]
    problems = []
    for i in range(max(len(wanted), len(shapes))):
        want = wanted[i] if i < len(wanted) else None
        got = shapes[i] if i < len(shapes) else None
        if want != got:
            problems.append(
                f"chain {chain.name} rule {i + 1}: expected `{want or 'no rule'}`, "
                f"found `{got or 'no rule'}`"
            )
    return problems


def shape_of(exprs: object) -> str:
    """A rule's nft JSON expressions in a compact notation that ignores what nft versions vary:
    set element order, and `in` vs `==` for flag matches. Anything unknown stays raw JSON, so it
    never equals an expected shape."""
    if not isinstance(exprs, list):
        return _raw(exprs)
    return "; ".join(_expr(e) for e in exprs)


def _expr(e: object) -> str:
    if not isinstance(e, dict) or len(e) != 1:
        return _raw(e)
    ((key, value),) = e.items()
    if key == "match" and isinstance(value, dict):
        op = "==" if value.get("op") == "in" else value.get("op")
        return f"{_value(value.get('left'))} {op} {_value(value.get('right'))}"
    if key in ("accept", "drop", "return", "continue") and value is None:
        return key
    if key == "redirect" and isinstance(value, dict) and set(value) <= {"port"}:
        return f"redirect to :{value['port']}" if "port" in value else "redirect"
    if key == "reject" and isinstance(value, dict) and set(value) <= {"type", "expr"}:
        return " ".join(["reject", *(str(value[k]) for k in ("type", "expr") if k in value)])
    return _raw(e)


def _value(v: object) -> str:
    if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
        return str(v)
    if isinstance(v, list):
        return "{" + ", ".join(sorted(_value(x) for x in v)) + "}"
    if isinstance(v, dict) and len(v) == 1:
        ((k, inner),) = v.items()
        if k == "set":
            return _value(inner if isinstance(inner, list) else [inner])
        if k == "prefix" and isinstance(inner, dict):
            return f"{inner.get('addr')}/{inner.get('len')}"
        if k in ("meta", "ct") and isinstance(inner, dict) and set(inner) == {"key"}:
            return f"{k} {inner['key']}"
        if k == "payload" and isinstance(inner, dict) and set(inner) == {"protocol", "field"}:
            return f"{inner['protocol']} {inner['field']}"
    return _raw(v)


def _raw(v: object) -> str:
    return json.dumps(v, sort_keys=True)
