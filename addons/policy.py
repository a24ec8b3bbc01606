"""Policy file v1: load, validate completely, compile, and decide.

Everything here is pure: a compiled `Policy` and the facts of a request go in, a `Decision` comes
out. The addon gathers the facts and applies the answer; nothing here touches the network.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from addons import public_suffixes
from addons.core import reasons
from addons.core.decision import Decision
from addons.policy_file import (
    PolicyError,
    clipped,
    excerpt,
    key_excerpt,
    load_yaml,
    read_policy_text,
)

VERSION = "v1"
DEFAULT_PORTS: tuple[int, ...] = (443, 80)
KNOWN_KEYS = (
    "version",
    "mode",
    "allowed_domains",
    "denied_domains",
    "allowed_ports",
    "allow_ranges",
    "rules",
)
ENFORCE, REPORT = "enforce", "report"
MODES = (ENFORCE, REPORT)

# Decision reasons, named here for the modules that import them from this one; addons.core.reasons
# spells them.
ALLOWED = reasons.ALLOWED.name
BLOCKED_BY_ALLOWLIST = reasons.BLOCKED_BY_ALLOWLIST.name
BLOCKED_PORT = reasons.BLOCKED_PORT.name
BLOCKED_BY_DENYLIST = reasons.BLOCKED_BY_DENYLIST.name
BLOCKED_ADDRESS = reasons.BLOCKED_ADDRESS.name
HOST_MISMATCH = reasons.HOST_MISMATCH.name
POLICY_ERROR = reasons.POLICY_ERROR.name
DENY_REASONS = (
    BLOCKED_BY_ALLOWLIST,
    BLOCKED_BY_DENYLIST,
    BLOCKED_PORT,
    BLOCKED_ADDRESS,
    HOST_MISMATCH,
    POLICY_ERROR,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidHost(ValueError):
    """A host name that is not a valid DNS name or IP literal."""


@dataclass(frozen=True)
class Policy:
    source: str
    exact: frozenset[str] = frozenset()
    # Suffixes of "*.suffix" entries, stored without the "*.".
    wildcard_suffixes: frozenset[str] = frozenset()
    addresses: frozenset[IPAddress] = frozenset()
    ports: frozenset[int] = frozenset(DEFAULT_PORTS)
    allow_ranges: tuple[IPNetwork, ...] = field(default_factory=tuple)
    # denied_domains, compiled like the allowed ones; a match wins over any allow entry.
    denied: frozenset[str] = frozenset()
    denied_wildcard_suffixes: frozenset[str] = frozenset()
    denied_addresses: frozenset[IPAddress] = frozenset()
    # `rules` (addons.policy_rules.HostRule): per host, the methods and paths allowed; indexed by
    # their host pattern ("github.com", "*.example.com") so a request finds its rules at once.
    rules: tuple[Any, ...] = ()
    rules_by_host: Mapping[str, tuple[Any, ...]] = field(
        default_factory=dict, compare=False, hash=False
    )
    mode: str = ENFORCE
    # Loaded, but worth a look (a wildcard over a private public suffix): logged and in /readyz.
    warnings: tuple[str, ...] = ()

    @property
    def reporting(self) -> bool:
        """Report mode: what the names, ports and rules would deny is let through and logged."""
        return self.mode == REPORT

    @property
    def entry_count(self) -> int:
        return len(self.exact) + len(self.wildcard_suffixes) + len(self.addresses)


# A policy load to run later (e.g. in a thread): returns the policy or raises PolicyError.
Loader = Callable[[], Policy | None]


def parse_ip(host: str) -> IPAddress | None:
    """The IP address that `host` spells (brackets allowed for IPv6), or None for a name."""
    candidate = host.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    if ":" not in candidate and not candidate[-1:].isdigit():
        return None  # the usual case, a name: skip the cost of a failed parse
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form of a DNS name, without a trailing dot.

    Raises InvalidHost for anything that is not a well-formed name. Idempotent.
    """
    name = host.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidHost("empty host name")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as e:
            reason = getattr(e, "reason", None) or "invalid"
            raise InvalidHost(f"not a valid internationalized name ({clipped(reason)})") from None
    if len(name) > 253:
        raise InvalidHost("longer than 253 characters")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise InvalidHost("has an empty label")
        if len(label) > 63:
            raise InvalidHost(f"label {excerpt(label, 20)} is longer than 63 characters")
        if not _LABEL_CHARS.issuperset(label):
            raise InvalidHost(
                f"label {excerpt(label, 20)} has characters other than a-z, 0-9, '-' and '_'"
            )
        if label[0] == "-" or label[-1] == "-":
            raise InvalidHost(f"label {excerpt(label, 20)} starts or ends with '-'")
    # A numeric last label is an address in disguise (e.g. "2130706433" or "0x7f.1"), never a name.
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):
        raise InvalidHost("ends in a numeric label, which resolvers read as an IP address")
    return name


def entry_error(
    source: str, key: str, index: int, entry: object, problem: str, fix: str
) -> PolicyError:
    return PolicyError(f"{source}: {key}[{index}] {excerpt(entry)}: {problem}. Fix: {fix}")


def compile_domain(
    source: str, index: int, entry: object, key: str = "allowed_domains"
) -> tuple[str, str] | tuple[str, IPAddress]:
    """("exact"|"wildcard", name) or ("address", ip) for one allowed_domains-style entry."""
    if not isinstance(entry, str):
        raise entry_error(
            source, key, index, entry, "is not a string", "write the host name as a string"
        )
    address = parse_ip(entry)
    if address is not None:
        return "address", address
    text = entry.strip()
    kind = "exact"
    if text.startswith("*."):
        kind, text = "wildcard", text[2:]
    if "*" in text:
        raise entry_error(
            source,
            key,
            index,
            entry,
            "'*' is allowed only as the whole first label",
            'write "*.example.com" for any subdomain, or list the exact host',
        )
    try:
        name = normalize_host(text)
    except InvalidHost as e:
        raise entry_error(
            source, key, index, entry, str(e), "give a host name such as api.example.com"
        ) from None
    if kind == "wildcard" and "." not in name:
        raise entry_error(
            source,
            key,
            index,
            entry,
            "a wildcard over a top-level domain allows too much",
            'name at least two labels after "*.", e.g. "*.example.com"',
        )
    if kind == "wildcard" and key != "denied_domains":
        # A deny entry over a public suffix only narrows access; an allow or a rule widens it.
        problem = public_suffixes.wildcard_problem(name)
        if problem is not None and problem[0] == "error":
            raise PolicyError(f"{source}: {key}[{index}] {excerpt(entry)}: {problem[1]}")
    return kind, name


def suffix_warnings(wildcards: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """A load warning for each (where, suffix) wildcard over a PRIVATE-section public suffix
    (compile_domain has already refused those over an ICANN one)."""
    found: list[str] = []
    for where, suffix in wildcards:
        problem = public_suffixes.wildcard_problem(suffix)
        if problem is not None and problem[0] == "warning":
            found.append(f"{where}: {problem[1]}")
    return tuple(found)


def _as_list(source: str, data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{source}: {key} must be a list, got {type(value).__name__}")
    return value


def _compile_ports(source: str, raw: list[Any]) -> frozenset[int]:
    ports = set()
    for index, port in enumerate(raw):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise PolicyError(
                f"{source}: allowed_ports[{index}] {excerpt(port)} is not a port. "
                "Fix: use whole numbers from 1 to 65535"
            )
        ports.add(port)
    if not ports:
        raise PolicyError(
            f"{source}: allowed_ports is empty, so nothing could ever be allowed. "
            f"Fix: list ports, or leave the key out for the default {list(DEFAULT_PORTS)}"
        )
    return frozenset(ports)


def _range_problem(text: str) -> str:
    # ipaddress's own messages quote the whole entry; say what is wrong without it.
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return "not an IP network"
    return "has host bits set"


def _compile_ranges(source: str, raw: list[Any]) -> tuple[IPNetwork, ...]:
    ranges = []
    for index, cidr in enumerate(raw):
        try:
            ranges.append(ipaddress.ip_network(str(cidr), strict=True))
        except ValueError:
            raise PolicyError(
                f"{source}: allow_ranges[{index}] {excerpt(cidr)} is not a CIDR "
                f"({_range_problem(str(cidr))}). "
                "Fix: write a network such as 10.1.2.0/24 with its host bits zero"
            ) from None
    return tuple(ranges)


def _check_keys(source: str, data: Mapping[str, Any]) -> None:
    for key in data:
        if key not in KNOWN_KEYS:
            # Only a short key can be a typo of a known one (and difflib is quadratic).
            short = isinstance(key, str) and len(key) <= 40
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1) if short else []
            hint = (
                f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(KNOWN_KEYS)}"
            )
            label = key_excerpt(key)
            if label.startswith("<"):
                hint += ", and check that the path names the policy file and not another one"
            raise PolicyError(f"{source}: unknown key {label}. Fix: {hint}")
    version = data.get("version")
    if version is None:
        raise PolicyError(f"{source}: missing 'version'. Fix: add 'version: {VERSION}' at the top")
    if version != VERSION:
        raise PolicyError(
            f"{source}: unknown version {excerpt(version)}. "
            f"Fix: this proxy reads 'version: {VERSION}'"
        )


def _compile_domains(
    source: str, key: str, entries: Iterable[object]
) -> tuple[frozenset[str], frozenset[str], frozenset[IPAddress]]:
    """(exact names, wildcard suffixes, addresses) of an allowed_domains-style list."""
    exact: set[str] = set()
    wildcard: set[str] = set()
    addresses: set[IPAddress] = set()
    for index, entry in enumerate(entries):
        kind, value = compile_domain(source, index, entry, key)
        if isinstance(value, str):
            (wildcard if kind == "wildcard" else exact).add(value)
        else:
            addresses.add(value)
    return frozenset(exact), frozenset(wildcard), frozenset(addresses)


def _compile_mode(source: str, data: Mapping[str, Any]) -> str:
    mode = data.get("mode", ENFORCE)
    if mode not in MODES:
        raise PolicyError(
            f"{source}: mode {excerpt(mode)} is unknown. Fix: use 'enforce' (the default) or "
            "'report' (let through and log what would be denied)"
        )
    return str(mode)


def compile_policy(data: object, source: str, extra_domains: Iterable[str] = ()) -> Policy:
    """Validate a parsed policy document completely and compile it. Raises PolicyError."""
    from addons import policy_rules  # it matches names with this module's functions

    if not isinstance(data, Mapping):
        raise PolicyError(
            f"{source}: the policy must be a YAML mapping with 'version: {VERSION}', "
            f"got {type(data).__name__}"
        )
    _check_keys(source, data)
    entries = [*_as_list(source, data, "allowed_domains"), *extra_domains]
    exact, wildcard, addresses = _compile_domains(source, "allowed_domains", entries)
    denied = _compile_domains(source, "denied_domains", _as_list(source, data, "denied_domains"))
    ports = (
        _compile_ports(source, _as_list(source, data, "allowed_ports"))
        if "allowed_ports" in data
        else frozenset(DEFAULT_PORTS)
    )
    compiled = Policy(
        source=source,
        exact=exact,
        wildcard_suffixes=wildcard,
        addresses=addresses,
        ports=ports,
        allow_ranges=_compile_ranges(source, _as_list(source, data, "allow_ranges")),
        denied=denied[0],
        denied_wildcard_suffixes=denied[1],
        denied_addresses=denied[2],
        mode=_compile_mode(source, data),
    )
    rules = policy_rules.compile_rules(compiled, _as_list(source, data, "rules"))
    warnings = suffix_warnings(
        [
            *(("allowed_domains", suffix) for suffix in sorted(wildcard)),
            *((rule.label, rule.host[2:]) for rule in rules if rule.host.startswith("*.")),
        ]
    )
    return replace(
        compiled, rules=rules, rules_by_host=policy_rules.index(rules), warnings=warnings
    )


def parse_policy(text: str, source: str, extra_domains: Iterable[str] = ()) -> Policy:
    """Parse and compile policy YAML text. `source` names it in errors (usually the file path)."""
    data = load_yaml(text, source)
    if data is None:
        raise PolicyError(
            f"{source}: the file is empty. Fix: write 'version: {VERSION}' and allowed_domains"
        )
    return compile_policy(data, source, extra_domains)


def load_policy(path: str | Path, extra_domains: Iterable[str] = ()) -> Policy:
    """Read, parse and compile a policy file. Raises PolicyError naming the file.

    Safe on any path: see addons.policy_file for the checks (regular file, size, YAML shape).
    """
    return parse_policy(read_policy_text(path), str(path), extra_domains)


def policy_from_domains(domains: Iterable[str], source: str = "allowed_domains option") -> Policy:
    """A policy made only of `allowed_domains` entries, with default ports and no ranges."""
    return compile_policy({"version": VERSION}, source, domains)


def match_name(exact: frozenset[str], wildcard_suffixes: frozenset[str], name: str) -> str | None:
    """The entry (a name, or "*.suffix") of these that admits a normalized `name`, or None."""
    if name in exact:
        return name
    # Walk the parent suffixes: a.b.example.com checks b.example.com, then example.com, then com.
    dot = name.find(".")
    while dot != -1:
        suffix = name[dot + 1 :]
        if suffix in wildcard_suffixes:
            return f"*.{suffix}"
        dot = name.find(".", dot + 1)
    return None


def match_rule(policy: Policy, host: str) -> str | None:
    """The policy entry that admits `host`, or None. Raises InvalidHost for malformed names."""
    address = parse_ip(host)
    if address is not None:
        return str(address) if address in policy.addresses else None
    return match_name(policy.exact, policy.wildcard_suffixes, normalize_host(host))


def match_denied(policy: Policy, host: str) -> str | None:
    """The denied_domains entry that matches `host`, or None. Raises InvalidHost."""
    address = parse_ip(host)
    if address is not None:
        return str(address) if address in policy.denied_addresses else None
    return match_name(policy.denied, policy.denied_wildcard_suffixes, normalize_host(host))


def decide(policy: Policy, host: str, port: int) -> Decision:
    """Decide on a destination by name and port (addresses are checked once resolved). The deny
    list comes first: a match there wins over any allow entry."""
    address = parse_ip(host)
    try:
        name = normalize_host(host) if address is None else ""
    except InvalidHost:
        return Decision(False, BLOCKED_BY_ALLOWLIST)
    if address is not None:
        denied = str(address) if address in policy.denied_addresses else None
        rule = str(address) if address in policy.addresses else None
    else:
        denied = match_name(policy.denied, policy.denied_wildcard_suffixes, name)
        rule = match_name(policy.exact, policy.wildcard_suffixes, name)
    if denied is not None:
        return Decision(False, BLOCKED_BY_DENYLIST, denied)
    if rule is None:
        return Decision(False, BLOCKED_BY_ALLOWLIST)
    if port not in policy.ports:
        return Decision(False, BLOCKED_PORT, rule)
    return Decision(True, ALLOWED, rule)


def same_host(a: str, b: str) -> bool:
    """Whether two host spellings name the same destination (case, trailing dot, IDNA, IPv6)."""
    ip_a, ip_b = parse_ip(a), parse_ip(b)
    if ip_a is not None or ip_b is not None:
        return ip_a == ip_b
    try:
        return normalize_host(a) == normalize_host(b)
    except InvalidHost:
        return False
