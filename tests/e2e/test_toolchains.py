"""Issue 16: the toolchain trust matrix, end to end.

The workload is images/toolchains (Debian's own curl, wget, Python urllib / requests / httpx, pip,
Node https / fetch, npm, git, the JDK's HttpClient, Go net/http, Ruby net/http, openssl; nothing
of ours: no CA, no entrypoint), in a pod from `build_pod_spec(..., image=...)`, so every bit of
trust and proxy setup comes from the pod spec (the ca-trust init container and the variables).

Each client, run as an application runs it (no -k, no CA or proxy argument), must reach the
allowed host (httpbin.org, served by tests/e2e/upstream.py) and get the proxy's 403 from a denied
one (denied.example). With enforced egress the whole matrix runs twice: with the pod's proxy
variables, and with them removed (JAVA_TOOL_OPTIONS without its proxy properties), where the
egress lock sends the connection to the sidecar's transparent listener. The sidecar's decision
lines show which path each connection took: a client the docs table says follows the proxy
variables must not show up as transparent, and one that ignores them must. docs/toolchains.md
is the table these cells assert.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from images.build import ImageSpec, build_image
from k8s import constants as c
from tests.e2e.conftest import EGRESS, PROXY_VARIABLES, Sandbox, info, step
from tests.e2e.package_index import MARKER, NPM_PREFIX, PACKAGE, PYPI_PREFIX
from tests.e2e.upstream import DENIED_NAME, UPSTREAM_NAME
from tests.support.docker_fixtures import Docker

pytestmark = pytest.mark.containers

# A test-only image: built here, never by `make images`, never a base of the executor.
TOOLCHAINS = ImageSpec(
    "toolchains", "sandbox-toolchains", "images/toolchains/Dockerfile", needs_wheels=False
)
CLIENTS = "/opt/toolchains"  # where the Dockerfile copies images/toolchains/clients
PROXY = "proxy-variables"
TRANSPARENT = "transparent"
# Without enforced egress nothing catches a client that ignores the variables: one mode only.
MODES = [PROXY, TRANSPARENT] if EGRESS == c.EGRESS_ENFORCED else [PROXY]
# The transparent run takes the JVM's proxy properties out of JAVA_TOOL_OPTIONS (the JVM never
# reads HTTPS_PROXY): what stays is the truststore.
STRIP_JAVA_PROXY = (
    'JAVA_TOOL_OPTIONS="$(printf %s "$JAVA_TOOL_OPTIONS" '
    "| sed -E 's/-D(https?\\.proxy(Host|Port)|http\\.nonProxyHosts)=[^ ]*//g')\"; "
    "export JAVA_TOOL_OPTIONS; "
)
CELL_TIMEOUT = 120
# Debian trixie's Node is 20: its https and fetch ignore the proxy variables (NODE_USE_ENV_PROXY
# is Node 24's, and 22.21's); docs/toolchains.md says so. A newer Node changes that cell.
NODE_IGNORES_PROXY_BELOW = (22, 21)


@dataclass(frozen=True)
class Tool:
    name: str
    # Shell commands for a mode: reach the allowed host, then the denied one.
    allowed: Callable[[str], str]
    denied: Callable[[str], str]
    # What in the output proves the allowed request got the upstream's answer, for `mode`.
    proof: Callable[[str, Sandbox], str]
    follows_proxy_variables: bool = True
    # How the client reports the refusal (the proxy's 403, to the CONNECT or to the request).
    refusal: str = r"\b403\b"


def anything(tool: str, mode: str) -> str:
    """An httpbin URL that the upstream echoes back, naming the cell."""
    return f"https://{UPSTREAM_NAME}/anything/{tool}/{mode}"


def echoed(tool: str) -> Callable[[str, Sandbox], str]:
    return lambda mode, _box: f'"url": "{anything(tool, mode)}"'


def program(name: str, command: str, follows: bool = True, refusal: str = r"\b403\b") -> Tool:
    return Tool(
        name,
        allowed=lambda mode: f"{command} {anything(name, mode)}",
        denied=lambda _mode: f"{command} https://{DENIED_NAME}/",
        proof=lambda mode, _box: f'"url": "{anything(name, mode)}"',
        follows_proxy_variables=follows,
        refusal=refusal,
    )


def _curl(url: str) -> str:
    return f"curl -sS -m 20 -w '\\nstatus=%{{http_code}} connect=%{{http_connect}}\\n' {url}"


def _wget(url: str, ca: str = '--ca-certificate="$SSL_CERT_FILE" ') -> str:
    # Debian's wget (GnuTLS) reads no CA variable: only --ca-certificate or a wgetrc's
    # ca_certificate (docs/toolchains.md). test_wget_ignores_ssl_cert_file shows it.
    return f"wget -S -O - --timeout=20 --tries=1 {ca}{url} 2>&1"


def _pip(index: str, mode: str) -> str:
    target = f"/tmp/pip-{mode}"
    return (
        # -vv: pip names the 403 (of the CONNECT or of the index page) only in its debug log.
        f"rm -rf {target}; python3 -m pip install -vv --no-cache-dir --disable-pip-version-check "
        f"--no-input --retries 0 --timeout 20 --target {target} "
        f"--index-url {index}{PYPI_PREFIX} {PACKAGE} 2>&1 && "
        f'python3 -c \'import sys; sys.path.insert(0, "{target}"); '
        f"import e2e_toolchain_probe as m; print(m.MARKER)'"
    )


def _npm(registry: str, mode: str) -> str:
    work = f"/tmp/npm-{mode}"
    return (
        f"rm -rf {work}; mkdir -p {work} && cd {work} && npm install --no-audit --no-fund "
        f"--no-update-notifier --fetch-retries 0 --cache {work}/.cache "
        f"--registry {registry}{NPM_PREFIX} {PACKAGE} 2>&1 && "
        f"node -p \"require('{PACKAGE}').MARKER\""
    )


def _git(url: str, mode: str) -> str:
    work = f"/tmp/git-{mode}"
    return f"rm -rf {work}; git clone -q {url} {work} 2>&1 && git -C {work} rev-parse HEAD"


def _s_client(host: str, path: str) -> str:
    # s_client reads no proxy variable: given one, it is passed as -proxy, the way a script would.
    # The proxy ends a `Connection: close` response without TLS close_notify, which OpenSSL 3
    # reports as an error (exit 1) unless told to accept it, as curl and the others do.
    request = f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
    return (
        f"printf '{request}' | openssl s_client -quiet -verify_return_error -ignore_unexpected_eof "
        f"-connect {host}:443 -servername {host} "
        '${HTTPS_PROXY:+-proxy "${HTTPS_PROXY#http://}"} 2>&1'
    )


TOOLS: tuple[Tool, ...] = (
    Tool(
        "curl",
        allowed=lambda mode: _curl(anything("curl", mode)),
        denied=lambda _m: _curl(f"https://{DENIED_NAME}/"),
        proof=echoed("curl"),
    ),
    Tool(
        "wget",
        allowed=lambda mode: _wget(anything("wget", mode)),
        denied=lambda _m: _wget(f"https://{DENIED_NAME}/"),
        proof=echoed("wget"),
        # wget names a refused CONNECT by its status text alone.
        refusal=r"\b403\b|^Proxy tunneling failed: Forbidden",
    ),
    program("python-urllib", f"python3 {CLIENTS}/client.py urllib"),
    program("python-requests", f"python3 {CLIENTS}/client.py requests"),
    program("python-httpx", f"python3 {CLIENTS}/client.py httpx"),
    Tool(
        "pip",
        allowed=lambda mode: _pip(f"https://{UPSTREAM_NAME}", mode),
        denied=lambda mode: _pip(f"https://{DENIED_NAME}", mode),
        proof=lambda _m, _b: MARKER,
    ),
    program("node-https", f"node {CLIENTS}/client.js https", follows=False),
    program("node-fetch", f"node {CLIENTS}/client.js fetch", follows=False),
    Tool(
        "npm",
        allowed=lambda mode: _npm(f"https://{UPSTREAM_NAME}", mode),
        denied=lambda mode: _npm(f"https://{DENIED_NAME}", mode),
        proof=lambda _m, _b: MARKER,
    ),
    Tool(
        "git",
        allowed=lambda mode: _git(f"https://{UPSTREAM_NAME}/repo.git", mode),
        denied=lambda mode: _git(f"https://{DENIED_NAME}/repo.git", mode),
        proof=lambda _m, box: box.upstream.head,
    ),
    program("java-httpclient", f"java {CLIENTS}/Client.java"),
    # Go reports a refused CONNECT by the status text alone.
    program("go-net-http", "goclient", refusal=rf'\b403\b|"https://{DENIED_NAME}/": Forbidden$'),
    program("ruby-net-http", f"ruby {CLIENTS}/client.rb"),
    Tool(
        "openssl-s_client",
        allowed=lambda mode: _s_client(UPSTREAM_NAME, f"/anything/openssl-s_client/{mode}"),
        denied=lambda _m: _s_client(DENIED_NAME, "/"),
        proof=lambda mode, _b: f'"url": "{anything("openssl-s_client", mode)}"',
    ),
)


@pytest.fixture(scope="module")
def workload_image(docker: Docker, images: dict[str, str]) -> str:
    """Overrides conftest's: this module's pod runs the toolchains image as its workload."""
    step(f"build the test-only image {TOOLCHAINS.name} (offline: Debian packages only)")
    built = build_image(docker.engine, TOOLCHAINS, quiet=True)
    info(f"{built.ref}: {built.size_bytes / 1e6:.0f} MB, built in {built.seconds:.1f} s")
    return built.ref


def in_mode(script: str, mode: str) -> list[str]:
    if mode == PROXY:
        return ["sh", "-c", script]
    unset = [a for v in PROXY_VARIABLES for a in ("-u", v)]
    return ["env", *unset, "sh", "-c", STRIP_JAVA_PROXY + script]


def transparent_decisions(box: Sandbox, host: str) -> int:
    return sum(
        1
        for e in box.sidecar_events()
        if e.get("event") == "decision" and e.get("host") == host and e.get("mode") == "transparent"
    )


def run_cell(box: Sandbox, script: str, mode: str, host: str) -> tuple[int, str, int]:
    """(exit code, stdout + stderr, transparent decisions it caused for `host`)."""
    before = transparent_decisions(box, host)
    proc = box.exec(*in_mode(script, mode), timeout=CELL_TIMEOUT)
    output = proc.stdout + proc.stderr
    # The sidecar writes its decision line as it decides; give the log a moment to show it.
    deadline = time.monotonic() + 3
    after = transparent_decisions(box, host)
    while after == before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = transparent_decisions(box, host)
    return proc.returncode, output, after - before


def shown(output: str) -> str:
    flat = " | ".join(line.strip() for line in output.strip().splitlines() if line.strip())
    return flat if len(flat) < 240 else flat[:237] + "..."


def test_the_workload_is_the_toolchains_image_with_nothing_of_ours(
    sandbox: Sandbox, workload_image: str
) -> None:
    step("the pod: the toolchains image as the workload, trust from the pod spec alone")
    workload = sandbox.pod["spec"]["containers"][0]
    assert workload["name"] == c.WORKLOAD_CONTAINER and workload["image"] == workload_image
    assert f"init container {c.TRUST_INIT_CONTAINER} completed (exit 0)" in sandbox.runner.events
    ident = sandbox.exec("id", "-u").stdout.strip()
    assert ident == str(c.EXECUTOR_UID), ident
    # The image's own trust store knows nothing of our CA: only the pod's files can help.
    ours = sandbox.exec(
        "sh",
        "-c",
        f'grep -c "$(sed -n 2p {c.WORKLOAD_CA_CERT})" /etc/ssl/certs/ca-certificates.crt',
    )
    assert ours.stdout.strip() == "0", ours.stdout
    versions = sandbox.exec(
        "sh",
        "-c",
        "node --version; npm --version; java -version 2>&1 | head -1; go version; "
        "ruby --version; python3 --version; openssl version; curl --version | head -1; "
        "wget --version | head -1; git --version",
    )
    info(shown(versions.stdout))
    node = tuple(int(x) for x in versions.stdout.split()[0].lstrip("v").split(".")[:2])
    assert node < NODE_IGNORES_PROXY_BELOW, (
        f"Node {node}: follows NODE_USE_ENV_PROXY; update node-* in TOOLS and docs/toolchains.md"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_toolchain_reaches_the_allowed_host_and_gets_403_from_a_denied_one(
    sandbox: Sandbox, tool: Tool, mode: str
) -> None:
    step(f"{tool.name} ({mode}): {UPSTREAM_NAME} allowed, {DENIED_NAME} denied")
    code, output, transparent = run_cell(sandbox, tool.allowed(mode), mode, UPSTREAM_NAME)
    info(f"allowed: exit {code}, transparent decisions {transparent}: {shown(output)}")
    proof = tool.proof(mode, sandbox)
    assert code == 0 and proof in output, (
        f"{tool.name} ({mode}) did not reach {UPSTREAM_NAME}:\n{output}"
    )
    # The path: through the proxy variables means no transparent connection, and without them
    # (or for a client that ignores them) the transparent listener is what it reached.
    via_transparent = mode == TRANSPARENT or not tool.follows_proxy_variables
    assert (transparent > 0) == via_transparent, (
        f"{tool.name} ({mode}): {transparent} transparent decisions for {UPSTREAM_NAME}; "
        f"expected {'some' if via_transparent else 'none'}"
    )

    code, output, transparent = run_cell(sandbox, tool.denied(mode), mode, DENIED_NAME)
    info(f"denied:  exit {code}, transparent decisions {transparent}: {shown(output)}")
    assert re.search(tool.refusal, output, re.M), (
        f"{tool.name} ({mode}): no 403 from {DENIED_NAME}:\n{output}"
    )
    assert proof not in output
    assert (transparent > 0) == via_transparent, (tool.name, mode, transparent)


def test_wget_ignores_ssl_cert_file(sandbox: Sandbox) -> None:
    """The one gap of the table: Debian's wget (GnuTLS) trusts only its compiled-in bundle path,
    --ca-certificate and a wgetrc's ca_certificate, none of which the pod sets. When something
    does (a WGETRC the ca-trust container writes), this fails: update docs/toolchains.md."""
    step("wget without --ca-certificate: the documented failure (certificate not trusted)")
    code, output, _ = run_cell(
        sandbox, _wget(anything("wget", "no-ca"), ca=""), PROXY, UPSTREAM_NAME
    )
    info(f"exit {code}: {shown(output)}")
    assert code == 5 and "is not trusted" in output, output
