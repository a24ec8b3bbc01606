"""Every registered patch, for the hash test and docs/internals.md."""

from __future__ import annotations

from addons.patches.registry import Patch


def all_patches() -> list[Patch]:
    from addons.patches import (
        connection_close,
        head_limits,
        inline_hooks,
        renderers,
        tls_contexts,
        transparent,
        tuning,
    )

    return [
        *head_limits.patches(),
        *renderers.patches(),
        *tuning.patches(),
        *tls_contexts.patches(),
        *inline_hooks.patches(),
        *transparent.patches(),
        *connection_close.patches(),
    ]


def markdown_table() -> str:
    """docs/internals.md's table of patches."""
    lines = ["| patch | target | where | if the target changed | why |", "|---|---|---|---|---|"]
    for patch in all_patches():
        kind = "replaced" if patch.replacement is not None else "relied on"
        changed = "refuse to start" if patch.required else "skip, warn"
        where = patch.scope.value
        lines.append(
            f"| `{patch.name}` | `{patch.target}` ({kind}) | {where} | {changed} | {patch.why} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
