"""The client deadline on every request head, the connection ceiling, the descriptor budget, and
the once-per-interval report of failed accepts (issue 12, items 7 and 8)."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource

import pytest
from mitmproxy.test import taddons, tflow

from addons import accept_errors, descriptors, health, limits
from addons.accept_errors import AcceptErrorLog

# -- the deadline state machine --------------------------------------------------------------
#
# Steps on one client connection: "connect", "tunnel" (an approved CONNECT), "head:X" (request X's
# head arrived and was accepted), "refused:X" (X's head arrived and was refused), "done:X" (X's
# response finished or X failed), "ws" (the connection became a WebSocket). After the steps: is a
# deadline armed, and does it close the connection when it fires?
DEADLINE_CASES = [
    pytest.param(["connect"], True, True, id="fresh-connection"),
    pytest.param(["connect", "tunnel"], True, True, id="after-connect"),
    pytest.param(["connect", "head:a"], True, False, id="request-in-flight-spared"),
    pytest.param(["connect", "head:a", "done:a"], True, True, id="keep-alive-second-head"),
    pytest.param(["connect", "tunnel", "head:a", "done:a"], True, True, id="tunnel-second-head"),
    pytest.param(["connect", "head:a", "done:a", "head:b", "done:b"], True, True, id="third-head"),
    pytest.param(["connect", "head:a", "head:b", "done:a"], True, False, id="h2-one-of-two-left"),
    pytest.param(
        ["connect", "head:a", "head:b", "done:b", "done:a"], True, True, id="h2-both-finished"
    ),
    pytest.param(["connect", "refused:a"], True, True, id="refused-body-must-come-in-time"),
    pytest.param(
        ["connect", "head:a", "refused:b"], True, False, id="refused-beside-accepted-spared"
    ),
    pytest.param(["connect", "head:a", "refused:b", "done:a"], True, True, id="only-refused-left"),
    pytest.param(["connect", "head:a", "done:a", "done:a"], True, True, id="done-twice"),
    pytest.param(["connect", "done:x"], True, True, id="done-unknown-flow"),
    pytest.param(["connect", "head:a", "done:a", "ws"], False, False, id="websocket"),
    pytest.param(
        ["connect", "head:a", "done:a", "ws", "head:b", "done:b"], False, False, id="ws-for-good"
    ),
]


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def close(client_id: str, why: str) -> bool:
        calls.append(why)
        return True

    monkeypatch.setattr(limits, "close_client", close)
    monkeypatch.setattr(limits.events, "emit", lambda *a, **k: None)
    return calls


@pytest.mark.parametrize(("steps", "armed", "closes"), DEADLINE_CASES)
async def test_deadline_covers_every_head(steps, armed, closes, closed) -> None:
    addon = limits.ConnectionLimits()
    with taddons.context(addon):
        lim = addon
        base = tflow.tflow()
        client = base.client_conn
        flows: dict[str, object] = {}

        def flow(name: str):
            if name not in flows:
                f = tflow.tflow()
                f.client_conn = client
                flows[name] = f
            return flows[name]

        for step in steps:
            kind, _, name = step.partition(":")
            if kind == "connect":
                lim.client_connected(client)
            elif kind == "tunnel":
                lim.request_seen(base, connect=True)
            elif kind == "head":
                lim.request_seen(flow(name), connect=False)
            elif kind == "refused":
                f = flow(name)
                lim.request_seen(f, connect=False)
                f.metadata[limits.DENIED] = "blocked-by-allowlist"
            elif kind == "done":
                lim.request_done(flow(name))
            elif kind == "ws":
                lim.websocket_started(flow("a"))
        assert (client.id in lim._deadlines) is armed
        if armed:
            lim._deadlines[client.id].cancel()
            lim._expire(client.id)
        assert closed == (["client-header-timeout"] if closes else [])
        lim.client_disconnected(client)
        assert client.id not in lim._deadlines and client.id not in lim._in_flight


@pytest.mark.parametrize(
    ("timeout", "refused", "seconds"),
    [
        pytest.param(30, False, 30, id="admitted-default"),
        pytest.param(30, True, limits.REFUSED_DEADLINE, id="refused-short"),
        pytest.param(1, True, 1, id="refused-shorter-option"),
        pytest.param(0, True, limits.REFUSED_DEADLINE, id="refused-even-when-disabled"),
        pytest.param(0, False, None, id="admitted-disabled"),
    ],
)
async def test_deadline_length(timeout, refused, seconds) -> None:
    addon = limits.ConnectionLimits()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, client_header_timeout=timeout, max_connections=1)
        lim = addon
        first = tflow.tflow().client_conn
        lim.client_connected(first)
        client = tflow.tflow().client_conn
        if refused:
            lim.client_connected(client)
        else:
            client = first
        timer = lim._deadlines.get(client.id)
        if seconds is None:
            assert timer is None
        else:
            assert timer is not None
            remaining = timer.when() - asyncio.get_running_loop().time()
            assert seconds - 0.5 < remaining <= seconds


async def test_connections_far_over_the_cap_are_closed_unread() -> None:
    addon = limits.ConnectionLimits()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, max_connections=3)
        lim = addon
        clients = [tflow.tflow().client_conn for _ in range(3 * descriptors.CEILING_FACTOR + 2)]
        for c in clients:
            lim.client_connected(c)
        cap = 3
        assert [c.error for c in clients[: cap * descriptors.CEILING_FACTOR]] == [None] * 6
        assert all("too-many-connections" in (c.error or "") for c in clients[6:])
        assert len(lim.admitted) == cap and len(lim.refused) == 3
        assert lim.closed_over_ceiling == 2 and lim.refused_total == 5
        for c in clients[:6]:
            lim.client_disconnected(c)
        assert lim.open_connections == 0
        metrics = lim.render_metrics()
        assert "auth_proxy_connections_closed_unread_total 2" in metrics
        assert "auth_proxy_max_connections 3" in metrics


# -- the descriptor budget -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connections", "wanted"),
    [
        pytest.param(1, 1 * 3 + 1 + 80 + 256, id="one"),
        pytest.param(256, 256 * 3 + 256 + 80 + 256, id="default"),
        pytest.param(1000, 1000 * 3 + 1000 + 80 + 256, id="large"),
    ],
)
def test_fds_wanted_leaves_room_for_upstreams_refused_and_health(connections, wanted) -> None:
    assert descriptors.fds_wanted(connections) == wanted
    assert descriptors.HEALTH_FDS == health.MAX_CONNECTIONS + health.BACKLOG == 80


@pytest.mark.parametrize(
    ("limit", "cap"),
    [
        pytest.param(64, 1, id="tiny-limit-still-one"),
        pytest.param(1024, 172, id="common-1024"),
        pytest.param(descriptors.fds_wanted(256), 256, id="exactly-default"),
        pytest.param(descriptors.fds_wanted(256) - 1, 255, id="one-short"),
    ],
)
def test_cap_that_fits(limit, cap) -> None:
    assert descriptors.cap_that_fits(limit) == cap
    if cap > 1:
        assert descriptors.fds_wanted(cap) <= limit


def test_low_hard_limit_lowers_the_cap(monkeypatch, caplog) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (512, 1024))
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: set_to.append(v))
    with caplog.at_level(logging.WARNING):
        assert descriptors.raise_fd_limit(256) == descriptors.cap_that_fits(1024)
    assert set_to == [(1024, 1024)]
    assert "max_connections=256" in caplog.text and "Fix:" in caplog.text


def test_raisable_limit_keeps_the_cap(monkeypatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, resource.RLIM_INFINITY))
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: set_to.append(v))
    assert descriptors.raise_fd_limit(256) == 256
    assert set_to == [(descriptors.fds_wanted(256), resource.RLIM_INFINITY)]


# -- failed accepts: once per interval ------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "logged", "held_back_reported"),
    [
        pytest.param([0.0], [True], [0], id="first-logged"),
        pytest.param([0.0, 1.0, 2.0, 9.9], [True, False, False, False], [0], id="within-interval"),
        pytest.param([0.0, 1.0, 2.0, 10.0], [True, False, False, True], [0, 2], id="next-window"),
        pytest.param(
            [0.0, 10.0, 11.0, 20.0, 35.0],
            [True, True, False, True, True],
            [0, 0, 1, 0],
            id="windows-restart-from-last-line",
        ),
        pytest.param(
            [float(t) for t in range(60)],
            [t % 10 == 0 for t in range(60)],
            [0] + [9] * 5,
            id="every-second-for-a-minute",
        ),
    ],
)
def test_failed_accepts_logged_once_per_interval(times, logged, held_back_reported) -> None:
    now = [0.0]
    log = AcceptErrorLog(interval=10.0, clock=lambda: now[0])
    lines = []
    for t in times:
        now[0] = t
        lines.append(log.note(errno.EMFILE))
    assert [line is not None for line in lines] == logged
    reported = [line for line in lines if line is not None]
    for line, held in zip(reported, held_back_reported, strict=True):
        assert line.startswith("cannot accept connections: EMFILE (too many open files)")
        assert (f"{held} more in the last 10s not logged" in line) is (held > 0)
        assert "\n" not in line and len(line) < 240
    assert log.total == len(times)


def accept_context(code: int, message: str = accept_errors.ACCEPT_OUT_OF_RESOURCES) -> dict:
    return {"message": message, "exception": OSError(code, "x"), "socket": object()}


@pytest.mark.parametrize(
    ("context", "matches"),
    [
        pytest.param(accept_context(errno.EMFILE), True, id="emfile"),
        pytest.param(accept_context(errno.ENFILE), True, id="enfile"),
        pytest.param(accept_context(errno.ENOBUFS), True, id="enobufs"),
        pytest.param(accept_context(errno.ENOMEM), True, id="enomem"),
        pytest.param(accept_context(errno.ECONNRESET), False, id="other-errno"),
        pytest.param(
            accept_context(errno.EMFILE, "Task exception was never retrieved"),
            False,
            id="other-message",
        ),
        pytest.param({"message": accept_errors.ACCEPT_OUT_OF_RESOURCES}, False, id="no-exception"),
        pytest.param(
            {"message": accept_errors.ACCEPT_OUT_OF_RESOURCES, "exception": ValueError()},
            False,
            id="not-oserror",
        ),
    ],
)
def test_which_reports_are_failed_accepts(context, matches) -> None:
    assert accept_errors.is_accept_out_of_resources(context) is matches


async def test_handler_chains_to_the_previous_one(caplog) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict] = []
    original = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    log = AcceptErrorLog(interval=10.0)
    try:
        log.install(loop)
        log.install(loop)  # idempotent: never chains to itself
        other = {"message": "Task exception was never retrieved", "exception": RuntimeError()}
        with caplog.at_level(logging.ERROR, logger=accept_errors.__name__):
            for _ in range(5):
                loop.call_exception_handler(accept_context(errno.EMFILE))
            loop.call_exception_handler(other)
        assert seen == [other]
        assert len(caplog.records) == 1 and "EMFILE" in caplog.records[0].getMessage()
        assert log.total == 5
        log.uninstall()
        loop.call_exception_handler(accept_context(errno.EMFILE))
        assert len(seen) == 2  # the previous handler is back
    finally:
        loop.set_exception_handler(original)


async def test_uninstall_keeps_a_handler_installed_later() -> None:
    loop = asyncio.get_running_loop()
    original = loop.get_exception_handler()
    log = AcceptErrorLog()
    try:
        log.install(loop)

        def later(_loop, _context):
            return None

        loop.set_exception_handler(later)
        log.uninstall()
        assert loop.get_exception_handler() is later
    finally:
        loop.set_exception_handler(original)


async def test_addon_installs_the_handler_while_running_and_removes_it_when_done() -> None:
    loop = asyncio.get_running_loop()
    original = loop.get_exception_handler()
    addon = limits.ConnectionLimits()
    with taddons.context(addon):
        lim = addon
        lim.running()
        try:
            assert loop.get_exception_handler() == lim.accept_errors.handle
        finally:
            lim.cancel_all()
        assert loop.get_exception_handler() == original
