"""The words of a refusal: one message per reason, saying what was denied, why and what to do;
the JSON body with the same facts; never a query string or a raw control byte."""

from __future__ import annotations

import json

import pytest

from addons.core import messages, reasons
from tests.unit.test_core_is_pure import FORBIDDEN, run

DENIALS = [r for r in reasons.ALL if r.kind is not reasons.Kind.ALLOW]


@pytest.mark.parametrize("reason", DENIALS, ids=lambda r: r.name)
def test_every_reason_but_allowed_has_its_own_message(reason: reasons.Reason) -> None:
    text = messages.message(reason.name, "api.test", 443, "GET", "/a", ())
    assert text.startswith("auth-proxy"), text
    # Not the fallback for an unknown reason (which only repeats the name).
    assert text != f"auth-proxy denied api.test:443 ({reason.name})."
    # The stable machine value is in the prose too, for a client that shows only the body.
    assert f"({reason.name})" in text
    assert "\n" not in text and len(text) < 600, text


def test_every_reason_with_a_status_is_in_the_table() -> None:
    # The table test above runs over reasons.ALL; this one fails when a reason is added without
    # a message, naming it.
    missing = [
        r.name
        for r in reasons.ALL
        if r.kind is not reasons.Kind.ALLOW
        and r.name != reasons.BLOCKED_BY_RULE.name
        and r.name not in messages._MESSAGES
    ]
    assert not missing, f"no message for {missing}: add one to addons/core/messages.py"


def test_an_unknown_reason_still_says_something() -> None:
    text = messages.message("brand-new\nreason", "api.test", 443, None, None, ())
    assert text == "auth-proxy denied api.test:443 (brand-new\\x0areason)."


ALLOWLIST = (
    "auth-proxy denied other.test:443 (blocked-by-allowlist): the host is not on this sandbox's "
    "allowlist. Retrying, or reaching it another way (another proxy, a raw socket, DNS), will not "
    "work; ask the operator to add it to the policy."
)


@pytest.mark.parametrize(
    ("reason", "host", "port", "method", "path", "allowed", "expected"),
    [
        pytest.param(
            "blocked-by-allowlist",
            "other.test",
            443,
            "CONNECT",
            None,
            (),
            ALLOWLIST,
            id="allowlist",
        ),
        pytest.param(
            "blocked-by-denylist",
            "deep.a.wild.test",
            443,
            None,
            None,
            (),
            "auth-proxy denied deep.a.wild.test:443 (blocked-by-denylist): the host is on this "
            "sandbox's deny list, which wins over any allow entry. Retrying, or reaching it "
            "another way (another proxy, a raw socket, DNS), will not work; ask the operator to "
            "change the policy if you need it.",
            id="denylist",
        ),
        pytest.param(
            "blocked-by-rule",
            "upstream.test",
            8443,
            "POST",
            "/post?token=SECRET",
            ("GET /get", "GET,HEAD /a/**"),
            "auth-proxy denied POST /post on upstream.test:8443 (blocked-by-rule): this host's "
            "rules allow only: GET /get; GET,HEAD /a/**. Retrying will not work; send a request a "
            "rule allows, or ask the operator to add a rule to the policy.",
            id="rule",
        ),
        pytest.param(
            "blocked-by-rule",
            "upstream.test",
            443,
            "GET",
            "/get/..%2F",
            ("GET /get",),
            "auth-proxy denied GET /get/..%2F on upstream.test:443 (blocked-by-rule): its path "
            "could be read two ways (an encoded '/', '\\' or '.', '//', or a '..' above the root), "
            "so no rule matches it; this host's rules allow only: GET /get. Retrying will not "
            "work; send a request a rule allows, or ask the operator to add a rule to the policy.",
            id="rule-ambiguous-path",
        ),
        pytest.param(
            "blocked-by-rule",
            "upstream.test",
            443,
            "GET",
            "/x",
            (),
            "auth-proxy denied GET /x on upstream.test:443 (blocked-by-rule): no rule for this "
            "host allows it. Retrying will not work; send a request a rule allows, or ask the "
            "operator to add a rule to the policy.",
            id="rule-nothing-listed",
        ),
        pytest.param(
            "blocked-port",
            "upstream.test",
            22,
            None,
            None,
            ("80", "443"),
            "auth-proxy denied upstream.test:22 (blocked-port): port 22 is not open in this "
            "sandbox's policy (open: 80, 443). Retrying will not work; use an open port, or ask "
            "the operator to open this one.",
            id="port",
        ),
        pytest.param(
            "blocked-address",
            "2001:db8::1",
            443,
            None,
            None,
            (),
            "auth-proxy denied [2001:db8::1]:443 (blocked-address): the name resolves to a "
            "private, loopback, link-local or cloud-metadata address, which this sandbox may not "
            "reach. Retrying, or using the address directly, will not work; ask the operator to "
            "change the policy if you need it.",
            id="address-ipv6",
        ),
        pytest.param(
            "too-many-connections",
            "",
            0,
            None,
            None,
            (),
            "auth-proxy refused a request to this destination (too-many-connections): this sandbox "
            "has as many connections open as the proxy allows. Close idle connections, or retry "
            "once others have finished.",
            id="no-host",
        ),
        pytest.param(
            "dns-query-refused",
            "b\u00fccher.test",
            53,
            None,
            None,
            (),
            "auth-proxy's DNS refused a query for b\\xfccher.test (dns-query-refused): only single "
            "A or AAAA questions for allowed names are answered. Other record types will not work.",
            id="dns-non-ascii",
        ),
    ],
)
def test_message(reason, host, port, method, path, allowed, expected) -> None:
    assert messages.message(reason, host, port, method, path, allowed) == expected


@pytest.mark.parametrize(
    "host",
    ["evil.test\r\nX-Injected: 1", "evil.test\x00", "\u202eevil.test", "a" * 5000],
    ids=["crlf", "nul", "bidi", "long"],
)
def test_a_hostile_host_is_escaped_and_bounded(host: str) -> None:
    for reason in DENIALS:
        text = messages.message(reason.name, host, 443, "GET", "/", ())
        assert text.isascii() and text.isprintable(), (reason.name, text)
        assert len(text) < 1200


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json", True),
        ("text/html, application/json;q=0.1", True),
        ("APPLICATION/JSON", True),
        (" application/json ; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/plain,application/vnd.api+json", True),
        ("application/json;q=0", False),
        ("application/json; q=0.0", False),
        ("application/json;q=oops", True),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/jsonx", False),
        ("application/json-seq", False),
        ("text/json", False),
    ],
    ids=lambda v: repr(v) if isinstance(v, str) else str(v),
)
def test_wants_json(accept: str, expected: bool) -> None:
    assert messages.wants_json(accept) is expected


def test_the_json_body_carries_every_field_and_no_query() -> None:
    denial = messages.Denial(
        "blocked-by-rule",
        "upstream.test",
        8443,
        "POST",
        "/post?token=SECRET",
        "rules[0],rules[1]",
        ("GET /get",),
    )
    body = json.loads(denial.json())
    assert body == {
        "error": "blocked-by-rule",
        "reason": "blocked-by-rule",
        "host": "upstream.test",
        "port": 8443,
        "method": "POST",
        "path": "/post",
        "rule": "rules[0],rules[1]",
        "allowed": ["GET /get"],
        "message": messages.message(
            "blocked-by-rule", "upstream.test", 8443, "POST", "/post", ("GET /get",)
        ),
    }
    assert "SECRET" not in denial.json() and "SECRET" not in denial.text()
    assert denial.text() == body["message"] + "\n"


@pytest.mark.parametrize(
    ("reason", "method", "target", "expected"),
    [
        ("allowed", b"GET", b"/a/b?token=SECRET", ("GET", "/a/b")),
        ("blocked-by-rule", b"POST", b"http://upstream.test/post?q=1", ("POST", "/post")),
        ("blocked-by-rule", b"GET", b"/get/..%2F", ("GET", "/get/..%2F")),
        ("allowed", b"CONNECT", b"upstream.test:443", ("CONNECT", None)),
        ("blocked-by-rule", b"GET", b"/a#frag", ("GET", None)),
        ("blocked-by-rule", b"GET", b"/caf\xc3\xa9", ("GET", None)),
        ("bad-request", b"GET", b"/a?token=SECRET", (None, None)),
        ("request-too-large", b"GET", b"/" + b"a" * 100, (None, None)),
        ("allowed", b"G\x00T", b"/a", ("G\\x00T", "/a")),
        ("allowed", b"", b"/a", (None, None)),
    ],
    ids=[
        "origin-form",
        "absolute-form",
        "ambiguous-kept-as-sent",
        "connect",
        "fragment",
        "non-ascii",
        "bad-request-not-repeated",
        "too-large-not-repeated",
        "control-in-method",
        "no-method",
    ],
)
def test_request_line(reason: str, method: bytes, target: bytes, expected) -> None:
    assert messages.request_line(reason, method, target) == expected


def test_messages_are_pure() -> None:
    code = (
        "import sys\n"
        f"FORBIDDEN = {FORBIDDEN!r}\n"
        "class Refuse:\n    def find_spec(self, name, path=None, target=None):\n        if "
        "name.split('.')[0] in FORBIDDEN:\n            raise ImportError(f'messages imported "
        "{name}')\nsys.meta_path.insert(0, Refuse())\nfrom addons.core import "
        "messages\nprint(messages.message('blocked-by-allowlist', 'a.test', 443, None, None, ()))\n"
    )
    result = run(code)
    assert result.returncode == 0 and "allowlist" in result.stdout, result.stderr
