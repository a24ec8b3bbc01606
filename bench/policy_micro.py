"""Microbench of the compiled policy: load time of a 10,000-entry allowlist, and the cost of
`addons.policy.decide` with 10 entries against 10,000 (hits, deep subdomains and misses)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from addons import policy


def _write_policy(path: Path, n: int) -> None:
    lines = ["version: v1", "allowed_domains:"]
    for i in range(n):
        # Half exact names, half wildcards, spread over a few TLDs.
        tld = ("com", "org", "net", "io")[i % 4]
        lines.append(f'  - "*.svc{i}.example.{tld}"' if i % 2 else f"  - api{i}.example.{tld}")
    lines += ["allowed_ports: [443, 80]"]
    path.write_text("\n".join(lines) + "\n")


QUERIES = [
    "api0.example.com",  # exact hit
    "a.b.c.svc1.example.org",  # wildcard hit, deep
    "svc1.example.org",  # the wildcard's apex: a miss
    "x.y.z.unknown.example.net",  # miss, deep
    "www.google.com",  # miss
    "API0.Example.COM.",  # exact hit, needs normalising
]


def _decide_ns(p: policy.Policy, rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            for host in QUERIES:
                policy.decide(p, host, 443)
        best = min(best, time.perf_counter() - start)
    return best / (rounds * len(QUERIES)) * 1e9


def run(quick: bool) -> dict:
    rounds = 2000 if quick else 10000
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp, "10.yaml"), Path(tmp, "10k.yaml")
        _write_policy(small, 10)
        _write_policy(large, 10000)
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            p_large = policy.load_policy(large)
            loads.append(time.perf_counter() - start)
        p_small = policy.load_policy(small)
    assert p_large.entry_count == 10000, p_large.entry_count
    ns_small = _decide_ns(p_small, rounds)
    ns_large = _decide_ns(p_large, rounds)
    return {
        "load_10k_s": sorted(loads)[1],
        "decide_ns_10": ns_small,
        "decide_ns_10k": ns_large,
        "decide_ratio_10k_over_10": ns_large / ns_small,
    }
