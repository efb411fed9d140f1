"""A private Mosquitto for the bench, on a free loopback port, in one of two configs.

* ``tuned`` — what ``docs/performance.md`` recommends for a gateway with
  ack-after-commit: a wide in-flight window (``max_inflight_messages 1000``) so the
  broker keeps sending while a batch commits, a deep queue for offline sessions, and
  persistence so queued QoS 1 messages survive a broker restart.
* ``default`` — Mosquitto's stock settings (in-flight window of 20), except that the
  offline queue limit is raised so the backlog fits at all (the stock
  ``max_queued_messages 1000`` would drop most of it).
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"

TUNED_CONF = """\
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
persistence true
persistence_location {workdir}/
autosave_interval 300
"""

DEFAULT_CONF = """\
max_queued_messages 1000000
"""

CONFIGS = {"tuned": TUNED_CONF, "default": DEFAULT_CONF}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


def mosquitto_version() -> str:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].replace("mosquitto version ", "") if first else "?"


class BenchBroker:
    """``with BenchBroker(workdir, "tuned") as broker: broker.port``."""

    def __init__(self, workdir: Path, config: str = "tuned") -> None:
        if config not in CONFIGS:
            raise ValueError(f"unknown broker config {config!r}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def conf_text(self) -> str:
        # Run as root, Mosquitto would drop to user "mosquitto", which cannot write the
        # persistence file into our private directory: stay the invoking user.
        return (
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            "log_type error\nlog_type warning\n" + CONFIGS[self.config].format(workdir=self.workdir)
        )

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.conf_text())
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto did not start: {err}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def __enter__(self) -> BenchBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
