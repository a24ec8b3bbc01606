"""The sidecar image's lock (images/sidecar/requirements.lock, pip.lock) against pyproject.toml:
every line hashed, every pinned version inside pyproject's range, the lock's input the same
ranges. The image build (tests/containers) proves the hashes match the wheels it installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from images import lock

REPO = Path(__file__).resolve().parents[2]
LOCKS = {"requirements.lock": lock.LOCK, "pip.lock": lock.PIP_LOCK}
# The libraries whose internals the addons rely on: the image must hold exactly one version.
MUST_BE_LOCKED = ("mitmproxy", "pyopenssl", "h2", "cryptography", "pyyaml")
_PIN_LINE = re.compile(r"^[a-z0-9][a-z0-9-]*==[A-Za-z0-9.+!]+ \\$")
_HASH_LINE = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def _pyproject_ranges() -> dict[str, SpecifierSet]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [Requirement(text) for text in data["project"]["dependencies"]]
    return {lock.normalize(r.name): r.specifier for r in reqs}


def _requirements_in() -> dict[str, SpecifierSet]:
    lines = lock.REQUIREMENTS_IN.read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {lock.normalize(r.name): r.specifier for r in reqs}


PINS = lock.parse_lock(lock.LOCK.read_text())
RANGES = _pyproject_ranges()


@pytest.mark.parametrize("path", LOCKS.values(), ids=LOCKS.keys())
def test_every_lock_line_is_a_pin_or_its_hash(path: Path) -> None:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines, f"{path} pins nothing"
    for before, line in zip(["", *lines], lines, strict=False):
        if _PIN_LINE.match(line):
            assert not _PIN_LINE.match(before), f"{path}: {before!r} has no hash"
        else:
            assert _HASH_LINE.match(line), f"{path}: {line!r} is neither a pin nor a hash"
    assert not _PIN_LINE.match(lines[-1]), f"{path}: {lines[-1]!r} has no hash"
    assert "python -m images.lock" in path.read_text().split("\n", 2)[1], "regeneration command"


@pytest.mark.parametrize("path", LOCKS.values(), ids=LOCKS.keys())
def test_every_pin_has_a_sha256_hash(path: Path) -> None:
    pins = lock.parse_lock(path.read_text())
    assert pins
    for pin in pins.values():
        assert pin.hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes), pin


@pytest.mark.parametrize("name", sorted(set(RANGES) & set(PINS)), ids=str)
def test_locked_version_is_inside_pyprojects_range(name: str) -> None:
    assert RANGES[name].contains(PINS[name].version, prereleases=True), (
        f"{name}=={PINS[name].version} in images/sidecar/requirements.lock is outside "
        f"pyproject.toml's {name}{RANGES[name]}. Fix: align the ranges, then "
        f"`{lock.COMMAND}`"
    )


@pytest.mark.parametrize("name", MUST_BE_LOCKED, ids=str)
def test_the_libraries_the_addons_use_are_locked_and_ranged(name: str) -> None:
    assert name in PINS, f"{name} is not in images/sidecar/requirements.lock"
    assert name in RANGES, f"{name} has no range in pyproject.toml's dependencies"
    assert RANGES[name], f"{name} is unbounded in pyproject.toml"


def test_the_locks_input_has_pyprojects_ranges() -> None:
    wanted = _requirements_in()
    assert wanted, "images/sidecar/requirements.in is empty"
    for name, spec in wanted.items():
        assert RANGES.get(name) == spec, (
            f"requirements.in says {name}{spec}, pyproject.toml {name}{RANGES.get(name)}"
        )


def test_pip_is_pinned_apart_from_the_runtime() -> None:
    # pip runs from its wheel in the build; listed in requirements.lock it would be installed.
    assert "pip" not in PINS
    assert list(lock.parse_lock(lock.PIP_LOCK.read_text())) == ["pip"]


# --- the parser: what it accepts and refuses ------------------------------------------------------

HASH_A, HASH_B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"h2==4.4.1 --hash=sha256:{HASH_A}\n", {"h2": ("4.4.1", {HASH_A})}),
        (
            f"# c\nPyYAML==6.0.4 \\\n    --hash=sha256:{HASH_A} \\\n    --hash=sha256:{HASH_B}\n",
            {"pyyaml": ("6.0.4", {HASH_A, HASH_B})},
        ),
        (
            f"ruamel.yaml==0.19.1 \\\n    --hash=sha256:{HASH_A}\n\nx==1 --hash=sha256:{HASH_B}",
            {"ruamel-yaml": ("0.19.1", {HASH_A}), "x": ("1", {HASH_B})},
        ),
    ],
    ids=["one-line", "continued-two-hashes", "dotted-name-and-blank-line"],
)
def test_parse_lock_accepts(text: str, expected: dict) -> None:
    got = {name: (p.version, set(p.hashes)) for name, p in lock.parse_lock(text).items()}
    assert got == expected


@pytest.mark.parametrize(
    "text",
    [
        "h2==4.4.1\n",
        "h2>=4.4 --hash=sha256:" + HASH_A,
        "h2==4.4.1 --hash=md5:" + "a" * 32,
        "h2==4.4.1 --hash=sha256:" + "a" * 63,
        f"h2==4.4.1 \\\n    --hash=sha256:{HASH_A}\nh2==4.4.0 --hash=sha256:{HASH_B}",
        f"h2==4.4.1 --hash=sha256:{HASH_A}\nmitmproxy==12.3.1\n",
    ],
    ids=["no-hash", "range", "md5", "short-hash", "pinned-twice", "second-unhashed"],
)
def test_parse_lock_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"lock entry"):
        lock.parse_lock(text)
