"""Admission control: how much rendering this server can promise, and who is refused.

A frame of w x h costs about `fixed_ms + per_mpx_ms * w * h / 1e6` of one frame maker's time (a
render thread of the server process, or a worker process): measured at start-up on this machine and
backend with talking NPCs and every maker working at once (runtime/calibration.py), plus the serving
cost from config; or set in config. A session costs fps times that per second. The server has
`makers * 1000 * utilisation` ms per second to give; a session that would take the committed load past
it is refused with RESOURCE_EXHAUSTED, rather than making every NPC late. Paused sessions commit
nothing; sessions being opened commit their load from the moment they are admitted.

With worker processes, the server process itself is a second limit: it writes every stream's frames
to gRPC and paces them, on one core, whatever the workers or a GPU could make. Each frame costs it
about `front_ms_per_frame` (config `front_cost_ms`); it has `1000 * utilisation` ms per second to
give. A session beyond that is refused too, with a reason that names the server process.

Loads are reported in *pixel-equivalents per second* (ServerInfo.capacity_pixels_per_s): a frame
counts its w * h pixels plus `fixed_px` = fixed_ms / per-pixel cost, its share of the fixed cost.
"""

from __future__ import annotations

import logging
import threading
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
    # the server process's own time per frame and per second (0: no separate limit, as when the
    # frames are made in the server process and its serving cost is in `cost`)
    front_ms_per_frame: float = 0.0
    front_budget_ms_per_s: float = 0.0

    def load_ms_per_s(self, width: int, height: int, fps: int) -> float:
        return fps * self.cost.ms(width, height)

    @property
    def max_frames_per_s(self) -> float | None:
        """Frames per second the server process can send on time (None: no separate limit)."""
        if self.front_ms_per_frame <= 0 or self.front_budget_ms_per_s <= 0:
            return None
        return self.front_budget_ms_per_s / self.front_ms_per_frame

    def pixels_per_s(self, ms_per_s: float) -> int:
        """A load in worker-ms/s as pixel-equivalents per second."""
        return int(ms_per_s / max(self.cost.per_mpx_ms, 1e-9) * 1e6)

    @property
    def capacity_pixels_per_s(self) -> int:
        return self.pixels_per_s(self.budget_ms_per_s)

    def max_sessions_at(self, width: int, height: int, fps: int) -> int:
        n = int(self.budget_ms_per_s // max(self.load_ms_per_s(width, height, fps), 1e-9))
        if self.max_frames_per_s is not None:
            n = min(n, int(self.max_frames_per_s // max(fps, 1)))
        return n


def measure_frame_cost(make_frames, sizes: tuple[int, int] = (128, 384), batch: int = 8,
                       repeats: int = 5) -> FrameCost:
    """Fit fixed + per-pixel cost from timing `make_frames(size, batch)` (which makes `batch` frames)."""
    return measure_concurrent_frame_cost([make_frames], sizes, batch, repeats)


def measure_concurrent_frame_cost(makers: list, sizes: tuple[int, int] = (128, 384), batch: int = 8,
                                  repeats: int = 5) -> FrameCost:
    """The cost of a frame to one of `makers` frame makers while all of them make frames at once.

    Each `make(size, batch)` runs on its own thread, in lock-step: every step starts together (a
    barrier) and takes as long as its slowest maker. So what the makers share shows in the cost:
    Python's GIL for render threads of one process, cores and caches for processes on fewer cores
    than makers. A budget of `len(makers) * 1000` ms/s then holds what they can really make; one
    maker alone would have measured the ideal of an idle machine and over-promised.
    The median of `repeats` steps is used: the sessions admitted on it run for hours, through the
    machine's slow spells as well as its fast ones (the best step over-promised by 10-20 % on a
    shared VM)."""
    n = len(makers)
    if n == 0:
        raise ValueError("measure_concurrent_frame_cost needs at least one frame maker")
    barrier = threading.Barrier(n)
    steps = [(size, timed) for size in sizes for timed in [False] + [True] * repeats]  # a warm-up per size
    took = [[0.0] * len(steps) for _ in range(n)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for i, (size, _) in enumerate(steps):
                barrier.wait()
                t0 = time.perf_counter()
                makers[k](size, batch)
                took[k][i] = time.perf_counter() - t0
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised below; the others stop at the barrier
            errors.append(exc)
            barrier.abort()

    if n == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(k,), name=f"calibrate-{k}") for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    ms = []
    for size in sizes:
        step_ms = [max(took[k][i] for k in range(n)) * 1000.0 / batch
                   for i, (s, timed) in enumerate(steps) if s == size and timed]
        ms.append(float(np.median(step_ms)))
    return _fit(sizes, ms, n)


def _fit(sizes: tuple[int, int], ms: list[float], makers: int = 1) -> FrameCost:
    px = np.array([s * s / 1e6 for s in sizes])
    slope = max((ms[1] - ms[0]) / (px[1] - px[0]), 1e-3)
    fixed = max(ms[0] - slope * px[0], 0.05)
    cost = FrameCost(fixed_ms=float(fixed), per_mpx_ms=float(slope))
    log.info("frame cost measured with %d frame maker(s) at once: %.2f ms + %.2f ms/Mpx (%s px: %s ms)", makers,
             cost.fixed_ms, cost.per_mpx_ms, sizes, [round(x, 2) for x in ms])
    return cost


def combine_costs(costs: list[FrameCost]) -> FrameCost:
    """One cost for makers measured side by side (worker processes calibrating at once): their mean."""
    if not costs:
        raise ValueError("no frame costs to combine")
    return FrameCost(fixed_ms=float(np.mean([c.fixed_ms for c in costs])),
                     per_mpx_ms=float(np.mean([c.per_mpx_ms for c in costs])))
