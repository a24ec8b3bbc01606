"""The sidecar's cached hook dispatch keeps mitmproxy's semantics: every addon that implements a
hook gets it in chain order, a raising addon is logged and skipped, AddonHalt stops the rest, and
the chain can change at any time."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.proxy.server_hooks import ClientConnectedHook
from mitmproxy.test import taddons, tflow

from addons.dispatch import CachedAddonManager


class Recorder:
    def __init__(self, name: str, calls: list[str], behaviour: str = "ok") -> None:
        self.name, self.calls, self.behaviour = name, calls, behaviour

    def client_connected(self, client) -> None:
        self.calls.append(self.name)
        if self.behaviour == "raise":
            raise RuntimeError("boom")
        if self.behaviour == "halt":
            raise exceptions.AddonHalt


class AsyncRecorder(Recorder):
    async def client_connected(self, client) -> None:  # type: ignore[override]
        self.calls.append(self.name)


class Parent:
    name = "parent"

    def __init__(self, child) -> None:
        self.addons = [child]


class Silent:
    name = "silent"


@pytest.fixture
def manager():
    with taddons.context() as tctx:
        yield CachedAddonManager(tctx.master)


async def test_dispatches_in_order_to_implementers_and_children(manager) -> None:
    calls: list[str] = []
    manager.add(Recorder("a", calls), Silent(), Parent(AsyncRecorder("child", calls)))
    await manager.trigger_event(ClientConnectedHook(tflow.tclient_conn()))
    assert calls == ["a", "child"]


async def test_raising_addon_is_logged_and_the_rest_still_run(manager, caplog) -> None:
    calls: list[str] = []
    manager.add(Recorder("a", calls, "raise"), Recorder("b", calls))
    await manager.trigger_event(ClientConnectedHook(tflow.tclient_conn()))
    assert calls == ["a", "b"]
    assert "Addon error: boom" in caplog.text


async def test_halt_stops_the_rest(manager) -> None:
    calls: list[str] = []
    manager.add(Recorder("a", calls, "halt"), Recorder("b", calls))
    await manager.trigger_event(ClientConnectedHook(tflow.tclient_conn()))
    assert calls == ["a"]


async def test_chain_changes_are_seen(manager) -> None:
    calls: list[str] = []
    first = Recorder("a", calls)
    manager.add(first)
    await manager.trigger_event(ClientConnectedHook(tflow.tclient_conn()))
    manager.add(Recorder("b", calls))
    manager.remove(first)
    await manager.trigger_event(ClientConnectedHook(tflow.tclient_conn()))
    assert calls == ["a", "b"]


async def test_update_is_sent_only_when_someone_listens(manager) -> None:
    seen: list[str] = []

    class Updater:
        name = "updater"

        def update(self, flows) -> None:
            seen.append("update")

    flow = tflow.tflow()
    await manager.handle_lifecycle(hooks.UpdateHook([flow]))
    assert seen == []
    manager.add(Updater())
    from mitmproxy.proxy.layers.http import HttpRequestHook

    await manager.handle_lifecycle(HttpRequestHook(flow))
    assert seen == ["update"]
