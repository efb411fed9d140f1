"""What the bench ran on: CPU, memory, and the versions that matter."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata
from typing import Any

from bench.broker import mosquitto_version


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_mb() -> int:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_mb": _mem_total_mb(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "mosquitto": mosquitto_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiomqtt": _version("aiomqtt"),
        "paho-mqtt": _version("paho-mqtt"),
        "aiosqlite": _version("aiosqlite"),
        "pydantic": _version("pydantic"),
        "uvloop": _version("uvloop"),
    }
