"""Hooks run inside the layer that raised them when their handlers finish at once; otherwise the
layer pauses and the connection handler awaits what is left, exactly once per handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from mitmproxy import exceptions
from mitmproxy.proxy import commands, context, events, layer
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from addons.dispatch import CachedAddonManager
from addons.patches import inline_hooks


class Recorder:
    """An addon with the hooks each case needs."""

    def __init__(self, name: str, calls: list[str], behaviour: str = "sync") -> None:
        self.name, self.calls, self.behaviour = name, calls, behaviour
        self.release = asyncio.Event()

    def request(self, flow) -> object:
        self.calls.append(f"{self.name}:request")
        if self.behaviour == "raise":
            raise RuntimeError("handler failed")
        if self.behaviour == "halt":
            raise exceptions.AddonHalt()
        if self.behaviour == "intercept":
            flow.intercept()
        if self.behaviour in ("async-done", "async-wait"):
            return self._async()
        return None

    async def _async(self) -> None:
        if self.behaviour == "async-wait":
            await self.release.wait()
        self.calls.append(f"{self.name}:request-async-done")


class Raiser(layer.Layer):
    """A layer that raises one blocking hook per event and logs what it got back."""

    def __init__(self, ctx: context.Context, flow) -> None:
        super().__init__(ctx)
        self.flow, self.replies = flow, []

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield commands.Log("before")
        self.replies.append((yield HttpRequestHook(self.flow)))
        yield commands.Log("after")


@pytest.fixture
def hooks() -> Iterator[taddons.context]:
    with taddons.context() as tctx:
        manager = CachedAddonManager(tctx.master)
        tctx.master.addons = manager
        inline_hooks.install(manager)
        try:
            yield tctx
        finally:
            inline_hooks.uninstall()


def run_layer(tctx, *addons) -> tuple[Raiser, list[commands.Command]]:
    tctx.master.addons.add(*addons)
    flow = tflow.tflow()
    raiser = Raiser(context.Context(flow.client_conn, tctx.options), flow)
    return raiser, list(raiser.handle_event(events.Start()))


def in_proxy_loop(scenario):
    """Run a coroutine on a loop with eager tasks, as mitmproxy's Master runs the proxy."""

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        return await scenario()

    return asyncio.run(main())


def logs(emitted: list[commands.Command]) -> list[str]:
    return [c.message for c in emitted if isinstance(c, commands.Log)]


def hooks_of(emitted: list[commands.Command]) -> list[commands.StartHook]:
    return [c for c in emitted if isinstance(c, commands.StartHook)]


@pytest.mark.parametrize(
    ("behaviours", "calls"),
    [
        pytest.param(["sync"], ["a:request"], id="one-sync-handler"),
        pytest.param(["sync", "sync"], ["a:request", "b:request"], id="handlers-in-addon-order"),
        pytest.param(["async-done"], ["a:request", "a:request-async-done"], id="coroutine-done-at-once"),
        pytest.param(["raise", "sync"], ["a:request", "b:request"], id="error-logged-next-runs"),
        pytest.param(["halt", "sync"], ["a:request"], id="addon-halt-stops-the-rest"),
    ],
)  # fmt: skip
def test_hook_finishing_at_once_runs_in_the_layer(hooks, behaviours, calls) -> None:
    seen: list[str] = []
    addons = [Recorder(name, seen, b) for name, b in zip("ab", behaviours, strict=False)]

    async def scenario():
        return run_layer(hooks, *addons)

    raiser, emitted = in_proxy_loop(scenario)

    assert seen == calls
    assert hooks_of(emitted) == []
    assert logs(emitted) == ["before", "after"]
    assert raiser.replies == [None]
    assert not raiser._paused


def test_handler_error_is_logged_like_mitmproxys_safecall(hooks, caplog) -> None:
    caplog.set_level(logging.ERROR)
    run_layer(hooks, Recorder("a", [], "raise"))
    assert "Addon error: handler failed" in caplog.text


@pytest.mark.parametrize("behaviour", ["async-wait", "intercept"])
def test_waiting_hook_pauses_the_layer_and_runs_each_handler_once(hooks, behaviour) -> None:
    async def scenario() -> None:
        seen: list[str] = []
        first, second = Recorder("a", seen, behaviour), Recorder("b", seen)
        raiser, emitted = run_layer(hooks, first, second)

        (hook,) = hooks_of(emitted)
        assert logs(emitted) == ["before"]
        assert raiser._paused is not None
        rest = hook.auth_proxy_rest
        waiting = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        assert not waiting.done()
        if behaviour == "async-wait":
            assert seen == ["a:request"]
            first.release.set()
        else:
            assert seen == ["a:request", "b:request"]
            raiser.flow.resume()
        await asyncio.wait_for(waiting, 5)

        resumed = list(raiser.handle_event(events.HookCompleted(hook)))
        assert logs(resumed) == ["after"]
        assert seen.count("a:request") == 1 and seen.count("b:request") == 1

    in_proxy_loop(scenario)


def test_update_handlers_leave_the_hook_to_mitmproxy(hooks) -> None:
    class Updates:
        def update(self, flows) -> None:
            pass

    seen: list[str] = []
    raiser, emitted = run_layer(hooks, Recorder("a", seen), Updates())

    assert seen == []  # nothing ran here: mitmproxy's dispatch will
    (hook,) = hooks_of(emitted)
    assert not hasattr(hook, "auth_proxy_rest")
    assert raiser._paused is not None


def test_non_blocking_commands_pass_through_unchanged(hooks) -> None:
    hook = HttpResponseHook(tflow.tflow(resp=True))
    hook.blocking = False

    class NonBlocking(layer.Layer):
        def _handle_event(self, event):
            yield hook
            yield commands.Log("after")

    flow = tflow.tflow()
    emitted = list(
        NonBlocking(context.Context(flow.client_conn, hooks.options)).handle_event(events.Start())
    )
    assert emitted[0] is hook and logs(emitted) == ["after"]


def test_uninstall_restores_mitmproxys_layer() -> None:
    inline_hooks.uninstall()
    assert layer.Layer.handle_event is inline_hooks._ORIGINALS[0]
