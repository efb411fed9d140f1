"""Entry point of the ``tidegate`` command.

Exit codes: 0 success, 1 a runtime error (printed as one line), 2 bad configuration
or usage (one line naming the key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import ConfigError, TidegateError

# Subcommand modules, in help order. Each has register(subparsers).
COMMANDS = (
    "run",
    "serve",
    "check_config",
    "query",
    "sensors",
    "stats",
    "decode",
    "discovery",
    "dead_letters",
    "aggregate",
    "backup",
    "restore",
    "vacuum",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidegate",
        description="IoT sensor ingestion gateway: MQTT in, validated readings out to SQLite.",
    )
    parser.add_argument("--version", action="version", version=f"tidegate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"gateway.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except ConfigError as exc:
        print(f"tidegate: {exc}", file=sys.stderr)
        return 2
    except TidegateError as exc:
        print(f"tidegate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `tidegate query | head`: the reader left; not an error.
        sys.stderr.close()
        return 0
    return int(result or 0)
