"""The open-file limit: raised at start so that the connection cap, and not the descriptors,
binds; when the hard limit cannot hold that, the cap is lowered to what fits."""

from __future__ import annotations

import logging
import resource

from addons import health

logger = logging.getLogger(__name__)

# File descriptors per admitted client: its own socket and one upstream, with room to spare.
FDS_PER_CONNECTION = 3
# Connections over the cap are refused at their first request (a 503 the client can read), but
# only this many may be open at once, as a multiple of the cap; beyond it they are closed unread.
CEILING_FACTOR = 2
# Descriptors kept free of client connections: the process at rest (about 10: stdio, listeners,
# the event loop, the policy watcher), and asyncio's accept burst on the proxy port (it accepts up
# to 100 connections per wakeup before any hook can close one), with room to spare.
RESERVED_FDS = 256
# The health port: its connections, and the burst asyncio may accept before its cap closes them.
HEALTH_FDS = health.MAX_CONNECTIONS + health.BACKLOG


def fds_wanted(connections: int) -> int:
    """Descriptors that `connections` admitted clients can hold, with everything around them."""
    refused = connections * (CEILING_FACTOR - 1)
    return connections * FDS_PER_CONNECTION + refused + HEALTH_FDS + RESERVED_FDS


def cap_that_fits(limit: int) -> int:
    """The largest cap whose descriptors fit under `limit` (at least 1)."""
    spare = limit - HEALTH_FDS - RESERVED_FDS
    return max(1, spare // (FDS_PER_CONNECTION + CEILING_FACTOR - 1))


def raise_fd_limit(connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) so the cap, not the fds, binds.

    Returns the cap to enforce: `connections`, or less when the limit cannot hold that many."""
    want = fds_wanted(connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return connections
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        logger.warning(f"cannot raise the open-file limit to {target}: {e}")
        target = soft
    if target >= want:
        return connections
    cap = min(connections, cap_that_fits(target))
    logger.warning(
        f"open-file limit {target} is too low for max_connections={connections} "
        f"(it needs {want}); admitting at most {cap} connections. "
        "Fix: raise `ulimit -n` (the hard limit), or lower --set max_connections"
    )
    return cap
