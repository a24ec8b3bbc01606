"""Build the project's images: ``python -m images.build`` (what ``make images`` runs).

Steps, each skipped when its result is already there:
1. a Docker engine (`images.engine.ensure_engine`; one started here is stopped at the end);
2. the wheels pinned in images/sidecar/requirements.lock and pip.lock (exact versions, sha256
   checked) for the image's Python (cp313, manylinux, this machine's architecture), downloaded
   on the host into ``.state/wheels/sidecar``, which the root ``.dockerignore`` lets into the
   build context (``python -m images.lock`` regenerates the lock);
3. every base image a Dockerfile's FROM names that the engine lacks, or holds as a stand-in
   made from an older recipe (`images.base`);
4. ``docker build --network none -f images/<x>/Dockerfile .`` with the repository root as context.

Tags: ``auth-proxy:$IMAGE_TAG`` and ``sandbox-executor:$IMAGE_TAG`` (IMAGE_TAG defaults to dev).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from images.base import ensure_base, from_images
from images.engine import Engine, ensure_engine

log = logging.getLogger("images.build")

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state"
BASE_CACHE = STATE / "base"
WHEELS = STATE / "wheels" / "sidecar"
SIDECAR = ROOT / "images" / "sidecar"
# Exact versions and wheel hashes of the image's dependencies, and of the pip that installs them.
SIDECAR_LOCKS = (SIDECAR / "requirements.lock", SIDECAR / "pip.lock")
# The Python of python:3.13-slim-trixie and of Debian trixie's python3.
IMAGE_PYTHON = "3.13"
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class ImageSpec:
    key: str
    name: str
    dockerfile: str
    needs_wheels: bool


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("sidecar", "auth-proxy", "images/sidecar/Dockerfile", needs_wheels=True),
    ImageSpec("executor", "sandbox-executor", "images/executor/Dockerfile", needs_wheels=False),
)


@dataclass(frozen=True)
class Built:
    key: str
    ref: str
    seconds: float
    size_bytes: int


def image_tag() -> str:
    return os.environ.get("IMAGE_TAG") or "dev"


def image_refs(tag: str | None = None) -> dict[str, str]:
    """``{"sidecar": "auth-proxy:TAG", "executor": "sandbox-executor:TAG"}``."""
    tag = tag or image_tag()
    return {spec.key: f"{spec.name}:{tag}" for spec in IMAGES}


def machine_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)


def _wheel_platforms(arch: str | None = None) -> list[str]:
    arch = arch or machine_arch()
    return [f"manylinux_2_{minor}_{arch}" for minor in (39, 36, 34, 31, 28, 27, 26, 24, 17)] + [
        f"manylinux2014_{arch}",
        f"linux_{arch}",
    ]


def pip_download_command(
    dest: Path, python_version: str = IMAGE_PYTHON, arch: str | None = None
) -> list[str]:
    """`pip download` of binary wheels for the image's Python on `arch`; add what to download."""
    abi = "cp" + python_version.replace(".", "")
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--dest", str(dest), "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp",
        "--abi", abi, "--abi", "abi3", "--abi", "none",
        *(arg for p in _wheel_platforms(arch) for arg in ("--platform", p)),
    ]  # fmt: skip


def download_wheels(
    dest: Path = WHEELS,
    locks: Sequence[Path] = SIDECAR_LOCKS,
    python_version: str = IMAGE_PYTHON,
    refresh: bool = False,
) -> Path:
    """The wheels pinned in `locks` for the image's Python, on the host, their hashes checked.

    Reused as long as the locks and the target are unchanged, so a rerun needs no index.
    """
    platforms = _wheel_platforms()
    stamp_text = "\n".join([*(lock.read_text() for lock in locks), python_version, *platforms])
    digest = hashlib.sha256(stamp_text.encode()).hexdigest()
    stamp = dest / ".stamp"
    if not refresh and stamp.exists() and stamp.read_text() == digest:
        log.info("wheels: reusing %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wheels-", dir=dest.parent))
    # --no-deps: the lock already lists every dependency; nothing outside it may come in.
    cmd = [
        *pip_download_command(tmp, python_version),
        "--require-hashes", "--no-deps",
        *(arg for lock in locks for arg in ("-r", str(lock))),
    ]  # fmt: skip
    log.info("wheels: pip download for cp%s %s", python_version, platforms[0])
    started = time.monotonic()
    try:
        subprocess.run(cmd, check=True, timeout=900)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".stamp").write_text(digest)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    count = len(list(dest.glob("*.whl")))
    log.info("wheels: %d in %s (%.0f s)", count, dest, time.monotonic() - started)
    return dest


def _build_env(engine: Engine) -> dict[str, str]:
    """Use BuildKit when the client has buildx, else the classic builder (Debian's docker.io)."""
    if "DOCKER_BUILDKIT" in os.environ:
        return {}
    has_buildx = engine.docker("buildx", "version", check=False, timeout=30).returncode == 0
    return {} if has_buildx else {"DOCKER_BUILDKIT": "0"}


def build_image(
    engine: Engine,
    spec: ImageSpec,
    tag: str | None = None,
    quiet: bool = False,
    no_cache: bool = False,
) -> Built:
    """Build one image with the repository root as context, with no network during the build."""
    ref = f"{spec.name}:{tag or image_tag()}"
    dockerfile = ROOT / spec.dockerfile
    for base in from_images(dockerfile):
        ensure_base(engine, base, BASE_CACHE)
    cmd = [
        "build", "--network", "none", "--file", str(dockerfile), "--tag", ref,
        "--label", "org.opencontainers.image.source=sandbox-auth-proxy",
        "--label", f"org.opencontainers.image.title={spec.name}",
    ]  # fmt: skip
    if no_cache:
        cmd.append("--no-cache")
    if quiet:
        cmd.append("--quiet")
    cmd.append(str(ROOT))
    log.info("building %s from %s", ref, spec.dockerfile)
    started = time.monotonic()
    proc = engine.docker(
        *cmd, check=False, capture=quiet, timeout=BUILD_TIMEOUT, env=_build_env(engine)
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        detail = f":\n{(proc.stdout or '')[-3000:]}{(proc.stderr or '')[-3000:]}" if quiet else ""
        raise RuntimeError(f"docker build of {ref} failed ({proc.returncode}){detail}")
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())
    log.info("built %s in %.0f s, %.1f MB", ref, seconds, size / 1e6)
    return Built(spec.key, ref, seconds, size)


def build_all(
    engine: Engine,
    tag: str | None = None,
    only: Sequence[str] | None = None,
    quiet: bool = False,
    no_cache: bool = False,
    refresh_wheels: bool = False,
) -> dict[str, Built]:
    """Build the images (all, or the keys in `only`: "sidecar", "executor") on `engine`."""
    specs = [s for s in IMAGES if not only or s.key in only]
    if any(s.needs_wheels for s in specs):
        download_wheels(refresh=refresh_wheels)
    return {s.key: build_image(engine, s, tag, quiet=quiet, no_cache=no_cache) for s in specs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m images.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tag", default=None, help="image tag (default: $IMAGE_TAG or dev)")
    parser.add_argument(
        "--only", action="append", choices=[s.key for s in IMAGES], help="build only this image"
    )
    parser.add_argument("--no-cache", action="store_true", help="docker build --no-cache")
    parser.add_argument("--refresh-wheels", action="store_true", help="download wheels again")
    parser.add_argument("--quiet", action="store_true", help="hide docker build output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    started = time.monotonic()
    engine = ensure_engine()
    try:
        built = build_all(
            engine,
            tag=args.tag,
            only=args.only,
            quiet=args.quiet,
            no_cache=args.no_cache,
            refresh_wheels=args.refresh_wheels,
        )
    finally:
        engine.stop()
    for b in built.values():
        print(f"{b.ref}\t{b.size_bytes / 1e6:.1f} MB\tbuilt in {b.seconds:.0f} s")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
