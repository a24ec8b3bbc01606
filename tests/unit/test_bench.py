"""The bench's own helpers (bench/): the DNS load client against a real UDP server, the
namespace's nftables rules (checked by nft in a private network namespace), merging runs, and
the report's issue-14 rows and targets."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

from bench import dns, egress, load, policy_micro, report

# -- the DNS client ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qtype", "wire_name", "wire_type"),
    [
        ("bench.test", "A", b"\x05bench\x04test\x00", 1),
        ("bench.test.", "TXT", b"\x05bench\x04test\x00", 16),
        ("a.b.example", "AAAA", b"\x01a\x01b\x07example\x00", 28),
    ],
    ids=["a", "txt-trailing-dot", "aaaa-three-labels"],
)
def test_query_wire_form(name: str, qtype: str, wire_name: bytes, wire_type: int) -> None:
    packet = dns.query(0x1234, name, qtype)
    assert packet[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert packet[12:] == wire_name + struct.pack("!HH", wire_type, 1)


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        (struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0), (7, "NOERROR")),
        (struct.pack("!HHHHHH", 8, 0x8185, 1, 0, 0, 0), (8, "REFUSED")),
        (struct.pack("!HHHHHH", 9, 0x8183, 1, 0, 0, 0), (9, "NXDOMAIN")),
        (struct.pack("!HHHHHH", 10, 0x818B, 1, 0, 0, 0), (10, "11")),
        (struct.pack("!HHHHHH", 11, 0x0100, 1, 0, 0, 0), None),
        (b"\x00\x01\x81", None),
    ],
    ids=["noerror", "refused", "nxdomain", "unnamed-code", "a-query-not-a-response", "short"],
)
def test_reply_id_and_rcode(reply: bytes, parsed: tuple[int, str] | None) -> None:
    assert dns.reply_id_and_rcode(reply) == parsed


class UdpServer:
    """A DNS server on 127.0.0.1 answering every query with `rcode`; with `drop_every`, it
    ignores every n-th query (a lost datagram)."""

    def __init__(self, rcode: int, drop_every: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.rcode, self.drop_every = rcode, drop_every
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen += 1
            if self.drop_every and self.seen % self.drop_every == 0:
                continue
            qid = struct.unpack_from("!H", data)[0]
            self.sock.sendto(struct.pack("!HHHHHH", qid, 0x8180 | self.rcode, 1, 0, 0, 0), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def refusing_server() -> Iterator[UdpServer]:
    server = UdpServer(rcode=5)
    yield server
    server.close()


def test_dns_load_counts_the_expected_answers(refusing_server: UdpServer) -> None:
    got = dns.load(
        refusing_server.address, "bench.test", "TXT", "REFUSED", count=300, duration=10, parallel=4
    )
    assert (got.sent, got.expected, got.other, got.lost) == (300, 300, 0, 0)
    assert got.rcodes == {"REFUSED": 300} and len(got.latencies) == 300


def test_dns_load_counts_other_answers_apart(refusing_server: UdpServer) -> None:
    got = dns.load(
        refusing_server.address, "bench.test", "A", "NOERROR", count=50, duration=10, parallel=2
    )
    assert (got.expected, got.other, got.rcodes) == (0, 50, {"REFUSED": 50})


def test_dns_load_counts_unanswered_queries_as_lost() -> None:
    server = UdpServer(rcode=0, drop_every=5)
    try:
        got = dns.load(server.address, "x.test", "A", "NOERROR", count=50, duration=10, timeout=0.2)
    finally:
        server.close()
    assert got.sent == 50 and got.lost == 10 and got.expected == 40


def test_dns_load_is_bounded_in_time() -> None:
    # Nothing answers (a bound port that never replies): the run ends at its duration.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        got = dns.load(
            silent.getsockname(), "x.test", "A", "NOERROR", count=10**9, duration=0.5, timeout=0.2
        )
    assert got.seconds < 2 and got.expected == 0
    assert got.lost + got.unfinished == got.sent > 0


def test_dns_load_counts_a_closed_port_as_lost() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()
    got = dns.load(closed, "x.test", "A", "NOERROR", count=20, duration=5, parallel=2)
    assert got.sent == 20 and got.lost == 20 and got.expected == 0


# -- the namespace's rules ------------------------------------------------------------------


def test_egress_ruleset_loads_in_a_private_namespace() -> None:
    # `nft -c` checks without applying, in a network namespace of its own (never the host's).
    checked = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=egress.ruleset(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    "rule",
    [
        "meta skuid != 1000 return",
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return",
        "udp dport 53 redirect to :8053",
        "tcp dport 53 redirect to :8053",
        "meta l4proto tcp redirect to :8082",
    ],
    ids=["only-the-client-uid", "loopback-v4", "loopback-v6", "dns-udp", "dns-tcp", "tcp"],
)
def test_egress_ruleset_redirects_like_the_lock(rule: str) -> None:
    assert rule in egress.ruleset()


# -- merging and figures ------------------------------------------------------------------


def _transfers(ok: int, seconds: float, cpu: float = 0.1) -> load.Transfers:
    return load.Transfers(ok, 1, seconds, [0.001] * ok, ok * 10, cpu, {"000/200": ok})


def test_merge_adds_up_the_halves() -> None:
    merged = load.merge([_transfers(100, 1.0), _transfers(300, 1.0)])
    assert (merged.ok, merged.failed, merged.seconds, merged.bytes) == (400, 2, 2.0, 4000)
    assert merged.statuses == {"000/200": 400} and len(merged.latencies) == 400
    figures = load.figures("keepalive", merged, cpu=0.4)
    assert figures["per_s"] == 200 and figures["proxy_cpu_ms_per_req"] == pytest.approx(1.0)


def test_dns_figures_divide_cpu_by_every_answer() -> None:
    answers = dns.Answers(sent=110, expected=90, other=10, lost=10, seconds=2.0)
    answers.latencies = [0.002] * 90
    fig = egress.dns_figures(answers, cpu=0.05)
    assert fig["per_s"] == 45 and fig["failed"] == 20
    assert fig["proxy_cpu_ms_per_req"] == pytest.approx(0.5)


# -- the report ---------------------------------------------------------------------------


def _egress_run(tp_rps: float, tp_cpu: float, dns_cpu: float, failed: int = 0) -> dict:
    def regime(per_s: float, cpu: float, lost: int = 0) -> dict:
        return {"per_s": per_s, "proxy_cpu_ms_per_req": cpu, "failed": lost, "p99_ms": 1.0}

    return {
        "regimes": {},
        "egress": {
            "regimes": {
                "connect_keepalive": regime(1000, 0.5),
                "transparent_keepalive": regime(tp_rps, tp_cpu),
                "connect_newconn": regime(200, 4.0),
                "transparent_newconn": regime(tp_rps / 5, tp_cpu * 8),
                "dns_a": regime(2000, dns_cpu, failed),
                "dns_txt": regime(3000, dns_cpu / 2),
            }
        },
    }


MICRO = {
    "load_10k_s": 0.2,
    "decide_ns_10": 2000,
    "decide_ns_10k": 2000,
    "decide_ratio_10k_over_10": 1,
}


def _met(runs: dict) -> dict[str, bool | None]:
    summary = report.summarize(runs, MICRO)
    return {c["target"]: c["met"] for c in summary["targets"] if c.get("issue") == 14}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (_egress_run(950, 0.54, 0.3), [True, True, True, True, True, True, True]),
        (_egress_run(850, 0.54, 0.3), [False, False, True, True, True, True, True]),
        (_egress_run(1000, 0.60, 0.3), [True, True, False, False, True, True, True]),
        (_egress_run(1000, 0.5, 0.6), [True, True, True, True, False, True, True]),
        (_egress_run(1000, 0.5, 0.3, failed=3), [True, True, True, True, True, True, False]),
        ({"regimes": {}, "egress": {"error": "nft failed"}}, [None] * 7),
    ],
    ids=[
        "all-met",
        "transparent-slower",
        "transparent-costlier",
        "dns-costly",
        "dns-lost",
        "failed",
    ],
)
def test_issue_14_targets(run: dict, expected: list[bool | None]) -> None:
    assert list(_met({"sidecar": [run]}).values()) == expected


def test_ratios_are_medians_of_each_runs_own() -> None:
    # Run 1 is twice as fast overall as run 2, and both have transparent at 0.9x CONNECT.
    fast, slow = _egress_run(900, 0.5, 0.3), _egress_run(450, 0.5, 0.3)
    for name, regime in slow["egress"]["regimes"].items():
        if name.startswith("connect"):
            regime["per_s"] /= 2
    medians = report.summarize({"sidecar": [fast, slow, fast]}, MICRO)["medians"]
    assert medians["eg_keepalive_ratio"]["sidecar"] == pytest.approx(0.9)


def test_markdown_has_the_egress_table_and_names_failures() -> None:
    runs = {
        "sidecar": [_egress_run(950, 0.5, 0.3)],
        "mitmdump": [{"regimes": {}, "egress": {"error": "mitmdump: no 200 connect\ndetail"}}],
    }
    summary = report.summarize(runs, MICRO)
    meta = {
        "repetitions": 1,
        "seconds_per_regime": 2,
        "quick": True,
        "machine": "m",
        "date": "d",
        "commit": "c",
        "python": "3.13",
    }
    text = report.markdown(summary, meta)
    assert "| transparent / CONNECT, keep-alive req/s | - | 0.95x | - |" in text
    assert "| DNS answers, TXT refused (8 clients) (answers/s) | - | 3,000 | - |" in text
    assert "**mitmdump: 1 egress run(s) failed**: mitmdump: no 200 connect" in text
    assert "| transparent keep-alive req/s >= 0.9x CONNECT | 14 | 0.95x | yes |" in text
    assert "| RSS idle <= 64 MiB | 6 | - | - |" in text
    without = report.markdown(summary, {**meta, "egress": False})
    assert "transparent / CONNECT" not in without.split("| target |")[0]


# -- issue 15: the policy microbench with rules and a deny list ------------------------------


@pytest.mark.parametrize(
    ("extra_rules", "extra_denied"),
    [(0, 0), (policy_micro.EXTRA_RULES, policy_micro.EXTRA_DENIED)],
    ids=["10-entries", "1k-rules-1k-denied"],
)
def test_the_rules_microbench_measures_the_paths_it_names(
    tmp_path, extra_rules: int, extra_denied: int
) -> None:
    """Every timed case takes the decision it is meant to (else the ratio measures nothing)."""
    p = policy_micro._load(policy_micro.rules_policy(extra_rules, extra_denied), tmp_path, "p.yaml")
    assert len(p.rules) == 2 + extra_rules
    for stage in (policy_micro.Stage.CONNECT, policy_micro.Stage.REQUEST):
        calls = policy_micro._decision_calls(p, stage)
        assert len(calls) == sum(1 for case in policy_micro.DECISIONS if case[0] is stage)


RULES_MICRO = {
    "rules_connect_ns_10": 3000,
    "rules_connect_ns_1k": 3300,
    "rules_connect_ratio": 1.1,
    "rules_request_ns_10": 9000,
    "rules_request_ns_1k": 9900,
    "rules_request_ratio": 1.1,
}


@pytest.mark.parametrize(
    ("ratio", "met"),
    [(1.1, True), (1.5, True), (1.6, False), (None, None)],
    ids=["within", "at-target", "over", "not-measured"],
)
def test_issue_15_target(ratio: float | None, met: bool | None) -> None:
    micro = MICRO | RULES_MICRO | {"rules_ratio_1k_over_10": ratio}
    checks = [c for c in report.summarize({}, micro)["targets"] if c["issue"] == 15]
    assert [(c["limit"], c["op"], c["met"]) for c in checks] == [(1.5, "<=", met)]


def test_markdown_reports_the_rules_microbench() -> None:
    meta = {
        "repetitions": 1,
        "seconds_per_regime": 2,
        "quick": True,
        "machine": "m",
        "date": "d",
        "commit": "c",
        "python": "3.13",
        "egress": False,
    }
    micro = MICRO | RULES_MICRO | {"rules_ratio_1k_over_10": 1.1}
    text = report.markdown(report.summarize({}, micro), meta)
    assert "CONNECT 3.0 us vs 3.3 us (1.10x), request 9.0 us vs 9.9 us (1.10x)" in text
    assert (
        "| decision cost +1,000 rules +1,000 denied / 10 entries <= 1.5 | 15 | 1.1x | yes |" in text
    )
    # A summary from before issue 15 (no rules figures) still renders.
    assert "rules" not in report.markdown(report.summarize({}, MICRO), meta).split("| target |")[0]
