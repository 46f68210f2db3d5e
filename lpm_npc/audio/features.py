"""Causal streaming speech features at 100 Hz (10 ms hop) on 16 kHz audio.

Row k of the output describes the 32 ms window that ends at sample (k+1)*HOP, i.e. it is centred
at `row_time(k)` seconds from the first sample pushed. Columns (see FEATURE_NAMES):

  rms_db      frame level in dBFS (floor -100)
  voicing     0..1 peak of the normalised autocorrelation in the 60..400 Hz lag range
  pitch_hz    F0 estimate when voiced (voicing > 0.45), else 0
  low_db      band level 80..400 Hz (voice bar, nasal murmur)
  f1_db       band level 400..1000 Hz (first formant of open vowels)
  f2lo_db     band level 1000..1800 Hz (second formant of back / rounded vowels)
  f2hi_db     band level 1800..3200 Hz (second formant of front / spread vowels)
  hf_db       band level 3200..8000 Hz (frication, bursts)
  centroid    spectral centroid 0..1 of the 80..8000 Hz band (Nyquist = 1)
  onset       positive log-band flux (dB, >= 0): bursts and syllable onsets
  f2_ratio    f2hi_db - f2lo_db (dB): > 0 spread/front vowels, < 0 rounded/back vowels
  f1_hz       first formant (LPC, order 14, 16 kHz) when voiced, else 0
  f2_hz       second formant (LPC) when voiced, else 0: low (< 1100 Hz) for rounded vowels
              (oo, oh, w), high (> 1900 Hz) for spread ones (ee, ih, eh)
"""

from __future__ import annotations

import numpy as np

from . import feature_kernel

RATE = 16000
HOP = 160
WIN = 512
NFFT = 512
FRAME_RATE = RATE // HOP
FEATURE_NAMES: tuple[str, ...] = (
    "rms_db", "voicing", "pitch_hz", "low_db", "f1_db", "f2lo_db", "f2hi_db", "hf_db",
    "centroid", "onset", "f2_ratio", "f1_hz", "f2_hz",
)
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
NUM_FEATURES = len(FEATURE_NAMES)
SILENT_ROW = np.array([-100.0, 0, 0, -100, -100, -100, -100, -100, 0, 0, 0, 0, 0], np.float32)
_LPC_ORDER = 14
_BANDS_HZ = ((80, 400), (400, 1000), (1000, 1800), (1800, 3200), (3200, 8000))
_MIN_LAG, _MAX_LAG = RATE // 400, RATE // 60
_VOICED = 0.45
_EPS = 1e-10
_FREQS = np.fft.rfftfreq(NFFT, 1.0 / RATE)


def row_time(k: int | np.ndarray) -> float | np.ndarray:
    """Centre time (seconds, relative to the first pushed sample) of feature row k."""
    return (np.asarray(k) * HOP + HOP - WIN / 2) / RATE


class FeatureExtractor:
    """Push 16 kHz mono float samples in any chunk sizes; get one feature row per completed hop.

    Constant memory: only the last WIN samples and the previous band levels are kept.
    """

    # constant tables, shared by every extractor (a reset after each pause in speech re-made
    # them, ~0.1 ms a time, once per chunk for live audio arriving with jitter)
    _window = np.hanning(WIN).astype(np.float32)
    _lpc_window = np.hamming(WIN)
    _band_masks = np.stack([(_FREQS >= lo) & (_FREQS < hi) for lo, hi in _BANDS_HZ]).astype(np.float32)
    _band_masks_t = np.ascontiguousarray(_band_masks.T)
    _all = ((_FREQS >= 80) & (_FREQS <= 8000)).astype(np.float32)
    _centroid_w = (_FREQS / (RATE / 2)).astype(np.float32) * _all

    def __init__(self, formants: bool = False) -> None:
        """`formants=True` also fills f1_hz/f2_hz (LPC; ~5x the cost of everything else)."""
        self.formants = formants
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(WIN, np.float32)    # last WIN samples (zeros before the start)
        self._pending = np.zeros(0, np.float32)  # samples of the incomplete hop
        self._prev_bands = np.full(len(_BANDS_HZ), -100.0)  # float64, as the band levels are
        self.rows_emitted = 0
        self.last_power: np.ndarray | None = None  # (n_hops, NFFT//2+1) power spectra of the last push's frames

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Return the feature rows (n_hops, NUM_FEATURES) completed by these samples."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        n_hops = data.size // HOP
        if n_hops == 0:
            self._pending = data.copy()
            self.last_power = None
            return np.zeros((0, NUM_FEATURES), np.float32)
        used = n_hops * HOP
        stream = np.concatenate([self._buf, data[:used]])
        self._pending = data[used:].copy()
        self._buf = stream[-WIN:].copy()
        idx = np.arange(n_hops)[:, None] * HOP + HOP + np.arange(WIN)[None, :]
        frames = stream[idx]  # frame k ends at stream index WIN + (k+1)*HOP
        rows = self._features(frames)
        self.rows_emitted += n_hops
        return rows

    def _features(self, frames: np.ndarray, kernel: bool | None = None) -> np.ndarray:
        """`kernel`: the per-row steps as one numba loop (feature_kernel); default: once it is warmed up."""
        n = frames.shape[0]
        out = np.zeros((n, NUM_FEATURES), np.float32)
        frames = frames - frames.mean(axis=1, keepdims=True)
        spec = np.abs(np.fft.rfft(frames * self._window, NFFT)) ** 2
        self.last_power = spec   # the learned lip-sync's mel front end frames the audio the same way
        if feature_kernel.READY if kernel is None else kernel:
            ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * WIN)) ** 2, 2 * WIN)
            feature_kernel.feature_rows(frames, spec, ac, self._band_masks_t, self._all, self._centroid_w,
                                        self._prev_bands, _MIN_LAG, _MAX_LAG, float(RATE), _VOICED, out)
            if self.formants:
                self._add_formants(frames, out)
            return out
        out[:, F["rms_db"]] = 10 * np.log10(np.mean(frames ** 2, axis=1) + _EPS)
        bands = 10 * np.log10(spec @ self._band_masks_t / WIN + _EPS)
        out[:, F["low_db"]:F["hf_db"] + 1] = bands
        total = spec @ self._all + _EPS
        out[:, F["centroid"]] = (spec @ self._centroid_w) / total
        prev = np.concatenate([self._prev_bands[None, :], bands[:-1]])
        out[:, F["onset"]] = np.maximum(bands - np.maximum(prev, -60.0), 0.0).mean(axis=1) * (bands.max(axis=1) > -60)
        self._prev_bands = bands[-1].copy()
        out[:, F["f2_ratio"]] = bands[:, 3] - bands[:, 2]
        # pitch / voicing: normalised autocorrelation (unbiased) via FFT
        spec_ac = np.abs(np.fft.rfft(frames, 2 * WIN)) ** 2
        ac = np.fft.irfft(spec_ac, 2 * WIN)[:, : _MAX_LAG + 1]
        ac = ac / (WIN - np.arange(_MAX_LAG + 1))[None, :] * WIN
        ac0 = ac[:, :1] + _EPS
        seg = ac[:, _MIN_LAG:] / ac0
        lag = np.argmax(seg, axis=1)
        peak = seg[np.arange(n), lag]
        voiced_ok = out[:, F["rms_db"]] > -60
        voicing = np.clip(peak, 0, 1) * voiced_ok
        out[:, F["voicing"]] = voicing
        out[:, F["pitch_hz"]] = np.where(voicing > _VOICED, RATE / (lag + _MIN_LAG), 0.0)
        if self.formants:
            self._add_formants(frames, out)
        return out

    def _add_formants(self, frames: np.ndarray, out: np.ndarray) -> None:
        f1, f2 = _formants(frames, self._lpc_window)
        voiced = out[:, F["voicing"]] > _VOICED
        out[:, F["f1_hz"]] = np.where(voiced, f1, 0.0)
        out[:, F["f2_hz"]] = np.where(voiced, f2, 0.0)


def _formants(frames: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1/F2 (Hz) per frame from LPC roots (batched Levinson-Durbin + companion eigenvalues)."""
    n = frames.shape[0]
    x = np.concatenate([frames[:, :1], frames[:, 1:] - 0.95 * frames[:, :-1]], axis=1) * window
    spec = np.fft.rfft(x, 2 * WIN)
    r = np.fft.irfft(np.abs(spec) ** 2, 2 * WIN)[:, : _LPC_ORDER + 1].astype(np.float64)
    r[:, 0] = r[:, 0] * (1.0 + 1e-6) + 1e-12
    a = np.zeros((n, _LPC_ORDER + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, _LPC_ORDER + 1):
        acc = r[:, i] + np.einsum("nj,nj->n", a[:, 1:i], r[:, i - 1:0:-1])
        k = -acc / err
        a_prev = a.copy()
        a[:, 1:i] = a_prev[:, 1:i] + k[:, None] * a_prev[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1.0 - k * k)
    comp = np.zeros((n, _LPC_ORDER, _LPC_ORDER))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, _LPC_ORDER), np.arange(_LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(comp)
    freq = np.angle(roots) * RATE / (2 * np.pi)
    bw = -np.log(np.abs(roots) + 1e-12) * RATE / np.pi
    ok = (freq > 200) & (freq < 4000) & (bw < 500) & (roots.imag > 0)
    freq = np.where(ok, freq, np.inf)
    freq.sort(axis=1)
    f1 = np.where(np.isfinite(freq[:, 0]), freq[:, 0], 0.0)
    f2 = np.where(np.isfinite(freq[:, 1]), freq[:, 1], 0.0)
    return f1.astype(np.float32), f2.astype(np.float32)
