"""Changes to mitmproxy internals that the `auth-proxy` runtime makes for CPU and memory.

Each one keeps mitmproxy's behaviour and was measured with `make bench` or the tunnel memory
check; `mitmdump -s addons/allowlist.py` runs without them, and the proxy test suite runs
against both. They touch mitmproxy 12.3 internals (pinned `~=12.3.1`): re-check on upgrade.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import layer
from OpenSSL import SSL

# Key exchange on the workload-to-sidecar leg, which never leaves the pod (loopback). OpenSSL's
# default adds the hybrid X25519MLKEM768, whose key it keeps for the connection's lifetime:
# 9 KiB per tunnel. The upstream leg keeps OpenSSL's defaults, post-quantum included.
CLIENT_LEG_GROUPS = b"X25519:P-256:P-384"


def _skip_message_type_check(self) -> None:
    pass


class EventQueue(list):
    """What a mitmproxy Layer needs of its paused-event deque (append, popleft, truth, iteration),
    at the size of an empty list: 56 bytes instead of about 1.1 KiB for an empty deque (object
    plus first block). Every layer has one, a tunnel holds about a dozen layers, and the queue is
    almost always empty (it fills only while a hook is pending), so popleft's O(n) never matters."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)


def _lean_contexts(
    factory: Callable[..., SSL.Context], groups: bytes | None
) -> Callable[..., SSL.Context]:
    """Wrap one of mitmproxy's (cached) SSL context factories: connections made from the context
    free their record buffers whenever idle, from the handshake on. Set after the handshake (as
    the addon does under mitmdump), it misses the buffers of the handshake's record layers:
    25 KiB per tunnel."""

    @functools.wraps(factory)
    def make(*args, **kwargs) -> SSL.Context:
        context = factory(*args, **kwargs)
        SSL._lib.SSL_CTX_set_mode(context._context, SSL._lib.SSL_MODE_RELEASE_BUFFERS)
        if groups is not None and kwargs.get("ecdh_curve") is None:  # tls_ecdh_curve_client wins
            ok = SSL._lib.SSL_CTX_set1_curves_list(context._context, groups)
            SSL._openssl_assert(ok == 1)
        return context

    make.lean = True  # type: ignore[attr-defined]
    return make


def apply() -> None:
    # mitmproxy type-checks every field of every HTTP message it makes, unless Python runs with
    # -O (`if __debug__:` around MessageData.__post_init__): a fifth of the proxy's CPU per
    # keep-alive request. -O would also drop the asserts that guard mitmproxy's invariants,
    # which a security boundary keeps, so only the type check goes. The checks catch programming
    # errors in code that builds messages; the tests run the addon under mitmdump too.
    http.MessageData.__post_init__ = _skip_message_type_check  # type: ignore[method-assign]
    # Layer.__init__ makes its queue with `collections.deque()`, the module's only runtime use
    # of `collections`: 4.6 MiB less at 500 open tunnels.
    layer.collections = types.SimpleNamespace(deque=EventQueue)  # type: ignore[assignment]
    # tlsconfig calls these through the module at every handshake.
    if not getattr(net_tls.create_client_proxy_context, "lean", False):
        net_tls.create_client_proxy_context = _lean_contexts(  # type: ignore[assignment]
            net_tls.create_client_proxy_context, CLIENT_LEG_GROUPS
        )
        net_tls.create_proxy_server_context = _lean_contexts(  # type: ignore[assignment]
            net_tls.create_proxy_server_context, None
        )
