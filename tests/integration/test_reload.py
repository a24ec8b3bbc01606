"""A changed policy takes effect within seconds, however it is changed; a broken one never
replaces the last good policy, and /readyz says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.processes import wait_until
from tests.support.proxy import Proxy
from tests.support.testnet import LoopbackNet

RELOAD_BOUND = 6.0  # the contract is 5 s; one poll of slack


def status_of(proxy: Proxy, url: str) -> tuple[int, str | None]:
    status, headers, _ = proxy.status_and_headers(url)
    return status, headers.get("x-proxy-error")


def configmap_dir(root: Path, text: str) -> Path:
    """The layout the kubelet gives a ConfigMap volume: policy.yaml -> ..data/policy.yaml."""
    version = root / "..2026_01_01_v1"
    version.mkdir(parents=True)
    (version / "policy.yaml").write_text(text)
    (root / "..data").symlink_to(version.name)
    (root / "policy.yaml").symlink_to("..data/policy.yaml")
    return root / "policy.yaml"


def configmap_update(root: Path, text: str, name: str) -> None:
    """The kubelet's atomic update: a new timestamped dir, then a rename of the ..data link."""
    version = root / name
    version.mkdir()
    (version / "policy.yaml").write_text(text)
    (root / "..data_tmp").symlink_to(version.name)
    os.replace(root / "..data_tmp", root / "..data")


@pytest.mark.parametrize("how", ["configmap-swap", "atomic-rename", "in-place-write"])
def test_policy_change_takes_effect(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, how: str
) -> None:
    before = testnet.policy_text("upstream.test")
    after = testnet.policy_text("upstream.test", "*.wild.test")
    if how == "configmap-swap":
        policy = configmap_dir(tmp_path / "cm", before)
    else:
        policy = tmp_path / "policy.yaml"
        policy.write_text(before)
    proxy = make_proxy(policy)
    url = f"https://www.wild.test:{testnet.tls_port}/echo"
    assert status_of(proxy, url) == (403, "blocked-by-allowlist")

    if how == "configmap-swap":
        configmap_update(tmp_path / "cm", after, "..2026_01_01_v2")
    elif how == "atomic-rename":
        staged = tmp_path / "staged.yaml"
        staged.write_text(after)
        os.replace(staged, policy)
    else:
        policy.write_text(after)

    wait_until(lambda: status_of(proxy, url)[0] == 200, RELOAD_BOUND, "the new policy")
    reloads = proxy.events("policy-reload")
    assert reloads and reloads[-1]["ok"] is True and reloads[-1]["entries"] == 2


@pytest.mark.parametrize(
    "breakage",
    ["invalid-entry", "emptied", "deleted", "replaced-by-directory", "dangling-symlink"],
)
def test_broken_policy_keeps_the_last_good_one(
    make_proxy, testnet: LoopbackNet, tmp_path: Path, breakage: str
) -> None:
    policy = testnet.write_policy(tmp_path / "policy.yaml", "upstream.test")
    proxy = make_proxy(policy)
    allowed = f"https://upstream.test:{testnet.tls_port}/echo"
    denied = f"https://www.wild.test:{testnet.tls_port}/echo"

    if breakage == "invalid-entry":
        policy.write_text(testnet.policy_text("upstream.test", "*.wild.test", "foo.*"))
    elif breakage == "emptied":
        policy.write_text("")
    elif breakage == "deleted":
        policy.unlink()
    elif breakage == "replaced-by-directory":
        policy.unlink()
        policy.mkdir()
    else:
        policy.unlink()
        policy.symlink_to(tmp_path / "nowhere.yaml")

    def reported() -> bool:
        _status, body = proxy.readyz()
        return bool(body.get("last_reload_error"))

    wait_until(reported, RELOAD_BOUND, "/readyz to report the reload error")
    status, body = proxy.readyz()
    assert status == 200, "the last good policy is still in force, so the proxy stays ready"
    assert str(policy) in body["last_reload_error"]
    assert body["entries"] == 1
    assert status_of(proxy, allowed)[0] == 200
    assert status_of(proxy, denied) == (403, "blocked-by-allowlist")
    assert "auth_proxy_policy_reload_errors_total 1" in proxy.health("/metrics")[1]
