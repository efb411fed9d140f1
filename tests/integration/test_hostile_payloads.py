"""Payloads built to hurt, against a real gateway process: CBOR semantic tags that
would run a regex compiler or the MIME parser, integers too large for ``str()``. Each is
dead-lettered with its reason, nothing else is lost, and the log holds no traceback."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cbor2
import pytest

from tests.support import (
    Broker,
    GatewayProcess,
    count,
    db_rows,
    publish_many,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

CBOR_SUBSCRIPTION = """
[[subscriptions]]
topic = "cbor/+"
format = "senml-cbor"
topic_template = "cbor/{gateway}"
"""


def test_hostile_cbor_is_dead_lettered_with_its_reason_and_no_traceback(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "hostile.db"
    cfg = write_config(
        tmp_path / "hostile.toml",
        broker.port,
        db,
        client_id="tidegate-hostile",
        extra=CBOR_SUBSCRIPTION,
    )
    gateway = GatewayProcess(cfg, tmp_path / "hostile.log").start()
    now_s = time.time()
    # A catastrophic regex, ~240 KB of it (within max_payload_bytes).
    regex = re.compile("(a|aa)+" * 30_000)
    hostile = {
        "regex": cbor2.dumps([{0: "a/b", 2: regex}]),
        "mime": cbor2.dumps(
            [{0: "a/b", 2: cbor2.CBORTag(36, "Content-Type: text/plain\n\n" + "x" * 1000)}]
        ),
        "bignum": cbor2.dumps([{0: "a/b", 2: 10**5000, 6: now_s}]),
        "deep": b"\x81" * 40 + b"\x01",
    }
    good = [cbor2.dumps([{0: f"dev{i}/t", 2: float(i), 6: now_s}]) for i in range(20)]
    messages = [(f"cbor/{name}", payload) for name, payload in hostile.items()]
    messages += [(f"cbor/good{i}", payload) for i, payload in enumerate(good)]
    try:
        publish_many(broker.port, messages, client_id="hostile-pub")
        wait_for(
            lambda: count(db, "dead_letters") >= len(hostile) and count(db) >= 20,
            30,
            what="all handled",
        )
        reasons = dict(db_rows(db, "SELECT topic, reason FROM dead_letters"))
        assert count(db) == 20
    finally:
        assert gateway.terminate() == 0, gateway.log_text()
    assert re.search(r"tag 35 at byte \d+ is not allowed", reasons["cbor/regex"]), reasons
    assert re.search(r"tag 36 at byte \d+ is not allowed", reasons["cbor/mime"]), reasons
    assert "integer of 2077 bytes" in reasons["cbor/bignum"], reasons
    assert "nesting deeper than 16" in reasons["cbor/deep"], reasons
    log = gateway.log_text()
    assert "Traceback" not in log
    assert "internal decoder error" not in log
