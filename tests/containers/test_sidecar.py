"""The auth-proxy sidecar image, started as the pod starts it.

Pod = the sidecar container on ``--network none`` (its own loopback only). An upstream HTTPS
server and a client run from the executor image in the same network namespace
(``--network container:<sidecar>``), as the workload does in the pod. The sidecar resolves
``allowed.test`` through ``--add-host`` to 127.0.0.1, so the policy allows ``127.0.0.0/8``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers.conftest import HERE, Docker, wait_for
from tests.containers.pki import cert_only_dir, issue_leaf, make_ca, tls_secret_dir, world_readable

pytestmark = pytest.mark.containers

CLIENT = "/t/pod_client.py"
UPSTREAM_PORT = 8443


def policy_text(domains: list[str]) -> str:
    return (
        "version: v1\n"
        f"allowed_domains: {json.dumps(domains)}\n"
        f"allowed_ports: [443, {UPSTREAM_PORT}]\n"
        'allow_ranges: ["127.0.0.0/8"]\n'
    )


def write_policy(policy_dir: Path, domains: list[str]) -> None:
    """Replace policy.yaml atomically (as the kubelet swaps a ConfigMap's files)."""
    tmp = policy_dir / ".policy.yaml.tmp"
    tmp.write_text(policy_text(domains))
    tmp.chmod(0o644)
    os.replace(tmp, policy_dir / "policy.yaml")


@dataclass
class Pod:
    docker: Docker
    sidecar: str
    client: str
    policy_dir: Path

    def connect(self, host: str, port: int = UPSTREAM_PORT) -> dict:
        return self.docker.exec_json(
            self.client,
            "python3",
            CLIENT,
            "connect",
            host,
            str(port),
            "--cafile",
            "/proxy-ca/ca.crt",
        )

    def health(self, path: str) -> dict:
        return self.docker.exec_json(
            self.client, "python3", CLIENT, "get", f"http://127.0.0.1:8081{path}"
        )


@pytest.fixture(scope="module")
def pod(docker: Docker, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sidecar")
    proxy_ca = make_ca(tmp / "proxy-ca", "container-test proxy CA")
    upstream_ca = make_ca(tmp / "upstream-ca", "container-test upstream CA")
    issue_leaf(upstream_ca, ["allowed.test", "other.test"], tmp / "upstream-tls")
    world_readable(tmp / "upstream-tls", tmp / "upstream-ca")
    certs = tls_secret_dir(proxy_ca, tmp / "certs")
    client_ca = cert_only_dir(proxy_ca, tmp / "client-ca")
    policy_dir = tmp / "policy"
    policy_dir.mkdir()
    policy_dir.chmod(0o755)
    write_policy(policy_dir, ["allowed.test"])

    sidecar = docker.run(
        images["sidecar"],
        # Extra arguments go to the proxy: trust the test upstream's CA.
        "--set", "ssl_verify_upstream_trusted_ca=/upstream-ca/ca.crt",
        name=docker.name("sidecar"),
        options=[
            "--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "10000:10000",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--add-host", "allowed.test:127.0.0.1", "--add-host", "other.test:127.0.0.1",
            "-v", f"{certs}:/certs:ro",
            "-v", f"{policy_dir}:/etc/auth-proxy:ro",
            "-v", f"{upstream_ca}:/upstream-ca:ro",
        ],
    )  # fmt: skip
    ns = ["--network", f"container:{sidecar}", "--read-only", "--tmpfs", "/tmp"]
    docker.run(
        images["executor"],
        "python3", "/t/tls_server.py", "--cert", "/tls/server.crt", "--key", "/tls/server.key",
        "--port", str(UPSTREAM_PORT), "--dir", "/t",
        name=docker.name("upstream"),
        options=[*ns, "-v", f"{tmp / 'upstream-tls'}:/tls:ro", "-v", f"{HERE}:/t:ro"],
    )  # fmt: skip
    client = docker.run(
        images["executor"],
        name=docker.name("workload"),
        options=[*ns, "-v", f"{client_ca}:/proxy-ca:ro", "-v", f"{HERE}:/t:ro"],
    )
    p = Pod(docker, sidecar, client, policy_dir)
    try:
        wait_for(lambda: p.health("/readyz")["status"] == 200, 30, what="/readyz 200")
    except AssertionError:
        print(docker.logs(sidecar))
        raise
    yield p
    docker.remove(client, sidecar)


def test_image_config(docker: Docker, images: dict[str, str]) -> None:
    config = json.loads(docker("image", "inspect", images["sidecar"]).stdout)[0]["Config"]
    assert config["User"] == "10000:10000"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert "auth-proxy-healthcheck" in " ".join(config["Healthcheck"]["Test"])
    listing = docker.run_once(
        images["sidecar"], "-c", "command -v pip gcc cc curl; ls /opt/venv/bin; true",
        options=["--network", "none", "--entrypoint", "sh"],
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "pip" not in listing.stdout.split(), listing.stdout
    assert "gcc" not in listing.stdout and "curl" not in listing.stdout
    assert "auth-proxy" in listing.stdout.split()


def test_runs_as_10000_on_read_only_root(docker: Docker, pod: Pod) -> None:
    assert docker.exec(pod.sidecar, "id", "-u").stdout.strip() == "10000"
    assert docker.exec(pod.sidecar, "touch", "/opt/venv/x").returncode != 0
    confdir = docker.exec(pod.sidecar, "ls", "/tmp/auth-proxy").stdout.split()
    assert {"mitmproxy-ca.pem", "mitmproxy-ca-cert.pem"} <= set(confdir)
    assert docker.exec(pod.sidecar, "ls", "/certs").stdout.split() == ["tls.crt", "tls.key"]
    assert "using the CA from /certs" in docker.logs(pod.sidecar)


def test_healthz_and_readyz(pod: Pod) -> None:
    assert pod.health("/healthz")["status"] == 200
    ready = pod.health("/readyz")
    assert ready["status"] == 200, ready


def test_denied_connect_gets_403(pod: Pod) -> None:
    result = pod.connect("denied.example", 443)
    assert result["status"] == 403, result
    assert result["headers"].get("x-proxy-error") == "blocked-by-allowlist", result


def test_allowed_connect_is_intercepted_with_the_mounted_ca(pod: Pod) -> None:
    result = wait_for(lambda: pod.connect("allowed.test"), 10, what="allowed CONNECT")
    assert result["status"] == 200, result
    tls = result["tls"]
    # The client trusts only the mounted proxy CA, so a verified handshake proves the chain.
    assert tls["verified"], tls
    assert tls["issuer"]["commonName"] == "container-test proxy CA", tls
    assert "allowed.test" in tls["san"], tls
    assert tls["http_status"] == 200, tls


def test_policy_change_takes_effect(pod: Pod) -> None:
    assert pod.connect("other.test")["status"] == 403
    try:
        write_policy(pod.policy_dir, ["other.test"])
        started = time.monotonic()
        wait_for(lambda: pod.connect("other.test")["status"] == 200, 5, what="other.test allowed")
        wait_for(
            lambda: pod.connect("allowed.test")["status"] == 403, 5, what="allowed.test denied"
        )
        assert time.monotonic() - started < 10
    finally:
        write_policy(pod.policy_dir, ["allowed.test"])
        wait_for(lambda: pod.connect("allowed.test")["status"] == 200, 10, what="policy restored")


def test_no_ca_and_no_policy(docker: Docker, images: dict[str, str]) -> None:
    name = docker.run(
        images["sidecar"],
        name=docker.name("bare"),
        options=["--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "10000:10000"],
    )
    probe = ["python3", "-c", (
        "import urllib.request as u, urllib.error as e\n"
        "try: print(u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8081/readyz').status)\n"
        "except e.HTTPError as x: print(x.code)"
    )]  # fmt: skip
    status = wait_for(
        lambda: docker.exec(name, *probe).stdout.strip() or None, 20, what="/readyz answer"
    )
    assert status == "503"
    logs = docker.logs(name)
    assert "EPHEMERAL CA" in logs and "every request is DENIED" in logs, logs
    docker.remove(name)


def test_stops_quickly_on_sigterm(docker: Docker, images: dict[str, str]) -> None:
    name = docker.run(
        images["sidecar"],
        name=docker.name("stop"),
        options=["--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "10000:10000"],
    )
    wait_for(lambda: "listening" in docker.logs(name), 20, what="proxy listening")
    started = time.monotonic()
    docker("stop", "--time", "10", name)
    assert time.monotonic() - started < 5
    state = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, docker.logs(name)
    docker.remove(name)


LOCK_ARGS = ("--sidecar-uid", "10000", "--transparent-port", "8082", "--dns-port", "8053")
# As the pod's init container runs it: root, read-only root filesystem, no privilege escalation.
LOCK_OPTIONS = [
    "--network", "none", "--read-only", "--user", "0:0", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--entrypoint", "auth-proxy-lock-egress",
]  # fmt: skip


def test_egress_lock_dry_run_prints_the_ruleset(docker: Docker, images: dict[str, str]) -> None:
    result = docker.run_once(
        images["sidecar"], *LOCK_ARGS, "--dry-run",
        options=["--network", "none", "--read-only", "--entrypoint", "auth-proxy-lock-egress"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "table inet auth_proxy_egress {" in result.stdout
    assert "meta skuid 10000 accept" in result.stdout
    assert "redirect to :8082" in result.stdout and "redirect to :8053" in result.stdout


def test_egress_lock_installs_with_only_net_admin(docker: Docker, images: dict[str, str]) -> None:
    """The image's nft applies the ruleset and the readback check accepts its JSON."""
    locked = docker.run_once(images["sidecar"], *LOCK_ARGS, options=[*LOCK_OPTIONS, "--cap-add", "NET_ADMIN"])  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    summary = json.loads(locked.stdout)
    assert summary["event"] == "egress-locked" and summary["sidecar_uid"] == 10000, summary
    refused = docker.run_once(images["sidecar"], *LOCK_ARGS, options=LOCK_OPTIONS)
    assert refused.returncode == 3, refused
    assert "NET_ADMIN" in refused.stderr, refused.stderr
