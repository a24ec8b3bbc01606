"""Every registered patch, for the hash test and docs/internals.md."""

from __future__ import annotations

from addons.patches.registry import Patch


def all_patches() -> list[Patch]:
    from addons.patches import inline_hooks, renderers, tuning

    return [*tuning.patches(), *inline_hooks.patches(), *renderers.patches()]
