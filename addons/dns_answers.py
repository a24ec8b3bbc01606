"""The DNS listener (`--set dns_listen=127.0.0.1:8053`): every query is answered here, and none
is ever sent on to a name server as the client wrote it.

A and AAAA questions for names the policy allows are looked up with the proxy's own resolver
(getaddrinfo, as for a CONNECT) for the asked family only, and answered with the addresses a
sandbox may reach (`addons.core.dns.keep_addresses`); every other question is answered REFUSED
(a type, class or shape other than one A/AAAA question) or NXDOMAIN (a name the policy does not
allow). One decision line per query, counted in the same metrics as every other decision.

The sockets are `addons.dns_listener`'s (not mitmproxy's DNS mode: see there why). They open in
`running` and close in `done`, so when mitmdump unloads a broken script the port closes and
clients get ICMP port unreachable at once: nothing answers, nothing is forwarded.

Memory stays bounded under a flood of made-up names: nothing is cached per name or per client,
and at most `MAX_IN_FLIGHT` lookups run or wait at once (beyond that, SERVFAIL `dns-overloaded`).
A message that does not parse is answered FORMERR when its header says it is a query, else
dropped; it gets no decision line, and its bytes are never logged.
"""

from __future__ import annotations

import asyncio
import collections.abc
import ipaddress
import logging
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

from mitmproxy import ctx, dns, exceptions
from mitmproxy.net.dns import response_codes

from addons import events, flows, policy
from addons.core import reasons
from addons.core.decision import Decision
from addons.core.dns import (
    AAAA,
    QueryFacts,
    decide_answer,
    decide_question,
    keep_addresses,
    type_name,
)
from addons.dns_listener import DnsServers, Limits, ListenAddress, parse_listens
from addons.policy import IPAddress
from addons.policy_source import PolicySource

logger = logging.getLogger(__name__)

NAME = "dnsanswers"
OPTION = "dns_listen"

MAX_IN_FLIGHT = 64
LOOKUP_THREADS = 8
# Below a stub resolver's usual 5 s, so the client gets SERVFAIL rather than its own timeout.
LOOKUP_TIMEOUT = 4.0
ANSWER_TTL = 30

# A lookup that found the name but nothing of this family is NODATA (NOERROR, no records), never
# NXDOMAIN: musl's resolver drops the A answer too when the AAAA one says NXDOMAIN.
_NO_ADDRESSES = {socket.EAI_NONAME, socket.EAI_NODATA, getattr(socket, "EAI_ADDRFAMILY", -9)}
# What mitmproxy's parser raises on bytes that are not a DNS message (a pointer chain can recurse).
_MALFORMED = (struct.error, ValueError, UnicodeError, IndexError, RecursionError)
_HEADER = struct.Struct("!HHHHHH")


class DnsAnswers:
    name = NAME

    def __init__(
        self,
        policies: PolicySource,
        metrics: events.DecisionMetrics,
        max_in_flight: int = MAX_IN_FLIGHT,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        limits: Limits | None = None,
    ) -> None:
        self._policies = policies
        self.metrics = metrics
        self._max_in_flight = max_in_flight
        self._timeout = lookup_timeout
        self._in_flight = 0
        # Its own threads: a DNS flood must not queue behind, or ahead of, CONNECT lookups in
        # the loop's default executor.
        self._executor: ThreadPoolExecutor | None = None
        self._addresses: tuple[ListenAddress, ...] = ()
        self._servers = DnsServers(self.answer, limits)
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option(
            OPTION,
            collections.abc.Sequence[str],
            [],
            "The DNS listener (UDP and TCP): HOST:PORT with an IP address, repeatable, e.g. "
            "--set dns_listen=127.0.0.1:8053 --set dns_listen=::1:8053 (or [::1]:8053). "
            "Only A/AAAA for allowed names are answered; no query is forwarded. Empty: off.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        try:
            addresses = parse_listens(getattr(ctx.options, OPTION))
        except ValueError as e:
            raise exceptions.OptionsError(str(e)) from None
        if addresses == self._addresses:
            return
        self._addresses = addresses
        if self._running:
            self._servers.stop()
            self._start()

    def running(self) -> None:
        self._running = True
        self._start()

    def done(self) -> None:
        self._running = False
        self._servers.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _start(self) -> None:
        try:
            self._servers.start(self._addresses)
        except OSError as e:
            # An error at start-up makes mitmproxy exit (ErrorCheck), as for a proxy listener.
            self._servers.stop()
            logger.error(
                f"DNS listener cannot listen on {e.strerror}. "
                "Fix: free the port, or choose another --set dns_listen=HOST:PORT"
            )

    # -- health ----------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Every configured address, up only when its UDP and TCP sockets are both serving."""
        status = self._servers.status()
        listeners = {f"dns@{a}": status.get(a, False) for a in self._addresses}
        return all(listeners.values()), ({"listeners": listeners} if listeners else {})

    def render_metrics(self) -> str:
        lines = [
            "# HELP auth_proxy_dns_listener_events_total DNS listener events: malformed "
            "messages, datagrams dropped when busy, TCP connections closed (idle, empty frame, "
            "evicted at the cap, refused at the cap).",
            "# TYPE auth_proxy_dns_listener_events_total counter",
        ]
        for event, count in sorted(self._servers.counts.items()):
            lines.append(f'auth_proxy_dns_listener_events_total{{event="{event}"}} {count}')
        lines.append("# HELP auth_proxy_dns_tcp_connections Open DNS TCP connections.")
        lines.append("# TYPE auth_proxy_dns_tcp_connections gauge")
        lines.append(f"auth_proxy_dns_tcp_connections {self._servers.tcp_connections}")
        return "\n".join(lines) + "\n"

    # -- answering -------------------------------------------------------------------------

    async def answer(self, message: bytes, client: str, limit: int) -> bytes | None:
        """The reply to one DNS message (at most `limit` bytes), or None to send nothing."""
        try:
            request = dns.DNSMessage.unpack(message)
        except _MALFORMED:
            self._servers.counts["malformed"] += 1
            return _format_error(message)
        if not request.query:
            # Never answer an answer: two DNS speakers would answer each other forever.
            self._servers.counts["malformed"] += 1
            return None
        try:
            response = await self._respond(request, client)
        except Exception as e:
            # Never the exception's text: it may quote the name the client sent.
            logger.error(f"DNS decision failed ({type(e).__name__}); answering REFUSED")
            response = _fail(request, response_codes.REFUSED)
            self._record(request, client, Decision(False, reasons.POLICY_ERROR.name))
        return _packed_within(response, limit)

    async def _respond(self, request: dns.DNSMessage, client: str) -> dns.DNSMessage:
        current = self._policies.current
        decision = decide_question(_facts(request), current)
        if not decision.allow:
            code = (
                response_codes.REFUSED
                if decision.reason == reasons.DNS_QUERY_REFUSED.name
                else response_codes.NXDOMAIN
            )
            self._record(request, client, decision)
            return _fail(request, code)
        if self._in_flight >= self._max_in_flight:
            self._record(
                request, client, Decision(False, reasons.DNS_OVERLOADED.name, decision.rule)
            )
            return _fail(request, response_codes.SERVFAIL)
        question = request.questions[0]
        found = await self._lookup(policy.normalize_host(question.name), question.type)
        kept = keep_addresses(found or (), current)
        self._record(request, client, decide_answer(decision, found, kept))
        if found is None:
            return _fail(request, response_codes.SERVFAIL)
        return _succeed(request, question, kept)

    async def _lookup(self, name: str, qtype: int) -> tuple[IPAddress, ...] | None:
        """Every address of the asked family; () when the name has none; None when the lookup
        failed or took too long."""
        family = socket.AF_INET6 if qtype == AAAA else socket.AF_INET
        if self._executor is None:
            self._executor = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="dns-lookup")
        loop = asyncio.get_running_loop()
        lookup = loop.run_in_executor(
            self._executor, socket.getaddrinfo, name, None, family, socket.SOCK_STREAM
        )
        # Counted until the thread is done, not until we stop waiting: a timed-out lookup still
        # holds its thread, and the bound is on work, not on waiters.
        self._in_flight += 1
        lookup.add_done_callback(self._lookup_done)
        try:
            infos = await asyncio.wait_for(asyncio.shield(lookup), self._timeout)
        except socket.gaierror as e:
            return () if e.args and e.args[0] in _NO_ADDRESSES else None
        except (OSError, TimeoutError, UnicodeError):
            return None
        found = (ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
        return tuple(a for a in dict.fromkeys(found) if a.version == (6 if qtype == AAAA else 4))

    def _lookup_done(self, lookup: asyncio.Future) -> None:
        self._in_flight -= 1
        if not lookup.cancelled():
            lookup.exception()  # retrieved: a timed-out lookup's late error is not logged

    # -- output ----------------------------------------------------------------------------

    def _record(self, request: dns.DNSMessage, client: str, decision: Decision) -> None:
        self.metrics.count(decision)
        question = request.questions[0] if request.questions else None
        events.emit(
            "decision",
            protocol="dns",
            allow=decision.allow,
            reason=decision.reason,
            would_deny=decision.would_deny,
            host=flows.printable(question.name) if question else None,
            qtype=type_name(question.type) if question else None,
            client=client,
            rule=decision.rule,
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def servers(self) -> DnsServers:
        return self._servers


def _facts(request: dns.DNSMessage) -> QueryFacts:
    if not request.questions:
        return QueryFacts(questions=0, is_query=request.query, opcode=request.op_code)
    first = request.questions[0]
    return QueryFacts(
        questions=len(request.questions),
        name=first.name,
        qtype=first.type,
        qclass=first.class_,
        opcode=request.op_code,
        is_query=request.query,
    )


def _format_error(message: bytes) -> bytes | None:
    """FORMERR, with no question, for a query whose header parses; None for anything else."""
    if len(message) < _HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", message)
    if flags & 0x8000:  # a response
        return None
    kept = flags & 0x7900  # opcode and recursion desired, as a reply copies them
    return _HEADER.pack(qid, 0x8000 | kept | response_codes.FORMERR, 0, 0, 0, 0)


def _packs(message: dns.DNSMessage) -> bool:
    try:
        _ = message.packed
    except (ValueError, UnicodeError):
        return False
    return True


def _fail(request: dns.DNSMessage, code: int) -> dns.DNSMessage:
    response = request.fail(code)
    if not _packs(response):
        # The question as decoded cannot be written back (a label that IDNA will not encode,
        # a dot inside a label): answer without it rather than fail, which would quote the name.
        response.questions = []
    return response


def _succeed(
    request: dns.DNSMessage, question: dns.Question, addresses: tuple[IPAddress, ...]
) -> dns.DNSMessage:
    records = [
        dns.ResourceRecord(question.name, question.type, question.class_, ANSWER_TTL, a.packed)
        for a in addresses
    ]
    response = request.succeed(records)
    if not _packs(response):
        return _fail(request, response_codes.SERVFAIL)
    return response


def _packed_within(response: dns.DNSMessage, limit: int) -> bytes:
    """The response in at most `limit` bytes: when too long (many addresses over UDP), the
    records that fit, marked truncated (TC) so the client may ask again over TCP."""
    wire = response.packed
    if len(wire) <= limit or not response.answers:
        return wire
    records = response.answers
    response.answers = []
    response.truncation = True
    base = len(response.packed)
    each = (len(wire) - base) // len(records)  # one name, one type: every record the same size
    response.answers = records[: max(0, (limit - base) // each)]
    return response.packed
