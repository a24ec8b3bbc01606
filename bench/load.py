"""The load client: curl (C, libcurl + OpenSSL) in parallel mode, one process per regime.

One curl process drives `parallel` transfers at once over a glob of URLs (`?n=[1-N]`), through the
proxy with CONNECT tunnels (or straight to the upstream for "direct"). Every finished transfer
writes one line to stderr (`-w '%{stderr}...'`, unbuffered) with its status, time and size.
A regime ends when the URL list is used up or after `duration` seconds (then curl is stopped),
so it is bounded in count and in time. The client's own CPU is measured (wait4) and reported, so
a reader can see whether the client or the proxy was the limit.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

WRITE_OUT = "%{stderr}R %{http_code} %{http_connect} %{time_total} %{size_download}\\n"


@dataclass
class Transfers:
    ok: int
    failed: int
    seconds: float
    latencies: list[float]
    bytes: int
    client_cpu: float
    statuses: dict[str, int]
    messages: list[str] = field(default_factory=list)  # curl's own errors (show_errors), a few


def curl(
    url: str,
    count: int,
    *,
    proxy_port: int | None,
    cafile: str,
    resolve: str | None,
    parallel: int,
    duration: float,
    new_connection: bool = False,
    ok_connect: str | None = None,
    prefix: Sequence[str] = (),
    show_errors: bool = False,
) -> Transfers:
    """Run `count` GETs of `url` (at most `duration` s). `new_connection`: every request on a
    fresh TCP+TLS connection (`Connection: close`, no TLS session reuse). `ok_connect`: count a
    transfer as the expected outcome when the proxy answered CONNECT with this status.
    `prefix` runs curl through commands that exec it (`ip netns exec`, `setpriv`), so the PID
    stopped and measured stays curl's. `show_errors` keeps curl's first error messages."""
    cmd = [
        *prefix,
        "curl",
        "--silent",
        "--http1.1",
        "--cacert",
        cafile,
        "--max-time",
        "20",
        "--connect-timeout",
        "5",
        "-w",
        WRITE_OUT,
        "-o",
        "/dev/null",
    ]
    if show_errors:
        cmd.append("--show-error")
    if parallel > 1:
        cmd += ["--parallel", "--parallel-immediate", "--parallel-max", str(parallel)]
    if proxy_port is not None:
        cmd += ["--proxy", f"http://127.0.0.1:{proxy_port}"]
    if resolve:
        cmd += ["--resolve", resolve]
    if new_connection:
        cmd += ["-H", "Connection: close", "--no-sessionid"]
    sep = "&" if "?" in url else "?"
    # -o /dev/null applies to the first URL only; the rest goes to our stdout, also /dev/null.
    cmd.append(f"{url}{sep}n=[1-{count}]")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = start + duration
        rusage = None
        try:
            while True:
                pid, _status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    rusage = ru
                    break
                if time.monotonic() >= deadline:
                    os.kill(p.pid, signal.SIGTERM)
                    _pid, _status, rusage = os.wait4(p.pid, 0)
                    break
                time.sleep(0.005)
        finally:
            if rusage is None:  # interrupted (Ctrl-C, SIGTERM): stop this curl, by its PID
                os.kill(p.pid, signal.SIGKILL)
                os.wait4(p.pid, 0)
        seconds = time.monotonic() - start
        p.returncode = 0  # reaped by wait4 above
        err.seek(0)
        lines = err.read().decode(errors="replace").splitlines()
    ok = failed = size = 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    messages: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 5 or parts[0] != "R":
            if line.strip() and len(messages) < 5:
                messages.append(line.strip()[:300])
            continue
        _, code, connect_code, total, nbytes = parts
        key = f"{connect_code}/{code}"
        statuses[key] = statuses.get(key, 0) + 1
        # A denied CONNECT: answered 403 at CONNECT (mitmproxy), or tunnelled and then answered
        # 403 inside TLS (Squid serves its error page by bumping the denied CONNECT).
        good = ok_connect in (connect_code, code) if ok_connect else code == "200"
        if good:
            ok += 1
            latencies.append(float(total))
            size += int(nbytes)
        else:
            failed += 1
    cpu = rusage.ru_utime + rusage.ru_stime if rusage else 0.0
    return Transfers(ok, failed, seconds, latencies, size, cpu, statuses, messages)


def proxied_get(
    proxy_port: int, host: str, port: int, path: str, cafile: str, timeout: float = 2.0
) -> bool:
    """One GET through the proxy (CONNECT, then TLS to `host`): True on a 200 response."""
    try:
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as raw:
            raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = raw.recv(4096)
                if not chunk:
                    return False
                head += chunk
            if head.split(b" ", 2)[1] != b"200":
                return False
            context = ssl.create_default_context(cafile=cafile)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                response = tls.recv(4096)
                return response.startswith(b"HTTP/1.1 200")
    except (OSError, IndexError):
        return False


def merge(parts: list[Transfers]) -> Transfers:
    """Several runs of one regime as one (their times, counts and latencies added up)."""
    statuses: dict[str, int] = {}
    for t in parts:
        for key, n in t.statuses.items():
            statuses[key] = statuses.get(key, 0) + n
    return Transfers(
        ok=sum(t.ok for t in parts),
        failed=sum(t.failed for t in parts),
        seconds=sum(t.seconds for t in parts),
        latencies=[x for t in parts for x in t.latencies],
        bytes=sum(t.bytes for t in parts),
        client_cpu=sum(t.client_cpu for t in parts),
        statuses=statuses,
        messages=[m for t in parts for m in t.messages][:5],
    )


def percentile_ms(latencies: list[float], q: float) -> float | None:
    """The `q` quantile of `latencies` (seconds) in milliseconds; None when there are none."""
    lat = sorted(latencies)
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None


def figures(name: str, t: Transfers, cpu: float | None) -> dict:
    """A regime's figures: rate, latency, CPU shares, and the proxy's CPU per request (`cpu`:
    the proxy's CPU seconds during the regime; None without a proxy)."""
    fig = {
        "ok": t.ok,
        "failed": t.failed,
        "seconds": round(t.seconds, 3),
        "per_s": t.ok / t.seconds if t.seconds else 0.0,
        "p50_ms": percentile_ms(t.latencies, 0.50),
        "p99_ms": percentile_ms(t.latencies, 0.99),
        "client_cpu_share": t.client_cpu / t.seconds if t.seconds else None,
        "statuses": t.statuses,
    }
    if name == "large":
        fig["mib_per_s"] = t.bytes / 2**20 / t.seconds if t.seconds else 0.0
    if cpu is not None and t.ok:
        fig["proxy_cpu_ms_per_req"] = cpu / t.ok * 1000
        fig["proxy_cpu_share"] = cpu / t.seconds
    return fig
