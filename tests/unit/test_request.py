"""The request vocabulary: one set of rules and messages for the CLI, the API and the
stores (``gateway/request.py``)."""

from __future__ import annotations

import contextlib
import io

import pytest

from gateway import request
from gateway.cli.main import main
from gateway.errors import QueryError
from gateway.request import AggregateQuery, Limit, ReadingsQuery

NOW = 1_700_000_000_000
HOUR = 3_600_000


def test_aggregates_one_rule_whoever_asks() -> None:
    assert request.aggregates([]) == ("avg",)
    assert request.aggregates(["MIN, max", "min", ""]) == ("min", "max")
    for name in ("agg", "--agg"):
        with pytest.raises(QueryError, match=rf"^{name}: unknown aggregate 'median'; choose from"):
            request.aggregates(["min,median"], name)


def test_times_durations_and_buckets_name_what_was_wrong() -> None:
    assert request.time_ms("2h", "from", NOW) == NOW - 2 * HOUR
    assert request.time_ms("2023-11-14T22:13:20Z", "--since") == NOW
    assert request.time_ms("1700000000", "x") == NOW
    with pytest.raises(QueryError, match=r"^--since: bad time 'soon'"):
        request.time_ms("soon", "--since")
    for bad in ("1e400", "nan", "-5", "99999-01-01"):
        with pytest.raises(QueryError, match=r"^from: "):
            request.time_ms(bad, "from", NOW)
    assert request.duration_ms("90s", "--older-than") == 90_000
    with pytest.raises(QueryError, match=r"^--older-than: bad duration"):
        request.duration_ms("1 fortnight", "--older-than")
    assert request.bucket_ms("1h", "--bucket") == HOUR
    with pytest.raises(QueryError, match=r"^--bucket must be between 1s and any length"):
        request.bucket_ms("500ms", "--bucket")
    with pytest.raises(QueryError, match=r"^bucket must be between 1s and 3600s"):
        request.bucket_ms("2h", "bucket", HOUR)
    assert request.tier("1m") == "1m"
    with pytest.raises(QueryError, match=r"^tier: unknown tier 'daily'"):
        request.tier("daily")


def test_time_ranges_and_limits_say_which_setting() -> None:
    span = request.time_range(None, None, now_ms=NOW, default_span_ms=HOUR)
    assert (span.since_ms, span.until_ms) == (NOW - HOUR, NOW)
    assert (
        request.time_range(None, None, now_ms=NOW, default_span_ms=HOUR, open_end=True).until_ms
        is None
    )
    with pytest.raises(QueryError, match=r"^from must be before to$"):
        request.time_range(NOW, NOW - 1, now_ms=NOW, default_span_ms=HOUR, names=("from", "to"))
    with pytest.raises(QueryError, match=r"limit of 3600s \(api.max_range\); narrow from/to"):
        request.time_range(
            NOW - 2 * HOUR,
            None,
            now_ms=NOW,
            default_span_ms=HOUR,
            max_range=Limit(HOUR, "api.max_range"),
            names=("from", "to"),
        )
    with pytest.raises(
        QueryError, match=r"^more than 10 buckets per series \(--max-buckets\); use a larger"
    ):
        request.check_buckets(0, 11 * 1000, 1000, Limit(10, "--max-buckets"))


def test_queries_check_themselves_when_built() -> None:
    with pytest.raises(QueryError, match="limit must be >= 0"):
        ReadingsQuery(limit=-1)
    with pytest.raises(QueryError, match="before its end"):
        ReadingsQuery(since_ms=5, until_ms=5)
    good = {"since_ms": 0, "until_ms": HOUR, "bucket_ms": 60_000}
    assert AggregateQuery(**good).aggregates == ("avg",)
    with pytest.raises(QueryError, match="unknown aggregate 'median'"):
        AggregateQuery(**good, aggregates=("median",))
    with pytest.raises(QueryError, match="unknown tier"):
        AggregateQuery(**good, tier="5m")
    with pytest.raises(QueryError, match=r"more than 10 buckets per series \(api.max_buckets\)"):
        AggregateQuery(**good, max_buckets=Limit(10, "api.max_buckets"))
    with pytest.raises(TypeError):
        AggregateQuery(0, HOUR, 60_000)  # type: ignore[misc]  # keyword-only: no mix-ups


def test_the_cli_speaks_the_same_vocabulary(tmp_path: pytest.TempPathFactory) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["aggregate", "--db", "/nonexistent.db", "--bucket", "500ms"]) == 1
        assert main(["aggregate", "--db", "/nonexistent.db", "--agg", "p99"]) == 1
        assert main(["query", "--db", "/nonexistent.db", "--since", "soon"]) == 1
    lines = err.getvalue().splitlines()
    assert lines == [
        "tidegate: error: --bucket must be between 1s and any length",
        "tidegate: error: --agg: unknown aggregate 'p99'; choose from min, max, avg, sum, count, last",
        "tidegate: error: --since: bad time 'soon': use ISO 8601, epoch seconds, 'now' or a"
        " duration like 2h",
    ]
