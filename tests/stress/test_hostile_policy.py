"""Hostile policy files, reloaded into both runtimes side by side: every spelling of each attack
is refused, the last good policy stays in force, the proxy keeps serving with its memory and its
event loop intact, and nothing the file holds reaches /readyz or the logs."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from addons.policy_file import MAX_POLICY_BYTES, MAX_POLICY_NODES
from tests.stress.conftest import FULL, Report
from tests.support.hostile_files import alias_bomb
from tests.support.processes import wait_until
from tests.support.proxy import PROXY_COMMANDS, Proxy
from tests.support.testnet import LoopbackNet

SECRET = "hunter2-s3cr3t-VALUE"
LEAKS = (SECRET, "admin7", "svc9:", "$6$", "lol")
ERROR_BOUND = 400
MEMORY_GROWTH_MIB = 64  # a 50,000-node parse peaks near 30 MiB; an unbounded one at gigabytes
STALL_BOUND = 0.5

Maker = Callable[[Path], None]


def _write(text: str) -> Maker:
    return lambda p: p.write_text(text)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _symlink_to_fifo(p: Path) -> None:
    target = p.with_name(f"pipe-{time.monotonic_ns()}")
    os.mkfifo(target)
    p.symlink_to(target)


def _symlink(target: str) -> Maker:
    return lambda p: p.symlink_to(target)


def _directory(p: Path) -> None:
    p.mkdir()


def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()  # the socket file stays


def _sparse(size: int) -> Maker:
    def make(p: Path) -> None:
        with p.open("wb") as f:
            f.truncate(size)

    return make


def _padded_policy(p: Path) -> None:
    line = f"# {SECRET} padding padding padding padding padding\n"
    p.write_text("version: v1\n" + line * (MAX_POLICY_BYTES // len(line) + 1))


def _symlink_to_secret(p: Path) -> None:
    secret = p.with_name(f"shadow-{time.monotonic_ns()}")
    secret.write_text(f"admin7:$6${SECRET}$abcdefgh:19000:0:99999:7:::\nsvc9:*:1:0:9:7:::\n")
    p.symlink_to(secret)


# (class, spelling, how to make the file, what the error must say)
KINDS: list[tuple[str, str, Maker, str]] = [
    ("not a regular file", "fifo", _fifo, "FIFO"),
    ("not a regular file", "symlink-to-fifo", _symlink_to_fifo, "FIFO"),
    ("not a regular file", "dev-zero", _symlink("/dev/zero"), "character device"),
    ("not a regular file", "dev-urandom", _symlink("/dev/urandom"), "character device"),
    ("not a regular file", "directory", _directory, "a directory"),
    ("not a regular file", "socket", _socket, "a socket"),
    ("over the size cap", "sparse", _sparse(MAX_POLICY_BYTES + 1), "over the cap"),
    ("over the size cap", "sparse-1g", _sparse(1 << 30), "over the cap"),
    ("over the size cap", "valid-but-padded", _padded_policy, "over the cap"),
    ("YAML aliases", "bomb-6", _write(alias_bomb(6)), "aliases"),
    ("YAML aliases", "bomb-9", _write(alias_bomb(9)), "aliases"),
    (
        "YAML aliases",
        "anchor-only",
        _write("version: v1\nallowed_domains: &x [a.test]\n"),
        "anchors",
    ),
    ("YAML aliases", "merge-key", _write("version: v1\n<<: {allowed_ports: [1]}\n"), "merge keys"),
    (
        "duplicate keys",
        "top-level",
        _write("version: v1\nallowed_domains: [upstream.test]\nallowed_domains: ['*.test']\n"),
        "duplicate key 'allowed_domains'",
    ),
    (
        "duplicate keys",
        "quoted-spelling",
        _write('version: v1\n"allowed_ports": [1]\nallowed_ports: [2]\n'),
        "duplicate key 'allowed_ports'",
    ),
    (
        "duplicate keys",
        "nested",
        _write("version: v1\nallowed_domains: [{a: 1, a: 2}]\n"),
        "duplicate key 'a'",
    ),
    ("content in errors", "symlink-to-secret", _symlink_to_secret, "not a name"),
    (
        "content in errors",
        "yaml-snippet",
        _write(f"version: v1\nallowed_domains: [a.test, '{SECRET}\n"),
        "not valid YAML",
    ),
    (
        "content in errors",
        "tag",
        _write(f"version: v1\nallowed_domains: !{SECRET} [a]\n"),
        "not valid YAML",
    ),
    (
        "content in errors",
        "long-entry",
        _write(f"version: v1\nallowed_domains: ['{'x' * 40}{SECRET * 500}*']\n"),
        "truncated",
    ),
    (
        "content in errors",
        "binary",
        _write(f"\x7fELF\x01{SECRET}\x00\x00"),
        "control character",
    ),
    (
        "expansion",
        "many-values",
        _write("[" + ",".join(["a"] * (MAX_POLICY_NODES * 20)) + "]"),
        "YAML values",
    ),
    ("expansion", "deep-nesting", _write("[" * 100_000 + "]" * 100_000), "nested deeper"),
]
# The short form (inside `make test`) tries two spellings of each class.
SHORT = {"fifo", "dev-zero", "sparse", "valid-but-padded", "bomb-9", "merge-key", "top-level"}
SHORT |= {"nested", "symlink-to-secret", "yaml-snippet", "many-values", "deep-nesting"}


@pytest.fixture(scope="module")
def proxies(testnet: LoopbackNet, tmp_path_factory) -> Iterator[dict[str, Proxy]]:
    started: dict[str, Proxy] = {}
    for kind in sorted(PROXY_COMMANDS):
        work = tmp_path_factory.mktemp(f"hostile-policy-{kind}")
        policy = testnet.write_policy(work / "policy.yaml", "upstream.test")
        started[kind] = Proxy(kind, work, testnet.hosts_file, testnet.ca_pem, policy).start()
    yield started
    for proxy in started.values():
        proxy.stop()


def reload_errors(proxy: Proxy) -> int:
    match = re.search(
        r"^auth_proxy_policy_reload_errors_total (\d+)$", proxy.health("/metrics")[1], re.M
    )
    return int(match.group(1)) if match else -1


def peak_rss_mib(proxy: Proxy) -> float:
    assert proxy.process is not None
    status = Path(f"/proc/{proxy.process.pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) / 1024


def health_latency(proxy: Proxy) -> float:
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", proxy.health_port), timeout=3) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(100)
    except OSError:
        return 3.0
    return time.monotonic() - start


def check(proxy: Proxy, testnet: LoopbackNet, fragment: str) -> list[str]:
    """What is wrong with the proxy after a refused reload (empty when all is well)."""
    problems = []
    status, body = proxy.readyz()
    error = str(body.get("last_reload_error"))
    if status != 200 or body.get("entries") != 1:
        problems.append(f"not ready with the last policy: {status} {body}")
    if not error.startswith(str(proxy.policy)) or fragment not in error:
        problems.append(f"unclear error: {error[:200]}")
    if len(error) > ERROR_BOUND:
        problems.append(f"error of {len(error)} chars")
    text = json.dumps(body) + proxy.logs()
    problems += [f"{leak!r} leaked" for leak in LEAKS if leak in text]
    allowed = f"https://upstream.test:{testnet.tls_port}/echo"
    if proxy.status_and_headers(allowed)[0] != 200:
        problems.append("stopped serving the last policy")
    return problems


def test_hostile_policy_reloads(
    proxies: dict[str, Proxy], testnet: LoopbackNet, report: Report
) -> None:
    kinds = [k for k in KINDS if FULL or k[1] in SHORT]
    classes = sorted({k[0] for k in kinds})
    rows = {c: report.add("hostile", f"policy file: {c}", tried=0) for c in classes}
    failures: dict[str, list[str]] = {c: [] for c in classes}
    baseline = {kind: peak_rss_mib(p) for kind, p in proxies.items()}
    worst_stall = 0.0
    for cls, spelling, make, fragment in kinds:
        before = {kind: reload_errors(p) for kind, p in proxies.items()}
        for proxy in proxies.values():
            assert proxy.policy is not None
            staged = proxy.policy.with_name("staged")
            make(staged)
            if staged.is_dir():
                proxy.policy.unlink()  # rename() puts a directory only where none is
            os.replace(staged, proxy.policy)  # atomic, as the kubelet swaps ConfigMaps
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            worst_stall = max(worst_stall, *(health_latency(p) for p in proxies.values()))
            if all(reload_errors(p) > before[k] for k, p in proxies.items()):
                break
            time.sleep(0.05)
        for kind, proxy in proxies.items():
            rows[cls].tried += 1
            if reload_errors(proxy) <= before[kind]:
                failures[cls].append(f"{spelling} ({kind}): no reload error within 15 s")
                continue
            failures[cls] += [f"{spelling} ({kind}): {p}" for p in check(proxy, testnet, fragment)]
        # Each proxy's path goes back to a plain file, so the next kind's swap is a change.
        for proxy in proxies.values():
            assert proxy.policy is not None
            if proxy.policy.is_dir() and not proxy.policy.is_symlink():
                proxy.policy.rmdir()
    growth = {kind: peak_rss_mib(p) - baseline[kind] for kind, p in proxies.items()}
    for cls in classes:
        rows[cls].errors = len(failures[cls])
        rows[cls].detail = (
            "refused, last policy kept, nothing leaked"
            if not failures[cls]
            else failures[cls][0][:80]
        )
        rows[cls].passed = not failures[cls]
    memory = report.add("hostile", "policy file: memory and event loop", tried=len(kinds))
    memory.detail = (
        f"peak RSS +{max(growth.values()):.0f} MiB, longest /healthz {worst_stall * 1000:.0f} ms"
    )
    memory.passed = max(growth.values()) < MEMORY_GROWTH_MIB and worst_stall < STALL_BOUND
    assert all(not f for f in failures.values()), json.dumps(failures, indent=1)
    assert max(growth.values()) < MEMORY_GROWTH_MIB, growth
    assert worst_stall < STALL_BOUND, f"/healthz took {worst_stall:.2f} s during a reload"
    for proxy in proxies.values():
        wait_until(lambda p=proxy: p.health("/healthz")[0] == 200, 5, "/healthz")
