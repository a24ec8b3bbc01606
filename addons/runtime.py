"""`auth-proxy`: the sidecar's runtime, a lean mitmproxy Master.

It behaves like `mitmdump -s addons/allowlist.py` (same options, decisions, health and logs) but
loads only the mitmproxy addons a sidecar needs (mitmdump's default set dispatches every hook
through ~30 addons; a profile put a third of the proxy's time there) and applies the runtime
patches of `addons/patches/`. Importing this module changes nothing: `main()` does it all.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

# Python 3.13 raised the young generation's threshold from 700 to 2,000 objects. Under many
# requests at once, objects of requests still in flight then survive more young collections,
# and the reference cycles that mitmproxy's layers and flows form reach the old generation,
# which is collected far less often. With 700 the load test's 500 tunnels (500 requests at
# once) peaked at 121 MiB instead of 131; CPU per request stayed within the bench's noise.
GC_YOUNG_THRESHOLD = 700


def prepare() -> None:
    """Lean imports, the runtime patches and the GC settings, in that order. Idempotent."""
    from addons.patches import lean_imports

    lean_imports.start()
    import addons.sidecar  # noqa: F401  (mitmproxy and the addons, without the default set)
    from addons.patches import registry, tls_contexts, tuning

    registry.apply([*tuning.patches(), *tls_contexts.patches()])
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    lean_imports.imports_done()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    prepare()
    from mitmproxy.tools import main as mitmproxy_main

    from addons.sidecar import SidecarMaster, make_parser

    mitmproxy_main.run(SidecarMaster, make_parser, arguments)


if __name__ == "__main__":
    main()
