"""The policy in force: loaded from the `allowlist` file and `allowed_domains`, followed for
changes, and reloaded without ever widening access on a bad file.

At start a policy that fails to load stops the proxy (mitmproxy exits on an OptionsError). A
reload that fails keeps the last good policy and says why in the log and in /readyz. Whoever
needs to act on a new policy subscribes to it; nothing else reads this addon's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from mitmproxy import ctx, exceptions

from addons import events, policy, public_suffixes
from addons.policy import Policy, PolicyError
from addons.reloader import PolicyWatcher

logger = logging.getLogger(__name__)

NAME = "policysource"
REPORT_WARNING = (
    "REPORT MODE: the policy denies nothing it would deny by name, port or rules; "
    "see would_deny in the logs"
)


def announce(current: Policy | None) -> None:
    """Say loudly, at start-up and on every reload, what an operator must not miss."""
    if current is None:
        return
    if current.reporting:
        logger.warning(f"policy {current.source}: {REPORT_WARNING}")
    for warning in current.warnings:
        logger.warning(f"policy {current.source}: {warning}")


class PolicySource:
    name = NAME

    def __init__(self) -> None:
        self.current: Policy | None = None
        self.reload_error: str | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._watcher: PolicyWatcher | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` after every reload that changed the policy in force."""
        self._listeners.append(on_change)

    def load(self, loader) -> None:
        # Help texts are single paragraphs: mitmproxy compares them verbatim when a script
        # reloads, and a mismatch resets the option to its default.
        loader.add_option(
            "allowlist",
            str,
            "",
            "Policy file (YAML): 'version: v1', 'allowed_domains: [httpbin.org, \"*.example.com\"]',"
            " optional 'allowed_ports: [443, 80]' and 'allow_ranges: [CIDR, ...]'. Changes take"
            " effect within seconds. Without a policy every request is denied.",
        )
        loader.add_option(
            "allowed_domains",
            Sequence[str],
            [],
            "Extra allowed hosts, in the policy's syntax: 'httpbin.org', or '*.example.com' for"
            " any subdomain. Repeat to add more: --set allowed_domains=httpbin.org"
            " --set allowed_domains=*.example.com",
        )

    def configure(self, updated: set[str]) -> None:
        if "allowlist" in updated or "allowed_domains" in updated:
            try:
                self.current = self._load()
            except PolicyError as e:
                raise exceptions.OptionsError(str(e)) from None
            self.reload_error = None
            announce(self.current)
            if self._watcher is not None:
                self._restart_watcher()

    def running(self) -> None:
        if self.current is None:
            logger.warning("no allowlist configured: every request will be denied")
        self._restart_watcher()

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def _load(self) -> Policy | None:
        extra = tuple(ctx.options.allowed_domains)
        if ctx.options.allowlist:
            return policy.load_policy(ctx.options.allowlist, extra)
        if extra:
            return policy.policy_from_domains(extra)
        return None

    def _restart_watcher(self) -> None:
        self.done()
        if ctx.options.allowlist:
            path, extra = ctx.options.allowlist, tuple(ctx.options.allowed_domains)
            # The watcher loads in a thread, within a deadline: the load reads no options.
            self._watcher = PolicyWatcher(
                path, lambda: policy.load_policy(path, extra), self.reload
            )
            self._watcher.start()

    def reload(self, loaded: policy.Loader | None = None) -> None:
        """Apply a reload: `loaded()` (the watcher's outcome) returns the new policy or raises
        PolicyError; without it, the policy is loaded here and now."""
        try:
            new = (loaded or self._load)()
        except PolicyError as e:
            self.reload_error = str(e)
            self.reload_errors += 1
            events.emit("policy-reload", ok=False, error=str(e))
            logger.error(f"policy reload failed, keeping the last good policy: {e}")
            return
        self.current, self.reload_error = new, None
        self.reloads += 1
        announce(new)
        for on_change in self._listeners:
            on_change()
        events.emit(
            "policy-reload",
            ok=True,
            source=new.source if new else None,
            entries=new.entry_count if new else 0,
            mode=new.mode if new else None,
        )

    def readiness(self) -> tuple[bool, dict[str, object]]:
        current = self.current
        detail: dict[str, object] = {
            "policy": current.source if current else None,
            "entries": current.entry_count if current else 0,
            "last_reload_error": self.reload_error,
            "mode": current.mode if current else None,
            "warnings": list(current.warnings) if current else [],
            # The Public Suffix List the wildcard guard used (bundled; never downloaded).
            "public_suffix_list": public_suffixes.list_date(),
        }
        if current is not None and current.reporting:
            # Still ready: report mode is a choice, not a fault; but nobody reading this misses it.
            detail["warning"] = REPORT_WARNING
        if current is None:
            detail["error"] = (
                "no policy loaded: every request is denied. "
                "Fix: --set allowlist=FILE or --set allowed_domains=HOST"
            )
        return current is not None, detail

    def render_metrics(self) -> str:
        current = self.current
        lines = [
            "# HELP auth_proxy_policy_entries Entries in the policy in force.",
            "# TYPE auth_proxy_policy_entries gauge",
            f"auth_proxy_policy_entries {current.entry_count if current else 0}",
            "# HELP auth_proxy_policy_reloads_total Policy reloads that took effect.",
            "# TYPE auth_proxy_policy_reloads_total counter",
            f"auth_proxy_policy_reloads_total {self.reloads}",
            "# HELP auth_proxy_policy_reload_errors_total Policy reloads that failed.",
            "# TYPE auth_proxy_policy_reload_errors_total counter",
            f"auth_proxy_policy_reload_errors_total {self.reload_errors}",
        ]
        return "\n".join(lines) + "\n"
