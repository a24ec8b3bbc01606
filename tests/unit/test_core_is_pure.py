"""The core decides with plain values: it imports, and decides, with mitmproxy, pyOpenSSL and h2
unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("mitmproxy", "OpenSSL", "h2", "hpack", "hyperframe", "wsproto", "cryptography")

PROBE = textwrap.dedent(
    """
    import sys

    FORBIDDEN = {forbidden!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"the core imported {{name}}")
            return None

    sys.meta_path.insert(0, Refuse())
    import addons.core.decide as core
    import addons.core.protocols, addons.core.reasons  # noqa: E401
    from addons.policy import policy_from_domains

    facts = core.Facts(core.Stage.CONNECT, "api.test", 443)
    decision = core.decide(facts, policy_from_domains(["api.test"]))
    assert decision.needs_addresses, decision
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    assert not loaded, loaded
    print("pure")
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_core_imports_without_mitmproxy_openssl_or_h2() -> None:
    result = run(PROBE.format(forbidden=FORBIDDEN))
    assert result.returncode == 0 and result.stdout.strip() == "pure", result.stderr


def test_the_probe_catches_an_impure_import() -> None:
    # The same probe, on a module that imports mitmproxy, must fail: the finder really refuses.
    code = PROBE.format(forbidden=FORBIDDEN).replace(
        "import addons.core.decide as core",
        "import addons.request_hygiene\nimport addons.core.decide as core",
    )
    result = run(code)
    assert result.returncode != 0 and "the core imported mitmproxy" in result.stderr
