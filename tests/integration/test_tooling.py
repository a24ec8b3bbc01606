"""The entry points people type: the Python finder behind the Makefile, `make run`'s script, and
the addon's options as mitmdump shows them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ManagedProcess, free_port, wait_until
from tests.support.proxy import PROXY_COMMANDS, REPO, generate_ca


def test_find_python_names_what_is_missing(tmp_path: Path) -> None:
    """With only the machine's Python 3.11 in reach, it says what to install and how."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(REPO / "scripts" / "find-python")], capture_output=True, text=True, env=env
    )
    if result.returncode == 0:  # a distribution Python >= 3.12 is installed system-wide
        version = subprocess.run(
            [result.stdout.strip(), "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
        )
        assert version.stdout.strip() == "True"
        return
    assert result.returncode == 1
    assert "no Python 3.12 or newer found" in result.stderr
    assert "PYTHON=" in result.stderr


def test_find_python_honours_PYTHON() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "scripts" / "find-python")], capture_output=True, text=True, env=env
    )
    assert result.stdout.strip() == sys.executable


def test_mitmdump_lists_the_addon_options() -> None:
    result = subprocess.run(
        [*PROXY_COMMANDS["mitmdump"], "--options"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "allowlist: ''",
        "allowed_domains: []",
        "health_host: 0.0.0.0",
        "health_port: 8081",
    ):
        assert option in result.stdout


def test_make_run_script_serves_the_default_policy(tmp_path: Path) -> None:
    state = tmp_path / "state"
    generate_ca(state / "ca")
    port, health = free_port(), free_port()
    env = {
        **os.environ,
        "STATE": str(state),
        "PORT": str(port),
        "HEALTH_PORT": str(health),
    }
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    run = ManagedProcess(
        [str(tmp_path / "scripts" / "run-dev")], tmp_path, "run-dev", env=env, cwd=tmp_path
    )
    try:
        readyz = [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://127.0.0.1:{health}/readyz",
        ]

        def ready() -> bool:
            return subprocess.run(readyz, capture_output=True, text=True).stdout == "200"

        wait_until(lambda: ready() or not run.alive(), 30, "make run's proxy")
        assert run.alive(), run.describe()
        printed = run.stdout()
        assert (
            f"curl --proxy http://127.0.0.1:{port} --cacert {state}/ca/ca.crt https://httpbin.org/get"
            in printed
        )
        assert "allowed_domains:\n  - httpbin.org" in (state / "policy.yaml").read_text()
        denied = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_connect}", "--proxy",
             f"http://127.0.0.1:{port}", "https://example.com/"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert denied.stdout == "403"
    finally:
        run.stop()
