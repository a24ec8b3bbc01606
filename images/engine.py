"""Find a Docker engine, or start a private one that leaves the host's network alone.

Used by `python -m images.build` (`make images`), by `tests/containers` and by the end-to-end
tests. The rules:

* An engine that already answers (``DOCKER_HOST``, else the default socket) is used as it is and
  never stopped by us.
* Otherwise Debian's ``dockerd`` is started with its own data root, exec root, pid file and
  socket under ``AUTH_PROXY_DOCKER_ROOT`` (default ``/var/lib/auth-proxy-docker``), and with
  ``--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none``: no
  iptables rules, no ``docker0`` bridge, ``ip_forward`` untouched. Containers on such an engine
  can only use ``--network none``, ``--network container:X`` or ``--internal`` networks.
  The data root persists across runs on purpose: the image and build caches make reruns fast.
* An engine that we started is stopped again (SIGTERM to its pid, then SIGKILL after a bounded
  wait) by ``Engine.stop()`` or by leaving ``with ensure_engine() as engine:``.

Example::

    from images.engine import ensure_engine
    with ensure_engine() as engine:
        engine.docker("run", "--rm", "--network", "none", "sandbox-executor:dev", "true")
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger("images.engine")

DEFAULT_ROOT = Path(os.environ.get("AUTH_PROXY_DOCKER_ROOT", "/var/lib/auth-proxy-docker"))
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PROBE_TIMEOUT = 10.0

# Options that keep a started engine off the host's network configuration.
SAFE_DOCKERD_OPTIONS = (
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--bridge=none",
    "--userland-proxy=false",
    "--shutdown-timeout=5",
)


class EngineError(RuntimeError):
    """No Docker engine could be found or started."""


def docker_cli() -> str:
    """The docker client to run (``DOCKER_CLI`` overrides the one found on PATH)."""
    cli = os.environ.get("DOCKER_CLI") or shutil.which("docker")
    if not cli:
        raise EngineError("no `docker` client on PATH (apt-get install docker.io)")
    return cli


@dataclass
class Engine:
    """A Docker engine that answers on `docker_host`."""

    docker_host: str
    started_by_us: bool = False
    pid: int | None = None
    root: Path | None = None
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``os.environ`` with DOCKER_HOST pointing at this engine (for subprocesses)."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.docker_host
        env.pop("DOCKER_CONTEXT", None)
        if extra:
            env.update(extra)
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = 300,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine. Text output; raises on failure if `check`."""
        cmd = [docker_cli(), *args]
        if isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.run(
            cmd,
            env=self.env(env),
            text=True,
            capture_output=capture,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, cmd, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def answers(self) -> bool:
        return _answers(self.docker_host)

    def stop(self) -> None:
        """Stop the engine if we started it (idempotent); leave a foreign engine alone."""
        if not self.started_by_us or self._stopped or self.pid is None:
            return
        self._stopped = True
        log.info("stopping dockerd pid %d", self.pid)
        _terminate(self.pid, STOP_TIMEOUT)
        if self.root is not None:
            # dockerd removes these on a clean exit; after a SIGKILL they would mislead the next run.
            for stale in (self.root / "docker.pid", self.root / "docker.sock"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _answers(docker_host: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when an engine answers `docker version` on `docker_host`."""
    if docker_host.startswith("unix://") and not Path(docker_host[len("unix://") :]).exists():
        return False
    env = dict(os.environ, DOCKER_HOST=docker_host)
    env.pop("DOCKER_CONTEXT", None)
    try:
        proc = subprocess.run(
            [docker_cli(), "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.2)
    log.warning("dockerd pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _pid_alive(pid):
            return
        time.sleep(0.1)


def find_engine() -> Engine | None:
    """An engine that already answers: ``DOCKER_HOST`` if set, else the default socket."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        if _answers(host):
            return Engine(docker_host=host)
        log.warning("DOCKER_HOST=%s does not answer", host)
        return None
    if _answers(DEFAULT_SOCKET):
        return Engine(docker_host=DEFAULT_SOCKET)
    return None


def install_packages(packages: Sequence[str]) -> None:
    """``apt-get install`` packages whose commands are missing, without starting any service.

    A ``policy-rc.d`` that answers 101 keeps Debian's postinst from starting ``docker.service``
    (which would run dockerd with default options, i.e. iptables rules and ip_forward=1).
    """
    if os.geteuid() != 0:
        raise EngineError(f"need root to apt-get install {' '.join(packages)}")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text(
            "#!/bin/sh\n# written by images/engine.py during apt-get install\nexit 101\n"
        )
        policy.chmod(0o755)
        made_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        log.info("installing %s", " ".join(packages))
        if subprocess.run(cmd, env=env, check=False, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True, timeout=600)
            subprocess.run(cmd, env=env, check=True, timeout=900)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


def _ip_forward() -> str | None:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        return None


def start_engine(root: Path = DEFAULT_ROOT, timeout: float = START_TIMEOUT) -> Engine:
    """Start a private dockerd under `root` (or reuse the one already running there)."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        install_packages(["docker.io"])
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineError("dockerd is still missing after apt-get install docker.io")
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    host = f"unix://{sock}"
    log_path = root / "dockerd.log"
    # One starter at a time per root; a second caller finds the engine of the first one.
    with open(root / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(host):
            log.info("reusing the engine already running at %s", host)
            return Engine(docker_host=host, root=root, log_path=log_path)
        pidfile = root / "docker.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                old = int(pidfile.read_text().strip())
                if _pid_alive(old):
                    log.warning("dockerd pid %d under %s does not answer; stopping it", old, root)
                    _terminate(old, STOP_TIMEOUT)
            pidfile.unlink(missing_ok=True)
        sock.unlink(missing_ok=True)
        forward_before = _ip_forward()
        cmd = [
            dockerd,
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={pidfile}",
            f"--host={host}",
            *SAFE_DOCKERD_OPTIONS,
        ]
        log.info("starting %s (log: %s)", " ".join(cmd), log_path)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C does not hit dockerd mid-write
            )
        engine = Engine(
            docker_host=host, started_by_us=True, pid=proc.pid, root=root, log_path=log_path
        )
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise EngineError(
                    f"dockerd exited with {proc.returncode}; see {log_path}:\n{_tail(log_path)}"
                )
            if _answers(host, timeout=5):
                break
            if time.monotonic() > deadline:
                engine.stop()
                raise EngineError(
                    f"dockerd did not answer within {timeout:.0f} s; see {log_path}:\n"
                    f"{_tail(log_path)}"
                )
            time.sleep(0.3)
        forward_after = _ip_forward()
        if forward_before != forward_after:
            log.error("ip_forward changed from %s to %s", forward_before, forward_after)
        log.info("dockerd pid %d answers at %s", proc.pid, host)
        return engine


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_engine(root: Path = DEFAULT_ROOT) -> Engine:
    """The running engine, or a private one started under `root` (``engine.started_by_us``)."""
    return find_engine() or start_engine(root)


@contextlib.contextmanager
def engine_session(root: Path = DEFAULT_ROOT) -> Iterator[Engine]:
    """``with engine_session() as engine:`` — stops the engine at the end if it started it."""
    engine = ensure_engine(root)
    try:
        yield engine
    finally:
        engine.stop()
