"""The egress allowlist: `mitmdump -s addons/allowlist.py --set allowlist=policy.yaml`.

The addon only gathers facts from mitmproxy's hooks, asks the pure policy, and applies the answer.
It fails closed at every step: mitmproxy forwards a flow whose hook raised, so each hook catches
its own errors and denies, and no upstream connection opens unless a decision approved it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, "", "__mitmproxy_script__"):
    # Loaded by path with `-s`: make the `addons` package importable from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import mode_specs, server_hooks

from addons import (
    ca_check,
    events,
    flows,
    guard,
    limits,
    policy,
    protocol_gate,
    request_hygiene,
    resolver,
    shutdown,
    tls_buffers,
)
from addons import upstream_errors as upstream
from addons.addresses import any_forbidden
from addons.health import HealthServer, Readiness
from addons.policy import Decision, Policy, PolicyError
from addons.reloader import PolicyWatcher

logger = logging.getLogger(__name__)

# Faults, not policy denials: the destination was allowed but cannot be reached.
STATUS_FOR_REASON = {
    upstream.UPSTREAM_UNRESOLVABLE: 502,
    request_hygiene.BAD_REQUEST: 400,
    **limits.STATUS_FOR_REASON,
}

# mitmproxy options that relay matching connections untouched (raw TCP, or TLS end to end).
BYPASS_OPTIONS = ("ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts")

# A decision, and when it allows, the destination approved for connecting.
Verdict = tuple[Decision, resolver.Approval | None]


class Allowlist:
    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.reload_error: str | None = None
        self.metrics = events.Metrics()
        self._tunnels: dict[str, resolver.Approval] = {}
        self._approvals: dict[str, dict[tuple[str, int], resolver.Approval]] = {}
        # Clients whose ClientHello named another host than their tunnel; read by the guard.
        self.refused_tls: set[str] = set()
        self._pinned: dict[str, tuple[str, int]] = {}
        self._health = HealthServer(self.readiness, self.render_metrics)
        self._watcher: PolicyWatcher | None = None
        self._guard: guard.AllowlistGuard | None = None
        # Reliability (issue 7): connection cap and client deadlines, upstream deadlines and
        # fault statuses, graceful SIGTERM. Each lives in its own module.
        self._limits = limits.ConnectionLimits()
        self._deadlines = upstream.UpstreamDeadlines(lambda: ctx.options.upstream_timeout)
        self._shutdown = shutdown.GracefulShutdown()
        self._bios = tls_buffers.BioSweeper()

    # -- options and lifecycle -------------------------------------------------------------

    def load(self, loader) -> None:
        events.demote_per_request_notices(True)
        # Help texts are single paragraphs: mitmproxy compares them verbatim when a script
        # reloads, and a mismatch resets the option to its default.
        loader.add_option(
            "allowlist",
            str,
            "",
            "Policy file (YAML): 'version: v1', 'allowed_domains: [httpbin.org, \"*.example.com\"]',"
            " optional 'allowed_ports: [443, 80]' and 'allow_ranges: [CIDR, ...]'. Changes take"
            " effect within seconds. Without a policy every request is denied.",
        )
        loader.add_option(
            "allowed_domains",
            Sequence[str],
            [],
            "Extra allowed hosts, in the policy's syntax: 'httpbin.org', or '*.example.com' for"
            " any subdomain. Repeat to add more: --set allowed_domains=httpbin.org"
            " --set allowed_domains=*.example.com",
        )
        loader.add_option("health_host", str, "0.0.0.0", "Address of /healthz, /readyz, /metrics.")
        loader.add_option("health_port", int, 8081, "Port of /healthz, /readyz and /metrics.")
        loader.add_option(
            "max_connections",
            int,
            limits.DEFAULT_MAX_CONNECTIONS,
            "Client connections served at once (lowered to fit the open-file limit); beyond it a connection's request gets a 503 too-many-connections within 2 seconds, and beyond twice it the connection is closed at once.",
        )
        loader.add_option(
            "client_header_timeout",
            int,
            limits.DEFAULT_HEADER_TIMEOUT,
            "Seconds a client has to send a complete request head whenever none is in flight (after connecting, after a CONNECT, after each response); slower (slowloris, idle, half-open) connections are closed, and idle keep-alive connections too. WebSockets are exempt. 0 disables.",
        )
        loader.add_option(
            "upstream_timeout",
            int,
            60,
            "Seconds to wait for an upstream's response headers after sending it a request; then the client gets a 504 upstream-timeout. 0 disables.",
        )
        loader.add_option(
            "cert_cache_size",
            int,
            limits.DEFAULT_CERT_CACHE,
            "Leaf certificates kept in memory (mitmproxy's CertStore); older ones are dropped and minted again when needed.",
        )
        loader.add_option(
            "shutdown_grace",
            int,
            shutdown.DEFAULT_GRACE,
            "Seconds that requests in flight may take to finish after SIGTERM; new connections are refused meanwhile.",
        )
        loader.add_option(
            "ca_required",
            bool,
            True,
            "Exit at start unless confdir holds a CA (mitmproxy-ca.pem, key and certificate that match); false lets mitmproxy generate a throwaway CA.",
        )

    def _attach_guard(self) -> None:
        # Called from running(), when every addon is registered, so a new guard lands at the end
        # of the chain, after TlsConfig (see AllowlistGuard.tls_clienthello).
        existing = ctx.master.addons.get(guard.NAME)
        if existing is None:
            existing = guard.AllowlistGuard()
            ctx.master.addons.add(existing)
        existing.attach(self)
        self._guard = existing

    def _attach_gate(self) -> None:
        # After mitmproxy's NextLayer, like the guard; it outlives a script reload.
        gate = ctx.master.addons.get(protocol_gate.NAME)
        if gate is None:
            gate = protocol_gate.ProtocolGate()
            ctx.master.addons.add(gate)
        gate.on_refuse = self._record_unrecognized_protocol
        # A 101 that is not a WebSocket must never become a raw relay (mitmproxy's default).
        ctx.options.update(rawtcp=False)

    def _record_unrecognized_protocol(self, client, reason: str) -> None:
        tunnel = self._tunnels.get(client.id)
        decision = Decision(False, reason)
        self.metrics.count(decision)
        events.emit(
            "decision",
            allow=False,
            reason=reason,
            host=flows.printable(tunnel.host) if tunnel else None,
            port=tunnel.port if tunnel else None,
            sni=flows.printable(client.sni) if client.sni else None,
            client=flows.client_label(client),
        )

    def configure(self, updated: set[str]) -> None:
        self._limits.configure(updated)
        if {"confdir", "ca_required"} & updated and ctx.options.confdir != ctx.options.default(
            "confdir"
        ):
            ca_check.check_confdir(ctx.options.confdir, ctx.options.ca_required)
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
                if not isinstance(mode_specs.ProxyMode.parse(spec), mode_specs.RegularMode):
                    raise exceptions.OptionsError(
                        f"mode {spec!r}: the allowlist supports only regular proxy mode. "
                        "Fix: leave --mode unset"
                    )
        if "allowlist" in updated or "allowed_domains" in updated:
            try:
                self.policy = self._load_policy()
            except PolicyError as e:
                raise exceptions.OptionsError(str(e)) from None
            self.reload_error = None
            if self._watcher is not None:
                self._restart_watcher()

    def _load_policy(self) -> Policy | None:
        extra = tuple(ctx.options.allowed_domains)
        if ctx.options.allowlist:
            return policy.load_policy(ctx.options.allowlist, extra)
        if extra:
            return policy.policy_from_domains(extra)
        return None

    def running(self) -> None:
        # Issue 12, items 4 and 3: no client bytes in any log line, request heads bounded while
        # read. Process-wide patches, installed once (a refused install raises: exit at start).
        from addons import head_limits, log_scrub

        log_scrub.install()
        head_limits.install(self.metrics.count)
        self._attach_guard()
        self._attach_gate()
        upstream.install()
        self._limits.running()
        self._shutdown.install()
        self._bios.start()
        try:
            ca_check.check_at_start(ctx.options.confdir, ctx.options.ca_required)
        except exceptions.OptionsError as e:
            logger.error(str(e))  # an error logged at start-up makes mitmproxy exit 1
        if getattr(ctx.options, "flow_detail", 0):  # only mitmdump has the option
            # mitmdump's per-flow lines print full URLs, query strings included.
            ctx.options.update(flow_detail=0)
        if self.policy is None:
            logger.warning("no allowlist configured: every request will be denied")
        self._restart_watcher()
        try:
            self._health.start(ctx.options.health_host, ctx.options.health_port)
        except OSError as e:
            logger.error(
                f"health server cannot listen on {ctx.options.health_host}:"
                f"{ctx.options.health_port}: {e}. Fix: choose a free --set health_port"
            )

    def _restart_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if ctx.options.allowlist:
            path, extra = ctx.options.allowlist, tuple(ctx.options.allowed_domains)
            # The watcher loads in a thread, within a deadline: the load reads no options.
            self._watcher = PolicyWatcher(
                path, lambda: policy.load_policy(path, extra), self._reload
            )
            self._watcher.start()

    def _reload(self, loaded: policy.Loader | None = None) -> None:
        """Apply a reload: `loaded()` (the watcher's outcome) returns the new policy or raises
        PolicyError; without it, the policy is loaded here and now."""
        try:
            new = (loaded or self._load_policy)()
        except PolicyError as e:
            self.reload_error = str(e)
            self.metrics.reload_errors += 1
            events.emit("policy-reload", ok=False, error=str(e))
            logger.error(f"policy reload failed, keeping the last good policy: {e}")
            return
        self.policy, self.reload_error = new, None
        self._policy_changed()
        self.metrics.reloads += 1
        events.emit(
            "policy-reload",
            ok=True,
            source=new.source if new else None,
            entries=new.entry_count if new else 0,
        )

    def _still_allowed(self, approval: resolver.Approval) -> bool:
        """Whether the policy in force now still allows an approval made under an older one."""
        current = self.policy
        return (
            current is not None
            and policy.decide(current, approval.host, approval.port).allow
            and not any_forbidden(approval.addresses, current.allow_ranges)
        )

    def _policy_changed(self) -> None:
        """A new policy is in force: connections holding an approval it no longer gives (a
        tunnel, a WebSocket, a kept-alive upstream) are closed now, not when they end."""
        for client_id, approvals in list(self._approvals.items()):
            revoked = next((a for a in approvals.values() if not self._still_allowed(a)), None)
            if revoked is not None and limits.close_client(client_id, "policy-changed"):
                events.emit(
                    "connection-closed",
                    reason="policy-changed",
                    host=flows.printable(revoked.host),
                    port=revoked.port,
                    client=client_id,
                )

    def done(self) -> None:
        # Synchronous: mitmproxy calls done() synchronously when it unloads a script.
        if self._guard is not None:
            self._guard.detach(self)
        if self._watcher is not None:
            self._watcher.stop()
        self._health.stop()
        self._limits.cancel_all()
        self._deadlines.cancel_all()
        self._shutdown.uninstall()
        self._bios.stop()
        events.demote_per_request_notices(False)
        # head_limits and log_scrub stay installed: mitmproxy keeps parsing client bytes while a
        # reloaded script is missing or broken (the guard then denies), so they must outlive it.

    # -- health ----------------------------------------------------------------------------

    def _listening(self) -> bool:
        proxyserver = ctx.master.addons.get("proxyserver")
        return bool(
            proxyserver
            and proxyserver.is_running
            and any(server.is_running for server in proxyserver.servers)
        )

    def readiness(self) -> Readiness:
        current = self.policy
        detail: dict[str, object] = {
            "policy": current.source if current else None,
            "entries": current.entry_count if current else 0,
            "listening": self._listening(),
            "last_reload_error": self.reload_error,
        }
        if self._shutdown.draining:
            detail["error"] = "shutting down: finishing requests in flight"
            return Readiness(False, detail)
        if current is None:
            detail["error"] = (
                "no policy loaded: every request is denied. "
                "Fix: --set allowlist=FILE or --set allowed_domains=HOST"
            )
        return Readiness(current is not None and bool(detail["listening"]), detail)

    def render_metrics(self) -> str:
        current = self.policy
        rendered = self.metrics.render(
            current.entry_count if current else 0,
            self._limits.open_connections,
            self.readiness().ready,
        )
        return rendered + self._limits.render_metrics()

    # -- decisions -------------------------------------------------------------------------

    async def _decide_destination(self, host: str, port: int) -> Verdict:
        current = self.policy
        if current is None:
            return Decision(False, policy.BLOCKED_BY_ALLOWLIST), None
        decision = policy.decide(current, host, port)
        if not decision.allow:
            return decision, None
        try:
            addresses = await resolver.resolve(host, port)
        except (OSError, TimeoutError, UnicodeError):
            return Decision(False, upstream.UPSTREAM_UNRESOLVABLE, decision.rule), None
        if not addresses:
            return Decision(False, upstream.UPSTREAM_UNRESOLVABLE, decision.rule), None
        if any_forbidden(addresses, current.allow_ranges):
            return Decision(False, policy.BLOCKED_ADDRESS, decision.rule), None
        return decision, resolver.Approval(host, port, addresses)

    def _record(self, flow: http.HTTPFlow, decision: Decision, host: str, port: int) -> None:
        self.metrics.count(decision)
        events.emit(
            "decision",
            allow=decision.allow,
            reason=decision.reason,
            host=flows.printable(host),
            port=port,
            sni=flow.client_conn.sni,
            client=flows.client_label(flow),
            rule=decision.rule,
        )

    def _deny(self, flow: http.HTTPFlow, decision: Decision, host: str, port: int) -> None:
        flow.metadata["auth_proxy_denied"] = decision.reason
        status = STATUS_FOR_REASON.get(decision.reason, 403)
        flow.response = http.Response.make(
            status,
            f"auth-proxy: {flows.printable(host)}:{port} denied: {decision.reason}\n",
            {
                "X-Proxy-Error": decision.reason,
                "Content-Type": "text/plain; charset=utf-8",
                "Connection": "close",
            },
        )

    def _approve(self, client_id: str, approval: resolver.Approval) -> None:
        self._approvals.setdefault(client_id, {})[(approval.host, approval.port)] = approval

    def _refuse_early(self, flow: http.HTTPFlow, host: str, port: int) -> bool:
        """Over the connection cap, or draining for shutdown: 503 before any decision."""
        reason = self._limits.refusal(flow) or (
            limits.SHUTTING_DOWN if self._shutdown.draining else None
        )
        if reason is None:
            return False
        self._record(flow, Decision(False, reason), host, port)
        self._deny(flow, Decision(False, reason), host, port)
        return True

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        host, port = flow.request.host, flow.request.port
        try:
            if self._refuse_early(flow, host, port):
                return
            decision, approval = await self._decide_destination(host, port)
            self._record(flow, decision, host, port)
            if approval is None:
                self._deny(flow, decision, host, port)
                return
            self._tunnels[flow.client_conn.id] = approval
            self._approve(flow.client_conn.id, approval)
            self._limits.request_seen(flow, connect=True)
        except Exception:
            logger.exception("decision on CONNECT failed; denying")
            self._deny(flow, Decision(False, policy.POLICY_ERROR), host, port)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        host, port = flow.request.host, flow.request.port
        try:
            self._limits.request_seen(flow, connect=False)
            if self._refuse_early(flow, host, port):
                return
            shape = limits.request_shape_refusal(flow) or request_hygiene.refusal(flow.request)
            if shape is not None:
                self._record(flow, Decision(False, shape), host, port)
                self._deny(flow, Decision(False, shape), host, port)
                return
            tunnel = self._tunnels.get(flow.client_conn.id)
            if tunnel is not None:
                host, port = tunnel.host, tunnel.port
                decision = self._decide_in_tunnel(flow, tunnel)
                if not decision.allow:
                    self._record(flow, decision, host, port)
                    self._deny(flow, decision, host, port)
                    return
            else:
                decision, approval = await self._decide_absolute(flow)
                self._record(flow, decision, host, port)
                if approval is None:
                    self._deny(flow, decision, host, port)
                    return
                self._approve(flow.client_conn.id, approval)
            request_hygiene.strip_hop_by_hop(flow.request)
            self._stream_counted(flow)
            self._shutdown.started(flow)
        except Exception:
            logger.exception("decision on request failed; denying")
            self._deny(flow, Decision(False, policy.POLICY_ERROR), host, port)

    def _decide_in_tunnel(self, flow: http.HTTPFlow, tunnel: resolver.Approval) -> Decision:
        """The tunnel's destination is fixed and pinned; the request must name it, and the
        policy in force now (it may have been reloaded) must still allow it."""
        if not flows.host_binding_holds(flow.request, tunnel.host, tunnel.port):
            return Decision(False, policy.HOST_MISMATCH)
        if self.policy is None:
            return Decision(False, policy.BLOCKED_BY_ALLOWLIST)
        return policy.decide(self.policy, tunnel.host, tunnel.port)

    async def _decide_absolute(self, flow: http.HTTPFlow) -> Verdict:
        """A plain-HTTP absolute-form request (HTTP_PROXY): decided like a CONNECT."""
        request = flow.request
        if request.scheme not in ("http", "https") or not request.host:
            return Decision(False, policy.BLOCKED_BY_ALLOWLIST), None
        if not flows.host_binding_holds(request, request.host, request.port):
            return Decision(False, policy.HOST_MISMATCH), None
        return await self._decide_destination(request.host, request.port)

    # -- connections -----------------------------------------------------------------------

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        try:
            if server.error or server.address is None:
                return
            host, port = server.address[0], server.address[1]
            approval = self._approvals.get(data.client.id, {}).get((host, port))
            if approval is None or not self._still_allowed(approval):
                server.error = f"auth-proxy: no allowlist decision approved {host}:{port}"
                return
            # Connect to the address that was checked, so a second DNS answer cannot differ.
            self._pinned[server.id] = (host, port)
            server.address = (str(approval.addresses[0]), port)
            # Upstream TLS names the approved host, never whatever SNI the client sent.
            server.sni = host
        except Exception:
            logger.exception("server_connect check failed; refusing the connection")
            server.error = "auth-proxy: policy-error"

    def _unpin(self, data: server_hooks.ServerConnectionHookData) -> None:
        # The hostname goes back so mitmproxy's connection reuse (which compares addresses) works.
        # Server refuses address changes on open connections to stop redirects; this only
        # restores the name of the address it is already connected to (peername keeps the IP).
        original = self._pinned.pop(data.server.id, None)
        if original is not None:
            object.__setattr__(data.server, "address", original)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data)

    def client_connected(self, client) -> None:
        try:
            self._limits.client_connected(client)
        except Exception:
            logger.exception("connection accounting failed; refusing the connection")
            client.error = "auth-proxy: policy-error"

    def client_disconnected(self, client) -> None:
        self._tunnels.pop(client.id, None)
        self._approvals.pop(client.id, None)
        self.refused_tls.discard(client.id)
        self._limits.client_disconnected(client)
        upstream.forget_client(client.id)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._limits.websocket_started(flow)

    # -- TLS: the SNI must name the CONNECT target -----------------------------------------

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        try:
            tunnel = self._tunnels.get(client.id)
            sni = data.client_hello.sni
            if tunnel is not None and (sni is None or policy.same_host(sni, tunnel.host)):
                return
            self.refused_tls.add(client.id)
            decision = Decision(False, policy.HOST_MISMATCH)
            self.metrics.count(decision)
            events.emit(
                "decision",
                allow=False,
                reason=decision.reason,
                host=flows.printable(tunnel.host) if tunnel else None,
                port=tunnel.port if tunnel else None,
                sni=flows.printable(sni) if sni else None,
                client=flows.client_label(client),
            )
        except Exception:
            logger.exception("SNI check failed; refusing the handshake")
            self.refused_tls.add(client.id)

    def tls_start_client(self, data: tls.TlsData) -> None:
        if data.context.client.id in self.refused_tls:
            data.ssl_conn = flows.refusing_tls(server_side=False)

    def tls_start_server(self, data: tls.TlsData) -> None:
        if data.context.client.id in self.refused_tls:
            data.ssl_conn = flows.refusing_tls(server_side=True)

    def tls_established_client(self, data: tls.TlsData) -> None:
        self._bios.track(data.ssl_conn)
        # The upstream's certificates were needed to make the client's leaf (upstream_cert), which
        # is done now. Parsed, with the names that mitmproxy read from them, they hold ~4 KiB
        # per tunnel for its lifetime; a new upstream connection gets its own list again.
        data.context.server.certificate_list = []

    def tls_established_server(self, data: tls.TlsData) -> None:
        self._bios.track(data.ssl_conn)

    # -- forwarding ------------------------------------------------------------------------

    def _stream_counted(self, flow: http.HTTPFlow) -> None:
        """Stream bodies instead of buffering them (bounded memory, live streaming responses),
        counting the bytes for the request log line."""
        counts = flow.metadata.setdefault("auth_proxy_bytes", [0, 0])

        def count_request(chunk: bytes) -> bytes:
            counts[0] += len(chunk)
            return chunk

        flow.request.stream = count_request

    def request(self, flow: http.HTTPFlow) -> None:
        if "auth_proxy_denied" not in flow.metadata and flow.response is None:
            self._deadlines.started(flow)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        if "auth_proxy_denied" not in flow.metadata:
            upstream.mark_connect_error(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._deadlines.stop(flow)
        if flow.error or not flow.live or flow.response is None:
            return
        if "auth_proxy_denied" in flow.metadata:
            return
        if flow.response.status_code == 101 and not _websocket_switch(flow):
            self._refuse_switch(flow)
            return
        counts = flow.metadata.setdefault("auth_proxy_bytes", [0, 0])

        def count_response(chunk: bytes) -> bytes:
            counts[1] += len(chunk)
            return chunk

        flow.response.stream = count_response

    def _refuse_switch(self, flow: http.HTTPFlow) -> None:
        """An upstream switched protocols to something other than the WebSocket asked for:
        nothing after the 101 could be read, so the connection ends here."""
        host, port = flow.request.host, flow.request.port
        self._record(flow, Decision(False, request_hygiene.UPGRADE_NOT_ALLOWED), host, port)
        flow.metadata["auth_proxy_denied"] = request_hygiene.UPGRADE_NOT_ALLOWED
        flow.kill()

    def response(self, flow: http.HTTPFlow) -> None:
        self._deadlines.stop(flow)
        self._limits.request_done(flow)
        self._shutdown.finished(flow)
        if "auth_proxy_denied" in flow.metadata or flow.response is None:
            return
        self._log_request(flow, flow.response.status_code, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._deadlines.error(flow)
        self._limits.request_done(flow)
        self._shutdown.finished(flow)
        if "auth_proxy_denied" in flow.metadata or flow.error is None:
            return
        self._log_request(flow, None, flow.error.msg)

    def _log_request(self, flow: http.HTTPFlow, status: int | None, error: str | None) -> None:
        request = flow.request
        end = (flow.response and flow.response.timestamp_end) or time.time()
        sent, received = flow.metadata.get("auth_proxy_bytes", [0, 0])
        if error is not None:
            from addons.log_scrub import scrub  # mitmproxy's error texts quote client bytes

            error = scrub(error)
        events.emit(
            "request",
            method=request.method,
            host=flows.printable(request.host),
            port=request.port,
            path=request.path.split("?", 1)[0],
            status=status,
            error=error,
            duration_ms=round((end - request.timestamp_start) * 1000, 1),
            bytes_sent=sent,
            bytes_received=received,
            client=flows.client_label(flow),
        )


def _websocket_switch(flow: http.HTTPFlow) -> bool:
    response = flow.response
    return (
        response is not None
        and request_hygiene.is_websocket_upgrade(flow.request)
        and response.headers.get("upgrade", "").strip().lower() == "websocket"
    )


def make_addons() -> list[object]:
    """The addons, in chain order: what `mitmdump -s` loads, and what `auth-proxy` adds."""
    return [Allowlist()]


addons = make_addons()
