"""The Host binding: every authority a request names must be the approved host and port."""

from __future__ import annotations

import pytest
from mitmproxy.test import tutils

from addons.core import authority


def request(*hosts: str, authority: str = "") -> object:
    headers = tuple((b"Host", h.encode()) for h in hosts)
    return tutils.treq(host="api.test", port=443, headers=headers, authority=authority.encode())


@pytest.mark.parametrize(
    ("hosts", "authority", "approved", "holds"),
    [
        pytest.param(["api.test:443"], "", ("api.test", 443), True, id="host-and-port"),
        pytest.param(["api.test"], "", ("api.test", 443), True, id="host-without-port"),
        pytest.param(["API.Test:443"], "", ("api.test", 443), True, id="other-case"),
        pytest.param(["api.test.:443"], "", ("api.test", 443), True, id="trailing-dot"),
        pytest.param(["[::1]:443"], "", ("::1", 443), True, id="ipv6-literal"),
        pytest.param([], "", ("api.test", 443), True, id="no-host-header"),
        pytest.param(["api.test:8443"], "", ("api.test", 443), False, id="other-port"),
        pytest.param(["other.test:443"], "", ("api.test", 443), False, id="other-host"),
        pytest.param(["api.test:443x"], "", ("api.test", 443), False, id="garbage-port"),
        pytest.param(["api.test:443", "api.test:443"], "", ("api.test", 443), False, id="two-host-headers"),
        pytest.param(["api.test:443"], "other.test:443", ("api.test", 443), False, id="authority-differs"),
        pytest.param([], "api.test:443", ("api.test", 443), True, id="authority-only"),
        pytest.param(["api.test:443"], "", ("api.test", 8443), False, id="approved-other-port"),
    ],
)  # fmt: skip
def test_host_binding(hosts, authority, approved, holds) -> None:
    req = request(*hosts, authority=authority)
    assert authority_holds(req, *approved) is holds


def authority_holds(req, host: str, port: int) -> bool:
    return authority.binding_holds(tuple(req.headers.fields), req.authority, host, port)
