"""The Public Suffix List guard's data: which names are public suffixes, in which section of the
list, what a policy wildcard over one is told, and that the list is read from the installed
package only (no network), once."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from addons import public_suffixes
from addons.policy import normalize_host
from addons.policy_file import PolicyError
from addons.public_suffixes import (
    PublicSuffixListError,
    list_date,
    parse,
    suffix_kind,
    wildcard_problem,
)

REPO = Path(__file__).resolve().parents[2]

KIND_CASES = [
    # ICANN: single- and multi-level suffixes.
    ("com", "icann"),
    ("uk", "icann"),
    ("co.uk", "icann"),
    ("gov.uk", "icann"),
    ("ac.uk", "icann"),
    # ICANN wildcard rules: "*.ck" makes "ck" (its implicit root) and every child public ...
    ("ck", "icann"),
    ("foo.ck", "icann"),
    ("kobe.jp", "icann"),
    ("foo.kobe.jp", "icann"),
    ("sch.uk", "icann"),
    ("myschool.sch.uk", "icann"),
    # ... except the names of "!" rules, and anything deeper than one label under the wildcard.
    ("www.ck", None),
    ("city.kobe.jp", None),
    ("x.www.ck", None),
    ("example.foo.ck", None),
    ("example.myschool.sch.uk", None),
    # IDNA: callers pass the punycode spelling; the list's Unicode rules are matched in it.
    ("xn--p1ai", "icann"),  # рф
    ("xn--90ae", "icann"),  # the Bulgarian IDN TLD
    ("xn--fiqs8s", "icann"),  # 中国
    ("xn--55qx5d.cn", "icann"),  # 公司.cn
    ("example.xn--p1ai", None),
    # PRIVATE: exact rules and a wildcard rule ("*.compute.amazonaws.com").
    ("github.io", "private"),
    ("herokuapp.com", "private"),
    ("s3.amazonaws.com", "private"),
    ("compute.amazonaws.com", "private"),
    ("us-east-1.compute.amazonaws.com", "private"),
    ("www.us-east-1.compute.amazonaws.com", None),
    # Registrable names, under a suffix of either section, are not suffixes.
    ("example.com", None),
    ("example.co.uk", None),
    ("a.b.example.co.uk", None),
    ("github.com", None),
    ("amazonaws.com", None),
    ("example.github.io", None),
    # A top-level name the list does not hold is in neither section.
    ("internal", None),
    ("svc.cluster.local", None),
]


@pytest.mark.parametrize(("name", "kind"), KIND_CASES, ids=[name for name, _ in KIND_CASES])
def test_suffix_kind(name: str, kind: str | None) -> None:
    assert suffix_kind(name) == kind


PROBLEM_CASES = [
    ("co.uk", "error", "'example.co.uk' or '*.example.co.uk'"),
    ("gov.uk", "error", "'example.gov.uk' or '*.example.gov.uk'"),
    ("foo.ck", "error", "'example.foo.ck' or '*.example.foo.ck'"),
    # example.kobe.jp is itself public ("*.kobe.jp"): the example goes one label deeper.
    ("kobe.jp", "error", "'www.example.kobe.jp' or '*.www.example.kobe.jp'"),
    ("xn--55qx5d.cn", "error", "'example.xn--55qx5d.cn'"),
    ("github.io", "warning", "'example.github.io'"),
    ("herokuapp.com", "warning", "'example.herokuapp.com'"),
    ("s3.amazonaws.com", "warning", "'example.s3.amazonaws.com'"),
    ("compute.amazonaws.com", "warning", "'www.example.compute.amazonaws.com'"),
]


@pytest.mark.parametrize(
    ("suffix", "severity", "example"), PROBLEM_CASES, ids=[c[0] for c in PROBLEM_CASES]
)
def test_wildcard_problem_names_entry_section_date_and_fix(
    suffix: str, severity: str, example: str
) -> None:
    problem = wildcard_problem(suffix)
    assert problem is not None
    got_severity, message = problem
    assert got_severity == severity
    assert f"'*.{suffix}'" in message
    section = "ICANN section" if severity == "error" else "PRIVATE section"
    assert section in message
    assert f"Public Suffix List (version {list_date()})" in message
    assert "Fix: " in message and example in message
    if severity == "error":
        assert "list the hosts you need" in message
    else:
        assert "belongs to a different owner" in message and "unless you trust every one" in message
    # The suggested name really is one that someone registered, not another public suffix.
    assert suffix_kind(example.split("'")[1]) is None


@pytest.mark.parametrize(
    "suffix", ["example.co.uk", "example.com", "www.ck", "city.kobe.jp", "internal", "github.com"]
)
def test_wildcard_over_a_registrable_name_is_fine(suffix: str) -> None:
    assert wildcard_problem(suffix) is None


# --- normalized names in, everything else refused -------------------------------------------------

RAW_SPELLINGS = [
    ("CO.UK", "co.uk", "icann"),
    ("co.uk.", "co.uk", "icann"),
    ("Co.Uk.", "co.uk", "icann"),
    ("GitHub.IO", "github.io", "private"),
    ("github.io.", "github.io", "private"),
    ("рф", "xn--p1ai", "icann"),
    ("РФ.", "xn--p1ai", "icann"),
    ("公司.CN", "xn--55qx5d.cn", "icann"),
    ("Example.CO.UK.", "example.co.uk", None),
]


@pytest.mark.parametrize(
    ("raw", "normalized", "kind"), RAW_SPELLINGS, ids=[raw for raw, _, _ in RAW_SPELLINGS]
)
def test_policy_normalization_then_lookup(raw: str, normalized: str, kind: str | None) -> None:
    # The policy loader's normalize_host is what callers pass through; it meets the list's keys.
    assert normalize_host(raw) == normalized
    assert suffix_kind(normalize_host(raw)) == kind


@pytest.mark.parametrize(
    "raw", ["CO.UK", "co.uk.", "Co.uk", "рф", "公司.cn", "GITHUB.IO", ""], ids=repr
)
def test_unnormalized_names_are_refused_not_missed(raw: str) -> None:
    # Answering None for "CO.UK" would let "*.CO.UK" through the guard: refuse instead.
    with pytest.raises(ValueError, match="normalize_host"):
        suffix_kind(raw)
    with pytest.raises(ValueError, match="normalize_host"):
        wildcard_problem(raw)


# --- the parser, on lists made here ---------------------------------------------------------------

SAMPLE = """\
// VERSION: 2030-01-02_03-04-05_UTC
// COMMIT: 0123456789abcdef
not-in-a-section
// ===BEGIN ICANN DOMAINS===
// comment
tld
co.tld
*.wild.tld
!keep.wild.tld
Upper.TLD   trailing words are ignored
例え.tld
both.tld
// ===END ICANN DOMAINS===
// ===BEGIN PRIVATE DOMAINS===
host.co.tld
*.cloud.co.tld
both.tld
// ===END PRIVATE DOMAINS===
"""
SAMPLE_CASES = [
    ("not-in-a-section", None),
    ("tld", "icann"),
    ("co.tld", "icann"),
    ("wild.tld", "icann"),
    ("x.wild.tld", "icann"),
    ("keep.wild.tld", None),
    ("upper.tld", "icann"),
    ("xn--r8jz45g.tld", "icann"),
    ("both.tld", "icann"),
    ("host.co.tld", "private"),
    ("cloud.co.tld", "private"),
    ("eu.cloud.co.tld", "private"),
    ("a.eu.cloud.co.tld", None),
]


@pytest.mark.parametrize(("name", "kind"), SAMPLE_CASES, ids=[n for n, _ in SAMPLE_CASES])
def test_parse_sample(name: str, kind: str | None) -> None:
    table = parse(SAMPLE)
    assert table.version == "2030-01-02_03-04-05_UTC"
    assert table.kind(name) == kind


def test_parse_without_version_says_unknown() -> None:
    text = "\n".join(line for line in SAMPLE.splitlines() if "VERSION" not in line)
    assert parse(text).version == "unknown"


@pytest.mark.parametrize(
    "drop",
    ["// ===BEGIN PRIVATE DOMAINS===", "// ===BEGIN ICANN DOMAINS==="],
    ids=["no-private", "no-icann"],
)
def test_parse_refuses_a_list_missing_a_section(drop: str) -> None:
    # A format change must not quietly turn the guard off (or every warning into nothing).
    text = SAMPLE.replace(drop, "// renamed marker")
    with pytest.raises(PublicSuffixListError, match="Fix: reinstall"):
        parse(text)


# --- the installed list ---------------------------------------------------------------------------


def test_list_date_is_the_bundled_lists_version() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC", list_date()), list_date()


def test_the_list_is_read_once() -> None:
    suffix_kind("co.uk")
    before = public_suffixes._table.cache_info()
    for name in ("com", "github.io", "example.co.uk"):
        suffix_kind(name)
    after = public_suffixes._table.cache_info()
    assert after.misses == before.misses and after.currsize == 1


@pytest.fixture
def fresh_table() -> Iterator[None]:
    public_suffixes._table.cache_clear()
    public_suffixes._head_version.cache_clear()
    yield
    public_suffixes._table.cache_clear()
    public_suffixes._head_version.cache_clear()


def test_a_missing_package_is_an_error_naming_the_fix(
    fresh_table: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(public_suffixes, "PACKAGE", "publicsuffixlist_not_installed")
    # A PolicyError, so a load or reload fails the way any bad policy does (never half-checked).
    with pytest.raises(PolicyError, match=r"Fix: install the publicsuffixlist_not_inst"):
        wildcard_problem("co.uk")
    with pytest.raises(PublicSuffixListError):
        suffix_kind("github.io")
    assert list_date() == "unknown"  # /readyz still answers


LOAD_WITHOUT_NETWORK = """
import socket, sys, time

def no_network(*args, **kwargs):
    raise AssertionError("network use while loading the Public Suffix List")

socket.socket.connect = no_network
socket.socket.connect_ex = no_network
socket.getaddrinfo = no_network
socket.create_connection = no_network
start = time.perf_counter()
from addons.public_suffixes import list_date, suffix_kind
imported = time.perf_counter()
assert suffix_kind("co.uk") == "icann"
first = time.perf_counter()
assert suffix_kind("github.io") == "private"
second = time.perf_counter()
assert "publicsuffixlist.update" not in sys.modules
print(f"list {list_date()}: import {1000 * (imported - start):.1f} ms, "
      f"first lookup (reads the list) {1000 * (first - imported):.1f} ms, "
      f"next lookup {1e6 * (second - first):.1f} us")
"""


def test_loading_uses_no_network_and_costs_little() -> None:
    # A fresh interpreter, so the import and the first lookup really load the list.
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_NETWORK],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    print(done.stdout.strip())  # timings for the record; no budget is asserted
    assert done.stdout.startswith(f"list {list_date()}:")


def test_the_list_date_does_not_build_the_table(fresh_table: None) -> None:
    """/readyz shows the list's date on every sidecar; the table (a few MiB) is built only for
    a policy with wildcards."""
    assert list_date() == public_suffixes._table().version
    public_suffixes._table.cache_clear()
    list_date()
    assert public_suffixes._table.cache_info().currsize == 0
