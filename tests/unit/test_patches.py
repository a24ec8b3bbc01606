"""The patch registry: every recorded hash matches the installed libraries, a changed target is
skipped with a warning (or, for a security fix, refused), and the proxy still serves."""

from __future__ import annotations

import dataclasses

import pytest

from addons.patches import registry
from addons.patches.catalogue import all_patches
from addons.patches.registry import Patch, PatchRefused

PATCHES = all_patches()


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_recorded_hash_matches_the_installed_library(patch: Patch) -> None:
    assert registry.matches(patch), (
        f"{patch.target} changed since the patch {patch.name!r} was written: port it to the new "
        f"source and record its hash ({registry.source_hash(patch.target)})"
    )


def test_names_are_unique() -> None:
    names = [p.name for p in PATCHES]
    assert len(names) == len(set(names))


class Target:
    def method(self) -> str:
        return "upstream"


def replaced(self) -> str:
    return "patched"


def test_a_changed_target_is_skipped_with_a_warning_or_refused() -> None:
    spec = f"{__name__}:Target.method"
    good = Patch("demo", spec, registry.source_hash(spec), replaced, "a demo")
    stale = dataclasses.replace(good, source_sha256="0" * 64)
    warnings: list[str] = []
    assert registry.apply([stale], warn=warnings.append) == []
    assert Target().method() == "upstream"
    assert "demo" in warnings[0] and spec in warnings[0]
    with pytest.raises(PatchRefused, match="security fix"):
        registry.apply([dataclasses.replace(stale, required=True)])
    try:
        assert registry.apply([good]) == ["demo"]
        assert Target().method() == "patched"
    finally:
        registry.revert([good])
    assert Target().method() == "upstream"


def test_docs_table_lists_every_patch() -> None:
    from pathlib import Path

    from addons.patches.catalogue import markdown_table

    docs = (Path(__file__).resolve().parents[2] / "docs" / "internals.md").read_text()
    start = docs.index("<!-- patches:start -->\n") + len("<!-- patches:start -->\n")
    assert docs[start : docs.index("<!-- patches:end -->")] == markdown_table(), (
        "docs/internals.md's patch table is stale. Fix: paste the output of "
        "`python -m addons.patches.catalogue` between its markers"
    )
