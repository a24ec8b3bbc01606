"""Base images without a registry: Debian trixie root filesystems made with mmdebstrap.

When the image that a Dockerfile's ``FROM`` names is absent from the engine (and no registry is
reachable, as on this project's machines), `ensure_base` makes an equivalent one with
``mmdebstrap --variant=minbase trixie`` from the apt mirror the host already uses, and tags it
with the ``FROM`` name via ``docker import``. The tarballs are cached under ``.state/base/``,
keyed by everything that goes into them, so a rerun only needs ``docker import`` (or nothing).

An imported stand-in carries the label ``BASE_LABEL`` with a digest of its recipe. A stand-in
whose recipe changed since (a package added, say) is imported again, so a build never runs on a
base that lacks what the Dockerfile expects; an image that is not a stand-in (pulled from a
registry) is left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from images.engine import Engine, install_packages

log = logging.getLogger("images.base")

SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Documentation, manual pages and translations are not needed in a container image.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
MMDEBSTRAP_TIMEOUT = 900
BASE_LABEL = "org.sandbox-auth-proxy.base-spec"
STAND_IN = "offline stand-in"  # the start of an imported stand-in's comment
# A stock workload image for the e2e tests: no registry holds it, so it is always made here.
STOCK_CURL_PYTHON = "debian:trixie-slim-curl-python"
# The toolchain matrix's clients (images/toolchains/Dockerfile), for the e2e tests only.
TOOLCHAINS_BASE = "debian:trixie-slim-toolchains"


@dataclass(frozen=True)
class BaseSpec:
    """An offline stand-in for a registry image."""

    ref: str
    packages: tuple[str, ...]
    description: str
    # `docker import --change` instructions (the upstream images' relevant config).
    changes: tuple[str, ...] = ("ENV LANG=C.UTF-8", 'CMD ["bash"]')
    # mmdebstrap --essential-hook commands ("$1" is the root), run before `packages` install.
    essential_hooks: tuple[str, ...] = ()


BASES: dict[str, BaseSpec] = {
    spec.ref: spec
    for spec in (
        BaseSpec(
            ref="python:3.13-slim-trixie",
            # nftables: the sidecar image's egress lock (`auth-proxy-lock-egress`) runs nft.
            packages=("python3", "ca-certificates", "nftables"),
            description="Debian trixie minbase + python3 (3.13) + ca-certificates + nftables",
            changes=("ENV LANG=C.UTF-8", 'CMD ["python3"]'),
        ),
        BaseSpec(
            ref="debian:trixie-slim",
            packages=(
                "bash",
                "ca-certificates",
                "curl",
                "git",
                "nodejs",
                "openssl",
                "python3",
                "python3-requests",
            ),
            description="Debian trixie minbase + the executor's packages",
        ),
        # Tests only (tests/e2e/test_stock_image.py): a workload image with nothing of ours, no
        # CA, no entrypoint; just what a stock image offers (curl, python3, the system roots).
        BaseSpec(
            ref=STOCK_CURL_PYTHON,
            packages=("ca-certificates", "curl", "python3"),
            description="Debian trixie minbase + curl + python3 + ca-certificates (tests only)",
            # Idle until the test execs into it, as a pod's workload would be given a command.
            changes=("ENV LANG=C.UTF-8", 'CMD ["sleep", "infinity"]'),
        ),
        # Tests only (images/toolchains, tests/e2e/test_toolchains.py): the clients of the trust
        # matrix, every one from Debian. Never a base of the executor or the sidecar.
        BaseSpec(
            ref=TOOLCHAINS_BASE,
            packages=(
                "bash",
                "ca-certificates",
                "curl",
                "git",
                "golang-go",
                "nodejs",
                "npm",
                "openjdk-21-jdk-headless",
                "openssl",
                "python3",
                "python3-httpx",
                "python3-pip",
                "python3-requests",
                "ruby",
                "wget",
            ),
            description="Debian trixie minbase + the toolchain matrix's clients (tests only)",
            # The JDK's postinst links its man pages as alternatives, and fails when the
            # directory is missing (DPKG_OPTIONS drops /usr/share/man): Debian bug 863199.
            essential_hooks=('mkdir -p "$1/usr/share/man/man1"',),
        ),
    )
}


def from_images(dockerfile: Path) -> list[str]:
    """The external images that a Dockerfile's FROM lines name (stage names excluded)."""
    refs: list[str] = []
    stages: set[str] = set()
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        m = re.match(r"(?i)^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", line)
        if not m:
            continue
        ref, stage = m.group(1), m.group(2)
        if ref.lower() not in stages and ref not in refs and ref != "scratch":
            refs.append(ref)
        if stage:
            stages.add(stage.lower())
    return refs


def apt_mirror() -> str:
    """The Debian mirror the host's apt uses (``AUTH_PROXY_DEBIAN_MIRROR`` overrides it)."""
    override = os.environ.get("AUTH_PROXY_DEBIAN_MIRROR")
    if override:
        return override
    candidates: list[str] = []
    sources = Path("/etc/apt/sources.list.d")
    files = sorted(sources.glob("*.sources")) if sources.is_dir() else []
    for path in files:  # deb822 stanzas
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            suites = fields.get("suites", "").split()
            if any("security" in s for s in suites):
                continue
            candidates += fields.get("uris", "").split()
    legacy = [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]
    for path in legacy:  # one-line format
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[2]:
                candidates.append(parts[1])
    for uri in candidates:
        if re.search(r"/debian/?$", uri):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _hooks(spec: BaseSpec) -> list:
    # Only a spec with hooks adds them, so the other specs' digests and cache keys stay as they were.
    return [list(spec.essential_hooks)] if spec.essential_hooks else []


def spec_digest(spec: BaseSpec) -> str:
    """What the stand-in is made of (not where from: another mirror gives the same image)."""
    blob = json.dumps(
        [SUITE, sorted(spec.packages), DPKG_OPTIONS, spec.changes, *_hooks(spec)], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_state(spec: BaseSpec, labels: dict[str, str] | None, comment: str | None) -> str:
    """How an image the engine has relates to `spec`.

    ``current``: made from `spec` as it is now; ``stale``: a stand-in made from an older recipe
    (or before stand-ins were labelled); ``foreign``: not a stand-in (pulled from a registry).
    """
    labels = labels or {}
    if labels.get(BASE_LABEL) == spec_digest(spec):
        return "current"
    if BASE_LABEL in labels or (comment or "").startswith(STAND_IN):
        return "stale"
    return "foreign"


def _cache_key(spec: BaseSpec, mirror: str) -> str:
    blob = json.dumps(
        [SUITE, sorted(spec.packages), DPKG_OPTIONS, spec.changes, mirror, *_hooks(spec)],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rootfs_tarball(spec: BaseSpec, cache_dir: Path) -> Path:
    """The cached root filesystem tarball for `spec`, made with mmdebstrap when missing."""
    mirror = apt_mirror()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.ref)
    tarball = cache_dir / f"{name}-{_cache_key(spec, mirror)}.tar"
    if tarball.exists():
        log.info("base %s: cached rootfs %s", spec.ref, tarball)
        return tarball
    if shutil.which("mmdebstrap") is None:
        install_packages(["mmdebstrap"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".tar.partial")
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root" if os.geteuid() == 0 else "--mode=auto",
        "--format=tar",
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTIONS),
        f"--include={','.join(spec.packages)}",
        *(f"--essential-hook={hook}" for hook in spec.essential_hooks),
        SUITE,
        str(partial),
        mirror,
    ]
    log.info("base %s: %s", spec.ref, " ".join(cmd))
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"mmdebstrap failed for {spec.ref} ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    partial.rename(tarball)
    log.info("base %s: rootfs made in %.0f s", spec.ref, time.monotonic() - started)
    return tarball


def _inspect(engine: Engine, ref: str) -> dict | None:
    proc = engine.docker("image", "inspect", ref, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def ensure_base(engine: Engine, ref: str, cache_dir: Path) -> str:
    """Make sure image `ref` exists, and is current if it is our stand-in.

    Returns "present", "imported" or "reimported" (a stale stand-in replaced); raises for an
    absent image without a recipe.
    """
    spec = BASES.get(ref)
    info = _inspect(engine, ref)
    if info is not None:
        if spec is None:
            return "present"
        state = base_state(spec, (info.get("Config") or {}).get("Labels"), info.get("Comment"))
        if state != "stale":
            return "present"
        log.info("base %s: the engine's stand-in has another recipe; importing it again", ref)
    elif spec is None:
        raise RuntimeError(
            f"base image {ref} is absent and no offline recipe exists for it "
            f"(known: {', '.join(sorted(BASES))}); pull it or add it to images/base.py"
        )
    tarball = rootfs_tarball(spec, cache_dir)
    args = ["import"]
    for change in (*spec.changes, f"LABEL {BASE_LABEL}={spec_digest(spec)}"):
        args += ["--change", change]
    args += ["--message", f"{STAND_IN}: {spec.description}", str(tarball), ref]
    engine.docker(*args, timeout=600)
    log.info("base %s: imported from %s", ref, tarball)
    return "imported" if info is None else "reimported"
