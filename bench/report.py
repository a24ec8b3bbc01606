"""Medians across repetitions, the ratios and targets of issues 6 and 14, and the outputs: a
Markdown table, JSON (written by __main__) and a PNG chart."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

TARGETS = ("direct", "squid", "mitmdump", "sidecar")


def _reg(name: str, key: str) -> Callable[[dict], float | None]:
    return lambda run: run.get("regimes", {}).get(name, {}).get(key)


def _top(key: str) -> Callable[[dict], float | None]:
    return lambda run: run.get(key)


def _eg(name: str, key: str) -> Callable[[dict], float | None]:
    """A figure of an egress regime (bench/egress.py: run["egress"]["regimes"])."""
    return lambda run: run.get("egress", {}).get("regimes", {}).get(name, {}).get(key)


def _eg_ratio(kind: str, key: str) -> Callable[[dict], float | None]:
    """transparent / CONNECT of one figure within one run (the same proxy, minutes apart)."""

    def get(run: dict) -> float | None:
        a, b = _eg(f"transparent_{kind}", key)(run), _eg(f"connect_{kind}", key)(run)
        return a / b if a is not None and b else None

    return get


def _eg_sum(names: tuple[str, ...], key: str) -> Callable[[dict], float | None]:
    def get(run: dict) -> float | None:
        got = [x for x in (_eg(name, key)(run) for name in names) if x is not None]
        return sum(got) if len(got) == len(names) else None

    return get


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


# Issue 14's listeners, in a network namespace (bench/egress.py); columns: EGRESS_TARGETS.
EGRESS_TARGETS = ("mitmdump", "sidecar")
EGRESS_METRICS = [
    (
        "eg_keepalive_connect",
        "keep-alive via CONNECT (8 clients)",
        "req/s",
        _eg("connect_keepalive", "per_s"),
        "{:,.0f}",
    ),
    (
        "eg_keepalive_transparent",
        "keep-alive, transparent (8 clients)",
        "req/s",
        _eg("transparent_keepalive", "per_s"),
        "{:,.0f}",
    ),
    (
        "eg_keepalive_ratio",
        "transparent / CONNECT, keep-alive req/s",
        "",
        _eg_ratio("keepalive", "per_s"),
        "{:.2f}x",
    ),
    (
        "eg_newconn_connect",
        "new connection per request via CONNECT (8 clients)",
        "conn/s",
        _eg("connect_newconn", "per_s"),
        "{:,.0f}",
    ),
    (
        "eg_newconn_transparent",
        "new connection per request, transparent (8 clients)",
        "conn/s",
        _eg("transparent_newconn", "per_s"),
        "{:,.0f}",
    ),
    (
        "eg_newconn_ratio",
        "transparent / CONNECT, new-connection conn/s",
        "",
        _eg_ratio("newconn", "per_s"),
        "{:.2f}x",
    ),
    (
        "eg_cpu_keepalive_connect",
        "proxy CPU per keep-alive request, CONNECT",
        "ms",
        _eg("connect_keepalive", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_cpu_keepalive_transparent",
        "proxy CPU per keep-alive request, transparent",
        "ms",
        _eg("transparent_keepalive", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_cpu_keepalive_ratio",
        "transparent / CONNECT, CPU per keep-alive request",
        "",
        _eg_ratio("keepalive", "proxy_cpu_ms_per_req"),
        "{:.2f}x",
    ),
    (
        "eg_cpu_newconn_connect",
        "proxy CPU per new-connection request, CONNECT",
        "ms",
        _eg("connect_newconn", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_cpu_newconn_transparent",
        "proxy CPU per new-connection request, transparent",
        "ms",
        _eg("transparent_newconn", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_cpu_newconn_ratio",
        "transparent / CONNECT, CPU per new-connection request",
        "",
        _eg_ratio("newconn", "proxy_cpu_ms_per_req"),
        "{:.2f}x",
    ),
    (
        "eg_dns_a_rps",
        "DNS answers, A for an allowed name (8 clients)",
        "answers/s",
        _eg("dns_a", "per_s"),
        "{:,.0f}",
    ),
    ("eg_dns_a_p99", "DNS answer p99 latency, A", "ms", _eg("dns_a", "p99_ms"), "{:.2f}"),
    (
        "eg_dns_txt_rps",
        "DNS answers, TXT refused (8 clients)",
        "answers/s",
        _eg("dns_txt", "per_s"),
        "{:,.0f}",
    ),
    (
        "eg_cpu_dns_a",
        "proxy CPU per DNS answer, A",
        "ms",
        _eg("dns_a", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_cpu_dns_txt",
        "proxy CPU per DNS answer, TXT refused",
        "ms",
        _eg("dns_txt", "proxy_cpu_ms_per_req"),
        "{:.3f}",
    ),
    (
        "eg_dns_failed",
        "DNS queries lost or answered wrongly",
        "",
        _eg_sum(("dns_a", "dns_txt"), "failed"),
        "{:.0f}",
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
            6,
            "keep-alive req/s >= 0.25x Squid",
            ratio("keepalive_rps", "sidecar", "squid"),
            ">=",
            0.25,
            "x",
        ),
        (
            6,
            "new-connection conn/s >= 0.35x Squid",
            ratio("newconn_cps", "sidecar", "squid"),
            ">=",
            0.35,
            "x",
        ),
        (
            6,
            "fresh request p50 <= 3x Squid",
            ratio("fresh_p50", "sidecar", "squid"),
            "<=",
            3.0,
            "x",
        ),
        (6, "1 MiB MiB/s >= 1.0x Squid", ratio("large_mibps", "sidecar", "squid"), ">=", 1.0, "x"),
        (6, "RSS idle <= 64 MiB", v("rss_idle", "sidecar"), "<=", 64, " MiB"),
        (6, "RSS peak <= 100 MiB", v("rss_peak", "sidecar"), "<=", 100, " MiB"),
        (
            6,
            "start to ready <= 0.8x mitmdump",
            ratio("start_ready", "sidecar", "mitmdump"),
            "<=",
            0.8,
            "x",
        ),
        (6, "denied CONNECT: no upstream connection", v("denied_upstream", "sidecar"), "<=", 0, ""),
        (6, "denied CONNECT: < 1 ms proxy CPU", v("cpu_denied", "sidecar"), "<", 1.0, " ms"),
        (6, "10,000-entry allowlist loads < 1 s", micro.get("load_10k_s"), "<", 1.0, " s"),
        (
            6,
            "decision cost 10k/10 entries <= 1.5",
            micro.get("decide_ratio_10k_over_10"),
            "<=",
            1.5,
            "x",
        ),
        (
            15,
            "decision cost +1,000 rules +1,000 denied / 10 entries <= 1.5",
            micro.get("rules_ratio_1k_over_10"),
            "<=",
            1.5,
            "x",
        ),
    ]
    checks += [
        (
            14,
            "transparent keep-alive req/s >= 0.9x CONNECT",
            v("eg_keepalive_ratio", "sidecar"),
            ">=",
            0.9,
            "x",
        ),
        (
            14,
            "transparent new-connection conn/s >= 0.9x CONNECT",
            v("eg_newconn_ratio", "sidecar"),
            ">=",
            0.9,
            "x",
        ),
        (
            14,
            "transparent CPU per keep-alive request <= 1.1x CONNECT",
            v("eg_cpu_keepalive_ratio", "sidecar"),
            "<=",
            1.1,
            "x",
        ),
        (
            14,
            "transparent CPU per new-connection request <= 1.1x CONNECT",
            v("eg_cpu_newconn_ratio", "sidecar"),
            "<=",
            1.1,
            "x",
        ),
        (
            14,
            "DNS answer (A, allowed name): < 0.5 ms proxy CPU",
            v("eg_cpu_dns_a", "sidecar"),
            "<",
            0.5,
            " ms",
        ),
        (
            14,
            "DNS answer (TXT, refused): < 0.5 ms proxy CPU",
            v("eg_cpu_dns_txt", "sidecar"),
            "<",
            0.5,
            " ms",
        ),
        (
            14,
            "DNS queries lost or answered wrongly: none",
            v("eg_dns_failed", "sidecar"),
            "<=",
            0,
            "",
        ),
    ]
    out = []
    for issue, label, value, op, limit, unit in checks:
        if value is None:
            met = None
        elif op == ">=":
            met = value >= limit
        elif op == "<=":
            met = value <= limit
        else:
            met = value < limit
        out.append(
            {
                "issue": issue,
                "target": label,
                "value": value,
                "limit": limit,
                "op": op,
                "unit": unit,
                "met": met,
            }
        )
    return out


def summarize(runs: dict[str, list[dict]], micro: dict) -> dict:
    """Medians over repetitions of every metric (ratios: the median of each run's own ratio),
    the target checks, and the errors of egress runs that failed."""
    values: dict[str, dict[str, float | None]] = {}
    for key, _label, _unit, get, _fmt in METRICS + EGRESS_METRICS:
        values[key] = {}
        for target, reps in runs.items():
            got = [x for x in (get(r) for r in reps) if x is not None]
            values[key][target] = statistics.median(got) if got else None
    errors = {
        target: [r["egress"]["error"] for r in reps if "error" in r.get("egress", {})]
        for target, reps in runs.items()
    }
    return {
        "medians": values,
        "targets": _target_checks(values, micro),
        "policy_micro": micro,
        "egress_errors": {t: e for t, e in errors.items() if e},
    }


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
    ]
    if micro.get("rules_ratio_1k_over_10") is not None:
        lines[-1] += " " + _rules_micro(micro)
    if meta.get("egress", True):
        lines += ["", *egress_markdown(summary)]
    lines += ["", "| target | issue | measured | met |", "|---|---|---|---|"]
    for check in summary["targets"]:
        value = check["value"]
        shown = "-" if value is None else f"{value:.3g}{check['unit']}"
        met = {True: "yes", False: "**no**", None: "-"}[check["met"]]
        lines.append(f"| {check['target']} | {check.get('issue', 6)} | {shown} | {met} |")
    return "\n".join(lines) + "\n"


def _rules_micro(micro: dict) -> str:
    """Issue 15's sentence: whole decisions (`addons.core.decide`) with rules and a deny list."""
    return (
        "A whole decision (`addons.core.decide`) with 10 entries against the same plus 1,000 "
        f"rules and 1,000 deny entries: CONNECT {micro['rules_connect_ns_10'] / 1000:.1f} us vs "
        f"{micro['rules_connect_ns_1k'] / 1000:.1f} us ({micro['rules_connect_ratio']:.2f}x), "
        f"request {micro['rules_request_ns_10'] / 1000:.1f} us vs "
        f"{micro['rules_request_ns_1k'] / 1000:.1f} us ({micro['rules_request_ratio']:.2f}x)."
    )


def egress_markdown(summary: dict) -> list[str]:
    """The table of issue 14's listeners: CONNECT and transparent side by side, DNS answers."""
    med = summary["medians"]
    lines = [
        "Issue 14's listeners, in a private network namespace (`bench/egress.py`): the same "
        "nginx at 10.78.0.1:443, curl as uid 1000 either through the regular listener (CONNECT) "
        "or straight to the address, which an nftables `redirect` sends to the transparent "
        "listener; DNS over UDP to port 53, redirected to the DNS listener. CONNECT and "
        "transparent ran in A B B A halves in one run of each proxy; ratios are medians of "
        "each run's own.",
        "",
        "| | stock mitmdump | sidecar | sidecar / mitmdump |",
        "|---|---|---|---|",
    ]
    for key, label, unit, _get, fmt in EGRESS_METRICS:
        row = med.get(key, {})
        cells = [_fmt(fmt, row.get(t)) for t in EGRESS_TARGETS]
        name = f"{label} ({unit})" if unit else label
        ratio = "-" if fmt.endswith("x") else _ratio(row.get("sidecar"), row.get("mitmdump"))
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio} |")
    for target, errors in summary.get("egress_errors", {}).items():
        first = errors[0].strip().splitlines()[0] if errors[0].strip() else "?"
        lines += ["", f"**{target}: {len(errors)} egress run(s) failed**: {first}"]
    return lines


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
    egress = any(v is not None for v in med.get("eg_keepalive_transparent", {}).values())
    rows = 3 if egress else 2
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.5 * rows))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
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
    if egress:
        _egress_panels(axes[2], med, colors)
    fig.suptitle(
        "auth-proxy bench: direct vs Squid ssl-bump vs stock mitmdump vs sidecar (medians)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _egress_panels(axes, med: dict, colors: dict) -> None:
    """Issue 14: CONNECT against transparent per proxy, and the DNS listener."""
    panels = [
        ((("eg_keepalive_connect", "CONNECT"), ("eg_keepalive_transparent", "transp.")),
         "keep-alive req/s (netns)"),
        ((("eg_newconn_connect", "CONNECT"), ("eg_newconn_transparent", "transp.")),
         "new connection conn/s (netns)"),
        ((("eg_dns_a_rps", "A"), ("eg_dns_txt_rps", "TXT")), "DNS answers/s"),
        ((("eg_cpu_dns_a", "A"), ("eg_cpu_dns_txt", "TXT")), "proxy CPU ms / DNS answer"),
    ]  # fmt: skip
    for ax, (keys, title) in zip(axes, panels, strict=True):
        bars = [
            (f"{target}\n{label}", med[key][target], colors[target])
            for target in EGRESS_TARGETS
            for key, label in keys
            if med.get(key, {}).get(target) is not None
        ]
        drawn = ax.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
        ax.set_xticks(range(len(bars)), [b[0] for b in bars])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        for bar, (_name, val, _color) in zip(drawn, bars, strict=True):
            ax.annotate(
                f"{val:,.3g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )


DOCS_START, DOCS_END = "<!-- bench:start", "<!-- bench:end -->"


def replace_docs_table(text: str, markdown: str) -> str:
    """`text` (docs/performance.md) with the copy of the table between its markers replaced."""
    start = text.index(DOCS_START)
    body_start = text.index("\n", start) + 1
    end = text.index(DOCS_END, body_start)
    return text[:body_start] + markdown.rstrip() + "\n" + text[end:]


def copy_into_docs(markdown: str, docs: Path) -> None:
    docs.write_text(replace_docs_table(docs.read_text(), markdown))
