"""The connection table: per-client and total caps, eviction of waiting connections
(the hoarding client's first), refusal only when nothing can give way."""

from __future__ import annotations

from gateway.api.connections import ConnectionTable


def test_room_is_given_until_the_caps() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=4, per_client=2)
    assert table.admit("a1", "A").accepted
    assert table.admit("b1", "B").accepted
    assert len(table) == 2 and table.stats.open == 2
    assert table.count("A") == 1


def test_a_client_at_its_cap_loses_its_own_oldest_waiting_connection() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=10, per_client=2)
    table.admit("a1", "A")
    table.admit("a2", "A")
    table.admit("b1", "B")
    admission = table.admit("a3", "A")
    assert admission.accepted and admission.evict == "a1"
    assert table.count("A") == 2 and table.count("B") == 1
    assert table.stats.closed["evicted"] == 1


def test_busy_connections_are_never_evicted_and_waiting_again_makes_them_newest() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=10, per_client=2)
    table.admit("a1", "A")
    table.admit("a2", "A")
    table.busy("a1")
    assert table.admit("a3", "A").evict == "a2"
    table.waiting("a1")  # a1 answered: now the newest waiting one
    assert table.admit("a4", "A").evict == "a3"


def test_refused_when_nothing_can_give_way_and_refusals_are_bounded() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=2, per_client=2)
    table.admit("a1", "A")
    table.admit("a2", "A")
    table.busy("a1")
    table.busy("a2")
    first = table.admit("a3", "A")
    assert not first.accepted and first.answer
    assert table.count("A") == 2 and table.refused_open == 1
    second = table.admit("a4", "A")
    assert not second.accepted and second.answer
    third = table.admit("a5", "A")
    assert not third.accepted and not third.answer  # two refused already waiting
    table.refused_closed()
    assert table.refused_open == 1
    assert table.stats.closed["refused"] == 3


def test_at_the_total_cap_the_hoarding_client_gives_way() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=4, per_client=4)
    table.admit("lone", "L")
    table.admit("h1", "H")
    table.admit("h2", "H")
    table.admit("h3", "H")
    admission = table.admit("new", "N")
    assert admission.accepted and admission.evict == "h1"
    assert table.count("L") == 1 and table.count("H") == 2


def test_total_cap_with_everything_busy_refuses() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=2, per_client=4)
    for conn in ("x", "y"):
        table.admit(conn, "A")
        table.busy(conn)
    assert not table.admit("z", "B").accepted


def test_remove_forgets_and_is_idempotent() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=2, per_client=2)
    table.admit("a1", "A")
    table.remove("a1")
    table.remove("a1")
    table.busy("a1")
    table.waiting("a1")
    assert len(table) == 0 and table.count("A") == 0 and table.stats.open == 0


def test_a_connection_whose_request_has_arrived_is_spared() -> None:
    table: ConnectionTable[str] = ConnectionTable(total=10, per_client=2)
    table.admit("a1", "A")
    table.admit("a2", "A")
    pending = {"a1"}  # a1's request bytes are in its socket, not read yet
    assert table.admit("a3", "A", spare=pending.__contains__).evict == "a2"
    pending = {"a1", "a3"}
    refused = table.admit("a4", "A", spare=pending.__contains__)
    assert not refused.accepted and refused.evict is None
