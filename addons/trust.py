"""`auth-proxy-trust`: write the files every TLS client of a workload needs to trust our CA.

The pod's `ca-trust` init container runs it from the sidecar image (uid 10000, read-only root),
so the workload image needs nothing of ours: any image (a stock Python, Node or JDK one) finds,
in the shared emptyDir given as --out:

  ca-bundle.crt   the system roots + our CA (PEM), for variables that REPLACE a tool's roots
  certs/          the same certificates as OpenSSL hash names (<subject hash>.N), for SSL_CERT_DIR
  truststore.p12  the same certificates as a PKCS#12 Java truststore (password `changeit`)
  ca.crt          our CA alone, for variables that ADD to a tool's roots (NODE_EXTRA_CA_CERTS)

Every file is written to a temporary name and renamed into place (certs/ is a symlink to a
directory named by its content, swapped the same way), and ca-bundle.crt goes last: its presence
means the set is complete. Running it again rewrites the same content. Any failure exits 3 with
one line on stderr naming the problem and the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import crypto

PROG = "auth-proxy-trust"
EXIT_FAILED = 3
# The names below are an interface (k8s/constants.py repeats them; a unit test compares).
BUNDLE_FILE = "ca-bundle.crt"
CERTS_DIR = "certs"
TRUSTSTORE_FILE = "truststore.p12"
CA_FILE = "ca.crt"
# The JDK's own default; a truststore holds no secret, the password only satisfies the API.
TRUSTSTORE_PASSWORD = "changeit"
OUR_ALIAS = "auth-proxy-ca"
DEFAULT_ROOTS = "/etc/ssl/certs/ca-certificates.crt"
FILE_MODE = 0o644
DIR_MODE = 0o755

_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class TrustError(Exception):
    """Nothing usable was written. The message names the problem and the fix."""


@dataclass(frozen=True)
class Certs:
    roots: tuple[x509.Certificate, ...]
    ours: tuple[x509.Certificate, ...]
    unparsable_roots: int = 0

    def all(self) -> list[x509.Certificate]:
        """Roots then ours, each certificate once (our CA may be a system root already)."""
        seen: set[bytes] = set()
        unique = []
        for cert in (*self.roots, *self.ours):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                unique.append(cert)
        return unique


# --- reading -------------------------------------------------------------------------------------


def _read(path: Path, what: str, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read {what} {path}: {exc.strerror}; {fix}") from exc


def load_ours(path: Path) -> tuple[x509.Certificate, ...]:
    """Our CA: one or more PEM certificates, each of them a CA certificate."""
    fix = "mount the CA Secret's tls.crt there (python -m k8s ca-secret)"
    blocks = _PEM_BLOCK.findall(_read(path, "the CA certificate", fix))
    if not blocks:
        raise TrustError(f"{path} holds no PEM certificate; {fix}")
    certs = []
    for block in blocks:
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise TrustError(
                f"{path} holds a PEM block that is not a certificate ({exc}); {fix}"
            ) from exc
        if not _is_ca(cert):
            raise TrustError(
                f"{path} holds a certificate that is not a CA ({cert.subject.rfc4514_string()}: "
                "no basicConstraints CA:TRUE); mount the CA's own certificate (ca.crt from "
                "ca/generate.py), not a leaf's"
            )
        certs.append(cert)
    return tuple(certs)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def load_roots(path: Path) -> tuple[tuple[x509.Certificate, ...], int]:
    """The system roots, and how many PEM blocks could not be parsed (left out)."""
    fix = "install Debian's ca-certificates in the image, or pass --roots FILE"
    blocks = _PEM_BLOCK.findall(_read(path, "the system roots", fix))
    roots, bad = [], 0
    with warnings.catch_warnings():
        # A few long-lived roots have a non-positive serial: cryptography warns now (and will
        # refuse later, when they are counted as skipped); they are the distribution's choice.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in blocks:
            try:
                roots.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                bad += 1
    if not roots:
        raise TrustError(f"{path} holds no certificate; {fix}")
    return tuple(roots), bad


# --- rendering -----------------------------------------------------------------------------------


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def subject_hash(cert: x509.Certificate) -> int:
    """OpenSSL's subject_name_hash, the name `openssl rehash` and CApath lookups use."""
    return crypto.X509.from_cryptography(cert).subject_name_hash()


def hashed_names(certs: Sequence[x509.Certificate]) -> list[tuple[str, x509.Certificate]]:
    """<hash>.0, <hash>.1, ... in order: a lookup tries every index of a colliding hash."""
    used: dict[int, int] = {}
    names = []
    for cert in certs:
        h = subject_hash(cert)
        index = used.get(h, 0)
        used[h] = index + 1
        names.append((f"{h:08x}.{index}", cert))
    return names


def render_bundle(certs: Certs) -> bytes:
    roots = b"".join(pem(c) for c in certs.roots)
    return roots + b"\n# auth-proxy CA\n" + b"".join(pem(c) for c in certs.ours)


def render_truststore(certs: Certs) -> bytes:
    ours = {pem(c) for c in certs.ours}
    entries = [
        pkcs12.PKCS12Certificate(
            cert, (OUR_ALIAS if pem(cert) in ours else f"root-{name}").encode()
        )
        for name, cert in hashed_names(certs.all())
    ]
    return pkcs12.serialize_java_truststore(
        entries, serialization.BestAvailableEncryption(TRUSTSTORE_PASSWORD.encode())
    )


# --- writing -------------------------------------------------------------------------------------


def _write_file(directory: Path, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), FILE_MODE)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_certs_dir(out: Path, certs: Certs) -> None:
    """certs -> .certs-<digest>, swapped with one rename, so a reader never sees a half dir."""
    files = [(name, pem(cert)) for name, cert in hashed_names(certs.all())]
    digest = hashlib.sha256(b"".join(n.encode() + d for n, d in files)).hexdigest()[:16]
    target = f".{CERTS_DIR}-{digest}"
    if not (out / target).is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{CERTS_DIR}-tmp-", dir=out))
        try:
            for name, data in files:
                (tmp / name).write_bytes(data)
                os.chmod(tmp / name, FILE_MODE)
            os.chmod(tmp, DIR_MODE)
            os.rename(tmp, out / target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    link = out / f".{CERTS_DIR}-link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(target, link)
    os.replace(link, out / CERTS_DIR)
    for old in out.glob(f".{CERTS_DIR}-*"):
        if old.name != target and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def write_all(out: Path, certs: Certs) -> None:
    fix = "mount a writable emptyDir there (the pod's proxy-ca-bundle volume)"
    if not out.is_dir():
        raise TrustError(f"--out {out} is not a directory; {fix}")
    try:
        if (out / CERTS_DIR).exists() and not (out / CERTS_DIR).is_symlink():
            shutil.rmtree(out / CERTS_DIR)  # a plain directory left by something else
        _write_file(out, CA_FILE, b"".join(pem(c) for c in certs.ours))
        _write_certs_dir(out, certs)
        _write_file(out, TRUSTSTORE_FILE, render_truststore(certs))
        # Last: the executor image's entrypoint takes an existing bundle as "all written".
        _write_file(out, BUNDLE_FILE, render_bundle(certs))
    except OSError as exc:
        where = exc.filename or out
        raise TrustError(f"cannot write {where} ({exc.strerror}); {fix}") from exc


# --- command -------------------------------------------------------------------------------------


def summary(out: Path, certs: Certs) -> str:
    ours = certs.ours[0]
    return json.dumps(
        {
            "event": "ca-trust-written",
            "out": str(out),
            "roots": len(certs.roots),
            "roots_skipped": certs.unparsable_roots,
            "ca_subject": ours.subject.rfc4514_string(),
            "ca_sha256": ours.fingerprint(hashes.SHA256()).hex(),
            "files": [BUNDLE_FILE, f"{CERTS_DIR}/", TRUSTSTORE_FILE, CA_FILE],
        },
        separators=(",", ":"),
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Write trust material for the proxy's CA into DIR: a PEM bundle of the system roots "
            f"plus the CA ({BUNDLE_FILE}), a hashed directory for SSL_CERT_DIR ({CERTS_DIR}/), "
            f"a PKCS#12 Java truststore ({TRUSTSTORE_FILE}, password {TRUSTSTORE_PASSWORD}) "
            f"and the CA alone ({CA_FILE})."
        ),
        epilog=(
            f"example: {PROG} --ca /etc/proxy-ca/ca.crt --out /var/lib/proxy-ca. Exit 0: all "
            f"written; {EXIT_FAILED}: not written (stderr says why); 2: bad arguments."
        ),
    )
    parser.add_argument("--ca", required=True, type=Path, metavar="FILE",
                        help="the proxy's CA certificate (PEM)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="existing writable directory to write into")  # fmt: skip
    parser.add_argument("--roots", type=Path, default=Path(DEFAULT_ROOTS), metavar="FILE",
                        help="system roots bundle (PEM; default %(default)s)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ours = load_ours(args.ca)
        roots, bad = load_roots(args.roots)
        certs = Certs(roots, ours, bad)
        write_all(args.out, certs)
    except TrustError as exc:
        print(f"{PROG}: trust files NOT written: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(args.out, certs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
