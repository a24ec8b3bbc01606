"""The auth-proxy runtime loads only what a sidecar needs, and nothing it skipped breaks."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import addons.runtime
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
        "from addons.runtime import SidecarMaster\n"
        "async def main():\n"
        "    m = SidecarMaster(options.Options())\n"
        "    print(' '.join(type(a).__name__ for a in m.addons.chain))\n"
        "    print(m.options.listen_host)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    chain, listen_host = result.stdout.splitlines()
    assert chain.split() == [
        "TermLog",
        "Core",
        "DisableH2C",
        "Proxyserver",
        "Allowlist",
        "NextLayer",
        "TlsConfig",
        "ErrorCheck",
    ]
    assert listen_host == "127.0.0.1"


TYPE_CHECK_PROBE = """
import sys
from mitmproxy import http
if sys.argv[1] == "runtime":
    import addons.runtime
try:
    http.Headers(content_type=b"text/plain")  # a str/bytes mix is fine; the next is not
    http.Response.make(200, b"", {"x": "y"}).data.__class__(
        http_version=b"HTTP/1.1", headers="not headers", content=b"", trailers=None,
        timestamp_start=0.0, timestamp_end=None, status_code=200, reason=b"OK",
    )
    print("unchecked")
except TypeError:
    print("checked")
"""


def test_runtime_drops_only_the_message_type_check_that_mitmdump_keeps() -> None:
    def probe(mode: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", TYPE_CHECK_PROBE, mode],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return result.stdout.strip()

    assert probe("mitmdump") == "checked"
    assert probe("runtime") == "unchecked"
