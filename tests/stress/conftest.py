"""The stress suite: load held, faults survived, hostile input refused.

`make stress` (STRESS_FULL=1) runs the full sizes; without it the same categories run scaled
down, inside `make test`. Every test records what it did in the session's `report`, printed as one
table at the end of the run.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import free_port
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet, start_upstream

FULL = os.environ.get("STRESS_FULL") == "1"


def scale(short: int, full: int) -> int:
    return full if FULL else short


@dataclass
class Row:
    category: str
    name: str
    detail: str
    tried: int = 0
    errors: int = 0
    lost: int = 0
    passed: bool = False


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, category: str, name: str, detail: str = "", tried: int = 0) -> Row:
        row = Row(category, name, detail, tried)
        self.rows.append(row)
        return row


_REPORT = Report()


@pytest.fixture(scope="session")
def report() -> Report:
    return _REPORT


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = _REPORT.rows
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    write(f"stress suite ({'full' if FULL else 'short'} form)")
    head = (
        f"{'category':<11} {'check':<34} {'tried':>7} {'errors':>6} {'lost':>5} {'ok':>3}  detail"
    )
    write(head)
    write("-" * len(head))
    for r in rows:
        write(
            f"{r.category:<11} {r.name[:34]:<34} {r.tried:>7} {r.errors:>6} {r.lost:>5} "
            f"{'yes' if r.passed else 'NO':>3}  {r.detail}"
        )
    totals = {
        c: [x for x in rows if x.category == c] for c in ("load", "fault", "hostile", "secrets")
    }
    write("-" * len(head))
    load = ", ".join(r.detail for r in totals["load"] if r.passed)
    write(f"load held:                   {load or 'none'}")
    write(
        f"faults survived:             {sum(r.passed for r in totals['fault'])}"
        f"/{len(totals['fault'])}"
    )
    write(f"bad inputs tried:            {sum(r.tried for r in totals['hostile'])}")
    write(f"errors:                      {sum(r.errors for r in rows)}")
    write(f"requests lost or corrupted:  {sum(r.lost for r in rows)}")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


raise_fd_limit()


@pytest.fixture(scope="session")
def stress_policy(
    testnet: LoopbackNet, soak_net: LoopbackNet, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    work = tmp_path_factory.mktemp("stress-policy")
    ports = (testnet.tls_port, testnet.plain_port, soak_net.tls_port, soak_net.plain_port)
    return testnet.write_policy(work / "policy.yaml", "upstream.test", ports=ports)


@pytest.fixture(scope="session")
def sidecar(
    testnet: LoopbackNet, stress_policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """The sidecar runtime (auth-proxy) under load; shared by the load tests."""
    workdir = tmp_path_factory.mktemp("sidecar")
    proxy = Proxy(
        "auth-proxy",
        workdir,
        testnet.hosts_file,
        testnet.ca_pem,
        stress_policy,
        # The load test holds 500 tunnels open, more than the pod-sized default cap (256).
        ["--set", "stream_large_bodies=64k", "--set", "max_connections=600"],
    ).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def soak_net(testnet: LoopbackNet) -> Iterator[LoopbackNet]:
    """The test upstream again, without hypercorn's 1,000-requests-per-connection limit.

    A graceful HTTP/2 GOAWAY from the upstream fails the proxy's streams in flight with a 502
    (mitmproxy does not retry streams the upstream never processed; see test_faults). The soak
    measures the proxy, so its upstream does not send one."""
    net = dataclasses.replace(testnet, tls_port=free_port(), plain_port=free_port(), upstream=None)
    config = testnet.workdir / "soak-hypercorn.toml"
    config.write_text("keep_alive_max_requests = 1000000000\n")
    upstream = start_upstream(net, ("--config", str(config)))
    yield net
    upstream.stop()
