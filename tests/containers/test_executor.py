"""The sandbox executor image trusts the proxy CA mounted at /etc/proxy-ca/ca.crt.

An HTTPS server inside the container presents a certificate issued by that CA for ``tls.test``
(resolved to 127.0.0.1 with ``--add-host``); curl, Python (ssl, urllib, requests), git, node and
openssl must accept it with no flag. The container runs as in the pod: read-only root, uid 1000,
an emptyDir-like tmpfs at /var/lib/proxy-ca, no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.containers.conftest import HERE, Docker, wait_for
from tests.containers.pki import cert_only_dir, issue_leaf, make_ca, world_readable

pytestmark = pytest.mark.containers

BUNDLE = "/var/lib/proxy-ca/ca-bundle.crt"
CHECKS = ("curl", "urllib", "requests", "ssl", "git", "node", "openssl")
# What the pod spec sets on the workload container (issue 3), for `kubectl exec`.
POD_ENV = {
    "SSL_CERT_FILE": BUNDLE,
    "REQUESTS_CA_BUNDLE": BUNDLE,
    "CURL_CA_BUNDLE": BUNDLE,
    "GIT_SSL_CAINFO": BUNDLE,
    "PIP_CERT": BUNDLE,
    "NODE_EXTRA_CA_CERTS": "/etc/proxy-ca/ca.crt",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("executor")
    ca = make_ca(tmp / "ca", "container-test proxy CA")
    issue_leaf(ca, ["tls.test"], tmp / "srv-tls")
    world_readable(tmp / "srv-tls")
    return {"ca": cert_only_dir(ca, tmp / "proxy-ca"), "srv": tmp / "srv-tls"}


def pod_options(pki: dict[str, Path], with_ca: bool) -> list[str]:
    options = [
        "--network", "none", "--read-only", "--tmpfs", "/tmp",
        "--tmpfs", "/var/lib/proxy-ca:uid=1000,gid=1000",  # the pod's emptyDir
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--add-host", "tls.test:127.0.0.1",
        "-v", f"{pki['srv']}:/srv-tls:ro", "-v", f"{HERE}:/t:ro",
    ]  # fmt: skip
    if with_ca:
        options += ["-v", f"{pki['ca']}:/etc/proxy-ca:ro"]
    return options


def results(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^RESULT (\S+) (\d+)$", output, re.M)}


def test_every_client_trusts_the_mounted_ca(
    docker: Docker, images: dict[str, str], pki: dict[str, Path]
) -> None:
    proc = docker.run_once(
        images["executor"], "bash", "/t/executor_checks.sh", options=pod_options(pki, True)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = results(proc.stdout)
    assert got == dict.fromkeys(CHECKS, 0), proc.stdout + proc.stderr
    assert f"SSL_CERT_FILE={BUNDLE}" in proc.stdout
    assert f"PIP_CERT={BUNDLE}" in proc.stdout


def test_without_the_ca_it_starts_as_before(
    docker: Docker, images: dict[str, str], pki: dict[str, Path]
) -> None:
    proc = docker.run_once(
        images["executor"], "bash", "/t/executor_checks.sh", options=pod_options(pki, False)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ENV SSL_CERT_FILE= " in proc.stdout
    got = results(proc.stdout)
    # Control: the same server is not trusted without our CA, so the test above means something.
    assert got["curl"] != 0 and got["requests"] != 0 and got["git"] != 0, proc.stdout

    name = docker.run(
        images["executor"], name=docker.name("exec-noca"), options=pod_options(pki, False)
    )
    wait_for(
        lambda: json.loads(docker("inspect", name).stdout)[0]["State"]["Running"],
        10,
        what="running",
    )
    assert docker.exec(name, "id", "-u").stdout.strip() == "1000"
    assert "sleep infinity" in docker.exec(name, "cat", "/proc/1/cmdline").stdout
    # The idle command ends on SIGTERM (exit 0), so deleting a pod does not wait out its grace
    # period; a SIGKILL after the timeout would show as 137.
    docker("stop", "--time", "20", name)
    state = json.loads(docker("inspect", name).stdout)[0]["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 0)
    docker.remove(name)


def test_kubectl_exec_with_the_pod_env(
    docker: Docker, images: dict[str, str], pki: dict[str, Path]
) -> None:
    """The default command keeps the container up; exec'd commands get the pod spec's env."""
    name = docker.run(
        images["executor"], name=docker.name("exec-ca"), options=pod_options(pki, True)
    )
    wait_for(lambda: docker.exec(name, "test", "-s", BUNDLE).returncode == 0, 10, what="bundle")
    bundle = docker.exec(name, "cat", BUNDLE).stdout
    ca = (pki["ca"] / "ca.crt").read_text()
    assert ca.strip() in bundle and bundle.count("BEGIN CERTIFICATE") > 10
    server = docker.exec(
        name, "bash", "-c",
        "python3 /t/tls_server.py --cert /srv-tls/server.crt --key /srv-tls/server.key "
        "--dir /t >/tmp/srv.log 2>&1 &",
    )  # fmt: skip
    assert server.returncode == 0
    curl = wait_for(
        lambda: (p := docker.exec(name, "curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}",
                                  "https://tls.test:8443/", env=POD_ENV)).returncode == 0 and p,
        10, what="curl via pod env",
    )  # fmt: skip
    assert curl.stdout == "200"
    node = docker.exec(
        name, "node", "-e",
        "require('https').get('https://tls.test:8443/', r => process.exit(r.statusCode === 200 ? 0 : 1))"
        ".on('error', e => { console.error(e.message); process.exit(1) })",
        env=POD_ENV,
    )  # fmt: skip
    assert node.returncode == 0, node.stderr
    docker.remove(name)


def test_generated_ca_installs_into_the_debian_trust_store(
    docker: Docker, images: dict[str, str], tmp_path: Path
) -> None:
    """`ca.crt` from ca/generate.py goes into a Debian trust store with update-ca-certificates."""
    import subprocess
    import sys

    ca_dir = tmp_path / "ca"
    generate = Path(__file__).resolve().parents[2] / "ca" / "generate.py"
    subprocess.run([sys.executable, str(generate), "--out", str(ca_dir)], check=True)
    (ca_dir / "ca.key").unlink()  # only the certificate goes into the container
    world_readable(ca_dir)
    script = (
        "set -e; cp /ca/ca.crt /usr/local/share/ca-certificates/auth-proxy.crt; "
        "update-ca-certificates; "
        "openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt /ca/ca.crt"
    )
    result = docker.run_once(
        images["executor"],
        "sh",
        "-c",
        script,
        options=["--network", "none", "--user", "0", "-v", f"{ca_dir}:/ca:ro"],
    )
    assert "1 added" in result.stdout, result.stdout + result.stderr
    assert "/ca/ca.crt: OK" in result.stdout
