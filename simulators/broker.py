"""A private Mosquitto for the demo and scale scripts, and a "does a broker answer?" probe.

:class:`PrivateBroker` starts ``mosquitto`` on a free loopback port with its own
config, persistence directory and log in ``workdir``, and stops it again. It is the
demo's counterpart of the test suite's ``tests.support.Broker`` (test code the demo
must not import). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from simulators.errors import SimError

LOOPBACK = "127.0.0.1"


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary, or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in (
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    ):
        if Path(candidate).is_file():
            return candidate
    return None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def mqtt_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when an MQTT broker on ``host:port`` accepts an anonymous 3.1.1 CONNECT."""
    # CONNECT, protocol "MQTT" level 4, clean session, keepalive 10, empty client id.
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect)
            reply = sock.recv(4)
            with contextlib.suppress(OSError):
                sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
    except OSError:
        return False
    # CONNACK 0x20, length 2, flags, return code 0 = accepted.
    return len(reply) == 4 and reply[0] == 0x20 and reply[3] == 0


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(interval)
    return False


class PrivateBroker:
    """Mosquitto on a free loopback port, configured like docker/mosquitto.conf."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.host = LOOPBACK
        self.extra_conf = extra_conf
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        return (
            # Run as root, Mosquitto drops to user "mosquitto", which cannot write its
            # persistence file or log into a private directory: stay the invoking user.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 5\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra_conf}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it answers MQTT; raises :class:`SimError` if it cannot."""
        binary = find_mosquitto()
        if binary is None:
            raise SimError(
                "the 'mosquitto' binary is needed: `make mosquitto` or "
                "`sudo apt-get install mosquitto`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_until(lambda: self._up(), timeout):
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            self.stop()
            log = self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""
            raise SimError(f"mosquitto did not start on port {self.port}: {err.decode()}{log}")

    def write_conf(self) -> None:
        """Write :meth:`config_text` to ``conf`` (start calls it)."""
        self.conf.write_text(self.config_text())

    def restart(self) -> None:
        """Clean stop and start on the same port (sessions survive: persistence is on)."""
        self.stop()
        self.start()

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return False
        return mqtt_answers(LOOPBACK, self.port, timeout=0.5)

    def stop(self) -> None:
        """Clean stop (Mosquitto saves its persistence file); kill after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def clear_session(host: str, port: int, client_id: str, timeout: float = 5.0) -> bool:
    """Make the broker forget ``client_id``'s persistent session (subscriptions and
    queued messages) by connecting once with a clean session. True on success."""
    from simulators.mqtt import connect_packet

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(connect_packet(client_id, 10))
            reply = sock.recv(4)
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")
    except OSError:
        return False
    return len(reply) == 4 and reply[0] == 0x20 and reply[3] == 0
