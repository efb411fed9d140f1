"""How long until PostgreSQL frees the slot claims of a group member whose host vanished
(decision 0124): a holder process claims a slot, then every packet between it and the
server is dropped (iptables on the loopback interface, both directions — no FIN, no
RST, like a power cut), and a survivor polls until the slot is free.

``sudo python -m bench.direct_vanish [KEEPALIVE_S]`` — needs root and ``iptables``; it
adds two DROP rules matching only the holder's own port pair and removes them at the
end. Not part of ``make bench`` (it changes the host's packet filter); run it by hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg

from gateway.storage.postgresql.slot_locks import PostgresSlotLocks
from tests.support.postgres import PostgresServer

HOLDER = """
import asyncio, sys, asyncpg
from gateway.storage.postgresql.slot_locks import PostgresSlotLocks
async def main():
    held = PostgresSlotLocks(lambda: asyncpg.connect(sys.argv[1]), "vanish", int(sys.argv[2]))
    await held.open()
    assert await held.try_claim(1)
    conn = held._live()
    print(conn._transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.sleep(900)
asyncio.run(main())
"""


def _rule(action: str, sport: int, dport: int) -> None:
    subprocess.run(
        ["iptables", action, "INPUT", "-i", "lo", "-p", "tcp", "--sport", str(sport),
         "--dport", str(dport), "-j", "DROP"],
        check=action == "-I",
    )  # fmt: skip


async def measure(keepalive_s: int) -> float:
    with PostgresServer() as pg:
        url = pg.url()
        survivor = PostgresSlotLocks(lambda: asyncpg.connect(url), "vanish", keepalive_s)
        await survivor.open()
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, str(keepalive_s)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        pairs = [(port, pg.port), (pg.port, port)]
        try:
            assert 1 in (await survivor.survey()).taken
            for sport, dport in pairs:
                _rule("-I", sport, dport)
            started = time.monotonic()
            while 1 in (await survivor.survey()).taken:
                if time.monotonic() - started > 20 * keepalive_s + 60:
                    raise RuntimeError("the claim was never freed")
                await asyncio.sleep(0.2)
            return time.monotonic() - started
        finally:
            for sport, dport in pairs:
                _rule("-D", sport, dport)
            proc.kill()
            proc.wait(10)
            await survivor.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    keepalive_s = int(args[0]) if args else 30
    took = asyncio.run(measure(keepalive_s))
    print(
        f"keepalive_s = {keepalive_s}: the vanished member's claims were freed after {took:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
