"""The e2e upstream's WSGI app: a git repository at /repo.git (dulwich), a tiny PyPI index and
npm registry (tests/e2e/package_index.py), httpbin for the rest.

Served by gunicorn over TLS as httpbin.org inside the upstream's own network namespace:
    gunicorn 'tests.e2e.httpbin_git_app:make_app()'   (E2E_GIT_REPO names the repository)
"""

from __future__ import annotations

import os

import httpbin
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain

from tests.e2e import package_index

GIT_PATH = "/repo.git"


def make_app():
    repo = Repo(os.environ["E2E_GIT_REPO"])
    # Smart HTTP (info/refs, git-upload-pack) for /repo.git/...; every other path is httpbin's.
    chain = make_wsgi_chain(DictBackend({GIT_PATH: repo}), fallback_app=httpbin.app)
    return package_index.wrap(chain)
