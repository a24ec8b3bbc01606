"""Request paths for `rules`: one documented normalization, and patterns matched against it.

A request is matched by its path only: the query string (from the first `?`) is never matched,
and an absolute-form target (`http://host/a`, as sent to a proxy) is matched by its path (`/a`).
The path is normalized the way RFC 3986 section 6.2.2 allows, in this order:

1. Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%7E` is `~`,
   `%41` is `A`); every other escape stays, with its hex in upper case (`%c3%a9` is `%C3%A9`).
2. `.` and `..` segments are removed (RFC 3986 section 5.2.4): `/a/./b` is `/a/b`, `/a/b/../c`
   is `/a/c`, `/a/b/..` is `/a/`.
3. Nothing else changes: case is kept (paths are case-sensitive), `;` parameters are ordinary
   characters, and a trailing slash is kept (`/a/` and `/a` are different paths).

A path that servers could read in more than one way is ambiguous, and a request with one is
denied on every host that has rules (never guessed): an encoded `/` (`%2F`), a backslash or
`%5C`, an encoded dot in a `.` or `..` segment (`%2e%2e`, `.%2E`), a `.` or `..` segment with `;`
parameters (`..;x`, which some servers treat as `..`), an escape of a control byte (`%00`-`%1F`,
`%7F`), an escape that is not `%` and two hex digits, an encoded `%` before two hex digits
(`%252F`, which a server that decodes twice reads as `%2F`), escapes that do not spell UTF-8
(`%C0%AE`, an overlong `.`), an empty segment (`//`, also at the start; a trailing `/` is not
one), a `..` that climbs above the root, a fragment (`#`), a character that must be
percent-encoded (space, `"`, `<`, `>`, `\\`, `^`, a backtick, `{`, `|`, `}`, `[`, `]`, a control
byte) and anything outside ASCII.

A path with `.` or `..` segments is also read two ways: servers that resolve them and servers that
do not. Such a request is allowed only when the rules allow it both ways: resolved, and as written
(with its dot segments as ordinary segments). Clients resolve dot segments before they send a
request, so ordinary traffic never meets this.

Patterns (`paths` in a rule) start with `/`; `*` matches any characters within one segment (never
a `/`; also none: `/a/*` matches `/a/`), and `**` as a whole segment matches zero or more whole
segments: `/org/**` matches `/org`, `/org/` and `/org/a/b`; `/a/**/b` matches `/a/b` and
`/a/x/y/b`. Every other character is literal, so `*` in a pattern can only ever mean a wildcard
(`%2A` matches an encoded `*`). A pattern is normalized like a path (`/~user` and `/%7Euser` are
the same pattern) and may not be ambiguous, nor hold `.` or `..` segments.

Matching walks segments left to right without backtracking (no regular expressions), so its cost
grows with the length of the path times the length of the pattern, whatever either holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar (less "%", which starts an escape) and "/": what a path may hold unencoded.
_RAW = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset("0123456789abcdefABCDEF")
_DOUBLE_ESCAPE = re.compile("%25[0-9A-Fa-f]{2}")
# A path of allowed characters and well-formed escapes: checked in C, then decoded.
_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_ESCAPE = re.compile("%[0-9A-Fa-f]{2}")
_SCHEME = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)
_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")
_PARAMS = re.compile(";|%3B")


class _Ambiguous(ValueError):
    """Why a path can be read more than one way, and what a pattern's author should write."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def request_path(target: bytes) -> str | None:
    """The path of a request target (`request.data.path`): origin-form `/a?q` or absolute-form
    `http://host/a?q`, without its query. None for authority-form, `*`, a fragment, or a target
    that is not visible ASCII (controls, spaces, other bytes)."""
    if not _VISIBLE_ASCII.fullmatch(target):
        return None
    text = target.decode("ascii")
    if not text.startswith("/"):
        absolute = _SCHEME.fullmatch(target)
        if absolute is None or absolute[1].lower() not in (b"http", b"https"):
            return None
        authority, rest = absolute[2], absolute[3].decode("ascii")
        # WHATWG parsers read "\" as "/" in an authority and take "http:///x" to name host x.
        if not authority or b"\\" in authority:
            return None
        text = rest if rest.startswith("/") else "/" + rest
    path = text.partition("?")[0]
    # A fragment is not part of a request target: one server strips it, another keeps it.
    return None if "#" in path else path


def _escape(path: str, at: int) -> int:
    """The byte a percent-escape at `at` spells."""
    digits = path[at + 1 : at + 3]
    if len(digits) != 2 or not set(digits) <= _HEX:
        raise _Ambiguous(
            "an invalid percent-escape", "write '%' as '%25', and escapes as '%' and two hex digits"
        )
    value = int(digits, 16)
    if value == 0x2F:
        raise _Ambiguous("an encoded '/' (%2F)", "write '/' between segments")
    if value == 0x5C:
        raise _Ambiguous("an encoded backslash (%5C)", "remove it")
    if value < 0x20 or value == 0x7F:
        raise _Ambiguous("an encoded control character", "remove it")
    return value


def _raw_problem(char: str) -> _Ambiguous:
    if char == "\\":
        return _Ambiguous("a backslash", "write '/' between segments")
    if char == "?":
        return _Ambiguous("a query ('?')", "remove it: the query string is never matched")
    if char == "#":
        return _Ambiguous("a fragment ('#')", "remove it")
    if not char.isascii():
        return _Ambiguous(
            "a character outside ASCII", "percent-encode it as UTF-8 (e.g. 'é' as '%C3%A9')"
        )
    if char.isprintable() and char != " ":
        return _Ambiguous(f"the character {char!r}", f"percent-encode it as '%{ord(char):02X}'")
    return _Ambiguous("a space or control character", "percent-encode a space as '%20'")


def _one_escape(match: re.Match[str]) -> str:
    value = _escape(match[0], 0)
    decoded = chr(value)
    # An encoded "." stays encoded until its segment shows it does not make a dot segment.
    return decoded if decoded in _UNRESERVED and decoded != "." else match[0].upper()


def _first_problem(path: str) -> _Ambiguous:
    """The first character or escape that keeps `path` from being read one way."""
    at = 0
    while at < len(path):
        if path[at] == "%":
            _escape(path, at)  # raises for a bad one
            at += 3
        elif path[at] in _RAW:
            at += 1
        else:
            return _raw_problem(path[at])
    return _Ambiguous("an unreadable path", "write it as RFC 3986 allows")  # not reached


def _decode(path: str) -> str:
    """Step 1 of the normalization (unreserved escapes decoded, others upper-cased), checking
    every ambiguity except climbing above the root; dot segments stay."""
    if not path.startswith("/"):
        raise _Ambiguous("no leading '/'", "start it with '/'")
    if not _PATH.fullmatch(path):
        raise _first_problem(path)
    if "%" not in path:
        text = path
    else:
        text = _ESCAPE.sub(_one_escape, path)
        if "%25" in text and _DOUBLE_ESCAPE.search(text):
            raise _Ambiguous(
                "an encoded '%' before two hex digits (%25XX), which a server that decodes "
                "twice reads as an escape",
                "remove it",
            )
        try:
            unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _Ambiguous(
                "percent-escapes that are not UTF-8", "encode characters as UTF-8"
            ) from None
    segments = text[1:].split("/")
    if "" in segments[:-1]:
        raise _Ambiguous("an empty segment ('//')", "write one '/' between segments")
    return "/" + "/".join(_segment(segment) for segment in segments)


def _segment(segment: str) -> str:
    if not segment.startswith((".", "%2E")):
        return segment.replace("%2E", ".") if "%" in segment else segment
    decoded = segment.replace("%2E", ".")
    head = _PARAMS.split(decoded, maxsplit=1)[0]
    if head in (".", ".."):
        if decoded != segment:
            raise _Ambiguous(
                "an encoded '.' (%2E) in a '.' or '..' segment", "write the path without it"
            )
        if head != decoded:
            raise _Ambiguous(
                "a '.' or '..' segment with ';' parameters, which some servers read as '..'",
                "remove it",
            )
    return decoded


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 over a path `_decode` accepted, except that climbing above the root is an
    error rather than ignored."""
    segments = path[1:].split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == "..":
                if not out:
                    raise _Ambiguous("a '..' that climbs above the root", "remove it")
                out.pop()
            if last:
                out.append("")  # "/a/b/.." is "/a/": the directory stays a directory
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalize(path: str) -> str | None:
    """The normalized path (see the module docstring), or None if it is ambiguous."""
    try:
        return _remove_dot_segments(_decode(path))
    except _Ambiguous:
        return None


def ambiguity(path: str) -> str | None:
    """Why `normalize` refuses `path`, in words that never quote it; None if it does not."""
    try:
        _remove_dot_segments(_decode(path))
    except _Ambiguous as e:
        return e.problem
    return None


def path_readings(target: bytes) -> tuple[str, ...] | None:
    """The normalized path of a request target, then, if it had dot segments, the path as
    written (percent-normalized, dot segments kept): every reading must be allowed. None if
    the path is ambiguous."""
    path = request_path(target)
    if path is None:
        return None
    try:
        written = _decode(path)
        resolved = _remove_dot_segments(written)
    except _Ambiguous:
        return None
    return (resolved,) if resolved == written else (resolved, written)


class _Glob:
    """One pattern segment holding `*`: its literal pieces, found left to right. Taking each
    middle piece at its first occurrence never loses a match (pieces have fixed lengths)."""

    __slots__ = ("first", "last", "least", "middle")

    def __init__(self, pieces: list[str]) -> None:
        self.first, *middle, self.last = pieces
        self.middle = tuple(middle)
        self.least = sum(len(piece) for piece in pieces)

    def __call__(self, segment: str) -> bool:
        if len(segment) < self.least:
            return False
        if not (segment.startswith(self.first) and segment.endswith(self.last)):
            return False
        at, end = len(self.first), len(segment) - len(self.last)
        for piece in self.middle:
            found = segment.find(piece, at, end)
            if found < 0:
                return False
            at = found + len(piece)
        return True


class _Literal(str):
    __slots__ = ()

    def __call__(self, segment: str) -> bool:
        return segment == self


_Run = tuple[_Literal | _Glob, ...]


def _fits(segments: list[str], at: int, run: _Run) -> bool:
    return all(match(segments[at + i]) for i, match in enumerate(run))


@dataclass(frozen=True)
class Pattern:
    """A compiled path pattern: `text` as written, `normalized` as matched."""

    text: str
    normalized: str
    # The runs of segment matchers between "**" segments: one run means no "**".
    _runs: tuple[_Run, ...] = field(repr=False, compare=False)

    def matches(self, normalized_path: str) -> bool:
        """Whether the whole path (as `normalize` returns it) matches; case-sensitive."""
        if not normalized_path.startswith("/"):
            return False
        segments = normalized_path[1:].split("/")
        if len(self._runs) == 1:
            only = self._runs[0]
            return len(segments) == len(only) and _fits(segments, 0, only)
        first, *middle, last = self._runs
        end = len(segments) - len(last)
        if end < len(first) + sum(len(run) for run in middle):
            return False
        if not (_fits(segments, 0, first) and _fits(segments, end, last)):
            return False
        at = len(first)
        # "**" between runs: each run at its first fit leaves the most room for the rest.
        for run in middle:
            fit = next((i for i in range(at, end - len(run) + 1) if _fits(segments, i, run)), None)
            if fit is None:
                return False
            at = fit + len(run)
        return True


def _matcher(segment: str, pattern: str) -> _Literal | _Glob:
    if "**" in segment:
        raise ValueError(
            f"path pattern {pattern!r}: '**' inside the segment {segment!r}; use '**' only as a "
            "whole segment (e.g. '/a/**/b'), or '*' within a segment"
        )
    return _Glob(segment.split("*")) if "*" in segment else _Literal(segment)


def compile_pattern(pattern: str) -> Pattern:
    """A path pattern from the policy; ValueError naming the problem and the fix if it is bad."""
    if not isinstance(pattern, str):
        raise ValueError(f"path pattern {pattern!r}: must be a string starting with '/'")
    try:
        written = _decode(pattern)
    except _Ambiguous as e:
        raise ValueError(f"path pattern {pattern!r}: {e.problem}; {e.fix}") from None
    segments = written[1:].split("/")
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(
            f"path pattern {pattern!r}: a '.' or '..' segment; write the path with them resolved "
            "(requests are matched after theirs are)"
        )
    runs: list[_Run] = [()]
    for segment in segments:
        if segment == "**":
            runs.append(())
        else:
            runs[-1] = (*runs[-1], _matcher(segment, pattern))
    return Pattern(pattern, written, tuple(runs))


def path_allowed(target: bytes, patterns: Sequence[Pattern]) -> bool | None:
    """None if the request's path is ambiguous; else whether every reading of it (see
    `path_readings`) matches one of `patterns`."""
    readings = path_readings(target)
    if readings is None:
        return None
    return all(any(p.matches(reading) for p in patterns) for reading in readings)
