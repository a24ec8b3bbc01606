"""The auth-proxy runtime loads only what a sidecar needs, and nothing it skipped breaks."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import addons.runtime
addons.runtime.prepare()
print("flask" in sys.modules, "mitmproxy.addons.dumper" in sys.modules)
from mitmproxy.addons import default_addons
print(len(default_addons()) > 20)
"""


def test_runtime_skips_mitmproxys_default_addons_but_they_still_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False", "True"]


def test_runtime_loads_the_sidecar_addon_set() -> None:
    probe = (
        "import asyncio\n"
        "from mitmproxy import options\n"
        "import addons.runtime\n"
        "addons.runtime.prepare()\n"
        "from addons.sidecar import SidecarMaster\n"
        "async def main():\n"
        "    m = SidecarMaster(options.Options())\n"
        "    print(' '.join(type(a).__name__ for a in m.addons.chain))\n"
        "    print(m.options.listen_host)\n"
        "    from mitmproxy.proxy import layer\n"
        "    from addons.patches import inline_hooks\n"
        "    print(layer.Layer.handle_event is inline_hooks._handle_event)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    chain, listen_host, hooks_inline = result.stdout.splitlines()
    assert chain.split() == [
        "TermLog",
        "Core",
        "DisableH2C",
        "Proxyserver",
        "LogSafety",
        "HeadLimits",
        "CaCheck",
        "PolicySource",
        "Allowlist",
        "TransparentDestinations",
        "DnsAnswers",
        "SniBinding",
        "Approvals",
        "ConnectionLimits",
        "GracefulShutdown",
        "UpstreamFaults",
        "RequestLog",
        "TlsBuffers",
        "Health",
        "NextLayer",
        "TlsConfig",
        "ErrorCheck",
    ]
    assert listen_host == "127.0.0.1"
    assert hooks_inline == "True"


TUNING_PROBE = """
import sys
from mitmproxy import http
from mitmproxy.proxy import context, layer
from mitmproxy.test import taddons, tflow
from mitmproxy.net import tls as net_tls
if sys.argv[1] == "runtime":
    import addons.runtime
    addons.runtime.prepare()
    factory = net_tls.create_client_proxy_context
    addons.runtime.prepare()  # again: changes nothing
    assert net_tls.create_client_proxy_context is factory
from mitmproxy.proxy.layers.http import _http_h2
print(getattr(net_tls.create_client_proxy_context, "lean", False),
      _http_h2.BufferedH2Connection.MAX_CLOSED_STREAMS)
try:
    http.Response.make(200).data.__class__(
        http_version=b"HTTP/1.1", headers="not headers", content=b"", trailers=None,
        timestamp_start=0.0, timestamp_end=None, status_code=200, reason=b"OK",
    )
    print("unchecked")
except TypeError:
    print("checked")
with taddons.context() as tctx:
    queue = layer.Layer(context.Context(tflow.tclient_conn(), tctx.options))._paused_event_queue
    queue.append(1)
    queue.append(2)
    print(type(queue).__name__, queue.popleft(), bool(queue), list(queue))
"""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param(
            "mitmdump", ["False 65536", "checked", "deque 1 True [2]"], id="mitmdump-untouched"
        ),
        pytest.param(
            "runtime", ["True 1024", "unchecked", "EventQueue 1 True [2]"], id="runtime-tuned"
        ),
    ],
)
def test_runtime_tuning_drops_the_type_check_and_keeps_queue_behaviour(
    mode: str, expected: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TUNING_PROBE, mode],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.splitlines() == expected
