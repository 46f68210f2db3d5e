"""Motion statistics of a simulated conversation against human ranges (lpm_npc/evaluation/motion_stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpm_npc.evaluation.motion_stats import (
    HUMAN_RANGES,
    SessionTrace,
    in_range,
    motion_stats_report,
    window_stats,
)
from lpm_npc.performance.motion import CHANNEL_INDEX as C
from lpm_npc.performance.motion import NUM_CHANNELS


@pytest.fixture(scope="module")
def report() -> dict:
    return motion_stats_report(3.0, fps=30, seed=0)


def test_session_exercises_every_situation(report):
    o = report["overall"]
    assert len(report["per_minute"]) == 3
    assert report["npc_lines"] >= 6 and report["interruptions"] >= 1
    assert 0.15 < o["speaking_share"] < 0.6 and 0.1 < o["listening_share"] < 0.6


@pytest.mark.parametrize("stat", sorted(HUMAN_RANGES))
def test_overall_stat_in_human_range(report, stat):
    lo, hi = HUMAN_RANGES[stat]
    v = report["overall"][stat]
    print(f"{stat}: {v:.3f} (range {lo}..{hi}); per minute "
          f"{[m[stat] for m in report['per_minute']]}")
    assert lo <= v <= hi, (stat, v)


def test_mouth_moves_while_speaking_and_rests_while_listening(report):
    o = report["overall"]
    assert report["overall_in_range"]["jaw_speaking_vs_listening"], o
    assert o["jaw_speaking_mean"] > 0.1


def test_no_drift_between_first_and_last_minute(report):
    first, last = report["first_minute"], report["last_minute"]
    # per-minute blink counts are Poisson-like (sd ~ 3 at 20/min): allow two sd either way
    assert abs(last["blinks_per_min"] - first["blinks_per_min"]) <= 8
    for k in ("blinks_per_min", "head_yaw_std_deg", "head_pitch_std_deg", "head_speed_p50"):
        assert 0.5 <= last[k] / max(first[k], 1e-6) <= 2.0, (k, first[k], last[k])
    assert abs(last["jaw_speaking_mean"] - first["jaw_speaking_mean"]) < 0.05
    for m in report["per_minute"]:  # never frozen, never a blink storm
        assert 8 <= m["blinks_per_min"] <= 30 and m["head_speed_p50"] > 0.3


def _trace(motion: np.ndarray, fps: int = 30) -> SessionTrace:
    n = len(motion)
    return SessionTrace(fps, np.arange(n) / fps, motion.astype(np.float32), np.zeros(n, bool),
                        np.zeros(n, bool), np.zeros(n, np.float32), 0, [])


def test_blink_counting_and_head_stats_on_a_known_signal():
    fps, n = 30, 60 * 30
    m = np.zeros((n, NUM_CHANNELS), np.float32)
    t = np.arange(n) / fps
    for k in range(20):                       # 20 blinks of 6 frames, one every 3 s
        m[k * 90 + 10:k * 90 + 16, C["blink_l"]] = 1.0
    m[:, C["blink_r"]] = 1.0                  # the right eye is ignored by the count
    m[:, C["head_yaw"]] = 3.0 * np.sin(2 * np.pi * 0.25 * t)   # std 3/sqrt(2), speed up to 4.7 deg/s
    s = window_stats(_trace(m, fps), 0, n)
    assert s["blinks_per_min"] == pytest.approx(20)
    assert s["head_yaw_std_deg"] == pytest.approx(3 / math.sqrt(2), rel=0.02)
    assert s["head_pitch_std_deg"] == pytest.approx(0.0)
    assert s["head_speed_p95"] == pytest.approx(3 * 2 * math.pi * 0.25, rel=0.05)
    # a blink held across a window boundary is counted once
    half = window_stats(_trace(m, fps), 0, 13)["blinks_per_min"] * 13 / fps / 60
    rest = window_stats(_trace(m, fps), 13, n)["blinks_per_min"] * (n - 13) / fps / 60
    assert half + rest == pytest.approx(20, abs=1e-3)
    flags = in_range(s)
    assert flags["blinks_per_min"] and flags["head_yaw_std_deg"] and not flags["head_pitch_std_deg"]
