"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import PROXY_COMMANDS, Proxy
from tests.support.testnet import LoopbackNet, make_testnet, start_upstream

pytest_plugins = ["tests.support.docker_fixtures"]

# Everything a test proxy may reach, for the standard policy.
STANDARD_DOMAINS = (
    "upstream.test",
    "*.wild.test",
    "private.test",
    "metadata.test",
    "mapped.test",
    "sink.test",
    "untrusted.test",
    "127.0.0.1",
)


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackNet]:
    net = make_testnet(tmp_path_factory.mktemp("testnet"))
    upstream = start_upstream(net)
    yield net
    upstream.stop()


@pytest.fixture(scope="session", params=sorted(PROXY_COMMANDS))
def proxy_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def proxy(
    proxy_kind: str, testnet: LoopbackNet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """One long-lived proxy of each kind with the standard policy. Tests must not change it."""
    workdir = tmp_path_factory.mktemp(f"proxy-{proxy_kind}")
    policy = testnet.write_policy(workdir / "policy.yaml", *STANDARD_DOMAINS)
    running = Proxy(proxy_kind, workdir, testnet.hosts_file, testnet.ca_pem, policy).start()
    yield running
    running.stop()


@pytest.fixture
def make_proxy(proxy_kind: str, testnet: LoopbackNet, tmp_path: Path) -> Iterator:
    """Start a private proxy (its own policy, options) for tests that change things."""
    started: list[Proxy] = []

    def make(
        policy: Path | None,
        *extra_args: str,
        wait_ready: bool = True,
        base_command: list[str] | None = None,
    ) -> Proxy:
        workdir = tmp_path / f"p{len(started)}"
        workdir.mkdir()
        p = Proxy(
            proxy_kind,
            workdir,
            testnet.hosts_file,
            testnet.ca_pem,
            policy,
            list(extra_args),
            base_command,
        )
        started.append(p)
        return p.start(wait_ready=wait_ready)

    make.kind = proxy_kind  # type: ignore[attr-defined]
    yield make
    for p in started:
        p.stop()
