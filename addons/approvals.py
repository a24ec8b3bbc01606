"""No upstream connection opens unless a decision approved that client, host and port, and the
policy in force still does; it connects to the address that was checked.

The allowlist records an approval for every CONNECT and plain-HTTP destination it allows. At
`server_connect` this addon refuses any other destination (mitmproxy would otherwise connect
wherever a flow points), pins the connection to a checked address, so that a second DNS answer
cannot differ, and names the approved host in the upstream TLS, never the client's SNI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from mitmproxy.proxy import server_hooks

from addons.policy import InvalidHost, normalize_host, parse_ip
from addons.resolver import Approval, Refusal

logger = logging.getLogger(__name__)


class Approvals:
    def __init__(self, still_allowed: Callable[[Approval], bool]) -> None:
        self._still_allowed = still_allowed
        self._tunnels: dict[str, Approval] = {}
        self._approved: dict[str, dict[tuple[str, int], Approval]] = {}
        self._pinned: dict[str, tuple[str, int]] = {}
        self._refused: dict[str, Refusal] = {}

    def approve(self, client_id: str, approval: Approval, tunnel: bool = False) -> None:
        self._approved.setdefault(client_id, {})[(approval.host, approval.port)] = approval
        if tunnel:
            self._tunnels[client_id] = approval

    def tunnel(self, client_id: str) -> Approval | None:
        """The approved CONNECT target of this client's tunnel, if it has one."""
        return self._tunnels.get(client_id)

    def refuse_tunnel(self, client_id: str, refusal: Refusal) -> None:
        """A transparent TLS connection that was denied: its handshake completes so that every
        request in it can be answered with the refusal; it never gets an upstream."""
        self._refused[client_id] = refusal

    def refusal(self, client_id: str) -> Refusal | None:
        return self._refused.get(client_id)

    def revoked(self) -> Iterator[tuple[str, Approval]]:
        """Clients holding an approval that the policy in force no longer gives."""
        for client_id, approvals in list(self._approved.items()):
            gone = next((a for a in approvals.values() if not self._still_allowed(a)), None)
            if gone is not None:
                yield client_id, gone

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        try:
            if server.error or server.address is None:
                return
            host, port = server.address[0], server.address[1]
            approval = self._approved.get(data.client.id, {}).get((host, port))
            if approval is None or not self._still_allowed(approval):
                server.error = f"auth-proxy: no allowlist decision approved {host}:{port}"
                return
            self._pinned[server.id] = (host, port)
            server.address = (str(approval.addresses[0]), port)
            # The name as a certificate names it: a trailing dot or upper case (legal in an SNI
            # or a CONNECT target) makes OpenSSL's host check refuse to even start.
            server.sni = upstream_name(host)
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

    def client_disconnected(self, client) -> None:
        self._tunnels.pop(client.id, None)
        self._approved.pop(client.id, None)
        self._refused.pop(client.id, None)


def upstream_name(host: str) -> str:
    """The upstream SNI and certificate name for an approved host."""
    if parse_ip(host) is not None:
        return host
    try:
        return normalize_host(host)
    except InvalidHost:
        return host
