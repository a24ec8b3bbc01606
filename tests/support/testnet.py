"""The loopback world the proxy tests run in: test names in a private hosts file, a test CA that
only the proxy trusts, and TLS upstreams on 127.0.0.1."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.processes import ManagedProcess, free_port, port_open, wait_until

UPSTREAM_NAMES = [
    "upstream.test",
    "www.wild.test",
    "deep.a.wild.test",
    "wild.test",
    "other.test",
    "sink.test",
    "127.0.0.1",
]

HOSTS = """\
127.0.0.1 localhost
::1 localhost ip6-localhost
127.0.0.1 upstream.test www.wild.test deep.a.wild.test wild.test other.test sink.test
127.0.0.1 untrusted.test
127.0.0.2 private.test
169.254.169.254 metadata.test
::ffff:127.0.0.2 mapped.test
"""


@dataclass
class LoopbackNet:
    workdir: Path
    hosts_file: Path
    ca: trustme.CA
    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    tls_port: int
    plain_port: int
    upstream: ManagedProcess | None = None

    def policy_text(self, *domains: str, ports: tuple[int, ...] | None = None, ranges=None) -> str:
        ports = ports or (443, 80, self.tls_port, self.plain_port)
        ranges = ["127.0.0.1/32"] if ranges is None else ranges
        lines = ["version: v1", "allowed_domains:"]
        lines += [f'  - "{d}"' for d in domains]
        lines.append(f"allowed_ports: [{', '.join(map(str, ports))}]")
        lines.append(f"allow_ranges: [{', '.join(ranges)}]")
        return "\n".join(lines) + "\n"

    def write_policy(self, path: Path, *domains: str, **kwargs) -> Path:
        path.write_text(self.policy_text(*domains, **kwargs))
        return path


def make_testnet(workdir: Path) -> LoopbackNet:
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = workdir / "hosts"
    hosts.write_text(HOSTS)
    ca = trustme.CA()
    ca_pem = workdir / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf = ca.issue_cert(*UPSTREAM_NAMES)
    cert_pem, key_pem = workdir / "upstream.crt", workdir / "upstream.key"
    leaf.private_key_pem.write_to_path(str(key_pem))
    leaf.cert_chain_pems[0].write_to_path(str(cert_pem))
    return LoopbackNet(workdir, hosts, ca, ca_pem, cert_pem, key_pem, free_port(), free_port())


def start_upstream(net: LoopbackNet, extra_args: tuple[str, ...] = ()) -> ManagedProcess:
    command = [
        str(Path(sys.executable).parent / "hypercorn"),
        "--certfile",
        str(net.cert_pem),
        "--keyfile",
        str(net.key_pem),
        "--bind",
        f"127.0.0.1:{net.tls_port}",
        "--insecure-bind",
        f"127.0.0.1:{net.plain_port}",
        "--keep-alive",
        "30",
        *extra_args,
        "tests.support.upstream_app:app",
    ]
    process = ManagedProcess(command, net.workdir, f"upstream-{net.tls_port}")
    wait_until(
        lambda: (port_open(net.tls_port) and port_open(net.plain_port)) or not process.alive(),
        30,
        "the upstream to listen",
    )
    if not process.alive():
        raise RuntimeError(process.describe())
    net.upstream = process
    return process
