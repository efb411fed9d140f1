"""``python -m bench [--quick] [--json FILE]``: every measurement in one run.

Order: the machine; QoS 1 backlog drains on the tuned broker (every scenario, every
subscriber, runs interleaved round-robin so background noise hits all of them
alike); the same one-reading drain on Mosquitto's default config; bare
``executemany`` baselines; publish→commit latency at half tidegate's measured
maximum; query timings on a generated database; the codec micro-benchmarks
(``bench/codecs.py``, when present). Then the tables, a target check, and JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import machine, querydb, report
from bench.broker import BenchBroker
from bench.drain import (
    MOSQUITTO_SUB,
    SUBSCRIBERS,
    WEAK,
    WEAK_OPTIONS,
    RunResult,
    TidegateOptions,
    drain_once,
)
from bench.latency import measure_latency, simulator_available
from bench.plan import PLANS, Plan
from bench.storage import bare_executemany, scenario_rows
from bench.workload import BATCH_JSON, BATCH_SENML, ONE, SENSORS_10K, Scenario
from gateway.config import PipelineConfig, StorageConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTS = ("drain", "default", "storage", "latency", "query", "codecs")


def _log(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def _scenarios(wanted: set[str] | None) -> list[Scenario]:
    from gateway.codecs import available

    out = [ONE, BATCH_JSON]
    if "senml" in available():
        out.append(BATCH_SENML)
    out.append(SENSORS_10K)
    return [s for s in out if wanted is None or s.name in wanted]


def _drains(
    broker: BenchBroker,
    scenario: Scenario,
    variants: list[tuple[str, str, TidegateOptions | None]],
    plan: Plan,
    workdir: Path,
    bare: list[tuple[float, float]] | None = None,
) -> dict[str, list[RunResult]]:
    """Run every variant ``plan.runs`` times, interleaved; results by label. With
    ``bare``, each round also times a bare executemany of the scenario (appended)."""
    results: dict[str, list[RunResult]] = {label: [] for label, _s, _o in variants}
    for run in range(plan.runs):
        if bare is not None:
            bare.append(_bare_once(plan, scenario, workdir, run))
        for label, subscriber, options in variants:
            n = plan.n(scenario.name, subscriber)
            result = drain_once(broker, scenario, subscriber, n, workdir, options, label=label)
            state = "ok" if result.ok else f"FAILED ({result.detail[:200]})"
            _log(
                f"{broker.config:7} {scenario.name:11} {label:22} run {run + 1}/{plan.runs}:"
                f" {result.msgs_per_s:9,.0f} msg/s {result.readings_per_s:11,.0f} readings/s"
                f" {result.rss_kb / 1024:6.1f} MB  {state}"
            )
            results[label].append(result)
    return results


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """Medians over the successful runs (all runs listed in ``runs``)."""
    good = [r for r in runs if r.ok] or runs
    return {
        "subscriber": runs[0].subscriber,
        "scenario": runs[0].scenario,
        "broker": runs[0].broker,
        "runs": len(runs),
        "ok": sum(r.ok for r in runs),
        "messages": runs[0].messages,
        "msgs_per_s": statistics.median(r.msgs_per_s for r in good),
        "readings_per_s": statistics.median(r.readings_per_s for r in good),
        "cpu_us_per_msg": statistics.median(
            1e6 * r.cpu_s / r.messages if r.messages else 0.0 for r in good
        ),
        "peak_rss_mb": max(r.rss_kb for r in good) / 1024,
        "bytes_per_reading": statistics.median(r.bytes_per_reading for r in good),
        "table_bytes_per_reading": statistics.median(r.table_bytes_per_reading for r in good),
        "bytes_per_series": statistics.median(r.bytes_per_series for r in good),
        "compacted_bytes_per_reading": statistics.median(
            r.compacted_bytes_per_reading for r in good
        ),
        "all": [r.as_dict() for r in runs],
    }


def run(plan: Plan, parts: set[str], scenarios: set[str] | None, out_json: Path) -> int:
    started = time.monotonic()
    data: dict[str, Any] = {
        "plan": plan.name,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "machine": machine.describe(),
        "drains": [],
        "storage": [],
        "latency": [],
        "queries": [],
        "codecs": [],
    }
    _log(f"plan {plan.name}, parts {sorted(parts)}")
    workdir = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    tidegate_max = 0.0
    try:
        if "drain" in parts:
            with BenchBroker(workdir / "broker-tuned", "tuned") as broker:
                variants: list[tuple[str, str, TidegateOptions | None]] = [
                    (sub, sub, None) for sub in _available(SUBSCRIBERS)
                ]
                for scenario in _scenarios(scenarios):
                    bare: list[tuple[float, float]] | None = [] if "storage" in parts else None
                    # The durable default beside the previous one (no fsync per commit),
                    # interleaved in the same run (decision 0080).
                    weak = [(f"tidegate {WEAK}", "tidegate", WEAK_OPTIONS)]
                    both = variants + (weak if scenario in (ONE, BATCH_JSON) else [])
                    results = _drains(broker, scenario, both, plan, workdir, bare)
                    for runs in results.values():
                        data["drains"].append(summarize(runs))
                    if bare:
                        data["storage"].append(_storage_row(plan, scenario, bare))
                    _cleanup(workdir)
        if "default" in parts and (scenarios is None or ONE.name in scenarios):
            with BenchBroker(workdir / "broker-default", "default") as broker:
                variants = [
                    (sub, sub, None) for sub in _available(("mosquitto_sub", "aiomqtt", "tidegate"))
                ]
                variants.append(
                    ("tidegate 2 conn $share", "tidegate", TidegateOptions(connections=2))
                )
                results = _drains(broker, ONE, variants, plan, workdir)
                for runs in results.values():
                    data["drains"].append(summarize(runs))
                _cleanup(workdir)
        for row in data["drains"]:
            if (row["broker"], row["scenario"], row["subscriber"]) == (
                "tuned",
                ONE.name,
                "tidegate",
            ):
                tidegate_max = row["msgs_per_s"]
        if "latency" in parts:
            data["latency"] = _latency(plan, tidegate_max, workdir)
        if "query" in parts:
            path, gen_s = querydb.ensure_database(RESULTS_DIR, plan.query_rows)
            if gen_s:
                _log(f"generated {path.name} in {gen_s:.1f} s")
            data["query_db"] = {
                "rows": plan.query_rows,
                "path": str(path),
                "bytes_per_reading": querydb.bytes_per_reading(path),
            }
            data["queries"] = [asdict(q) for q in querydb.run_queries(path)]
            for q in data["queries"]:
                _log(f"query {q['name']}: {q['median_ms']:.1f} ms")
        if "codecs" in parts:
            data["codecs"] = _codecs(plan)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["elapsed_s"] = time.monotonic() - started
    data["targets"] = report.targets(data)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(data, indent=1, default=str))
    sys.stdout.write(report.render(data))
    _log(f"done in {data['elapsed_s']:.0f} s; JSON in {out_json}")
    failed_runs = sum(row["runs"] - row["ok"] for row in data["drains"])
    latency_failed = any(not lat["ok"] for lat in data["latency"])
    return 1 if failed_runs or latency_failed else 0


def _latency(plan: Plan, tidegate_max: float, workdir: Path) -> list[dict[str, Any]]:
    """Half and a quarter of tidegate's measured drain maximum (bench publisher, 1,000
    sensors), then a simulated fleet of ``plan.fleet_sensors`` sensors at 1 Hz
    (tidegate-sim), each for ``plan.latency_s``."""
    out = []
    top = tidegate_max if tidegate_max else 10_000.0
    half = min(plan.latency_rate_cap, top / 2)
    runs: list[tuple[str, float, str, int, TidegateOptions | None]] = [
        ("half of max drain rate", half, "own", 1000, None),
        (f"half of max drain rate, {WEAK}", half, "own", 1000, WEAK_OPTIONS),
        ("quarter of max drain rate", min(plan.latency_rate_cap, top / 4), "own", 1000, None),
    ]
    if simulator_available():
        fleet = plan.fleet_sensors
        runs.append((f"{fleet:,} sensors at 1 Hz (tidegate-sim)", float(fleet), "sim", fleet, None))
    for name, rate, publisher, sensors, options in runs:
        with BenchBroker(workdir / f"broker-latency-{len(out)}", "tuned") as broker:
            _log(f"latency: {name}: {rate:,.0f} msg/s for {plan.latency_s:.0f} s")
            lat = measure_latency(
                broker,
                workdir,
                rate,
                plan.latency_s,
                name=name,
                publisher=publisher,
                sensors=sensors,
                options=options,
            )
            _log(
                f"latency: p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms,"
                f" peak RSS {lat.rss_kb / 1024:.1f} MB, ok={lat.ok} {lat.detail}"
            )
            out.append(asdict(lat))
    return out


def _cleanup(workdir: Path) -> None:
    """Drop the run directories (databases) of finished drains; keep the brokers."""
    for child in workdir.iterdir():
        if child.is_dir() and not child.name.startswith("broker-"):
            shutil.rmtree(child, ignore_errors=True)


def _available(subscribers: tuple[str, ...]) -> list[str]:
    """``subscribers`` minus ``mosquitto_sub`` when the mosquitto-clients package is missing."""
    if Path(MOSQUITTO_SUB).exists():
        return list(subscribers)
    _log("mosquitto_sub not found (apt-get install mosquitto-clients): that baseline is skipped")
    return [s for s in subscribers if s != "mosquitto_sub"]


def _bare_once(plan: Plan, scenario: Scenario, workdir: Path, run: int) -> tuple[float, float]:
    """Rows/s of a bare executemany of the scenario: (hot layout + compaction, per-series)."""
    n = plan.n(scenario.name, "tidegate")
    rows = scenario_rows(scenario, n, scenario.default_base_ms(n))
    series = scenario.sensors * (10 if scenario.readings_per_message > 1 else 1)
    rates = []
    for layout in ("hot", "cold"):
        db = workdir / f"bare-{scenario.name}-{run}-{layout}.db"
        rates.append(
            bare_executemany(
                db,
                rows,
                PipelineConfig().batch_size,
                series,
                layout,
                StorageConfig().compaction_rows,
            )
        )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    _log(
        f"bare executemany {scenario.name} run {run + 1}/{plan.runs}: {rates[0]:,.0f} rows/s"
        f" (hot + compaction), {rates[1]:,.0f} rows/s (per-series table)"
    )
    return rates[0], rates[1]


def _storage_row(
    plan: Plan, scenario: Scenario, rates: list[tuple[float, float]]
) -> dict[str, Any]:
    return {
        "scenario": scenario.name,
        "rows": plan.n(scenario.name, "tidegate") * scenario.readings_per_message,
        "batch": PipelineConfig().batch_size,
        "rows_per_s": statistics.median(hot for hot, _cold in rates),
        "cold_rows_per_s": statistics.median(cold for _hot, cold in rates),
        "all": rates,
    }


def _codecs(plan: Plan) -> list[dict[str, Any]]:
    try:
        module = importlib.import_module("bench.codecs")
    except ModuleNotFoundError as exc:
        if exc.name != "bench.codecs":
            raise
        _log("bench/codecs.py not present: codec micro-benchmarks skipped")
        return []
    runner: Callable[..., list[dict[str, Any]]] = module.run
    rows = runner(plan.codecs_quick, readings=plan.codec_readings)
    _log(f"codec micro-benchmarks: {len(rows)} rows")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="tidegate benchmarks (docs/performance.md)"
    )
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--size", choices=sorted(PLANS), help="full, quick or tiny (tests)")
    parser.add_argument(
        "--json", type=Path, help="write the results here (default bench/results/latest.json)"
    )
    parser.add_argument("--only", help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--scenarios", help="comma-separated scenario names (e.g. json-1,json-100)")
    parser.add_argument("--runs", type=int, help="override the runs per subscriber")
    parser.add_argument(
        "--scale",
        type=float,
        help="multiply the drains' message counts (e.g. 10 for sustained runs that include"
        " compaction; the broker must hold the backlog)",
    )
    parser.add_argument("--latency-s", type=float, help="override the latency runs' seconds")
    args = parser.parse_args(argv)
    plan = PLANS[args.size or ("quick" if args.quick else "full")]
    if args.runs:
        plan = Plan(**{**asdict(plan), "runs": args.runs})
    if args.scale:
        plan = Plan(**{**asdict(plan), "scale": plan.scale * args.scale})
    if args.latency_s:
        plan = Plan(**{**asdict(plan), "latency_s": args.latency_s})
    parts = set(PARTS) if not args.only else set(args.only.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    scenarios = set(args.scenarios.split(",")) if args.scenarios else None
    out_json = args.json or RESULTS_DIR / f"{plan.name}.json"
    return run(plan, parts, scenarios, out_json)
