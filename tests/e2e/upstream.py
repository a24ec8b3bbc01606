"""The e2e upstream: httpbin + a git repository over TLS as httpbin.org, in its own network
namespace, wired to the pod's network namespace by one veth pair and nothing else.

    [ pod netns (infra container) ]  eth0 POD_ADDR/28   <--veth-->  up0 UPSTREAM_ADDR/28  [ netns ]
                                          POD_ADDR6/64                  UPSTREAM_ADDR6/64
                                                                      gunicorn :443 (venv's httpbin)
                                                                        DECOY_ADDR, DECOY_ADDR6,
                                                                        PUBLIC_RESOLVER(6): decoy

The decoy (tests/e2e/decoy.py) is what enforced egress must keep the workload from reaching:
counting TCP, UDP and DNS listeners at addresses the policy never allows. PUBLIC_RESOLVER and
PUBLIC_RESOLVER6 are the well-known public resolvers' addresses, held by the decoy INSIDE the
upstream namespace: the pod routes just those two /32 and /128 there, so a query a workload sends
to "8.8.8.8" that got past the lock would be counted instead of leaving.

Neither namespace has a default route, the host's namespace is never part of the path (the veth
is created directly between the two namespaces), forwarding is off in the upstream namespace:
nothing can leave the machine. The upstream's certificate comes from a separate test CA (trustme)
that only the sidecar is given.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from dulwich import porcelain

from tests.e2e.decoy import TCP_PORTS as DECOY_TCP_PORTS
from tests.e2e.decoy import UDP_PORTS as DECOY_UDP_PORTS
from tests.e2e.decoy import Decoy

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_ADDR = "10.213.0.1"
POD_ADDR = "10.213.0.2"
DECOY_ADDR = "10.213.0.5"
PREFIX_LEN = 28
UPSTREAM_ADDR6 = "fd00:213::1"
POD_ADDR6 = "fd00:213::2"
DECOY_ADDR6 = "fd00:213::5"
PREFIX6_LEN = 64
PUBLIC_RESOLVER = "8.8.8.8"
PUBLIC_RESOLVER6 = "2001:4860:4860::8888"
UPSTREAM_NAME = "httpbin.org"
# Resolvable in the pod (its /etc/hosts), never in the policy: the decoy's addresses.
DENIED_NAME = "denied.example"
DENIED6_NAME = "denied6.example"
# Docker's own default for containers, and containerd's (enable_unprivileged_icmp): any group
# may open an ICMP echo socket, so the workload's ping is stopped by the lock, not by a sysctl.
PING_GROUP_RANGE = "0 2147483647"
START_TIMEOUT = 30.0


def run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@dataclass
class Upstream:
    """Build with `prepare()`, wire with `network(infra_pid)` (the pod runner's CNI hook)."""

    workdir: Path
    netns: str
    log: Callable[[str], None] = print
    ca_dir: Path = field(init=False)
    repo: Path = field(init=False)
    head: str = field(init=False)
    proc: subprocess.Popen | None = None
    decoy: Decoy | None = None
    _netns_made: bool = False

    def say(self, message: str) -> None:
        self.log(f"[upstream] {message}")

    def prepare(self) -> Upstream:
        """The test CA, the server certificate for httpbin.org and the git repository."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="e2e upstream test CA")
        leaf = ca.issue_cert(UPSTREAM_NAME)
        # Given to the sidecar only (mounted read-only into it): the workload never trusts it.
        self.ca_dir = self.workdir / "upstream-ca"
        self.ca_dir.mkdir()
        ca.cert_pem.write_to_path(str(self.ca_dir / "ca.crt"))
        self.ca_dir.chmod(0o755)
        (self.ca_dir / "ca.crt").chmod(0o644)
        tls = self.workdir / "upstream-tls"
        tls.mkdir(mode=0o700)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(tls / "server.pem"))
        self.repo = self.workdir / "repo"
        porcelain.init(str(self.repo))
        (self.repo / "README").write_text("served by the e2e upstream\n")
        porcelain.add(str(self.repo), [str(self.repo / "README")])
        ident = b"e2e <e2e@example.invalid>"
        self.head = porcelain.commit(
            str(self.repo), message=b"e2e", author=ident, committer=ident
        ).decode()
        self.say(
            f"test CA (trustme) -> {self.ca_dir / 'ca.crt'} (given to the sidecar only); "
            f"certificate for {UPSTREAM_NAME}; git repository {self.repo} at {self.head[:12]}"
        )
        return self

    def network(self, infra_pid: int) -> str:
        """Make the upstream namespace, the veth into the pod, start the server; the pod IP."""
        ns = self.netns
        run("ip", "netns", "add", ns)
        self._netns_made = True
        run("ip", "-n", ns, "link", "set", "lo", "up")
        # Created inside the upstream namespace with its peer directly in the pod's: the pair
        # never exists in the host's namespace.
        run("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
            "netns", str(infra_pid))  # fmt: skip
        run("ip", "-n", ns, "addr", "add", f"{UPSTREAM_ADDR}/{PREFIX_LEN}", "dev", "up0")
        run("ip", "-n", ns, "link", "set", "up0", "up")
        pod_net = ["nsenter", f"--net=/proc/{infra_pid}/ns/net", "--"]
        run(*pod_net, "ip", "addr", "add", f"{POD_ADDR}/{PREFIX_LEN}", "dev", "eth0")
        run(*pod_net, "ip", "link", "set", "eth0", "up")
        self._decoy_network(pod_net)
        routes = run(*pod_net, "ip", "-4", "route").stdout.strip().replace("\n", "; ")
        routes6 = run(*pod_net, "ip", "-6", "route").stdout.strip().replace("\n", "; ")
        self.say(
            f"netns {ns} ({UPSTREAM_ADDR}/{PREFIX_LEN} on up0) <-veth-> pod eth0 "
            f"{POD_ADDR}/{PREFIX_LEN}; pod routes: {routes} (no default route)"
        )
        self.say(
            f"IPv6: {UPSTREAM_ADDR6} <-veth-> pod {POD_ADDR6}/{PREFIX6_LEN}; pod routes: {routes6}"
        )
        self._start_server()
        self._start_decoy()
        return POD_ADDR

    def _decoy_network(self, pod_net: list[str]) -> None:
        """IPv6 on both ends, the decoy's addresses, the two resolver routes, ping sockets."""
        ns = ["ip", "netns", "exec", self.netns]
        up = ["ip", "-n", self.netns, "addr", "add"]
        # Docker may have turned IPv6 off in the pod's namespace (`--network none`); a real
        # pod has at least ::1. Forwarding off upstream: nothing passes through it.
        for key in ("all", "default", "lo", "eth0"):
            run(*pod_net, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0")
        run(*pod_net, "sysctl", "-qw", f"net.ipv4.ping_group_range={PING_GROUP_RANGE}")
        for setting in (
            "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.up0.disable_ipv6=0",
            "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0",
        ):  # fmt: skip
            run(*ns, "sysctl", "-qw", setting)
        for addr in (f"{DECOY_ADDR}/{PREFIX_LEN}", f"{PUBLIC_RESOLVER}/32"):
            run(*up, addr, "dev", "up0")
        for addr in (UPSTREAM_ADDR6, DECOY_ADDR6):
            run(*up, f"{addr}/{PREFIX6_LEN}", "dev", "up0", "nodad")
        run(*up, f"{PUBLIC_RESOLVER6}/128", "dev", "up0", "nodad")
        run(*pod_net, "ip", "addr", "add", f"{POD_ADDR6}/{PREFIX6_LEN}", "dev", "eth0", "nodad")
        run(*pod_net, "ip", "route", "add", f"{PUBLIC_RESOLVER}/32", "via", UPSTREAM_ADDR)
        run(*pod_net, "ip", "-6", "route", "add", f"{PUBLIC_RESOLVER6}/128", "via", UPSTREAM_ADDR6)
        lo6 = run(*pod_net, "ip", "-6", "-o", "addr", "show", "dev", "lo").stdout
        self.say(
            f"pod: IPv6 on (loopback {'::1' if '::1/128' in lo6 else 'WITHOUT ::1'}), "
            f"net.ipv4.ping_group_range={PING_GROUP_RANGE!r}; decoy addresses {DECOY_ADDR}, "
            f"{DECOY_ADDR6}, {PUBLIC_RESOLVER}, {PUBLIC_RESOLVER6} on up0 (forwarding off)"
        )

    def _start_decoy(self) -> None:
        addrs = [DECOY_ADDR, DECOY_ADDR6, PUBLIC_RESOLVER, PUBLIC_RESOLVER6]
        self.decoy = Decoy(self.workdir / "decoy", self.netns, addrs, DECOY_ADDR, DECOY_ADDR6)
        self.decoy.start()
        self.say(
            f"decoy pid {self.decoy.proc.pid if self.decoy.proc else '-'} counts TCP "
            f"{'/'.join(map(str, DECOY_TCP_PORTS))}, UDP {'/'.join(map(str, DECOY_UDP_PORTS))} "
            f"and DNS questions on {', '.join(addrs)} -> {self.decoy.state}"
        )

    def _start_server(self) -> None:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        pem = self.workdir / "upstream-tls" / "server.pem"
        log = self.workdir / "gunicorn.log"
        cmd = [
            "ip", "netns", "exec", self.netns, str(gunicorn),
            "--bind", f"{UPSTREAM_ADDR}:443", "--certfile", str(pem), "--keyfile", str(pem),
            "--workers", "2", "--timeout", "30", "--graceful-timeout", "3",
            "--control-socket", str(self.workdir / "gunicorn.ctl"),
            "--chdir", str(ROOT), "--access-logfile", "-",
            "tests.e2e.httpbin_git_app:make_app()",
        ]  # fmt: skip
        env = dict(os.environ, E2E_GIT_REPO=str(self.repo), PYTHONPATH=str(ROOT))
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.2) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.logs()}")
            listening = run("ip", "netns", "exec", self.netns, "ss", "-Hltn", check=False).stdout
            if f"{UPSTREAM_ADDR}:443" in listening:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not listen in {START_TIMEOUT} s:\n{self.logs()}")
            time.sleep(0.2)
        self.say(
            f"gunicorn pid {self.proc.pid} serves httpbin + /repo.git on https://{UPSTREAM_ADDR}:443 "
            f"(as {UPSTREAM_NAME}) inside netns {self.netns}"
        )

    def logs(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "gunicorn.log").read_text(errors="replace")[-6000:]
        return "(no log)"

    def stop(self) -> None:
        """Stop gunicorn (its own process group, by its pid) and delete the namespace."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.say(f"stopped gunicorn pid {self.proc.pid} (exit {self.proc.returncode})")
        if self.decoy is not None:
            self.decoy.stop()
            self.say("stopped the decoy")
            self.decoy = None
        if self._netns_made:
            # Deleting the namespace destroys up0 and with it its peer, the pod's eth0.
            run("ip", "netns", "del", self.netns, check=False)
            self._netns_made = False
            self.say(f"deleted netns {self.netns} (and the veth pair with it)")
