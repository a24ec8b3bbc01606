"""The proxy's CA, checked before mitmproxy uses it: `confdir/mitmproxy-ca.pem` must be readable
and hold a private key and a certificate that belong together and are valid now.

mitmproxy itself generates a new CA when the file is missing (which would hand clients a CA
they do not trust) and fails with a bare traceback on a bad one. Every problem here is an
`OptionsError` naming the file, so the process exits non-zero at start.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import exceptions

CA_FILE = "mitmproxy-ca.pem"
FRESH_SLACK_SECONDS = 0.05


def _fail(path: Path, problem: str, fix: str) -> exceptions.OptionsError:
    return exceptions.OptionsError(f"CA file {path}: {problem}. Fix: {fix}")


def check_confdir(confdir: str, required: bool) -> Path | None:
    """Check `confdir`'s CA. Returns its path, or None when it is absent and not required."""
    path = Path(os.path.expanduser(confdir)) / CA_FILE
    if not path.exists() and not path.is_symlink():
        if not required:
            return None
        raise _fail(
            path,
            "missing",
            "generate one with `python ca/generate.py --out DIR` and --set confdir=DIR "
            "(or --set ca_required=false to let mitmproxy make a throwaway CA)",
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _fail(path, f"unreadable ({e.strerror or e})", "check its mode and owner") from None
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as e:
        raise _fail(
            path, f"holds no usable PEM private key ({e})", "put the CA key first in the file"
        ) from None
    try:
        cert = x509.load_pem_x509_certificates(raw)[0]
    except (ValueError, IndexError) as e:
        raise _fail(
            path,
            f"holds no PEM certificate ({e})",
            "append the CA certificate after the key",
        ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    certified = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != certified:
        raise _fail(
            path,
            "the private key does not match the certificate",
            "use the key and certificate of the same CA (tls.key and tls.crt of one Secret)",
        )
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise _fail(path, f"the certificate expired on {cert.not_valid_after_utc}", "renew the CA")
    if cert.not_valid_before_utc > now:
        raise _fail(
            path,
            f"the certificate is not valid before {cert.not_valid_before_utc}",
            "check the clock, or reissue the CA",
        )
    return path


# What mitmproxy writes when it generates a CA into a confdir that has none.
GENERATED = (
    "mitmproxy-ca.pem",
    "mitmproxy-ca-cert.pem",
    "mitmproxy-ca-cert.cer",
    "mitmproxy-ca-cert.p12",
    "mitmproxy-ca.p12",
)


def process_start_time() -> float | None:
    """When this process started (seconds since the epoch), from /proc; None elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        # /proc/uptime has centiseconds; /proc/stat's btime only whole seconds.
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def check_at_start(confdir: str, required: bool) -> None:
    """At `running`: the CA must have been there before this process started.

    With `mitmdump -s`, mitmproxy's TlsConfig generates a missing CA before a script's first
    `configure`, so "missing" shows as a CA file younger than the process. That throwaway CA is
    removed (it was never given to anyone), and the start fails."""
    path = Path(os.path.expanduser(confdir)) / CA_FILE
    started = process_start_time()
    # Start times count in clock ticks; mitmproxy takes far longer than this to get to its CA.
    fresh_after = None if started is None else started + FRESH_SLACK_SECONDS
    if (
        required
        and fresh_after is not None
        and path.is_file()
        and path.stat().st_mtime > fresh_after
    ):
        for name in GENERATED:
            candidate = path.parent / name
            if candidate.is_file() and candidate.stat().st_mtime > fresh_after:
                candidate.unlink()
        raise _fail(
            path,
            "missing at start (mitmproxy generated a throwaway CA there; it was removed)",
            "generate one with `python ca/generate.py --out DIR` and --set confdir=DIR "
            "(or --set ca_required=false to allow a throwaway CA)",
        )
    check_confdir(confdir, required)
