"""`auth-proxy-trust` in the sidecar image, run as the pod's `ca-trust` init container runs it
(uid 10000, read-only root, no capabilities, no network), and its files used by the executor
image as the workload uses them: openssl verify (-CAfile, -CApath), Python's ssl (cafile,
capath; X509-strict on 3.13) and every client of executor_checks.sh, with the entrypoint leaving
the init container's bundle as it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from k8s import constants as c
from tests.containers.conftest import HERE, Docker
from tests.containers.pki import cert_only_dir, issue_leaf, make_ca, world_readable

pytestmark = pytest.mark.containers

RESTRICTED = ["--network", "none", "--read-only", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges"]  # fmt: skip
SIDECAR_USER = f"{c.SIDECAR_UID}:{c.SIDECAR_GID}"
EXECUTOR_USER = f"{c.EXECUTOR_UID}:{c.EXECUTOR_GID}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trust")
    ca = make_ca(tmp / "ca", "trust-test proxy CA")
    issue_leaf(ca, ["tls.test"], tmp / "srv-tls")
    world_readable(tmp / "srv-tls")
    return {"ca": cert_only_dir(ca, tmp / "proxy-ca"), "srv": tmp / "srv-tls"}


def emptydir(path: Path, owner: int = c.SIDECAR_UID) -> Path:
    path.mkdir()
    os.chown(path, owner, owner)
    return path


def run_trust(docker: Docker, image: str, pki: dict[str, Path], out: Path):
    """The ca-trust init container, as the pod spec describes it (command, user, mounts)."""
    return docker.run_once(
        image, "--ca", c.WORKLOAD_CA_CERT, "--out", c.CA_BUNDLE_DIR,
        options=[*RESTRICTED, "--user", SIDECAR_USER, "--entrypoint", c.TRUST_COMMAND,
                 "-v", f"{pki['ca']}:{c.WORKLOAD_CA_DIR}:ro", "-v", f"{out}:{c.CA_BUNDLE_DIR}"],
    )  # fmt: skip


def test_the_init_container_writes_every_file(
    docker: Docker, images: dict[str, str], pki: dict[str, Path], tmp_path: Path
) -> None:
    out = emptydir(tmp_path / "bundle")
    proc = run_trust(docker, images["sidecar"], pki, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"event":"ca-trust-written"' in proc.stdout
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert visible == {"ca-bundle.crt", "certs", "truststore.p12", "ca.crt"}
    # Written as uid 10000 on a read-only root: only under --out.
    assert {p.stat().st_uid for p in out.iterdir()} == {c.SIDECAR_UID}
    bundle = (out / "ca-bundle.crt").read_text()
    assert bundle.rstrip().endswith((pki["ca"] / "ca.crt").read_text().strip())
    assert bundle.count("BEGIN CERTIFICATE") > 50  # the sidecar image's system roots
    # Idempotent: the init container runs again after a pod sandbox restart.
    again = run_trust(docker, images["sidecar"], pki, out)
    assert again.returncode == 0, again.stderr
    assert (out / "ca-bundle.crt").read_text() == bundle


def test_the_workload_image_verifies_our_leaves_with_the_files(
    docker: Docker, images: dict[str, str], pki: dict[str, Path], tmp_path: Path
) -> None:
    out = emptydir(tmp_path / "bundle")
    assert run_trust(docker, images["sidecar"], pki, out).returncode == 0
    checks = [
        f"openssl verify -x509_strict -no-CAfile -no-CApath -CAfile {c.CA_BUNDLE} /srv-tls/server.crt",
        f"openssl verify -x509_strict -no-CAfile -no-CApath -CApath {c.CA_CERTS_DIR} /srv-tls/server.crt",
        f"python3 /t/trust_checks.py /srv-tls/server.crt /srv-tls/server.key cafile {c.CA_BUNDLE}",
        f"python3 /t/trust_checks.py /srv-tls/server.crt /srv-tls/server.key capath {c.CA_CERTS_DIR}",
        # Control: the image's own roots do not know our CA.
        "! python3 /t/trust_checks.py /srv-tls/server.crt /srv-tls/server.key cafile "
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    script = "set -e; " + "; ".join(f"{check}; echo PASSED {i}" for i, check in enumerate(checks))
    proc = docker.run_once(
        images["executor"], "bash", "-c", script,
        options=[*RESTRICTED, "--user", EXECUTOR_USER, "--entrypoint", "",
                 "-v", f"{out}:{c.CA_BUNDLE_DIR}:ro", "-v", f"{pki['srv']}:/srv-tls:ro",
                 "-v", f"{HERE}:/t:ro"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == len(checks), proc.stdout
    assert proc.stdout.count("(x509_strict=True)") == 3, proc.stdout


def test_the_executor_entrypoint_leaves_the_bundle_and_every_client_trusts_it(
    docker: Docker, images: dict[str, str], pki: dict[str, Path], tmp_path: Path
) -> None:
    """In the pod, the bundle dir is read-only to the workload and already written."""
    out = emptydir(tmp_path / "bundle")
    assert run_trust(docker, images["sidecar"], pki, out).returncode == 0
    before = (out / "ca-bundle.crt").read_bytes()
    proc = docker.run_once(
        images["executor"], "bash", "/t/executor_checks.sh",
        options=[*RESTRICTED, "--tmpfs", "/tmp", "--add-host", "tls.test:127.0.0.1",
                 "-v", f"{out}:{c.CA_BUNDLE_DIR}:ro", "-v", f"{pki['ca']}:{c.WORKLOAD_CA_DIR}:ro",
                 "-v", f"{pki['srv']}:/srv-tls:ro", "-v", f"{HERE}:/t:ro"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {m[1]: int(m[2]) for m in re.finditer(r"^RESULT (\S+) (\d+)$", proc.stdout, re.M)}
    assert results == dict.fromkeys(
        ("curl", "urllib", "requests", "ssl", "git", "node", "openssl"), 0
    ), proc.stdout + proc.stderr
    assert f"using the CA bundle at {c.CA_BUNDLE}" in proc.stderr
    assert f"SSL_CERT_FILE={c.CA_BUNDLE}" in proc.stdout, "no fallback bundle in /tmp"
    assert (out / "ca-bundle.crt").read_bytes() == before


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        pytest.param("root-owned-out", "cannot write", id="out-not-writable"),
        pytest.param("leaf-as-ca", "is not a CA", id="a-leaf-mounted-as-the-ca"),
        pytest.param("no-ca", "cannot read the CA certificate", id="no-ca-mounted"),
    ],
)
def test_the_init_container_fails_with_a_message(
    docker: Docker, images: dict[str, str], pki: dict[str, Path], tmp_path: Path,
    case: str, fragment: str,
) -> None:  # fmt: skip
    out = emptydir(tmp_path / "bundle", owner=0 if case == "root-owned-out" else c.SIDECAR_UID)
    ca_dir = pki["ca"]
    if case == "leaf-as-ca":
        ca_dir = tmp_path / "leaf"
        ca_dir.mkdir()
        (ca_dir / "ca.crt").write_bytes((pki["srv"] / "server.crt").read_bytes())
        world_readable(ca_dir)
    if case == "no-ca":
        ca_dir = tmp_path / "empty"
        ca_dir.mkdir()
        world_readable(ca_dir)
    proc = run_trust(docker, images["sidecar"], {**pki, "ca": ca_dir}, out)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stderr.startswith("auth-proxy-trust: trust files NOT written: "), proc.stderr
    assert fragment in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []
