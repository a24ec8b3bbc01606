"""TLS memory changes to pyOpenSSL and mitmproxy's context factories for the `auth-proxy`
runtime, as registry entries (docs/internals.md lists each with its measured gain). The
workload's leg offers classic key-exchange groups only; the upstream leg keeps OpenSSL's
defaults."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto

from addons.patches import registry
from addons.patches.registry import Patch

# Key exchange on the workload-to-sidecar leg, which never leaves the pod (loopback). OpenSSL's
# default adds the hybrid X25519MLKEM768, whose key it keeps for the connection's lifetime:
# 9 KiB per tunnel. The upstream leg keeps OpenSSL's defaults, post-quantum included.
CLIENT_LEG_GROUPS = b"X25519:P-256:P-384"


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
        if getattr(context, "auth_proxy_lean", False):  # cached: tuned at its first use
            return context
        SSL._lib.SSL_CTX_set_mode(context._context, SSL._lib.SSL_MODE_RELEASE_BUFFERS)
        if groups is not None and kwargs.get("ecdh_curve") is None:  # tls_ecdh_curve_client wins
            ok = SSL._lib.SSL_CTX_set1_curves_list(context._context, groups)
            SSL._openssl_assert(ok == 1)
        context.auth_proxy_lean = True  # type: ignore[attr-defined]
        return context

    make.lean = True  # type: ignore[attr-defined]
    return make


class Converted:
    """pyOpenSSL objects made from cryptography ones once per object, not once per call.

    tlsconfig hands every client connection the leaf certificate and key of its host as
    cryptography objects, and pyOpenSSL converts them to new OpenSSL X509 and EVP_PKEY objects
    every time: about 10 KiB per tunnel for copies of the same certificate. OpenSSL counts
    references to both, so connections can share one. Keyed by identity and holding the
    original, so an entry can never be mistaken for another object; the least recently used
    entries go beyond `size` (CertStore keeps 100 leaves by default)."""

    def __init__(self, convert: Callable[[Any], Any], size: int = 256) -> None:
        self._convert, self._size = convert, size
        self._cache: OrderedDict[int, tuple[object, Any]] = OrderedDict()

    def get(self, original: object) -> Any:
        hit = self._cache.get(id(original))
        if hit is not None and hit[0] is original:
            self._cache.move_to_end(id(original))
            return hit[1]
        converted = self._convert(original)
        self._cache[id(original)] = (original, converted)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return converted


_certificates = Converted(crypto.X509.from_cryptography)
_private_keys = Converted(crypto.PKey.from_cryptography_key)
_use_certificate = SSL.Connection.use_certificate
_use_privatekey = SSL.Connection.use_privatekey


def _use_shared_certificate(self: SSL.Connection, cert) -> None:
    if isinstance(cert, crypto.X509):
        return _use_certificate(self, cert)
    if not SSL._lib.SSL_use_certificate(self._ssl, _certificates.get(cert)._x509):
        SSL._raise_current_error()
    return None


def _use_shared_privatekey(self: SSL.Connection, pkey) -> None:
    if isinstance(pkey, crypto.PKey):
        return _use_privatekey(self, pkey)
    if not SSL._lib.SSL_use_PrivateKey(self._ssl, _private_keys.get(pkey)._pkey):
        self._context._raise_passphrase_exception()
    return None


def _why(text: str) -> str:
    return " ".join(text.split())


def patches() -> list[Patch]:
    """The registry entries, made when asked (the wrappers close over the originals)."""
    client_factory = registry.original("mitmproxy.net.tls:create_client_proxy_context")
    server_factory = registry.original("mitmproxy.net.tls:create_proxy_server_context")
    lean_client = _lean_contexts(client_factory, CLIENT_LEG_GROUPS)
    lean_server = _lean_contexts(server_factory, None)
    return [
        Patch(
            "shared-leaf-certificate",
            "OpenSSL.SSL:Connection.use_certificate",
            "f11fc6ff85aed5e5cd907c5dff49add3d0e37d4ffb746ca91f48aba9fd8a322f",
            _use_shared_certificate,
            "one OpenSSL copy of each leaf certificate, shared: 4 MiB less at 500 tunnels",
        ),
        Patch(
            "shared-leaf-key",
            "OpenSSL.SSL:Connection.use_privatekey",
            "9c0b07a663869b8f93872b4e0c48b5a61f2dede4843a75b9beda452791f68b5e",
            _use_shared_privatekey,
            "the same for the leaf's private key",
        ),
        Patch(
            "lean-client-leg-contexts",
            "mitmproxy.net.tls:create_client_proxy_context",
            "8a3bd5b54ef3d09390cbfa3c2aed439712ef769b780318f44116eb88a2675093",
            lean_client,
            _why("""workload-leg TLS contexts free idle record buffers from the handshake on
            and offer classic groups only (the leg never leaves the pod): about 9 MiB less at
            500 tunnels"""),
        ),
        Patch(
            "lean-upstream-leg-contexts",
            "mitmproxy.net.tls:create_proxy_server_context",
            "e2d90d71c574479781516eb28370a3de16f7995456f3a640b6f7cc2b07454929",
            lean_server,
            "upstream-leg TLS contexts free idle record buffers from the handshake on",
        ),
    ]
