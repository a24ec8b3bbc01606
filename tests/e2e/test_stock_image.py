"""Issue 16: a stock image trusts the proxy's CA with nothing of ours in it.

The workload is Debian trixie with curl, python3 and ca-certificates only (images/base.py's
STOCK_CURL_PYTHON, made offline like the other bases): no CA of ours, no entrypoint. The pod is
`build_pod_spec(..., image=...)`; the ca-trust init container (from the sidecar image) writes
the bundle into the shared emptyDir, and the pod spec's variables point curl and Python at it.
So the bundle provably no longer comes from the executor image.
"""

from __future__ import annotations

import json

import pytest

from images.base import STOCK_CURL_PYTHON, ensure_base
from images.build import BASE_CACHE
from k8s import constants as c
from tests.e2e.conftest import Sandbox, info, step
from tests.e2e.upstream import UPSTREAM_NAME
from tests.support.docker_fixtures import Docker

pytestmark = pytest.mark.containers

URL = f"https://{UPSTREAM_NAME}/get"


@pytest.fixture(scope="module")
def workload_image(docker: Docker) -> str:
    """Overrides tests/e2e/conftest.py's: this module's pod runs the stock image."""
    step(f"workload image: {STOCK_CURL_PYTHON}, made offline by images/base.py")
    info(f"{STOCK_CURL_PYTHON}: {ensure_base(docker.engine, STOCK_CURL_PYTHON, BASE_CACHE)}")
    return STOCK_CURL_PYTHON


def test_the_workload_is_the_stock_image_with_nothing_of_ours(
    sandbox: Sandbox, workload_image: str
) -> None:
    step("the pod: ca-trust ran from the sidecar image; the stock image has no CA of ours")
    spec = sandbox.pod["spec"]
    by_name = {x["name"]: x for x in spec["initContainers"] + spec["containers"]}
    assert by_name[c.WORKLOAD_CONTAINER]["image"] == workload_image
    assert by_name[c.TRUST_INIT_CONTAINER]["image"] == by_name[c.SIDECAR_CONTAINER]["image"]
    config = json.loads(sandbox.docker("image", "inspect", workload_image).stdout)[0]["Config"]
    assert not config.get("Entrypoint"), config
    assert sandbox.runner.containers[c.TRUST_INIT_CONTAINER].exit_code == 0
    ours = (sandbox.ca_dir / "ca.crt").read_text().strip()
    # The image's own roots do not hold our CA: only the init container's files do.
    system = sandbox.exec("cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    assert system.count("BEGIN CERTIFICATE") > 50 and ours not in system
    assert ours in sandbox.exec("cat", c.CA_BUNDLE).stdout
    listing = sandbox.exec("ls", c.CA_BUNDLE_DIR).stdout.split()
    hashed = sandbox.exec("ls", f"{c.CA_CERTS_DIR}/").stdout.split()
    info(f"{c.CA_BUNDLE_DIR}: {listing}; certs/: {len(hashed)} hashed names")
    assert listing == ["ca-bundle.crt", "ca.crt", "certs", "truststore.p12"]
    assert len(hashed) > 50


def test_curl_and_python_reach_httpbin(sandbox: Sandbox) -> None:
    step(f"curl and python3 urllib in the stock image: {URL}, no flags, no CA argument")
    curl = sandbox.exec("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", URL)
    assert (curl.returncode, curl.stdout) == (0, "200"), curl.stdout + curl.stderr
    code = (
        "import json, ssl, urllib.request\n"
        f"r = urllib.request.urlopen({URL!r}, timeout=20)\n"
        "strict = bool(ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT)\n"
        "print(r.status, json.load(r)['url'], strict)\n"
    )
    python = sandbox.exec("python3", "-c", code)
    assert python.returncode == 0, python.stdout + python.stderr
    assert python.stdout.split() == ["200", URL, "True"], python.stdout
    info("curl: 200, urllib: 200 (Python's X509-strict default context)")
