"""Held-out lip-sync evaluation: learned (audio, audio + text) vs the signal baseline, same run.

Every system runs through the real NpcTimeline (streamed in 40 ms chunks) and the real
`mouth_at` sampling (anticipation, blur, press window) at every 10 ms; the shapes are classified
into visemes the same way for all systems. Truth: the eSpeak phoneme at `t + anticipation` (the
mouth leads the sound).

Metrics: viseme accuracy (speech hops, classes sil/PP/FF/open/spread/round/neutral),
onset timing error p50/p95 (ms) of distinctive visemes (PP/open/spread/round) matched within
150 ms, share of p/b/m closures shown (mouth nearly closed in the phoneme), and
mouth-closed-in-silence rate (hops >= 100 ms from any speech).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from lpm_npc.audio.features import HOP, RATE
from lpm_npc.performance.lipsync import LipSyncConfig, MouthShape, mouth_at
from lpm_npc.performance.lipsync_data import (
    Utterance,
    _noise,
    _reverb,
    heldout_set,
    viseme_labels,
)
from lpm_npc.performance.timeline import NpcTimeline

log = logging.getLogger(__name__)

CLOSED = 0.12          # jaw * (1 - press) below this: mouth (nearly) closed (as tests/test_performance.py)
EVAL_CLASSES = ("sil", "PP", "FF", "open", "spread", "round", "neutral")
_E = {n: i for i, n in enumerate(EVAL_CLASSES)}
_TRUTH_MAP = np.array([_E["sil"], _E["PP"], _E["FF"], _E["open"], _E["spread"], _E["round"], _E["neutral"], _E["neutral"]])
SYSTEMS = ("baseline", "learned", "learned+text")
CHUNK_S = 0.04
LOOKAHEAD_S = 0.08


def shape_class(m: MouthShape, cfg: LipSyncConfig) -> int:
    """Viseme class of a mouth shape (the same rule for every system)."""
    jaw = m.jaw / cfg.jaw_gain
    rnd = m.round / cfg.round_gain
    spr = m.spread / cfg.spread_gain
    if m.press >= 0.6:
        return _E["PP"]
    if m.press >= 0.25 and jaw < 0.2:
        return _E["FF"]
    if jaw < 0.06 and rnd < 0.25 and spr < 0.25:
        return _E["sil"]
    if rnd >= 0.35 and rnd >= spr:
        return _E["round"]
    if spr >= 0.4 and jaw < 0.7:
        return _E["spread"]
    if jaw >= 0.6:
        return _E["open"]
    return _E["neutral"]


@dataclass
class Track:
    shapes: list[MouthShape]
    classes: np.ndarray
    opening: np.ndarray


def run_system(u: Utterance, system: str, cfg: LipSyncConfig, x: np.ndarray | None = None) -> Track:
    """Stream `u` through a timeline and sample the mouth every hop like PerformanceModel._mouth."""
    x = u.samples if x is None else x
    tl = NpcTimeline(lipsync="signal" if system == "baseline" else "learned")
    if system != "baseline" and tl.lipsync != "learned":
        raise RuntimeError("learned lip-sync model did not load (see the log); train it with tools/train_lipsync.py")
    text = u.text if system == "learned+text" else ""
    voice = u.voice.split("+")[0] if text else None
    n = int(CHUNK_S * RATE)
    for i in range(0, x.size, n):
        tl.push(x[i:i + n], i, text=text, text_voice=voice)
    times = np.arange(x.size // HOP) * HOP / RATE
    shapes = []
    for t in times:
        lo = t + cfg.anticipation_s - 3 * cfg.blur_s
        hi = min(t + cfg.anticipation_s + 3 * cfg.blur_s, t + LOOKAHEAD_S)
        rows, rt = tl.window(lo, hi)
        shapes.append(mouth_at(rows, rt, float(t), cfg))
    classes = np.array([shape_class(m, cfg) for m in shapes])
    opening = np.array([m.jaw * (1.0 - m.press) for m in shapes])
    return Track(shapes, classes, opening)


def _truth(u: Utterance, n: int, cfg: LipSyncConfig) -> np.ndarray:
    shift = [(t - cfg.anticipation_s, s) for t, s in u.phonemes]
    # labels at row centres; rows centre at k*10ms - 6ms, we sample the mouth at k*10ms: shift by one row's offset
    lab = viseme_labels([(t - 0.006, s) for t, s in shift], n)
    return _TRUTH_MAP[lab]


def _onsets(c: np.ndarray) -> list[tuple[int, int]]:
    idx = np.flatnonzero(np.diff(c) != 0) + 1
    return [(int(i), int(c[i])) for i in idx]


def utterance_metrics(u: Utterance, tr: Track, cfg: LipSyncConfig) -> dict:
    n = tr.classes.size
    truth = _truth(u, n, cfg)
    speech = truth != _E["sil"]
    # silence: hops >= 100 ms from any speech hop
    near = np.convolve(speech.astype(float), np.ones(21), mode="same") > 0
    quiet = ~near
    # onsets of distinctive visemes
    errs, misses = [], 0
    pred_on = _onsets(tr.classes)
    for k, c in _onsets(truth):
        if c not in (_E["PP"], _E["open"], _E["spread"], _E["round"]):
            continue
        cand = [abs(k - j) for j, pc in pred_on if pc == c and abs(k - j) <= 15]
        if cand:
            errs.append(min(cand) * 10.0)
        else:
            misses += 1
    # bilabial closures: the mouth nearly closed somewhere in the phoneme (+- 1 hop)
    bil_hit, bil_n = 0, 0
    for i, (t, s) in enumerate(u.phonemes):
        if s.lstrip("',") in ("p", "b", "m"):
            t_end = u.phonemes[i + 1][0] if i + 1 < len(u.phonemes) else t + 0.08
            a = int(np.floor((t - cfg.anticipation_s) * 100)) - 1
            b = int(np.ceil((t_end - cfg.anticipation_s) * 100)) + 1
            seg = tr.opening[max(a, 0):min(b, n)]
            if seg.size:
                bil_n += 1
                bil_hit += bool(seg.min() < CLOSED)
    return {"correct": int((tr.classes[speech] == truth[speech]).sum()), "speech": int(speech.sum()),
            "onset_errs": errs, "onset_misses": misses, "bil_hit": bil_hit, "bil_n": bil_n,
            "quiet_closed": int((tr.opening[quiet] < CLOSED).sum()), "quiet": int(quiet.sum())}


def _summ(ms: list[dict]) -> dict:
    errs = np.concatenate([np.asarray(m["onset_errs"], float) for m in ms]) if ms else np.zeros(0)
    n_on = errs.size + sum(m["onset_misses"] for m in ms)
    tot = lambda k: sum(m[k] for m in ms)
    return {
        "viseme_acc": round(tot("correct") / max(tot("speech"), 1), 3),
        "onset_p50_ms": round(float(np.percentile(errs, 50)), 1) if errs.size else None,
        "onset_p95_ms": round(float(np.percentile(errs, 95)), 1) if errs.size else None,
        "onset_matched": round(errs.size / max(n_on, 1), 3),
        "bilabial_closed": round(tot("bil_hit") / max(tot("bil_n"), 1), 3),
        "silence_closed": round(tot("quiet_closed") / max(tot("quiet"), 1), 4),
    }


def degrade(x: np.ndarray, kind: str, seed: int = 7) -> np.ndarray:
    """Channel conditions for robustness: 'phone' (300-3400 Hz + noise 20 dB), 'noisy' (10 dB), 'reverb'."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    speech_rms = float(np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2))) if np.any(np.abs(x) > 1e-4) else 0.1
    if kind == "clean":
        return x
    if kind == "phone":
        y = sosfilt(butter(4, [300, 3400], "band", fs=RATE, output="sos"), x).astype(np.float32)
        snr = 20.0
    elif kind == "noisy":
        y, snr = x, 10.0
    elif kind == "reverb":
        return _reverb(x, rng)
    else:
        raise ValueError(f"unknown condition {kind!r}: clean, phone, noisy or reverb")
    nz = _noise(y.size, rng)
    nz *= speech_rms / (np.sqrt(np.mean(nz ** 2)) + 1e-9) * 10 ** (-snr / 20)
    return (y + nz).astype(np.float32)


def lipsync_report(quick: bool = True, conditions: tuple[str, ...] | None = None) -> dict:
    """Held-out table: {condition: {system: metrics}} plus bars; quick=True runs in well under 60 s."""
    t0 = time.time()
    cfg = LipSyncConfig()
    utts = heldout_set(quick)
    conditions = conditions or (("clean", "phone") if quick else ("clean", "phone", "noisy", "reverb"))
    table: dict = {}
    for cond in conditions:
        table[cond] = {}
        for system in SYSTEMS:
            if system == "learned+text" and cond != "clean" and quick:
                continue
            ms = [utterance_metrics(u, run_system(u, system, cfg, degrade(u.samples, cond, 7 + i)), cfg)
                  for i, u in enumerate(utts)]
            table[cond][system] = _summ(ms)
    return {"heldout_utterances": len(utts), "voices": sorted({u.voice for u in utts}), "table": table,
            "bars": {"onset_p50_ms": 40, "bilabial_closed": 0.90, "silence_closed": 0.98},
            "seconds": round(time.time() - t0, 1)}


def print_lipsync_report(rep: dict) -> None:
    """The held-out table as Markdown, each system beside the foundation's baseline and the bars."""
    bars = rep["bars"]
    print(f"\nLip-sync on a held-out set ({rep['heldout_utterances']} utterances; voices/languages not trained on: "
          f"{', '.join(rep['voices'])})")
    print(f"bars: onset p50 <= {bars['onset_p50_ms']} ms, p/b/m closed >= {bars['bilabial_closed']:.0%}, "
          f"silence closed >= {bars['silence_closed']:.0%}")
    print("| condition | system | viseme acc | onset p50 / p95 ms | onsets matched | p/b/m closed | silence closed | bars |")
    print("|---|---|---|---|---|---|---|---|")
    for cond, systems in rep["table"].items():
        for system, m in systems.items():
            ok = (m["onset_p50_ms"] is not None and m["onset_p50_ms"] <= bars["onset_p50_ms"]
                  and m["bilabial_closed"] >= bars["bilabial_closed"] and m["silence_closed"] >= bars["silence_closed"])
            print(f"| {cond} | {system} | {m['viseme_acc']:.3f} | {m['onset_p50_ms']} / {m['onset_p95_ms']} | "
                  f"{m['onset_matched']:.2f} | {m['bilabial_closed']:.3f} | {m['silence_closed']:.3f} | "
                  f"{'met' if ok else 'NOT met'} |")
