"""The egress allowlist: `mitmdump -s addons/allowlist.py --set allowlist=policy.yaml`.

`Allowlist` gathers facts from mitmproxy's hooks, asks the pure core (`addons.core.decide`), and
applies the answer through `refuse`. It fails closed at every step: mitmproxy forwards a flow
whose hook raised, so each hook catches its own errors and denies, and no upstream connection
opens unless a decision approved it (and the policy in force still does). The other concerns
(policy file, limits, faults, health, logs) are addons of their own, listed in `make_addons`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, "", "__mitmproxy_script__"):
    # Loaded by path with `-s`: make the `addons` package importable from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from addons import (
    ca_check,
    events,
    flows,
    guard,
    health,
    limits,
    log_scrub,
    policy_rules,
    protocol_gate,
    request_hygiene,
    request_log,
    resolver,
    shutdown,
    tls_buffers,
    transparent,
)
from addons import upstream_errors as upstream
from addons.approvals import Approvals
from addons.core import messages, reasons
from addons.core.decide import Decision, Facts, Stage, decide
from addons.dns_answers import DnsAnswers
from addons.patches import connection_close, head_limits
from addons.policy_source import PolicySource
from addons.sni_binding import SniBinding

logger = logging.getLogger(__name__)

# mitmproxy options that relay matching connections untouched (raw TCP, or TLS end to end).
BYPASS_OPTIONS = ("ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts")
# Listeners whose every connection reaches a decision: explicit proxy, redirected TCP. DNS has
# a listener of its own (`dns_listen`, addons/dns_listener.py), never mitmproxy's DNS mode.
SUPPORTED_MODES = (mode_specs.RegularMode, mode_specs.TransparentMode)


def refuse(
    flow: http.HTTPFlow,
    reason: str,
    host: str,
    port: int,
    rule: str | None = None,
    allowed: tuple[str, ...] = (),
) -> None:
    """Answer a request with the proxy's refusal for `reason`; nothing is forwarded. The body
    says what to do (addons.core.messages), as JSON when the client accepts it."""
    flow.metadata[limits.DENIED] = reason
    request = flow.request
    method, path = messages.request_line(reason, request.data.method, request.data.path)
    denial = messages.Denial(reason, host, port, method, path, rule, allowed)
    as_json = messages.wants_json(",".join(request.headers.get_all("accept")))
    flow.response = http.Response.make(
        reasons.status_of(reason),
        denial.json() if as_json else denial.text(),
        {
            "X-Proxy-Error": reason,
            "Content-Type": "application/json" if as_json else "text/plain; charset=utf-8",
            "Connection": "close",
        },
    )


class Allowlist:
    def __init__(
        self,
        policies: PolicySource,
        connections: limits.ConnectionLimits,
        drain: shutdown.GracefulShutdown,
        approvals: Approvals,
        metrics: events.DecisionMetrics,
    ) -> None:
        self._policies = policies
        self._connections = connections
        self._drain = drain
        self._approvals = approvals
        self.metrics = metrics
        self._guard: guard.AllowlistGuard | None = None
        self._transparent = transparent.TransparentDestinations(self, approvals)
        policies.subscribe(self._policy_changed)

    @property
    def transparent_destinations(self) -> transparent.TransparentDestinations:
        """The transparent listener's addon (it decides through this one)."""
        return self._transparent

    # -- lifecycle -------------------------------------------------------------------------

    def configure(self, updated: set[str]) -> None:
        unsupported = sorted(
            name for name in BYPASS_OPTIONS if name in updated and getattr(ctx.options, name)
        )
        if unsupported:
            raise exceptions.OptionsError(
                f"{', '.join(unsupported)}: these options pass connections through without the "
                "allowlist's checks. Fix: leave them unset"
            )
        if "mode" in updated:
            for spec in ctx.options.mode:
                if not isinstance(mode_specs.ProxyMode.parse(spec), SUPPORTED_MODES):
                    raise exceptions.OptionsError(
                        f"mode {spec!r}: the allowlist decides only regular, transparent and dns "
                        "listeners, and DNS has its own listener, not mitmproxy's dns mode. Fix: "
                        "use --mode regular or transparent@HOST:PORT; "
                        "use --set dns_listen=HOST:PORT for DNS"
                    )

    def running(self) -> None:
        # Called when every addon is registered, so the guard and the gate land at the end of
        # the chain, after NextLayer and TlsConfig; they outlive a script reload.
        self._guard = _attached(guard.NAME, guard.AllowlistGuard)
        self._guard.attach(self)
        # Closing a refused connection must free its socket in both runtimes.
        connection_close.install()
        gate = _attached(protocol_gate.NAME, protocol_gate.ProtocolGate)
        gate.on_refuse = self._record_unrecognized_protocol
        # A 101 that is not a WebSocket must never become a raw relay (mitmproxy's default).
        ctx.options.update(rawtcp=False)

    def done(self) -> None:
        # Synchronous: mitmproxy calls done() synchronously when it unloads a script.
        if self._guard is not None:
            self._guard.detach(self)

    # -- facts and decisions ---------------------------------------------------------------

    def decide(self, facts: Facts) -> Decision:
        return decide(facts, self._policies.current)

    @property
    def draining(self) -> bool:
        return self._drain.draining

    def over_cap(self, client_id: str) -> bool:
        return self._connections.is_over_cap(client_id)

    async def decide_resolving(self, facts: Facts) -> tuple[Decision, resolver.Approval | None]:
        """Decide; when the name and port pass, resolve it (the lookup is the addon's, its
        answer a fact) and decide again on the addresses."""
        decision = self.decide(facts)
        if not decision.needs_addresses:
            return decision, None
        try:
            addresses = await resolver.resolve(facts.host, facts.port)
        except (OSError, TimeoutError, UnicodeError):
            addresses = ()
        decision = self.decide(_with_addresses(facts, addresses))
        if not decision.allow:
            return decision, None
        return decision, resolver.Approval(facts.host, facts.port, addresses)

    def _record(self, flow: http.HTTPFlow, decision: Decision, host: str, port: int) -> None:
        request = flow.request
        # The method and path (never the query) let `suggest` rebuild rules from the log.
        method, path = messages.request_line(
            decision.reason, request.data.method, request.data.path
        )
        self.record_connection(flow.client_conn, decision, host, port, method, path)

    def record_connection(
        self,
        client,
        decision: Decision,
        host: str,
        port: int,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.metrics.count(decision)
        events.emit(
            "decision",
            allow=decision.allow,
            reason=decision.reason,
            would_deny=decision.would_deny,
            host=flows.printable(host),
            port=port,
            method=method,
            path=path,
            sni=flows.printable(client.sni) if client.sni else None,
            client=flows.client_label(client),
            rule=decision.rule,
            **transparent.log_fields(client),
        )

    def _refuse(self, flow: http.HTTPFlow, decision: Decision, host: str, port: int) -> None:
        refuse(flow, decision.reason, host, port, decision.rule, self._allowed(decision, host))

    def _allowed(self, decision: Decision, host: str) -> tuple[str, ...]:
        """What the policy does allow, for a refusal to say: the host's rules, or the ports."""
        current = self._policies.current
        if current is None:
            return ()
        if decision.reason == reasons.BLOCKED_BY_RULE.name:
            return tuple(rule.describe() for rule in policy_rules.rules_for(current, host))
        if decision.reason == reasons.BLOCKED_PORT.name:
            return tuple(str(port) for port in sorted(current.ports))
        return ()

    # -- hooks: CONNECT and requests -------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        host, port = flow.request.host, flow.request.port
        try:
            facts = Facts(
                Stage.CONNECT,
                host,
                port,
                over_connection_cap=self.over_cap(flow.client_conn.id),
                draining=self.draining,
            )
            decision, approval = await self.decide_resolving(facts)
            self._record(flow, decision, host, port)
            if approval is None:
                self._refuse(flow, decision, host, port)
                return
            self._approvals.approve(flow.client_conn.id, approval, tunnel=True)
        except Exception:
            logger.exception("decision on CONNECT failed; denying")
            refuse(flow, reasons.POLICY_ERROR.name, host, port)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        host, port = request.host, request.port
        try:
            refused = self._approvals.refusal(flow.client_conn.id)
            if refused is not None:  # a denied transparent TLS connection: decided and logged
                refuse(flow, refused.reason, refused.host, refused.port)
                return
            tunnel = self._approvals.tunnel(flow.client_conn.id)
            if tunnel is not None:
                host, port = tunnel.host, tunnel.port
            named = None if tunnel else self._transparent.plain_http_destination(flow)
            if named is not None:
                host, port = named
            facts = self._request_facts(flow, host, port, in_tunnel=tunnel is not None)
            decision, approval = await self.decide_resolving(facts)
            # Inside a tunnel the CONNECT's line stands for its requests, except those denied or
            # (report mode) that the policy would deny.
            if tunnel is None or not decision.allow or decision.would_deny:
                self._record(flow, decision, host, port)
            if not decision.allow:
                self._refuse(flow, decision, host, port)
                return
            if approval is not None:
                self._approvals.approve(flow.client_conn.id, approval)
            if named is not None:
                # Connect to the name that was decided (pinned to its checked address), never to
                # the address the client dialled; the Host header stays as the client sent it.
                request.data.host = host
            request_hygiene.strip_hop_by_hop(request)
        except Exception:
            logger.exception("decision on request failed; denying")
            refuse(flow, reasons.POLICY_ERROR.name, host, port)

    def _request_facts(self, flow: http.HTTPFlow, host: str, port: int, in_tunnel: bool) -> Facts:
        request = flow.request
        return Facts(
            Stage.REQUEST,
            host,
            port,
            in_tunnel=in_tunnel,
            scheme=request.scheme if not in_tunnel else "",
            http1=request.http_version.startswith("HTTP/1"),
            method=request.data.method,
            target=request.data.path,
            fields=tuple(request.headers.fields),
            authority=request.authority,
            over_connection_cap=self.over_cap(flow.client_conn.id),
            draining=self.draining,
            transparent=transparent.is_transparent(flow.client_conn),
            original_address=transparent.original_address(flow.client_conn),
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.error or not flow.live or flow.response is None or limits.DENIED in flow.metadata:
            return
        if flow.response.status_code == 101 and not _websocket_switch(flow):
            # Nothing after a switch to another protocol could be read: the connection ends.
            host, port = flow.request.host, flow.request.port
            reason = reasons.UPGRADE_NOT_ALLOWED.name
            self._record(flow, Decision(False, reason), host, port)
            flow.metadata[limits.DENIED] = reason
            flow.kill()

    def _policy_changed(self) -> None:
        """Connections holding an approval the new policy no longer gives (a tunnel, a
        WebSocket, a kept-alive upstream) are closed now, not when they end."""
        for client_id, revoked in self._approvals.revoked():
            if limits.close_client(client_id, "policy-changed"):
                events.emit(
                    "connection-closed",
                    reason="policy-changed",
                    host=flows.printable(revoked.host),
                    port=revoked.port,
                    client=client_id,
                )

    def _record_unrecognized_protocol(self, client, reason: str) -> None:
        self.record_refused_connection(client, reason, client.sni)

    def record_refused_connection(self, client, reason: str, sni: str | None) -> None:
        """A decision line for a refusal at the connection level (no request to answer)."""
        tunnel = self._approvals.tunnel(client.id)
        self.metrics.count(Decision(False, reason))
        events.emit(
            "decision",
            allow=False,
            reason=reason,
            host=flows.printable(tunnel.host) if tunnel else None,
            port=tunnel.port if tunnel else None,
            sni=flows.printable(sni) if sni else None,
            client=flows.client_label(client),
            **transparent.log_fields(client),
        )


def still_allowed(policies: PolicySource):
    """Whether the policy in force now still gives an approval made under an older one."""

    def check(approval: resolver.Approval) -> bool:
        facts = Facts(Stage.CONNECT, approval.host, approval.port, addresses=approval.addresses)
        return decide(facts, policies.current).allow

    return check


def _attached(name: str, factory):
    existing = ctx.master.addons.get(name)
    if existing is None:
        existing = factory()
        ctx.master.addons.add(existing)
    return existing


def _with_addresses(facts: Facts, addresses) -> Facts:
    return replace(facts, addresses=tuple(addresses), resolve_failed=not addresses)


def _websocket_switch(flow: http.HTTPFlow) -> bool:
    response = flow.response
    return (
        response is not None
        and request_hygiene.is_websocket_upgrade(flow.request)
        and response.headers.get("upgrade", "").strip().lower() == "websocket"
    )


def make_addons() -> list[object]:
    """The addons, in chain order: what `mitmdump -s` loads, and what `auth-proxy` adds."""
    metrics = events.DecisionMetrics()
    policies = PolicySource()
    connections = limits.ConnectionLimits()
    drain = shutdown.GracefulShutdown()
    approvals = Approvals(still_allowed(policies))
    allowlist = Allowlist(policies, connections, drain, approvals, metrics)
    sni = SniBinding(policies, approvals, allowlist.record_refused_connection)
    dns_answers = DnsAnswers(policies, metrics)
    status = health.Health(
        readiness=[policies.readiness, drain.readiness, dns_answers.readiness],
        metrics=[
            metrics.render,
            connections.render_open,
            policies.render_metrics,
            connections.render_metrics,
            dns_answers.render_metrics,
        ],
    )
    return [
        log_scrub.LogSafety(),
        head_limits.HeadLimits(metrics.count),
        ca_check.CaCheck(),
        policies,
        allowlist,
        allowlist.transparent_destinations,
        dns_answers,
        sni,
        approvals,
        connections,
        drain,
        upstream.UpstreamFaults(),
        request_log.RequestLog(),
        tls_buffers.TlsBuffers(),
        status,
    ]


addons = make_addons()
