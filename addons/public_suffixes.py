"""The Public Suffix List, for the guard against policy wildcards anyone can register under.

`*.co.uk` admits every company in the UK and `*.github.io` every GitHub user: a wildcard directly
over a public suffix is never "our hosts". The list is the copy that the `publicsuffixlist` package
ships (pinned in images/sidecar/requirements.lock), read once on first use; nothing here reaches
the network, so the answer changes only when the pinned package does.

Names passed in must already be normalized as `addons.policy.normalize_host` does it: lower-case,
ASCII (IDNA), no trailing dot. Anything else is refused rather than silently not found.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass
from typing import Literal

from addons.policy_file import PolicyError

Kind = Literal["icann", "private"]

PACKAGE = "publicsuffixlist"
DATA_FILE = "public_suffix_list.dat"
_SECTIONS: dict[str, Kind] = {
    "// ===BEGIN ICANN DOMAINS===": "icann",
    "// ===BEGIN PRIVATE DOMAINS===": "private",
}
_SECTION_ENDS = ("// ===END ICANN DOMAINS===", "// ===END PRIVATE DOMAINS===")
_VERSION_PREFIX = "// VERSION:"
_HEADER_LINES = 64
# Labels tried in front of a public suffix to show a name someone registered (kobe.jp needs two).
_EXAMPLE_LABELS = ("example", "www", "api")


class PublicSuffixListError(PolicyError):
    """The bundled list is missing or not in the format this module reads: a policy with a
    wildcard then fails to load (the guard cannot be skipped), as any bad policy does."""


@dataclass(frozen=True)
class SuffixTable:
    suffixes: dict[str, Kind]  # exact rules, and the implicit root P of every "*.P" rule
    wildcards: dict[str, Kind]  # P for every "*.P" rule: each child of P is a suffix too...
    exceptions: frozenset[str]  # ...except the names of "!name" rules
    version: str

    def kind(self, suffix: str) -> Kind | None:
        """At most two dict look-ups: the name itself, and its parent as a wildcard rule."""
        kind = self.suffixes.get(suffix)
        by_wildcard = self.wildcards.get(suffix.partition(".")[2])
        if by_wildcard is not None and suffix not in self.exceptions:
            kind = _stricter(kind, by_wildcard)
        return kind


def _stricter(old: Kind | None, new: Kind) -> Kind:
    # A name in both sections (none today) gets the ICANN answer: an error beats a warning.
    return "icann" if "icann" in (old, new) else new


def _ascii(rule: str) -> str:
    # The same codec as addons.policy.normalize_host, so a Unicode rule meets its callers' spelling.
    return rule if rule.isascii() else rule.encode("idna").decode("ascii")


def parse(text: str) -> SuffixTable:
    """Compile the text of a public_suffix_list.dat. Raises PublicSuffixListError when either
    section is missing or empty, so that a format change never quietly turns the guard off."""
    suffixes: dict[str, Kind] = {}
    wildcards: dict[str, Kind] = {}
    exceptions: set[str] = set()
    counts: dict[Kind, int] = {"icann": 0, "private": 0}
    version = "unknown"
    section: Kind | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(_VERSION_PREFIX) and version == "unknown":
            version = line.removeprefix(_VERSION_PREFIX).strip() or "unknown"
        if line in _SECTIONS:
            section = _SECTIONS[line]
        elif line in _SECTION_ENDS:
            section = None
        if not line or line.startswith("//") or section is None:
            continue
        rule = line.split()[0].lower()  # the PSL format: a rule ends at the first whitespace
        counts[section] += 1
        if rule.startswith("!"):
            exceptions.add(_ascii(rule[1:]))
            continue
        if rule.startswith("*."):
            parent = _ascii(rule[2:])
            wildcards[parent] = _stricter(wildcards.get(parent), section)
            rule = rule[2:]
        name = _ascii(rule)
        suffixes[name] = _stricter(suffixes.get(name), section)
    empty = [kind for kind, count in counts.items() if not count]
    if empty:
        raise PublicSuffixListError(
            f"the Public Suffix List in {PACKAGE} has no {' or '.join(empty)} section. "
            f"Fix: reinstall the {PACKAGE} version pinned in images/sidecar/requirements.lock"
        )
    return SuffixTable(suffixes, wildcards, frozenset(exceptions), version)


@functools.cache
def _table() -> SuffixTable:
    try:
        text = importlib.resources.files(PACKAGE).joinpath(DATA_FILE).read_text(encoding="utf-8")
    except (ImportError, OSError) as e:
        raise PublicSuffixListError(
            f"cannot read the Public Suffix List from the {PACKAGE} package ({e}). "
            f"Fix: install the {PACKAGE} version pinned in images/sidecar/requirements.lock"
        ) from None
    return parse(text)


def _check_normalized(suffix: str) -> None:
    if not suffix or not suffix.isascii() or suffix != suffix.lower() or suffix.endswith("."):
        raise ValueError(
            f"{suffix!r} is not a normalized name. "
            "Fix: pass it through addons.policy.normalize_host first"
        )


def suffix_kind(suffix: str) -> Kind | None:
    """Which section of the list makes `suffix` a public suffix, or None when it is not one
    (a registrable name such as "example.co.uk", or a top-level name the list does not hold)."""
    _check_normalized(suffix)
    return _table().kind(suffix)


def list_date() -> str:
    """The list's VERSION line (e.g. "2026-10-22_08-36-41_UTC"); "unknown" if it has none or
    cannot be read (for /readyz, which must answer regardless; a policy load still fails)."""
    return _head_version()


@functools.cache
def _head_version() -> str:
    # The VERSION line is in the file's header: /readyz reads it without building the table
    # (a few MiB a sidecar needs only when its policy has wildcards).
    try:
        with importlib.resources.files(PACKAGE).joinpath(DATA_FILE).open(encoding="utf-8") as f:
            for _, line in zip(range(_HEADER_LINES), f, strict=False):
                if line.startswith(_VERSION_PREFIX):
                    return line.removeprefix(_VERSION_PREFIX).strip() or "unknown"
    except (ImportError, OSError, UnicodeError):
        pass
    return "unknown"


def _registrable_example(suffix: str) -> str:
    name = suffix
    for label in _EXAMPLE_LABELS:
        name = f"{label}.{name}"
        if suffix_kind(name) is None:
            break
    return name


def wildcard_problem(suffix: str) -> tuple[str, str] | None:
    """("error", message) for the policy wildcard `*.<suffix>` when `suffix` is an ICANN public
    suffix, ("warning", message) for a private one, else None. The message names the entry, the
    section, the list's date and the fix."""
    kind = suffix_kind(suffix)
    if kind is None:
        return None
    head = (
        f"'*.{suffix}' is a wildcard over '{suffix}', a public suffix in the {kind.upper()} "
        f"section of the Public Suffix List (version {list_date()})"
    )
    example = _registrable_example(suffix)
    if kind == "icann":
        return (
            "error",
            f"{head}: anyone can register a name under it. "
            f"Fix: list the hosts you need, e.g. '{example}' or '*.{example}'",
        )
    return (
        "warning",
        f"{head}: each name under it belongs to a different owner. "
        f"Fix: list exact hosts, e.g. '{example}', unless you trust every one",
    )
