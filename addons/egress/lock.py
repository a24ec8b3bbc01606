"""`auth-proxy-lock-egress`: install the egress ruleset in this network namespace, or fail loudly.

The pod's first init container runs it (as root with only NET_ADMIN) so that the workload never
starts with an open network: it applies `addons.egress.ruleset` in ONE `nft -f -` transaction,
reads the table back, checks it, and prints one JSON summary line. Any failure exits 3 with one
line on stderr naming what is missing and the fix, and the pod does not start.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from addons.egress.ruleset import (
    FAMILY,
    EgressSettings,
    check_readback,
    needs_at,
    render,
    rule_count,
)

PROG = "auth-proxy-lock-egress"
EXIT_FAILED = 3
NFT_TIMEOUT = 30.0

_NFT_LINE = re.compile(r"^/dev/stdin:(\d+):[\d-]+: Error: (.*)$", re.MULTILINE)
_NO_PERMISSION = ("Operation not permitted", "you must be root")
_NO_NFNETLINK = ("Protocol not supported", "Address family not supported")


class LockError(Exception):
    """The lock is not in place. The message says what is missing and the fix."""


@dataclass(frozen=True)
class Nft:
    path: str

    def run(self, args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.path, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LockError(
                f"`nft {' '.join(args)}` did not finish in {NFT_TIMEOUT:.0f} s"
            ) from exc
        except OSError as exc:
            raise LockError(f"cannot run {self.path}: {exc.strerror}") from exc


def find_nft() -> Nft:
    path = shutil.which("nft")
    if path is None:
        raise LockError(
            "the nft binary is not on PATH: install the Debian package `nftables` in the "
            "sidecar image (images/sidecar/Dockerfile does)"
        )
    return Nft(path)


def diagnose(settings: EgressSettings, stderr: str) -> str:
    """nft's error output, mapped to what the kernel or the container lacks and the fix."""
    text = stderr.strip()
    first = text.splitlines()[0] if text else "no error output"
    if any(s in text for s in _NO_PERMISSION):
        return (
            "nft was refused (Operation not permitted): the init container needs the "
            "NET_ADMIN capability (securityContext.capabilities.add: [NET_ADMIN]) and, under "
            "Pod Security Admission, a namespace at the `privileged` level or an exemption"
        )
    located = _NFT_LINE.search(text)
    if located:
        needs = needs_at(settings, int(located.group(1)))
        if needs is not None:
            return (
                f"the kernel refused the ruleset ({located.group(2).strip()}): it lacks "
                f"{needs}; use a kernel (for Kata, the guest kernel) with that feature, "
                "or load its module on the node"
            )
    if any(s in text for s in _NO_NFNETLINK):
        return (
            f"the kernel has no nf_tables ({first}): use a kernel (for Kata, the guest "
            "kernel) built with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET"
        )
    return f"nft failed: {first}"


def apply(nft: Nft, settings: EgressSettings) -> None:
    result = nft.run(["-f", "-"], stdin=render(settings))
    if result.returncode != 0:
        raise LockError(diagnose(settings, result.stderr))


def verify(nft: Nft, settings: EgressSettings) -> None:
    result = nft.run(["-j", "list", "table", FAMILY, settings.table])
    if result.returncode != 0:
        raise LockError(f"reading the table back failed: {diagnose(settings, result.stderr)}")
    try:
        doc = json.loads(result.stdout)
    except ValueError as exc:
        raise LockError(
            f"nft's readback is not JSON ({exc}); is this nft built with JSON?"
        ) from exc
    problems = check_readback(settings, doc)
    if problems:
        raise LockError(
            f"the table read back differs from the ruleset ({len(problems)} problems: "
            f"{'; '.join(problems[:3])}): another process changed it, or this kernel or nft "
            "stores it differently; compare `nft list table` with `--dry-run`"
        )


def summary(settings: EgressSettings) -> str:
    return json.dumps(
        {
            "event": "egress-locked",
            "table": f"{FAMILY} {settings.table}",
            "sidecar_uid": settings.sidecar_uid,
            "transparent_port": settings.transparent_port,
            "dns_port": settings.dns_port,
            "rules": rule_count(settings),
        },
        separators=(",", ":"),
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Lock this network namespace's egress with nftables: traffic of every uid except "
            "the sidecar's goes to the sidecar (TCP to the transparent listener, DNS to the DNS "
            "listener); other UDP is rejected and other protocols dropped; loopback stays open."
        ),
        epilog=(
            f"example: {PROG} --sidecar-uid 10000 --transparent-port 8082 --dns-port 8053. "
            "Needs root with CAP_NET_ADMIN and the nft binary (except --dry-run). Exit 0: "
            f"locked and verified; {EXIT_FAILED}: not locked (stderr says why); 2: bad arguments."
        ),
    )
    defaults = EgressSettings()
    parser.add_argument("--sidecar-uid", type=int, default=defaults.sidecar_uid, metavar="UID",
                        help="uid whose sockets stay unrestricted (default %(default)s)")  # fmt: skip
    parser.add_argument("--transparent-port", type=int, default=defaults.transparent_port,
                        metavar="PORT", help="sidecar's transparent TCP listener on loopback "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--dns-port", type=int, default=defaults.dns_port, metavar="PORT",
                        help="sidecar's DNS listener, UDP and TCP, on loopback "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="print the nft script and exit; changes nothing, needs no nft")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = EgressSettings(args.sidecar_uid, args.transparent_port, args.dns_port)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        sys.stdout.write(render(settings))
        return 0
    try:
        nft = find_nft()
        apply(nft, settings)
        verify(nft, settings)
    except LockError as exc:
        print(f"{PROG}: egress NOT locked: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(settings), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
