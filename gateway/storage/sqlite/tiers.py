"""Answer bucketed queries from the coarsest tier that can, and say which.

A query asks for buckets of ``bucket_ms`` (epoch aligned) over ``[since, until)``. Each
bucket, clipped to the range, is answered by exactly one source, chosen coarsest
first (``1h``, ``1m``, then ``raw``). Tier *T* can answer a clipped bucket when

* ``bucket_ms`` is a multiple of *T*'s size (a bucket is a whole number of *T* rows),
* both clipped ends fall on *T* boundaries (edge buckets of an unaligned range go to a
  finer tier, so the result equals what raw data gives), and
* the clipped end is at or below *T*'s watermark (the rollup has caught up there).

So an hourly query over the last week reads ~168 hourly rows plus the still-open
last hour from minutes and its last seconds from raw readings: every bucket says which
tier answered it. Raw data older than ``storage.retention.raw`` is gone, so old ranges
are answered by the tiers or not at all.

Late data: a late reading marks its minute dirty in the same transaction that stores
it, and the maintenance service rebuilds the bucket shortly after. Until then, for that
series, the tiers count as complete only below its earliest dirty minute, so its
buckets from there on are answered from raw readings: results are exact at all times.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway import request
from gateway.storage.sqlite.rollups import TIERS, WATERMARK, get_state

Values = dict[str, float | int | None]


@dataclass(frozen=True, slots=True)
class Segment:
    """Query buckets ``[lo, hi)`` (already clipped to the range) answered by ``tier``."""

    tier: str
    lo: int
    hi: int


def watermarks(conn: sqlite3.Connection) -> dict[str, int]:
    """Each tier's watermark (0 when the database has no rollups, e.g. version 1)."""
    return {tier.name: get_state(conn, WATERMARK[tier.name]) or 0 for tier in TIERS}


def _pick(lo: int, hi: int, bucket_ms: int, marks: dict[str, int], allowed: Sequence[str]) -> str:
    for tier in TIERS:
        if tier.name not in allowed:
            continue
        size = tier.size_ms
        if bucket_ms % size or lo % size or hi % size or hi > marks[tier.name]:
            continue
        return tier.name
    return "raw"


def _segments(
    since_ms: int, until_ms: int, bucket_ms: int, marks: dict[str, int], allowed: Sequence[str]
) -> list[Segment]:
    segments: list[Segment] = []
    start = since_ms - since_ms % bucket_ms
    # Every middle bucket has the same alignment, so only the first, the last and the
    # watermark crossings can change the answer; walking all buckets keeps it obvious
    # and costs microseconds per bucket (buckets are bounded by the caller).
    while start < until_ms:
        lo, hi = max(start, since_ms), min(start + bucket_ms, until_ms)
        name = _pick(lo, hi, bucket_ms, marks, allowed) if allowed else "raw"
        if segments and segments[-1].tier == name and segments[-1].hi == lo:
            segments[-1] = Segment(name, segments[-1].lo, hi)
        else:
            segments.append(Segment(name, lo, hi))
        start += bucket_ms
    return segments


class Planner:
    """Which tier answers which buckets, per series.

    ``tier``: ``auto`` (coarsest that answers), ``raw`` (raw readings only), or ``1m`` /
    ``1h`` (that tier where it can answer, raw elsewhere).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        since_ms: int,
        until_ms: int,
        bucket_ms: int,
        tier: str = "auto",
    ) -> None:
        request.tier(tier)
        self.since_ms, self.until_ms, self.bucket_ms = since_ms, until_ms, bucket_ms
        self.allowed: tuple[str, ...] = (
            () if tier == "raw" else tuple(t.name for t in TIERS) if tier == "auto" else (tier,)
        )
        self.marks = watermarks(conn) if self.allowed else {}
        self.dirty: dict[int, int] = {}
        if self.allowed:
            try:
                self.dirty = dict(
                    conn.execute(
                        "SELECT series_id, min(bucket) FROM rollup_dirty GROUP BY series_id"
                    ).fetchall()
                )
            except sqlite3.OperationalError:
                self.dirty = {}  # a version-1 database: no rollups at all
        self.common = _segments(since_ms, until_ms, bucket_ms, self.marks, self.allowed)

    def segments(self, series_id: int | None = None) -> list[Segment]:
        """The plan for ``series_id`` (the common plan unless it has pending late data)."""
        floor = self.dirty.get(series_id) if series_id is not None else None
        if floor is None:
            return self.common
        marks = {name: min(mark, floor) for name, mark in self.marks.items()}
        return _segments(self.since_ms, self.until_ms, self.bucket_ms, marks, self.allowed)


def plan(
    conn: sqlite3.Connection, since_ms: int, until_ms: int, bucket_ms: int, tier: str = "auto"
) -> list[Segment]:
    """The segments answering ``[since, until)`` in ``bucket_ms`` buckets for a series
    without pending late data (see :class:`Planner`)."""
    return Planner(conn, since_ms, until_ms, bucket_ms, tier).common


# One pass over the readings view: joining the view again for each bucket's last value
# made SQLite run the whole aggregate once per table of the view (2× the hot-table scan).
_RAW = """
SELECT b, min(value), max(value), sum(value), count(*), vlast, max(ts)
FROM (
    SELECT ts / :bucket AS b, ts, value,
           last_value(value) OVER (
               PARTITION BY ts / :bucket ORDER BY ts
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
           ) AS vlast
    FROM readings WHERE series_id = :sid AND ts >= :lo AND ts < :hi
)
GROUP BY b ORDER BY b
"""

_TIER = """
SELECT g.b, g.vmin, g.vmax, g.vsum, g.n, t.vlast, g.last_ts
FROM (
    SELECT bucket / :bucket AS b, min(vmin) AS vmin, max(vmax) AS vmax, sum(vsum) AS vsum,
           sum(n) AS n, max(last_ts) AS last_ts
    FROM {table} WHERE series_id = :sid AND bucket >= :lo AND bucket < :hi GROUP BY b
) AS g
JOIN {table} AS t ON t.series_id = :sid AND t.bucket = (g.last_ts / :size) * :size
ORDER BY g.b
"""

_TABLES = {tier.name: (tier.table, tier.size_ms) for tier in TIERS}


def aggregate_series(
    conn: sqlite3.Connection, series_id: int, segments: Sequence[Segment], bucket_ms: int
) -> Iterator[tuple[int, str, Values]]:
    """``(bucket_start_ms, tier, values)`` for one series, in time order; ``values`` has
    min, max, avg, sum, count and last."""
    for segment in segments:
        params = {"sid": series_id, "lo": segment.lo, "hi": segment.hi, "bucket": bucket_ms}
        if segment.tier == "raw":
            sql = _RAW
        else:
            table, size = _TABLES[segment.tier]
            sql = _TIER.format(table=table)
            params["size"] = size
        for b, vmin, vmax, vsum, n, vlast, _last_ts in conn.execute(sql, params):
            yield (
                b * bucket_ms,
                segment.tier,
                {"min": vmin, "max": vmax, "avg": vsum / n, "sum": vsum, "count": n, "last": vlast},
            )


def summary(segments: Sequence[Segment]) -> str:
    """``"1h"`` or ``"1h+1m+raw"``: the tiers a plan uses, coarsest first."""
    order = [t.name for t in TIERS] + ["raw"]
    used = {s.tier for s in segments}
    return "+".join(name for name in order if name in used) or "raw"
