"""The offline base images: a stand-in made from an older recipe is noticed and imported again,
and the sidecar image carries nft and the egress lock's launcher."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from images import base
from images.base import BASE_LABEL, BASES, STAND_IN, BaseSpec, base_state, spec_digest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = BASES["python:3.13-slim-trixie"]
OLD_PYTHON = dataclasses.replace(PYTHON, packages=("python3", "ca-certificates"))


def test_the_sidecar_base_has_nftables() -> None:
    assert "nftables" in PYTHON.packages


def test_the_digest_follows_the_recipe_not_the_package_order() -> None:
    assert spec_digest(PYTHON) != spec_digest(OLD_PYTHON)
    shuffled = dataclasses.replace(PYTHON, packages=tuple(reversed(PYTHON.packages)))
    assert spec_digest(shuffled) == spec_digest(PYTHON)
    other_changes = dataclasses.replace(PYTHON, changes=("ENV LANG=C",))
    assert spec_digest(other_changes) != spec_digest(PYTHON)


@pytest.mark.parametrize(
    ("labels", "comment", "state"),
    [
        ({BASE_LABEL: spec_digest(PYTHON)}, f"{STAND_IN}: x", "current"),
        ({BASE_LABEL: spec_digest(OLD_PYTHON)}, f"{STAND_IN}: x", "stale"),
        ({BASE_LABEL: spec_digest(OLD_PYTHON)}, "", "stale"),
        (None, f"{STAND_IN}: Debian trixie minbase + python3 (3.13) + ca-certificates", "stale"),
        ({}, f"{STAND_IN}: x", "stale"),
        (None, "", "foreign"),
        (None, None, "foreign"),
        ({"org.opencontainers.image.version": "3.13"}, "buildkit.dockerfile.v0", "foreign"),
    ],
    ids=["current", "older-recipe", "older-recipe-no-comment", "unlabelled-stand-in",
         "empty-labels-stand-in", "registry-image", "registry-no-comment", "registry-labelled"],
)  # fmt: skip
def test_base_state(labels: dict | None, comment: str | None, state: str) -> None:
    assert base_state(PYTHON, labels, comment) == state


def test_the_sidecar_dockerfile_installs_nft_only_when_absent_and_the_launcher() -> None:
    text = (ROOT / "images" / "sidecar" / "Dockerfile").read_text()
    assert "command -v nft || (apt-get update && apt-get install -y" in text
    assert "nftables" in text
    assert "'from addons.egress.lock import main'" in text
    assert "/opt/venv/bin/auth-proxy-lock-egress" in text


def test_the_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'auth-proxy-lock-egress = "addons.egress.lock:main"' in text


class FakeEngine:
    """Answers `docker image inspect` from `images` and records every other docker call."""

    def __init__(self, images: dict[str, dict]) -> None:
        self.images = images
        self.calls: list[tuple[str, ...]] = []

    def docker(self, *args: str, check: bool = True, **_: object) -> subprocess.CompletedProcess:
        if args[:2] == ("image", "inspect"):
            found = self.images.get(args[2])
            out = json.dumps([found]) if found is not None else "[]"
            return subprocess.CompletedProcess(args, 0 if found is not None else 1, out, "")
        self.calls.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")


def _stand_in(spec: BaseSpec) -> dict:
    return {"Config": {"Labels": {BASE_LABEL: spec_digest(spec)}}, "Comment": f"{STAND_IN}: x"}


@pytest.mark.parametrize(
    ("engine_has", "outcome", "imports"),
    [
        (None, "imported", True),
        (_stand_in(PYTHON), "present", False),
        (_stand_in(OLD_PYTHON), "reimported", True),
        ({"Config": {"Labels": None}, "Comment": f"{STAND_IN}: old"}, "reimported", True),
        ({"Config": {"Labels": None}, "Comment": ""}, "present", False),
    ],
    ids=["absent", "current", "older-recipe", "unlabelled-stand-in", "registry-image"],
)
def test_ensure_base_imports_again_only_a_stale_stand_in(
    engine_has: dict | None,
    outcome: str,
    imports: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = PYTHON.ref
    monkeypatch.setattr(base, "rootfs_tarball", lambda spec, cache: tmp_path / "rootfs.tar")
    engine = FakeEngine({ref: engine_has} if engine_has else {})
    assert base.ensure_base(engine, ref, tmp_path) == outcome  # type: ignore[arg-type]
    imported = [c for c in engine.calls if c[0] == "import"]
    assert bool(imported) == imports
    if imports:
        assert f"LABEL {BASE_LABEL}={spec_digest(PYTHON)}" in imported[0]
        assert imported[0][-1] == ref


def test_ensure_base_refuses_an_unknown_absent_image(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no offline recipe"):
        base.ensure_base(FakeEngine({}), "nosuch:1", tmp_path)  # type: ignore[arg-type]
