"""Is the gateway really ingesting? Publish a probe and watch it arrive in the database.

A gateway logs "connected" before its subscriptions are granted, and a broker drops
(yet acknowledges) messages published to a topic nobody subscribes to yet. So a run
that starts publishing the moment the gateway says "connected" can lose its first
messages *before* the gateway ever saw them, and ``verify`` would rightly call them
missing. :func:`wait_until_ingesting` closes that gap: it publishes a small,
deliberately undecodable probe to a subscribed topic until the probe shows up in the
gateway's dead letters (read through the gateway's read interface) — proof that the whole path, subscription included,
works. The probe costs one dead-letter row, marked ``tidegate-probe``.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from pathlib import Path

from gateway.config import StorageConfig
from gateway.errors import StorageError
from gateway.storage.backends import read_store
from gateway.storage.base import Selection
from simulators.aio import run_sync
from simulators.mqtt import connect_packet, publish_packet

PROBE_MARKER = b"tidegate-probe"


def publish_once(host: str, port: int, topic: str, payload: bytes, timeout: float = 5.0) -> bool:
    """Publish one QoS 1 message with a throwaway client; True once the broker acked."""
    client_id = f"tidegate-probe-{secrets.token_hex(4)}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect_packet(client_id, 10))
            if sock.recv(4)[:1] != b"\x20":
                return False
            sock.sendall(publish_packet(topic.encode(), payload, 1, 1))
            ack = sock.recv(4)
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")
            return ack[:1] == b"\x40"
    except OSError:
        return False


async def _probe_found(db: Path, token: bytes) -> bool:
    store = read_store(StorageConfig(), path=db, threads=1, timeout_s=5.0)
    try:
        selection = Selection(payload_contains=token)
        return any([chunk async for chunk in store.stream_dead_letters(selection, limit=1)])
    except StorageError:
        return False  # the gateway has not created its tables yet
    finally:
        await store.close()


def _probe_stored(db: Path, token: bytes) -> bool:
    if not db.exists():
        return False
    return run_sync(_probe_found(db, token))


def wait_until_ingesting(
    host: str, port: int, topic: str, db: Path, timeout: float = 30.0, interval: float = 0.5
) -> bool:
    """Publish probes to ``topic`` until one reaches ``db``'s dead letters; False on timeout."""
    token = PROBE_MARKER + b":" + secrets.token_hex(4).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish_once(host, port, topic, token + b" (not a reading: checks the subscription)")
        step_end = min(deadline, time.monotonic() + interval)
        while time.monotonic() < step_end:
            if _probe_stored(db, token):
                return True
            time.sleep(0.05)
    return False
