"""Admission control: how much rendering this server can promise, and who is refused.

A frame of w x h costs about `fixed_ms + per_mpx_ms * w * h / 1e6` of one worker's time (motion,
render, encode; measured at start-up on this machine and backend, or set in config). A session
costs fps times that per second. The server has `workers * 1000 * utilisation` ms per second to
give; a session that would take the committed load past it is refused with RESOURCE_EXHAUSTED,
rather than making every NPC late. Paused sessions commit nothing.

Loads are reported in *pixel-equivalents per second* (ServerInfo.capacity_pixels_per_s): a frame
counts its w * h pixels plus `fixed_px` = fixed_ms / per-pixel cost, its share of the fixed cost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameCost:
    """Measured cost of one frame on one worker: fixed_ms + per_mpx_ms * megapixels."""

    fixed_ms: float
    per_mpx_ms: float

    def ms(self, width: int, height: int) -> float:
        return self.fixed_ms + self.per_mpx_ms * width * height / 1e6

    @property
    def fixed_px(self) -> float:
        return self.fixed_ms / max(self.per_mpx_ms, 1e-9) * 1e6


@dataclass(frozen=True)
class Capacity:
    cost: FrameCost
    budget_ms_per_s: float  # worker-milliseconds per second the server may commit

    def load_ms_per_s(self, width: int, height: int, fps: int) -> float:
        return fps * self.cost.ms(width, height)

    def pixels_per_s(self, ms_per_s: float) -> int:
        """A load in worker-ms/s as pixel-equivalents per second."""
        return int(ms_per_s / max(self.cost.per_mpx_ms, 1e-9) * 1e6)

    @property
    def capacity_pixels_per_s(self) -> int:
        return self.pixels_per_s(self.budget_ms_per_s)

    def max_sessions_at(self, width: int, height: int, fps: int) -> int:
        return int(self.budget_ms_per_s // max(self.load_ms_per_s(width, height, fps), 1e-9))


def measure_frame_cost(make_frames, sizes: tuple[int, int] = (128, 384), batch: int = 8,
                       repeats: int = 3) -> FrameCost:
    """Fit fixed + per-pixel cost from timing `make_frames(size, batch)` (which makes `batch` frames).

    The best of `repeats` runs is used (a noisy machine only ever makes things slower)."""
    ms = []
    for size in sizes:
        make_frames(size, batch)  # warm-up (caches, allocations)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            make_frames(size, batch)
            best = min(best, (time.perf_counter() - t0) * 1000.0 / batch)
        ms.append(best)
    px = np.array([s * s / 1e6 for s in sizes])
    slope = max((ms[1] - ms[0]) / (px[1] - px[0]), 1e-3)
    fixed = max(ms[0] - slope * px[0], 0.05)
    cost = FrameCost(fixed_ms=float(fixed), per_mpx_ms=float(slope))
    log.info("frame cost measured: %.2f ms + %.2f ms/Mpx (%s px: %s ms)", cost.fixed_ms, cost.per_mpx_ms,
             sizes, [round(x, 2) for x in ms])
    return cost
