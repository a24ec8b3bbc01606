"""The answer the core gives. Its own module so that addons.policy (which the core imports) can
return the same type without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str  # a reasons.* name
    rule: str | None = None  # the policy entry that matched
    # Allowed so far: resolve the host and decide again with its addresses as facts.
    needs_addresses: bool = False
    # Report mode: allowed, but the policy would have denied it for this reason.
    would_deny: str | None = None
