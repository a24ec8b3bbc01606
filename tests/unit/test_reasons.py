"""The reasons table: one spelling per reason, and the README's copy of it in step."""

from __future__ import annotations

from pathlib import Path

from addons.core import reasons

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_decisions_table_is_generated_from_the_reasons() -> None:
    text = README.read_text()
    start = text.index("<!-- reasons:start -->\n") + len("<!-- reasons:start -->\n")
    end = text.index("<!-- reasons:end -->")
    assert text[start:end] == reasons.markdown_table(), (
        "README.md's decisions table differs from addons/core/reasons.py. "
        "Fix: paste the output of `python -m addons.core.reasons` between the markers"
    )


def test_every_reason_is_spelled_once() -> None:
    names = [r.name for r in reasons.ALL]
    assert len(names) == len(set(names))
    assert reasons.BY_NAME["allowed"].kind is reasons.Kind.ALLOW


def test_faults_are_5xx_and_denials_are_4xx_or_closed() -> None:
    for reason in reasons.ALL:
        if reason.kind is reasons.Kind.FAULT:
            assert reason.status is not None and 500 <= reason.status < 600, reason
        elif reason.kind is reasons.Kind.DENIAL:
            assert reason.status is None or 400 <= reason.status < 600, reason
