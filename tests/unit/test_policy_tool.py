"""auth-proxy-policy (addons.policy_tool): check, explain and suggest, as tables."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from addons import policy_explain, policy_suggest, policy_tool
from addons.policy import load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]

GIT_POLICY = """\
version: v1
allowed_domains: [github.com, "*.example.com", httpbin.org, 203.0.113.7, 93.184.215.14]
denied_domains: [uploads.example.com, "*.internal.example.com"]
allowed_ports: [443, 80, 8443]
allow_ranges: [10.1.0.0/16]
rules:
  - host: github.com
    methods: [GET]
    paths: ["/myorg/*/info/refs"]
  - host: github.com
    methods: [POST]
    paths: ["/myorg/*/git-upload-pack"]
  - host: "*.example.com"
    methods: [GET, HEAD]
"""
REPORT_POLICY = GIT_POLICY + "mode: report\n"


def run(*argv: str) -> tuple[int, str, str]:
    """The command in-process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = policy_tool.main(list(argv))
        except SystemExit as e:  # argparse: usage errors and --help
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def write(tmp_path: Path):
    def write(text: str, name: str = "policy.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


# --- check: the documented examples are valid ---------------------------------------------------


def _yaml_blocks(path: Path, section: str | None = None) -> list[str]:
    text = path.read_text()
    if section is not None:
        text = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    return [b for b in blocks if b.lstrip().startswith("version:")]


DOC_EXAMPLES = [
    pytest.param(block, id=f"{name}-{i}")
    for name, blocks in (
        ("README", _yaml_blocks(REPO / "README.md", "The policy file")),
        ("docs-policy", _yaml_blocks(REPO / "docs" / "policy.md")),
    )
    for i, block in enumerate(blocks)
]


def test_the_docs_have_examples() -> None:
    assert len(DOC_EXAMPLES) >= 4


@pytest.mark.parametrize("text", DOC_EXAMPLES)
def test_check_accepts_the_documented_examples(write, text: str) -> None:
    code, out, err = run("check", write(text))
    assert (code, err) == (0, ""), err
    assert "valid" in out


# --- check: every error, exit 1, the loader's message -------------------------------------------

ERRORS = {
    "empty": ("", "the file is empty"),
    "not-a-mapping": ("- a\n- b\n", "must be a YAML mapping"),
    "yaml-syntax": ("version: v1\nallowed_domains: [a\n", ""),
    "duplicate-key": ("version: v1\nversion: v1\n", "version"),
    "missing-version": ("allowed_domains: [a.com]\n", "missing 'version'"),
    "wrong-version": ("version: v2\n", "unknown version"),
    "unknown-key": ("version: v1\nalowed_domains: [a.com]\n", "did you mean 'allowed_domains'"),
    "domains-not-list": ("version: v1\nallowed_domains: a.com\n", "must be a list"),
    "domain-not-string": ("version: v1\nallowed_domains: [12]\n", "is not a string"),
    "star-inside": ("version: v1\nallowed_domains: ['foo.*.com']\n", "whole first label"),
    "wildcard-tld": ("version: v1\nallowed_domains: ['*.com']\n", "allows too much"),
    "space-in-host": ("version: v1\nallowed_domains: ['bad host']\n", "characters other than"),
    "long-label": (f"version: v1\nallowed_domains: [{'a' * 64}.com]\n", "longer than 63"),
    "numeric-label": ("version: v1\nallowed_domains: [a.123]\n", "numeric label"),
    "empty-label": ("version: v1\nallowed_domains: [a..com]\n", "empty label"),
    "denied-bad": ("version: v1\ndenied_domains: ['*.*.example.com']\n", "denied_domains[0]"),
    "port-zero": ("version: v1\nallowed_ports: [0]\n", "is not a port"),
    "port-high": ("version: v1\nallowed_ports: [70000]\n", "is not a port"),
    "port-string": ("version: v1\nallowed_ports: ['443']\n", "is not a port"),
    "port-bool": ("version: v1\nallowed_ports: [true]\n", "is not a port"),
    "ports-empty": ("version: v1\nallowed_ports: []\n", "nothing could ever be allowed"),
    "range-host-bits": ("version: v1\nallow_ranges: [10.0.0.1/8]\n", "host bits set"),
    "range-junk": ("version: v1\nallow_ranges: [nope]\n", "not an IP network"),
    "mode-unknown": ("version: v1\nmode: audit\n", "mode 'audit' is unknown"),
    "rules-not-list": ("version: v1\nrules: {host: a.com}\n", "rules must be a list"),
    "rule-not-mapping": (
        "version: v1\nallowed_domains: [a.com]\nrules: [a.com]\n",
        "not a mapping",
    ),
    "rule-unknown-key": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, path: [/x]}]\n",
        "is not a rule key",
    ),
    "rule-host-missing": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{methods: [GET]}]\n",
        "rules[0]",
    ),
    "rule-host-not-allowed": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: b.com}]\n",
        "could never apply",
    ),
    "rule-wildcard-not-allowed": (
        "version: v1\nallowed_domains: [a.example.com]\nrules: [{host: '*.example.com'}]\n",
        "could never apply",
    ),
    "methods-empty": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, methods: []}]\n",
        "non-empty list",
    ),
    "methods-string": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, methods: GET}]\n",
        "non-empty list",
    ),
    "method-lower": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, methods: [get]}]\n",
        "upper-case HTTP method",
    ),
    "paths-empty": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: []}]\n",
        "non-empty list",
    ),
    "path-not-string": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: [5]}]\n",
        "is not a string",
    ),
    "path-no-slash": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: [a/b]}]\n",
        "leading '/'",
    ),
    "path-starstar-in-segment": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: ['/a/**b']}]\n",
        "'**' inside the segment",
    ),
    "path-dot-segment": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: ['/a/../b']}]\n",
        "'..' segment",
    ),
    "path-query": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: ['/a?x=1']}]\n",
        "query string is never matched",
    ),
    "path-encoded-slash": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: ['/a%2Fb']}]\n",
        "encoded '/'",
    ),
    "path-empty-segment": (
        "version: v1\nallowed_domains: [a.com]\nrules: [{host: a.com, paths: ['/a//b']}]\n",
        "empty segment",
    ),
    "public-suffix-icann": ("version: v1\nallowed_domains: ['*.co.uk']\n", "public suffix"),
    "public-suffix-icann-denied-ok-but-allowed-bad": (
        "version: v1\nallowed_domains: ['*.gov.uk']\n",
        "ICANN",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(ERRORS.values()), ids=list(ERRORS))
def test_check_refuses_every_error(write, text: str, expected: str) -> None:
    path = write(text)
    code, out, err = run("check", path)
    assert code == 1, out
    assert out == ""
    assert err.startswith(f"error: {path}")
    assert expected in err
    # The message is the proxy's own loader's, word for word.
    with pytest.raises(ValueError) as raised:
        load_policy(path)
    assert err == f"error: {raised.value}\n"


def test_check_json_error(write) -> None:
    code, out, _ = run("check", "--json", write("version: v1\nallowed_ports: [0]\n"))
    assert code == 1
    assert json.loads(out)["valid"] is False


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["check", "/nonexistent/policy.yaml"], id="missing-file"),
        pytest.param(["check", "/"], id="a-directory"),
        pytest.param(["check", "/dev/null"], id="a-device"),
    ],
)
def test_check_unreadable_files(argv: list[str]) -> None:
    code, _, err = run(*argv)
    assert code == 1
    assert argv[1] in err and "Fix" in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["check"], id="check-no-file"),
        pytest.param(["explain", "p.yaml"], id="explain-no-url"),
        pytest.param(["suggest"], id="suggest-no-log"),
        pytest.param(["lint", "p.yaml"], id="unknown-command"),
        pytest.param(["check", "p.yaml", "--frobnicate"], id="unknown-option"),
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run(*argv)[0] == 2


# --- check: the summary -------------------------------------------------------------------------


def test_check_summary(write) -> None:
    code, out, _ = run("check", write(GIT_POLICY))
    assert code == 0
    assert "valid, mode enforce" in out
    assert "allowed_domains: 5 (2 exact, 1 wildcard, 2 address)" in out
    assert "denied_domains: 2 (1 exact, 1 wildcard, 0 address)" in out
    assert "allowed_ports: 80, 443, 8443" in out
    assert "allow_ranges: 10.1.0.0/16" in out
    assert "rules: 3 for 2 host(s)" in out
    assert "github.com: rules[0] GET /myorg/*/info/refs" in out
    assert "*.example.com: rules[2] GET,HEAD any path" in out
    assert "REPORT MODE" not in out


def test_check_json_summary_and_report_mode(write) -> None:
    code, out, _ = run("check", "--json", write(REPORT_POLICY))
    summary = json.loads(out)
    assert code == 0
    assert summary["valid"] is True
    assert summary["mode"] == "report"
    assert summary["allowed_domains"] == {"total": 5, "exact": 2, "wildcard": 1, "address": 2}
    assert summary["rules"]["github.com"] == [
        "rules[0] GET /myorg/*/info/refs",
        "rules[1] POST /myorg/*/git-upload-pack",
    ]
    assert "REPORT MODE" in run("check", write(REPORT_POLICY))[1]


def test_check_prints_warnings_and_strict_fails_on_them(write) -> None:
    path = write("version: v1\nallowed_domains: ['*.github.io']\n")
    code, out, _ = run("check", path)
    assert code == 0
    assert re.search(r"^warning: .*\*\.github\.io.*PRIVATE", out, re.MULTILINE), out
    assert run("check", "--strict", path)[0] == 1
    assert run("check", "--strict", write(GIT_POLICY, "clean.yaml"))[0] == 0


def test_k8s_policy_uses_check(tmp_path: Path) -> None:
    """`python -m k8s policy` validates with check_text: same errors, and its warnings."""
    from k8s.__main__ import main as k8s_main

    path = tmp_path / "p.yaml"
    path.write_text("version: v1\nallowed_domains: ['*.github.io']\n")
    code, out, err = _captured(k8s_main, ["policy", "--from-file", str(path)])
    assert code == 0 and "kind: ConfigMap" in out
    assert re.search(r"^warning: .*'\*\.github\.io'.*PRIVATE", err, re.MULTILINE), err
    path.write_text("version: v1\nallowed_ports: [0]\n")
    code, _, err = _captured(k8s_main, ["policy", "--from-file", str(path)])
    assert code == 1 and "allowed_ports[0]" in err


def _captured(main, argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


# --- explain ------------------------------------------------------------------------------------

RUN_TIME = "decided at run time"
# (policy, method, url, extra args) -> (exit, reason, would_deny, rule, run time named)
EXPLAIN = {
    "clone-refs": (
        GIT_POLICY,
        "GET",
        "https://github.com/myorg/app/info/refs?service=git-upload-pack",
        (),
        0,
        "allowed",
        None,
        "github.com rules[0]",
        True,
    ),
    "clone-pack": (
        GIT_POLICY,
        "POST",
        "https://github.com/myorg/app/git-upload-pack",
        (),
        0,
        "allowed",
        None,
        "github.com rules[1]",
        True,
    ),
    "push-refs-query-not-matched": (
        GIT_POLICY,
        "GET",
        "https://github.com/myorg/app/info/refs?service=git-receive-pack",
        (),
        0,
        "allowed",
        None,
        "github.com rules[0]",
        True,
    ),
    "push-pack": (
        GIT_POLICY,
        "POST",
        "https://github.com/myorg/app/git-receive-pack",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "other-org": (
        GIT_POLICY,
        "GET",
        "https://github.com/other/app/info/refs",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "wrong-method": (
        GIT_POLICY,
        "PUT",
        "https://github.com/myorg/app/info/refs",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "trailing-slash": (
        GIT_POLICY,
        "GET",
        "https://github.com/myorg/app/info/refs/",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "encoded-slash": (
        GIT_POLICY,
        "GET",
        "https://github.com/myorg/a%2Fb/info/refs",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "encoded-unreserved": (
        GIT_POLICY,
        "GET",
        "https://github.com/%6Dyorg/app/info/refs",
        (),
        0,
        "allowed",
        None,
        "github.com rules[0]",
        True,
    ),
    "case-of-host": (
        GIT_POLICY,
        "GET",
        "https://GitHub.COM/myorg/app/info/refs",
        (),
        0,
        "allowed",
        None,
        "github.com rules[0]",
        True,
    ),
    "plain-http-rules": (
        GIT_POLICY,
        "POST",
        "http://github.com/myorg/app/git-receive-pack",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[0],rules[1]",
        False,
    ),
    "wildcard-rule-get": (
        GIT_POLICY,
        "GET",
        "https://www.example.com/anything",
        (),
        0,
        "allowed",
        None,
        "*.example.com rules[2]",
        True,
    ),
    "wildcard-rule-post": (
        GIT_POLICY,
        "POST",
        "https://www.example.com/anything",
        (),
        3,
        "blocked-by-rule",
        None,
        "rules[2]",
        False,
    ),
    "denied-exact": (
        GIT_POLICY,
        "GET",
        "https://uploads.example.com/",
        (),
        3,
        "blocked-by-denylist",
        None,
        "uploads.example.com",
        False,
    ),
    "denied-wildcard": (
        GIT_POLICY,
        "GET",
        "https://a.b.internal.example.com/",
        (),
        3,
        "blocked-by-denylist",
        None,
        "*.internal.example.com",
        False,
    ),
    "not-allowed": (
        GIT_POLICY,
        "GET",
        "https://evil.test/",
        (),
        3,
        "blocked-by-allowlist",
        None,
        None,
        False,
    ),
    "apex-not-under-wildcard": (
        GIT_POLICY,
        "GET",
        "https://example.com/",
        (),
        3,
        "blocked-by-allowlist",
        None,
        None,
        False,
    ),
    "port": (
        GIT_POLICY,
        "GET",
        "https://httpbin.org:8080/",
        (),
        3,
        "blocked-port",
        None,
        "httpbin.org",
        False,
    ),
    "port-allowed": (
        GIT_POLICY,
        "GET",
        "https://httpbin.org:8443/get",
        (),
        0,
        "allowed",
        None,
        "httpbin.org",
        True,
    ),
    "ip-literal-reserved": (
        GIT_POLICY,
        "GET",
        "http://203.0.113.7/",
        (),
        3,
        "blocked-address",
        None,
        "203.0.113.7",
        False,
    ),
    "ip-literal-public": (
        GIT_POLICY,
        "GET",
        "https://93.184.215.14/",
        (),
        0,
        "allowed",
        None,
        "93.184.215.14",
        False,
    ),
    "address-metadata": (
        GIT_POLICY,
        "GET",
        "https://httpbin.org/",
        ("--address", "169.254.169.254"),
        3,
        "blocked-address",
        None,
        "httpbin.org",
        False,
    ),
    "address-in-range": (
        GIT_POLICY,
        "GET",
        "https://httpbin.org/",
        ("--address", "10.1.2.3"),
        0,
        "allowed",
        None,
        "httpbin.org",
        False,
    ),
    "address-one-of-two-private": (
        GIT_POLICY,
        "GET",
        "https://httpbin.org/",
        ("--address", "54.1.2.3", "--address", "10.9.9.9"),
        3,
        "blocked-address",
        None,
        "httpbin.org",
        False,
    ),
    "report-push": (
        REPORT_POLICY,
        "POST",
        "https://github.com/myorg/app/git-receive-pack",
        (),
        0,
        "allowed",
        "blocked-by-rule",
        "github.com",
        True,
    ),
    "report-not-allowed": (
        REPORT_POLICY,
        "GET",
        "https://evil.test/",
        (),
        0,
        "allowed",
        "blocked-by-allowlist",
        None,
        True,
    ),
    "report-denied": (
        REPORT_POLICY,
        "GET",
        "https://uploads.example.com/",
        (),
        0,
        "allowed",
        "blocked-by-denylist",
        "uploads.example.com rules[2]",
        True,
    ),
    "report-port": (
        REPORT_POLICY,
        "GET",
        "http://httpbin.org:9/",
        (),
        0,
        "allowed",
        "blocked-port",
        "httpbin.org",
        True,
    ),
    "report-never-relaxes-address": (
        REPORT_POLICY,
        "GET",
        "https://httpbin.org/",
        ("--address", "127.0.0.1"),
        3,
        "blocked-address",
        None,
        "httpbin.org",
        False,
    ),
    "report-never-relaxes-bad-request": (
        REPORT_POLICY,
        "GET",
        "https://httpbin.org/a\x00b",
        (),
        3,
        "bad-request",
        None,
        None,
        False,
    ),
}


@pytest.mark.parametrize(
    ("text", "method", "url", "extra", "code", "reason", "would_deny", "rule", "run_time"),
    list(EXPLAIN.values()),
    ids=list(EXPLAIN),
)
def test_explain(write, text, method, url, extra, code, reason, would_deny, rule, run_time) -> None:
    path = write(text)
    status, out, err = run("explain", path, url, "--method", method, "--json", *extra)
    assert (status, err) == (code, "")
    result = json.loads(out)
    assert (result["reason"], result["would_deny"], result["rule"]) == (reason, would_deny, rule)
    assert result["allow"] is (code == 0)
    assert (result["run_time"] is not None) is run_time
    assert "?" not in result["path"]
    status, text_out, _ = run("explain", path, url, "--method", method, *extra)
    assert status == code
    assert (f"result   denied: {reason}" in text_out) is (code != 0)
    assert (RUN_TIME in text_out) is run_time


def test_explain_text_names_the_rules(write) -> None:
    path = write(GIT_POLICY)
    _, out, _ = run(
        "explain", path, "https://github.com/myorg/x/git-receive-pack", "--method", "POST"
    )
    assert (
        "matches none of rules[0] GET /myorg/*/info/refs; rules[1] POST /myorg/*/git-upload-pack"
        in out
    )
    _, out, _ = run("explain", path, "https://github.com/myorg/x/info/refs?secret=1")
    assert "secret" not in out and "the query is never matched" in out
    assert "rules[0] GET /myorg/*/info/refs" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["ftp://github.com/"], "scheme must be http or https", id="scheme"),
        pytest.param(["github.com/x"], "scheme must be http or https", id="no-scheme"),
        pytest.param(["https:///x"], "names no host", id="no-host"),
        pytest.param(["https://x.com:99999/"], "Port out of range", id="port"),
        pytest.param(["https://x.com/", "--address", "x.com"], "--address 'x.com'", id="address"),
    ],
)
def test_explain_bad_input_exit_1(write, argv: list[str], expected: str) -> None:
    code, out, err = run("explain", write(GIT_POLICY), *argv)
    assert (code, out) == (1, "")
    assert expected in err and "Fix" in err


def test_explain_invalid_policy_exit_1(write) -> None:
    code, _, err = run("explain", write("version: v1\nmode: x\n"), "https://a.com/")
    assert code == 1 and "mode 'x' is unknown" in err


# --- suggest ------------------------------------------------------------------------------------


def _line(**fields) -> str:
    return json.dumps({"ts": 1.0, "event": "decision", **fields})


def deny(reason: str, host: str, port: int = 443, **extra) -> str:
    return _line(allow=False, reason=reason, host=host, port=port, **extra)


def would(reason: str, host: str, port: int = 443, **extra) -> str:
    return _line(allow=True, reason="allowed", would_deny=reason, host=host, port=port, **extra)


RULE = "blocked-by-rule"
# log lines -> (allowed_domains, allowed_ports or None, rules or None, note fragments)
SUGGEST = {
    "nothing": ([], ([], None, None, [])),
    "allowlist": ([deny("blocked-by-allowlist", "pypi.org")], (["pypi.org"], None, None, [])),
    "normalized-and-deduped": (
        [deny("blocked-by-allowlist", "PyPI.org."), would("blocked-by-allowlist", "pypi.org")],
        (["pypi.org"], None, None, []),
    ),
    "ip-literal": (
        [deny("blocked-by-allowlist", "203.0.113.9")],
        (["203.0.113.9"], None, None, []),
    ),
    "port": (
        [deny("blocked-port", "api.test.org", 8443)],
        (["api.test.org"], [443, 80, 8443], None, []),
    ),
    "rules-exact-paths": (
        [
            deny(RULE, "github.com", method="POST", path="/myorg/app/git-upload-pack"),
            would(RULE, "github.com", method="GET", path="/myorg/app/info/refs"),
            deny(RULE, "github.com", method="GET", path="/myorg/lib/info/refs"),
        ],
        (
            ["github.com"],
            None,
            [
                {
                    "host": "github.com",
                    "methods": ["GET"],
                    "paths": ["/myorg/app/info/refs", "/myorg/lib/info/refs"],
                },
                {
                    "host": "github.com",
                    "methods": ["POST"],
                    "paths": ["/myorg/app/git-upload-pack"],
                },
            ],
            [],
        ),
    ),
    "rule-path-normalized": (
        [deny(RULE, "a.org", method="GET", path="/%7Euser/x")],
        (["a.org"], None, [{"host": "a.org", "methods": ["GET"], "paths": ["/~user/x"]}], []),
    ),
    "rule-ambiguous-paths-not-suggested": (
        [
            deny(RULE, "a.org", method="GET", path="/a%2Fb"),
            deny(RULE, "a.org", method="GET", path="/a/../b"),
            deny(RULE, "a.org", method="GET", path="/a/*"),
            deny(RULE, "a.org", method="GET"),
            deny(RULE, "a.org", method="get", path="/x"),
            deny(RULE, "a.org", method="G\\x00T", path="/x"),
            deny(RULE, "a.org", method="A" * 40, path="/x"),
        ],
        (
            ["a.org"],
            None,
            None,
            ["could be read two ways", "no method or path", "'get' is not a method"],
        ),
    ),
    "never-suggested": (
        [
            deny("blocked-by-denylist", "uploads.example.com"),
            deny("blocked-address", "metadata.test", 80),
            deny("host-mismatch", "github.com"),
            deny("bad-request", "github.com"),
            deny("request-too-large", "github.com"),
            deny("upstream-unresolvable", "nx.example.org"),
            _line(allow=False, reason="unrecognized-protocol", client="1.2.3.4:5"),
        ],
        (
            [],
            None,
            None,
            [
                "blocked-by-denylist for 'uploads.example.com' - it is on denied_domains",
                "blocked-address for 'metadata.test' - a policy cannot and should not allow these",
                "host-mismatch for 'github.com'",
                "bad-request for 'github.com'",
                "request-too-large",
                "upstream-unresolvable for 'nx.example.org' - the upstream failed",
                "unrecognized-protocol for '(no host)'",
            ],
        ),
    ),
    "not-decisions-skipped": (
        [
            "Proxy server listening at http://127.0.0.1:8080",
            "{not json",
            "[1, 2]",
            json.dumps(
                {
                    "event": "request",
                    "allow": False,
                    "reason": "blocked-by-allowlist",
                    "host": "a.org",
                    "port": 443,
                }
            ),
            _line(allow=True, reason="allowed", host="ok.org", port=443),
            _line(allow="no", reason="blocked-by-allowlist", host="b.org", port=443),
            deny("blocked-by-allowlist", "c.org", port=0),
            deny("blocked-by-allowlist", "c.org", port=True),
            deny("blocked-by-allowlist", "bad host"),
            "{" + " " * policy_suggest.MAX_LINE + "}",
        ],
        ([], None, None, ["no valid host and port"]),
    ),
}


@pytest.mark.parametrize(("lines", "expected"), list(SUGGEST.values()), ids=list(SUGGEST))
def test_suggest(write, lines: list[str], expected) -> None:
    domains, ports, rules, notes = expected
    code, out, err = run("suggest", write("\n".join(lines) + "\n", "log.jsonl"))
    assert (code, err) == (0, "")
    document = yaml.safe_load(out)
    assert document.get("allowed_domains", []) == domains
    assert document.get("allowed_ports") == ports
    assert document.get("rules") == rules
    for note in notes:
        assert re.search(rf"^# not suggested: .*{re.escape(note)}", out, re.MULTILINE), out
    assert "REVIEW BEFORE USE" in out.splitlines()[1]
    assert policy_tool.check_text(out, "suggested").policy is not None


def test_suggested_policy_allows_what_was_seen(write) -> None:
    """Under the suggested policy, explain (the proxy's core) allows every suggested request."""
    seen = [
        ("GET", "https://pypi.org/simple/"),
        ("GET", "https://api.test.org:8443/v1"),
        ("GET", "https://github.com/myorg/app/info/refs"),
        ("POST", "https://github.com/myorg/app/git-upload-pack"),
    ]
    log = [
        deny("blocked-by-allowlist", "pypi.org"),
        deny("blocked-port", "api.test.org", 8443),
        deny(RULE, "github.com", method="GET", path="/myorg/app/info/refs"),
        deny(RULE, "github.com", method="POST", path="/myorg/app/git-upload-pack"),
    ]
    suggested = parse_policy(policy_suggest.suggest(log, "log"), "suggested")
    for method, url in seen:
        result = policy_explain.explain(suggested, url, method)
        assert result.final.allow and result.final.would_deny is None, (method, url)
    # ... and nothing more for the host held to rules: push stays denied.
    push = policy_explain.explain(
        suggested, "https://github.com/myorg/app/git-receive-pack", "POST"
    )
    assert push.final.reason == "blocked-by-rule"


WILDCARDS = {
    "three-siblings": (
        ["a.cdn.example.org", "b.cdn.example.org", "c.cdn.example.org", "x.org"],
        ["x.org", "*.cdn.example.org"],
    ),
    "two-siblings": (
        ["a.cdn.example.org", "b.cdn.example.org"],
        ["a.cdn.example.org", "b.cdn.example.org"],
    ),
    "not-over-private-suffix": (
        ["a.github.io", "b.github.io", "c.github.io"],
        ["a.github.io", "b.github.io", "c.github.io"],
    ),
    "not-over-icann-suffix": (["a.co.uk", "b.co.uk", "c.co.uk"], ["a.co.uk", "b.co.uk", "c.co.uk"]),
    "not-over-tld": (["a.org", "b.org", "c.org"], ["a.org", "b.org", "c.org"]),
    "ips-never": (["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
}


@pytest.mark.parametrize(("hosts", "expected"), list(WILDCARDS.values()), ids=list(WILDCARDS))
def test_suggest_wildcards_only_when_asked(write, hosts: list[str], expected: list[str]) -> None:
    log = write("\n".join(deny("blocked-by-allowlist", h) for h in hosts) + "\n", "log.jsonl")
    assert yaml.safe_load(run("suggest", log)[1])["allowed_domains"] == sorted(hosts)
    assert yaml.safe_load(run("suggest", "--wildcards", log)[1])["allowed_domains"] == expected


def test_suggest_extends_a_base_policy(write) -> None:
    base = write(REPORT_POLICY, "base.yaml")
    log = write(
        "\n".join(
            [
                would("blocked-by-allowlist", "pypi.org"),
                would("blocked-by-allowlist", "www.example.com"),  # the base admits it
                would(RULE, "github.com", method="POST", path="/myorg/app/git-receive-pack"),
                would("blocked-by-denylist", "uploads.example.com"),
            ]
        )
        + "\n",
        "log.jsonl",
    )
    code, out, _ = run("suggest", "--base", base, log)
    assert code == 0
    document = yaml.safe_load(out)
    original = yaml.safe_load(REPORT_POLICY)
    assert document["allowed_domains"] == [*original["allowed_domains"], "pypi.org"]
    assert document["denied_domains"] == original["denied_domains"]
    assert document["rules"] == [
        *original["rules"],
        {"host": "github.com", "methods": ["POST"], "paths": ["/myorg/app/git-receive-pack"]},
    ]
    assert document["mode"] == "report"  # a person switches it to enforce after review


def test_suggest_errors(write) -> None:
    assert run("suggest", "/nonexistent/log")[0] == 1
    code, _, err = run("suggest", "--base", write("version: v9\n"), write("", "log"))
    assert code == 1 and "unknown version" in err


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "explain", "suggest"])
def test_help_shows_the_syntax(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "addons.policy_tool", command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0
    assert f"usage: auth-proxy-policy {command}" in result.stdout


def test_console_script_is_declared() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'auth-proxy-policy = "addons.policy_tool:main"' in text


def test_module_exit_status_through_a_real_process(write) -> None:
    path = write(GIT_POLICY)
    command = [sys.executable, "-m", "addons.policy_tool"]
    denied = subprocess.run(
        [*command, "explain", path, "https://evil.test/"], capture_output=True, timeout=60, cwd=REPO
    )
    assert denied.returncode == 3
    assert (
        subprocess.run(
            [*command, "check", path], capture_output=True, timeout=60, cwd=REPO
        ).returncode
        == 0
    )
