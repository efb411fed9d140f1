"""The pipeline: ack only after commit, group commit, retries, backpressure, drain on stop."""

from __future__ import annotations

import asyncio

from gateway.config import PipelineConfig
from gateway.models import DeadLetter, Envelope, Reading
from gateway.pipeline import Pipeline
from gateway.storage.memory import MemoryStore

NOW = 1_732_000_000_000


def envelope(
    i: int, acks: list[int], sink: MemoryStore | None = None, readings: int = 1
) -> Envelope:
    def ack() -> None:
        if sink is not None:
            # The ack must come after the reading is durable.
            assert any(r.ts_ms == NOW + i * 1000 for r in sink.stored.values())
        acks.append(i)

    rs = [Reading("s", f"m{j}", NOW + i * 1000, float(i)) for j in range(readings)]
    return Envelope(rs, ack=ack, subscription="sub")


async def test_acks_only_after_commit_and_drains_on_stop() -> None:
    sink = MemoryStore()
    pipeline = Pipeline(sink, PipelineConfig(batch_size=10))
    pipeline.start()
    acks: list[int] = []
    for i in range(95):
        await pipeline.submit(envelope(i, acks, sink))
    assert await pipeline.stop(5)
    assert sorted(acks) == list(range(95))
    assert len(sink.stored) == 95
    assert pipeline.metrics.readings_stored == 95
    assert pipeline.metrics.batches >= 10  # batch_size bounds each transaction


async def test_group_commit_when_queue_runs_dry() -> None:
    sink = MemoryStore()
    pipeline = Pipeline(sink, PipelineConfig(batch_size=1000, flush_interval_ms=60_000))
    pipeline.start()
    acks: list[int] = []
    await pipeline.submit(envelope(1, acks))
    # No timer and no full batch: the writer commits because the queue ran dry.
    for _ in range(200):
        if acks:
            break
        await asyncio.sleep(0.01)
    assert acks == [1]
    await pipeline.stop(5)


async def test_linger_mode_waits_for_interval() -> None:
    sink = MemoryStore()
    pipeline = Pipeline(
        sink, PipelineConfig(batch_size=1000, flush_interval_ms=200, commit_on_idle=False)
    )
    pipeline.start()
    acks: list[int] = []
    for i in range(5):
        await pipeline.submit(envelope(i, acks))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assert sorted(acks) == list(range(5))
    assert sink.batches == 1
    await pipeline.stop(5)


async def test_failed_write_is_retried_and_nothing_acked_meanwhile() -> None:
    sink = MemoryStore()
    sink.fail_next = 3
    pipeline = Pipeline(sink, PipelineConfig(retry_max_s=0.05))
    pipeline.start()
    acks: list[int] = []
    await pipeline.submit(envelope(1, acks, sink))
    await asyncio.sleep(0.01)
    assert acks == []
    for _ in range(300):
        if acks:
            break
        await asyncio.sleep(0.01)
    assert acks == [1]
    assert pipeline.metrics.write_errors == 3
    assert pipeline.metrics.storage_ok
    await pipeline.stop(5)


async def test_full_queue_blocks_submit() -> None:
    sink = MemoryStore()
    sink.fail_next = 10**9  # the writer can never commit
    pipeline = Pipeline(sink, PipelineConfig(queue_size=3, retry_max_s=0.01))
    pipeline.start()
    acks: list[int] = []
    for i in range(4):  # one is held by the writer, three fill the queue
        await asyncio.wait_for(pipeline.submit(envelope(i, acks)), 1)
    blocked = asyncio.ensure_future(pipeline.submit(envelope(9, acks)))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # backpressure, not a drop
    assert pipeline.metrics.storage_ok is False
    sink.fail_next = 0
    await asyncio.wait_for(blocked, 5)
    assert await pipeline.stop(5)
    assert sorted(acks) == [0, 1, 2, 3, 9]


async def test_stop_timeout_leaves_uncommitted_unacked() -> None:
    sink = MemoryStore()
    sink.fail_next = 10**9
    pipeline = Pipeline(sink, PipelineConfig(retry_max_s=0.01))
    pipeline.start()
    acks: list[int] = []
    await pipeline.submit(envelope(1, acks))
    assert await pipeline.stop(0.2) is False
    assert acks == []


async def test_empty_message_acked_at_once_and_dead_letters_committed() -> None:
    sink = MemoryStore()
    pipeline = Pipeline(sink, PipelineConfig())
    pipeline.start()
    acks: list[str] = []
    await pipeline.submit(
        Envelope([], ack=lambda: acks.append("empty"), subscription="a", skipped=2)
    )
    assert acks == ["empty"]
    dead = DeadLetter(NOW, "t", b"junk", "invalid JSON", "a")
    await pipeline.submit(Envelope([], dead, ack=lambda: acks.append("dead"), subscription="a"))
    await pipeline.stop(5)
    assert acks == ["empty", "dead"]
    assert sink.dead_letters == [dead]
    m = pipeline.metrics
    assert (m.messages_received, m.messages_empty, m.leaves_skipped, m.messages_dead_lettered) == (
        2,
        1,
        2,
        1,
    )


async def test_skipped_counts_fields_per_subscription_not_messages() -> None:
    pipeline = Pipeline(MemoryStore(), PipelineConfig())
    pipeline.start()
    reading = Reading("s", "m", NOW, 1.0)
    await pipeline.submit(Envelope([], subscription="a", skipped=3))  # nothing storable
    await pipeline.submit(Envelope([reading], subscription="a", skipped=2))  # some stored
    await pipeline.submit(Envelope([], subscription="a"))  # an empty message
    await pipeline.stop(5)
    m = pipeline.metrics
    assert (m.leaves_skipped, m.messages_empty) == (5, 2)
    assert m.by_subscription["a"].skipped == 5
