"""Notices when the policy file changes, including Kubernetes' ConfigMap symlink swap, and loads
the new policy off the event loop, within a deadline.

Polling `stat()` is deliberate: it follows the `..data` symlink that the kubelet swaps
atomically, works on every filesystem a volume can be, and costs one syscall a second.

Loading (read, parse, compile) runs in a worker thread: a large policy takes a noticeable time
to parse, and the event loop must keep serving meanwhile. The result is applied on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from addons.policy_file import PolicyError

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# How long one reload may take before it counts as failed (the last good policy stays). A
# 10,000-entry policy loads in about 0.2 s; the largest file allowed parses in a few seconds.
LOAD_DEADLINE_SECONDS = 5.0

Fingerprint = tuple[int, int, int, int] | None
# Returns the loaded value, or raises PolicyError: the load's outcome, delivered on the loop.
Outcome = Callable[[], Any]


def fingerprint(path: str) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _returning(value: Any) -> Outcome:
    return lambda: value


def _raising(error: PolicyError) -> Outcome:
    def outcome() -> Any:
        raise error

    return outcome


class PolicyWatcher:
    """Calls `load()` in a thread when the file at `path` changes, then `on_change(outcome)` on
    the event loop; `outcome()` returns what `load` returned or raises its PolicyError (also
    when the load missed its deadline)."""

    def __init__(
        self,
        path: str,
        load: Callable[[], Any],
        on_change: Callable[[Outcome], None],
        deadline: float = LOAD_DEADLINE_SECONDS,
    ) -> None:
        self.path = path
        self._load = load
        self._on_change = on_change
        self._deadline = deadline
        self._seen = fingerprint(path)
        self._task: asyncio.Task[None] | None = None
        # A load that missed its deadline keeps running in its thread (threads cannot be
        # cancelled); no second one starts until it ends, so stuck loads cannot pile up.
        self._straggler: asyncio.Future[Any] | None = None

    async def poll(self) -> bool:
        """Load and deliver the policy if the file changed since the last poll. Returns whether
        a load was delivered."""
        if self._straggler is not None and not self._straggler.done():
            return False  # the change stays unseen and is picked up once the old load ends
        current = fingerprint(self.path)
        if current == self._seen:
            return False
        self._seen = current
        self._on_change(await self._load_within_deadline())
        return True

    async def _load_within_deadline(self) -> Outcome:
        work = asyncio.ensure_future(asyncio.to_thread(self._load))
        try:
            value = await asyncio.wait_for(asyncio.shield(work), self._deadline)
        except PolicyError as e:
            return _raising(e)
        except TimeoutError:
            self._straggler = work
            work.add_done_callback(_discard_result)
            return _raising(
                PolicyError(
                    f"{self.path}: loading the policy took longer than {self._deadline:g} s. "
                    "Fix: check the file's size and the volume it is on"
                )
            )
        except Exception as e:
            # Not a policy problem but a bug; its message might quote the file, so only its type
            # is named here and in the log.
            logger.error(f"policy load raised {type(e).__name__}; keeping the last good policy")
            return _raising(
                PolicyError(f"{self.path}: loading the policy failed ({type(e).__name__})")
            )
        return _returning(value)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self.poll()
            except Exception:  # the watcher must outlive any one bad reload
                logger.exception("policy reload failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy-watcher")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _discard_result(work: asyncio.Future[Any]) -> None:
    # A late load's outcome is stale by now; fetch its exception so asyncio does not log it.
    if not work.cancelled():
        work.exception()
