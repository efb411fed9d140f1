"""``python -m bench.reader``: the MQTT packet reader alone, CPU time per message.

Feeds 200,000 one-reading QoS 1 PUBLISH packets (JSON, 1,000 topics) to
:class:`gateway.sources.packets.PacketReader` in 64 KiB chunks, as the socket would, and
prints the CPU microseconds per message (the minimum of ``--repeat`` passes: the machine
is shared, the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from gateway.sources.packets import Message, PacketReader


def publish(topic: bytes, payload: bytes, mid: int) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", mid) + payload
    n = len(body)
    length = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            return b"\x32" + bytes(length) + body


def stream(count: int) -> list[bytes]:
    data = b"".join(
        publish(
            f"sensors/s{i % 1000:05d}/temperature".encode(),
            json.dumps({"value": i * 0.5, "ts": 1_700_000_000_000 + i}).encode(),
            i % 65535 + 1,
        )
        for i in range(count)
    )
    return [data[i : i + 65536] for i in range(0, len(data), 65536)]


def one_pass(chunks: list[bytes]) -> tuple[int, float]:
    seen = [0]

    def on_messages(messages: list[Message], size: int) -> None:
        seen[0] += len(messages)

    reader = PacketReader(
        on_messages,
        lambda header, body: None,
        max_payload=262_144,
        max_topic=1024,
        on_dollar=lambda topic, payload, qos: False,
    )
    started = time.process_time()
    for chunk in chunks:
        reader.feed(chunk)
    return seen[0], time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    chunks = stream(args.messages)
    best = min(one_pass(chunks)[1] for _ in range(args.repeat))
    print(
        json.dumps(
            {"messages": args.messages, "cpu_us_per_message": round(best / args.messages * 1e6, 3)}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
