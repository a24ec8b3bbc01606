"""`python -m bench [--quick] [--venv]`: the proxies side by side on loopback (README: Performance).

Targets: direct (curl straight to nginx), sidecar (images/sidecar/entrypoint.sh -> auth-proxy),
mitmdump (`mitmdump -s addons/allowlist.py`) and squid (Squid 5 ssl-bump). The sidecar and
mitmdump run from the sidecar image, unpacked (bench/imageroot.py), so they use the interpreter
and packages that the image ships; `--venv` runs them from this venv instead. Each repetition starts
every proxy fresh (start-up times), measures idle memory, runs every regime, reads peak memory and
stops it; the order of the targets rotates from one repetition to the next (interleaved).

Issue 14's listeners (bench/egress.py): after its loopback regimes, each repetition starts the
sidecar and mitmdump once more in a private network namespace, with the transparent and DNS
listeners on, and measures CONNECT against transparent (keep-alive and new connection) and DNS
answers, side by side against the same upstream. `--no-egress` leaves that part out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import egress, env, imageroot, load, policy_micro, proc, report
from tests.support.faulty_upstreams import HangingServer

TARGETS = ("direct", "squid", "mitmdump", "sidecar")
PROXIES = ("squid", "mitmdump", "sidecar")
EGRESS_TARGETS = ("mitmdump", "sidecar")  # the proxies with transparent and DNS listeners
RESULTS = Path(__file__).resolve().parent / "results"
DOCS_PERFORMANCE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"

# name -> (path, parallel, new connection, max count)
REGIMES = {
    "keepalive": ("/small", 8, False, 500_000),
    "newconn": ("/small", 8, True, 100_000),
    "fresh": ("/small", 1, True, 20_000),
    "large": ("/large", 4, False, 20_000),
    "denied": (None, 8, False, 100_000),
}


def run_regime(world: env.World, target: str, proxy_port: int | None, name: str, duration: float):
    path, parallel, new_conn, count = REGIMES[name]
    if name == "denied":
        url = f"https://{env.DENIED_HOST}:{world.denied_port}/"
        ok_connect = "403"
    else:
        url = f"https://{env.UPSTREAM_HOST}:{world.upstream_port}{path}"
        ok_connect = None
    return load.curl(
        url,
        count,
        proxy_port=proxy_port,
        cafile=str(world.certs.client_bundle),
        resolve=f"{env.UPSTREAM_HOST}:{world.upstream_port}:127.0.0.1"
        if proxy_port is None
        else None,
        parallel=parallel,
        duration=duration,
        new_connection=new_conn,
        ok_connect=ok_connect,
    )


def start_proxy(world: env.World, target: str, run_dir: Path) -> tuple[env.ProxyInstance, dict]:
    starter = {
        "sidecar": env.start_sidecar,
        "mitmdump": env.start_mitmdump,
        "squid": env.start_squid,
    }
    inst = starter[target](world, run_dir)
    p = inst.process

    def ready() -> bool:
        if not p.alive():
            raise RuntimeError(f"{target} exited\n{p.tail()}")
        if inst.health_port is None:
            return _port_open(inst.port)
        return _readyz(inst.health_port)

    if proc.wait_for(ready, 30) is None:
        raise RuntimeError(f"{target} not ready in 30 s\n{p.tail()}")
    t_ready = time.monotonic() - p.started
    ca = str(world.certs.client_bundle)
    ok = proc.wait_for(
        lambda: load.proxied_get(inst.port, env.UPSTREAM_HOST, world.upstream_port, "/small", ca),
        30,
    )
    if ok is None:
        raise RuntimeError(f"{target}: no proxied response in 30 s\n{p.tail()}")
    t_first = time.monotonic() - p.started
    return inst, {"start_to_ready_s": t_ready, "start_to_first_response_s": t_first}


def _port_open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _readyz(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def run_target(
    world: env.World,
    target: str,
    rep_dir: Path,
    duration: float,
    net: egress.EgressNet | None = None,
) -> dict:
    out = run_loopback(world, target, rep_dir, duration)
    if net is not None and target in EGRESS_TARGETS:
        try:
            out["egress"] = egress.run(net, target, rep_dir / f"{target}-egress", duration)
        except Exception as e:  # the loopback figures still count; the exit status says so
            print(f"bench: egress regimes of {target} FAILED: {e}", flush=True)
            out["egress"] = {"error": str(e)[-3000:]}
    return out


def run_loopback(world: env.World, target: str, rep_dir: Path, duration: float) -> dict:
    out: dict = {"regimes": {}}
    if target == "direct":
        for name in REGIMES:
            if name != "denied":
                t = run_regime(world, target, None, name, duration)
                out["regimes"][name] = load.figures(name, t, None)
        return out
    run_dir = rep_dir / target
    run_dir.mkdir()
    inst, startup = start_proxy(world, target, run_dir)
    out.update(startup)
    try:
        time.sleep(0.5)
        out["rss_idle_mib"] = proc.rss_mib(inst.process.pid)
        with proc.RssSampler(inst.process.pid) as sampler:
            for name in REGIMES:
                before_cpu = proc.cpu_seconds(inst.process.pid)
                before_conns = world.extra["listener"].connections
                t = run_regime(world, target, inst.port, name, duration)
                cpu = proc.cpu_seconds(inst.process.pid) - before_cpu
                out["regimes"][name] = load.figures(name, t, cpu)
                if name == "denied":
                    out["regimes"][name]["upstream_connections"] = (
                        world.extra["listener"].connections - before_conns
                    )
        out["rss_peak_mib"] = max(sampler.peak, proc.hwm_mib(inst.process.pid))
        if not inst.process.alive():
            raise RuntimeError(f"{target} died during the bench\n{inst.process.tail()}")
    finally:
        inst.process.stop()
    return out


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one short repetition (< 2 minutes)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per regime (default 6, quick 2)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument(
        "--venv",
        action="store_true",
        help="run sidecar and mitmdump from this venv, not from the sidecar image",
    )
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (logs)")
    ap.add_argument(
        "--no-egress",
        action="store_true",
        help="leave out the transparent and DNS listeners (they need a network namespace)",
    )
    args = ap.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the namespace, its rules and the servers are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reps = args.reps or (1 if args.quick else 3)
    duration = args.duration or (2.0 if args.quick else 6.0)
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    began = time.monotonic()

    env.ensure_packages()
    work = Path(tempfile.mkdtemp(prefix="auth-proxy-bench-"))
    work.chmod(0o755)
    nginx = None
    proxies_python = sys.version.split()[0]
    listener = HangingServer()  # the denied host: counts connections, never answers
    cleanup = contextlib.ExitStack()
    try:
        certs = env.Certs.make(work)
        nginx, upstream_port = env.start_nginx(work, certs)
        hosts, policy_file = env.write_world_files(work, upstream_port)
        world = env.World(work, certs, upstream_port, listener.port, hosts, policy_file)
        if not args.venv and {"sidecar", "mitmdump"} & set(targets):
            world.root = imageroot.unpack(work)
            proxies_python = world.root.python_version()
        world.extra["listener"] = listener
        if "squid" in targets:
            world.extra["squid"] = env.prepare_squid(world)
        net = None
        if not args.no_egress and set(EGRESS_TARGETS) & set(targets):
            net = cleanup.enter_context(egress.network(world))
        runs: dict[str, list[dict]] = {t: [] for t in targets}
        for rep in range(reps):
            order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
            rep_dir = work / f"rep{rep}"
            rep_dir.mkdir()
            for target in order:
                t0 = time.monotonic()
                runs[target].append(run_target(world, target, rep_dir, duration, net))
                print(
                    f"bench: rep {rep + 1}/{reps} {target:8s} {time.monotonic() - t0:5.1f} s",
                    flush=True,
                )
        micro = policy_micro.run(args.quick)
    finally:
        cleanup.close()
        listener.close()
        if nginx:
            nginx.stop()
        if args.keep_work:
            print(f"bench: work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary = report.summarize(runs, micro)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "proxies_from": "venv" if args.venv else "sidecar image",
        "repetitions": reps,
        "seconds_per_regime": duration,
        "egress": not args.no_egress,
        "wall_seconds": round(time.monotonic() - began, 1),
        "machine": f"{platform.machine()}, {_cores()} cores, {platform.release()}",
        "python": proxies_python,
        "versions": _versions(),
        "commit": _commit(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "summary": summary, "runs": runs, "policy_micro": micro}
    (args.out / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    markdown = report.markdown(summary, meta)
    (args.out / "summary.md").write_text(markdown)
    report.chart(summary, args.out / "chart.png")
    if args.out.resolve() == RESULTS.resolve():
        report.copy_into_docs(markdown, DOCS_PERFORMANCE)
    print(markdown)
    print(f"bench: wrote {args.out}/summary.json, summary.md, chart.png")
    failed = [t for t, reps_ in runs.items() for r in reps_ if "error" in r.get("egress", {})]
    if failed:
        print(f"bench: egress regimes failed for {', '.join(sorted(set(failed)))} (see above)")
        return 1
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "addons", "images"], capture_output=True, text=True
    )
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _versions() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import mitmproxy.version

    return {
        "mitmproxy": mitmproxy.version.VERSION,
        "squid": first_line(["/usr/sbin/squid", "-v"]),
        "nginx": first_line(["nginx", "-v"]),
        "curl": first_line(["curl", "--version"]),
    }


if __name__ == "__main__":
    sys.exit(main())
