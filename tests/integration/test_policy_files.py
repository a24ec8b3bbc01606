"""A policy file that cannot be trusted, in both runtimes: at start-up it ends the proxy at once
with a clear error; on reload it is refused, the last good policy stays in force, the proxy keeps
serving, and neither /readyz nor the logs show what the file holds. A large policy reloads
without stalling the event loop."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from addons.policy_file import MAX_POLICY_BYTES
from tests.support.hostile_files import alias_bomb
from tests.support.processes import wait_until
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet

SECRET = "hunter2-s3cr3t-VALUE"
SHADOW = f"admin7:$6${SECRET}$abcdefghijklmnop:19000:0:99999:7:::\nsvc9:*:19001:0:99999:7:::\n"
ERROR_BOUND = 400  # the file, the problem and the fix, plus at most a short excerpt
RELOAD_BOUND = 10.0


BOMB = alias_bomb(6)  # 531,441 strings once expanded


def swap_in(path: Path, make: Callable[[Path], None]) -> None:
    """Replace the policy at `path` atomically (as the kubelet does) by what `make` creates."""
    staged = path.with_name("staged")
    make(staged)
    os.replace(staged, path)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _symlink_to_fifo(p: Path) -> None:
    os.mkfifo(p.with_name("pipe"))
    p.symlink_to(p.with_name("pipe"))


def _oversized(p: Path) -> None:
    # A valid policy, but far over the cap: padded with comments that hold a secret.
    line = f"# {SECRET} padding padding padding padding padding padding\n"
    body = "version: v1\nallowed_domains: [upstream.test, www.wild.test]\n"
    p.write_text(body + line * (MAX_POLICY_BYTES // len(line) + 10))


def _alias_bomb(p: Path) -> None:
    p.write_text(BOMB)


def _duplicate_key(p: Path, ports: str = "") -> None:
    # Read naively, the second key silently wins and widens the policy.
    p.write_text(
        "version: v1\nallowed_domains: [upstream.test]\n"
        "allowed_domains: [upstream.test, www.wild.test]\n" + ports
    )


def _symlink_to_secret(p: Path) -> None:
    secret = p.with_name("shadow")
    secret.write_text(SHADOW)
    p.symlink_to(secret)


def _yaml_snippet(p: Path) -> None:
    p.write_text(f"version: v1\nallowed_domains: [upstream.test, '{SECRET}\n")


def _long_entry(p: Path) -> None:
    p.write_text(f"version: v1\nallowed_domains: ['{'x' * 40}{SECRET * 1000}*']\n")


HOSTILE = [
    pytest.param(_fifo, "FIFO", id="fifo"),
    pytest.param(_symlink_to_fifo, "FIFO", id="symlink-to-fifo"),
    pytest.param(_oversized, f"cap of {MAX_POLICY_BYTES} bytes", id="oversized"),
    pytest.param(_alias_bomb, "aliases", id="alias-bomb"),
    pytest.param(_duplicate_key, "duplicate key 'allowed_domains'", id="duplicate-key"),
    pytest.param(_symlink_to_secret, "not a name", id="symlink-to-secret"),
    pytest.param(_yaml_snippet, "not valid YAML at line", id="yaml-error-snippet"),
    pytest.param(_long_entry, "truncated", id="long-entry"),
]


def assert_no_file_content(text: str) -> None:
    for secret in (SECRET, "admin7", "svc9:", "$6$", "lol"):
        assert secret not in text, f"{secret!r} leaked: {text[:300]}"


def health_latency(proxy: Proxy, timeout: float) -> float:
    """Seconds one /healthz request takes (`timeout` if it gets no answer in time)."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", proxy.health_port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(100)
    except OSError:
        return timeout
    return time.monotonic() - start


@pytest.mark.parametrize(("make", "fragment"), HOSTILE)
def test_hostile_policy_at_start_exits_fast_with_a_clear_error(
    make_proxy, tmp_path: Path, make, fragment: str
) -> None:
    policy = tmp_path / "policy.yaml"
    make(policy)
    proxy = make_proxy(policy, wait_ready=False)
    wait_until(lambda: not proxy.process.alive(), 30, "the proxy to exit")
    assert proxy.process.proc.returncode != 0
    logs = proxy.logs()
    assert str(policy) in logs and fragment in logs, logs[-2000:]
    assert_no_file_content(logs)
    assert len(logs) < 20_000, "the error grew with the file"


@pytest.mark.parametrize(("make", "fragment"), HOSTILE)
def test_hostile_reload_keeps_the_last_good_policy(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, make, fragment: str
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy)
    allowed = f"https://upstream.test:{testnet.tls_port}/echo"
    denied = f"https://www.wild.test:{testnet.tls_port}/echo"

    swap_in(policy, make)

    def reported() -> bool:
        return bool(proxy.readyz()[1].get("last_reload_error"))

    wait_until(reported, RELOAD_BOUND, "/readyz to report the reload error")
    status, body = proxy.readyz()
    assert status == 200 and body["entries"] == 1, body
    error = body["last_reload_error"]
    assert error.startswith(str(policy)) and fragment in error, error
    assert len(error) <= ERROR_BOUND, error
    assert proxy.status_and_headers(allowed)[0] == 200
    assert proxy.status_and_headers(denied)[1].get("x-proxy-error") == "blocked-by-allowlist"
    assert proxy.health("/healthz")[0] == 200
    assert_no_file_content(json.dumps(body))
    assert_no_file_content(proxy.logs())
    failed = [e for e in proxy.events("policy-reload") if e["ok"] is False]
    assert failed and failed[-1]["error"] == error


def test_good_policy_after_a_hostile_one_loads(
    make_proxy, testnet: LoopbackNet, tmp_path: Path
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy)
    swap_in(policy, _fifo)
    wait_until(lambda: proxy.readyz()[1].get("last_reload_error"), RELOAD_BOUND, "the error")
    swap_in(policy, lambda p: testnet.write_policy(p, "upstream.test", "*.wild.test"))
    url = f"https://www.wild.test:{testnet.tls_port}/echo"
    wait_until(lambda: proxy.status_and_headers(url)[0] == 200, RELOAD_BOUND, "the new policy")
    assert proxy.readyz()[1]["last_reload_error"] is None


def test_large_policy_reload_does_not_stall_the_event_loop(
    make_proxy, testnet: LoopbackNet, tmp_path: Path
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy)
    # Near the cap and slow to parse (about a second here), yet a valid policy: 30,000 blank
    # lines and comments after its entries.
    text = testnet.policy_text("upstream.test", "*.wild.test")
    padding = ("#" * 100 + "\n\n") * ((MAX_POLICY_BYTES - len(text)) // 102 - 10)
    swap_in(policy, lambda p: p.write_text(text + padding))

    latencies = []
    deadline = time.monotonic() + RELOAD_BOUND
    while time.monotonic() < deadline:
        latencies.append(health_latency(proxy, timeout=3.0))
        if proxy.events("policy-reload"):
            break
        time.sleep(0.02)
    reloads = proxy.events("policy-reload")
    assert reloads and reloads[-1]["ok"] is True, reloads
    assert reloads[-1]["entries"] == 2
    assert max(latencies) < 0.5, f"/healthz stalled for {max(latencies):.2f} s while loading"
