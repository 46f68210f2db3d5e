"""Listening evaluation: turn boundaries, false turns on noise, backchannel timing.

The player channel is scored on eSpeak NG dialogue (two voices, several pitches) with pauses
inside and between turns, clean and with white / pink noise, for the Silero VAD and for the
foundation's energy VAD (the baseline) in the same run:

  * turn start / end error (ms, |p50| and p95) against the clean signal's speech segments
    (gaps < 0.5 s bridged: a breath inside a sentence is not a turn end);
  * missed / extra turns;
  * false turns on noise alone (white and pink at -30 dBFS, and a fan-like hum);
  * backchannels: share of BACKCHANNEL events that fall in a player pause, a breath inside a line
    included (not while their voice is sounding).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from lpm_npc.audio.pcm import INTERNAL_RATE as SR
from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, synthesize_16k
from lpm_npc.performance.listening import PlayerListener, VadConfig
from lpm_npc.performance.model import PerformanceConfig, PerformanceModel
from lpm_npc.types import EventType

log = logging.getLogger(__name__)

MIC = 320  # 20 ms microphone chunks
LINES = (
    ("Have you seen the blacksmith today? I need a new sword.", DEFAULT_PLAYER_VOICE, 50),
    ("The road north is closed, they say, because of the snow.", DEFAULT_NPC_VOICE, 40),
    ("Maybe we could go together, if you are not too busy.", DEFAULT_PLAYER_VOICE, 70),
    ("I lost my map somewhere near the old mill.", "en-gb-scotland+f2", 55),
)


@functools.cache
def _say(text: str, voice: str, pitch: int) -> np.ndarray:
    return synthesize_16k(text, voice=voice, pitch=pitch)


def _sil(s: float) -> np.ndarray:
    return np.zeros(int(round(s * SR)), np.float32)


def noise(n: int, db: float, kind: str = "white", seed: int = 0) -> np.ndarray:
    """`n` samples of white / pink noise or mains hum + rumble ("hum") at `db` dBFS RMS."""
    rng = np.random.default_rng(seed)
    if kind == "hum":  # mains hum + fan rumble
        t = np.arange(n) / SR
        w = np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 100 * t) + 0.3 * rng.standard_normal(n)
    else:
        w = rng.standard_normal(n)
        if kind == "pink":
            spec = np.fft.rfft(w)
            f = np.arange(spec.size, dtype=np.float64)
            f[0] = 1.0
            w = np.fft.irfft(spec / np.sqrt(f), n)
    return (w / np.sqrt(np.mean(w ** 2)) * 10 ** (db / 20)).astype(np.float32)


def speech_mask(x: np.ndarray, hop: int = 160, db: float = -45.0) -> np.ndarray:
    """Per 10 ms hop: does the clean signal carry speech energy (ground truth)?"""
    n = x.size // hop
    p = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    return 10 * np.log10(p + 1e-12) > db


def segments(x: np.ndarray, min_gap_s: float = 0.5, db: float = -45.0) -> list[tuple[float, float]]:
    """True speech segments of a clean signal (gaps shorter than min_gap_s bridged)."""
    idx = np.nonzero(speech_mask(x, db=db))[0]
    segs: list[list[float]] = []
    for k in idx:
        t = k * 0.01
        if segs and t - segs[-1][1] <= min_gap_s:
            segs[-1][1] = t + 0.01
        else:
            segs.append([t, t + 0.01])
    return [(a, b) for a, b in segs]


def _dialogue() -> np.ndarray:
    parts = [_sil(0.8)]
    for text, voice, pitch in LINES:
        # a 0.25 s breath inside the line keeps the turn; 1.3 s between lines ends it
        a = _say(text, voice, pitch)
        cut = a.size // 2
        parts += [a[:cut], _sil(0.25), a[cut:], _sil(1.3)]
    return np.concatenate(parts)


def _events(x: np.ndarray, backend: str) -> list:
    lst = PlayerListener(VadConfig(backend=backend))
    for i in range(0, x.size, MIC):
        lst.push(x[i:i + MIC], i / SR)
    lst.tick(x.size / SR + 2.0)
    return lst.pop_until(1e9), lst.backend


def _boundaries(x_clean: np.ndarray, x: np.ndarray, backend: str) -> dict:
    truth = segments(x_clean)
    events, used = _events(x, backend)
    starts = [e.t_s for e in events if e.type == EventType.PLAYER_SPEECH_STARTED]
    ends = [e.t_s for e in events if e.type == EventType.PLAYER_SPEECH_ENDED]
    err_s, err_e, matched = [], [], 0
    for a, b in truth:
        s = min(starts, key=lambda v: abs(v - a), default=None)
        e = min(ends, key=lambda v: abs(v - b), default=None)
        if s is not None and abs(s - a) < 0.5:
            err_s.append(s - a)
            matched += 1
        if e is not None and abs(e - b) < 0.8:
            err_e.append(e - b)
    errs = np.abs(np.array(err_s + err_e)) * 1000.0 if err_s or err_e else np.array([np.nan])
    return {"backend": used, "turns_true": len(truth), "turns_found": len(starts),
            "missed": len(truth) - matched, "extra": max(0, len(starts) - matched),
            "start_err_ms_p50": round(float(np.median(np.array(err_s) * 1000)), 1) if err_s else None,
            "end_err_ms_p50": round(float(np.median(np.array(err_e) * 1000)), 1) if err_e else None,
            "abs_err_ms_p95": round(float(np.nanpercentile(errs, 95)), 1)}


def _false_turns(backend: str) -> int:
    n = 0
    for kind in ("white", "pink", "hum"):
        events, _ = _events(noise(8 * SR, -30.0, kind, seed=3), backend)
        n += sum(e.type == EventType.PLAYER_SPEECH_STARTED for e in events)
    return n


def _backchannels(backend: str) -> dict:
    """Backchannel events from a full PerformanceModel listening to the dialogue: in pauses or not."""
    from dataclasses import replace

    x = _dialogue()
    truth = segments(x, min_gap_s=0.1)  # the voice sounding (a breath pause is a fine moment to nod)
    cfg = PerformanceConfig()
    cfg = replace(cfg, vad=replace(cfg.vad, backend=backend))
    m = PerformanceModel(cfg, seed=0)
    pos, events = 0, []
    for i in range(int(x.size / SR * 30) + 60):
        t = i / 30.0
        while pos < x.size and pos / SR <= t:
            m.push_player_audio(x[pos:pos + MIC], pos / SR)
            pos += MIC
        events += m.step(t)[1]
    bcs = [e.t_s for e in events if e.type == EventType.BACKCHANNEL]
    in_speech = sum(any(a + 0.05 < t < b - 0.05 for a, b in truth) for t in bcs)
    return {"backchannels": len(bcs), "during_player_speech": in_speech,
            "in_pauses_share": round(1.0 - in_speech / len(bcs), 3) if bcs else None}


def listening_report() -> dict:
    """The listening table: Silero VAD against the energy VAD baseline, same audio."""
    clean = _dialogue()
    conditions = {
        "clean": clean,
        "white -45 dB": clean + noise(clean.size, -45.0, "white", 1),
        "pink -40 dB": clean + noise(clean.size, -40.0, "pink", 2),
        "band-limited 300-3400 Hz": _bandlimit(clean),
    }
    rows = []
    for name, x in conditions.items():
        for backend in ("silero", "energy"):
            rows.append({"condition": name, **_boundaries(clean, x, backend)})
    return {
        "boundaries": rows,
        "false_turns_on_noise": {b: _false_turns(b) for b in ("silero", "energy")},
        "backchannels": {b: _backchannels(b) for b in ("silero", "energy")},
    }


def _bandlimit(x: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    sos = butter(4, [300, 3400], btype="band", fs=SR, output="sos")
    return sosfilt(sos, x).astype(np.float32)


def print_listening_report(r: dict) -> None:
    print("\nListening (player channel): Silero VAD vs the energy VAD baseline, same audio")
    print("| condition | VAD | turns found / true | missed | extra | start err p50 ms | end err p50 ms | |err| p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r["boundaries"]:
        print(f"| {row['condition']} | {row['backend']} | {row['turns_found']} / {row['turns_true']} | {row['missed']} | "
              f"{row['extra']} | {row['start_err_ms_p50']} | {row['end_err_ms_p50']} | {row['abs_err_ms_p95']} |")
    ft = r["false_turns_on_noise"]
    print(f"false turns on 24 s of noise alone (white, pink, hum at -30 dBFS): silero {ft['silero']}, energy {ft['energy']}")
    for b, bc in r["backchannels"].items():
        print(f"backchannels ({b}): {bc['backchannels']}, during player speech {bc['during_player_speech']}, "
              f"share in pauses {bc['in_pauses_share']}")


if __name__ == "__main__":
    print_listening_report(listening_report())
