"""A PyPI simple index and an npm registry for one tiny package each, served by the e2e upstream.

The toolchain matrix (tests/e2e/test_toolchains.py) installs them with pip and npm from the pod, as
it would from pypi.org or registry.npmjs.org: through the sidecar, to an allowed host (httpbin.org).

    https://httpbin.org/simple/e2e-toolchain-probe/              PEP 503 page, one wheel (#sha256)
    https://httpbin.org/simple/e2e-toolchain-probe/<wheel>
    https://httpbin.org/npm/e2e-toolchain-probe                  packument (dist.integrity)
    https://httpbin.org/npm/e2e-toolchain-probe/-/<tarball>

Both archives are made in memory at import, byte for byte the same every time. `wrap(app)` serves
these paths and hands every other to `app`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable

PACKAGE = "e2e-toolchain-probe"
MODULE = "e2e_toolchain_probe"
VERSION = "1.0.0"
# What the installed package says, so a test knows it ran the code it installed.
MARKER = "installed from the e2e package index"
PYPI_PREFIX = "/simple/"
NPM_PREFIX = "/npm/"
WHEEL_NAME = f"{MODULE}-{VERSION}-py3-none-any.whl"
TARBALL_NAME = f"{PACKAGE}-{VERSION}.tgz"
EPOCH = (2020, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel() -> bytes:
    """A pure-Python wheel whose module holds MARKER."""
    dist_info = f"{MODULE}-{VERSION}.dist-info"
    files = {
        f"{MODULE}/__init__.py": f"MARKER = {MARKER!r}\n".encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n"
            "Summary: e2e toolchain matrix probe\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests/e2e/package_index.py\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, EPOCH), data)
    return out.getvalue()


def build_tarball() -> bytes:
    """An npm package tarball (package/package.json, package/index.js) exporting MARKER."""
    files = {
        "package/package.json": json.dumps(
            {"name": PACKAGE, "version": VERSION, "main": "index.js", "license": "MIT"}
        ).encode(),
        "package/index.js": f"module.exports = {{ MARKER: {json.dumps(MARKER)} }};\n".encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1577836800
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


WHEEL = build_wheel()
TARBALL = build_tarball()


def simple_page() -> bytes:
    sha256 = hashlib.sha256(WHEEL).hexdigest()
    return (
        f'<!DOCTYPE html><html><body><a href="{WHEEL_NAME}#sha256={sha256}">{WHEEL_NAME}</a>'
        "</body></html>\n"
    ).encode()


def packument(base: str) -> bytes:
    """The registry document for PACKAGE; `base` is the registry's URL as the client used it."""
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()
    version = {
        "name": PACKAGE,
        "version": VERSION,
        "main": "index.js",
        "dist": {
            "tarball": f"{base}{PACKAGE}/-/{TARBALL_NAME}",
            "shasum": hashlib.sha1(TARBALL).hexdigest(),  # npm's format, not for security
            "integrity": integrity,
        },
    }
    doc = {"name": PACKAGE, "dist-tags": {"latest": VERSION}, "versions": {VERSION: version}}
    return json.dumps(doc).encode()


def route(path: str, host: str) -> tuple[str, bytes] | None:
    """(content type, body) for a path this index serves, else None."""
    simple = f"{PYPI_PREFIX}{PACKAGE}/"
    npm = f"{NPM_PREFIX}{PACKAGE}"
    table: dict[str, Callable[[], tuple[str, bytes]]] = {
        simple: lambda: ("text/html", simple_page()),
        simple.rstrip("/"): lambda: ("text/html", simple_page()),
        f"{simple}{WHEEL_NAME}": lambda: ("application/octet-stream", WHEEL),
        npm: lambda: ("application/json", packument(f"https://{host}{NPM_PREFIX}")),
        f"{npm}/-/{TARBALL_NAME}": lambda: ("application/octet-stream", TARBALL),
    }
    handler = table.get(path)
    return handler() if handler else None


def wrap(app: Callable) -> Callable:
    """A WSGI app serving the index's paths and passing every other request to `app`."""

    def index_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        found = None
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            found = route(environ.get("PATH_INFO", ""), environ.get("HTTP_HOST", "httpbin.org"))
        if found is None:
            return app(environ, start_response)
        content_type, body = found
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]

    return index_app
