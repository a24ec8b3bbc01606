"""The egress ruleset as rendered, the check of nft's readback, and how nft's errors are named.

The readback fixture is `nft -j list table inet auth_proxy_egress` from nft 1.0.6 (this machine),
taken after `auth-proxy-lock-egress` ran in a private network namespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from addons.egress import lock
from addons.egress.ruleset import (
    NEEDS_CT,
    NEEDS_NAT,
    NEEDS_REDIRECT,
    NEEDS_REJECT,
    NEEDS_SET_REDIRECT,
    NEEDS_SKUID,
    NEEDS_TABLE,
    EgressSettings,
    check_readback,
    needs_at,
    render,
    rule_count,
    shape_of,
)

READBACK = Path(__file__).with_name("egress_readback_nft_1_0_6.json")
DEFAULT = EgressSettings()
OTHER = EgressSettings(sidecar_uid=4242, transparent_port=9000, dns_port=5353)


def rendered_chains(s: EgressSettings) -> dict[str, list[str]]:
    """{chain name: its rules as rendered}, comments and the type/policy line left out."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in render(s).splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"chain (\w+) \{", line):
            current = out.setdefault(m.group(1), [])
        elif line == "}":
            current = None
        elif current is not None and line and not line.startswith(("#", "type ")):
            current.append(line)
    return out


def headers(s: EgressSettings) -> list[str]:
    return [line.strip() for line in render(s).splitlines() if line.strip().startswith("type ")]


# --- the rendered ruleset -------------------------------------------------------------------------

# (chain, position, rule) for DEFAULT: the whole ruleset, in order.
RULES = [
    ("nat_output", 0, "meta skuid 10000 return"),
    ("nat_output", 1, "ip daddr 127.0.0.0/8 return"),
    ("nat_output", 2, "ip6 daddr ::1 return"),
    ("nat_output", 3, "meta l4proto { tcp, udp } th dport 53 redirect to :8053"),
    ("nat_output", 4, "meta l4proto tcp redirect to :8082"),
    ("filter_output", 0, "meta skuid 10000 accept"),
    ("filter_output", 1, "ip daddr 127.0.0.0/8 accept"),
    ("filter_output", 2, "ip6 daddr ::1 accept"),
    ("filter_output", 3, "ct state established,related accept"),
    (
        "filter_output",
        4,
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept",
    ),
    ("filter_output", 5, "meta l4proto udp reject with icmpx port-unreachable"),
]
RULE_IDS = [
    "nat-sidecar-uid-exempt-first",
    "nat-loopback-v4-not-redirected",
    "nat-loopback-v6-not-redirected",
    "nat-dns-udp-and-tcp-any-address-to-dns-port",
    "nat-every-other-tcp-any-port-to-transparent-port",
    "filter-sidecar-uid-exempt-first",
    "filter-loopback-v4-open-and-redirected-traffic",
    "filter-loopback-v6-open-and-redirected-traffic",
    "filter-established-related-replies",
    "filter-ipv6-neighbour-discovery",
    "filter-other-udp-rejected-with-icmp",
]


@pytest.mark.parametrize(("chain", "position", "rule"), RULES, ids=RULE_IDS)
def test_every_rule_is_rendered_in_its_place(chain: str, position: int, rule: str) -> None:
    assert rendered_chains(DEFAULT)[chain][position] == rule


def test_nothing_else_is_rendered() -> None:
    got = rendered_chains(DEFAULT)
    assert sorted(got) == ["filter_output", "nat_output"]
    assert sum(len(rules) for rules in got.values()) == len(RULES) == rule_count(DEFAULT)


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        pytest.param(lambda r: rendered_chains(OTHER)["nat_output"][0], "meta skuid 4242 return", id="nat-uid"),
        pytest.param(lambda r: rendered_chains(OTHER)["filter_output"][0], "meta skuid 4242 accept", id="filter-uid"),
        pytest.param(lambda r: rendered_chains(OTHER)["nat_output"][3].endswith("redirect to :5353"), True, id="dns-port"),
        pytest.param(lambda r: rendered_chains(OTHER)["nat_output"][4], "meta l4proto tcp redirect to :9000", id="transparent-port"),
        pytest.param(lambda r: "10000" in r or "8082" in r or "8053" in r, False, id="no-default-leaks"),
    ],
)  # fmt: skip
def test_settings_reach_the_rules(check: Callable[[str], object], expected: object) -> None:
    assert check(render(OTHER)) == expected


@pytest.mark.parametrize(
    ("what", "holds"),
    [
        # One inet table covers IPv4 and IPv6: no `ip`/`ip6` family tables, no per-family hooks.
        ("one-inet-table", lambda t: re.findall(r"^table (\S+ \S+) \{$", t, re.M) == ["inet auth_proxy_egress"]),
        ("idempotent-in-one-script", lambda t: t.startswith("table inet auth_proxy_egress {}\ndelete table inet auth_proxy_egress\n")),
        ("nat-before-filter-on-output", lambda t: headers(DEFAULT) == [
            "type nat hook output priority -100; policy accept;",
            "type filter hook output priority 0; policy drop;",
        ]),
        # Redirect and reject rules name no address family: they hold for IPv4 and IPv6 alike.
        ("redirects-family-neutral", lambda t: all(not r.startswith(("ip ", "ip6 ")) for r in rendered_chains(DEFAULT)["nat_output"][3:])),
        ("udp-reject-family-neutral", lambda t: "icmpx" in rendered_chains(DEFAULT)["filter_output"][-1]),
        # The TCP redirect has no port condition: every port goes to the proxy.
        ("tcp-any-port", lambda t: "dport" not in rendered_chains(DEFAULT)["nat_output"][-1]),
        # ICMP echo, SCTP and raw IP match no accept rule: the drop policy takes them.
        ("no-echo-accepted", lambda t: "echo" not in t and "sctp" not in t),
        ("nothing-accepted-by-port-or-protocol", lambda t: not any(
            r.endswith("accept") and ("dport" in r or "l4proto" in r) for r in rendered_chains(DEFAULT)["filter_output"]
        )),
        ("nd-needs-hop-limit-255", lambda t: "ip6 hoplimit 255" in rendered_chains(DEFAULT)["filter_output"][4]),
    ],
)  # fmt: skip
def test_ruleset_properties(what: str, holds: Callable[[str], bool]) -> None:
    assert holds(render(DEFAULT)), render(DEFAULT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sidecar_uid": 0}, "0 would exempt every root process"),
        ({"sidecar_uid": -1}, "sidecar uid -1 is out of range"),
        ({"sidecar_uid": 2**32 - 1}, "out of range"),
        ({"transparent_port": 0}, "transparent port 0 is out of range"),
        ({"dns_port": 65536}, "dns port 65536 is out of range"),
        ({"transparent_port": 8053, "dns_port": 8053}, "use two ports"),
        ({"table": "x; flush ruleset"}, "not a plain nft identifier"),
        ({"table": "1table"}, "not a plain nft identifier"),
        ({"table": ""}, "not a plain nft identifier"),
    ],
    ids=["uid-0", "uid-negative", "uid-minus-one", "port-0", "port-65536", "same-ports",
         "table-injection", "table-digit", "table-empty"],
)  # fmt: skip
def test_bad_settings_are_refused_with_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        EgressSettings(**kwargs)


# --- the readback check ---------------------------------------------------------------------------


def good() -> dict:
    return json.loads(READBACK.read_text())


def rules_of(doc: dict, chain: str) -> list[dict]:
    return [i["rule"] for i in doc["nftables"] if i.get("rule", {}).get("chain") == chain]


def test_the_real_readback_matches() -> None:
    assert check_readback(DEFAULT, good()) == []


def test_the_readback_check_is_specific_to_the_settings() -> None:
    problems = check_readback(OTHER, good())
    assert any("meta skuid == 4242" in p for p in problems), problems
    assert any("redirect to :9000" in p for p in problems), problems


def _drop_rule(chain: str, index: int) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        doc["nftables"].remove({"rule": rules_of(doc, chain)[index]})

    return tamper


def _edit_chain(chain: str, **changes: object) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        for item in doc["nftables"]:
            if item.get("chain", {}).get("name") == chain:
                item["chain"].update(changes)

    return tamper


def _replace_in_rules(old: str, new: str) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        text = json.dumps(doc["nftables"]).replace(old, new)
        doc["nftables"] = json.loads(text)

    return tamper


def _add_rule(chain: str, position: int, expr: list) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        anchor = doc["nftables"].index({"rule": rules_of(doc, chain)[position]})
        rule = {"family": "inet", "table": "auth_proxy_egress", "chain": chain, "expr": expr}
        doc["nftables"].insert(anchor, {"rule": rule})

    return tamper


def _add_object(kind: str, **fields: object) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        obj = {"family": "inet", "table": "auth_proxy_egress", **fields}
        doc["nftables"].append({kind: obj})

    return tamper


def _only(kind: str) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        doc["nftables"] = [i for i in doc["nftables"] if kind not in i]

    return tamper


def _swap(chain: str, a: int, b: int) -> Callable[[dict], None]:
    def tamper(doc: dict) -> None:
        items = doc["nftables"]
        rules = rules_of(doc, chain)
        ia, ib = items.index({"rule": rules[a]}), items.index({"rule": rules[b]})
        items[ia], items[ib] = items[ib], items[ia]

    return tamper


ACCEPT_ALL = [{"accept": None}]
ACCEPT_UDP_443 = [
    {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
    {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 443}},
    {"accept": None},
]  # fmt: skip

TAMPERED = [
    *(
        pytest.param(_drop_rule(chain, i), f"chain {chain} rule", id=f"missing-{rid}")
        for (chain, i, _), rid in zip(RULES, RULE_IDS, strict=True)
    ),
    pytest.param(_replace_in_rules('"right": 10000', '"right": 10001'), "meta skuid == 10001", id="other-uid"),
    pytest.param(_replace_in_rules('"port": 8082', '"port": 8080'), "redirect to :8080", id="transparent-port-changed"),
    pytest.param(_replace_in_rules('"port": 8053', '"port": 53'), "redirect to :53", id="dns-port-changed"),
    pytest.param(_replace_in_rules('"len": 8', '"len": 1'), "127.0.0.0/1", id="loopback-widened"),
    pytest.param(_replace_in_rules('"port-unreachable"', '"admin-prohibited"'), "admin-prohibited", id="reject-type-changed"),
    pytest.param(_edit_chain("filter_output", policy="accept"), "policy is 'accept', expected 'drop'", id="policy-accept"),
    pytest.param(_edit_chain("nat_output", prio=100), "prio is 100", id="nat-after-filter"),
    pytest.param(_edit_chain("filter_output", hook="input"), "hook is 'input'", id="wrong-hook"),
    pytest.param(_edit_chain("nat_output", type="filter"), "type is 'filter'", id="nat-chain-not-nat"),
    pytest.param(_add_rule("filter_output", 0, ACCEPT_ALL), "found `accept`", id="accept-all-first"),
    pytest.param(_add_rule("filter_output", 5, ACCEPT_UDP_443), "udp dport == 443", id="udp-443-accepted-before-reject"),
    pytest.param(_swap("filter_output", 0, 5), "rule 1", id="reordered"),
    pytest.param(_add_object("chain", name="sneaky", type="filter", hook="output", prio=-300, policy="accept"), "unexpected chain 'sneaky'", id="extra-chain"),
    pytest.param(_add_object("set", name="allowed", type="ipv4_addr"), "unexpected set 'allowed'", id="extra-set"),
    pytest.param(_only("chain"), "chain nat_output is missing", id="chains-missing"),
    pytest.param(_only("table"), "table inet auth_proxy_egress is missing", id="table-missing"),
    pytest.param(_replace_in_rules('"family": "inet"', '"family": "ip"'), "table inet auth_proxy_egress is missing", id="ip-family-only"),
    pytest.param(_replace_in_rules('"expr": [', '"expr": [{"counter": null}, '), '{"counter": null}', id="unknown-expression"),
]  # fmt: skip


@pytest.mark.parametrize(("tamper", "problem"), TAMPERED)
def test_a_tampered_readback_is_caught(tamper: Callable[[dict], None], problem: str) -> None:
    doc = good()
    tamper(doc)
    problems = check_readback(DEFAULT, doc)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "doc",
    [None, [], "text", {}, {"nftables": None}, {"nftables": "x"}, {"nftables": []}, {"nftables": [1, "a", None]}],
    ids=["none", "list", "str", "empty-dict", "null-list", "str-list", "empty-list", "junk-items"],
)  # fmt: skip
def test_a_readback_that_is_not_the_table_is_a_problem(doc: object) -> None:
    assert check_readback(DEFAULT, doc) != []


def test_what_nft_versions_vary_is_tolerated() -> None:
    """Set element order and `in` vs `==` for flag matches differ between nft releases."""
    doc = good()
    for rule in (i["rule"] for i in doc["nftables"] if "rule" in i):
        for expr in rule["expr"]:
            match = expr.get("match")
            if match and isinstance(match["right"], dict) and "set" in match["right"]:
                match["right"]["set"].reverse()
            if match and match["op"] == "in":
                match["op"] = "=="
    assert check_readback(DEFAULT, doc) == []


@pytest.mark.parametrize(
    ("exprs", "shape"),
    [
        ([{"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 7}}, {"return": None}], "meta skuid == 7; return"),
        ([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["related", "established"]}}, {"accept": None}], "ct state == {established, related}; accept"),
        ([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}], "ip daddr == 127.0.0.0/8"),
        ([{"redirect": {"port": 8082}}], "redirect to :8082"),
        ([{"redirect": {"port": 8082, "flags": ["random"]}}], '{"redirect": {"flags": ["random"], "port": 8082}}'),
        ([{"reject": {"type": "icmpx", "expr": "port-unreachable"}}], "reject icmpx port-unreachable"),
        ([{"accept": None, "drop": None}], '{"accept": null, "drop": null}'),
        ([{"match": {"op": "!=", "left": {"meta": {"key": "skuid"}}, "right": True}}], 'meta skuid != true'),
        ("not-a-list", '"not-a-list"'),
    ],
    ids=["meta", "ct-in", "prefix", "redirect", "redirect-with-flags", "reject", "two-keys", "bool-right", "not-list"],
)  # fmt: skip
def test_shape_of(exprs: object, shape: str) -> None:
    assert shape_of(exprs) == shape


# --- naming what the kernel lacks ---------------------------------------------------------------


def line_of(text: str) -> int:
    """The 1-based line of `text` in the rendered script, as nft numbers it."""
    return next(i for i, line in enumerate(render(DEFAULT).splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("line_text", "needs"),
    [
        ("table inet auth_proxy_egress {}", NEEDS_TABLE),
        ("type nat hook output", NEEDS_NAT),
        ("meta skuid 10000 return", NEEDS_SKUID),
        ("th dport 53 redirect", NEEDS_SET_REDIRECT),
        ("tcp redirect to :8082", NEEDS_REDIRECT),
        ("ct state", NEEDS_CT),
        ("reject with icmpx", NEEDS_REJECT),
    ],
    ids=["table", "nat-chain", "skuid", "dns-redirect", "tcp-redirect", "ct", "reject"],
)
def test_each_line_knows_what_it_needs(line_text: str, needs: str) -> None:
    assert needs_at(DEFAULT, line_of(line_text)) == needs


def test_lines_outside_the_script_need_nothing() -> None:
    assert needs_at(DEFAULT, 0) is None
    assert needs_at(DEFAULT, len(render(DEFAULT).splitlines()) + 1) is None


def _located(text: str, error: str) -> str:
    """nft's wording for a kernel that refuses a line (seen here with `synproxy`)."""
    return f"/dev/stdin:{line_of(text)}:3-36: Error: Could not process rule: {error}\n\t\t{text}\n\t\t^^^^\n"


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("netlink: Error: cache initialization failed: Operation not permitted\n", "needs the NET_ADMIN capability"),
        ("Operation not permitted (you must be root)\n", "needs the NET_ADMIN capability"),
        (("tcp redirect to :8082", "Operation not supported"), "it lacks NAT redirect (CONFIG_NFT_REDIR"),
        (("th dport 53 redirect", "No such file or directory"), "it lacks NAT redirect with an anonymous set"),
        (("type nat hook output", "No such file or directory"), "it lacks nftables NAT on the output hook"),
        (("meta skuid 10000 accept", "Operation not supported"), "socket-owner matching, `meta skuid`"),
        (("ct state", "No such file or directory"), "connection tracking"),
        (("reject with icmpx", "Operation not supported"), "it lacks reject (CONFIG_NFT_REJECT"),
        (("table inet auth_proxy_egress {}", "Operation not supported"), "nf_tables with the inet family"),
        ("mnl_socket_open: Protocol not supported\n", "the kernel has no nf_tables"),
        ("Error: something new\nmore\n", "nft failed: Error: something new"),
        ("", "nft failed: no error output"),
    ],
    ids=["eperm-cache", "eperm-not-root", "redirect", "dns-redirect", "nat-chain", "skuid", "ct", "reject",
         "inet-family", "no-nfnetlink", "unknown", "silent"],
)  # fmt: skip
def test_nft_errors_name_what_is_missing(stderr: str | tuple[str, str], expected: str) -> None:
    message = lock.diagnose(DEFAULT, stderr if isinstance(stderr, str) else _located(*stderr))
    assert expected in message
    assert "\n" not in message


# --- the command line ---------------------------------------------------------------------------


def test_dry_run_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "--dry-run",
        "--sidecar-uid",
        "4242",
        "--transparent-port",
        "9000",
        "--dns-port",
        "5353",
    ]
    assert lock.main(args) == 0
    assert capsys.readouterr().out == render(OTHER)


def test_help_shows_the_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        lock.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--sidecar-uid", "--transparent-port", "--dns-port", "--dry-run", "NET_ADMIN"):
        assert flag in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sidecar-uid", "0"], "sidecar uid 0"),
        (["--dns-port", "99999"], "dns port 99999"),
        (["--transparent-port", "53x"], "--transparent-port: invalid int value"),
        (["--dns-port", "8082"], "use two ports"),
        (["--table", "x"], "unrecognized arguments"),
    ],
    ids=["uid-0", "port-range", "port-not-int", "same-ports", "unknown-flag"],
)
def test_bad_arguments_exit_2_naming_them(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        lock.main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
