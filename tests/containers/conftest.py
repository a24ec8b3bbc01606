"""Container tests. The engine and image fixtures (`docker`, `images`) live in
tests/support/docker_fixtures.py, registered for the whole session by tests/conftest.py, so the
container and e2e tests share one engine and one image build per pytest session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.docker_fixtures import LABEL, Docker, wait_for

HERE = Path(__file__).resolve().parent

__all__ = ["HERE", "LABEL", "Docker", "wait_for"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.containers)
