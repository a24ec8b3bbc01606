"""Connections the pod's rules redirected to the transparent listener, decided like a CONNECT.

The client dialled an address of its choosing; the nftables rules sent it here instead. The
destination is the name it asked for: the ClientHello's SNI, or the Host header of plain HTTP,
with the port it dialled. That name gets the same decision as a CONNECT (policy, port, every
address after the proxy's own lookup), and the upstream connection goes to an address that
decision checked (see `approvals`), never to the one the client dialled.

- A denied TLS connection completes its handshake (a leaf from our CA for the SNI, as for any
  intercepted name) and every request in it is answered with the 403 and its `X-Proxy-Error`:
  the client's HTTP library shows why, where a TLS alert would only say "handshake failure".
- TLS without SNI has nothing to decide on: its handshake fails (`missing-sni`, in SniBinding).
- A client that dials the listener itself, or anything on loopback, is closed at once
  (`destination-is-proxy`): the rules never redirect loopback, so that is a loop or a probe.
"""

from __future__ import annotations

import ipaddress
import logging

from mitmproxy import connection, http, tls
from mitmproxy.proxy import mode_specs

from addons import policy
from addons.approvals import Approvals
from addons.core import reasons
from addons.core.authority import parse_authority
from addons.core.decide import Decision, Facts, Stage
from addons.core.requests import text, values
from addons.patches import transparent as transparent_patch
from addons.resolver import Refusal

logger = logging.getLogger(__name__)

MODE = "transparent"


def is_transparent(client: connection.Client) -> bool:
    return isinstance(client.proxy_mode, mode_specs.TransparentMode)


def original_destination(client: connection.Client) -> tuple[str, int] | None:
    """Where a transparent client was going (mitmproxy puts SO_ORIGINAL_DST in `sockname`)."""
    if not is_transparent(client) or not client.sockname:
        return None
    return str(client.sockname[0]), int(client.sockname[1])


def original_address(
    client: connection.Client,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    original = original_destination(client)
    # mitmproxy gives the address without brackets or a zone id.
    return policy.parse_ip(original[0]) if original else None


def log_fields(client: connection.Client) -> dict[str, str]:
    """What a decision line adds for a transparent client."""
    original = original_destination(client)
    if original is None:
        return {}
    host, port = original
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {"mode": MODE, "original_destination": shown}


class TransparentDestinations:
    """Names each transparent connection's destination and has the allowlist decide it."""

    def __init__(self, allowlist, approvals: Approvals) -> None:
        # The Allowlist: decides (with its lookup), records decision lines, knows the limits.
        self._allowlist = allowlist
        self._approvals = approvals

    def running(self) -> None:
        transparent_patch.install()

    def _facts(self, client: connection.Client, stage: Stage, host: str, port: int) -> Facts:
        return Facts(
            stage,
            host,
            port,
            transparent=True,
            original_address=original_address(client),
            over_connection_cap=self._allowlist.over_cap(client.id),
            draining=self._allowlist.draining,
        )

    def client_connected(self, client: connection.Client) -> None:
        if not is_transparent(client):
            return
        try:
            original = original_destination(client)
            port = original[1] if original else 0
            decision = self._allowlist.decide(self._facts(client, Stage.ACCEPT, "", port))
        except Exception:
            logger.exception("transparent accept check failed; closing the connection")
            decision = Decision(False, reasons.POLICY_ERROR.name)
        if not decision.allow:
            self._allowlist.record_refused_connection(client, decision.reason, None)
            client.error = f"auth-proxy: {decision.reason}"

    async def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        sni = data.client_hello.sni
        original = original_destination(client)
        if original is None or not sni or self._approvals.tunnel(client.id):
            return  # not transparent; no SNI (SniBinding refuses it); or decided already
        port = original[1]
        try:
            facts = self._facts(client, Stage.CONNECT, sni, port)
            decision, approval = await self._allowlist.decide_resolving(facts)
        except Exception:
            logger.exception("transparent TLS decision failed; denying")
            decision, approval = Decision(False, reasons.POLICY_ERROR.name), None
        self._allowlist.record_connection(client, decision, sni, port)
        # The name, never the address the client dialled: the request's host, the upstream SNI.
        data.context.server.address = (sni, port)
        if approval is None:
            self._approvals.refuse_tunnel(client.id, Refusal(sni, port, decision.reason))
        else:
            self._approvals.approve(client.id, approval, tunnel=True)

    def plain_http_destination(self, flow: http.HTTPFlow) -> tuple[str, int] | None:
        """Plain HTTP through the transparent listener: the Host header's name and the port the
        client dialled ("" when there is no single Host field: the core denies it)."""
        original = original_destination(flow.client_conn)
        if original is None:
            return None
        hosts = values(tuple(flow.request.headers.fields), b"host")
        host = ""
        if len(hosts) == 1:
            host, _ = parse_authority(text(hosts[0]))
        return host, original[1]
