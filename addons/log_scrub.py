"""No log line carries raw client bytes, query strings or header values (issue 12, item 4).

mitmproxy's own messages quote what clients sent: `Bad HTTP request line: b'GET /?token=...'`,
`Invalid header line: b'Authorization: ...'`, h11's `illegal chunk header: bytearray(b'...')`,
validation errors with header values, h2 protocol errors and GOAWAY debug data, the hex of a
ClientHello it could not parse. The same text reaches `flow.error.msg`, which the allowlist logs.
`scrub(text)` replaces each raw part with `<N bytes withheld>`, keeping the message around it.

`install()` makes every log record pass through `scrub` as it is created, by chaining a
`logging.setLogRecordFactory` factory. A logger filter would not do: filters run only on the
logger a record is made on, not on the ones it propagates through, so every mitmproxy, h2, h11 and
asyncio logger (and the root, for ctx.log) would need one, including loggers created later. A
handler filter would have to follow handlers that mitmproxy and mitmdump add and replace
(TermLog, the event store, errorcheck). The factory sees each record once, before any filter or
handler, whatever its logger. Tracebacks attached to a record are scrubbed too (as `exc_text`,
which formatters use instead of formatting the exception again).
"""

from __future__ import annotations

import ast
import logging
import re
import traceback
from collections.abc import Callable

_WITHHELD = "<{} bytes withheld>"


def withheld(count: int) -> str:
    return _WITHHELD.format(count)


def _literal_size(literal: str) -> int:
    """How many bytes a quoted Python literal (bytes or str repr) holds."""
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return max(len(literal) - 2, 0)
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogateescape"))
    return len(value) if isinstance(value, (bytes, bytearray)) else max(len(literal) - 2, 0)


# A quoted literal as repr() writes it: 'x', "x", b'x', b"x", bytearray(b'x').
_QUOTED = r"""(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""
_BYTES_LITERAL = re.compile(rf"(?<![\w'\"])(?:bytearray\(b{_QUOTED}\)|b{_QUOTED})")

# Messages that quote client data as str reprs, lists or hex rather than bytes. Group 1 is kept,
# group 2 is the raw part. Taken from mitmproxy 12.3.1 (net/http/validate.py, http1/read.py,
# addons/next_layer.py, proxy/layers/tls.py, proxy/layers/http/_http2.py) and h2 4.4.1.
_RAW_AFTER_PREFIX = re.compile(
    r"((?:invalid content-length header|invalid transfer-encoding header"
    r"|unknown transfer-encoding header|invalid header name|multiple transfer-encoding headers"
    r"|multiple content-length headers|Unknown pseudo headers|Duplicate HTTP/2 pseudo header"
    r"|Encountered (?:request-only|response-only|connect-request-only) headers"
    r"|Received pseudo-header in trailer|Unknown HTTP version"
    r"|Bad HTTP request line|Bad HTTP response line|Invalid header line"
    r"|Client closed connection before completing request headers"
    r"|Unexpected data from server|unexpected server response"
    r"|illegal chunk header|illegal header line|illegal status line|malformed chunk footer"
    r"|Deferring layer decision, not enough data): )([^\n]*)"
)
_TRANSFER_ENCODING = re.compile(r"(unexpected HTTP transfer-encoding )(.*?)( for [^\n]*)")
_HEX_AFTER_PREFIX = re.compile(
    r"((?:Cannot parse ClientHello: |(?:additional_data|ping_data|data):))([0-9a-fA-F]+)"
)
# Every rule above needs one of these; most log lines have none, and one search is cheaper
# than five (a record is made for every request; this keeps the cost near 1 µs).
_TRIGGER = re.compile(r"""b['"]|\?|: |:[0-9a-fA-F]|transfer-encoding """)
# A path or URL's query: /p?token=x, https://h/p?x. Only the query goes.
_QUERY = re.compile(r"((?:/|://)[^\s?'\"<>]*)\?[^\s'\"<>]+")


def _literal_bytes(literal: str) -> int:
    """The size of a bytes literal as repr() writes it, bytearray(b'...') included."""
    return _literal_size(literal.removeprefix("bytearray(").removesuffix(")"))


def _raw(text: str) -> str:
    """The description of a raw part: its size, never its content."""
    text = text.strip()
    if re.fullmatch(r"<\d+ bytes withheld>", text):
        return text
    if _BYTES_LITERAL.fullmatch(text):
        return withheld(_literal_bytes(text))
    if re.fullmatch(_QUOTED, text):
        return withheld(_literal_size(text))
    return withheld(len(text.encode("utf-8", "surrogateescape")))


def scrub(text: str) -> str:
    """`text` with every raw client part (bytes literals, quoted header values, hex dumps, query
    strings) replaced by `<N bytes withheld>`."""
    if not text or not _TRIGGER.search(text):
        return text
    text = _RAW_AFTER_PREFIX.sub(lambda m: m[1] + _raw(m[2]), text)
    text = _TRANSFER_ENCODING.sub(lambda m: m[1] + _raw(m[2]) + m[3], text)
    text = _HEX_AFTER_PREFIX.sub(lambda m: m[1] + withheld(len(m[2]) // 2), text)
    text = _BYTES_LITERAL.sub(lambda m: withheld(_literal_bytes(m[0])), text)
    return _QUERY.sub(lambda m: m[1] + "?<query withheld>", text)


# -- log records ---------------------------------------------------------------------------------


def scrub_record(record: logging.LogRecord) -> None:
    """Rewrite a record in place: its formatted message, and its traceback if it has one."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the record would fail later anyway
        message = str(record.msg)
    clean = scrub(message)
    if clean != message or record.args:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))


_previous: Callable[..., logging.LogRecord] = logging.LogRecord
_in_chain = False  # our factory is somewhere in the chain of record factories
_active = False


def _factory(*args, **kwargs) -> logging.LogRecord:
    record = _previous(*args, **kwargs)
    if _active:
        try:
            scrub_record(record)
        except Exception:  # never let a log call raise; never let an unscrubbed line through
            record.msg, record.args, record.exc_info = "<log message withheld>", (), None
    return record


def installed() -> bool:
    return _active and _in_chain


def install() -> None:
    """Scrub every log record from now on. Idempotent: script reloads call it again, and a
    factory someone chained over ours since keeps its place (ours is still below it)."""
    global _previous, _in_chain, _active
    _active = True
    if _in_chain:
        return
    _previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_factory)
    _in_chain = True


def uninstall() -> None:
    """Stop scrubbing. Takes our factory out if it is still the outermost one; otherwise it stays
    in the chain and passes records through unchanged."""
    global _in_chain, _active
    _active = False
    if _in_chain and logging.getLogRecordFactory() is _factory:
        logging.setLogRecordFactory(_previous)
        _in_chain = False


class LogSafety:
    """No client bytes in any log line (installed for good: see HeadLimits), no per-request
    notices at info, and no mitmdump per-flow lines (they print full URLs)."""

    def load(self, loader) -> None:
        from addons import events

        events.demote_per_request_notices(True)

    def running(self) -> None:
        from mitmproxy import ctx

        install()
        if getattr(ctx.options, "flow_detail", 0):  # only mitmdump has the option
            ctx.options.update(flow_detail=0)

    def done(self) -> None:
        from addons import events

        events.demote_per_request_notices(False)
