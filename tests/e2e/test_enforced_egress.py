"""Issue 14: enforced egress, end to end. A workload that ignores the proxy variables still
reaches nothing except through the sidecar: TCP on any port goes to the transparent listener,
DNS to the DNS listener, other UDP and ICMP are refused, over IPv4 and IPv6.

Every probe that must NOT reach the decoy (tests/e2e/decoy.py: counting listeners at addresses
the policy never allows, inside the upstream's namespace) is followed by the same probe from the
SIDECAR container, whose uid the lock exempts: it must reach the decoy and bump its counter. That
control proves the path exists and the counter counts, so a zero from the workload means the lock
stopped it. It is also the barrier: the control is sent after the workload's probe on the same
listener, so once the decoy has counted the control, anything the workload got through would have
been counted before it. The last test checks that the decoy's totals are exactly the controls'.

The probes are stdlib Python (tests/e2e/probes.py) run with ``python3 -c`` in the containers;
curl runs with HTTPS_PROXY and friends unset. ``E2E_EGRESS=unenforced`` runs this module against
a pod without the lock: then every assertion here fails, each on the traffic it detects.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from k8s import constants as c
from tests.e2e import probes
from tests.e2e.conftest import PROXY_VARIABLES, Sandbox, info, step
from tests.e2e.decoy import BANNER, DNS_PORT
from tests.e2e.upstream import (
    DECOY_ADDR,
    DECOY_ADDR6,
    DENIED6_NAME,
    DENIED_NAME,
    PUBLIC_RESOLVER,
    PUBLIC_RESOLVER6,
    UPSTREAM_ADDR,
    UPSTREAM_NAME,
)

pytestmark = pytest.mark.containers

PROBE_SOURCE = Path(probes.__file__).read_text()
# What a connected UDP socket may see when the lock rejects its datagram with an ICMP error
# (port unreachable, administratively prohibited, host unreachable; EPERM: refused at send).
ICMP_ERRORS = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES", "EPERM"}
QUICK = 1.0  # seconds: an ICMP error arrives at once, a silent drop would wait out the timeout
SETTLE_TIMEOUT = 10.0
NOT_ANSWERED = {"NXDOMAIN", "REFUSED"}
HIDDEN = {"id", "response", "questions"}  # not worth a column in the printed results


def unproxied(*cmd: str) -> list[str]:
    """The command with every proxy variable removed from its environment."""
    return ["env", *(a for v in PROXY_VARIABLES for a in ("-u", v)), *cmd]


def decoy_keys(spec: dict) -> list[str]:
    """The decoy counters a probe bumps if it reaches the decoy."""
    if spec["kind"] in ("tcp", "udp"):
        return [f"{spec['kind']}/{spec['host']}/{spec['port']}"]
    if spec["kind"] == "dns":
        transport = spec.get("transport", "udp")
        return [f"{transport}/{spec['server']}/{DNS_PORT}", f"dns/{spec['server']}"]
    return []


def label(spec: dict) -> str:
    if spec["kind"] == "dns":
        where = f"[{spec['server']}]" if ":" in spec["server"] else spec["server"]
        return f"dns {spec.get('qtype', 'A')} {spec['name']} @{where}:53/{spec.get('transport', 'udp')}"
    where = f"[{spec['host']}]" if ":" in spec["host"] else spec["host"]
    if spec["kind"] == "ping":
        return f"ping {where}"
    return f"{spec['kind']} {where}:{spec['port']}"


def reached(spec: dict, result: dict) -> bool:
    """Whether a CONTROL probe's result shows the decoy itself answered."""
    if spec["kind"] == "tcp":
        return BANNER in result["received"]
    if spec["kind"] == "udp":
        return BANNER in result["reply"]
    if spec["kind"] == "dns":
        return result.get("rcode") == "NOERROR" and not result["error"]
    return bool(result["reply"])


class Prober:
    """Runs probes in the pod's containers and keeps the ledger of control traffic."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        assert sandbox.upstream.decoy is not None
        self.decoy = sandbox.upstream.decoy
        self.expected: Counter[str] = Counter()

    def run(self, where: str, specs: list[dict]) -> list[dict]:
        box = self.sandbox
        if where == "workload":
            container, cmd = (
                box.workload,
                unproxied("python3", "-c", PROBE_SOURCE, json.dumps(specs)),
            )
        else:
            container, cmd = box.sidecar, ["python3", "-c", PROBE_SOURCE, json.dumps(specs)]
        proc = box.docker.exec(container, *cmd, timeout=60)
        assert proc.returncode == 0, f"probe program failed in {where}: {proc.stderr[-2000:]}"
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        for spec, result in zip(specs, results, strict=True):
            shown = {k: v for k, v in result.items() if v not in ("", None) and k not in HIDDEN}
            info(f"{where:>8}: {label(spec):<44} -> {json.dumps(shown)[:150]}")
        return results

    def controls(self, specs: list[dict]) -> None:
        """The same probes from the sidecar (exempt uid): each must reach the decoy."""
        results = self.run("sidecar", specs)
        for spec, result in zip(specs, results, strict=True):
            assert reached(spec, result), (
                f"control {label(spec)} from the sidecar did not reach the decoy: the test "
                f"network is broken, so a zero from the workload would prove nothing: {result}"
            )
            self.expected.update(decoy_keys(spec))

    def settle(self, specs: list[dict]) -> dict[str, int]:
        """Wait until the decoy counted the controls; then its counters must equal the ledger."""
        keys = sorted({k for spec in specs for k in decoy_keys(spec)})
        deadline = time.monotonic() + SETTLE_TIMEOUT
        counts = self.decoy.counts()
        while any(counts.get(k, 0) < self.expected[k] for k in keys):
            assert time.monotonic() < deadline, (
                f"the decoy never counted the sidecar's controls: {counts} vs {dict(self.expected)}"
            )
            time.sleep(0.05)
            counts = self.decoy.counts()
        leaked = {k: counts.get(k, 0) - self.expected[k] for k in keys}
        info(
            "decoy counters: "
            + ", ".join(f"{k}={counts.get(k, 0)}" for k in keys)
            + f" (the sidecar's controls: {', '.join(f'{self.expected[k]}' for k in keys)})"
        )
        assert not any(leaked.values()), (
            f"the workload's traffic REACHED the decoy (counts beyond the sidecar's controls): "
            f"{ {k: v for k, v in leaked.items() if v} }; names it was asked: {self.decoy.names()}"
        )
        return counts

    def unreached(self, specs: list[dict], action: Callable[[], object] | None = None):
        """Run `action` (default: `specs` in the workload), then the controls; nothing leaked."""
        result = action() if action is not None else self.run("workload", specs)
        self.controls(specs)
        self.settle(specs)
        return result


@pytest.fixture(scope="module")
def prober(sandbox: Sandbox) -> Prober:
    return Prober(sandbox)


def curl(sandbox: Sandbox, url: str, *extra: str):
    """curl with the proxy variables unset: status line + headers on stdout, then the code."""
    return sandbox.exec(
        *unproxied("curl", "-sS", "-m", "15", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}"),
        *extra,
        url,
    )


def header(dump: str, name: str) -> str | None:
    for line in dump.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def decisions(sandbox: Sandbox, **match: object) -> list[dict]:
    return [
        e
        for e in sandbox.sidecar_events()
        if e.get("event") == "decision" and all(e.get(k) == v for k, v in match.items())
    ]


@pytest.mark.parametrize(
    ("qtype", "answers"),
    [("A", [DECOY_ADDR]), ("AAAA", [DECOY_ADDR6]), ("TXT", []), ("HTTPS", [])],
    ids=["a", "aaaa", "txt", "https"],
)
def test_the_probes_dns_codec_round_trips(qtype: str, answers: list[str]) -> None:
    """The codec the probes and the decoy share (no container needed)."""
    query = probes.build_query("x.denied.example", qtype, 0x1234)
    asked = probes.parse_message(query)
    assert asked["questions"] == [["x.denied.example", probes.QTYPES[qtype]]]
    assert not asked["response"]
    answer = probes.parse_message(probes.build_answer(query, DECOY_ADDR, DECOY_ADDR6))
    assert (answer["id"], answer["response"], answer["rcode"]) == (0x1234, True, "NOERROR")
    assert answer["answers"] == answers


@pytest.mark.parametrize(
    "data",
    [b"\xc0\x0c" * 2, b"\x3fabc", b"\x01", b"\xc0"],
    ids=["pointer-loop", "label-past-end", "no-terminator", "half-pointer"],
)
def test_the_probes_dns_codec_refuses_broken_names(data: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        probes.read_name(b"\0" * 12 + data, 12)


def test_the_pod_is_enforced(sandbox: Sandbox) -> None:
    step("the pod as built: egress-lock first, NET_ADMIN only, exit 0; the ruleset in the pod")
    pod = sandbox.pod
    assert pod["metadata"]["labels"][c.LABEL_EGRESS] == c.EGRESS_ENFORCED, (
        f"the pod is labelled {pod['metadata']['labels'].get(c.LABEL_EGRESS)!r}: "
        "everything below checks what the lock enforces (E2E_EGRESS=unenforced set?)"
    )
    lock = pod["spec"]["initContainers"][0]
    assert lock["name"] == c.EGRESS_INIT_CONTAINER
    assert lock["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert f"init container {c.EGRESS_INIT_CONTAINER} completed (exit 0)" in sandbox.runner.events
    info(f"{c.EGRESS_INIT_CONTAINER}: {' '.join(lock['command'])} -> exit 0")
    # Read from the host, inside the pod's namespace only (nsenter), to show what was installed.
    table = subprocess.run(
        ["nsenter", f"--net=/proc/{sandbox.runner.infra_pid}/ns/net", "--",
         "nft", "list", "table", "inet", c.EGRESS_TABLE],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    for line in table.stdout.strip().splitlines():
        info(f"  {line}")


def test_https_to_an_allowed_host_goes_through_the_transparent_listener(
    sandbox: Sandbox,
) -> None:
    url = f"https://{UPSTREAM_NAME}/get"
    step(f"curl {url} with the proxy variables UNSET: the transparent listener decides")
    before = len(decisions(sandbox, host=UPSTREAM_NAME, mode="transparent"))
    proc = sandbox.exec(*unproxied("curl", "-sS", "-m", "20", "-w", "\n%{http_code}", url))
    body, _, status = proc.stdout.rpartition("\n")
    info(f"curl exit {proc.returncode}, HTTP {status or '-'} {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0 and status == "200", proc.stderr
    assert json.loads(body)["headers"]["Host"] == UPSTREAM_NAME
    found = decisions(sandbox, host=UPSTREAM_NAME, mode="transparent")[before:]
    info(json.dumps(found[0]) if found else "(no transparent decision line)")
    assert found and found[0]["allow"] is True and found[0]["reason"] == "allowed", found
    assert found[0]["original_destination"] == f"{UPSTREAM_ADDR}:443"


@pytest.mark.parametrize(
    ("name", "addr", "scheme", "port"),
    [
        (DENIED_NAME, DECOY_ADDR, "https", 443),
        (DENIED_NAME, DECOY_ADDR, "http", 80),
        (DENIED_NAME, DECOY_ADDR, "https", 8443),
        (DENIED6_NAME, DECOY_ADDR6, "https", 443),
    ],
    ids=["https-443", "http-80", "https-8443", "https-443-ipv6"],
)
def test_a_host_not_allowed_gets_the_403_and_its_server_no_connection(
    sandbox: Sandbox, prober: Prober, name: str, addr: str, scheme: str, port: int
) -> None:
    default = {"https": 443, "http": 80}[scheme]
    url = f"{scheme}://{name}{'' if port == default else f':{port}'}/"
    step(f"curl {url} ({name} -> {addr} in /etc/hosts, not in the policy), proxy variables unset")
    control = [{"kind": "tcp", "host": addr, "port": port}]
    proc = prober.unreached(control, lambda: curl(sandbox, url))
    dump, _, code = proc.stdout.rpartition("\n")
    code = code or proc.stdout.strip()
    error = header(dump, "x-proxy-error")
    info(f"curl exit {proc.returncode}, HTTP {code}, X-Proxy-Error {error}")
    assert code == "403", (proc.stdout, proc.stderr)
    # Port 443 is allowed, so the name decides; on other ports the port may decide first.
    expected = (
        ("blocked-by-allowlist",) if port == 443 else ("blocked-by-allowlist", "blocked-port")
    )
    assert error in expected, dump
    found = decisions(sandbox, host=name, mode="transparent")
    assert any(not d["allow"] and d["port"] == port for d in found), found
    shown = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    assert any(d.get("original_destination") == shown for d in found), found


def test_tls_without_sni_to_an_address_is_refused(sandbox: Sandbox, prober: Prober) -> None:
    step(f"curl https://{DECOY_ADDR}/ (an IP literal: no SNI), proxy variables unset")
    control = [{"kind": "tcp", "host": DECOY_ADDR, "port": 443}]
    proc = prober.unreached(control, lambda: curl(sandbox, f"https://{DECOY_ADDR}/"))
    info(f"curl exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    assert proc.returncode != 0 and not proc.stdout.startswith("HTTP/"), proc.stdout
    # Refused by the proxy for that reason, not by a broken listener.
    found = decisions(sandbox, reason="missing-sni", original_destination=f"{DECOY_ADDR}:443")
    assert found and not found[-1]["allow"], decisions(sandbox, mode="transparent")[-3:]


@pytest.mark.parametrize("addr", [DECOY_ADDR, DECOY_ADDR6], ids=["ipv4", "ipv6"])
def test_raw_tcp_on_ports_nothing_allows_is_closed(
    sandbox: Sandbox, prober: Prober, addr: str
) -> None:
    step(f"raw TCP to {addr} ports 8443 and 22 (bytes that are neither TLS nor HTTP)")
    specs = [
        {"kind": "tcp", "host": addr, "port": 8443, "send": "\x00\x01raw bytes\r\n"},
        {"kind": "tcp", "host": addr, "port": 22, "send": "SSH-2.0-OpenSSH_9.9\r\n"},
    ]
    for spec, result in zip(specs, prober.unreached(specs), strict=True):
        assert BANNER not in result["received"], result
        # Redirected to the transparent listener, which closes what it cannot decide on: never
        # left hanging, and a decision line says why.
        assert result["connect"] == "ok", (label(spec), result)
        assert result["end"] in ("eof", "ECONNRESET", "EPIPE"), (label(spec), result)
        shown = f"[{addr}]:{spec['port']}" if ":" in addr else f"{addr}:{spec['port']}"
        found = decisions(sandbox, mode="transparent", original_destination=shown)
        assert any(d["reason"] == "unrecognized-protocol" for d in found), (shown, found[-3:])


@pytest.mark.parametrize("addr", [DECOY_ADDR, DECOY_ADDR6], ids=["ipv4", "ipv6"])
def test_udp_delivers_nothing(sandbox: Sandbox, prober: Prober, addr: str) -> None:
    step(f"UDP to {addr} ports 443 (QUIC), 9999 and 53 (not DNS): no datagram arrives")
    specs = [
        {"kind": "udp", "host": addr, "port": 443, "send": "quic-initial"},
        {"kind": "udp", "host": addr, "port": 9999, "send": "probe"},
        # Port 53 goes to the sidecar's DNS listener whatever the payload: not a DNS message,
        # so no answer (the decoy would send its banner), and nothing at the decoy.
        {"kind": "udp", "host": addr, "port": DNS_PORT, "send": "not dns", "timeout": 0.5},
    ]
    results = prober.unreached(specs)
    for spec, result in zip(specs, results, strict=True):
        assert BANNER not in result["reply"], (label(spec), result)
    for spec, result in zip(specs[:2], results[:2], strict=True):
        # Rejected at once (the send fails, or an ICMP error comes back), not silently dropped:
        # a QUIC client falls back to TCP instead of waiting out its timeout.
        assert result["error"] in ICMP_ERRORS and result["elapsed"] < QUICK, (label(spec), result)


def dns(server: str, name: str, qtype: str = "A", transport: str = "udp") -> dict:
    return {"kind": "dns", "server": server, "name": name, "qtype": qtype, "transport": transport}


@pytest.mark.parametrize(
    ("server", "transport"),
    [
        (DECOY_ADDR, "udp"),
        (DECOY_ADDR, "tcp"),
        (PUBLIC_RESOLVER, "udp"),
        (DECOY_ADDR6, "udp"),
        (PUBLIC_RESOLVER6, "tcp"),
    ],
    ids=["decoy-udp", "decoy-tcp", "8.8.8.8-udp", "decoy-ipv6-udp", "public-ipv6-tcp"],
)
def test_dns_is_answered_in_the_pod_and_never_leaves(
    sandbox: Sandbox, prober: Prober, server: str, transport: str
) -> None:
    step(f"DNS to {server} over {transport}: redirected to the sidecar, nothing reaches it")
    exfil = f"{os.urandom(6).hex()}.tunnel.{DENIED_NAME}"
    specs = [
        dns(server, DENIED_NAME, "A", transport),
        dns(server, exfil, "AAAA", transport),
        dns(server, UPSTREAM_NAME, "TXT", transport),
        dns(server, UPSTREAM_NAME, "HTTPS", transport),
        dns(server, UPSTREAM_NAME, "A", transport),
    ]
    denied, made_up, txt, https_rr, allowed = prober.unreached(specs)
    for spec, result in zip(specs[:4], (denied, made_up, txt, https_rr), strict=True):
        assert not result["error"], (label(spec), result)
        assert result["rcode"] in NOT_ANSWERED and result["answers"] == [], (label(spec), result)
    # The allowed name: the sidecar's own resolver's answer (the decoy would say DECOY_ADDR).
    assert allowed["rcode"] == "NOERROR" and allowed["answers"] == [UPSTREAM_ADDR], allowed
    lines = decisions(sandbox, protocol="dns")
    for name, qtype, reason in (
        (DENIED_NAME, "A", "blocked-by-allowlist"),
        (UPSTREAM_NAME, "TXT", "dns-query-refused"),
        (UPSTREAM_NAME, "A", "allowed"),
    ):
        found = [d for d in lines if d.get("host") == name and d.get("qtype") == qtype]
        assert any(d.get("reason") == reason for d in found), (name, qtype, found[-3:])


@pytest.mark.parametrize("addr", [DECOY_ADDR, DECOY_ADDR6], ids=["ipv4", "ipv6"])
def test_ping_fails(sandbox: Sandbox, prober: Prober, addr: str) -> None:
    step(f"ICMP echo to {addr} (unprivileged ICMP socket): no reply")
    spec = {"kind": "ping", "host": addr}
    (result,) = prober.run("workload", [spec])
    # A socket the kernel refused to open would prove nothing about the lock.
    assert result["socket"] == "ok", result
    assert result["reply"] is False, result
    prober.controls([spec])


def test_the_decoy_counted_only_the_controls(sandbox: Sandbox, prober: Prober) -> None:
    step("the decoy's totals: exactly the sidecar's controls, nothing from the workload")
    counts = prober.decoy.counts()
    info(f"decoy: {json.dumps(counts, sort_keys=True)}")
    info(f"controls: {json.dumps(dict(prober.expected), sort_keys=True)}")
    assert counts == dict(prober.expected), prober.decoy.names()
    for kind, match in (("transparent", {"mode": "transparent"}), ("dns", {"protocol": "dns"})):
        reasons = Counter(d.get("reason") for d in decisions(sandbox, **match))
        info(f"sidecar {kind} decision lines by reason: {dict(sorted(reasons.items()))}")
