"""The addon's hooks, driven with mitmproxy's own test tools: what each decision does to a flow,
and that every hook denies when the code behind it raises."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest
from mitmproxy import exceptions, tls
from mitmproxy.proxy import context, server_hooks
from mitmproxy.test import taddons, tflow, tutils

from addons import allowlist, events, flows, policy, request_log, resolver, tls_buffers
from addons.allowlist import Allowlist
from addons.approvals import Approvals
from addons.core import decide as core_decide
from addons.guard import AllowlistGuard
from addons.health import Health
from addons.policy_source import PolicySource
from addons.sni_binding import SniBinding


class Stack:
    """The addons `mitmdump -s addons/allowlist.py` loads, and handles on the ones tests drive."""

    def __init__(self) -> None:
        self.addons = allowlist.make_addons()
        self.allowlist = self._one(Allowlist)
        self.policies = self._one(PolicySource)
        self.health = self._one(Health)
        self.approvals = self._one(Approvals)
        self.sni = self._one(SniBinding)
        self.request_log = self._one(request_log.RequestLog)

    def _one(self, kind):
        [found] = [a for a in self.addons if isinstance(a, kind)]
        return found

    async def requestheaders(self, flow) -> None:
        await self.allowlist.requestheaders(flow)
        self.request_log.requestheaders(flow)


FAKE_DNS = {
    "api.test": ["93.184.216.34"],
    "private.test": ["10.0.0.5"],
    "split.test": ["93.184.216.34", "169.254.169.254"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int):
        literal = policy.parse_ip(host)
        if literal is not None:
            return (literal,)
        if host not in FAKE_DNS:
            raise OSError("name does not resolve")
        return tuple(ipaddress.ip_address(a) for a in FAKE_DNS[host])

    monkeypatch.setattr(resolver, "resolve", resolve)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    lines: list[dict] = []
    monkeypatch.setattr(events, "emit", lambda event, **f: lines.append({"event": event, **f}))
    return lines


def connect_flow(host: str, port: int = 443):
    return tflow.tflow(
        req=tutils.treq(
            method=b"CONNECT",
            host=host,
            port=port,
            path=b"",
            authority=f"{host}:{port}".encode(),
            headers=(),
        )
    )


def request_flow(
    host: str,
    port: int = 443,
    headers=None,
    scheme=b"https",
    authority=b"",
    http_version=b"HTTP/1.1",
):
    """A request; by default with the Host header that HTTP/1 requires."""
    if headers is None:
        headers = ((b"host", host.encode()),)
    request = tutils.treq(
        host=host,
        port=port,
        scheme=scheme,
        authority=authority,
        headers=headers,
        http_version=http_version,
    )
    return tflow.tflow(req=request)


POLICY = ["api.test", "private.test", "split.test", "unresolvable.test", "*.wild.test"]


@pytest.mark.parametrize(
    ("host", "port", "status", "reason"),
    [
        pytest.param("api.test", 443, None, None, id="allowed"),
        pytest.param("elsewhere.test", 443, 403, "blocked-by-allowlist", id="unlisted"),
        pytest.param("api.test", 22, 403, "blocked-port", id="port"),
        pytest.param("private.test", 443, 403, "blocked-address", id="private-address"),
        pytest.param("split.test", 443, 403, "blocked-address", id="one-of-many-addresses"),
        pytest.param("unresolvable.test", 443, 502, "upstream-unresolvable", id="nxdomain"),
        pytest.param("10.0.0.5", 443, 403, "blocked-by-allowlist", id="ip-literal-unlisted"),
    ],
)
async def test_connect_decisions(host, port, status, reason, recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        flow = connect_flow(host, port)
        await addon.http_connect(flow)
        if status is None:
            assert flow.response is None
            assert stack.approvals.tunnel(flow.client_conn.id).addresses == (
                ipaddress.ip_address("93.184.216.34"),
            )
        else:
            assert flow.response.status_code == status
            assert flow.response.headers["X-Proxy-Error"] == reason
            assert stack.approvals.tunnel(flow.client_conn.id) is None
        [line] = [r for r in recorded if r["event"] == "decision"]
        assert line["allow"] is (status is None)
        assert line["reason"] == (reason or "allowed")
        assert (line["host"], line["port"]) == (host, port)


async def test_no_policy_denies(recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons):
        flow = connect_flow("api.test")
        await addon.http_connect(flow)
        assert flow.response.headers["X-Proxy-Error"] == "blocked-by-allowlist"
        assert stack.health.readiness().ready is False


@pytest.mark.parametrize(
    ("patch_target", "hook"),
    [
        pytest.param("decide", "http_connect", id="decide-raises-on-connect"),
        pytest.param("decide", "requestheaders", id="decide-raises-on-plain-request"),
    ],
)
async def test_raising_decision_denies(monkeypatch, recorded, patch_target, hook) -> None:
    def explode(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(policy, patch_target, explode)
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        flow = (
            connect_flow("api.test")
            if hook == "http_connect"
            else request_flow("api.test", scheme=b"http", port=80)
        )
        await getattr(addon, hook)(flow)
        assert flow.response.status_code == 403
        assert flow.response.headers["X-Proxy-Error"] == "policy-error"


async def tunnel(addon: Allowlist, host: str = "api.test", port: int = 443):
    flow = connect_flow(host, port)
    await addon.http_connect(flow)
    assert flow.response is None
    return flow.client_conn


H1, H2 = b"HTTP/1.1", b"HTTP/2.0"


@pytest.mark.parametrize(
    ("headers", "authority", "version", "reason"),
    [
        pytest.param(((b"host", b"api.test"),), b"", H1, None, id="matching-host"),
        pytest.param(((b"host", b"API.test.:443"),), b"", H1, None, id="matching-host-respelled"),
        pytest.param((), b"api.test", H2, None, id="h2-authority"),
        pytest.param((), b"", b"HTTP/1.0", "host-mismatch", id="http1-without-host"),
        pytest.param(((b"host", b"evil.test"),), b"", H1, "host-mismatch", id="other-host"),
        pytest.param(((b"host", b"api.test:8443"),), b"", H1, "host-mismatch", id="other-port"),
        pytest.param(
            ((b"host", b"api.test"), (b"host", b"evil.test")),
            b"",
            H1,
            "host-mismatch",
            id="doubled-host",
        ),
        pytest.param(
            ((b"host", b"api.test"),), b"evil.test", H2, "host-mismatch", id="h2-authority-differs"
        ),
    ],
)
async def test_requests_in_tunnel_must_name_the_tunnel_host(
    recorded, headers, authority, version, reason
) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        flow = request_flow("api.test", headers=headers, authority=authority, http_version=version)
        flow.client_conn = client
        await stack.requestheaders(flow)
        if reason is None:
            assert flow.response is None
            assert callable(flow.request.stream), "allowed bodies are streamed"
        else:
            assert flow.response.headers["X-Proxy-Error"] == reason


async def test_policy_reload_applies_to_open_tunnels(recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        tctx.configure(stack.policies, allowed_domains=["other.test"])
        flow = request_flow("api.test", headers=((b"host", b"api.test"),))
        flow.client_conn = client
        await addon.requestheaders(flow)
        assert flow.response.headers["X-Proxy-Error"] == "blocked-by-allowlist"


async def test_raising_host_check_denies(monkeypatch, recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        monkeypatch.setattr(core_decide, "binding_holds", lambda *a: 1 / 0)
        flow = request_flow("api.test")
        flow.client_conn = client
        await addon.requestheaders(flow)
        assert flow.response.headers["X-Proxy-Error"] == "policy-error"


def server_data(client, host: str, port: int) -> server_hooks.ServerConnectionHookData:
    server = tflow.tserver_conn()
    server.__dict__["state"] = 0  # closed, so the address can change
    server.address = (host, port)
    server.sni = None
    return server_hooks.ServerConnectionHookData(server=server, client=client)


async def test_server_connect_pins_the_checked_address_then_restores_the_name(recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        data = server_data(client, "api.test", 443)
        stack.approvals.server_connect(data)
        assert data.server.error is None
        assert data.server.address == ("93.184.216.34", 443)
        assert data.server.sni == "api.test"
        stack.approvals.server_connected(data)
        assert data.server.address == ("api.test", 443)


@pytest.mark.parametrize(
    ("host", "port"),
    [
        pytest.param("elsewhere.test", 443, id="never-decided"),
        pytest.param("api.test", 8443, id="other-port-than-approved"),
    ],
)
async def test_server_connect_without_approval_is_refused(recorded, host, port) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        data = server_data(client, host, port)
        stack.approvals.server_connect(data)
        assert data.server.error and "no allowlist decision" in data.server.error


async def test_server_connect_error_in_check_refuses(monkeypatch, recorded) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        monkeypatch.setattr(stack.approvals, "_approved", None)
        data = server_data(client, "api.test", 443)
        stack.approvals.server_connect(data)
        assert data.server.error == "auth-proxy: policy-error"


class _Hello:
    """The one field of a parsed ClientHello that the addon reads."""

    def __init__(self, sni: str | None) -> None:
        self.sni = sni


@pytest.mark.parametrize(
    ("sni", "refused"),
    [
        pytest.param("api.test", False, id="same-host"),
        pytest.param("API.TEST.", False, id="same-host-other-spelling"),
        pytest.param(None, False, id="no-sni"),
        pytest.param("evil.test", True, id="other-host"),
    ],
)
async def test_sni_must_match_the_tunnel(recorded, sni, refused) -> None:
    stack = Stack()
    addon = stack.allowlist
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(stack.policies, allowed_domains=POLICY)
        client = await tunnel(addon)
        data = tls.ClientHelloData(context.Context(client, tctx.options), _Hello(sni))  # type: ignore[arg-type]
        stack.sni.tls_clienthello(data)
        assert (client.id in stack.sni.refused_tls) is refused
        start = tls.TlsData(client, context.Context(client, tctx.options))
        stack.sni.tls_start_client(start)
        assert (start.ssl_conn is not None) is refused


async def test_tls_without_a_tunnel_is_refused(recorded) -> None:
    stack = Stack()
    with taddons.context(*stack.addons) as tctx:
        client = tflow.tclient_conn()
        data = tls.ClientHelloData(context.Context(client, tctx.options), _Hello("api.test"))  # type: ignore[arg-type]
        stack.sni.tls_clienthello(data)
        assert client.id in stack.sni.refused_tls


def test_refusing_tls_fails_before_sending_anything() -> None:
    from OpenSSL import SSL

    for server_side in (True, False):
        conn = flows.refusing_tls(server_side)
        with pytest.raises(SSL.Error, match="no protocols available"):
            conn.do_handshake()
        # All it has to say is an alert record (type 0x15), never a handshake (0x16).
        assert conn.bio_read(65536)[:1] == b"\x15"


async def test_bad_policy_option_is_an_options_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nallowed_domains: ['*']\n")
    stack = Stack()
    with taddons.context(*stack.addons) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"bad\.yaml"):
            tctx.configure(stack.policies, allowlist=str(bad))
        with pytest.raises(exceptions.OptionsError, match="only regular, transparent and dns"):
            tctx.configure(stack.allowlist, mode=["reverse:https://example.com"])


async def test_failed_reload_keeps_the_last_good_policy(tmp_path: Path, recorded) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: v1\nallowed_domains: [api.test]\n")
    stack = Stack()
    source = stack.policies
    with taddons.context(*stack.addons) as tctx:
        tctx.configure(source, allowlist=str(path))
        good = source.current
        path.write_text("version: v1\nallowed_domains: ['*']\n")
        source.reload()
        assert source.current is good
        assert "policy.yaml" in source.reload_error
        assert source.reload_errors == 1
        path.write_text("version: v1\nallowed_domains: [api.test, other.test]\n")
        source.reload()
        assert source.reload_error is None and source.current.entry_count == 2


async def test_guard_denies_when_no_allowlist_is_attached() -> None:
    guard = AllowlistGuard()
    with taddons.context(guard):
        flow = connect_flow("api.test")
        guard.http_connect(flow)
        assert flow.response.headers["X-Proxy-Error"] == "policy-error"
        armed_flow = connect_flow("api.test")
        guard.attach(Stack().allowlist)
        guard.http_connect(armed_flow)
        assert armed_flow.response is None


def test_module_exposes_one_addon_per_concern() -> None:
    kinds = [type(a) for a in allowlist.addons]
    assert Allowlist in kinds and PolicySource in kinds and Health in kinds
    assert len(kinds) == len(set(kinds))


def test_established_tls_connections_release_idle_buffers() -> None:
    from OpenSSL import SSL

    def mode_of(conn: SSL.Connection) -> int:
        return SSL._lib.SSL_set_mode(conn._ssl, 0)  # adds nothing, returns the mode

    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
    release = SSL._lib.SSL_MODE_RELEASE_BUFFERS
    assert not mode_of(conn) & release
    addon = tls_buffers.TlsBuffers()
    addon.tls_established_server(tls.TlsData(tflow.tserver_conn(), None, conn))  # type: ignore[arg-type]
    assert mode_of(conn) & release


@pytest.mark.parametrize(
    ("message", "level", "expected_level"),
    [
        ("Streaming response from example.com.", logging.INFO, logging.DEBUG),
        ("Streaming request to example.com.", logging.INFO, logging.DEBUG),
        ("server connect example.com:443", logging.INFO, logging.INFO),
        ("Streaming response from example.com.", logging.WARNING, logging.WARNING),
    ],
    ids=[
        "streaming-response-demoted",
        "streaming-request-demoted",
        "connection-lines-kept",
        "warnings-kept",
    ],
)
async def test_per_request_streaming_notices_are_debug_while_the_addon_is_loaded(
    message: str, level: int, expected_level: int
) -> None:
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("mitmproxy.proxy.server")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        stack = Stack()
        with taddons.context(*stack.addons) as tctx:
            logger.log(level, message)
            for addon in stack.addons:
                tctx.master.addons.remove(addon)
            logger.log(level, message)  # unloaded: untouched
    finally:
        logger.setLevel(old_level)
        logger.removeHandler(handler)
    assert [r.levelno for r in seen] == [expected_level, level]


def test_client_tls_established_drops_the_upstream_certificates_it_no_longer_needs() -> None:
    from OpenSSL import SSL

    ctx = context.Context(tflow.tclient_conn(), None)  # type: ignore[arg-type]
    ctx.server = tflow.tserver_conn()
    ctx.server.certificate_list = [object()]  # type: ignore[list-item]
    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD))

    tls_buffers.TlsBuffers().tls_established_client(tls.TlsData(ctx.client, ctx, conn))

    assert ctx.server.certificate_list == []
