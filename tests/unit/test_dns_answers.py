"""The DNS addon (addons/dns_answers.py) on messages, without sockets: what it answers to bytes
that are not a query, the paths a live listener cannot reach on demand (lookups over the
in-flight bound, a decision that raises, a name that cannot be written back, an answer too long
for UDP), its option, its readiness part, and the refusal of mitmproxy's own DNS mode."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time

import pytest
from mitmproxy import dns, exceptions
from mitmproxy.net.dns import response_codes
from mitmproxy.test import taddons

from addons import allowlist, events, health
from addons.allowlist import Allowlist
from addons.dns_answers import DnsAnswers
from addons.dns_listener import TCP_REPLY_LIMIT, UDP_REPLY_LIMIT
from addons.policy import policy_from_domains
from tests.support.processes import free_port

CLIENT = "127.0.0.1:5300"


class Policies:
    def __init__(self, domains=("api.test",)) -> None:
        self.current = policy_from_domains(domains)


def query(name: str, qtype: int = dns.types.A, qid: int = 1, **fields) -> dns.DNSMessage:
    values = {
        "id": qid,
        "query": True,
        "op_code": 0,
        "authoritative_answer": False,
        "truncation": False,
        "recursion_desired": True,
        "recursion_available": False,
        "reserved": 0,
        "response_code": 0,
        "questions": [dns.Question(name, qtype, dns.classes.IN)],
        "answers": [],
        "authorities": [],
        "additionals": [],
        "timestamp": time.time(),
    }
    values.update(fields)
    return dns.DNSMessage(**values)


def ask(addon: DnsAnswers, message: bytes, limit: int = UDP_REPLY_LIMIT) -> bytes | None:
    return asyncio.run(addon.answer(message, CLIENT, limit))


def ask_message(addon: DnsAnswers, message: dns.DNSMessage, **kw) -> dns.DNSMessage:
    reply = ask(addon, message.packed, **kw)
    assert reply is not None
    return dns.DNSMessage.unpack(reply)


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    seen: list[dict] = []
    monkeypatch.setattr(events, "emit", lambda event, **fields: seen.append(fields))
    return seen


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> list:
    """What the addon's lookup finds (no real name server is ever asked here)."""
    found: list = [ipaddress.ip_address("93.184.216.34")]

    async def lookup(self, name: str, qtype: int):
        return tuple(found)

    monkeypatch.setattr(DnsAnswers, "_lookup", lookup)
    return found


def addon(**kw) -> DnsAnswers:
    return DnsAnswers(Policies(), events.DecisionMetrics(), **kw)  # type: ignore[arg-type]


# -- messages that are not queries -------------------------------------------------------------

GOOD = query("api.test", qid=0x1234).packed
MARKER = b"SECRETMARKER"


@pytest.mark.parametrize(
    ("message", "formerr_id"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(GOOD[:11], None, id="shorter-than-a-header"),
        pytest.param(GOOD[:12], 0x1234, id="header-only"),
        pytest.param(GOOD[:-3], 0x1234, id="truncated-question"),
        pytest.param(GOOD + MARKER, 0x1234, id="trailing-bytes"),
        pytest.param(
            struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
            7,
            id="compression-loop",
        ),
        pytest.param(
            GOOD[:12] + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01", 0x1234, id="label-80"
        ),
        pytest.param(
            GOOD[:12] + b"\x04\xff" + MARKER[:3] + b"\x00\x00\x01\x00\x01", 0x1234, id="non-idna"
        ),
        pytest.param(
            struct.pack("!HHHHHH", 9, 0x0100, 65535, 65535, 0, 0) + MARKER, 9, id="counts-lie"
        ),
        pytest.param(MARKER * 20, 0x5345, id="garbage-whose-header-reads-as-a-query"),
        pytest.param(
            b"\x00\x07\x81\x80" + MARKER * 5, None, id="garbage-whose-header-reads-as-a-response"
        ),
        pytest.param(query("api.test", query=False).packed, None, id="a-well-formed-response"),
    ],
)
def test_messages_that_are_not_queries(lines: list[dict], message: bytes, formerr_id) -> None:
    """FORMERR, with no question, when the header says it is a query; else nothing. Neither
    gets a decision line (there is no question to decide), and nothing quotes the bytes."""
    the_addon = addon()
    reply = ask(the_addon, message)
    if formerr_id is None:
        assert reply is None
    else:
        assert reply is not None
        answer = dns.DNSMessage.unpack(reply)
        assert (answer.id, answer.query, answer.response_code) == (formerr_id, False, 1)
        assert answer.questions == [] and answer.answers == []
    assert lines == []
    assert the_addon.servers.counts["malformed"] == 1


# -- the answers -------------------------------------------------------------------------------


def test_over_the_in_flight_bound_is_servfail_at_once(lines: list[dict], addresses) -> None:
    the_addon = addon(max_in_flight=0)
    answer = ask_message(the_addon, query("api.test"))
    assert answer.response_code == response_codes.SERVFAIL
    assert lines[-1]["reason"] == "dns-overloaded" and lines[-1]["protocol"] == "dns"
    assert the_addon.metrics.decisions[(False, "dns-overloaded")] == 1


def test_a_raising_decision_answers_refused(lines: list[dict]) -> None:
    class Broken:
        @property
        def current(self):
            raise RuntimeError("boom api.test")

    the_addon = DnsAnswers(Broken(), events.DecisionMetrics())  # type: ignore[arg-type]
    answer = ask_message(the_addon, query("api.test"))
    assert answer.response_code == response_codes.REFUSED
    assert lines[-1]["reason"] == "policy-error" and lines[-1]["client"] == CLIENT


def test_a_name_that_cannot_be_written_back_is_answered_without_it(lines: list[dict]) -> None:
    message = query("api.test").packed.replace(b"\x03api", b"\x01.")
    reply = ask(addon(), message)
    assert reply is not None
    answer = dns.DNSMessage.unpack(reply)
    assert answer.response_code == response_codes.NXDOMAIN
    assert answer.questions == []


def test_an_allowed_name_is_answered_with_a_30_second_ttl(lines: list[dict], addresses) -> None:
    answer = ask_message(addon(), query("API.test", qid=99))
    assert (answer.id, answer.response_code) == (99, response_codes.NOERROR)
    assert [(r.ttl, str(r.ipv4_address)) for r in answer.answers] == [(30, "93.184.216.34")]
    assert (lines[-1]["reason"], lines[-1]["qtype"], lines[-1]["rule"]) == (
        "allowed",
        "A",
        "api.test",
    )


def test_an_answer_too_long_for_udp_is_truncated_and_whole_over_tcp(
    lines: list[dict], addresses
) -> None:
    addresses[:] = [ipaddress.ip_address(f"93.184.{i // 250}.{i % 250 + 1}") for i in range(60)]
    name = ".".join(["a" * 60] * 3) + ".api.test"
    the_addon = DnsAnswers(Policies(("*.api.test",)), events.DecisionMetrics())  # type: ignore[arg-type]
    udp = ask(the_addon, query(name).packed, UDP_REPLY_LIMIT)
    assert udp is not None and len(udp) <= UDP_REPLY_LIMIT
    truncated = dns.DNSMessage.unpack(udp)
    assert truncated.truncation and 0 < len(truncated.answers) < 60
    whole = ask_message(the_addon, query(name), limit=TCP_REPLY_LIMIT)
    assert not whole.truncation and len(whole.answers) == 60


# -- option, readiness, and mitmproxy's DNS mode -----------------------------------------------


@pytest.mark.parametrize(
    "values",
    [["localhost:8053"], ["127.0.0.1"], ["0.0.0.0:53"], ["127.0.0.1:8053", "127.0.0.1:8053"]],
    ids=["name", "no-port", "wildcard", "twice"],
)
def test_a_bad_dns_listen_value_is_an_options_error(values: list[str]) -> None:
    the_addon = addon()
    with (
        taddons.context(the_addon) as tctx,
        pytest.raises(exceptions.OptionsError, match=r"dns_listen '.*Fix:"),
    ):
        tctx.configure(the_addon, dns_listen=values)


def test_readiness_lists_each_address_and_is_false_until_it_serves() -> None:
    the_addon = addon()
    assert the_addon.readiness() == (True, {})  # off: nothing to wait for
    with taddons.context(the_addon) as tctx:
        tctx.configure(the_addon, dns_listen=["127.0.0.1:8053", "::1:8053"])
        assert the_addon.readiness() == (
            False,
            {"listeners": {"dns@127.0.0.1:8053": False, "dns@[::1]:8053": False}},
        )


def test_health_adds_a_parts_listeners_to_mitmproxys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_listeners", lambda: {"regular": True})
    parts = {"dns@127.0.0.1:8053": True}
    status = health.Health(
        readiness=[lambda: (all(parts.values()), {"listeners": dict(parts)})], metrics=[]
    )
    ready = status.readiness()
    assert ready.ready and ready.detail["listening"] is True
    assert ready.detail["listeners"] == {"regular": True, "dns@127.0.0.1:8053": True}
    parts["dns@127.0.0.1:8053"] = False
    ready = status.readiness()
    assert not ready.ready and ready.detail["listening"] is False


@pytest.mark.parametrize("spec", ["dns@127.0.0.1:8053", "dns", "dns@[::1]:53"])
async def test_mitmproxys_dns_mode_is_refused_pointing_at_dns_listen(spec: str) -> None:
    addons = allowlist.make_addons()
    [the_allowlist] = [a for a in addons if isinstance(a, Allowlist)]
    with (
        taddons.context(*addons) as tctx,
        pytest.raises(exceptions.OptionsError, match=r"--set dns_listen=HOST:PORT"),
    ):
        tctx.configure(the_allowlist, mode=[spec])


async def test_running_binds_done_closes_and_a_changed_address_moves_the_sockets() -> None:
    first, second = free_port(), free_port()
    the_addon = addon()
    with taddons.context(the_addon) as tctx:
        tctx.configure(the_addon, dns_listen=[f"127.0.0.1:{first}"])
        assert the_addon.servers.status() == {}  # nothing binds before running()
        the_addon.running()
        await until_serving(the_addon)
        assert [str(a) for a in the_addon.servers.status()] == [f"127.0.0.1:{first}"]
        tctx.configure(the_addon, dns_listen=[f"127.0.0.1:{second}"])
        await until_serving(the_addon)
        assert [str(a) for a in the_addon.servers.status()] == [f"127.0.0.1:{second}"]
        assert port_is_free(first)
        the_addon.done()
        assert the_addon.servers.status() == {} and port_is_free(second)


async def until_serving(the_addon: DnsAnswers) -> None:
    async with asyncio.timeout(2):
        while not the_addon.readiness()[0]:
            await asyncio.sleep(0.01)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        try:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
