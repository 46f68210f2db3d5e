"""Idle life: blinks, breathing, micro head motion and small gaze saccades (deterministic per seed).

Head micro-motion and breathing are sums of slow sinusoids with seeded frequencies and phases, so
they are smooth, never frozen, and depend only on time (dropped frames and fps changes are fine).
Blinks and saccades are scheduled events drawn from a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class IdleConfig:
    blink_rate_per_min: float = 16.0
    blink_refractory_s: float = 0.9
    blink_shape_k: float = 3.0           # gamma shape of the inter-blink interval (>1: regular-ish)
    blink_duration_s: tuple[float, float] = (0.15, 0.25)
    double_blink_prob: float = 0.12
    head_micro_deg: float = 1.0          # rms-ish amplitude of idle head motion
    breath_period_s: float = 4.2
    breath_pitch_deg: float = 0.35
    saccade_interval_s: float = 1.6
    saccade_amplitude: float = 0.12      # gaze units


@dataclass
class Blink:
    start: float
    duration: float

    def closure(self, t: float) -> float:
        """Lid closure 0..1: fast close (35%), brief hold, slower open."""
        u = (t - self.start) / self.duration
        if u <= 0.0 or u >= 1.0:
            return 0.0
        if u < 0.35:
            return math.sin(0.5 * math.pi * u / 0.35)
        if u < 0.45:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (u - 0.45) / 0.55))


class IdleMotion:
    """Blinks, breathing, head micro-motion, gaze saccades."""

    def __init__(self, cfg: IdleConfig, seed: int) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D1E]))
        srng = np.random.default_rng(np.random.SeedSequence([seed, 0x51E5]))
        # three sinusoids per head axis (yaw, pitch, roll) + two for gaze drift
        self._freq = srng.uniform(0.05, 0.45, size=(5, 3))
        self._phase = srng.uniform(0, 2 * np.pi, size=(5, 3))
        amp = srng.uniform(0.6, 1.0, size=(5, 3))
        self._amp = amp / np.sqrt((amp ** 2).sum(axis=1, keepdims=True) / 2.0)  # unit rms per axis
        self._blinks: list[Blink] = []
        self._next_blink: float | None = None
        self._next_saccade: float | None = None
        self._gaze_target = np.zeros(2)
        self.blink_count = 0
        self.rate_scale = 1.0   # phase/emotion modulation of the blink rate

    def _interval(self) -> float:
        c = self.cfg
        mean = 60.0 / max(c.blink_rate_per_min * self.rate_scale, 1e-3)
        free = max(mean - c.blink_refractory_s, 0.1)
        return c.blink_refractory_s + float(self.rng.gamma(c.blink_shape_k, free / c.blink_shape_k))

    def _schedule_blinks(self, t: float) -> None:
        c = self.cfg
        if self._next_blink is None:
            self._next_blink = t + float(self.rng.uniform(0.3, 60.0 / max(c.blink_rate_per_min, 1e-3)))
        while self._next_blink <= t:
            start = self._next_blink
            dur = float(self.rng.uniform(*c.blink_duration_s))
            self._blinks.append(Blink(start, dur))
            self.blink_count += 1
            if self.rng.random() < c.double_blink_prob:
                self._blinks.append(Blink(start + dur + float(self.rng.uniform(0.05, 0.12)), dur * 0.9))
                self.blink_count += 1
            self._next_blink = start + self._interval()
        self._blinks = [b for b in self._blinks if b.start + b.duration > t - 0.05]

    def blink_now(self, t: float) -> None:
        """Force a blink soon (e.g. at a turn change), respecting the refractory period."""
        last = max((b.start for b in self._blinks), default=-1e9)
        if t - last > self.cfg.blink_refractory_s and self._next_blink is not None and self._next_blink > t + 0.1:
            self._next_blink = t + 0.05

    def blink(self, t: float) -> float:
        self._schedule_blinks(t)
        return max((b.closure(t) for b in self._blinks), default=0.0)

    def head(self, t: float, scale: float = 1.0) -> np.ndarray:
        """(yaw, pitch, roll) degrees of micro motion plus breathing (pitch)."""
        s = np.sin(2 * np.pi * self._freq[:3] * t + self._phase[:3])
        micro = (self._amp[:3] * s).sum(axis=1) * self.cfg.head_micro_deg * scale / np.sqrt(3.0)
        micro[1] += self.cfg.breath_pitch_deg * math.sin(2 * math.pi * t / self.cfg.breath_period_s)
        return micro

    def gaze(self, t: float, amplitude_scale: float = 1.0) -> np.ndarray:
        """Saccade target (x, y) plus a slow drift, in gaze units."""
        if self._next_saccade is None:
            self._next_saccade = t + float(self.rng.uniform(0.2, self.cfg.saccade_interval_s))
        while self._next_saccade <= t:
            self._gaze_target = self.rng.normal(0.0, self.cfg.saccade_amplitude, size=2) * np.array([1.0, 0.6])
            self._next_saccade += float(self.rng.gamma(2.0, self.cfg.saccade_interval_s / 2.0)) + 0.15
        drift = (self._amp[3:] * np.sin(2 * np.pi * self._freq[3:] * t + self._phase[3:])).sum(axis=1) * 0.02
        return self._gaze_target * amplitude_scale + drift

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "blink_count": self.blink_count}

    def load(self, d: dict) -> None:
        if "rng" in d:
            self.rng.bit_generator.state = d["rng"]
        self.blink_count = int(d.get("blink_count", 0))
        self._blinks, self._next_blink, self._next_saccade = [], None, None
