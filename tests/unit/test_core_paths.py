"""Request paths for `rules`: the path of a target, its one normalization, patterns and matching.
A path that could be read two ways is refused (None), never guessed."""

from __future__ import annotations

import time

import pytest

from addons.core.paths import (
    Pattern,
    ambiguity,
    compile_pattern,
    normalize,
    path_allowed,
    path_readings,
    request_path,
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"/a/b", "/a/b", id="origin"),
        pytest.param(b"/a/b?q=1", "/a/b", id="origin-query"),
        pytest.param(b"/a?x=/../", "/a", id="query-with-dots"),
        pytest.param(b"/?", "/", id="empty-query"),
        pytest.param(b"/", "/", id="root"),
        pytest.param(b"/a/../b", "/a/../b", id="not-normalized-here"),
        pytest.param(b"/a%2Fb", "/a%2Fb", id="escapes-kept"),
        pytest.param(b"/a?q#frag", "/a", id="fragment-in-query"),
        pytest.param(b"http://h.test/x", "/x", id="absolute"),
        pytest.param(b"https://h.test:1/x?y", "/x", id="absolute-port-query"),
        pytest.param(b"HTTP://h.test/x", "/x", id="absolute-scheme-case"),
        pytest.param(b"http://h.test", "/", id="absolute-no-path"),
        pytest.param(b"http://h.test?y", "/", id="absolute-query-only"),
        pytest.param(b"http://u@h.test/x", "/x", id="absolute-userinfo"),
        pytest.param(b"http://h.test//x", "//x", id="absolute-double-slash-kept"),
        pytest.param(b"h.test:443", None, id="authority-form"),
        pytest.param(b"*", None, id="asterisk"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"a/b", None, id="relative"),
        pytest.param(b"ftp://h.test/x", None, id="other-scheme"),
        pytest.param(b"http:///x", None, id="absolute-empty-authority"),
        pytest.param(b"http://h.test\\x/y", None, id="absolute-backslash-authority"),
        pytest.param(b"http:/h.test/x", None, id="absolute-one-slash"),
        pytest.param(b"/a#f", None, id="fragment"),
        pytest.param(b"/a#/../b?q", None, id="fragment-before-query"),
        pytest.param(b"http://h.test/a#f", None, id="absolute-fragment"),
        pytest.param(b"/a b", None, id="space"),
        pytest.param(b"/a\tb", None, id="tab"),
        pytest.param(b"/a\x00", None, id="nul"),
        pytest.param(b"/a\x7f", None, id="del"),
        pytest.param(b"/a?\x01", None, id="control-in-query"),
        pytest.param("/\u00e9".encode(), None, id="utf8"),
        pytest.param(b"/\xe9", None, id="latin1"),
    ],
)
def test_request_path(target: bytes, expected: str | None) -> None:
    assert request_path(target) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Unchanged.
        pytest.param("/", "/", id="root"),
        pytest.param("/a/b", "/a/b", id="plain"),
        pytest.param("/A/b", "/A/b", id="case-kept"),
        pytest.param("/a/", "/a/", id="trailing-slash-kept"),
        pytest.param("/a;v=1/b", "/a;v=1/b", id="params-kept"),
        pytest.param("/a/..b/c.", "/a/..b/c.", id="dots-not-a-segment"),
        pytest.param("/a/.../b", "/a/.../b", id="three-dots"),
        pytest.param("/!$&'()*+,;=:@-._~", "/!$&'()*+,;=:@-._~", id="all-pchar"),
        # Unreserved escapes decoded, the rest upper-cased.
        pytest.param("/%41", "/A", id="encoded-alpha"),
        pytest.param("/%7e", "/~", id="encoded-tilde-lower"),
        pytest.param("/%7E", "/~", id="encoded-tilde"),
        pytest.param("/%2D%5F%30", "/-_0", id="encoded-unreserved"),
        pytest.param("/%c3%a9", "/%C3%A9", id="utf8-kept-upper"),
        pytest.param("/a%20b", "/a%20b", id="space-kept"),
        pytest.param("/a%3bb", "/a%3Bb", id="encoded-semicolon-kept"),
        pytest.param("/a%2A", "/a%2A", id="encoded-star-kept"),
        pytest.param("/a%25", "/a%25", id="encoded-percent"),
        pytest.param("/a%25zz", "/a%25zz", id="encoded-percent-text"),
        pytest.param("/a%2eb", "/a.b", id="encoded-dot-in-name"),
        pytest.param("/%2Ex", "/.x", id="encoded-dot-leading"),
        # Dot segments removed.
        pytest.param("/a/./b", "/a/b", id="dot"),
        pytest.param("/a/../b", "/b", id="dot-dot"),
        pytest.param("/a/b/../../c", "/c", id="dot-dot-twice"),
        pytest.param("/a/b/..", "/a/", id="dot-dot-last"),
        pytest.param("/a/.", "/a/", id="dot-last"),
        pytest.param("/.", "/", id="root-dot"),
        pytest.param("/a/..", "/", id="back-to-root"),
        pytest.param("/a/./", "/a/", id="dot-trailing-slash"),
        pytest.param("/./a", "/a", id="leading-dot"),
        # Ambiguous.
        pytest.param("/../a", None, id="climbs-above-root"),
        pytest.param("/a/../..", None, id="climbs-at-end"),
        pytest.param("/..", None, id="climbs-from-root"),
        pytest.param("/a/%2e%2e/b", None, id="encoded-dot-dot"),
        pytest.param("/a/%2E%2E/b", None, id="encoded-dot-dot-upper"),
        pytest.param("/a/.%2e/b", None, id="half-encoded-dot-dot"),
        pytest.param("/a/%2e/b", None, id="encoded-dot"),
        pytest.param("/a/%2e%2e;x/b", None, id="encoded-dot-dot-params"),
        pytest.param("/a/..;/b", None, id="dot-dot-params"),
        pytest.param("/a/..;x=1/b", None, id="dot-dot-params-value"),
        pytest.param("/a/.;x/b", None, id="dot-params"),
        pytest.param("/a/..%3B/b", None, id="dot-dot-encoded-params"),
        pytest.param("/a/..%3b/b", None, id="dot-dot-encoded-params-lower"),
        pytest.param("/a%2Fb", None, id="encoded-slash"),
        pytest.param("/a%2fb", None, id="encoded-slash-lower"),
        pytest.param("/a\\b", None, id="backslash"),
        pytest.param("/a%5Cb", None, id="encoded-backslash"),
        pytest.param("/a%5cb", None, id="encoded-backslash-lower"),
        pytest.param("/a%00", None, id="encoded-nul"),
        pytest.param("/a%0A", None, id="encoded-newline"),
        pytest.param("/a%1f", None, id="encoded-unit-separator"),
        pytest.param("/a%7F", None, id="encoded-del"),
        pytest.param("/a%zz", None, id="escape-not-hex"),
        pytest.param("/a%4", None, id="escape-short"),
        pytest.param("/a%", None, id="escape-empty"),
        pytest.param("/a%%41", None, id="escape-percent"),
        pytest.param("/a%u002e", None, id="escape-iis-unicode"),
        pytest.param("/a%252F", None, id="double-encoded-slash"),
        pytest.param("/a%252e%252e", None, id="double-encoded-dots"),
        pytest.param("/a%25%32%46", None, id="double-encoded-via-unreserved"),
        pytest.param("/%C0%AE%C0%AE/x", None, id="overlong-utf8-dots"),
        pytest.param("/%C0%AF", None, id="overlong-utf8-slash"),
        pytest.param("/%FF", None, id="not-utf8"),
        pytest.param("/a//b", None, id="empty-segment"),
        pytest.param("//a", None, id="leading-double-slash"),
        pytest.param("//", None, id="double-slash"),
        pytest.param("/a//", None, id="empty-segment-before-trailing"),
        pytest.param("/a/.//b", None, id="empty-segment-after-dot"),
        pytest.param("a/b", None, id="no-leading-slash"),
        pytest.param("", None, id="empty"),
        pytest.param("*", None, id="asterisk"),
        pytest.param("/a?x=/../", None, id="query"),
        pytest.param("/a#f", None, id="fragment"),
        pytest.param("/a b", None, id="raw-space"),
        pytest.param('/a"b', None, id="raw-quote"),
        pytest.param("/a<b>", None, id="raw-angle"),
        pytest.param("/a^b", None, id="raw-caret"),
        pytest.param("/a`b", None, id="raw-backtick"),
        pytest.param("/a{b}", None, id="raw-brace"),
        pytest.param("/a|b", None, id="raw-pipe"),
        pytest.param("/a[0]", None, id="raw-bracket"),
        pytest.param("/a\x00", None, id="raw-nul"),
        pytest.param("/a\tb", None, id="raw-tab"),
        pytest.param("/\u00e9", None, id="non-ascii"),
        pytest.param("/\uff0e\uff0e/a", None, id="fullwidth-dots"),
    ],
)
def test_normalize(path: str, expected: str | None) -> None:
    assert normalize(path) == expected
    assert (ambiguity(path) is None) == (expected is not None)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        pytest.param("/a%2Fb", "encoded '/'", id="slash"),
        pytest.param("/a/../../b", "climbs above the root", id="climb"),
        pytest.param("/a//b", "empty segment", id="empty"),
        pytest.param("/a/%2e%2e", "encoded '.'", id="dot"),
        pytest.param("/secret%00", "control", id="control"),
    ],
)
def test_ambiguity_names_the_problem_without_quoting_the_path(path: str, words: str) -> None:
    problem = ambiguity(path)
    assert problem is not None and words in problem
    assert "secret" not in problem and "/a" not in problem


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(b"/a/b?q", ("/a/b",), id="plain"),
        pytest.param(b"/a/%7Eb", ("/a/~b",), id="decoded"),
        pytest.param(b"/a/./b", ("/a/b", "/a/./b"), id="dot"),
        pytest.param(b"/a/x/../b", ("/a/b", "/a/x/../b"), id="dot-dot"),
        pytest.param(b"/a/%7Ex/../b", ("/a/b", "/a/~x/../b"), id="dot-dot-decoded"),
        pytest.param(b"/a/%2e%2e/b", None, id="ambiguous"),
        pytest.param(b"*", None, id="no-path"),
    ],
)
def test_path_readings(target: bytes, expected: tuple[str, ...] | None) -> None:
    assert path_readings(target) == expected


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        pytest.param("/", "/", id="root"),
        pytest.param("/a/b", "/a/b", id="literal"),
        pytest.param("/a/", "/a/", id="trailing-slash"),
        pytest.param("/org/**", "/org/**", id="double-star"),
        pytest.param("/**", "/**", id="everything"),
        pytest.param("/a/**/b", "/a/**/b", id="double-star-middle"),
        pytest.param("/repo/*.git/info/refs", "/repo/*.git/info/refs", id="star-in-segment"),
        pytest.param("/a/%7Euser", "/a/~user", id="encoded-unreserved"),
        pytest.param("/a/%c3%a9", "/a/%C3%A9", id="escape-upper-cased"),
        pytest.param("/a/%2A", "/a/%2A", id="encoded-star-literal"),
        pytest.param("/a;b=1/x+y", "/a;b=1/x+y", id="sub-delims"),
        pytest.param("/a/**/**", "/a/**/**", id="double-star-twice"),
    ],
)
def test_compile_pattern(pattern: str, normalized: str) -> None:
    compiled = compile_pattern(pattern)
    assert isinstance(compiled, Pattern)
    assert compiled.text == pattern and compiled.normalized == normalized


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        pytest.param("a/b", "no leading '/'; start it with '/'", id="relative"),
        pytest.param("", "no leading '/'", id="empty"),
        pytest.param("**", "no leading '/'", id="bare-double-star"),
        pytest.param("/a/**x", "'**' inside the segment '**x'; use '**' only as a whole", id="ds"),
        pytest.param("/a/x**", "'**' inside the segment", id="double-star-suffix"),
        pytest.param("/a/***", "'**' inside the segment", id="triple-star"),
        pytest.param("/a//b", "empty segment ('//'); write one '/'", id="empty-segment"),
        pytest.param("//a", "empty segment", id="leading-double-slash"),
        pytest.param("/a/../b", "'.' or '..' segment; write the path with them resolved", id="dd"),
        pytest.param("/a/./b", "'.' or '..' segment", id="dot"),
        pytest.param("/a/**/..", "'.' or '..' segment", id="dot-dot-after-double-star"),
        pytest.param("/a/%2e%2e/b", "encoded '.' (%2E)", id="encoded-dot-dot"),
        pytest.param("/a%2Fb", "encoded '/' (%2F); write '/' between segments", id="slash"),
        pytest.param("/a\\b", "a backslash", id="backslash"),
        pytest.param("/a%5c", "encoded backslash", id="encoded-backslash"),
        pytest.param("/a%00", "encoded control character", id="nul"),
        pytest.param("/a%zz", "invalid percent-escape; write '%' as '%25'", id="bad-escape"),
        pytest.param("/a%252F", "(%25XX)", id="double-encoded"),
        pytest.param("/a?x=1", "query ('?'); remove it: the query string is never", id="query"),
        pytest.param("/a#f", "fragment", id="fragment"),
        pytest.param("/a b", "percent-encode a space as '%20'", id="space"),
        pytest.param("/a|b", "the character '|'; percent-encode it as '%7C'", id="pipe"),
        pytest.param("/caf\u00e9", "outside ASCII; percent-encode it as UTF-8", id="non-ascii"),
        pytest.param("/%C0%AE", "not UTF-8", id="overlong"),
        pytest.param("/a/..;x", "';' parameters", id="dot-dot-params"),
    ],
)
def test_compile_pattern_refuses_with_the_problem_and_the_fix(pattern: str, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        compile_pattern(pattern)
    message = str(raised.value)
    assert message.startswith(f"path pattern {pattern!r}: ")
    assert words in message


@pytest.mark.parametrize("pattern", [None, 3, b"/a"], ids=["none", "int", "bytes"])
def test_compile_pattern_refuses_what_is_not_a_string(pattern: object) -> None:
    with pytest.raises(ValueError, match="must be a string starting with '/'"):
        compile_pattern(pattern)  # type: ignore[arg-type]


MATCHES = [
    ("/", "/", True),
    ("/", "/a", False),
    ("/a", "/a", True),
    ("/a", "/a/", False),
    ("/a/", "/a", False),
    ("/a", "/A", False),
    ("/a/b", "/a/b/c", False),
    ("/org/**", "/org", True),
    ("/org/**", "/org/", True),
    ("/org/**", "/org/a", True),
    ("/org/**", "/org/a/b/", True),
    ("/org/**", "/orgx", False),
    ("/org/**", "/org2/a", False),
    ("/org/**", "/", False),
    ("/**", "/", True),
    ("/**", "/a/b/c", True),
    ("/a/**/b", "/a/b", True),
    ("/a/**/b", "/a/x/b", True),
    ("/a/**/b", "/a/x/y/b", True),
    ("/a/**/b", "/a/x/y/b/", False),
    ("/a/**/b", "/a/bb", False),
    ("/a/**/b", "/b", False),
    ("/a/**/b/**/c", "/a/b/c", True),
    ("/a/**/b/**/c", "/a/b/b/x/c", True),
    ("/a/**/b/**/c", "/a/c/b", False),
    ("/a/**/b/c/**/d", "/a/b/x/b/c/d", True),
    ("/**/x/**", "/x", True),
    ("/**/x/**", "/a/x/b", True),
    ("/**/x/**", "/a/y/b", False),
    ("/a/**/**/b", "/a/b", True),
    ("/a/*", "/a/x", True),
    ("/a/*", "/a/", True),
    ("/a/*", "/a", False),
    ("/a/*", "/a/x/y", False),
    ("/*/info/refs", "/repo/info/refs", True),
    ("/*/info/refs", "/org/repo/info/refs", False),
    ("/repo/*.git/info/refs", "/repo/x.git/info/refs", True),
    ("/repo/*.git/info/refs", "/repo/.git/info/refs", True),
    ("/repo/*.git/info/refs", "/repo/x.gitx/info/refs", False),
    ("/repo/*.git/info/refs", "/repo/x.git/info/refs/", False),
    ("/a/x*y*z", "/a/xyz", True),
    ("/a/x*y*z", "/a/x1y2y3z", True),
    ("/a/x*y*z", "/a/xzy", False),
    ("/a/x*y*z", "/a/xyz/", False),
    ("/a/*-*-*.tgz", "/a/p-1-2.tgz", True),
    ("/a/*-*-*.tgz", "/a/p-1.tgz", False),
    ("/a/ab*ba", "/a/aba", False),
    ("/a/x*b*bc", "/a/xzbc", False),
    ("/a/x*a*a", "/a/xza", False),
    ("/a/x*a*a", "/a/xaza", True),
    ("/x/**/a/**/b/**/y", "/x/a/b/a/y", True),
    ("/x/**/a/**/b/**/y", "/x/b/a/y", False),
    ("/a/ab*ba", "/a/abba", True),
    ("/a/%7Euser", "/a/~user", True),
    ("/a/%2A", "/a/%2A", True),
    ("/a/%2A", "/a/*", False),
    ("/a/*", "/a/%2A", True),
    ("/a/%C3%A9", "/a/%C3%A9", True),
    ("/a", "a", False),
    ("/**", "", False),
]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [pytest.param(*row, id=f"{row[0]}~{row[1]}") for row in MATCHES],
)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    assert compile_pattern(pattern).matches(path) is expected


GIT = [compile_pattern("/myorg/*/info/refs"), compile_pattern("/myorg/*/git-upload-pack")]


@pytest.mark.parametrize(
    ("target", "patterns", "expected"),
    [
        pytest.param(b"/myorg/r.git/info/refs?service=x", GIT, True, id="refs"),
        pytest.param(b"/myorg/r.git/git-upload-pack", GIT, True, id="upload-pack"),
        pytest.param(b"https://github.test/myorg/r/info/refs", GIT, True, id="absolute"),
        pytest.param(b"/myorg/r.git/git-receive-pack", GIT, False, id="receive-pack"),
        pytest.param(b"/other/r.git/info/refs", GIT, False, id="other-org"),
        pytest.param(b"/myorg/r/info/refs/", GIT, False, id="trailing-slash"),
        pytest.param(b"/myorg/r.git/info/refs?x=/../git-receive-pack", GIT, True, id="query"),
        pytest.param(b"/myorg/%72/info/%72efs", GIT, True, id="encoded-unreserved"),
        pytest.param(b"/myorg/r.git/info%2Frefs", GIT, None, id="encoded-slash"),
        pytest.param(b"/myorg/r.git/info\\refs", GIT, None, id="backslash"),
        pytest.param(b"/myorg/r/%2e%2e/x/info/refs", GIT, None, id="encoded-dot-dot"),
        pytest.param(b"/myorg//r/info/refs", GIT, None, id="empty-segment"),
        pytest.param(b"//myorg/r/info/refs", GIT, None, id="leading-double-slash"),
        pytest.param(b"/myorg/r/info/refs#x", GIT, None, id="fragment"),
        pytest.param(b"/myorg/r/info/refs%00", GIT, None, id="nul"),
        pytest.param(b"h.test:443", GIT, None, id="authority-form"),
        # Dot segments: allowed only if allowed both resolved and as written.
        pytest.param(b"/myorg/r/git-receive-pack/../info/refs", GIT, False, id="dot-dot-hides"),
        pytest.param(b"/myorg/r/./info/refs", GIT, False, id="dot-as-written-differs"),
        pytest.param(b"/x/../myorg/r/info/refs", GIT, False, id="dot-dot-before"),
        pytest.param(b"/myorg/../info/refs", GIT, False, id="dot-dot-as-repo"),
        pytest.param(b"/org/a/./b", [compile_pattern("/org/**")], True, id="dot-both-allowed"),
        pytest.param(b"/org/a/../b", [compile_pattern("/org/**")], True, id="dot-dot-both"),
        pytest.param(b"/org/../b", [compile_pattern("/org/**")], False, id="dot-dot-leaves"),
        pytest.param(b"/a/b", [], False, id="no-patterns"),
    ],
)
def test_path_allowed(target: bytes, patterns: list[Pattern], expected: bool | None) -> None:
    assert path_allowed(target, patterns) is expected


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        pytest.param("/a/*-*-*-*.tgz", "/a/" + "-" * 6000 + "x", id="stars-in-segment"),
        pytest.param("/**/a/**/a/**/x/**/b", "/a" * 3000 + "/b", id="double-stars"),
        pytest.param("/**/*a*a*a/**/b", "/" + "/".join(["aa"] * 1500) + "/b", id="mixed"),
    ],
)
def test_matching_takes_time_linear_in_the_path(pattern: str, path: str) -> None:
    # A backtracking regex takes minutes on these; the bound is generous for slow machines.
    compiled = compile_pattern(pattern)
    started = time.monotonic()
    assert not compiled.matches(path)
    assert time.monotonic() - started < 1.0


def test_patterns_compare_by_text() -> None:
    assert compile_pattern("/a/*") == compile_pattern("/a/*")
    assert compile_pattern("/a/%7E") != compile_pattern("/a/~")
    assert len({compile_pattern("/a"), compile_pattern("/a")}) == 1
