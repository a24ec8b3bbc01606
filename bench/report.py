"""Medians across repetitions, the ratios and targets of issue 6, and the outputs: a Markdown
table, JSON (written by __main__) and a PNG chart."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

TARGETS = ("direct", "squid", "mitmdump", "sidecar")


def _reg(name: str, key: str) -> Callable[[dict], float | None]:
    return lambda run: run.get("regimes", {}).get(name, {}).get(key)


def _top(key: str) -> Callable[[dict], float | None]:
    return lambda run: run.get(key)


# key, label, unit, extractor, format
METRICS = [
    (
        "keepalive_rps",
        "keep-alive requests (8 clients)",
        "req/s",
        _reg("keepalive", "per_s"),
        "{:,.0f}",
    ),
    ("keepalive_p50", "keep-alive p50 latency", "ms", _reg("keepalive", "p50_ms"), "{:.2f}"),
    ("keepalive_p99", "keep-alive p99 latency", "ms", _reg("keepalive", "p99_ms"), "{:.2f}"),
    (
        "newconn_cps",
        "new connection per request (8 clients)",
        "conn/s",
        _reg("newconn", "per_s"),
        "{:,.0f}",
    ),
    ("fresh_p50", "one fresh request at a time, p50", "ms", _reg("fresh", "p50_ms"), "{:.2f}"),
    ("fresh_p99", "one fresh request at a time, p99", "ms", _reg("fresh", "p99_ms"), "{:.2f}"),
    ("large_mibps", "1 MiB downloads (4 clients)", "MiB/s", _reg("large", "mib_per_s"), "{:,.0f}"),
    ("denied_rps", "denied CONNECTs (8 clients)", "req/s", _reg("denied", "per_s"), "{:,.0f}"),
    (
        "cpu_keepalive",
        "proxy CPU per keep-alive request",
        "ms",
        _reg("keepalive", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "cpu_newconn",
        "proxy CPU per new-connection request",
        "ms",
        _reg("newconn", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "cpu_large",
        "proxy CPU per 1 MiB download",
        "ms",
        _reg("large", "proxy_cpu_ms_per_req"),
        "{:.2f}",
    ),
    (
        "cpu_denied",
        "proxy CPU per denied CONNECT",
        "ms",
        _reg("denied", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "denied_upstream",
        "upstream connections by denied CONNECTs",
        "",
        _reg("denied", "upstream_connections"),
        "{:.0f}",
    ),
    ("rss_idle", "RSS idle", "MiB", _top("rss_idle_mib"), "{:.0f}"),
    ("rss_peak", "RSS peak under the bench's load", "MiB", _top("rss_peak_mib"), "{:.0f}"),
    (
        "start_ready",
        "start to ready (/readyz; Squid: listening)",
        "s",
        _top("start_to_ready_s"),
        "{:.2f}",
    ),
    (
        "start_first",
        "start to first proxied response",
        "s",
        _top("start_to_first_response_s"),
        "{:.2f}",
    ),
    (
        "client_cpu_keepalive",
        "load client's CPU share, keep-alive",
        "cores",
        _reg("keepalive", "client_cpu_share"),
        "{:.2f}",
    ),
    (
        "proxy_cpu_keepalive",
        "proxy's CPU share, keep-alive",
        "cores",
        _reg("keepalive", "proxy_cpu_share"),
        "{:.2f}",
    ),
]


def _target_checks(values: dict, micro: dict) -> list[dict]:
    def v(metric: str, target: str) -> float | None:
        return values.get(metric, {}).get(target)

    def ratio(metric: str, a: str, b: str) -> float | None:
        x, y = v(metric, a), v(metric, b)
        return x / y if x is not None and y else None

    checks = [
        (
            "keep-alive req/s >= 0.25x Squid",
            ratio("keepalive_rps", "sidecar", "squid"),
            ">=",
            0.25,
            "x",
        ),
        (
            "new-connection conn/s >= 0.35x Squid",
            ratio("newconn_cps", "sidecar", "squid"),
            ">=",
            0.35,
            "x",
        ),
        ("fresh request p50 <= 3x Squid", ratio("fresh_p50", "sidecar", "squid"), "<=", 3.0, "x"),
        ("1 MiB MiB/s >= 1.0x Squid", ratio("large_mibps", "sidecar", "squid"), ">=", 1.0, "x"),
        ("RSS idle <= 64 MiB", v("rss_idle", "sidecar"), "<=", 64, " MiB"),
        ("RSS peak <= 100 MiB", v("rss_peak", "sidecar"), "<=", 100, " MiB"),
        (
            "start to ready <= 0.8x mitmdump",
            ratio("start_ready", "sidecar", "mitmdump"),
            "<=",
            0.8,
            "x",
        ),
        ("denied CONNECT: no upstream connection", v("denied_upstream", "sidecar"), "<=", 0, ""),
        ("denied CONNECT: < 1 ms proxy CPU", v("cpu_denied", "sidecar"), "<", 1.0, " ms"),
        ("10,000-entry allowlist loads < 1 s", micro.get("load_10k_s"), "<", 1.0, " s"),
        (
            "decision cost 10k/10 entries <= 1.5",
            micro.get("decide_ratio_10k_over_10"),
            "<=",
            1.5,
            "x",
        ),
    ]
    out = []
    for label, value, op, limit, unit in checks:
        if value is None:
            met = None
        elif op == ">=":
            met = value >= limit
        elif op == "<=":
            met = value <= limit
        else:
            met = value < limit
        out.append(
            {"target": label, "value": value, "limit": limit, "op": op, "unit": unit, "met": met}
        )
    return out


def summarize(runs: dict[str, list[dict]], micro: dict) -> dict:
    values: dict[str, dict[str, float | None]] = {}
    for key, _label, _unit, get, _fmt in METRICS:
        values[key] = {}
        for target, reps in runs.items():
            got = [x for x in (get(r) for r in reps) if x is not None]
            values[key][target] = statistics.median(got) if got else None
    return {"medians": values, "targets": _target_checks(values, micro), "policy_micro": micro}


def _fmt(fmt: str, value: float | None) -> str:
    return "-" if value is None else fmt.format(value)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def markdown(summary: dict, meta: dict) -> str:
    med = summary["medians"]
    head = "| | direct | Squid ssl-bump | stock mitmdump | sidecar | sidecar / direct | sidecar / Squid | mitmdump / Squid |"
    lines = [
        f"Medians of {meta['repetitions']} interleaved repetition(s), {meta['seconds_per_regime']:g} s "
        f"per regime{' (QUICK)' if meta['quick'] else ''}; {meta['machine']}; {meta['date']}; "
        f"commit {meta['commit']}. Sidecar and mitmdump ran from the {meta.get('proxies_from', 'venv')}"
        f" (Python {meta['python']}).",
        "",
        head,
        "|---" * 8 + "|",
    ]
    for key, label, unit, _get, fmt in METRICS:
        row = med.get(key, {})
        cells = [_fmt(fmt, row.get(t)) for t in TARGETS]
        name = f"{label} ({unit})" if unit else label
        lines.append(
            f"| {name} | {' | '.join(cells)} | {_ratio(row.get('sidecar'), row.get('direct'))} "
            f"| {_ratio(row.get('sidecar'), row.get('squid'))} | {_ratio(row.get('mitmdump'), row.get('squid'))} |"
        )
    micro = summary["policy_micro"]
    lines += [
        "",
        f"Policy microbench (`addons.policy.decide`): 10,000-entry allowlist loads in "
        f"{micro['load_10k_s'] * 1000:.0f} ms; a decision costs {micro['decide_ns_10'] / 1000:.1f} us "
        f"with 10 entries and {micro['decide_ns_10k'] / 1000:.1f} us with 10,000 "
        f"(ratio {micro['decide_ratio_10k_over_10']:.2f}).",
        "",
        "| target (issue 6) | measured | met |",
        "|---|---|---|",
    ]
    for check in summary["targets"]:
        value = check["value"]
        shown = "-" if value is None else f"{value:.3g}{check['unit']}"
        met = {True: "yes", False: "**no**", None: "-"}[check["met"]]
        lines.append(f"| {check['target']} | {shown} | {met} |")
    return "\n".join(lines) + "\n"


def chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = summary["medians"]
    panels = [
        ("keepalive_rps", "keep-alive req/s"),
        ("newconn_cps", "new connection conn/s"),
        ("fresh_p50", "fresh request p50 (ms)"),
        ("large_mibps", "1 MiB downloads MiB/s"),
        ("cpu_keepalive", "proxy CPU ms / keep-alive req"),
        ("rss_peak", "RSS peak (MiB)"),
        ("start_ready", "start to ready (s)"),
        ("denied_rps", "denied CONNECT/s"),
    ]
    colors = {"direct": "#999999", "squid": "#4c72b0", "mitmdump": "#dd8452", "sidecar": "#55a868"}
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        row = med.get(key, {})
        names = [t for t in TARGETS if row.get(t) is not None]
        vals = [row[t] for t in names]
        bars = ax.bar(names, vals, color=[colors[t] for t in names])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        for bar, val in zip(bars, vals, strict=True):
            ax.annotate(
                f"{val:,.3g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    fig.suptitle(
        "auth-proxy bench: direct vs Squid ssl-bump vs stock mitmdump vs sidecar (medians)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


DOCS_START, DOCS_END = "<!-- bench:start", "<!-- bench:end -->"


def replace_docs_table(text: str, markdown: str) -> str:
    """`text` (docs/performance.md) with the copy of the table between its markers replaced."""
    start = text.index(DOCS_START)
    body_start = text.index("\n", start) + 1
    end = text.index(DOCS_END, body_start)
    return text[:body_start] + markdown.rstrip() + "\n" + text[end:]


def copy_into_docs(markdown: str, docs: Path) -> None:
    docs.write_text(replace_docs_table(docs.read_text(), markdown))
