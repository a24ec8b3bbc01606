"""The patch registry: the one way this project changes a dependency's internals.

Each `Patch` names its target (module and qualified name), the SHA-256 of the upstream source it
was written against, and its replacement. `apply` checks the installed source first:

- an optional patch (speed, memory) whose target changed is not applied: the library's own
  behaviour stays, and a warning names the patch;
- a required patch (a security fix) whose target changed stops the proxy at start: running
  without it would reopen the hole it closes.

`tests/unit/test_patches.py` fails when any recorded hash differs from the installed library, so
an upgrade can neither drop a patch silently nor have a copied function undo an upstream fix.
Nothing here runs at import: `apply` is called from `main()` or an addon's `running()`.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class Scope(enum.Enum):
    RUNTIME = "auth-proxy only"  # `mitmdump -s addons/allowlist.py` runs without it
    BOTH = "both runtimes"  # installed by the addon, so mitmdump gets it too


class PatchRefused(RuntimeError):
    """A required patch cannot be applied to the installed library."""


@dataclass(frozen=True)
class Patch:
    name: str
    target: str  # "package.module:Qualified.name": the code the patch was written against
    source_sha256: str  # of inspect.getsource(target), as installed when the patch was written
    replacement: Any  # None: the target is relied upon as recorded, not replaced
    why: str  # why, and what it gained (measured), in one sentence
    scope: Scope = Scope.RUNTIME
    required: bool = False
    # The attribute replaced, when it is not `target` itself (a module global the target reads).
    attribute: str | None = None

    @property
    def replaces(self) -> str:
        return self.attribute or self.target


def resolve(spec: str) -> tuple[Any, str, Any]:
    """(owner, attribute name, current value) for "module:Qualified.name"."""
    module_name, _, qualname = spec.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name, getattr(owner, name)


def source_hash(spec: str) -> str:
    _, _, target = resolve(spec)
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()


_ORIGINALS: dict[str, Any] = {}  # replaces -> the value before the first patch


def matches(patch: Patch) -> bool:
    """Whether the installed target is the source the patch was written against."""
    spec = patch.target
    if spec in _ORIGINALS:  # patched already: hash the upstream code, not ours
        return hashlib.sha256(inspect.getsource(_ORIGINALS[spec]).encode()).hexdigest() == (
            patch.source_sha256
        )
    return source_hash(spec) == patch.source_sha256


def apply(patches: Iterable[Patch], warn: Callable[[str], None] = logger.warning) -> list[str]:
    """Apply each patch whose target is as recorded; returns the names applied. Idempotent."""
    applied = []
    for patch in patches:
        if not matches(patch):
            message = (
                f"patch {patch.name!r} not applied: the installed source of "
                f"{patch.target} differs from the one it was written against ({patch.why})"
            )
            if patch.required:
                raise PatchRefused(
                    f"{message}. It is a security fix, so the proxy does not start without it. "
                    "Fix: install the pinned versions (images/sidecar/requirements.lock), or "
                    "port the patch and record the new hash"
                )
            warn(message)
            continue
        if patch.replacement is None or patch.replaces in _ORIGINALS:  # checked; or applied
            applied.append(patch.name)
            continue
        owner, name, current = resolve(patch.replaces)
        _ORIGINALS.setdefault(patch.replaces, current)
        if patch.replaces != patch.target:
            _ORIGINALS.setdefault(patch.target, resolve(patch.target)[2])
        setattr(owner, name, patch.replacement)
        applied.append(patch.name)
    return applied


def applied(spec: str) -> bool:
    """Whether a patch replaced the attribute `spec` in this process."""
    return spec in _ORIGINALS


def original(spec: str) -> Any:
    """The upstream value of a patched attribute (for a replacement that calls through)."""
    return _ORIGINALS[spec] if spec in _ORIGINALS else resolve(spec)[2]


def revert(patches: Iterable[Patch]) -> None:
    """Put the upstream values back (tests)."""
    for patch in patches:
        if patch.replaces in _ORIGINALS:
            owner, name, _ = resolve(patch.replaces)
            setattr(owner, name, _ORIGINALS.pop(patch.replaces))
        _ORIGINALS.pop(patch.target, None)
