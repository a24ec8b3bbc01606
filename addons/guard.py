"""Denies everything while no live Allowlist addon is loaded.

mitmproxy keeps proxying when a `-s` script fails to reload or is deleted: it simply runs without
the addon. The guard is registered with the master itself, outside the script, so it survives
that and turns "no allowlist" into "deny all".
"""

from __future__ import annotations

import logging
from typing import Protocol

from mitmproxy import ctx, http, tls
from mitmproxy.proxy import server_hooks

from addons.policy import POLICY_ERROR

logger = logging.getLogger(__name__)

NAME = "allowlistguard"


class GuardedAddon(Protocol):
    """An addon of the allowlist; the one that checks SNIs also has `no_upstream_first`."""


class AllowlistGuard:
    """Also the one hook that must run after mitmproxy's TlsConfig (the guard is added to the end
    of the addon chain, while a `-s` script runs before TlsConfig): see `tls_clienthello`."""

    name = NAME

    def __init__(self) -> None:
        self._live: dict[int, GuardedAddon] = {}

    def attach(self, addon: GuardedAddon) -> None:
        self._live[id(addon)] = addon

    def detach(self, addon: GuardedAddon) -> None:
        self._live.pop(id(addon), None)
        if not self._live and not ctx.master.should_exit.is_set():
            logger.error("allowlist addon unloaded: denying every request until it loads again")

    @property
    def armed(self) -> bool:
        return bool(self._live)

    def _deny(self, flow: http.HTTPFlow) -> None:
        if self.armed or flow.error or not flow.live:
            return
        flow.response = http.Response.make(
            403,
            "auth-proxy: the allowlist is not loaded; every request is denied\n",
            {"X-Proxy-Error": POLICY_ERROR, "Content-Type": "text/plain", "Connection": "close"},
        )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._deny(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._deny(flow)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if not self.armed:
            data.server.error = "auth-proxy: the allowlist is not loaded"

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """For a refused ClientHello, fail the client handshake before any upstream TLS.

        TlsConfig asks to finish the upstream handshake first (eager connections); for a
        refused client that would send a ClientHello upstream, and mitmproxy would then wait on
        the upstream. Undoing it here, after TlsConfig, makes the client's handshake start, and
        fail, at once."""
        client_id = data.context.client.id
        if not self.armed or any(_no_upstream_first(a, client_id) for a in self._live.values()):
            data.establish_server_tls_first = False


def _no_upstream_first(addon: GuardedAddon, client_id: str) -> bool:
    check = getattr(addon, "no_upstream_first", None)
    return check is not None and check(client_id)
