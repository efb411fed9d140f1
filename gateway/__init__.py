"""tidegate: an IoT sensor ingestion gateway (MQTT in, validated readings out to SQLite).

The PUBACK for a QoS 1 message goes out only after its readings (or its dead letter)
are committed, so a crash at any moment loses nothing and duplicates nothing.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source of truth: pyproject.toml's version, as installed (wheel, image, venv).
    __version__ = version("tidegate")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
