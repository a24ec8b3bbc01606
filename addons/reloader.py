"""Notices when the policy file changes, including Kubernetes' ConfigMap symlink swap.

Polling `stat()` is deliberate: it follows the `..data` symlink that the kubelet swaps
atomically, works on every filesystem a volume can be, and costs one syscall a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0

Fingerprint = tuple[int, int, int, int] | None


def fingerprint(path: str) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyWatcher:
    def __init__(self, path: str, on_change: Callable[[], None]) -> None:
        self.path = path
        self._on_change = on_change
        self._seen = fingerprint(path)
        self._task: asyncio.Task[None] | None = None

    def poll(self) -> bool:
        """Call `on_change` if the file changed since the last poll. Returns whether it did."""
        current = fingerprint(self.path)
        if current == self._seen:
            return False
        self._seen = current
        self._on_change()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad reload
                logger.exception("policy reload failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-watcher")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
