"""Load: many tunnels held open at once with requests spread over them, bodies of every size in
both directions, and a soak over HTTP/1.1 and HTTP/2 with memory checked before and after."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import httpx

from k8s.settings import SIDECAR_RESOURCES
from tests.stress.conftest import FULL, Report, scale
from tests.support.loadclient import Tunnel, client_context
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet

TUNNELS = scale(100, 500)
REQUESTS = scale(2_000, 20_000)
BIG = scale(8, 64) * 1024 * 1024
SIZES = [0, 1, 1_000, 65_536, 1024 * 1024 + 7, BIG]
SOAK_SECONDS = scale(20, 300)
H2_STREAMS_AT_ONCE = 20
# RSS is compared at its lowest over a window longer than the proxy's TLS buffer sweep (5 s),
# after which freed memory goes back to the system: a leak raises that floor, a sweep's timing
# does not.
RSS_WINDOW = 6.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_tunnels_held_open_with_requests_spread(
    sidecar: Proxy, testnet: LoopbackNet, report: Report
) -> None:
    row = report.add("load", f"{TUNNELS} tunnels, {REQUESTS} requests", tried=REQUESTS)
    context = client_context(str(sidecar.ca_cert))

    async def run() -> tuple[int, int, int]:
        tunnels = [
            Tunnel(sidecar.port, "upstream.test", testnet.tls_port, context) for _ in range(TUNNELS)
        ]
        # Open in waves so the handshakes do not all time out on two cores.
        for start in range(0, TUNNELS, 50):
            await asyncio.gather(*(t.open() for t in tunnels[start : start + 50]))
        open_at_once = sum(t.writer is not None and not t.writer.is_closing() for t in tunnels)
        per_tunnel = REQUESTS // TUNNELS
        errors = lost = 0

        async def work(index: int, tunnel: Tunnel) -> None:
            nonlocal errors, lost
            for i in range(per_tunnel):
                body = os.urandom((index * 7 + i * 13) % 2048)
                try:
                    ok = await tunnel.echo(body) if i % 2 else await tunnel.download(len(body))
                except Exception:
                    errors += 1
                    return
                lost += not ok

        await asyncio.gather(*(work(i, t) for i, t in enumerate(tunnels)))
        for t in tunnels:
            t.close()
        return open_at_once, errors, lost

    open_at_once, errors, lost = asyncio.run(run())
    row.errors, row.lost = errors, lost
    row.detail = f"{open_at_once} tunnels open at once, {REQUESTS} requests"
    assert open_at_once == TUNNELS
    assert (errors, lost) == (0, 0)
    assert sidecar.process is not None and sidecar.process.alive()
    row.passed = True


def test_bodies_byte_exact_both_directions(
    sidecar: Proxy, testnet: LoopbackNet, report: Report
) -> None:
    row = report.add("load", f"bodies 0 B..{BIG >> 20} MiB both ways", tried=2 * len(SIZES))
    context = client_context(str(sidecar.ca_cert))

    async def run() -> list[str]:
        tunnel = Tunnel(sidecar.port, "upstream.test", testnet.tls_port, context)
        await tunnel.open()
        bad = []
        for size in SIZES:
            body = os.urandom(size)
            if not await tunnel.echo(body):
                bad.append(f"upload {size}")
            if not await tunnel.download(size):
                bad.append(f"download {size}")
        tunnel.close()
        return bad

    bad = asyncio.run(run())
    row.lost = len(bad)
    row.detail = f"sizes {SIZES[0]}..{SIZES[-1]} B, sha256 at both ends"
    assert bad == []
    row.passed = True


def test_soak_http1_and_http2_memory_steady(
    sidecar: Proxy, soak_net: LoopbackNet, report: Report
) -> None:
    testnet = soak_net
    assert sidecar.process is not None
    row = report.add("load", f"soak {SOAK_SECONDS}s h1+h2")
    context = client_context(str(sidecar.ca_cert))
    h2_context = ssl.create_default_context(cafile=str(sidecar.ca_cert))
    base = f"https://upstream.test:{testnet.tls_port}"
    counts = {"h1": 0, "h2": 0, "errors": 0, "lost": 0}
    failures: list[str] = []

    async def h1_loop(deadline: float) -> None:
        tunnel = Tunnel(sidecar.port, "upstream.test", testnet.tls_port, context)
        await tunnel.open()
        i = 0
        while time.monotonic() < deadline and i < 1_000_000:
            i += 1
            try:
                ok = await (
                    tunnel.echo(os.urandom(i % 4096)) if i % 2 else tunnel.download(i % 8192)
                )
            except Exception as e:
                counts["errors"] += 1
                failures.append(f"h1: {e!r}"[:200])
                tunnel.close()
                tunnel = Tunnel(sidecar.port, "upstream.test", testnet.tls_port, context)
                await tunnel.open()
                continue
            counts["h1"] += 1
            counts["lost"] += not ok
        tunnel.close()

    async def h2_loop(client: httpx.AsyncClient, deadline: float) -> None:
        """One long-lived HTTP/2 connection, many streams at once."""
        rounds = 0
        while time.monotonic() < deadline and rounds < 1_000_000:
            rounds += 1
            responses = await asyncio.gather(
                *(client.get(f"{base}/bytes/{1000 + s}") for s in range(H2_STREAMS_AT_ONCE)),
                return_exceptions=True,
            )
            for s, r in enumerate(responses):
                if isinstance(r, BaseException):
                    counts["errors"] += 1
                    failures.append(f"h2: {r!r}"[:200])
                elif r.status_code != 200 or r.http_version != "HTTP/2":
                    counts["errors"] += 1
                    failures.append(f"h2: {r.status_code} {r.http_version} {r.text[:100]}")
                else:
                    counts["h2"] += 1
                    counts["lost"] += len(r.content) != 1000 + s

    async def phase(seconds: float, client: httpx.AsyncClient) -> int:
        """Run the load for `seconds`; return the lowest RSS (KiB) of its last RSS_WINDOW s."""
        deadline = time.monotonic() + seconds
        samples: list[tuple[float, int]] = []

        async def sample() -> None:
            while time.monotonic() < deadline:
                samples.append((time.monotonic(), rss_kib(sidecar.process.pid)))
                await asyncio.sleep(0.25)

        await asyncio.gather(
            *(h1_loop(deadline) for _ in range(8)), h2_loop(client, deadline), sample()
        )
        return min(rss for at, rss in samples if at >= deadline - RSS_WINDOW)

    async def run() -> tuple[int, int]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            proxy=sidecar.url, verify=h2_context, http2=True, limits=limits, timeout=60
        ) as client:
            warm = await phase(max(RSS_WINDOW, SOAK_SECONDS / 10), client)  # warm-up
            after = await phase(SOAK_SECONDS, client)
        return warm, after

    warm, after = asyncio.run(run())
    row.tried = counts["h1"] + counts["h2"]
    row.errors, row.lost = counts["errors"], counts["lost"]
    growth = (after - warm) / warm * 100
    row.detail = (
        f"{counts['h1']} h1 + {counts['h2']} h2 requests; RSS {warm >> 10}->{after >> 10} MiB "
        f"({growth:+.1f}%)"
    )
    assert counts["h2"] > 0 and counts["h1"] > 0
    assert (counts["errors"], counts["lost"]) == (0, 0), failures[:5]
    assert after <= warm * 1.10, row.detail
    row.passed = True


def test_short_form_is_short() -> None:
    """Guard for the scaling itself: the short form keeps every category, only smaller."""
    assert FULL or (TUNNELS, REQUESTS, SOAK_SECONDS) == (100, 2_000, 20)


# The sidecar container's limit in the pod specs (128Mi).
POD_MEMORY_LIMIT_KIB = int(SIDECAR_RESOURCES.memory_limit.removesuffix("Mi")) * 1024


def test_peak_memory_of_the_load_inside_the_pod_limit(sidecar: Proxy, report: Report) -> None:
    """Last in this file: the sidecar's high-water mark over every load above (tunnels held
    open, bodies of every size, the soak) stays inside the container's memory limit."""
    row = report.add("load", "peak RSS over the load tests", tried=1)
    status = Path(f"/proc/{sidecar.process.pid}/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    row.detail = f"VmHWM {peak >> 10} MiB (limit {POD_MEMORY_LIMIT_KIB >> 10} MiB)"
    assert peak < POD_MEMORY_LIMIT_KIB, row.detail
    row.passed = True
