#!/usr/bin/env python3
"""Docker HEALTHCHECK: GET /healthz on the health port (no curl in the image, no proxy)."""

import os
import sys
import urllib.request

host = os.environ.get("AUTH_PROXY_HEALTH_HOST", "0.0.0.0")
if host in ("0.0.0.0", "::", ""):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"
port = os.environ.get("AUTH_PROXY_HEALTH_PORT", "8081")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(f"http://{host}:{port}/healthz", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"healthz: {exc}", file=sys.stderr)
    sys.exit(1)
