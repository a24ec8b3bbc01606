"""The Docker engine and the project's images, shared by tests/containers and tests/e2e.

Registered once for the whole session from ``tests/conftest.py`` (``pytest_plugins``), so a
``pytest tests`` run starts (or finds) ONE engine and builds the images once for both layers.

Everything the tests create carries the label ``auth-proxy-tests=<session id>`` and is removed at
the end of the session, even when tests fail; an engine started here is stopped again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from images.build import build_all, image_refs
from images.engine import Engine, EngineError, ensure_engine

LABEL = "auth-proxy-tests"


@dataclass
class Docker:
    """The engine plus bookkeeping of what this session created."""

    engine: Engine
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def label(self) -> str:
        return f"{LABEL}={self.session}"

    def __call__(self, *args: str, check: bool = True, timeout: float = 120):
        return self.engine.docker(*args, check=check, timeout=timeout)

    def name(self, role: str) -> str:
        return f"apt-{self.session}-{role}-{uuid.uuid4().hex[:4]}"

    def run(self, image: str, *args: str, name: str, options: list[str]) -> str:
        """``docker run -d`` with the session label; returns the container name."""
        self("run", "-d", "--name", name, "--label", self.label, *options, image, *args)
        return name

    def run_once(self, image: str, *args: str, options: list[str], timeout: float = 180):
        """``docker run --rm`` (labelled), returning the CompletedProcess."""
        return self.engine.docker(
            "run", "--rm", "--label", self.label, *options, image, *args,
            check=False, timeout=timeout,
        )  # fmt: skip

    def exec(self, container: str, *args: str, timeout: float = 60, env: dict | None = None):
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        return self.engine.docker("exec", *env_args, container, *args, check=False, timeout=timeout)

    def exec_json(self, container: str, *args: str) -> dict:
        proc = self.exec(container, *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def logs(self, container: str) -> str:
        proc = self("logs", container, check=False)
        return proc.stdout + proc.stderr

    def remove(self, *containers: str) -> None:
        if containers:
            self("rm", "-f", *containers, check=False, timeout=60)

    def cleanup(self) -> None:
        ids = self("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        self.remove(*ids)
        nets = self("network", "ls", "-q", "--filter", f"label={self.label}", check=False)
        for net in nets.stdout.split():
            self("network", "rm", net, check=False)


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    if shutil.which("docker") is None and os.geteuid() != 0:
        pytest.skip("no docker client, and not root to install one")
    try:
        engine = ensure_engine()
    except (EngineError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"no Docker engine: {exc}")
    d = Docker(engine)
    try:
        yield d
    finally:
        try:
            d.cleanup()
        finally:
            engine.stop()


@pytest.fixture(scope="session")
def images(docker: Docker) -> dict[str, str]:
    """Build both images the way `make images` does; returns {"sidecar": ref, "executor": ref}."""
    build_all(docker.engine, quiet=True)
    return image_refs()


def wait_for(
    predicate: Callable[[], object], timeout: float, interval: float = 0.25, what: str = ""
):
    """Poll `predicate` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    for _ in range(int(timeout / interval) + 2):
        with contextlib.suppress(AssertionError, ValueError, KeyError):
            last = predicate()
            if last:
                return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}: {last!r}")
