"""Certificates for the container tests: the CA comes from ca/generate.py, leaves from here."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]


def make_ca(out: Path, common_name: str) -> Path:
    """`python ca/generate.py --out OUT`: OUT/ca.crt and OUT/ca.key."""
    subprocess.run(
        [sys.executable, str(ROOT / "ca" / "generate.py"), "--out", str(out),
         "--common-name", common_name],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


def issue_leaf(ca_dir: Path, names: list[str], out: Path) -> tuple[Path, Path]:
    """A server certificate for `names` signed by the CA in `ca_dir`: OUT/server.{crt,key}."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        # Python 3.13's default context is X509-strict: it wants both key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out.mkdir(parents=True, exist_ok=True)
    crt, pem_key = out / "server.crt", out / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem_key


def world_readable(*dirs: Path) -> None:
    """Containers run as uid 10000 / 1000: let them read the test files (test keys only)."""
    for d in dirs:
        d.chmod(0o755)
        for f in d.iterdir():
            f.chmod(0o755 if f.is_dir() else 0o644)


def tls_secret_dir(ca_dir: Path, out: Path) -> Path:
    """The CA laid out as a Kubernetes TLS Secret mount: tls.crt and tls.key."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_dir / "ca.crt", out / "tls.crt")
    shutil.copyfile(ca_dir / "ca.key", out / "tls.key")
    world_readable(out)
    return out


def cert_only_dir(ca_dir: Path, out: Path) -> Path:
    """What the workload gets: the certificate alone, as ca.crt."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_dir / "ca.crt", out / "ca.crt")
    world_readable(out)
    return out
