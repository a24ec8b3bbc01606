"""Reading a policy file without trusting it, and parsing its YAML strictly.

The policy path is a mount the proxy does not control: it may be a FIFO (an open would block
the event loop for good), a device, a symlink to a secret or to a huge file, or YAML built to
expand (aliases) or to mislead (a duplicate key silently replacing the first). Everything here
is bounded: only regular files, a size cap, a node cap, no aliases, and error messages that
quote at most a short escaped excerpt of what the file holds.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError

# A 10,000-entry policy is about 250 KiB (700 KiB with 60-character names): 4 MiB fits it easily
# and bounds both the read and the parse (pure-Python YAML reads about 1-3 MiB a second).
MAX_POLICY_BYTES = 4 * 1024 * 1024
# YAML values (nodes) in one document. Each costs about 600 bytes while parsing, so a file of
# short flow items (`[a,a,a,...]`) would otherwise turn 4 MiB into over 1 GiB; a 10,000-entry
# policy has about 10,000 nodes.
MAX_POLICY_NODES = 50_000
# A policy is three levels deep; anything much deeper is hostile (and the parser recurses).
MAX_POLICY_DEPTH = 32
# Longest excerpt of file content that an error message may quote (escaped characters).
EXCERPT_CHARS = 40

_READ_CHUNK = 256 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"


class PolicyError(ValueError):
    """A policy that cannot be loaded. The message names the source, the entry and the fix."""


# -- excerpts ------------------------------------------------------------------------------------

_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
_LONG_QUOTE = re.compile(r"'[^']{9,}'|\"[^\"]{9,}\"")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Inside a quoted excerpt, the quote and the backslash are escaped too, so it reads unambiguously.
_QUOTED_ESCAPES = {**_ESCAPES, "\\": "\\\\", "'": "\\'"}


def _escape_char(ch: str, escapes: dict[str, str]) -> str:
    if ch in escapes:
        return escapes[ch]
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _clip(text: str, limit: int, escapes: dict[str, str]) -> tuple[str, bool]:
    """`text` backslash-escaped to printable ASCII, at most `limit` characters; and whether it
    was cut short."""
    pieces: list[str] = []
    used = 0
    for ch in text:
        piece = _escape_char(ch, escapes)
        if used + len(piece) > limit:
            return "".join(pieces), True
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces), False


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, escaped rendering of a value read from a policy, safe for logs and /readyz.

    Strings are quoted like repr() but escaped to ASCII and cut at `limit` characters (marked
    "...(truncated, N chars)"); small scalars print as themselves; anything else by its type only.
    """
    if isinstance(value, str):
        body, cut = _clip(value, limit, _QUOTED_ESCAPES)
        return f"'{body}'...(truncated, {len(value)} chars)" if cut else f"'{body}'"
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return (
            str(value) if value.bit_length() <= 64 else f"<an integer of {value.bit_length()} bits>"
        )
    return f"<{type(value).__name__}>"


def key_excerpt(key: object) -> str:
    """A mapping key for an error message: quoted only when it looks like a key name.

    A file that is not a policy (a symlink to /etc/shadow, say) parses as a mapping whose keys
    are whole lines of it; those are described, never quoted."""
    if isinstance(key, str):
        return excerpt(key) if _KEY_NAME.fullmatch(key) else f"<{len(key)} chars, not a name>"
    return excerpt(key)


def clipped(text: str, limit: int = 80) -> str:
    """Free text that may quote file content (a YAML problem), escaped and cut short; quoted
    parts longer than a few characters (a tag, a token) are left out."""
    body, cut = _clip(_LONG_QUOTE.sub("'...'", text), limit, _ESCAPES)
    return f"{body}...(truncated)" if cut else body


# -- reading ---------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: str, mode: int) -> PolicyError:
    return PolicyError(
        f"{path}: the policy path is {_kind(mode)}, not a regular file. "
        "Fix: point it at a YAML file (a symlink to one, as ConfigMap volumes use, is fine)"
    )


def _too_big(path: str, size: int | str) -> PolicyError:
    return PolicyError(
        f"{path}: the policy file is {size} bytes, over the cap of {MAX_POLICY_BYTES} bytes. "
        "Fix: use wildcards ('*.example.com') instead of listing many names, or check that the "
        "path names the policy and not another file"
    )


def _unreadable(path: str, e: OSError) -> PolicyError:
    return PolicyError(
        f"{path}: cannot read the policy file ({e.strerror or type(e).__name__}). "
        "Fix: check the path and its permissions"
    )


def _read_capped(fd: int, path: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        # Read at most one byte past the cap: a file that grows after fstat is still caught.
        chunk = os.read(fd, min(_READ_CHUNK, MAX_POLICY_BYTES + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_POLICY_BYTES:
            raise _too_big(path, f"more than {MAX_POLICY_BYTES}")


def read_policy_text(path: str | Path) -> str:
    """The text of the policy file at `path`: a regular file (symlinks followed), at most
    MAX_POLICY_BYTES, UTF-8. Never blocks on a FIFO or device. Raises PolicyError."""
    name = str(path)
    try:
        # Checked before opening too, so a device node is never even opened.
        pre = os.stat(name)
        if not stat.S_ISREG(pre.st_mode):
            raise _not_regular(name, pre.st_mode)
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _unreadable(name, e) from None
    try:
        # The file opened is what counts: the path may have been swapped since the stat above.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(name, st.st_mode)
        if st.st_size > MAX_POLICY_BYTES:
            raise _too_big(name, st.st_size)
        data = _read_capped(fd, name)
    except OSError as e:
        raise _unreadable(name, e) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(
            f"{name}: the policy file is not UTF-8 text (invalid byte at offset {e.start}). "
            "Fix: save it as UTF-8, and check that the path names the policy"
        ) from None


# -- parsing -------------------------------------------------------------------------------------


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that a policy may not use; carries its own fix."""

    def __init__(self, problem: str, node_or_event: object, fix: str) -> None:
        super().__init__(problem=problem, problem_mark=getattr(node_or_event, "start_mark", None))
        self.fix = fix


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases or merge keys, with duplicate keys an error and the
    size of the document bounded in nodes and depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                "YAML anchors and aliases (&name, *name) are not supported",
                event,
                "write each entry out in full",
            )
        self._nodes += 1
        if self._nodes > MAX_POLICY_NODES:
            raise _Refused(
                f"more than {MAX_POLICY_NODES} YAML values",
                event,
                "use wildcards ('*.example.com') instead of listing many names",
            )
        if self._depth >= MAX_POLICY_DEPTH:
            raise _Refused(
                f"nested deeper than {MAX_POLICY_DEPTH} levels",
                event,
                "a policy is a mapping of lists: 'version', 'allowed_domains', ...",
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, MappingNode):
            self._check_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _check_keys(self, node: MappingNode) -> None:
        seen: dict[object, Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _Refused(
                    "YAML merge keys (<<) are not supported", key_node, "write the keys out"
                )
            if not isinstance(key_node, ScalarNode):
                continue  # a complex key: the constructor refuses it as unhashable
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise _Refused(
                    f"duplicate key {key_excerpt(key)} (first at line {first.start_mark.line + 1})",
                    key_node,
                    "keep one of them, with the entries of both",
                )


def _where(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_error(source: str, e: yaml.YAMLError) -> PolicyError:
    # yaml's own messages quote the offending line; only the problem and position are kept.
    if isinstance(e, _Refused):
        return PolicyError(f"{source}{_where(e.problem_mark)}: {e.problem}. Fix: {e.fix}")
    if isinstance(e, ReaderError):
        character = e.character if isinstance(e.character, int) else ord(e.character or b"\0")
        return PolicyError(
            f"{source}: not valid YAML at offset {e.position}: control character "
            f"#x{character:04x} is not allowed. Fix: remove it, and check that the path names "
            "the policy file and not another one"
        )
    if isinstance(e, yaml.MarkedYAMLError):
        problem = clipped(e.problem or e.context or "malformed")
        where = _where(e.problem_mark or e.context_mark)
    else:
        problem, where = type(e).__name__, ""
    return PolicyError(
        f"{source}: not valid YAML{where}: {problem}. Fix: check the indentation and quotes"
    )


def load_yaml(text: str, source: str) -> Any:
    """The one YAML document in `text`, parsed strictly. Raises PolicyError naming `source`."""
    loader: StrictLoader | None = None
    try:
        loader = StrictLoader(text)  # checks the characters already
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise _yaml_error(source, e) from None
    except Exception:
        # A value its tag cannot hold (`!!int text`, `!!timestamp text`, a date out of range, an
        # integer of thousands of digits) fails inside PyYAML with ValueError, AttributeError and
        # others; their text would quote the value.
        raise PolicyError(
            f"{source}: not valid YAML: a value cannot be read as its type. "
            "Fix: quote values, and drop explicit tags such as !!int"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
