"""A loopback TCP proxy that can go silent: a network partition for tests.

``Proxy(target_port)`` listens on 127.0.0.1 (a free port) and relays every connection to
``127.0.0.1:target_port``. :meth:`Proxy.partition` stops relaying bytes in both
directions **without closing anything**: established connections stay open and see no
data, no error, no reset; new connections are accepted (the client's connect succeeds)
and then hear nothing. That is what a dropped route looks like to an application —
unlike a stopped server, which refuses or resets at once — so only timeouts can notice
it. :meth:`Proxy.heal` resumes relaying (bytes held meanwhile are delivered then, like
a link that comes back); connections the client gave up on are closed by the client.

Plain threads and blocking sockets with short select timeouts: every loop checks a stop
flag, :meth:`close` joins every thread (bounded).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType

HOST = "127.0.0.1"
_TICK_S = 0.05


class Proxy:
    """See the module docstring."""

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(_TICK_S)
        self.port: int = self._listener.getsockname()[1]
        self._relaying = threading.Event()
        self._relaying.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        """Connections accepted so far."""
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    # -- control ---------------------------------------------------------------------------

    def partition(self) -> None:
        """Stop relaying bytes (nothing is closed)."""
        self._relaying.clear()

    def heal(self) -> None:
        """Relay again."""
        self._relaying.set()

    @property
    def partitioned(self) -> bool:
        return not self._relaying.is_set()

    def close(self) -> None:
        """Close every connection and the listener; join the threads (bounded)."""
        self._stop.set()
        self._relaying.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._acceptor.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- relaying --------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(
                target=self._connect_and_relay, args=(client,), name="proxy-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _connect_and_relay(self, client: socket.socket) -> None:
        self._track(client)
        # A partitioned link does not reach the server either: wait before connecting.
        while not self._relaying.wait(_TICK_S):
            if self._stop.is_set():
                self._close_pair(client, None)
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._close_pair(client, None)
            return
        self._track(upstream)
        back = threading.Thread(
            target=self._pump, args=(upstream, client), name="proxy-back", daemon=True
        )
        self._threads.append(back)
        back.start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, dest: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if not self._relaying.is_set():
                    self._relaying.wait(_TICK_S)
                    continue
                try:
                    ready, _, _ = select.select([source], [], [], _TICK_S)
                except (OSError, ValueError):
                    return
                if not ready:
                    continue
                if not self._relaying.is_set():
                    continue  # partitioned between select and recv: hold the bytes
                try:
                    data = source.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                # Bytes read just before a partition may be lost to the peer only if we
                # stopped here; deliver them (a link in flight finishes the segment).
                try:
                    dest.sendall(data)
                except OSError:
                    return
        finally:
            self._close_pair(source, dest)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _close_pair(self, a: socket.socket, b: socket.socket | None) -> None:
        for sock in (a, b):
            if sock is None:
                continue
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
