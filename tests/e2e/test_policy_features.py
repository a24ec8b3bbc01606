"""Issue 15, end to end: the policy's rules, deny list, report mode and agent-readable denials,
with real clients in the workload (git, curl, Python) against the e2e upstream.

The module runs the pod under its own policies: each is written into the sidecar's ConfigMap
volume the way the kubelet updates one (a new payload folder and an atomic ``..data`` swap,
tests/e2e/conftest.py `swap_projection`), and a test goes on once the sidecar's policy-reload
line says the new policy is in force. The policy the pod started with is put back at the end
of the module (and after each report-mode test), whatever the outcome.

The upstream's git repository is served by dulwich with both services, upload-pack (clone,
fetch) and receive-pack (push), and no authentication: so only the proxy's rules can stop a
push, and in report mode the same push goes through.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest
import yaml
from dulwich.repo import Repo

from k8s import constants as c
from tests.e2e.conftest import DENYLISTED_NAME, WILDCARD_NAME, Sandbox, info, step
from tests.e2e.upstream import DENIED_NAME, UPSTREAM_ADDR, UPSTREAM_NAME

pytestmark = pytest.mark.containers

REPO_URL = f"https://{UPSTREAM_NAME}/repo.git"
PROXY = f"http://127.0.0.1:{c.PROXY_PORT}"
# A read-only git remote: the advertisement (GET info/refs, whatever its ?service= query: the
# query is never matched) and upload-pack (clone, fetch). git-receive-pack (push) matches no
# rule. /get stays open for plain requests.
RULES = [
    {"host": UPSTREAM_NAME, "methods": ["GET"], "paths": ["/repo.git/info/refs", "/get"]},
    {"host": UPSTREAM_NAME, "methods": ["POST"], "paths": ["/repo.git/git-upload-pack"]},
]
FEATURES = {
    "version": "v1",
    "mode": "enforce",
    "allowed_domains": [UPSTREAM_NAME, "*.example.test"],
    "denied_domains": [DENYLISTED_NAME],
    "allowed_ports": [443, 80],
    # The upstream is a private test address: admitted by exactly this range, in every policy.
    "allow_ranges": [f"{UPSTREAM_ADDR}/32"],
    "rules": RULES,
}
# Report mode with an allowlist that does not name the upstream at all.
REPORT_ALLOWLIST = {
    "version": "v1",
    "mode": "report",
    "allowed_domains": [WILDCARD_NAME],
    "allowed_ports": [443],
    "allow_ranges": [f"{UPSTREAM_ADDR}/32"],
}
REPORT_RULES = FEATURES | {"mode": "report"}


def text(policy: dict) -> str:
    return yaml.safe_dump(policy, sort_keys=False)


@pytest.fixture(scope="module")
def features(sandbox: Sandbox) -> Iterator[dict]:
    step("policy: rules (read-only git), a deny list under a wildcard; enforce")
    for line in text(FEATURES).strip().splitlines():
        info(f"    {line}")
    with sandbox.policy(text(FEATURES)) as reload:
        yield reload
    step("the pod's own policy is back")


class Since:
    """The sidecar's JSON lines written after this point."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.start = len(sandbox.sidecar_events())

    def events(self, event: str, **match: object) -> list[dict]:
        return [
            e
            for e in self.sandbox.sidecar_events()[self.start :]
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]


def clone(sandbox: Sandbox) -> str:
    """A fresh clone of the upstream repository in the workload; its folder."""
    folder = sandbox.exec("mktemp", "-d").stdout.strip()
    proc = sandbox.exec("git", "clone", "-q", REPO_URL, f"{folder}/repo", timeout=90)
    assert proc.returncode == 0, proc.stderr
    return f"{folder}/repo"


def commit_and_push(sandbox: Sandbox, repo: str, branch: str):
    """A commit on a new branch, pushed: each test its own branch, so none depends on another's
    push (git would refuse a non-fast-forward itself, before any request)."""
    script = (
        f"cd {shlex.quote(repo)} && echo change >> README && "
        "git -c user.name=e2e -c user.email=e2e@example.invalid commit -qam 'e2e push' && "
        f"git push origin HEAD:refs/heads/{branch}"
    )
    return sandbox.exec("sh", "-c", script, timeout=90)


def upstream_refs(sandbox: Sandbox) -> dict[bytes, bytes]:
    """The upstream repository's branches and their commits, read on the node."""
    with Repo(str(sandbox.upstream.repo)) as repo:
        return repo.refs.as_dict(b"refs/heads")


def readyz(sandbox: Sandbox) -> dict:
    code = (
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{c.HEALTH_PORT}/readyz', timeout=10)"
        ".read().decode())"
    )
    return sandbox.docker.exec_json(sandbox.sidecar, "python3", "-c", code)


def curl_connect(sandbox: Sandbox, url: str):
    """curl through the proxy: stdout is the CONNECT answer's code, stderr the verbose dump."""
    return sandbox.exec("curl", "-sv", "-m", "20", "-o", "/dev/null", "-w", "%{http_connect}", url)


def test_git_clone_and_fetch_pass_the_read_only_rules(sandbox: Sandbox, features: dict) -> None:
    step(f"git clone and git fetch {REPO_URL} under the read-only rules")
    since = Since(sandbox)
    repo = clone(sandbox)
    head = sandbox.exec("git", "-C", repo, "rev-parse", "HEAD").stdout.strip()
    assert head == sandbox.upstream.head
    fetch = sandbox.exec("git", "-C", repo, "fetch", "-v", "origin", timeout=90)
    info(f"git fetch: {fetch.stderr.strip().splitlines()[-1:]}")
    assert fetch.returncode == 0, fetch.stderr
    forwarded = {(r["method"], r["path"], r["status"]) for r in since.events("request")}
    info(f"forwarded: {sorted(forwarded)}")
    assert ("GET", "/repo.git/info/refs", 200) in forwarded
    assert ("POST", "/repo.git/git-upload-pack", 200) in forwarded
    refused = since.events("decision", allow=False)
    assert refused == [], refused


def test_git_push_is_denied_by_rule(sandbox: Sandbox, features: dict) -> None:
    step(f"git push to {REPO_URL}: POST git-receive-pack matches no rule")
    repo = clone(sandbox)
    refs = upstream_refs(sandbox)
    since = Since(sandbox)
    push = commit_and_push(sandbox, repo, "e2e-denied-push")
    info("git: " + " | ".join(push.stderr.strip().splitlines()))
    assert push.returncode != 0
    # git's own words for the proxy's answer to the POST.
    assert "HTTP 403" in push.stderr, push.stderr
    denied = since.events("decision", reason="blocked-by-rule")
    info(json.dumps(denied[0]) if denied else "(no blocked-by-rule decision line)")
    assert denied, since.events("decision")
    line = denied[0]
    assert line["allow"] is False and line["host"] == UPSTREAM_NAME and line["port"] == 443
    assert (line["method"], line["path"]) == ("POST", "/repo.git/git-receive-pack"), line
    assert line["rule"] == "rules[0],rules[1]", line
    # The advertisement was let through (its query is not matched): the POST is what the rules
    # refused, and the upstream never saw it.
    forwarded = {(r["method"], r["path"], r["status"]) for r in since.events("request")}
    assert ("GET", "/repo.git/info/refs", 200) in forwarded, forwarded
    assert not any(path.endswith("git-receive-pack") for _, path, _ in forwarded), forwarded
    assert upstream_refs(sandbox) == refs


def test_a_denylisted_name_under_an_allowed_wildcard_is_denied(
    sandbox: Sandbox, features: dict
) -> None:
    step(f"{DENYLISTED_NAME} (denied) and {WILDCARD_NAME}, both under *.example.test")
    since = Since(sandbox)
    proc = curl_connect(sandbox, f"https://{DENYLISTED_NAME}/get")
    info(f"{DENYLISTED_NAME}: CONNECT answered {proc.stdout.strip()}")
    assert proc.stdout.strip() == "403"
    assert "< x-proxy-error: blocked-by-denylist" in proc.stderr.lower(), proc.stderr
    (line,) = since.events("decision", host=DENYLISTED_NAME)
    info(json.dumps(line))
    assert (line["allow"], line["reason"], line["rule"]) == (
        False,
        "blocked-by-denylist",
        DENYLISTED_NAME,
    )
    # Control: its sibling resolves to the same upstream address and is let through by the
    # wildcard, so the deny list alone stopped the first. (The upstream's certificate names
    # httpbin.org only, so what follows the CONNECT fails; the proxy's decision is the point.)
    proc = curl_connect(sandbox, f"https://{WILDCARD_NAME}/get")
    info(f"{WILDCARD_NAME}: CONNECT answered {proc.stdout.strip()}")
    assert proc.stdout.strip() == "200", proc.stderr
    allowed = since.events("decision", host=WILDCARD_NAME)
    assert allowed and allowed[0]["allow"] is True, allowed
    assert allowed[0]["rule"] == "*.example.test", allowed


def test_an_agent_gets_the_json_denial(sandbox: Sandbox, features: dict) -> None:
    step("an agent-style client (Accept: application/json) is told what was denied and why")
    code = (
        "import json, urllib.error, urllib.request\n"
        "req = urllib.request.Request(\n"
        f"    'https://{UPSTREAM_NAME}/delete?token=s3cret', method='DELETE',\n"
        "    headers={'Accept': 'application/json'})\n"
        "try:\n"
        "    urllib.request.urlopen(req, timeout=20)\n"
        "    print(json.dumps({'status': 200}))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(json.dumps({'status': e.code, 'type': e.headers.get('Content-Type'),\n"
        "        'error': e.headers.get('X-Proxy-Error'), 'body': e.read().decode()}))\n"
    )
    proc = sandbox.exec("python3", "-c", code)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    info(f"urllib: HTTP {got['status']} {got.get('type')}, X-Proxy-Error {got.get('error')}")
    assert (got["status"], got["error"]) == (403, "blocked-by-rule"), got
    assert got["type"].startswith("application/json"), got
    assert "s3cret" not in got["body"]
    body = json.loads(got["body"])
    info(f"body: {json.dumps(body)}")
    assert {k: body[k] for k in ("reason", "host", "port", "method", "path")} == {
        "reason": "blocked-by-rule",
        "host": UPSTREAM_NAME,
        "port": 443,
        "method": "DELETE",
        "path": "/delete",
    }
    assert body["rule"] == "rules[0],rules[1]"
    # The message says what this host does allow.
    for allowed in ("GET", "/repo.git/info/refs", "POST", "/repo.git/git-upload-pack"):
        assert allowed in body["message"], body["message"]

    step(f"plain HTTP through the proxy to {DENIED_NAME} (not allowed): JSON, then prose")
    url = f"http://{DENIED_NAME}/upload?key=s3cret"
    proc = sandbox.exec(
        "curl", "-s", "-m", "20", "-x", PROXY, "-H", "Accept: application/json",
        "-w", "\n%{http_code} %{content_type}", url,
    )  # fmt: skip
    body_text, _, status = proc.stdout.rpartition("\n")
    assert status.split()[0] == "403" and status.split()[1].startswith("application/json")
    assert "s3cret" not in body_text
    body = json.loads(body_text)
    info(f"curl: {status}: {json.dumps(body)}")
    assert {k: body[k] for k in ("reason", "host", "port", "method", "path")} == {
        "reason": "blocked-by-allowlist",
        "host": DENIED_NAME,
        "port": 80,
        "method": "GET",
        "path": "/upload",
    }
    assert "allowlist" in body["message"] and "operator" in body["message"]
    prose = sandbox.exec("curl", "-s", "-m", "20", "-x", PROXY, url).stdout
    info(f"without Accept: {prose.strip()}")
    assert prose.startswith("auth-proxy denied") and "not on this sandbox's allowlist" in prose
    assert "s3cret" not in prose


def test_report_mode_lets_a_host_not_allowed_through(sandbox: Sandbox, features: dict) -> None:
    step(f"report mode, an allowlist without {UPSTREAM_NAME}: let through, logged would_deny")
    with sandbox.policy(text(REPORT_ALLOWLIST)) as reload:
        assert reload["mode"] == "report"
        ready = readyz(sandbox)
        info(f"/readyz: mode {ready.get('mode')}, warning: {ready.get('warning')}")
        assert ready["ready"] is True and ready["mode"] == "report" and ready["warning"]
        since = Since(sandbox)
        proc = sandbox.exec(
            "curl", "-s", "-m", "20", "-w", "\n%{http_code}", f"https://{UPSTREAM_NAME}/get"
        )
        body, _, status = proc.stdout.rpartition("\n")
        info(f"curl https://{UPSTREAM_NAME}/get -> HTTP {status}")
        assert status == "200", proc.stderr
        assert json.loads(body)["headers"]["Host"] == UPSTREAM_NAME
        # The CONNECT, and the request in the tunnel (decided again under the policy in force).
        lines = since.events("decision", host=UPSTREAM_NAME)
        for line in lines:
            info(json.dumps(line))
        assert [line.get("method") for line in lines][:1] == ["CONNECT"], lines
        assert {(line["allow"], line["reason"], line.get("would_deny")) for line in lines} == {
            (True, "allowed", "blocked-by-allowlist")
        }, lines

        step(f"report mode never relaxes the address block: {DENIED_NAME} -> a private address")
        proc = curl_connect(sandbox, f"https://{DENIED_NAME}/")
        assert proc.stdout.strip() == "403"
        assert "< x-proxy-error: blocked-address" in proc.stderr.lower(), proc.stderr
        (line,) = since.events("decision", host=DENIED_NAME)
        info(json.dumps(line))
        assert line["allow"] is False and "would_deny" not in line, line
    ready = readyz(sandbox)
    assert ready["mode"] == "enforce" and "warning" not in ready, ready


def test_report_mode_lets_the_push_through(sandbox: Sandbox, features: dict) -> None:
    step("the same rules in report mode: git push goes through, logged would_deny")
    repo = clone(sandbox)
    refs = upstream_refs(sandbox)
    with sandbox.policy(text(REPORT_RULES)):
        since = Since(sandbox)
        push = commit_and_push(sandbox, repo, "e2e-reported-push")
        info("git: " + " | ".join(push.stderr.strip().splitlines()[-2:]))
        assert push.returncode == 0, push.stderr
        lines = since.events("decision", host=UPSTREAM_NAME, path="/repo.git/git-receive-pack")
        info(json.dumps(lines[0]) if lines else "(no decision line for the push)")
        assert lines and lines[0]["allow"] is True, since.events("decision")
        assert (lines[0]["reason"], lines[0]["would_deny"]) == ("allowed", "blocked-by-rule")
        assert lines[0]["method"] == "POST"
    pushed = sandbox.exec("git", "-C", repo, "rev-parse", "HEAD").stdout.strip().encode()
    assert upstream_refs(sandbox) == refs | {b"e2e-reported-push": pushed}
