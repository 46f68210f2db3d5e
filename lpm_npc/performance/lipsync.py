"""Speech audio features -> mouth and prosody targets, one row per 10 ms hop (audio only).

`ArticulationTracker.rows()` turns feature rows into target rows (causally, with a running speech
level so quiet and loud voices animate alike). `mouth_at()` samples the target rows around a frame
time with a small anticipation (the lips move ~30 ms before the sound) and coarticulation blur.

Cues (measured on eSpeak NG voices, see tests/test_performance.py):
  * jaw: first-formant band energy (open vowels) plus overall level relative to the speech level;
  * spread (ee/ih): energy 1.8-3.2 kHz well above the F1/F2-low bands;
  * round (oo/oh/w): little energy above 1.8 kHz while voiced;
  * lips pressed (m/b/p): nasal murmur (voiced, energy mostly below 400 Hz with a weak F1 band and
    almost nothing above 1.8 kHz, a few dB below the vowels) or a voice bar / closure (level far
    below the vowels with no high-frequency energy); silent stop gaps close the jaw by level alone;
  * accent: pitch above the running pitch mean on a loud voiced hop (drives brows and nods).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpm_npc.audio.features import F, FRAME_RATE

TARGETS: tuple[str, ...] = ("jaw", "round", "spread", "press", "active", "accent", "onset")
T = {name: i for i, name in enumerate(TARGETS)}
NUM_TARGETS = len(TARGETS)
SILENT_TARGET = np.zeros(NUM_TARGETS, np.float32)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    y = (x - lo) / (hi - lo)
    if not isinstance(y, np.ndarray):
        return np.clip(y, 0.0, 1.0)
    np.maximum(y, 0.0, out=y)      # = np.clip(y, 0, 1) without its per-call overhead
    return np.minimum(y, 1.0, out=y)


@dataclass
class LipSyncConfig:
    """Gains and timing of the audio-driven mouth."""

    jaw_gain: float = 0.7         # jaw_open on the loudest open vowels
    round_gain: float = 0.7
    spread_gain: float = 0.6
    anticipation_s: float = 0.03  # the mouth leads the sound by this much
    blur_s: float = 0.02          # coarticulation: Gaussian sigma over target rows
    press_window_s: float = 0.02  # a closure anywhere within +- this much shows
    release_rows: int = 5         # a closure needs speech (or more closure) within this many rows after


class ArticulationTracker:
    """Causal feature rows -> target rows; keeps only running levels (constant memory)."""

    def __init__(self) -> None:
        self.level_db = -20.0      # running mean level of voiced speech (dBFS)
        self.f1_ref_db = -10.0     # running peak of the F1 band
        self.log_pitch = 0.0       # running mean log F0 (0 = not seen yet)
        self.shape_db = -8.0       # running mean spectral shape (spread score) of voiced speech

    def state(self) -> dict:
        return {"level_db": self.level_db, "f1_ref_db": self.f1_ref_db, "log_pitch": float(self.log_pitch),
                "shape_db": self.shape_db}

    def load(self, d: dict) -> None:
        self.level_db = float(d.get("level_db", self.level_db))
        self.f1_ref_db = float(d.get("f1_ref_db", self.f1_ref_db))
        self.log_pitch = float(d.get("log_pitch", self.log_pitch))
        self.shape_db = float(d.get("shape_db", self.shape_db))

    def _update_refs(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-row running references (sequential: a few floats per row).

        The level / shape means gate themselves on the level, so this is one scan; it runs on plain
        Python floats (columns converted once with tolist(), log F0 vectorised) and the F1 peak is
        a vectorised running max with linear decay.
        """
        n = feats.shape[0]
        a_shape = 1.0 / (FRAME_RATE * 4.0)
        a_level, a_pitch = 1.0 / (FRAME_RATE * 2.0), 1.0 / (FRAME_RATE * 1.5)
        rms_a = feats[:, F["rms_db"]]
        f1_a = feats[:, F["f1_db"]]
        # F1 peak: on rows with rms > -70 the reference becomes max(ref - decay, f1, -45), else it holds
        f1ref = self._f1_refs(rms_a, f1_a)
        rms_l = rms_a.tolist()
        voicing_l = feats[:, F["voicing"]].tolist()
        pitch_a = feats[:, F["pitch_hz"]]
        lp_l = np.log(np.where(pitch_a > 0, pitch_a, np.float32(1.0))).tolist()
        pitch_l = pitch_a.tolist()
        sc_a = feats[:, F["f2hi_db"]] - np.maximum(f1_a, feats[:, F["f2lo_db"]])
        sc_l = np.clip(sc_a.astype(np.float64), -30.0, 30.0).tolist()
        level = [0.0] * n
        lp = [0.0] * n
        shape = [0.0] * n
        level_db, log_pitch, shape_db = float(self.level_db), float(self.log_pitch), float(self.shape_db)
        for i in range(n):
            rms, voicing = rms_l[i], voicing_l[i]
            if voicing > 0.5 and rms > level_db - 12.0:
                level_db += a_level * (rms - level_db) * (4.0 if rms > level_db + 6 else 1.0)
            if pitch_l[i] > 0:
                log_pitch = lp_l[i] if log_pitch == 0.0 else log_pitch + a_pitch * (lp_l[i] - log_pitch)
            if voicing > 0.5 and rms > level_db - 10.0:
                shape_db += a_shape * (sc_l[i] - shape_db)
            level[i], lp[i], shape[i] = level_db, log_pitch, shape_db
        self.level_db, self.log_pitch, self.shape_db = level_db, log_pitch, shape_db
        return (np.array(level, np.float32), f1ref, np.array(lp, np.float32), np.array(shape, np.float32))

    def _f1_refs(self, rms: np.ndarray, f1: np.ndarray) -> np.ndarray:
        """Running F1 peak: ref_i = max(ref_{i-1} - decay, f1_i, -45) on rows with rms > -70."""
        decay = 3.0 / FRAME_RATE  # dB per row the F1 peak forgets
        on = rms > -70.0
        c = np.cumsum(on)                                    # decays applied up to row i
        v = np.where(on, np.maximum(f1.astype(np.float64), -45.0), -np.inf) + decay * c
        peak = np.maximum.accumulate(np.maximum(v, float(self.f1_ref_db)))
        ref = peak - decay * c
        if ref.size:
            self.f1_ref_db = float(ref[-1])
        return ref.astype(np.float32)

    def rows(self, feats: np.ndarray, mouth: bool = True) -> np.ndarray:
        """Target rows (n, NUM_TARGETS) for feature rows (n, NUM_FEATURES).

        mouth=False leaves the jaw / round / spread / press columns at 0 (the learned lip-sync
        writes its own there); the running references are updated either way."""
        out = np.zeros((feats.shape[0], NUM_TARGETS), np.float32)
        if feats.shape[0] == 0:
            return out
        level, f1ref, lp, shape = self._update_refs(feats)
        rms = feats[:, F["rms_db"]]
        pitch = feats[:, F["pitch_hz"]]
        active = _ramp(rms - level, -32.0, -20.0)
        if mouth:
            self._mouth_columns(out, feats, level, f1ref, shape, active)
        out[:, T["active"]] = active
        pitch_z = np.where(pitch > 0, (np.log(np.maximum(pitch, 1.0)) - lp) / 0.08, 0.0)
        out[:, T["accent"]] = _ramp(pitch_z, 0.8, 2.5) * _ramp(rms - level, -6.0, 0.0)
        out[:, T["onset"]] = _ramp(feats[:, F["onset"]], 4.0, 15.0) * active
        return out

    @staticmethod
    def _mouth_columns(out: np.ndarray, feats: np.ndarray, level: np.ndarray, f1ref: np.ndarray,
                       shape: np.ndarray, active: np.ndarray) -> None:
        rms = feats[:, F["rms_db"]]
        low, f1 = feats[:, F["low_db"]], feats[:, F["f1_db"]]
        f2lo, f2hi = feats[:, F["f2lo_db"]], feats[:, F["f2hi_db"]]
        voicing = feats[:, F["voicing"]]
        below = level - rms
        voiced = _ramp(voicing, 0.4, 0.6) * active
        openness = _ramp(f1 - f1ref, -24.0, -4.0)
        loud = _ramp(rms - level, -26.0, 2.0)
        # relative to this voice's running mean shape (channel / microphone colouring cancels)
        spread_score = f2hi - np.maximum(f1, f2lo) - shape
        hi_vs_low = f2hi - low
        murmur = _ramp(-hi_vs_low, 15.0, 22.0) * _ramp(low - f1, 5.0, 11.0) * _ramp(below, 3.0, 7.0) * voiced
        nasal_m = murmur * _ramp(f2lo - f1, -8.0, -1.0)
        voice_bar = _ramp(below, 8.0, 13.0) * _ramp(low - f1, 7.0, 13.0) * _ramp(-hi_vs_low, 12.0, 18.0) * _ramp(voicing, 0.3, 0.5)
        no_frication = _ramp(low - feats[:, F["hf_db"]], 14.0, 20.0)  # voiced fricatives (z, v, th) keep frication
        press = np.maximum(nasal_m, voice_bar) * no_frication
        # unvoiced hops (bursts, fricatives) keep the jaw near closed: the lips open on the vowel
        jaw = (0.6 * openness + 0.4 * loud) * active * (1.0 - np.maximum(murmur, press)) * (0.3 + 0.7 * _ramp(voicing, 0.35, 0.6))
        out[:, T["jaw"]] = jaw
        out[:, T["spread"]] = _ramp(spread_score, 3.0, 20.0) * voiced
        out[:, T["round"]] = _ramp(-spread_score, 3.0, 10.0) * voiced * (1.0 - press)
        out[:, T["press"]] = press


@dataclass
class MouthShape:
    jaw: float = 0.0
    round: float = 0.0
    spread: float = 0.0
    press: float = 0.0
    active: float = 0.0
    accent: float = 0.0
    onset: float = 0.0


def mouth_at(rows: np.ndarray, row_times: np.ndarray, t: float, cfg: LipSyncConfig) -> MouthShape:
    """Mouth shape at frame time `t` from target rows (m, NUM_TARGETS) centred at `row_times`."""
    if rows.shape[0] == 0:
        return MouthShape()
    tc = t + cfg.anticipation_s
    d = row_times - tc
    w = np.exp(-0.5 * (d / cfg.blur_s) ** 2)
    w_sum = float(w.sum())
    if w_sum < 1e-6:
        return MouthShape()
    mean = (w[:, None] * rows).sum(axis=0) / max(w_sum, 1.0)
    near = np.abs(d) <= cfg.press_window_s + 1e-6
    press = 0.0
    if near.any():
        k = int(np.flatnonzero(near)[np.argmax(rows[near, T["press"]])])
        press = float(rows[k, T["press"]])
        # a closure is followed by a release: a voice fading into a pause is not a closure
        after = rows[k + 1:k + 1 + cfg.release_rows]
        if press > 0 and after.shape[0] >= 2:
            release = max(float(after[:, T["active"]].max()), float(after[:, T["press"]].max()))
            press *= float(np.clip((release - 0.3) / 0.4, 0.0, 1.0))
    jaw = float(mean[T["jaw"]]) * (1.0 - press)
    return MouthShape(
        jaw=cfg.jaw_gain * jaw,
        round=cfg.round_gain * float(mean[T["round"]]),
        spread=cfg.spread_gain * float(mean[T["spread"]]) * (1.0 - 0.7 * press),
        press=press,
        active=float(mean[T["active"]]),
        accent=float(mean[T["accent"]]),
        onset=float(rows[near, T["onset"]].max()) if near.any() else 0.0,
    )
