"""Property tests of request-path matching: equivalent spellings of a path (RFC 3986 6.2.2: an
unreserved character percent-encoded or not, escapes in either hex case; the query; origin- or
absolute-form) are decided alike, so no re-encoding turns a denial into an allowance; the
normalization is idempotent and leaves nothing that could be read two ways; and the segment
matcher agrees with a plain regular-expression reading of the pattern syntax.

Not equivalent here, on purpose: the dots of a `.` or `..` segment spelled `%2E` (always denied).
"""

from __future__ import annotations

import os
import random
import re
from urllib.parse import unquote, unquote_to_bytes

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from addons.core.paths import compile_pattern, normalize, path_allowed

EXAMPLES = 3000 if os.environ.get("STRESS_FULL") == "1" else 300
# Cheap tests (pure functions over small inputs) run more examples.
MATCH_EXAMPLES = 10000 if os.environ.get("STRESS_FULL") == "1" else 1000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = "0123456789abcdefABCDEF"

NAMES = ["a", "b", "x", "info", "refs", "r.git", "~u", "A", "a-b", "v1.2", "p;v=1", "%C3%A9"]
PATTERN_SEGMENTS = [*NAMES[:-1], "*", "**", "*.git", "r*", "*s", "a*b", "%7Eu", "%c3%a9"]
# Pieces of hostile segments: every ambiguity class, and its near misses.
TOKENS = [
    *NAMES,
    *["%41", "%7e", "%7E", "%2e", "%2E", ".", "..", "%2e%2e", ".%2E", "%2F", "%2f", "\\", "%5C"],
    *["%00", "%1f", "%7F", "%zz", "%4", "%", "%25", "%252F", "%2541", "%c3%a9", "\u00e9", ";"],
    *["..;", "%3B", "%3b", "*", ":", "@", " ", "#", "?", "+", "%C0%AE", "%20", "%7e%7E"],
]

patterns_text = st.lists(
    st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=5).map(
        lambda segments: "/" + "/".join(segments)
    )
    | st.just("/"),
    min_size=1,
    max_size=3,
)
hostile_paths = st.lists(
    st.lists(st.sampled_from(TOKENS), max_size=3).map("".join), min_size=1, max_size=6
).map(lambda segments: "/" + "/".join(segments))
queries = st.sampled_from(["", "?", "?q=1", "?x=/../y", "?a%2Fb#f"])
forms = st.sampled_from(["", "http://h.test", "HTTPS://h.test:8443", "http://u@h.test"])


@st.composite
def path_from(draw: st.DrawFn, pattern: str) -> str:
    """A path the pattern (probably) matches, sometimes with dot segments put in or a tail."""
    out: list[str] = []
    for segment in pattern[1:].split("/"):
        if segment == "**":
            out += draw(st.lists(st.sampled_from(NAMES), max_size=2))
        else:
            out.append(segment.replace("*", draw(st.sampled_from(["", "x", "a.b", "r"]))))
        if draw(st.integers(0, 9)) == 0:
            out += draw(st.sampled_from([["."], ["x", ".."], ["refs", "..", "."]]))
    if draw(st.integers(0, 4)) == 0:
        out.append(draw(st.sampled_from(["", "x", ".", ".."])))
    return "/" + "/".join(out)


def _tokens(path: str) -> list[str]:
    """Escapes as one token; a "%" that starts no escape takes the next two characters with it,
    so that no re-spelling nearby turns it into one."""
    tokens, at = [], 0
    while at < len(path):
        step = 3 if path[at] == "%" else 1
        tokens.append(path[at : at + step])
        at += step
    return tokens


def _is_escape(token: str) -> bool:
    return len(token) == 3 and token[0] == "%" and all(c in HEX for c in token[1:])


def _flip(token: str, rng: random.Random) -> str:
    return "%" + "".join(rng.choice((c.upper(), c.lower())) for c in token[1:])


def _respell(segment: str, rng: random.Random) -> str:
    if unquote(segment).split(";")[0] in (".", ".."):
        return segment  # an encoded dot here is denied on purpose
    out = []
    for token in _tokens(segment):
        if _is_escape(token):
            char = chr(int(token[1:], 16))
            keep_encoded = char not in UNRESERVED or rng.random() < 0.5
            token = _flip(token, rng) if keep_encoded else char
        elif token in UNRESERVED and rng.random() < 0.5:
            token = _flip(f"%{ord(token):02X}", rng)
        out.append(token)
    return "".join(out)


def respell(path: str, rng: random.Random) -> str:
    """An equivalent spelling of `path` (RFC 3986 6.2.2.1 and 6.2.2.2); a query stays as it is."""
    path, mark, query = path.partition("?")
    return "/".join(_respell(segment, rng) for segment in path.split("/")) + mark + query


def target(form: str, path: str, query: str) -> bytes:
    return (form + path + query).encode()


@SETTINGS
@given(patterns_text, st.data(), forms, queries, forms, queries, st.randoms(use_true_random=False))
def test_an_allowed_path_stays_allowed_in_every_spelling(
    texts, data, form, query, form2, query2, rng
) -> None:
    patterns = [compile_pattern(text) for text in texts]
    path = data.draw(path_from(rng.choice(texts)))
    allowed = path_allowed(target(form, path, query), patterns)
    assume(allowed is True)
    for _ in range(5):
        again = respell(path, rng)
        assert path_allowed(target(form2, again, query2), patterns) is True, again


@SETTINGS
@given(patterns_text, st.data(), st.randoms(use_true_random=False))
def test_a_dot_segment_spelled_with_escapes_or_parameters_is_always_denied(
    texts, data, rng
) -> None:
    """The one equivalent spelling not decided alike, on purpose: `%2E` in a `.` or `..` segment
    (and `;` parameters on one) could hide a dot segment from a server, so it is denied."""
    patterns = [compile_pattern(text) for text in texts]
    segments = data.draw(path_from(rng.choice(texts)))[1:].split("/")
    at = data.draw(st.integers(0, len(segments)))
    dots = data.draw(st.sampled_from([".", ".."]))
    segments.insert(at, dots)
    index = rng.randrange(len(dots))
    spelled = dots[:index] + rng.choice(["%2E", "%2e"]) + dots[index + 1 :]
    for odd in (spelled, dots + ";", dots + ";v=1", dots + "%3B", spelled + ";x"):
        segments[at] = odd
        assert path_allowed(("/" + "/".join(segments)).encode(), patterns) is None, odd


@SETTINGS
@given(patterns_text, st.data(), forms, queries, forms, queries, st.randoms(use_true_random=False))
def test_no_spelling_of_a_denied_path_is_allowed(
    texts, data, form, query, form2, query2, rng
) -> None:
    patterns = [compile_pattern(text) for text in texts]
    near = path_from(rng.choice(texts)).map(lambda p: p + rng.choice(TOKENS))
    path = data.draw(st.one_of(hostile_paths, near, st.text(max_size=20).map(lambda t: "/" + t)))
    decided = path_allowed(target(form, path, query), patterns)
    event(f"decided: {decided}")
    for _ in range(5):
        again = respell(path, rng)
        # Spellings are decided alike: a denial (False, or None: ambiguous) stays one.
        assert path_allowed(target(form2, again, query2), patterns) == decided, again


# Ordinary segments with one odd piece somewhere: each ambiguity class on its own.
one_odd = st.builds(
    lambda names, at, odd: "/" + "/".join(names[:at]) + odd + "/".join(names[at:]),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=4),
    st.integers(0, 4),
    st.sampled_from([*TOKENS, "/", "/..", "/.", "/../.."]),
)
ANY_PATH = st.one_of(
    hostile_paths,
    one_odd,
    one_odd,
    st.text(max_size=30),
    st.text(alphabet="/.%2eEfF5cC0a;", max_size=30),
)


@settings(SETTINGS, max_examples=MATCH_EXAMPLES)
@given(ANY_PATH)
def test_normalize_is_idempotent(path: str) -> None:
    once = normalize(path)
    if once is not None:
        assert normalize(once) == once


@settings(SETTINGS, max_examples=MATCH_EXAMPLES)
@given(ANY_PATH)
def test_normalize_leaves_nothing_ambiguous(path: str) -> None:
    once = normalize(path)
    if once is None:
        return
    assert once.startswith("/") and once.isascii()
    for bad in ("/./", "/../", "//", "%2F", "%2E", "%5C", "\\", "%2f", "%2e", "%5c"):
        assert bad not in once, bad
    assert not once.endswith(("/.", "/..")) and once != "/.."
    assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", once), "escapes are upper-case"
    assert not re.search(r"%(?:[01][0-9A-F]|7F)", once), "no control character"
    assert not re.search(r"%25[0-9A-Fa-f]{2}", once), "nothing a second decoding would change"
    unquote_to_bytes(once).decode("utf-8")  # escapes spell UTF-8
    segments = once[1:].split("/")
    assert all(segment.split(";")[0] not in (".", "..") for segment in segments)


def reference(pattern: str) -> re.Pattern[str]:
    """The pattern syntax as the simplest (backtracking) regular expression."""
    parts = []
    for segment in compile_pattern(pattern).normalized[1:].split("/"):
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in segment.split("*")))
    return re.compile("".join(parts))


# A small alphabet, so that patterns with several "**" and "*" meet paths they nearly match.
SMALL = st.sampled_from(["a", "b", "*", "**", "a*", "*b", "*a*", "a*a", "ab*ba", "*a*b*"])
small_patterns = st.lists(st.lists(SMALL, min_size=1, max_size=7), min_size=1, max_size=3).map(
    lambda patterns: ["/" + "/".join(segments) for segments in patterns]
)
small_paths = st.lists(st.sampled_from(["a", "b", "ab", "ba", "aab", "aba", "c"]), max_size=8)
any_paths = st.lists(st.sampled_from([*NAMES, "", "r", "xs", "x.git"]), min_size=1, max_size=8)


@settings(SETTINGS, max_examples=MATCH_EXAMPLES)
@given(st.one_of(patterns_text, small_patterns), st.one_of(small_paths, any_paths))
def test_matching_agrees_with_a_regular_expression(texts: list[str], segments: list[str]) -> None:
    path = normalize("/" + "/".join(segments))
    assume(path is not None)
    for text in texts:
        assert compile_pattern(text).matches(path) == bool(reference(text).fullmatch(path)), text


@settings(SETTINGS, max_examples=MATCH_EXAMPLES)
@given(st.text(alphabet="ab*", max_size=7), st.text(alphabet="ab", max_size=7))
def test_a_segment_glob_agrees_with_a_regular_expression(glob: str, segment: str) -> None:
    assume("**" not in glob)
    assert compile_pattern("/x/" + glob).matches("/x/" + segment) == bool(
        reference("/x/" + glob).fullmatch("/x/" + segment)
    )


@settings(SETTINGS, max_examples=MATCH_EXAMPLES)
@given(
    st.lists(st.sampled_from(["a", "b", "**"]), min_size=1, max_size=8),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=8),
)
def test_double_stars_agree_with_a_regular_expression(pattern: list[str], path: list[str]) -> None:
    text, path_text = "/" + "/".join(pattern), "/" + "/".join(path)
    assert compile_pattern(text).matches(path_text) == bool(reference(text).fullmatch(path_text))
