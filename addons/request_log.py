"""One JSON line per forwarded request: method, host, port, path without its query, status or
error, duration and the bytes each way. Bodies stream through, counted, never buffered."""

from __future__ import annotations

import time

from mitmproxy import http

from addons import events, flows, limits, log_scrub


def _counter(counts: list[int], index: int):
    def count(chunk: bytes) -> bytes:
        counts[index] += len(chunk)
        return chunk

    return count


class RequestLog:
    """Runs after the allowlist in the chain: a request it refused is neither streamed nor
    logged here (its decision line says why)."""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or limits.DENIED in flow.metadata:
            return
        # Streamed, not buffered: bounded memory, live streaming responses.
        counts = flow.metadata.setdefault("auth_proxy_bytes", [0, 0])
        flow.request.stream = _counter(counts, 0)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.error or not flow.live or flow.response is None or limits.DENIED in flow.metadata:
            return
        counts = flow.metadata.setdefault("auth_proxy_bytes", [0, 0])
        flow.response.stream = _counter(counts, 1)

    def response(self, flow: http.HTTPFlow) -> None:
        if limits.DENIED in flow.metadata or flow.response is None:
            return
        self._log(flow, flow.response.status_code, None)

    def error(self, flow: http.HTTPFlow) -> None:
        if limits.DENIED in flow.metadata or flow.error is None:
            return
        self._log(flow, None, log_scrub.scrub(flow.error.msg))

    def _log(self, flow: http.HTTPFlow, status: int | None, error: str | None) -> None:
        request = flow.request
        end = (flow.response and flow.response.timestamp_end) or time.time()
        sent, received = flow.metadata.get("auth_proxy_bytes", [0, 0])
        events.emit(
            "request",
            method=request.method,
            host=flows.printable(request.host),
            port=request.port,
            path=request.path.split("?", 1)[0],
            status=status,
            error=error,
            duration_ms=round((end - request.timestamp_start) * 1000, 1),
            bytes_sent=sent,
            bytes_received=received,
            client=flows.client_label(flow),
        )
