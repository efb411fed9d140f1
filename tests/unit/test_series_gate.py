"""The series gate: new series per message and in total, existing series always pass."""

from __future__ import annotations

from gateway.config import SubscriptionConfig
from gateway.models import Reading
from gateway.router import Router
from gateway.series_gate import SeriesGate
from gateway.validation import Limits

NOW = 1_732_000_000_000


def readings(sensors: range, metric: str = "t", unit: str | None = None) -> list[Reading]:
    return [Reading(f"s{i}", metric, NOW, 1.0, unit) for i in sensors]


def test_unseeded_gate_admits_everything() -> None:
    gate = SeriesGate(max_series=1, max_new_per_message=1)
    assert gate.admit(readings(range(100))) is None


def test_new_series_per_message_are_capped() -> None:
    gate = SeriesGate(max_series=0, max_new_per_message=3)
    gate.load([])
    refusal = gate.admit(readings(range(4)))
    assert refusal is not None
    assert "4 new series" in refusal and "storage.max_new_series_per_message = 3" in refusal
    assert gate.series == 0  # nothing of a refused message is counted
    assert gate.admit(readings(range(3))) is None
    assert gate.admit(readings(range(6))) is None  # only 3 of these are new
    assert gate.series == 6


def test_total_series_are_capped_but_existing_ones_pass() -> None:
    gate = SeriesGate(max_series=5, max_new_per_message=0)
    gate.load([("s0", "t", None, ()), ("s1", "t", "", ())])
    assert gate.admit(readings(range(5))) is None  # 3 new: 5 in all
    refusal = gate.admit(readings(range(5, 6)))
    assert refusal is not None
    assert "already holds 5" in refusal and "storage.max_series = 5" in refusal
    assert gate.admit(readings(range(5))) is None  # existing series keep flowing
    assert gate.admit(readings(range(1), unit="")) is None  # "" and None: one series
    assert gate.refused == 1


def test_tags_and_units_make_distinct_series() -> None:
    gate = SeriesGate(max_series=0, max_new_per_message=1)
    gate.load([("a", "t", "C", ())])
    assert gate.admit([Reading("a", "t", NOW, 1.0, "C", (("room", "k"),))]) is None
    assert gate.admit([Reading("a", "t", NOW, 1.0, "F"), Reading("a", "t", NOW, 1.0, "K")])


def test_router_dead_letters_a_refused_message_with_its_payload() -> None:
    gate = SeriesGate(max_series=0, max_new_per_message=2)
    gate.load([])
    router = Router([SubscriptionConfig(topic="t/#")], Limits(), 1 << 20, series_gate=gate)
    payload = b'{"sensor_id": "x", "a": 1, "b": 2, "c": 3}'
    envelope = router.route("t/x", payload, NOW)
    assert envelope.readings == []
    assert envelope.dead_letter is not None
    assert envelope.dead_letter.payload == payload
    assert "3 new series" in envelope.dead_letter.reason
    ok = router.route("t/x", b'{"sensor_id": "x", "a": 1, "b": 2}', NOW)
    assert len(ok.readings) == 2 and ok.dead_letter is None
