"""HTTP test helpers: clients that hold connections open without finishing a request
(idle or trickling header bytes, a slowloris), and a probe that times fresh-connection
requests the way a Docker health check makes them. Loopback only; everything bounded."""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HolderStats:
    opened: int = 0
    closed_by_server: int = 0
    open_now: int = 0
    max_open: int = 0


class ConnectionHolders:
    """``count`` TCP clients against ``host:port`` that each keep one connection open:
    the first ``idle`` send nothing at all, the others send a partial request and then
    one more header byte every ``trickle_s`` seconds, never the blank line that ends the
    headers. A connection the server closes is reopened at once, so the pressure stays
    on. Runs on a thread (one selector) between ``start()`` and ``stop()``; stops by
    itself after ``max_s`` seconds.

    ``source`` picks the local address (any of 127.0.0.0/8), to act as another client.
    """

    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        idle: int,
        trickle_s: float = 1.0,
        source: str | None = None,
        max_s: float = 60.0,
    ) -> None:
        self.address = (host, port)
        self.count = count
        self.idle = idle
        self.trickle_s = trickle_s
        self.source = source
        self.max_s = max_s
        self.stats = HolderStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-holders", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[socket.socket, int] = {}

    def __enter__(self) -> ConnectionHolders:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for slot in range(self.count):
            self._open(slot)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in list(self._sockets):
            self._close(sock)
        self._selector.close()

    def wait_open(self, at_least: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.stats.open_now < at_least and time.monotonic() < deadline:
            time.sleep(0.05)

    def _open(self, slot: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.source is not None:
            sock.bind((self.source, 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(self.address)
        self._sockets[sock] = slot
        self._selector.register(sock, selectors.EVENT_READ)
        self.stats.opened += 1
        self.stats.open_now += 1
        self.stats.max_open = max(self.stats.max_open, self.stats.open_now)
        if slot >= self.idle:
            self._send(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

    def _close(self, sock: socket.socket) -> None:
        if sock in self._sockets:
            del self._sockets[sock]
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
            self.stats.open_now -= 1

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.send(data)

    def _run(self) -> None:
        ends = time.monotonic() + self.max_s
        next_trickle = time.monotonic() + self.trickle_s
        while not self._stop.is_set() and time.monotonic() < ends:
            for key, _events in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the server (or refused): reopen at once
                    slot = self._sockets.get(sock, 0)
                    self._close(sock)
                    self.stats.closed_by_server += 1
                    self._open(slot)
            if time.monotonic() >= next_trickle:
                next_trickle += self.trickle_s
                for sock, slot in list(self._sockets.items()):
                    if slot >= self.idle:
                        self._send(sock, b"x")


class HoldersProcess:
    """:class:`ConnectionHolders` in a child process of their own, as a real attacker
    would be (in a thread they would share the test's GIL and slow the probe down)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self._process = context.Process(
            target=_holders_main, args=(child, args, kwargs), name="connection-holders"
        )
        self.stats = HolderStats()

    def __enter__(self) -> HoldersProcess:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_open(self, at_least: int, timeout: float) -> int:
        """Ask the child to wait until ``at_least`` are open; returns how many are."""
        self._parent.send(("wait", at_least, timeout))
        if self._parent.poll(timeout + 15):
            opened: int = self._parent.recv()
            return opened
        return 0

    def stop(self) -> None:
        if self._process.is_alive():
            self._parent.send(("stop",))
            if self._parent.poll(30):
                self.stats = self._parent.recv()
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


def _holders_main(pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    holders = ConnectionHolders(*args, **kwargs)
    holders.start()
    try:
        while True:
            command = pipe.recv()
            if command[0] == "wait":
                holders.wait_open(command[1], command[2])
                pipe.send(holders.stats.open_now)
            else:
                break
    finally:
        holders.stop()
        pipe.send(holders.stats)


@dataclass
class Probe:
    """Latencies (s) and status codes of fresh-connection GETs; a failure is recorded
    as status 0 with its elapsed time."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def worst(self) -> float:
        return max(self.latencies)

    def summary(self) -> str:
        return (
            f"n={len(self.latencies)} median={self.median * 1000:.1f}ms"
            f" max={self.worst * 1000:.1f}ms statuses={sorted(set(self.statuses))}"
        )


def timed_get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, float]:
    """One GET on a fresh connection: ``(status, seconds)``; status 0 when it failed."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started
    finally:
        conn.close()


def probe(host: str, port: int, paths: list[str], rounds: int, interval_s: float) -> Probe:
    """``rounds`` × every path in ``paths``, ``interval_s`` apart."""
    result = Probe()
    for _ in range(rounds):
        for path in paths:
            status, elapsed = timed_get(host, port, path)
            result.statuses.append(status)
            result.latencies.append(elapsed)
        time.sleep(interval_s)
    return result
