"""The router turns a codec failure into a dead letter and one rate-limited log line,
never a traceback per message."""

from __future__ import annotations

import logging

import pytest

from gateway.config import SubscriptionConfig
from gateway.router import Router
from gateway.validation import Limits


def test_codec_crash_is_a_dead_letter_and_one_log_line_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router([SubscriptionConfig(topic="t/#")], Limits(), 1024)

    def broken(payload: bytes, ctx: object) -> object:
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")

    object.__setattr__(router.routes[0], "codec", broken)
    caplog.set_level(logging.WARNING, logger="gateway.router")
    envelopes = [router.route("t/x", b"payload") for _ in range(100)]
    assert all(e.dead_letter is not None for e in envelopes)
    reason = envelopes[0].dead_letter.reason  # type: ignore[union-attr]
    assert reason.startswith("internal decoder error: ValueError: Exceeds the limit")
    records = [r for r in caplog.records if r.name == "gateway.router"]
    assert len(records) == 1
    assert records[0].exc_info is None and "Traceback" not in caplog.text
    assert "ValueError" in records[0].getMessage()
