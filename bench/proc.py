"""What the bench reads from /proc: CPU seconds and resident memory of a process tree."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (Squid's certificate helpers count as the proxy's cost)."""
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 64:
        current = todo.pop()
        seen.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return seen


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process tree, including reaped children."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state is fields[0]; utime, stime, cutime, cstime are 14-17 (1-based).
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pid: int) -> float:
    return sum(_status_kib(p, "VmRSS") for p in tree(pid)) / 1024


def hwm_mib(pid: int) -> float:
    """Peak RSS: the main process's VmHWM plus the current RSS of its helpers."""
    helpers = [p for p in tree(pid) if p != pid]
    return (_status_kib(pid, "VmHWM") + sum(_status_kib(p, "VmRSS") for p in helpers)) / 1024


class RssSampler:
    """Polls the tree's RSS every `interval` s in a thread; `peak` is the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for(check, timeout: float, interval: float = 0.01) -> float | None:
    """Seconds until `check()` is true, or None after `timeout` (bounded by time)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    return None
