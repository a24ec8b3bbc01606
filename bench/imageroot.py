"""The sidecar image's root filesystem, unpacked, so the bench runs the proxy that the image ships.

The interpreter is part of what the image ships, and it matters: the image's python3.13
(Debian trixie's, built with PGO and LTO) ran the same proxy code 1.26-1.39x faster in the
bench's regimes than the host's pyenv build (no PGO, no LTO). So the bench unpacks the image
(`docker export`) and runs the proxies from it with `chroot`, as the image's user, with the image's
environment and entrypoint. A chroot keeps the bench's loopback network; a container could only
reach it with host networking, which this project's engine does not allow.

Each process gets a private mount namespace (unshare) in which the root sees the bench's hosts
file, /dev and /proc; the namespace, and so every mount, ends with the process. unshare, sh and
chroot all exec, so the PID that the bench measures is the proxy's own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from images import build
from images.engine import docker_cli, ensure_engine

log = logging.getLogger("bench.imageroot")

EXPORT_TIMEOUT = 300
APP = Path("/app")  # where images/sidecar/Dockerfile puts the repository's code
# Mount the bench's view into the root, then become the image's user inside it.
_ENTER = (
    'mount --bind "$0" "$1/etc/hosts" && mount --rbind /dev "$1/dev" && '
    'mount -t proc proc "$1/proc" && root="$1" && user="$2" && shift 2 && '
    'exec chroot --userspec="$user" "$root" "$@"'
)


@dataclass(frozen=True)
class ImageRoot:
    path: Path
    ref: str
    user: str  # uid:gid, from the image's USER
    env: dict[str, str]  # the image's ENV
    entrypoint: tuple[str, ...]

    def command(self, hosts_file: Path, argv: list[str]) -> list[str]:
        """`argv` (paths inside the root) run in the root as the image's user."""
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _ENTER, str(hosts_file), str(self.path), self.user, *argv,
        ]  # fmt: skip

    def python_version(self) -> str:
        out = subprocess.run(
            ["chroot", "--userspec", self.user, str(self.path), "python3", "-V"],
            capture_output=True, text=True, timeout=30, env={"PATH": self.env.get("PATH", "/usr/bin")},
        )  # fmt: skip
        return out.stdout.strip().removeprefix("Python ") or "?"

    def which(self, name: str) -> Path:
        """`name` on the image's PATH, as a path inside the root."""
        for folder in self.env.get("PATH", "").split(":"):
            if folder and (self.path / folder.lstrip("/") / name).exists():
                return Path(folder) / name
        raise FileNotFoundError(f"{name} is not on the PATH of {self.ref}")

    def place(self, name: str, files: dict[str, Path]) -> Path:
        """Copy `files` into a folder of the root that the image's user owns; returns the folder's
        path inside the root (for the proxy's arguments)."""
        inside = Path("/run/bench") / name
        folder = self.path / inside.relative_to("/")
        shutil.rmtree(folder, ignore_errors=True)
        copy_files(files, folder)
        uid, gid = (int(x) for x in self.user.split(":"))
        for p in [folder, *folder.rglob("*")]:
            os.chown(p, uid, gid)
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
        return inside


def copy_files(files: dict[str, Path], folder: Path) -> None:
    """`files` maps a path under `folder` to the file to copy there."""
    for target, source in files.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / target)


def unpack(work: Path) -> ImageRoot:
    """Build the sidecar image (cached layers make this quick) and unpack it under `work`."""
    engine = ensure_engine()
    try:
        ref = build.build_all(engine, only=["sidecar"], quiet=True)["sidecar"].ref
        inspect = engine.docker("image", "inspect", "--format", "{{json .Config}}", ref)
        config = json.loads(inspect.stdout)
        container = engine.docker("create", "--network", "none", ref).stdout.strip()
        root = work / "sidecar-root"
        root.mkdir()
        try:
            _export(engine.env(), container, root)
        finally:
            engine.docker("rm", container, check=False)
    finally:
        engine.stop()
    user = config.get("User") or "0:0"
    if ":" not in user:
        user = f"{user}:{user}"
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    log.info("unpacked %s into %s", ref, root)
    return ImageRoot(root, ref, user, env, tuple(config.get("Entrypoint") or ()))


def _export(docker_env: dict[str, str], container: str, root: Path) -> None:
    export = subprocess.Popen(
        [docker_cli(), "export", container], stdout=subprocess.PIPE, env=docker_env
    )
    try:
        subprocess.run(
            ["tar", "-x", "-C", str(root)], stdin=export.stdout, check=True, timeout=EXPORT_TIMEOUT
        )
    finally:
        assert export.stdout is not None
        export.stdout.close()
        if export.wait(EXPORT_TIMEOUT) != 0:
            raise RuntimeError(f"docker export {container} failed")
