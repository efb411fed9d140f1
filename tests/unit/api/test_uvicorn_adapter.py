"""The h11 protocol subclass over a fake transport, against the installed uvicorn: the
header timeout (with and without bytes received), the send timeout, refusals and
evictions. A uvicorn upgrade that moves what the adapter relies on fails here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.api._uvicorn_adapter import GuardedH11Protocol, protocol_class
from gateway.api.connections import ConnectionTable


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__()
        self.peer = peer
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.buffered = 0
        self.protocol: asyncio.Protocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def make(
    table: ConnectionTable[Any], header_s: float = 0.2, send_s: float = 0.2, app: Any = ok_app
) -> tuple[type[GuardedH11Protocol], uvicorn.Config]:
    config = uvicorn.Config(app, http="h11", lifespan="off", log_config=None)
    return protocol_class(table, header_s, send_s), config


def connect(
    cls: Any, config: uvicorn.Config, state: ServerState, peer: str = "127.0.0.1"
) -> tuple[GuardedH11Protocol, FakeTransport]:
    protocol = cls(config=config, server_state=state, app_state={})
    transport = FakeTransport(peer)
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def test_silent_connection_is_closed_without_a_response() -> None:
    table: ConnectionTable[Any] = ConnectionTable(10, 10)
    cls, config = make(table)
    _protocol, transport = connect(cls, config, ServerState())
    await asyncio.sleep(0.35)
    assert transport.closed and transport.written == b""
    await asyncio.sleep(0)
    assert len(table) == 0 and table.stats.closed["header_timeout"] == 1


async def test_partial_headers_get_408_once_the_timeout_passes() -> None:
    table: ConnectionTable[Any] = ConnectionTable(10, 10)
    cls, config = make(table, header_s=0.3)
    protocol, transport = connect(cls, config, ServerState())
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(5):  # bytes keep coming, the headers never end
        await asyncio.sleep(0.1)
        if transport.closed:
            break
        protocol.data_received(b"X-a: b\r\n")
    assert transport.closed
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def closed_within(transport: FakeTransport, seconds: float) -> float:
    """Loop time until ``transport`` is closed (at most ``seconds``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not transport.closed and loop.time() - started < seconds:
        await asyncio.sleep(0.01)
    return loop.time() - started


async def test_answered_request_then_idle_is_timed_out_again() -> None:
    """The header clock restarts when an answer is complete: a request sent late in
    the first period is answered, and the idle connection is closed a whole period
    after the answer, not after the connection opened."""
    table: ConnectionTable[Any] = ConnectionTable(10, 10)
    cls, config = make(table, header_s=0.5)
    protocol, transport = connect(cls, config, ServerState())
    await asyncio.sleep(0.35)
    protocol.data_received(REQUEST)
    while not transport.written:  # the answer (the app runs as a task)
        await asyncio.sleep(0.005)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert not transport.closed
    idle = await closed_within(transport, 5)
    assert transport.closed
    assert idle >= 0.45, idle  # a full period after the answer, not 0.15 s after it


async def test_stalled_reader_is_aborted_but_a_slow_one_is_not() -> None:
    blocked = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await blocked.wait()
        await send({"type": "http.response.body", "body": b"x"})

    table: ConnectionTable[Any] = ConnectionTable(10, 10)
    cls, config = make(table, header_s=30, send_s=0.5, app=slow_app)
    protocol, transport = connect(cls, config, ServerState())
    protocol.data_received(REQUEST)
    await asyncio.sleep(0.05)
    transport.buffered = 100_000
    protocol.pause_writing()
    for _ in range(15):  # draining a little every 0.1 s for three periods: never aborted
        await asyncio.sleep(0.1)
        transport.buffered -= 1_000
    assert not transport.closed
    stalled = await closed_within(transport, 5)  # no progress: cut within two periods
    assert transport.aborted and stalled <= 1.5, stalled
    assert table.stats.closed["send_timeout"] == 1
    blocked.set()
    await asyncio.sleep(0.05)


async def test_newcomer_evicts_a_waiting_connection_and_refused_get_503() -> None:
    never = asyncio.Event()

    async def hanging(scope: Any, receive: Any, send: Any) -> None:
        await never.wait()

    table: ConnectionTable[Any] = ConnectionTable(total=10, per_client=2)
    cls, config = make(table, header_s=5, app=hanging)
    state = ServerState()
    _first, first_t = connect(cls, config, state)
    _second, second_t = connect(cls, config, state)
    _third, _third_t = connect(cls, config, state)
    await asyncio.sleep(0)
    assert first_t.closed and not second_t.closed  # the oldest waiting gave way
    busy = [connect(cls, config, state, peer="10.0.0.9") for _ in range(2)]
    for protocol, _t in busy:
        protocol.data_received(REQUEST)  # now both are busy (the app never answers)
    await asyncio.sleep(0)
    refused, refused_t = connect(cls, config, state, peer="10.0.0.9")
    refused.data_received(REQUEST)
    await asyncio.sleep(0.05)
    assert refused_t.written.startswith(b"HTTP/1.1 503 ")
    assert refused_t.closed
    await asyncio.sleep(0)
    assert table.refused_open == 0
    never.set()
    for task in list(state.tasks):
        task.cancel()
    await asyncio.gather(*state.tasks, return_exceptions=True)


@pytest.mark.parametrize("name", ["loop", "transport", "client", "cycle", "app", "conn"])
def test_uvicorn_protocol_still_has_the_attributes_the_adapter_uses(name: str) -> None:
    cls, config = make(ConnectionTable(1, 1))

    async def build() -> None:
        protocol = cls(config=config, server_state=ServerState(), app_state={})
        assert hasattr(protocol, name)

    asyncio.run(build())
