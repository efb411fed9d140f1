"""``tidegate-sim``: run a fake sensor fleet, or verify a run against the database.

Exit codes: 0 success (``run``: every QoS ≥ 1 message acknowledged; ``verify``: OK),
1 a failure (``run``: unacknowledged messages or publish errors; ``verify``: data
missing, duplicated or invented; or a runtime error printed as one line), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.errors import TidegateError
from simulators.fleet import FaultRates
from simulators.formats import FORMATS
from simulators.mqtt import BrokerOptions
from simulators.runner import Runner, RunOptions, summary
from simulators.signals import KINDS, MODELS


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is a fraction in [0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _metrics(text: str) -> tuple[str, ...] | None:
    if text in ("mixed", "auto", ""):
        return None
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(MODELS)} or 'mixed'"
        )
    return names


def _add_run(subparsers: Any) -> None:
    kinds = "; ".join(f"{kind}: {', '.join(metrics)}" for kind, metrics in KINDS.items())
    formats = "; ".join(f"{name}: {fmt.description}" for name, fmt in FORMATS.items())
    p = subparsers.add_parser(
        "run",
        help="publish a simulated sensor fleet to a broker",
        description="Publish a simulated sensor fleet to an MQTT broker. Runs until "
        "--duration/--count is reached or SIGINT/SIGTERM; every QoS>=1 publish is awaited "
        "to its acknowledgement before exit.",
    )
    conn = p.add_argument_group("broker")
    conn.add_argument("--host", default="localhost", help="broker host (default localhost)")
    conn.add_argument("--port", type=int, default=None, help="broker port (1883, or 8883 with TLS)")
    conn.add_argument("--username")
    conn.add_argument("--password", help="or the TIDEGATE_SIM_PASSWORD environment variable")
    conn.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS and verify the broker")
    conn.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    conn.add_argument("--tls-key", type=Path, help="client key (mutual TLS)")
    conn.add_argument(
        "--tls-insecure",
        action="store_true",
        help="TLS without verifying the broker (testing only)",
    )
    conn.add_argument(
        "--connections",
        type=int,
        default=0,
        metavar="K",
        help="multiplex all sensors over K clients (default 0: one client per sensor, each "
        "with its own client id and last will)",
    )
    conn.add_argument("--client-prefix", help="client id prefix (default tidegate-sim-<run id>)")
    conn.add_argument(
        "--will-topic",
        default="tidegate-sim/status/{client_id}",
        help="last-will topic ('' for none; {client_id} is replaced)",
    )
    fleet = p.add_argument_group("fleet")
    fleet.add_argument(
        "--sensors", "-n", type=int, default=10, help="number of sensors (default 10)"
    )
    fleet.add_argument(
        "--rate",
        type=_positive_float,
        default=1.0,
        help="samples per second per sensor (default 1)",
    )
    stop = fleet.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive_float, metavar="S", help="run for S seconds")
    stop.add_argument("--count", type=int, metavar="K", help="K samples per sensor, then stop")
    fleet.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="default 1")
    fleet.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="json-reading",
        help=f"payload format ({formats})",
    )
    fleet.add_argument(
        "--topic",
        help="topic template with {sensor_id} and (per-metric formats) {metric}; default "
        + ", ".join(f"{name}: {fmt.default_topic}" for name, fmt in FORMATS.items()),
    )
    fleet.add_argument(
        "--metrics",
        type=_metrics,
        default=None,
        help=f"comma-separated metrics for every sensor, or 'mixed' (default: kinds in turn — {kinds})",
    )
    fleet.add_argument("--prefix", default="sim", help="sensor id prefix (default sim → sim-00000)")
    fleet.add_argument("--seed", type=int, help="random seed: same seed, same fleet and faults")
    fleet.add_argument(
        "--jitter",
        type=float,
        default=0.1,
        help="per-tick jitter, fraction of a period (default 0.1)",
    )
    faults = p.add_argument_group("fault injection (each a probability in [0, 1])")
    faults.add_argument(
        "--malformed", type=_rate, default=0.0, help="per message: unparseable payload"
    )
    faults.add_argument(
        "--out-of-range",
        type=_rate,
        default=0.0,
        help="per message: NaN value or absurd timestamp (must be dead-lettered)",
    )
    faults.add_argument("--duplicates", type=_rate, default=0.0, help="per message: publish twice")
    faults.add_argument(
        "--late", type=_rate, default=0.0, help="per sample: hold back 1-5 ticks (out of order)"
    )
    faults.add_argument(
        "--bursts", type=_rate, default=0.0, help="per tick: 5-20 extra samples at once"
    )
    faults.add_argument(
        "--silent", type=_rate, default=0.0, help="per tick: go quiet for 5-30 ticks"
    )
    out = p.add_argument_group("output and limits")
    out.add_argument("--report", type=Path, help="write the JSON report of what was sent and acked")
    out.add_argument(
        "--max-pending",
        type=int,
        default=20_000,
        help="messages awaiting their ack before publishing pauses (default 20000, max 50000)",
    )
    out.add_argument(
        "--drain-timeout",
        type=_positive_float,
        default=30.0,
        help="at the end, wait this long for outstanding acks (default 30 s)",
    )
    out.add_argument(
        "--progress", action="store_true", default=None, help="live line even if not a TTY"
    )
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no live line")
    out.add_argument("--quiet", "-q", action="store_true", help="no summary, no status lines")
    out.add_argument(
        "--json", action="store_true", help="print the summary as JSON (totals and rate)"
    )
    out.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (default auto)",
    )
    p.set_defaults(handler=_handle_run)


def _options(args: argparse.Namespace) -> RunOptions:
    import os

    tls = bool(args.tls_ca or args.tls_cert or args.tls_insecure)
    port = args.port if args.port is not None else (8883 if tls else 1883)
    broker = BrokerOptions(
        host=args.host,
        port=port,
        username=args.username,
        password=args.password or os.environ.get("TIDEGATE_SIM_PASSWORD"),
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_insecure=args.tls_insecure,
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    rates = FaultRates(
        malformed=args.malformed,
        out_of_range=args.out_of_range,
        duplicates=args.duplicates,
        late=args.late,
        bursts=args.bursts,
        silent=args.silent,
    )
    return RunOptions(
        broker=broker,
        sensors=args.sensors,
        rate_hz=args.rate,
        duration_s=args.duration,
        count=args.count,
        qos=args.qos,
        format=args.format,
        topic=args.topic,
        metrics=args.metrics,
        prefix=args.prefix,
        seed=args.seed,
        connections=args.connections,
        client_prefix=args.client_prefix,
        will_topic=args.will_topic,
        faults=rates,
        jitter=args.jitter,
        max_pending=args.max_pending,
        drain_timeout_s=args.drain_timeout,
        report=args.report,
        progress=args.progress,
        quiet=args.quiet,
    )


def _loop_factory(choice: str) -> Any:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError(
                "--loop uvloop: uvloop is not installed (pip install tidegate[fast])"
            ) from None
        return None
    return uvloop.new_event_loop


def _handle_run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        options.check()
        factory = _loop_factory(args.loop)
    except ValueError as exc:
        print(f"tidegate-sim: {exc}", file=sys.stderr)
        return 2

    async def main() -> Any:
        return await Runner(options).run()

    with asyncio.Runner(loop_factory=factory) as runner:
        try:
            result = runner.run(main())
        except ValueError as exc:  # a bad --topic for the format, found building the fleet
            print(f"tidegate-sim: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({k: result.report[k] for k in ("run_id", "settings", "totals", "rate")}))
    elif not args.quiet:
        print(summary(result))
        if args.report is not None:
            print(f"  report: {args.report}")
    return 0 if result.clean else 1


def _add_verify(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="compare a run's report with the gateway's database",
        description="Compare what a run published and the broker acknowledged with what "
        "the gateway stored (read-only). Exit 0 only when nothing acknowledged is missing "
        "and nothing is stored twice or invented, and every faulty message was dead-lettered.",
    )
    p.add_argument("--report", type=Path, required=True, help="the run's --report file")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="the gateway's SQLite database")
    where.add_argument(
        "--store",
        metavar="URL",
        help="the central PostgreSQL store instead: postgresql://user@host:port/db"
        " (password from PGPASSWORD or ~/.pgpass)",
    )
    p.add_argument(
        "--gateway",
        metavar="ID",
        help="with --store: only this gateway's readings and dead letters",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(handler=_handle_verify, parser=p)


def _handle_verify(args: argparse.Namespace) -> int:
    from gateway.request import gateway_filter
    from simulators.verify import render, verify

    if args.gateway is not None and args.store is None:
        args.parser.error("--gateway needs --store (a gateway's own database holds only it)")
    verdict = verify(
        args.report, args.db, store_url=args.store, gateway=gateway_filter(args.gateway)
    )
    if args.json:
        print(json.dumps(verdict.as_dict()))
    else:
        print(render(verdict))
    return 0 if verdict.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidegate-sim",
        description="A fake sensor fleet for load tests, and end-to-end verification of tidegate.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_run(subparsers)
    _add_verify(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except TidegateError as exc:
        print(f"tidegate-sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
