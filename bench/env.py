"""The bench's world on loopback: Debian packages, certificates, the nginx upstream, the proxies.

Every server is a private instance: its own config, pid, log and temp folders under the run's work
folder, listening on a free 127.0.0.1 port, and stopped by the PID we started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from bench import imageroot
from bench.imageroot import ImageRoot
from tests.support.processes import with_hosts_file

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
UPSTREAM_HOST = "bench.test"
DENIED_HOST = "denied.test"
SMALL_BYTES = 1024
LARGE_BYTES = 1024 * 1024
SQUID_CERTGEN = "/usr/lib/squid/security_file_certgen"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_packages() -> None:
    """nginx and squid-openssl from Debian, installed only when missing."""
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx-light")
    if not Path("/usr/sbin/squid").exists() or not Path(SQUID_CERTGEN).exists():
        missing.append("squid-openssl")
    if not shutil.which("curl"):
        missing.append("curl")
    if not missing:
        return
    print(f"bench: installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        timeout=600,
    )
    # The packages' own services are not ours to run: stop any the install started.
    for service in ("nginx", "squid"):
        subprocess.run(["service", service, "stop"], capture_output=True, timeout=60)


def _run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60, **kw)


@dataclass
class Certs:
    """The upstream's own CA and certificate (trustme), and the proxies' interception CA."""

    upstream_ca: Path
    upstream_cert: Path
    upstream_key: Path
    proxy_ca_dir: Path  # ca/generate.py output: ca.crt, ca.key, mitmproxy-ca.pem
    client_bundle: Path  # what the client trusts: both CAs

    @classmethod
    def make(cls, work: Path, key_type: str = "ec") -> Certs:
        ca = trustme.CA()
        leaf = ca.issue_cert(UPSTREAM_HOST)
        up = work / "upstream-certs"
        up.mkdir()
        ca.cert_pem.write_to_path(str(up / "ca.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(up / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(up / "key.pem"))
        proxy_ca = work / "proxy-ca"
        _run(
            [
                sys.executable,
                str(REPO / "ca" / "generate.py"),
                "--out",
                str(proxy_ca),
                "--common-name",
                "bench CA",
                "--key-type",
                key_type,
            ]
        )
        bundle = work / "client-bundle.pem"
        bundle.write_bytes((up / "ca.pem").read_bytes() + (proxy_ca / "ca.crt").read_bytes())
        for p in (up, proxy_ca, *up.iterdir(), *proxy_ca.iterdir(), bundle):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        return cls(up / "ca.pem", up / "cert.pem", up / "key.pem", proxy_ca, bundle)


class Process:
    """A server we started: stdout/stderr to files, stopped by its own PID only."""

    def __init__(self, cmd: list[str], log_dir: Path, name: str, env: dict | None = None):
        self.name = name
        self.out = (log_dir / f"{name}.out").open("wb")
        self.err = (log_dir / f"{name}.err").open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, env=env, cwd=log_dir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.out.close()
        self.err.close()

    def tail(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text(errors="replace")[-3000:]


def _wait_port(port: int, timeout: float, proc: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{proc.name} did not listen on {port}\n{proc.tail()}")


def start_nginx(
    work: Path,
    certs: Certs,
    listen: tuple[str, int] | None = None,
    name: str = "nginx",
    prefix: tuple[str, ...] = (),
) -> tuple[Process, int]:
    """nginx over TLS: /small (1 KiB) and /large (1 MiB) static files. By default on
    127.0.0.1:PORT (a free port); `listen` and `prefix` (say `ip netns exec NAME`, which execs, so
    the PID stays nginx's) put it elsewhere, and then the caller waits for it to listen."""
    d = work / name
    www = d / "www"
    www.mkdir(parents=True)
    (www / "small").write_bytes(b"s" * SMALL_BYTES)
    (www / "large").write_bytes(os.urandom(LARGE_BYTES))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / sub).mkdir()
    os.chmod(d, 0o755)
    os.chmod(www, 0o755)
    host, port = listen or ("127.0.0.1", free_port())
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    server {{
        listen {host}:{port} ssl;
        server_name {UPSTREAM_HOST};
        ssl_certificate {certs.upstream_cert};
        ssl_certificate_key {certs.upstream_key};
        root {www};
    }}
}}
""")
    proc = Process([*prefix, "nginx", "-c", str(conf), "-p", str(d)], d, "nginx")
    if listen is None:
        _wait_port(port, 15, proc)
    return proc, port


@dataclass
class World:
    work: Path
    certs: Certs
    upstream_port: int
    denied_port: int
    hosts_file: Path
    policy_file: Path
    # The sidecar image unpacked (the default); None runs the proxies from this venv instead.
    root: ImageRoot | None = None
    extra: dict = field(default_factory=dict)


def write_world_files(work: Path, upstream_port: int) -> tuple[Path, Path]:
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {UPSTREAM_HOST} {DENIED_HOST}\n")
    policy = work / "policy.yaml"
    policy.write_text(
        "version: v1\n"
        f"allowed_domains: [{UPSTREAM_HOST}]\n"
        f"allowed_ports: [443, {upstream_port}]\n"
        "allow_ranges: [127.0.0.1/32]\n"
    )
    for p in (hosts, policy):
        os.chmod(p, 0o644)
    return hosts, policy


# -- the proxies ---------------------------------------------------------------------------


@dataclass
class ProxyInstance:
    name: str
    process: Process
    port: int
    health_port: int | None  # None: no /readyz (Squid); ready means listening


@dataclass(frozen=True)
class Listeners:
    """Where a proxy listens when not on free loopback ports of this namespace: fixed ports in
    the network namespace `netns`, with the transparent and DNS listeners of issue 14."""

    netns: str
    port: int
    health: int
    transparent: int
    dns: int


def _clean_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start_sidecar(world: World, run_dir: Path, listeners: Listeners | None = None) -> ProxyInstance:
    """Our sidecar as the image runs it: the image's entrypoint (images/sidecar/entrypoint.sh)
    with the image's environment execs `auth-proxy` with the same options, from the unpacked
    image (or from this venv without one). With `listeners`, the entrypoint also turns on the
    transparent and DNS listeners (AUTH_PROXY_TRANSPARENT_PORT, AUTH_PROXY_DNS_PORT)."""
    port, health = (listeners.port, listeners.health) if listeners else (free_port(), free_port())
    files = {
        "certs/tls.crt": world.certs.proxy_ca_dir / "ca.crt",
        "certs/tls.key": world.certs.proxy_ca_dir / "ca.key",
        "policy.yaml": world.policy_file,
        "upstream-ca.pem": world.certs.upstream_ca,
    }
    if world.root is None:
        folder, entrypoint, base_env = run_dir / "files", REPO / "images/sidecar/entrypoint.sh", {}
        imageroot.copy_files(files, folder)
    else:
        folder = world.root.place(_folder_name("sidecar", port, listeners), files)
        entrypoint, base_env = Path(world.root.entrypoint[0]), world.root.env
    modes = {}
    if listeners:
        modes = {
            "AUTH_PROXY_TRANSPARENT_PORT": str(listeners.transparent),
            "AUTH_PROXY_DNS_PORT": str(listeners.dns),
        }
    env = _clean_env(
        **base_env,
        **modes,
        AUTH_PROXY_LISTEN_HOST="127.0.0.1",
        AUTH_PROXY_LISTEN_PORT=str(port),
        AUTH_PROXY_HEALTH_HOST="127.0.0.1",
        AUTH_PROXY_HEALTH_PORT=str(health),
        AUTH_PROXY_CA_DIR=str(folder / "certs"),
        AUTH_PROXY_POLICY=str(folder / "policy.yaml"),
        AUTH_PROXY_CONFDIR=str(folder / "confdir"),
        AUTH_PROXY_LOG_LEVEL="info",
    )
    argv = [str(entrypoint), "--set", f"ssl_verify_upstream_trusted_ca={folder}/upstream-ca.pem"]
    proc = Process(_command(world, argv, listeners), run_dir, "sidecar", env)
    return ProxyInstance("sidecar", proc, port, health)


def start_mitmdump(
    world: World, run_dir: Path, listeners: Listeners | None = None
) -> ProxyInstance:
    """Stock mitmdump with the addon and the same options (no -q: the addon sets flow_detail=0),
    from the same interpreter and packages as the sidecar; with `listeners`, the same three
    listeners as the sidecar's entrypoint turns on (regular, transparent, dns)."""
    port, health = (listeners.port, listeners.health) if listeners else (free_port(), free_port())
    ca = world.certs.proxy_ca_dir
    files = {
        "confdir/mitmproxy-ca.pem": ca / "mitmproxy-ca.pem",
        "confdir/mitmproxy-ca-cert.pem": ca / "ca.crt",
        "policy.yaml": world.policy_file,
        "upstream-ca.pem": world.certs.upstream_ca,
    }
    if world.root is None:
        folder, mitmdump, addon, base_env = run_dir / "files", VENV_BIN / "mitmdump", REPO, {}
        imageroot.copy_files(files, folder)
    else:
        folder = world.root.place(_folder_name("mitmdump", port, listeners), files)
        mitmdump, addon, base_env = world.root.which("mitmdump"), imageroot.APP, world.root.env
    argv = [
        str(mitmdump),
        "-s",
        str(addon / "addons" / "allowlist.py"),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={folder}/confdir",
        "--set",
        "health_host=127.0.0.1",
        "--set",
        f"health_port={health}",
        "--set",
        f"allowlist={folder}/policy.yaml",
        "--set",
        f"ssl_verify_upstream_trusted_ca={folder}/upstream-ca.pem",
    ]
    if listeners:
        argv += ["--mode", "regular"]
        argv += ["--mode", f"transparent@127.0.0.1:{listeners.transparent}"]
        argv += ["--set", f"dns_listen=127.0.0.1:{listeners.dns}"]
    proc = Process(_command(world, argv, listeners), run_dir, "mitmdump", _clean_env(**base_env))
    return ProxyInstance("mitmdump", proc, port, health)


def _folder_name(kind: str, port: int, listeners: Listeners | None) -> str:
    return f"{kind}-{listeners.netns}" if listeners else f"{kind}-{port}"


def _command(world: World, argv: list[str], listeners: Listeners | None = None) -> list[str]:
    if world.root is None:
        command = with_hosts_file(world.hosts_file, argv)
    else:
        command = world.root.command(world.hosts_file, argv)
    # `ip netns exec` execs the command, so the PID the bench measures stays the proxy's own.
    return ["ip", "netns", "exec", listeners.netns, *command] if listeners else command


def prepare_squid(world: World) -> Path:
    """Squid's certificate database, made once per bench run (as the package's postinst would)."""
    d = world.work / "squid-shared"
    d.mkdir()
    db = d / "ssl_db"
    _run([SQUID_CERTGEN, "-c", "-s", str(db), "-M", "16MB"])
    ca = d / "ca"
    ca.mkdir()
    shutil.copy(world.certs.proxy_ca_dir / "ca.crt", ca / "ca.crt")
    shutil.copy(world.certs.proxy_ca_dir / "ca.key", ca / "ca.key")
    _chown_proxy(d)
    return d


def _chown_proxy(path: Path) -> None:
    # Squid started as root drops to its cache_effective_user (Debian: proxy).
    user = pwd.getpwnam("proxy")
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.pw_uid, user.pw_gid)


def start_squid(world: World, run_dir: Path) -> ProxyInstance:
    """Squid 5 with ssl-bump, configured like the allowlist: peek at the SNI, bump the allowlisted
    host, deny every other CONNECT with 403, verify the upstream against the test CA."""
    shared = world.extra["squid"]
    d = run_dir / "squid"
    d.mkdir()
    port = free_port()
    conf = d / "squid.conf"
    conf.write_text(f"""
http_port 127.0.0.1:{port} ssl-bump tls-cert={shared}/ca/ca.crt tls-key={shared}/ca/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program {SQUID_CERTGEN} -s {shared}/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
acl allowed_dst dstdomain {UPSTREAM_HOST}
acl allowed_sni ssl::server_name {UPSTREAM_HOST}
acl allowed_ports port 443 {world.upstream_port}
acl CONNECT method CONNECT
acl step1 at_step SslBump1
http_access deny !allowed_ports
http_access deny CONNECT !allowed_dst
http_access allow allowed_dst
http_access deny all
ssl_bump peek step1
ssl_bump bump allowed_sni
ssl_bump terminate all
tls_outgoing_options cafile={world.certs.upstream_ca}
sslproxy_cert_error deny all
cache deny all
cache_mem 8 MB
hosts_file {world.hosts_file}
dns_nameservers 127.0.0.1
pid_filename {d}/squid.pid
access_log stdio:{d}/access.log
cache_log {d}/cache.log
cache_store_log none
coredump_dir {d}
visible_hostname bench-squid
shutdown_lifetime 0 seconds
forwarded_for delete
via off
""")
    _chown_proxy(d)
    proc = Process(["/usr/sbin/squid", "-N", "-f", str(conf)], d, "squid", _clean_env())
    return ProxyInstance("squid", proc, port, None)
