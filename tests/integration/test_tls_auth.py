"""Username/password and TLS (CA + client certificate) against a real Mosquitto TLS listener."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import HOST, Broker, GatewayProcess, count, free_port, publish_many, wait_for

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tidegate-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "tidegate")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)  # fmt: skip
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.crt", *extra, cwd=d)  # fmt: skip


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl CLI needed to make test certificates"
)
def test_tls_client_certificate_and_password(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw", "s3cret"], check=True, timeout=30)
    passwd.chmod(0o600)
    tls_port = free_port()
    broker = Broker(tmp_path / "mosquitto")  # its own port is the plain listener: readiness probe
    plain_port = broker.port
    # per_listener_settings: the TLS listener needs a client certificate AND a password;
    # a second, anonymous loopback listener is for the test's publisher.
    broker.config_text = lambda: (  # type: ignore[method-assign]
        f"""
user {getpass.getuser()}
per_listener_settings true
persistence false
log_dest file {broker.log}
listener {tls_port} {HOST}
cafile {pki}/ca.crt
certfile {pki}/server.crt
keyfile {pki}/server.key
require_certificate true
allow_anonymous false
password_file {passwd}
listener {plain_port} {HOST}
allow_anonymous true
"""
    )
    broker.start()
    try:
        db = tmp_path / "tls.db"
        cfg = tmp_path / "tls.toml"
        cfg.write_text(
            f"""
[mqtt]
host = "localhost"
port = {tls_port}
client_id = "tidegate-tls"
username = "gw"
password = "s3cret"
[mqtt.tls]
ca = "{pki}/ca.crt"
cert = "{pki}/client.crt"
key = "{pki}/client.key"
[[subscriptions]]
topic = "sensors/+/+"
topic_template = "sensors/{{sensor_id}}/{{metric}}"
[storage]
path = "{db}"
"""
        )
        gateway = GatewayProcess(cfg, tmp_path / "tls.log").start()
        try:
            now_ms = int(time.time() * 1000) - 1000
            publish_many(
                plain_port,
                [
                    (f"sensors/t{i}/temp", json.dumps({"value": i, "ts": now_ms}).encode())
                    for i in range(20)
                ],
            )
            wait_for(lambda: count(db) >= 20, 30, what="readings over TLS")
            assert gateway.terminate() == 0
        finally:
            gateway.ensure_stopped()

        # A wrong password is refused: the gateway keeps retrying and says why, stores nothing.
        bad = tmp_path / "bad.toml"
        bad.write_text(
            cfg.read_text()
            .replace('password = "s3cret"', 'password = "wrong"')
            .replace("tls.db", "bad.db")
        )
        gateway = GatewayProcess(bad, tmp_path / "bad.log").start(wait_connected=False)
        try:
            wait_for(
                lambda: "connect failed" in gateway.log_text(), 20, what="refused connection logged"
            )
            assert "s3cret" not in gateway.log_text() and "wrong" not in gateway.log_text()
            assert gateway.terminate() == 0
        finally:
            gateway.ensure_stopped()
    finally:
        broker.stop()
