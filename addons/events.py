"""Structured output: one JSON line per decision and per forwarded request, and the counters
behind /metrics.

mitmproxy's own log handler prefixes every line with a time and the client address, so these
lines are written to stdout directly, one write and one flush each: this runs for every request,
and the logging machinery cost more than the rest of the addon's per-request work.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from addons.core.decision import Decision

_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line. Fields whose value is None are left out."""
    record = {"ts": round(time.time(), 3), "event": event}
    record.update((k, v) for k, v in fields.items() if v is not None)
    line = _encode(record) + "\n"
    try:
        sys.stdout.write(line)
        sys.stdout.flush()
    except (OSError, ValueError):  # stdout closed or gone: the decision stands, unlogged
        pass


# mitmproxy logs these at info for every request whose body streams: every request here, as the
# addon streams all bodies. In a sidecar's log they are per-request noise, and formatting and
# writing them cost 2% of the keep-alive CPU. At debug verbosity they still show.
_SERVER_LOGGER = "mitmproxy.proxy.server"
PER_REQUEST_NOTICES = ("Streaming request to ", "Streaming response from ")


def demote_per_request_notice(record: logging.LogRecord) -> bool:
    """A logger filter: mitmproxy's per-request streaming notices become debug records."""
    if (
        record.levelno == logging.INFO
        and isinstance(record.msg, str)
        and record.msg.startswith(PER_REQUEST_NOTICES)
    ):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return True


def demote_per_request_notices(on: bool) -> None:
    logger = logging.getLogger(_SERVER_LOGGER)
    if on:
        logger.addFilter(demote_per_request_notice)
    else:
        logger.removeFilter(demote_per_request_notice)


@dataclass
class DecisionMetrics:
    """Decisions by result and reason: the allowlist, the protocol gate and the head limits
    count into one of these."""

    decisions: Counter[tuple[bool, str]] = field(default_factory=Counter)
    # Report mode: let through, but the policy would have denied it for this reason.
    would_deny: Counter[str] = field(default_factory=Counter)

    def count(self, decision: Decision) -> None:
        self.decisions[(decision.allow, decision.reason)] += 1
        if decision.would_deny:
            self.would_deny[decision.would_deny] += 1

    def render(self) -> str:
        lines = [
            "# HELP auth_proxy_decisions_total Proxy decisions by result and reason.",
            "# TYPE auth_proxy_decisions_total counter",
        ]
        for (allow, reason), count in sorted(self.decisions.items()):
            result = "allow" if allow else "deny"
            lines.append(
                f'auth_proxy_decisions_total{{result="{result}",reason="{reason}"}} {count}'
            )
        lines += [
            "# HELP auth_proxy_report_would_deny_total Decisions report mode let through that "
            "the policy would deny, by reason.",
            "# TYPE auth_proxy_report_would_deny_total counter",
        ]
        for reason, count in sorted(self.would_deny.items()):
            lines.append(f'auth_proxy_report_would_deny_total{{reason="{reason}"}} {count}')
        return "\n".join(lines) + "\n"
