"""Issue 5: a command in the sandbox goes workload -> sidecar -> upstream and back, TLS
intercepted by our CA, while other domains are refused. See conftest.py for the setup."""

from __future__ import annotations

import copy
import json

import pytest
from cryptography import x509

from k8s import constants as c
from tests.e2e.conftest import POD_NAME, Sandbox, info, step
from tests.e2e.upstream import UPSTREAM_NAME
from tests.support.podrunner import PodFailed, UnsupportedPodSpec, check_pod

pytestmark = pytest.mark.containers

URL = f"https://{UPSTREAM_NAME}/get"
DENIED = "https://example.com/"


def http_body_and_status(stdout: str) -> tuple[dict, int]:
    body, _, status = stdout.rpartition("\n")
    return json.loads(body), int(status)


def test_the_runner_refuses_what_it_cannot_honour(sandbox: Sandbox) -> None:
    step("the runner checks every pod spec field: the real pod passes, unknown fields fail")
    known = {c.CA_SECRET_NAME}, {c.POLICY_CONFIGMAP_NAME}
    assert check_pod(sandbox.pod, *known) == []
    bad = copy.deepcopy(sandbox.pod)
    bad["spec"]["hostNetwork"] = True
    bad["spec"]["initContainers"][0]["securityContext"]["procMount"] = "Unmasked"
    bad["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "x"}}]
    bad["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = "ca.crt"
    bad["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
    bad["spec"]["volumes"][0]["secret"]["secretName"] = "missing"
    with pytest.raises(UnsupportedPodSpec) as err:
        sandbox.runner.__class__(
            sandbox.docker.engine.docker, sandbox.runner.workdir / "refused",
            name_prefix="never-started", pause_image="none",
            secrets=list(sandbox.runner.secrets.values()),
            config_maps=list(sandbox.runner.config_maps.values()),
        ).start(bad)  # fmt: skip
    problems = "\n".join(err.value.problems)
    for needle in ("hostNetwork", "procMount", "envFrom", "subPath", "exec", "missing"):
        assert needle in problems, problems
    info(f"refused, naming {len(err.value.problems)} fields:")
    for problem in err.value.problems:
        info(f"  - {problem}")


def test_without_net_admin_the_workload_never_starts(sandbox: Sandbox) -> None:
    step("the same pod, its egress-lock stripped of NET_ADMIN: it fails, nothing else starts")
    bad = copy.deepcopy(sandbox.pod)
    del bad["spec"]["initContainers"][0]["securityContext"]["capabilities"]["add"]
    runner = sandbox.runner
    refused = runner.__class__(
        sandbox.docker.engine.docker, runner.workdir / "no-net-admin",
        name_prefix=f"{runner.name_prefix}-nocap", labels=runner.labels,
        secrets=list(runner.secrets.values()), config_maps=list(runner.config_maps.values()),
        pause_image=runner.pause_image, log=info,
    )  # fmt: skip
    try:
        with pytest.raises(
            PodFailed, match=rf"init container {c.EGRESS_INIT_CONTAINER} exited [1-9]"
        ) as err:
            refused.start(bad)
        info(f"refused: {str(err.value).splitlines()[0]}")
        assert "NET_ADMIN" in str(err.value), err.value
        created = [
            n for n in refused._created if not n.endswith(("-infra", f"-{c.EGRESS_INIT_CONTAINER}"))
        ]
        assert created == [], created
        assert c.WORKLOAD_CONTAINER not in refused.containers
    finally:
        refused.stop()


def test_the_pod_runs_as_its_spec_says(sandbox: Sandbox) -> None:
    step("the pod as started: order, users, mounts, read-only roots")
    runner = sandbox.runner
    # The native sidecar's startup probe passed before the workload was created.
    passed = next(
        e for e in runner.events if e.startswith(f"startup probe of {c.SIDECAR_CONTAINER} passed")
    )
    starts = [e for e in runner.events if e.startswith("starting ")]
    assert starts[0].startswith(f"starting init container {c.EGRESS_INIT_CONTAINER}"), starts
    assert starts[1].startswith(f"starting init container {c.TRUST_INIT_CONTAINER}"), starts
    assert starts[2].startswith(f"starting native sidecar {c.SIDECAR_CONTAINER}"), starts
    assert runner.events.index(passed) < runner.events.index(starts[3]), runner.events
    probe_ok = max(r.at for r in runner.probe_log if r.kind == "startup" and 200 <= r.status < 400)
    assert probe_ok > 0
    docker = sandbox.docker
    # The egress lock ran first, as root with NET_ADMIN alone, in the pod's network namespace.
    assert runner.containers[c.EGRESS_INIT_CONTAINER].exit_code == 0
    lock = json.loads(docker("inspect", runner.docker_name(c.EGRESS_INIT_CONTAINER)).stdout)[0]
    assert lock["HostConfig"]["CapDrop"] == ["ALL"]
    assert [x.removeprefix("CAP_") for x in lock["HostConfig"]["CapAdd"]] == ["NET_ADMIN"]
    assert lock["Config"]["User"] == "0:0" and lock["HostConfig"]["ReadonlyRootfs"] is True
    assert lock["HostConfig"]["NetworkMode"] == f"container:{runner.infra_id}"
    state = json.loads(docker("inspect", sandbox.workload, sandbox.sidecar).stdout)
    by_name = {s["Name"].lstrip("/"): s for s in state}
    wl, sc = by_name[sandbox.workload], by_name[sandbox.sidecar]
    assert wl["Created"] > sc["State"]["StartedAt"]
    for s in (wl, sc):
        assert s["HostConfig"]["NetworkMode"] == f"container:{runner.infra_id}"
        assert s["HostConfig"]["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in s["HostConfig"]["SecurityOpt"]
    assert sc["HostConfig"]["ReadonlyRootfs"] is True
    assert wl["HostConfig"]["ReadonlyRootfs"] is False  # workload_read_only_root_filesystem
    assert sc["Config"]["User"] == f"{c.SIDECAR_UID}:{c.SIDECAR_GID}"
    assert wl["Config"]["User"] == f"{c.EXECUTOR_UID}:{c.EXECUTOR_GID}"
    assert sc["HostConfig"]["Memory"] == 128 * 2**20 and sc["HostConfig"]["NanoCpus"] == 25 * 10**7

    ident = sandbox.exec("id").stdout.strip()
    assert ident.startswith(f"uid={c.EXECUTOR_UID}") and str(c.SIDECAR_GID) in ident, ident
    # The workload's CA volume holds the certificate alone, read-only; the key is nowhere.
    listing = sandbox.exec("sh", "-c", f"ls -AR {c.WORKLOAD_CA_DIR}").stdout
    info(f"{c.WORKLOAD_CA_DIR}: {' '.join(listing.split())}")
    assert "ca.crt" in listing and "tls.key" not in listing and "tls.crt" not in listing
    assert sandbox.exec("sh", "-c", f"echo x > {c.WORKLOAD_CA_DIR}/x").returncode != 0
    found = sandbox.exec("sh", "-c", "grep -rl 'PRIVATE KEY' /etc /var/lib /home 2>/dev/null")
    assert found.stdout.strip() == "", found.stdout
    ca_pem = (sandbox.ca_dir / "ca.crt").read_text()
    assert sandbox.exec("cat", c.WORKLOAD_CA_CERT).stdout == ca_pem
    env = dict(
        line.split("=", 1) for line in sandbox.exec("env").stdout.splitlines() if "=" in line
    )
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:8080" and env["SANDBOX_REQUEST_ID"] == "e2e"
    assert env["CURL_CA_BUNDLE"] == c.CA_BUNDLE

    sidecar_ls = docker.exec(sandbox.sidecar, "ls", c.SIDECAR_CA_DIR, c.POLICY_DIR).stdout
    assert "tls.key" in sidecar_ls and "policy.yaml" in sidecar_ls, sidecar_ls
    assert docker.exec(sandbox.sidecar, "touch", "/opt/x").returncode != 0
    assert "using the CA from /certs" in docker.logs(sandbox.sidecar)


def test_curl_reaches_httpbin_through_the_sidecar(sandbox: Sandbox) -> None:
    step(f"curl -s {URL} in the workload (no -k, no --cacert, no -x)")
    proc = sandbox.exec("curl", "-s", "-w", "\n%{http_code}", URL)
    assert proc.returncode == 0, proc.stderr
    body, status = http_body_and_status(proc.stdout)
    info(f"HTTP {status}: {json.dumps(body)[:200]}")
    assert status == 200
    assert body["url"] == URL and body["headers"]["Host"] == UPSTREAM_NAME


def test_python_urllib_and_requests(sandbox: Sandbox) -> None:
    step("python3 urllib and requests in the workload")
    urllib_code = (
        "import json, urllib.request\n"
        f"r = urllib.request.urlopen({URL!r}, timeout=20)\n"
        "print(r.status, json.load(r)['headers']['Host'])"
    )
    proc = sandbox.exec("python3", "-c", urllib_code)
    assert proc.stdout.split() == ["200", UPSTREAM_NAME], proc.stdout + proc.stderr
    requests_code = (
        "import requests\n"
        f"r = requests.get({URL!r}, timeout=20)\n"
        "print(r.status_code, r.json()['headers']['Host'])"
    )
    proc = sandbox.exec("python3", "-c", requests_code)
    assert proc.stdout.split() == ["200", UPSTREAM_NAME], proc.stdout + proc.stderr
    info("urllib: 200, requests: 200")


def test_git_ls_remote(sandbox: Sandbox) -> None:
    step(f"git ls-remote https://{UPSTREAM_NAME}/repo.git in the workload")
    proc = sandbox.exec("git", "ls-remote", f"https://{UPSTREAM_NAME}/repo.git", timeout=90)
    assert proc.returncode == 0, proc.stderr
    info(proc.stdout.strip().replace("\n", " | "))
    refs = dict(reversed(line.split("\t")) for line in proc.stdout.splitlines())
    assert refs["HEAD"] == sandbox.upstream.head


def test_other_domains_get_the_proxy_403(sandbox: Sandbox) -> None:
    step(f"curl {DENIED} in the workload: the proxy refuses the CONNECT")
    proc = sandbox.exec("curl", "-sv", "-o", "/dev/null", "-w", "%{http_connect}", DENIED)
    info(f"curl exit {proc.returncode}, CONNECT answered {proc.stdout.strip()}")
    assert proc.returncode != 0
    assert proc.stdout.strip() == "403"
    assert "< x-proxy-error: blocked-by-allowlist" in proc.stderr.lower(), proc.stderr


def test_the_workload_saw_our_internal_ca(sandbox: Sandbox) -> None:
    step("the certificate the workload saw for httpbin.org")
    proc = sandbox.exec(
        "sh", "-c",
        f"openssl s_client -proxy 127.0.0.1:{c.PROXY_PORT} -connect {UPSTREAM_NAME}:443 "
        f"-servername {UPSTREAM_NAME} -verify_return_error </dev/null 2>/dev/null "
        "| openssl x509 -noout -issuer -ext subjectAltName -nameopt RFC2253",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info(proc.stdout.strip().replace("\n", " | "))
    ca = x509.load_pem_x509_certificate((sandbox.ca_dir / "ca.crt").read_bytes())
    issuer = proc.stdout.splitlines()[0].removeprefix("issuer=").strip()
    assert issuer == ca.subject.rfc4514_string(), (issuer, ca.subject.rfc4514_string())
    assert f"DNS:{UPSTREAM_NAME}" in proc.stdout
    assert "e2e upstream test CA" not in proc.stdout


def test_sidecar_logs_hold_decisions_and_the_request(sandbox: Sandbox) -> None:
    step("the sidecar's JSON event lines (docker logs)")
    events = sandbox.sidecar_events()
    decisions = [e for e in events if e.get("event") == "decision"]
    requests = [e for e in events if e.get("event") == "request"]
    allowed = [d for d in decisions if d.get("host") == UPSTREAM_NAME and d["allow"]]
    denied = [d for d in decisions if d.get("host") == "example.com" and not d["allow"]]
    forwarded = [r for r in requests if r.get("host") == UPSTREAM_NAME and r.get("path") == "/get"]
    for e in (allowed[:1], denied[:1], forwarded[:1]):
        info(json.dumps(e[0]) if e else "(missing)")
    assert allowed and allowed[0]["reason"] == "allowed" and allowed[0]["port"] == 443
    assert denied and denied[0]["reason"] == "blocked-by-allowlist"
    assert forwarded and forwarded[0]["status"] == 200 and forwarded[0]["method"] == "GET"


def test_the_pod_stops_cleanly(sandbox: Sandbox) -> None:
    step(f"stop pod {POD_NAME} like the kubelet: workload first, then the sidecar")
    runner = sandbox.runner
    runner.stop()
    assert runner.failures == [], runner.failures
    sidecar = runner.containers[c.SIDECAR_CONTAINER]
    assert sidecar.exit_code == 0 and sidecar.restart_count == 0, sidecar
    kinds = {(r.container, r.kind) for r in runner.probe_log}
    info(f"probes executed: {sorted(kinds)}; deviations printed: {len(runner.deviations)}")
    for d in runner.deviations:
        info(f"  deviation: {d}")
    assert any("kata" in d for d in runner.deviations)
