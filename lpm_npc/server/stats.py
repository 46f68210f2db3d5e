"""Per-stream statistics: frames, drops, latency percentiles, render cost."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class StreamStats:
    """Rolling figures for one Perform stream (bounded memory)."""

    def __init__(self, window: int = 256):
        self.frames_sent = 0
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.render_ms: deque[float] = deque(maxlen=window)   # motion + render + encode
        self.batch: deque[int] = deque(maxlen=window)
        self.stage_ms: dict[str, deque[float]] = {k: deque(maxlen=window)
                                                  for k in ("audio", "motion", "render", "encode", "transport")}
        self._interval_start = time.monotonic()
        self._interval_frames = 0

    def frame_sent(self) -> None:
        self.frames_sent += 1
        self._interval_frames += 1

    def latency(self, ms: float) -> None:
        self.latencies_ms.append(ms)

    def rendered(self, times, batch_size: int = 1) -> None:
        """Record a frame's StageTimes (seconds) and how many frames its render call made."""
        self.render_ms.append((times.motion + times.render + times.encode) * 1000.0)
        for k in ("audio", "motion", "render", "encode"):
            self.stage_ms[k].append(getattr(times, k) * 1000.0)
        self.batch.append(batch_size)

    def transport(self, ms: float) -> None:
        self.stage_ms["transport"].append(ms)

    def take_interval(self) -> dict:
        now = time.monotonic()
        elapsed = max(1e-6, now - self._interval_start)
        fps = self._interval_frames / elapsed
        self._interval_start, self._interval_frames = now, 0
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        return {
            "fps": fps,
            "frames_sent": self.frames_sent,
            **dict(zip(("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"),
                       # one call for the three (np.percentile's setup is most of its cost here)
                       (float(q) for q in np.percentile(lat, (50, 95, 99))) if lat.size else (0.0, 0.0, 0.0))),
            "batch_mean": sum(self.batch) / len(self.batch) if self.batch else 0.0,
            **{f"{k}_ms": sum(v) / len(v) if v else 0.0 for k, v in self.stage_ms.items()},
            "render_ms": sum(self.render_ms) / len(self.render_ms) if self.render_ms else 0.0,
        }
