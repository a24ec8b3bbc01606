"""auth-proxy-policy against the real proxy, in both runtimes: `explain` and the proxy agree on a
table of requests (allow or deny, the reason, would_deny, the entry or rules named), and
`suggest` turns a recorded log into a policy under which replaying the requests is allowed."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from addons import policy_tool
from tests.support.proxy import REPO, Proxy
from tests.support.testnet import LoopbackNet

# What the testnet's hosts file says each name resolves to (tests/support/testnet.py).
ADDRESSES = {
    "upstream.test": "127.0.0.1",
    "www.wild.test": "127.0.0.1",
    "deep.a.wild.test": "127.0.0.1",
    "wild.test": "127.0.0.1",
    "other.test": "127.0.0.1",
    "private.test": "127.0.0.2",
}

RULES = """\
denied_domains: [deep.a.wild.test]
rules:
  - host: upstream.test
    methods: [GET]
    paths: ["/echo", "/git/*/info/refs"]
  - host: upstream.test
    methods: [POST]
    paths: ["/git/*/git-upload-pack"]
"""


def policy_text(testnet: LoopbackNet, report: bool = False) -> str:
    text = testnet.policy_text("upstream.test", "*.wild.test", "private.test", "127.0.0.1")
    return text + RULES + ("mode: report\n" if report else "")


def tool(*args: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "addons.policy_tool", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


def explain(policy: Path, method: str, url: str, with_addresses: bool = True) -> dict:
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    extra = ["--address", ADDRESSES[host]] if with_addresses and host in ADDRESSES else []
    # In-process (the same main() the command runs): the table makes over a hundred calls.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = policy_tool.main(["explain", str(policy), url, "--method", method, "--json", *extra])
    out, err = out.getvalue(), ""
    assert code in (0, 3), err
    result = json.loads(out)
    assert result["allow"] is (code == 0)
    return result


def through_proxy(proxy: Proxy, method: str, url: str) -> tuple[str, dict | None]:
    """The proxy's reason for one request, and the last decision line it logged for it."""
    before = len(proxy.events("decision"))
    body = ("--data", "x") if method == "POST" else ()
    status, headers, _ = proxy.status_and_headers("-X", method, *body, url)
    assert status != 0, proxy.logs()[-3000:]
    reason = headers.get("x-proxy-error", "allowed")
    lines = proxy.events("decision")[before:]
    return reason, (lines[-1] if lines else None)


# (method, url) with {tls} and {plain} for the upstream's ports
CASES = {
    "refs-query-not-matched": (
        "GET",
        "https://upstream.test:{tls}/git/r/info/refs?service=git-receive-pack",
    ),
    "upload-pack": ("POST", "https://upstream.test:{tls}/git/r/git-upload-pack"),
    "receive-pack": ("POST", "https://upstream.test:{tls}/git/r/git-receive-pack"),
    "unlisted-path": ("GET", "https://upstream.test:{tls}/other"),
    "wrong-method": ("PUT", "https://upstream.test:{tls}/echo"),
    "encoded-slash": ("GET", "https://upstream.test:{tls}/git/a%2Fb/info/refs"),
    "double-slash": ("GET", "https://upstream.test:{tls}/git//info/refs"),
    "plain-http-allowed": ("GET", "http://upstream.test:{plain}/echo"),
    "plain-http-rule": ("POST", "http://upstream.test:{plain}/git/r/git-receive-pack"),
    "wildcard-no-rules": ("DELETE", "https://www.wild.test:{tls}/anything"),
    "denied-under-wildcard": ("GET", "https://deep.a.wild.test:{tls}/"),
    "apex-not-under-wildcard": ("GET", "https://wild.test:{tls}/"),
    "not-allowed": ("GET", "https://other.test:{tls}/"),
    "plain-not-allowed": ("GET", "http://other.test:{plain}/"),
    "port": ("GET", "https://upstream.test:1/echo"),
    "private-address": ("GET", "https://private.test:{tls}/"),
    "ip-literal": ("GET", "https://127.0.0.1:{tls}/x"),
}
# Let through by report mode, but to a port nothing listens on: a fault, not a decision to compare.
NOT_IN_REPORT = {"port"}


@pytest.mark.parametrize("report", [False, True], ids=["enforce", "report"])
def test_explain_and_the_proxy_agree(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, report: bool
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(testnet, report))
    proxy = make_proxy(policy)
    for name, (method, template) in CASES.items():
        if report and name in NOT_IN_REPORT:
            continue
        url = template.format(tls=testnet.tls_port, plain=testnet.plain_port)
        told = explain(policy, method, url)
        reason, line = through_proxy(proxy, method, url)
        assert reason == told["reason"], (name, reason, told)
        if not told["allow"]:
            assert line is not None and line["reason"] == reason, name
            assert line.get("rule") == told["rule"], name
        if told["would_deny"]:
            assert line is not None and line["would_deny"] == told["would_deny"], name
        # Without addresses explain names the one check it cannot make, and never contradicts.
        offline = explain(policy, method, url, with_addresses=False)
        if offline["run_time"]:
            assert reason in ("allowed", "blocked-address"), name
        else:
            assert offline["reason"] == reason, name


def _replay(proxy: Proxy, requests) -> list[str]:
    return [through_proxy(proxy, method, url)[0] for method, url in requests]


def test_suggest_from_report_mode_allows_the_replay(
    make_proxy, testnet: LoopbackNet, tmp_path: Path
) -> None:
    """report -> suggest --base -> review -> enforce: what ran in report mode still runs."""
    tls, plain = testnet.tls_port, testnet.plain_port
    base = tmp_path / "base.yaml"
    base.write_text(policy_text(testnet, report=True))
    requests = [
        ("GET", f"https://upstream.test:{tls}/git/r/info/refs"),  # allowed by the rules
        ("POST", f"https://upstream.test:{tls}/git/r/git-receive-pack"),
        ("GET", f"https://upstream.test:{tls}/extra/path?token=secret"),
        ("GET", f"https://www.wild.test:{tls}/x"),
        ("GET", f"https://other.test:{tls}/y"),
        ("OPTIONS", f"http://other.test:{plain}/z"),
        ("GET", f"https://deep.a.wild.test:{tls}/"),
    ]
    recording = make_proxy(base)
    assert set(_replay(recording, requests)) == {"allowed"}
    assert _replay(recording, [("GET", f"https://private.test:{tls}/")]) == ["blocked-address"]
    log = tmp_path / "proxy.log"
    log.write_text(recording.process.stdout())

    code, proposed, err = tool("suggest", "--base", str(base), str(log))
    assert code == 0, err
    assert "secret" not in proposed
    assert "not suggested: blocked-address for 'private.test'" in proposed
    assert "not suggested: blocked-by-denylist for 'deep.a.wild.test'" in proposed
    document = yaml.safe_load(proposed)
    assert "other.test" in document["allowed_domains"]
    assert {"host": "upstream.test", "methods": ["GET"], "paths": ["/extra/path"]} in document[
        "rules"
    ]
    # The review: deny-listed hosts stay denied, so their request is dropped; then enforce.
    reviewed = tmp_path / "reviewed.yaml"
    reviewed.write_text(proposed.replace("mode: report", "mode: enforce"))
    replay = requests[:-1]
    assert tool("check", str(reviewed))[0] == 0
    for method, url in replay:
        told = explain(reviewed, method, url)
        assert (told["allow"], told["would_deny"]) == (True, None), (method, url)

    enforcing = make_proxy(reviewed)
    assert set(_replay(enforcing, replay)) == {"allowed"}
    # Only what was seen: the rules still refuse what nobody asked for.
    unseen = [
        ("GET", f"https://upstream.test:{tls}/extra/other"),
        ("POST", f"https://upstream.test:{tls}/extra/path"),
        ("GET", f"https://deep.a.wild.test:{tls}/"),
        ("GET", f"https://private.test:{tls}/"),
    ]
    expected = ["blocked-by-rule", "blocked-by-rule", "blocked-by-denylist", "blocked-address"]
    assert _replay(enforcing, unseen) == expected
    assert [explain(reviewed, m, u)["reason"] for m, u in unseen] == expected


def test_suggest_from_denials_alone(make_proxy, testnet: LoopbackNet, tmp_path: Path) -> None:
    """An enforcing proxy's denials, suggested with no base: a standalone policy that allows
    them (with the environment's allow_ranges added, as a person merging it would)."""
    tls, plain = testnet.tls_port, testnet.plain_port
    enforced = tmp_path / "enforced.yaml"
    enforced.write_text(policy_text(testnet))
    denied = [
        ("POST", f"https://upstream.test:{tls}/git/r/git-receive-pack"),
        ("GET", f"https://other.test:{tls}/a"),
        ("GET", f"http://other.test:{plain}/b"),
    ]
    recording = make_proxy(enforced)
    assert "allowed" not in _replay(recording, denied)
    log = tmp_path / "proxy.log"
    log.write_text(recording.process.stdout())

    code, proposed, err = tool("suggest", str(log))
    assert code == 0, err
    document = yaml.safe_load(proposed)
    assert sorted(document["allowed_domains"]) == ["other.test", "upstream.test"]
    assert document["rules"] == [
        {"host": "upstream.test", "methods": ["POST"], "paths": ["/git/r/git-receive-pack"]}
    ]
    standalone = tmp_path / "standalone.yaml"
    standalone.write_text(proposed)
    # Offline, the address check is left for run time: allowed by everything the policy says.
    for method, url in denied:
        told = explain(standalone, method, url, with_addresses=False)
        assert told["allow"] and told["run_time"], (method, url)
    document["allow_ranges"] = ["127.0.0.1/32"]
    merged = tmp_path / "merged.yaml"
    merged.write_text(yaml.safe_dump(document))
    assert set(_replay(make_proxy(merged), denied)) == {"allowed"}
