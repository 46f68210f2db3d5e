"""Tell a starved machine from a slow server in real-time tests.

A shared CI VM can lose its CPU for seconds at a time (hypervisor steal). The server then falls behind
its clock and skips frames, and a real-time check fails for a reason that is not ours. `StallMonitor`
runs a thread that sleeps 5 ms at a time and records every wake-up that came much later than asked:
while the VM is descheduled nothing in it runs, so the oversleeps mark the stretches in which the
machine, not the server, stopped. A test may leave its timing judgement out where the monitor saw
the machine stall, and only there: a server that is late on a machine that kept running still fails.
"""

from __future__ import annotations

import threading
import time

STALL_S = 0.05  # a wake-up this much late: the process did not get a CPU (a GIL hand-off is ~5 ms)


class StallMonitor:
    def __init__(self, period_s: float = 0.005, stall_s: float = STALL_S):
        self.period_s = period_s
        self.stall_s = stall_s
        self.stalls: list[tuple[float, float]] = []   # (monotonic start, end) of each stall
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-monitor", daemon=True)

    def __enter__(self) -> "StallMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            time.sleep(self.period_s)
            now = time.monotonic()
            if now - last - self.period_s > self.stall_s:
                self.stalls.append((last, now))
            last = now

    @property
    def stalled_s(self) -> float:
        return sum(b - a for a, b in self.stalls)

    def stalled_near(self, t0: float, t1: float, margin_s: float = 0.5) -> bool:
        """Whether the machine stalled within [t0 - margin, t1 + margin] (monotonic seconds)."""
        return any(a <= t1 + margin_s and b >= t0 - margin_s for a, b in self.stalls)

    def summary(self) -> str:
        return f"{len(self.stalls)} machine stalls over {self.stall_s * 1e3:.0f} ms, {self.stalled_s:.1f} s in all"
