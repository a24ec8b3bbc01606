"""Issue 14's listeners under load, in a private network namespace the bench makes and removes.

Transparent interception needs NAT, and NAT rules belong only in a namespace of our own, so this
part of the bench runs in `apt-bench-<random>`: loopback up, a veth pair made inside it holding
UPSTREAM, a private nginx (the same files as the loopback bench's) on UPSTREAM:443, and one
`inet` nat table that redirects the sockets of CLIENT_UID as the pod's egress lock does (TCP to
the transparent listener, port 53 to the DNS listener, loopback untouched). The proxy runs in
the namespace as root (venv) or as the image's user (10000), so its own connections are not
redirected. The namespace has no route anywhere: nothing here can leave the machine.

For each proxy, in the same namespace against the same nginx, curl runs as CLIENT_UID either
through the regular listener (CONNECT, as with HTTPS_PROXY) or straight to the upstream's
address (no proxy variables), which the rules send to the transparent listener; and a UDP
client asks the DNS listener (through the port 53 redirect) for an allowed name's A record and
for a TXT record, which is refused. The transparent / CONNECT ratios come from the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import dns, env, load, proc
from tests.support.ipnetns import Namespace, entered

NS_PREFIX = "apt-bench"
TABLE = "apt_bench"
UPSTREAM = "10.78.0.1"
UPSTREAM_PORT = 443
CLIENT_UID = 1000
# The sidecar's ports in a pod (k8s/constants.py): regular, health, transparent, DNS.
PORT, HEALTH, TRANSPARENT, DNS = 8080, 8081, 8082, 8053

LISTENERS = ("connect", "transparent")
# kind -> (parallel, new connection, max count); a regime is LISTENER_KIND, e.g. connect_newconn
KINDS = {"keepalive": (8, False, 500_000), "newconn": (8, True, 100_000)}
REGIMES = [f"{listener}_{kind}" for kind in KINDS for listener in LISTENERS]
# Each pair runs in halves, A B B A: a drift in the machine's speed (or the proxy's warming up)
# over the pair then weighs on both listeners alike.
ABBA = ("connect", "transparent", "transparent", "connect")
SETTLE_S = 0.2  # lets the proxy finish the previous regime's closes before its CPU is read
# name -> (question type, the right answer, parallel, max count)
DNS_REGIMES = {
    "dns_a": ("A", "NOERROR", 8, 1_000_000),
    "dns_txt": ("TXT", "REFUSED", 8, 1_000_000),
}


def ruleset(uid: int = CLIENT_UID) -> str:
    """The egress lock's redirects, for one uid: DNS to the DNS listener, other TCP to the
    transparent listener, loopback (the regular listener) left alone."""
    return f"""\
table inet {TABLE} {{
    chain output {{
        type nat hook output priority -100; policy accept;
        meta skuid != {uid} return
        ip daddr 127.0.0.0/8 return
        ip6 daddr ::1 return
        udp dport 53 redirect to :{DNS}
        tcp dport 53 redirect to :{DNS}
        meta l4proto tcp redirect to :{TRANSPARENT}
    }}
}}
"""


@dataclass
class EgressNet:
    ns: Namespace
    world: env.World  # the bench's world, with this namespace's hosts file, policy and port
    nginx: env.Process | None = None
    tools: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def listeners(self) -> env.Listeners:
        return env.Listeners(self.ns.name, PORT, HEALTH, TRANSPARENT, DNS)

    def client_prefix(self) -> list[str]:
        """curl as CLIENT_UID inside the namespace (both commands exec: the PID is curl's)."""
        ip, setpriv = self.tools["ip"], self.tools["setpriv"]
        uid = str(CLIENT_UID)
        return [
            *(ip, "netns", "exec", self.ns.name),
            *(setpriv, "--reuid", uid, "--regid", uid, "--clear-groups"),
        ]

    def nft(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """nft inside this namespace only."""
        return self.ns.run([self.tools["nft"], *args], input=stdin)

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.nft("delete", "table", "inet", TABLE)
        self.ns.delete()


def make(world: env.World) -> EgressNet:
    """The namespace, its rules and its nginx; removed again if any step fails."""
    tools = {name: shutil.which(name) or "" for name in ("ip", "nft", "setpriv")}
    missing = [name for name, path in tools.items() if not path]
    if missing:
        raise RuntimeError(
            f"bench egress: {', '.join(missing)} not found; install iproute2, nftables and "
            "util-linux, or run with --no-egress"
        )
    ns = Namespace(NS_PREFIX)
    net = EgressNet(ns, world, tools=tools)
    try:
        _populate(net)
    except BaseException:
        net.close()
        raise
    return net


def _populate(net: EgressNet) -> None:
    ns, work = net.ns, net.world.work / net.ns.name
    work.mkdir()
    work.chmod(0o755)
    # This kernel may lack the dummy module: a veth pair with both ends in the namespace.
    ns.ip("link", "add", "bench0", "type", "veth", "peer", "name", "bench1")
    for link in ("bench0", "bench1"):
        ns.ip("link", "set", link, "up")
    ns.ip("addr", "add", f"{UPSTREAM}/24", "dev", "bench0")
    ns.write_etc("resolv.conf", "nameserver 127.0.0.1\n")  # stray lookups stay here
    applied = net.nft("-f", "-", stdin=ruleset())
    if applied.returncode != 0:
        raise RuntimeError(f"bench egress: nft failed in {ns.name}: {applied.stderr.strip()}")
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{UPSTREAM} {env.UPSTREAM_HOST}\n")
    policy = work / "policy.yaml"
    policy.write_text(
        "version: v1\n"
        f"allowed_domains: [{env.UPSTREAM_HOST}]\n"
        f"allowed_ports: [{UPSTREAM_PORT}]\n"
        f"allow_ranges: [{UPSTREAM}/32]\n"
    )
    for p in (hosts, policy):
        p.chmod(0o644)
    net.world = dataclasses.replace(
        net.world, upstream_port=UPSTREAM_PORT, hosts_file=hosts, policy_file=policy
    )
    prefix = (net.tools["ip"], "netns", "exec", ns.name)
    net.nginx, _ = env.start_nginx(
        work, net.world.certs, (UPSTREAM, UPSTREAM_PORT), "nginx", prefix
    )
    if proc.wait_for(lambda: _listening(ns.name, (UPSTREAM, UPSTREAM_PORT)), 15) is None:
        raise RuntimeError(f"bench egress: nginx did not listen in {ns.name}\n{net.nginx.tail()}")


def _listening(netns: str, address: tuple[str, int]) -> bool:
    try:
        with entered(netns):
            s = socket.socket()
        with s:
            s.settimeout(0.5)
            s.connect(address)
        return True
    except OSError:
        return False


def _readyz(netns: str, port: int) -> bool:
    try:
        with (
            entered(netns),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r,
        ):
            return r.status == 200
    except OSError:
        return False


# -- one proxy's run --------------------------------------------------------------------------


def run(net: EgressNet, target: str, run_dir: Path, duration: float) -> dict:
    """Start `target` fresh in the namespace, check both paths reach nginx through it, run
    CONNECT against transparent (`duration` s each, in A B B A halves) and the DNS regimes,
    stop it."""
    starter: dict[str, Callable[..., env.ProxyInstance]] = {
        "sidecar": env.start_sidecar,
        "mitmdump": env.start_mitmdump,
    }
    run_dir.mkdir()
    inst = starter[target](net.world, run_dir, net.listeners)
    pid = inst.process.pid
    out: dict = {"regimes": {}}
    try:
        _wait_ready(net, inst)
        _check_paths(net, inst)
        for kind in KINDS:
            out["regimes"].update(_pair(net, pid, kind, duration))
        for name in DNS_REGIMES:
            time.sleep(SETTLE_S)
            before = proc.cpu_seconds(pid)
            answers = _dns(net, name, duration)
            out["regimes"][name] = dns_figures(answers, proc.cpu_seconds(pid) - before)
        out["rss_peak_mib"] = proc.hwm_mib(pid)
        if not inst.process.alive():
            raise RuntimeError(f"{target} died during the bench\n{inst.process.tail()}")
    finally:
        inst.process.stop()
    return out


def _pair(net: EgressNet, pid: int, kind: str, duration: float) -> dict[str, dict]:
    parts: dict[str, list[load.Transfers]] = {listener: [] for listener in LISTENERS}
    cpu = dict.fromkeys(LISTENERS, 0.0)
    for listener in ABBA:
        time.sleep(SETTLE_S)
        before = proc.cpu_seconds(pid)
        parts[listener].append(_curl(net, f"{listener}_{kind}", duration / 2))
        cpu[listener] += proc.cpu_seconds(pid) - before
    return {
        f"{listener}_{kind}": load.figures(kind, load.merge(parts[listener]), cpu[listener])
        for listener in LISTENERS
    }


def _wait_ready(net: EgressNet, inst: env.ProxyInstance) -> None:
    p = inst.process

    def ready() -> bool:
        if not p.alive():
            raise RuntimeError(f"{inst.name} exited in {net.ns.name}\n{p.tail()}")
        return _readyz(net.ns.name, HEALTH)

    if proc.wait_for(ready, 30) is None:
        raise RuntimeError(f"{inst.name} not ready in 30 s in {net.ns.name}\n{p.tail()}")


def _check_paths(net: EgressNet, inst: env.ProxyInstance) -> None:
    """One request each way must reach nginx, and the transparent one must be the proxy's: a
    rule that failed to redirect would let curl reach nginx directly and measure that."""
    for name in ("connect_keepalive", "transparent_keepalive"):
        deadline = time.monotonic() + 30
        while True:
            t = _curl(net, name, 10, count=1, show_errors=True)
            if t.ok == 1:
                break
            if time.monotonic() > deadline or not inst.process.alive():
                raise RuntimeError(
                    f"{inst.name}: no 200 {name.split('_')[0]} in {net.ns.name} "
                    f"(curl: {t.statuses} {t.messages})\n{inst.process.tail()}"
                )
            time.sleep(0.2)
    if proc.wait_for(lambda: '"mode":"transparent"' in _stdout(inst), 5) is None:
        raise RuntimeError(
            f"{inst.name}: the transparent request left no decision line with "
            f'"mode":"transparent" (was it redirected?)\n{inst.process.tail()}'
        )
    answers = _dns(net, "dns_a", 5, count=1)
    if answers.expected != 1:
        raise RuntimeError(
            f"{inst.name}: no NOERROR answer for {env.UPSTREAM_HOST} A from the DNS listener "
            f"(answers: {answers.rcodes}, lost {answers.lost})\n{inst.process.tail()}"
        )


def _stdout(inst: env.ProxyInstance) -> str:
    inst.process.out.flush()
    return Path(inst.process.out.name).read_text(errors="replace")


def _curl(
    net: EgressNet, name: str, duration: float, count: int | None = None, show_errors: bool = False
) -> load.Transfers:
    listener, kind = name.split("_")
    parallel, new_conn, max_count = KINDS[kind]
    url = f"https://{env.UPSTREAM_HOST}/small"
    connect = listener == "connect"
    return load.curl(
        url,
        count or max_count,
        proxy_port=PORT if connect else None,
        cafile=str(net.world.certs.client_bundle),
        # Transparent: curl dials the upstream's address itself, as a client without proxy
        # variables would after its own lookup.
        resolve=None if connect else f"{env.UPSTREAM_HOST}:{UPSTREAM_PORT}:{UPSTREAM}",
        parallel=parallel if count is None else 1,
        duration=duration,
        new_connection=new_conn,
        prefix=net.client_prefix(),
        show_errors=show_errors,
    )


def _dns(net: EgressNet, name: str, duration: float, count: int | None = None) -> dns.Answers:
    qtype, expect, parallel, max_count = DNS_REGIMES[name]

    def client_socket() -> socket.socket:
        # Made in the namespace, owned by CLIENT_UID: the port 53 redirect applies to it.
        with entered(net.ns.name, CLIENT_UID):
            return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    return dns.load(
        (UPSTREAM, 53),
        env.UPSTREAM_HOST,
        qtype,
        expect,
        count=count or max_count,
        duration=duration,
        parallel=parallel if count is None else 1,
        sockets=client_socket,
    )


def dns_figures(a: dns.Answers, cpu: float | None) -> dict:
    answered = a.expected + a.other
    fig = {
        "ok": a.expected,
        "failed": a.other + a.lost,
        "lost": a.lost,
        "unfinished": a.unfinished,
        "seconds": round(a.seconds, 3),
        "per_s": a.expected / a.seconds if a.seconds else 0.0,
        "p50_ms": load.percentile_ms(a.latencies, 0.50),
        "p99_ms": load.percentile_ms(a.latencies, 0.99),
        "client_cpu_share": a.client_cpu / a.seconds if a.seconds else None,
        "statuses": a.rcodes,
    }
    if cpu is not None and answered:
        fig["proxy_cpu_ms_per_req"] = cpu / answered * 1000
        fig["proxy_cpu_share"] = cpu / a.seconds if a.seconds else None
    return fig


@contextlib.contextmanager
def network(world: env.World):
    """The namespace for the length of the block; removed (rules, nginx, files) afterwards,
    also when the block fails."""
    net = make(world)
    print(f"bench: egress regimes in network namespace {net.ns.name}", flush=True)
    try:
        yield net
    finally:
        net.close()
