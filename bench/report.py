"""Markdown tables and the target check from the bench's JSON-shaped results."""

from __future__ import annotations

from typing import Any

from bench.drain import WEAK

MB = 1024 * 1024


def _find(
    data: dict[str, Any], broker: str, scenario: str, subscriber: str
) -> dict[str, Any] | None:
    for row in data["drains"]:
        if (row["broker"], row["scenario"], row["subscriber"]) == (broker, scenario, subscriber):
            return row
    return None


def _ratio(a: float, b: float) -> float | None:
    return a / b if a and b else None


def _fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "–"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def drain_table(data: dict[str, Any], broker: str) -> str:
    rows = []
    for row in data["drains"]:
        if row["broker"] != broker:
            continue
        c_ref = _find(data, broker, row["scenario"], "mosquitto_sub")
        a_ref = _find(data, broker, row["scenario"], "aiomqtt")
        readings = row["readings_per_s"]
        rows.append(
            [
                row["scenario"],
                row["subscriber"],
                f"{row['messages']:,}",
                f"{row['msgs_per_s']:,.0f}",
                f"{readings:,.0f}" if readings else "–",
                _fmt_ratio(_ratio(row["msgs_per_s"], c_ref["msgs_per_s"] if c_ref else 0)),
                _fmt_ratio(_ratio(row["msgs_per_s"], a_ref["msgs_per_s"] if a_ref else 0)),
                f"{row['cpu_us_per_msg']:.1f}",
                f"{row['peak_rss_mb']:.1f}",
                f"{row['bytes_per_reading']:.1f}" if row["bytes_per_reading"] else "–",
                f"{row['ok']}/{row['runs']}",
            ]
        )
    header = [
        "scenario", "subscriber", "N msgs", "msgs/s", "readings/s stored", "× mosquitto_sub",
        "× aiomqtt", "CPU µs/msg", "peak RSS MB", "B/reading", "runs ok",
    ]  # fmt: skip
    return _table(header, rows)


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    out = [
        f"# tidegate bench ({data['plan']}) — {data.get('elapsed_s', 0):.0f} s\n",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_mb']:,} MB RAM, load at start"
        f" {m['loadavg_at_start']}; Python {m['python']}, Mosquitto {m['mosquitto']},"
        f" SQLite {m['sqlite']}, aiomqtt {m['aiomqtt']}, paho-mqtt {m['paho-mqtt']},"
        f" uvloop {m['uvloop']}.\n",
        f"Command: `{data['command']}`. Medians over runs; ratios against baselines of the same run.\n",
    ]
    for broker in ("tuned", "default"):
        if any(row["broker"] == broker for row in data["drains"]):
            out.append(f"\n## QoS 1 backlog drain — Mosquitto {broker} config\n\n")
            out.append(drain_table(data, broker))
    if data["storage"]:
        out.append("\n## Storage: tidegate vs a bare executemany into the same schema\n\n")
        rows = []
        for bare in data["storage"]:
            tg = _find(data, "tuned", bare["scenario"], "tidegate")
            tg_rate = tg["readings_per_s"] if tg else 0.0
            cold = bare.get("cold_rows_per_s")
            rows.append(
                [
                    bare["scenario"],
                    f"{bare['rows_per_s']:,.0f} (batch {bare['batch']:,})",
                    f"{cold:,.0f}" if cold else "–",
                    f"{tg_rate:,.0f}" if tg_rate else "–",
                    f"{100 * tg_rate / bare['rows_per_s']:.0f} %" if tg_rate else "–",
                ]
            )
        out.append(
            _table(
                [
                    "scenario",
                    "bare executemany rows/s (hot table + compaction)",
                    "bare, per-series table only",
                    "tidegate readings/s",
                    "tidegate / bare",
                ],
                rows,
            )
        )
    if data.get("latency"):
        out.append("\n## Publish → commit latency (1 reading per message, tuned broker)\n\n")
        rows = []
        for lat in data["latency"]:
            rss = lat.get("extra", {}).get("rss_mb_each_s") or []
            rows.append(
                [
                    lat["name"],
                    lat["publisher"],
                    f"{lat['rate_achieved']:,.0f}/s",
                    f"{lat['stored']:,}",
                    f"{lat['p50_ms']:.1f}",
                    f"{lat['p99_ms']:.1f}",
                    f"{lat['max_ms']:.1f}",
                    f"{lat['rss_kb'] / 1024:.1f}",
                    f"{rss[1]:.0f} → {rss[-1]:.0f}" if len(rss) > 2 else "–",
                    "yes" if lat["ok"] else f"NO: {lat['detail']}",
                ]
            )
        header = [
            "load", "publisher", "rate", "readings", "p50 ms", "p99 ms", "max ms",
            "peak RSS MB", "RSS MB 1 s → end", "ok",
        ]  # fmt: skip
        out.append(_table(header, rows))
    if data["queries"]:
        qdb = data.get("query_db", {})
        out.append(
            f"\n## Queries on a generated {qdb.get('rows', 0):,}-row database"
            f" ({qdb.get('bytes_per_reading', 0):.1f} B/reading, written in key order; the"
            " last 35 s of every series in the hot table)\n\n"
        )
        out.append(
            _table(
                ["query", "rows out", "first ms", "median ms", "target ms"],
                [
                    [
                        q["name"],
                        f"{q['rows']:,}",
                        f"{q['first_ms']:.1f}",
                        f"{q['median_ms']:.1f}",
                        f"≤ {q['target_ms']:.0f}" if q["target_ms"] else "report",
                    ]
                    for q in data["queries"]
                ],
            )
        )
    if data["codecs"]:
        out.append("\n## Codec micro-benchmarks (bench/codecs.py)\n\n")
        keys: list[str] = []
        for row in data["codecs"]:
            keys += [k for k in row if k not in keys]
        out.append(_table(keys, [[_cell(row.get(k)) for k in keys] for row in data["codecs"]]))
    if data.get("targets"):
        out.append("\n## Targets (docs/performance.md)\n\n")
        out.append(
            _table(
                ["figure", "target", "measured", "met"],
                [[t["figure"], t["target"], t["measured"], t["met"]] for t in data["targets"]],
            )
        )
    return "".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def targets(data: dict[str, Any]) -> list[dict[str, str]]:
    """The guide's targets against this run's figures (only those measured)."""
    out: list[dict[str, str]] = []

    def add(figure: str, target: str, measured: str, met: bool | None) -> None:
        out.append(
            {
                "figure": figure,
                "target": target,
                "measured": measured,
                "met": "–" if met is None else ("yes" if met else "NO"),
            }
        )

    tg = _find(data, "tuned", "json-1", "tidegate")
    aio = _find(data, "tuned", "json-1", "aiomqtt")
    mos = _find(data, "tuned", "json-1", "mosquitto_sub")
    if tg and aio:
        r = tg["msgs_per_s"] / aio["msgs_per_s"]
        add("1-reading drain vs bare aiomqtt loop", "≥ 2×", f"{r:.2f}×", r >= 2)
    if tg and mos:
        r = tg["msgs_per_s"] / mos["msgs_per_s"]
        add("1-reading drain vs mosquitto_sub", "report", f"{r:.2f}×", None)
    for scenario, target in (("json-1", 0.85), ("json-100", None)):
        durable = _find(data, "tuned", scenario, "tidegate")
        weak = _find(data, "tuned", scenario, f"tidegate {WEAK}")
        if durable and weak:
            r = durable["readings_per_s"] / weak["readings_per_s"]
            add(
                f"{scenario} drain, durable default (FULL) vs {WEAK}",
                f"≥ {target:.2f}×" if target else "report",
                f"{r:.2f}×",
                r >= target if target else None,
            )
    batch = _find(data, "tuned", "json-100", "tidegate")
    if batch:
        rate = batch["readings_per_s"]
        add(
            "100-per-message drain, readings/s stored", "≥ 250,000", f"{rate:,.0f}", rate >= 250_000
        )
        bare = next((b for b in data["storage"] if b["scenario"] == "json-100"), None)
        if bare:
            share = rate / bare["rows_per_s"]
            add("… as a share of bare executemany", "≥ 60 %", f"{100 * share:.0f} %", share >= 0.6)
    for lat in data.get("latency") or []:
        if not lat["ok"]:
            continue
        p99 = f"{lat['p99_ms']:.1f} ms"
        if WEAK in lat["name"]:
            add(f"p99 publish→commit at half the max drain rate, {WEAK}", "report", p99, None)
        elif lat["name"].startswith("half"):
            add(
                "p99 publish→commit at half the max drain rate",
                "≤ 100 ms",
                p99,
                lat["p99_ms"] <= 100,
            )
        elif lat["name"].startswith("quarter"):
            add("p99 publish→commit at a quarter of the max drain rate", "report", p99, None)
        else:
            ok = lat["rss_kb"] / 1024 <= 80
            add(
                f"peak RSS, {lat['sensors']:,} sensors at 1 Hz",
                "≤ 80 MB",
                f"{lat['rss_kb'] / 1024:.1f} MB",
                ok,
            )
            add(
                f"p99 publish→commit, {lat['sensors']:,} sensors at 1 Hz",
                "report",
                f"{lat['p99_ms']:.1f} ms",
                None,
            )
    s10k = _find(data, "tuned", "sensors-10k", "tidegate")
    if s10k:
        rss = s10k["peak_rss_mb"]
        add("peak RSS, 10,000 sensors (drain)", "≤ 80 MB", f"{rss:.1f} MB", rss <= 80)
    for scenario in ("json-1", "sensors-10k"):
        row = _find(data, "tuned", scenario, "tidegate")
        if row and row["bytes_per_reading"]:
            b = row["bytes_per_reading"]
            table = row.get("table_bytes_per_reading") or 0.0
            settled = row.get("compacted_bytes_per_reading") or 0.0
            add(
                f"bytes per reading, readings tables, compacted ({scenario})",
                "≤ 26",
                f"{settled:.1f}",
                settled <= 26 if settled else None,
            )
            add(
                f"… right after the drain, part of it still hot ({scenario})",
                "report",
                f"{table:.1f}",
                None,
            )
            add(
                f"… whole file / readings, incl. series dictionary ({scenario})",
                "report",
                f"{b:.1f} ({row.get('bytes_per_series', 0):.0f} B per series)",
                None,
            )
    for q in data["queries"]:
        target = q["target_ms"]
        add(
            f"query: {q['name']}",
            f"≤ {target:.0f} ms" if target else "report",
            f"{q['median_ms']:.1f} ms",
            q["median_ms"] <= target if target else None,
        )
    return out
