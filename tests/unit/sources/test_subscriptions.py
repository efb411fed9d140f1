"""Subscription reconciliation: the pure plan, the registry of owners and the durable
record of what each broker session holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.sources.subscriptions import (
    CONFIG_OWNER,
    FilterGroup,
    Record,
    Registry,
    SessionStore,
    broker_filter,
    plain_filter,
    plan,
)


async def _noop(_group: FilterGroup) -> bool:
    return True


def registry(shared_group: str | None = None, **groups: dict[str, int]) -> Registry:
    reg = Registry(shared_group)
    for owner, filters in groups.items():
        group = FilterGroup(owner, owner != "probe", _noop)
        group.set_initial(filters)
        reg.groups[owner] = group
    return reg


def test_new_session_subscribes_everything() -> None:
    reg = registry(config={"a/#": 1, "b/+": 0})
    change = plan(reg.wanted(True), {}, lambda o, f: reg.disowned(o, f, True))
    assert change.subscribe == {"a/#": 1, "b/+": 0}
    assert change.unsubscribe == []
    assert change.unchanged == 0
    assert set(change.target) == {"a/#", "b/+"}


def test_resumed_session_subscribes_added_and_unsubscribes_removed() -> None:
    reg = registry(config={"a/#": 1, "plant/#": 1})
    remembered: Record = {
        "a/#": (1, frozenset({CONFIG_OWNER})),
        "old/#": (1, frozenset({CONFIG_OWNER})),
    }
    change = plan(reg.wanted(True), remembered, lambda o, f: reg.disowned(o, f, True))
    assert change.subscribe == {"plant/#": 1}
    assert change.unsubscribe == ["old/#"]
    assert change.unchanged == 1
    assert set(change.target) == {"a/#", "plant/#"}


def test_changed_qos_is_subscribed_again() -> None:
    reg = registry(config={"a/#": 2})
    change = plan(
        reg.wanted(True),
        {"a/#": (1, frozenset({CONFIG_OWNER}))},
        lambda o, f: reg.disowned(o, f, True),
    )
    assert change.subscribe == {"a/#": 2}
    assert change.target["a/#"][0] == 2


def test_unknown_session_subscribes_all_and_unsubscribes_nothing() -> None:
    reg = registry(config={"a/#": 1})
    change = plan(reg.wanted(True), None, lambda o, f: reg.disowned(o, f, True))
    assert change.subscribe == {"a/#": 1}
    assert change.unsubscribe == []


def test_unsettled_owner_keeps_what_an_earlier_run_subscribed() -> None:
    reg = registry(config={"a/#": 1})
    discovery = FilterGroup("discovery", True, _noop)  # registered, not yet settled
    reg.groups["discovery"] = discovery
    remembered: Record = {
        "a/#": (1, frozenset({CONFIG_OWNER})),
        "z2m/lamp": (1, frozenset({"discovery"})),
        "z2m/gone": (1, frozenset({"discovery"})),
    }
    discovery.removed.add("z2m/gone")  # explicitly removed: goes even before settling
    change = plan(reg.wanted(True), remembered, lambda o, f: reg.disowned(o, f, True))
    assert change.subscribe == {}
    assert change.unsubscribe == ["z2m/gone"]
    assert change.target["z2m/lamp"] == (1, frozenset({"discovery"}))


def test_settled_owner_and_unregistered_owner_lose_their_old_filters() -> None:
    reg = registry(config={"a/#": 1}, discovery={"z2m/new": 1})
    remembered: Record = {
        "z2m/old": (1, frozenset({"discovery"})),
        "ha/#": (0, frozenset({"switched-off-feature"})),
    }
    change = plan(reg.wanted(True), remembered, lambda o, f: reg.disowned(o, f, True))
    assert change.subscribe == {"a/#": 1, "z2m/new": 1}
    assert sorted(change.unsubscribe) == ["ha/#", "z2m/old"]


def test_a_filter_wanted_by_two_owners_is_one_subscription_at_the_higher_qos() -> None:
    reg = registry(config={"a/#": 0}, discovery={"a/#": 1})
    wanted = reg.wanted(True)
    assert wanted == {"a/#": (1, frozenset({CONFIG_OWNER, "discovery"}))}
    # discovery drops it: config still wants it, so it stays (at config's QoS).
    reg.groups["discovery"].filters.clear()
    change = plan(reg.wanted(True), wanted, lambda o, f: reg.disowned(o, f, True))
    assert change.unsubscribe == []
    assert change.subscribe == {"a/#": 0}


def test_shared_group_prefix_and_non_shared_groups_only_on_the_first_connection() -> None:
    reg = registry("tg", config={"a/#": 1}, probe={"$SYS/broker/#": 0})
    assert set(reg.wanted(True)) == {"$share/tg/a/#", "$SYS/broker/#"}
    assert set(reg.wanted(False)) == {"$share/tg/a/#"}
    # A changed group name: the old shared filter is unsubscribed, the new one subscribed.
    remembered: Record = {"$share/old/a/#": (1, frozenset({CONFIG_OWNER}))}
    change = plan(reg.wanted(False), remembered, lambda o, f: reg.disowned(o, f, False))
    assert change.subscribe == {"$share/tg/a/#": 1}
    assert change.unsubscribe == ["$share/old/a/#"]


def test_broker_and_plain_filter() -> None:
    assert broker_filter("a/#", "g", True) == "$share/g/a/#"
    assert broker_filter("a/#", "g", False) == "a/#"
    assert broker_filter("a/#", None, True) == "a/#"
    assert plain_filter("$share/g/a/#") == "a/#"
    assert plain_filter("a/#") == "a/#"


async def test_group_validates_filters_and_applies_changes() -> None:
    applied: list[dict[str, int]] = []

    async def apply(group: FilterGroup) -> bool:
        applied.append(dict(group.filters))
        return True

    group = FilterGroup("discovery", True, apply)
    with pytest.raises(ValueError, match="last level"):
        await group.add("a/#/b")
    with pytest.raises(ValueError, match="plain filter"):
        await group.add("$share/g/a")
    with pytest.raises(ValueError, match="QoS"):
        await group.add("a", qos=3)
    assert await group.add("a/+", 0)
    assert await group.remove("a/+")
    assert not group.settled and group.removed == {"a/+"}
    assert await group.replace({"b": 1})
    assert group.settled
    assert applied == [{"a/+": 0}, {}, {"b": 1}]


def test_store_round_trip_and_unknown_sessions(tmp_path: Path) -> None:
    path = tmp_path / "db.subscriptions.json"
    store = SessionStore(path)
    assert store.load("h:1/c") is None
    record: Record = {"a/#": (1, frozenset({CONFIG_OWNER, "x"}))}
    store.save("h:1/c", record)
    again = SessionStore(path)
    assert again.load("h:1/c") == record
    assert again.load("h:1/other") is None
    data = json.loads(path.read_text())
    assert data["sessions"]["h:1/c"]["a/#"] == {"qos": 1, "owners": ["config", "x"]}
    assert not (tmp_path / "db.subscriptions.json.tmp").exists()


def test_store_unreadable_file_means_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    assert SessionStore(path).load("k") is None
    assert "unreadable" in caplog.text
    path.write_text('{"sessions": {"k": {"a": {"qos": "x"}}}}')
    assert SessionStore(path).load("k") is None


def test_store_in_memory_only() -> None:
    store = SessionStore(None)
    store.save("k", {"a": (0, frozenset({"config"}))})
    assert store.load("k") == {"a": (0, frozenset({"config"}))}
