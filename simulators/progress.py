"""The live progress line (only on a terminal; scripts get a quiet stderr)."""

from __future__ import annotations

from typing import TextIO

from simulators.report import Totals


class Progress:
    """Rewrites one status line in place with ``\\r``."""

    def __init__(self, out: TextIO, requested_per_s: float) -> None:
        self.out = out
        self.requested = requested_per_s
        self._width = 0

    def show(
        self,
        *,
        elapsed: float,
        totals: Totals,
        samples_rate: float,
        in_flight: int,
        behind: bool,
    ) -> None:
        errors = totals.publish_errors + totals.reconnects
        line = (
            f"[{max(0.0, elapsed):7.1f}s] sent {totals.messages_sent:,}  "
            f"acked {totals.messages_acked:,}  "
            f"{samples_rate:,.0f}/{self.requested:,.0f} samples/s  "
            f"in flight {in_flight:,}  faults {totals.faults_sent:,}  errors {errors:,}"
            + ("  BEHIND" if behind else "")
        )
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.out.write("\r" + line + " " * pad)
        self.out.flush()

    def clear(self) -> None:
        if self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0
