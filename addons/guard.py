"""Denies everything while no live Allowlist addon is loaded.

mitmproxy keeps proxying when a `-s` script fails to reload or is deleted: it simply runs without
the addon. The guard is registered with the master itself, outside the script, so it survives
that and turns "no allowlist" into "deny all".
"""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from addons.policy import POLICY_ERROR

logger = logging.getLogger(__name__)

NAME = "allowlistguard"


class AllowlistGuard:
    name = NAME

    def __init__(self) -> None:
        self._live: set[int] = set()

    def attach(self, addon: object) -> None:
        self._live.add(id(addon))

    def detach(self, addon: object) -> None:
        self._live.discard(id(addon))
        if not self._live:
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
