"""Which tier answers which aggregate bucket in the central store, and the SQL of each.

The rule is the edge's (:mod:`gateway.storage.sqlite.tiers`): each query bucket,
clipped to ``[since, until)``, is answered by exactly one source, the coarsest that is
exact there — ``1h``, ``1m``, else ``raw`` — and says which (``Bucket.tier``). Tier *T*
can answer a clipped bucket when ``bucket_ms`` is a multiple of *T*'s size and both
clipped ends fall on *T* boundaries (so the answer equals what raw readings give), and

* (central) no pending mark of the series lies inside the bucket. Every write marks the
  minutes it touched in ``tidegate.rollup_pending`` in the same transaction as the
  readings, and maintenance rebuilds those minutes and their hours and deletes the marks
  in one transaction (SCHEMA.md), so a bucket without marks is exact in every tier and a
  bucket with one is answered from raw readings. The edge's watermark is not needed.

Raw readings older than the raw retention are gone (their partitions dropped), so old
ranges are answered by the tiers where these allow, as on the edge.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from gateway import request

HOUR_MS = 3_600_000
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    table: str
    size_ms: int


TIERS = (Tier("1h", "tidegate.rollup_1h", HOUR_MS), Tier("1m", "tidegate.rollup_1m", MINUTE_MS))
"""Coarsest first."""
_BY_NAME = {tier.name: tier for tier in TIERS}


@dataclass(frozen=True, slots=True)
class Segment:
    """Query buckets ``[lo, hi)`` (already clipped to the range) answered by ``tier``."""

    tier: str
    lo: int
    hi: int


def _pick(lo: int, hi: int, bucket_ms: int, allowed: Sequence[str]) -> str:
    for tier in TIERS:
        if tier.name not in allowed:
            continue
        size = tier.size_ms
        if bucket_ms % size or lo % size or hi % size:
            continue
        return tier.name
    return "raw"


def _append(segments: list[Segment], tier: str, lo: int, hi: int) -> None:
    if lo >= hi:
        return
    if segments and segments[-1].tier == tier and segments[-1].hi == lo:
        segments[-1] = Segment(tier, segments[-1].lo, hi)
    else:
        segments.append(Segment(tier, lo, hi))


class Planner:
    """The plan of one aggregate query: the common one (a series without pending marks
    in the range) and, per series with marks, that plan with the marked buckets moved to
    raw. ``tier``: ``auto``, ``raw``, or ``1m`` / ``1h`` (that tier where it can answer,
    raw elsewhere)."""

    def __init__(self, since_ms: int, until_ms: int, bucket_ms: int, tier: str = "auto") -> None:
        request.tier(tier)
        self.since_ms, self.until_ms, self.bucket_ms = since_ms, until_ms, bucket_ms
        self.allowed: tuple[str, ...] = (
            () if tier == "raw" else tuple(t.name for t in TIERS) if tier == "auto" else (tier,)
        )
        self.common = self._segments()

    @property
    def uses_tiers(self) -> bool:
        """Whether any bucket may come from a rollup (else marks need not be read)."""
        return any(s.tier != "raw" for s in self.common)

    def _segments(self) -> list[Segment]:
        segments: list[Segment] = []
        bucket = self.bucket_ms
        start = self.since_ms - self.since_ms % bucket
        # Only the first and the last bucket can differ in alignment; walking every bucket
        # keeps it obvious and costs microseconds each (buckets are bounded per query).
        while start < self.until_ms:
            lo, hi = max(start, self.since_ms), min(start + bucket, self.until_ms)
            _append(
                segments, _pick(lo, hi, bucket, self.allowed) if self.allowed else "raw", lo, hi
            )
            start += bucket
        return segments

    def segments(self, marks: Sequence[int] = ()) -> list[Segment]:
        """The plan for a series whose pending marks (minute starts, sorted) in the range
        are ``marks``: the common plan, each bucket holding a mark answered from raw."""
        if not marks:
            return self.common
        bucket = self.bucket_ms
        out: list[Segment] = []
        for seg in self.common:
            if seg.tier == "raw":
                _append(out, "raw", seg.lo, seg.hi)
                continue
            cursor = seg.lo
            i = bisect.bisect_left(marks, seg.lo)
            while i < len(marks) and marks[i] < seg.hi:
                b_lo = max(seg.lo, marks[i] - marks[i] % bucket)
                b_hi = min(seg.hi, b_lo - b_lo % bucket + bucket)
                _append(out, seg.tier, cursor, b_lo)
                _append(out, "raw", max(cursor, b_lo), b_hi)
                cursor = max(cursor, b_hi)
                i = bisect.bisect_left(marks, b_hi, i)
            _append(out, seg.tier, cursor, seg.hi)
        return out


# Bucket starts by date_bin from the Unix epoch: exact integer arithmetic on microseconds
# (the stride has no months), the same floor(ts / bucket) * bucket as the edge's ts / :bucket.
# The bucket's last value is found by its last timestamp, one primary-key probe per bucket
# (an ordered array_agg would sort every bucket's rows).
RAW_SQL = """
SELECT g.series_id, g.b, g.vmin, g.vmax, g.vsum, g.n, r.value
FROM (
    SELECT series_id, date_bin($2::interval, ts, timestamptz 'epoch') AS b,
           min(value) AS vmin, max(value) AS vmax, sum(value) AS vsum, count(*) AS n,
           max(ts) AS last_ts
    FROM tidegate.readings_data
    WHERE series_id = ANY($1::bigint[]) AND ts >= $3 AND ts < $4
    GROUP BY 1, 2
) AS g
JOIN tidegate.readings_data AS r ON r.series_id = g.series_id AND r.ts = g.last_ts
"""

TIER_SQL = """
SELECT g.series_id, g.b, g.vmin, g.vmax, g.vsum, g.n, t.vlast
FROM (
    SELECT series_id, date_bin($2::interval, bucket, timestamptz 'epoch') AS b,
           min(vmin) AS vmin, max(vmax) AS vmax, sum(vsum) AS vsum, sum(n)::bigint AS n,
           max(last_ts) AS last_ts
    FROM {table}
    WHERE series_id = ANY($1::bigint[]) AND bucket >= $3 AND bucket < $4
    GROUP BY 1, 2
) AS g
JOIN {table} AS t
  ON t.series_id = g.series_id AND t.bucket = date_bin($5::interval, g.last_ts, timestamptz 'epoch')
"""


def tier_sql(name: str) -> tuple[str, int]:
    """The aggregate SQL of rollup tier ``name`` and that tier's size."""
    tier = _BY_NAME[name]
    return TIER_SQL.format(table=tier.table), tier.size_ms
