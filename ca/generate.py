"""Generate the internal CA that the auth-proxy sidecar mints leaf certificates with.

    python ca/generate.py --out DIR [--common-name CN] [--days N] [--key-type ec|rsa] [--force]
    python -m ca.generate ...

Writes into DIR:
  ca.crt                 the CA certificate (PEM); what workloads and trust stores install
  ca.key                 the CA private key (PEM, PKCS#8, unencrypted, mode 0600)
  mitmproxy-ca.pem       key then certificate, the file mitmproxy's confdir reads (mode 0600)
  mitmproxy-ca-cert.pem  the certificate again, under the name mitmproxy's confdir uses

This module imports nothing from the project, so it runs as a plain script (the repository root
is then not on sys.path) as well as a module.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DEFAULT_COMMON_NAME = "sandbox auth-proxy CA"
DEFAULT_DAYS = 365
MAX_DAYS = 36500
KEY_TYPES = ("ec", "rsa")
DEFAULT_KEY_TYPE = "ec"
RSA_KEY_SIZE = 3072
# Backdate notBefore a little so that a node whose clock lags ours still accepts the CA at once.
CLOCK_SKEW = datetime.timedelta(hours=1)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
MITMPROXY_CA = "mitmproxy-ca.pem"
MITMPROXY_CA_CERT = "mitmproxy-ca-cert.pem"
OUTPUT_FILES = (CA_CERT, CA_KEY, MITMPROXY_CA, MITMPROXY_CA_CERT)

CAPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CAExistsError(FileExistsError):
    """DIR already holds (part of) a CA and --force was not given."""


@dataclass(frozen=True)
class CA:
    key: CAPrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_key(key_type: str = DEFAULT_KEY_TYPE) -> CAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    raise ValueError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def build_ca(
    common_name: str = DEFAULT_COMMON_NAME,
    days: int = DEFAULT_DAYS,
    key_type: str = DEFAULT_KEY_TYPE,
    now: datetime.datetime | None = None,
) -> CA:
    """A new self-signed CA: key and certificate, nothing written anywhere."""
    if not common_name or not common_name.strip():
        raise ValueError("the common name must not be empty")
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    key = generate_key(key_type)
    now = now or datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        # pathlen 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CA(key=key, cert=cert)


def ca_files(ca: CA) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) for everything write_ca puts in the directory."""
    cert_pem, key_pem = ca.cert_pem(), ca.key_pem()
    return {
        CA_CERT: (cert_pem, 0o644),
        CA_KEY: (key_pem, 0o600),
        # mitmproxy reads the key and the certificate from this one file, so it is as secret as
        # the key itself.
        MITMPROXY_CA: (key_pem + cert_pem, 0o600),
        MITMPROXY_CA_CERT: (cert_pem, 0o644),
    }


def existing_ca_files(out: Path) -> list[Path]:
    return [out / name for name in OUTPUT_FILES if (out / name).exists()]


def _write_temp(directory: Path, name: str, content: bytes, mode: int) -> Path:
    # The file is created with its final mode (0600 for secrets) so that the key is never readable
    # by anyone else, not even for a moment, whatever the umask.
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place_new(temp: Path, final: Path) -> None:
    """Move `temp` to `final`, failing if `final` exists (a concurrent run wrote it meanwhile)."""
    try:
        os.link(temp, final)
    except FileExistsError:
        raise CAExistsError(
            f"{final} appeared while the CA was being written: refusing to overwrite it"
        ) from None
    except OSError:
        # A filesystem without hard links: fall back to a checked rename (a tiny race window).
        if final.exists():
            raise CAExistsError(f"{final} already exists: refusing to overwrite it") from None
        os.replace(temp, final)
        return
    temp.unlink()


def write_ca(ca: CA, out: str | Path, force: bool = False) -> list[Path]:
    """Write the CA files into `out` (created 0700 if missing). Returns the paths written.

    Every file is written in full to a temporary name first and only then renamed into place, so
    a failure (full disk, a signal) never leaves a truncated key or a cert without its key. If a
    rename fails part-way through a fresh write, the files already renamed are removed again.
    Raises CAExistsError if any output file exists and `force` is false.
    """
    out = Path(out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not force:
        existing = existing_ca_files(out)
        if existing:
            raise CAExistsError(
                f"{existing[0]} already exists: refusing to overwrite an existing CA. "
                "Pass --force to replace it (every sandbox must then trust the new ca.crt)"
            )
    staged: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for name, (content, mode) in ca_files(ca).items():
            staged[out / name] = _write_temp(out, name, content, mode)
        for final, temp in staged.items():
            # Without --force nothing may be replaced, not even a file that appeared meanwhile.
            if force:
                os.replace(temp, final)
            else:
                _place_new(temp, final)
            placed.append(final)
        _fsync_dir(out)
    except BaseException:
        for temp in staged.values():
            temp.unlink(missing_ok=True)
        if not force:
            for final in placed:
                final.unlink(missing_ok=True)
        raise
    return placed


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{days} is out of range: use 1 to {MAX_DAYS} days")
    return days


def _common_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the common name must not be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ca/generate.py",
        description=(
            "Generate the auth-proxy's internal CA: writes ca.crt, ca.key (0600), "
            "mitmproxy-ca.pem (key + cert, 0600) and mitmproxy-ca-cert.pem into DIR."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument(
        "--common-name",
        type=_common_name,
        default=DEFAULT_COMMON_NAME,
        metavar="CN",
        help=f"subject common name (default: {DEFAULT_COMMON_NAME!r})",
    )
    parser.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"validity in days from now (default: {DEFAULT_DAYS})",
    )
    parser.add_argument(
        "--key-type",
        choices=KEY_TYPES,
        default=DEFAULT_KEY_TYPE,
        help=f"ec = ECDSA P-256, rsa = RSA {RSA_KEY_SIZE} (default: {DEFAULT_KEY_TYPE})",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing CA in DIR (off by default)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    # Check before generating, so a refused run costs nothing; write_ca checks again atomically.
    if not args.force and (existing := existing_ca_files(out)):
        print(
            f"error: {existing[0]} already exists: refusing to overwrite an existing CA. "
            "Pass --force to replace it",
            file=sys.stderr,
        )
        return 1
    ca = build_ca(args.common_name, args.days, args.key_type)
    try:
        write_ca(ca, out, force=args.force)
    except CAExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write the CA into {out}: {e}", file=sys.stderr)
        return 1
    fingerprint = ca.cert.fingerprint(hashes.SHA256()).hex(":")
    print(f"wrote {', '.join(OUTPUT_FILES)} to {out}")
    print(f"CA {args.common_name!r}, valid until {ca.cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"SHA-256 fingerprint {fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
