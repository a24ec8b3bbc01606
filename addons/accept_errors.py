"""Running out of file descriptors: one short line per interval, not a traceback per attempt.

When accept() fails with EMFILE (or ENFILE, ENOBUFS, ENOMEM), asyncio's accept loop
(selector_events `_accept_connection`) stops reading the listening socket for a second and reports
the failure to the loop's exception handler. mitmproxy's handler logs each report with a full
traceback, so a saturated proxy writes a traceback every second per listening socket for as long
as it stays saturated. This handler, installed through the public `loop.set_exception_handler`,
turns those reports into one line per interval with a count of the repeats it held back, and
passes every other report on to the handler it replaced (mitmproxy's own), unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# asyncio's own wording for this report (selector_events and proactor_events alike).
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
OUT_OF_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
DEFAULT_INTERVAL = 10.0

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def is_accept_out_of_resources(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    return (
        context.get("message") == ACCEPT_OUT_OF_RESOURCES
        and isinstance(exc, OSError)
        and exc.errno in OUT_OF_RESOURCE_ERRNOS
    )


def report_line(code: int | None, held_back: int, interval: float) -> str:
    """The one line logged for a run of failed accepts; no client data can reach it."""
    name = errno.errorcode.get(code, "unknown") if code is not None else "unknown"
    reason = os.strerror(code) if code is not None else "out of system resources"
    line = f"cannot accept connections: {name} ({reason.lower()}); asyncio retries every second"
    if held_back:
        line += f"; {held_back} more in the last {interval:g}s not logged"
    return line + ". Fix: raise the open-file limit (ulimit -n) or lower --set max_connections"


class AcceptErrorLog:
    """Counts failed accepts and says which ones are due a log line (at most one per interval)."""

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.total = 0
        self._clock = clock
        self._last_logged: float | None = None
        self._held_back = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Handler | None = None

    def note(self, code: int | None) -> str | None:
        """Count one failed accept; return the line to log now, or None to hold it back."""
        self.total += 1
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self.interval:
            self._held_back += 1
            return None
        line = report_line(code, self._held_back, self.interval)
        self._last_logged, self._held_back = now, 0
        return line

    # -- the loop's exception handler ----------------------------------------------------------

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain in front of the loop's current handler (mitmproxy installs its own in run())."""
        if self._loop is not None:
            return
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self.handle)
        self._loop = loop

    def uninstall(self) -> None:
        loop, self._loop = self._loop, None
        # Put the previous handler back only if nobody replaced ours meanwhile.
        if loop is not None and loop.get_exception_handler() == self.handle:
            loop.set_exception_handler(self._previous)
        self._previous = None

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not is_accept_out_of_resources(context):
            self._forward(loop, context)
            return
        try:
            line = self.note(context["exception"].errno)
            if line is not None:
                logger.error(line)
        except Exception:  # an exception handler must not raise; fall back to the old path
            self._forward(loop, context)

    def _forward(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
