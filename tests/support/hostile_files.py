"""Hostile policy files shared by the unit, integration and stress tests."""

from __future__ import annotations

import itertools


def alias_bomb(levels: int) -> str:
    """A few hundred bytes that a naive loader expands to 9**levels strings, all inside the first
    allowed_domains entry (so an error message that formats the entry formats all of them)."""
    names = "abcdefghij"[:levels]
    nodes = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    nodes += [f"&{n} [{','.join([f'*{p}'] * 9)}]" for p, n in itertools.pairwise(names)]
    return "version: v1\nallowed_domains:\n  - [" + ", ".join(nodes) + "]\n"
