"""The proxy's CA, checked before mitmproxy uses it: `confdir/mitmproxy-ca.pem` must be readable
and hold a private key and a certificate that belong together and are valid now.

mitmproxy itself generates a new CA when the file is missing (which would hand clients a CA
they do not trust) and fails with a bare traceback on a bad one. Every problem here is an
`OptionsError` naming the file, so the process exits non-zero at start.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import exceptions

logger = logging.getLogger(__name__)

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


# What mitmproxy's CertStore.create_store writes when it generates a CA into a confdir that has
# none. The PKCS#12 copy of the key is written by nothing else here (not by ca/generate.py, not by
# the sidecar's entrypoint), which tells a generated CA from one copied in just before the start.
GENERATED = (
    "mitmproxy-ca.pem",
    "mitmproxy-ca.p12",
    "mitmproxy-ca-cert.pem",
    "mitmproxy-ca-cert.cer",
    "mitmproxy-ca-cert.p12",
)
GENERATED_MARK = "mitmproxy-ca.p12"


def process_start_time(pid: int | None = None) -> float | None:
    """When this process (or `pid`) started, in seconds since the epoch, from /proc; None
    elsewhere."""
    try:
        fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        # /proc/uptime has centiseconds; /proc/stat's btime only whole seconds.
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def generated_since(confdir: Path, started: float) -> list[Path]:
    """The CA files mitmproxy generated in `confdir` after `started` (empty: it generated none).

    Generated means the CA and its PKCS#12 key copy are both newer than `started`: a CA copied in
    before the start (the entrypoint's tls.key + tls.crt, of any age) has no fresh key copy."""
    fresh = [
        path
        for path in (confdir / name for name in GENERATED)
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime > started
    ]
    names = {path.name for path in fresh}
    return fresh if {CA_FILE, GENERATED_MARK} <= names else []


def check_at_start(confdir: str, required: bool) -> None:
    """At `running`: the CA must not be one mitmproxy made up at this start.

    With `mitmdump -s`, mitmproxy's TlsConfig generates a missing CA before a script's first
    `configure`, so "missing" shows as a freshly generated CA. The start then fails. The files
    are left in place (this module only reads; the operator decides what goes in a confdir)."""
    path = Path(os.path.expanduser(confdir)) / CA_FILE
    started = process_start_time()
    if required and started is not None:
        # Start times count in clock ticks; mitmproxy takes far longer than this to get to its CA.
        generated = generated_since(path.parent, started + FRESH_SLACK_SECONDS)
        if generated:
            raise _fail(
                path,
                "missing at start (mitmproxy generated a throwaway CA there: "
                f"{', '.join(p.name for p in generated)}; left in place)",
                "remove those files, then generate a CA with `python ca/generate.py --out DIR` "
                "and --set confdir=DIR (or --set ca_required=false to allow a throwaway CA)",
            )
    check_confdir(confdir, required)


class CaCheck:
    """The interception CA is checked when the confdir is set and again at start."""

    def load(self, loader) -> None:
        loader.add_option(
            "ca_required",
            bool,
            True,
            "Exit at start unless confdir holds a CA (mitmproxy-ca.pem, key and certificate that match); false lets mitmproxy generate a throwaway CA.",
        )

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if {"confdir", "ca_required"} & updated and ctx.options.confdir != ctx.options.default(
            "confdir"
        ):
            check_confdir(ctx.options.confdir, ctx.options.ca_required)

    def running(self) -> None:
        from mitmproxy import ctx

        try:
            check_at_start(ctx.options.confdir, ctx.options.ca_required)
        except exceptions.OptionsError as e:
            logger.error(str(e))  # an error logged at start-up makes mitmproxy exit 1
