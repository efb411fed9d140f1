"""Pieces shared by several subcommands: config loading, database opening, logging."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from gateway.config import Settings, load_settings
from gateway.sinks.sqlite import open_readonly


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="config file (default: $TIDEGATE_CONFIG or ./config.toml if present)",
    )


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--db", type=Path, default=None, help="database file (overrides storage.path)"
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from ``--config`` plus the environment."""
    return load_settings(getattr(args, "config", None))


def db_path(args: argparse.Namespace) -> Path:
    """``--db`` if given, else ``storage.path`` from the config."""
    if getattr(args, "db", None) is not None:
        return Path(args.db)
    return settings_from(args).storage.path


def open_db(args: argparse.Namespace) -> tuple[sqlite3.Connection, Path]:
    """A read-only connection to the database the command should read."""
    path = db_path(args)
    return open_readonly(path), path


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
