"""Graceful SIGTERM: stop listening, let requests in flight finish (up to `shutdown_grace`
seconds), refuse new ones with a 503 `shutting-down`, then exit 0.

mitmproxy's own SIGTERM handler shuts down at once. Its handler is installed with
`loop.add_signal_handler` before the addons' `running` hook, so installing ours there replaces it,
in mitmdump and in auth-proxy alike. A second SIGTERM (or SIGINT) still stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from mitmproxy import ctx, http

from addons import events

logger = logging.getLogger(__name__)

DEFAULT_GRACE = 25
POLL_SECONDS = 0.1


class GracefulShutdown:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._installed = False

    def load(self, loader) -> None:
        loader.add_option(
            "shutdown_grace",
            int,
            DEFAULT_GRACE,
            "Seconds that requests in flight may take to finish after SIGTERM; new connections are refused meanwhile.",
        )

    def running(self) -> None:
        self.install()

    def done(self) -> None:
        self.uninstall()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        if self.draining:
            return False, {"error": "shutting down: finishing requests in flight"}
        return True, {}

    def install(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.begin)
            self._installed = True
        except (NotImplementedError, RuntimeError, ValueError) as e:  # not the main thread
            logger.warning(f"graceful SIGTERM unavailable ({e}); SIGTERM stops at once")

    def uninstall(self) -> None:
        """Give SIGTERM back to mitmproxy's immediate shutdown (script unload)."""
        if self._installed:
            self._installed = False
            try:
                master = ctx.master
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, master.shutdown)
            except Exception:
                logger.exception("restoring the SIGTERM handler failed")

    # -- requests ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """After the allowlist: only requests it let through are waited for."""
        if flow.response is None and not flow.error and flow.live:
            self.started(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.finished(flow)

    def started(self, flow: http.HTTPFlow) -> None:
        self.in_flight.add(flow.id)

    def finished(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow.id)

    # -- the drain -----------------------------------------------------------------------------

    def begin(self) -> None:
        if self.draining:
            logger.warning("second SIGTERM: stopping now")
            ctx.master.shutdown()
            return
        self.draining = True
        grace = float(ctx.options.shutdown_grace)
        events.emit("shutdown", phase="draining", in_flight=len(self.in_flight), grace_s=grace)
        try:
            # Stop accepting: new connections are refused by the kernel from here on.
            ctx.options.update(server=False)
        except Exception:
            logger.exception("closing the listener failed")
        self._task = asyncio.get_running_loop().create_task(self._drain(grace), name="drain")

    async def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + max(grace, 0.0)
        try:
            for _ in range(int(max(grace, 0.0) / POLL_SECONDS) + 1):
                if not self.in_flight or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(POLL_SECONDS)
        finally:
            events.emit("shutdown", phase="exiting", unfinished=len(self.in_flight))
            ctx.master.shutdown()
