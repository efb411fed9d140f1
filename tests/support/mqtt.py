"""Helpers for the MQTT-side integration tests: gateway configs with chosen
subscriptions, a broker that refuses some subscriptions (Mosquitto's dynamic-security
plugin), the gateway's HTTP endpoints and process memory. Only loopback addresses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import HOST

DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def gateway_config(
    path: Path,
    broker_port: int,
    db: Path,
    *,
    client_id: str = "tidegate-test",
    keepalive: int = 10,
    subscriptions: str = "",
    mqtt: str = "",
    pipeline: str = "",
    api_port: int = 0,
    extra: str = "",
) -> Path:
    """A gateway config. ``subscriptions`` is TOML (``[[subscriptions]]`` blocks);
    empty means one subscription ``sensors/+/+`` with template
    ``sensors/{sensor_id}/{metric}``. ``mqtt``/``pipeline`` add lines to their sections."""
    if not subscriptions:
        subscriptions = sub_block("sensors/+/+", "sensors/{sensor_id}/{metric}")
    path.write_text(
        f"""
[mqtt]
host = "{HOST}"
port = {broker_port}
client_id = "{client_id}"
keepalive = {keepalive}
reconnect_min_s = 0.1
reconnect_max_s = 1.0
{mqtt}

{subscriptions}

[pipeline]
shutdown_timeout_s = 20
{pipeline}

[storage]
path = "{db}"

[api]
port = {api_port}

{extra}
"""
    )
    return path


def sub_block(topic: str, template: str | None = None, qos: int = 1, fmt: str = "json") -> str:
    """One ``[[subscriptions]]`` block."""
    lines = ["[[subscriptions]]", f'topic = "{topic}"', f"qos = {qos}", f'format = "{fmt}"']
    if template:
        lines.append(f'topic_template = "{template}"')
    return "\n".join(lines) + "\n"


def dynsec_conf(workdir: Path, denied_subscribe_patterns: list[str]) -> str:
    """mosquitto.conf lines loading the dynamic-security plugin so that anonymous
    clients may do everything except subscribe to ``denied_subscribe_patterns`` (the
    broker answers SUBACK 0x80 / 0x87 for those). Mosquitto 2.0's ``acl_file`` grants
    every SUBSCRIBE and filters at delivery, so it cannot produce a refusal."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "defaultACLAccess": {
            "publishClientSend": True,
            "publishClientReceive": True,
            "subscribe": True,
            "unsubscribe": True,
        },
        "clients": [],
        "groups": [{"groupname": "anon", "roles": [{"rolename": "limited"}], "clients": []}],
        "roles": [
            {
                "rolename": "limited",
                "acls": [
                    {"acltype": "subscribePattern", "topic": t, "priority": 0, "allow": False}
                    for t in denied_subscribe_patterns
                ],
            }
        ],
        "anonymousGroup": "anon",
    }
    file = workdir / "dynsec.json"
    file.write_text(json.dumps(config))
    return f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {file}\n"


def http_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``http://127.0.0.1:port/path``: (status, decoded JSON body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def http_text(port: int, path: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as reply:
        text: str = reply.read().decode()
        return text


def metric_value(text: str, name: str, labels: str = "") -> float | None:
    """One sample from Prometheus text (``labels`` as written, e.g. ``{x="y"}``)."""
    wanted = name + labels
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` (VmHWM, the kernel's high-water mark), KiB:
    catches a spike between samples, so a memory bound needs no timing."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
