"""A runtime patch whose target changed is skipped with a warning, and the proxy still serves
with mitmproxy's own behaviour."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet

STALE_BOOTSTRAP = """
import dataclasses
from addons.patches import tuning
made = tuning.patches
def stale():
    return [dataclasses.replace(p, source_sha256="0" * 64) if p.name == "no-message-type-check"
            else p for p in made()]
tuning.patches = stale
from addons.runtime import main
main()
"""


def test_proxy_with_a_stale_patch_warns_and_serves(testnet: LoopbackNet, tmp_path: Path) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    command = [sys.executable, "-c", STALE_BOOTSTRAP]
    proxy = Proxy("auth-proxy", tmp_path, testnet.hosts_file, testnet.ca_pem, policy, [], command)
    proxy.start()
    try:
        status, _, _ = proxy.status_and_headers(f"https://upstream.test:{testnet.tls_port}/echo")
        assert status == 200
        assert "patch 'no-message-type-check' not applied" in proxy.logs()
    finally:
        proxy.stop()
