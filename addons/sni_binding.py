"""A tunnel's TLS must name its CONNECT target.

A ClientHello whose SNI names another host than the tunnel's (domain fronting), or TLS where no
tunnel was approved, fails its handshake before any TLS reaches the upstream: the TLS hooks hand
mitmproxy a connection that refuses every protocol version, on both legs. The guard reads
`no_upstream_first` to stop mitmproxy from starting the upstream handshake first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import ctx, tls

from addons import flows, guard, transparent
from addons.approvals import Approvals
from addons.core.decide import Facts, Stage, decide
from addons.policy_source import PolicySource

logger = logging.getLogger(__name__)

# (client connection, reason, SNI): writes the decision line.
Record = Callable[[object, str, str | None], None]


class SniBinding:
    def __init__(self, policies: PolicySource, approvals: Approvals, record: Record) -> None:
        self._policies = policies
        self._approvals = approvals
        self._record = record
        self.refused_tls: set[str] = set()
        self._guard: guard.AllowlistGuard | None = None

    def running(self) -> None:
        self._guard = ctx.master.addons.get(guard.NAME)
        if self._guard is not None:
            self._guard.attach(self)

    def done(self) -> None:
        if self._guard is not None:
            self._guard.detach(self)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        try:
            if self._approvals.refusal(client.id) is not None:
                return  # a denied transparent connection: its requests get the 403 inside TLS
            tunnel = self._approvals.tunnel(client.id)
            sni = data.client_hello.sni
            host, port = (tunnel.host, tunnel.port) if tunnel else ("", 0)
            facts = Facts(
                Stage.TLS,
                host,
                port,
                in_tunnel=tunnel is not None,
                sni=sni,
                transparent=transparent.is_transparent(client),
                original_address=transparent.original_address(client),
            )
            decision = decide(facts, self._policies.current)
            if not decision.allow:
                self.refused_tls.add(client.id)
                self._record(client, decision.reason, sni)
        except Exception:
            logger.exception("SNI check failed; refusing the handshake")
            self.refused_tls.add(client.id)

    def no_upstream_first(self, client_id: str) -> bool:
        """A client whose handshake is refused, or answered with a refusal inside TLS (a denied
        transparent connection): no upstream handshake is started before the client's."""
        return client_id in self.refused_tls or self._approvals.refusal(client_id) is not None

    def tls_start_client(self, data: tls.TlsData) -> None:
        if data.context.client.id in self.refused_tls:
            data.ssl_conn = flows.refusing_tls(server_side=False)

    def tls_start_server(self, data: tls.TlsData) -> None:
        if data.context.client.id in self.refused_tls:
            data.ssl_conn = flows.refusing_tls(server_side=True)

    def client_disconnected(self, client) -> None:
        self.refused_tls.discard(client.id)
