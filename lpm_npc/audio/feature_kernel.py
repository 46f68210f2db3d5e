"""The speech features' per-row arithmetic as one numba loop (`FeatureExtractor` uses it once warmed).

`FeatureExtractor._features` takes the FFTs with numpy (a power spectrum and an autocorrelation per
hop) and then ~35 small numpy steps: band levels, centroid, onset flux, voicing and pitch. For the
3-4 hops of one video frame those steps cost more than the FFTs (dispatch, not arithmetic), once per
talking NPC per frame. Here they are one pass per row, in float64 like numpy's matmuls, held to the
numpy version by the tests.

Compiled (or loaded from numba's disk cache) by `warm_up()`, which the runtime and the worker
processes call at start-up: never on a live session's first chunk. Until then, or if numba cannot
compile, the extractor keeps its numpy steps.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from lpm_npc.jit import NUMBA_USABLE, njit

log = logging.getLogger(__name__)

_ENABLED = NUMBA_USABLE  # False after a failed warm_up too
READY = False  # set by warm_up(); FeatureExtractor reads it per push
_lock = threading.Lock()


@njit(cache=True, nogil=True)
def feature_rows(frames, spec, ac, band_masks_t, all_w, centroid_w, prev_bands, min_lag, max_lag, rate,
                 voiced_thr, out):
    """Fill `out` (n, 13) from mean-removed frames (n, WIN), their power spectra (n, F) and
    autocorrelations (n, >= max_lag + 1); `prev_bands` (5,) is read and left as the last row's bands."""
    n, win = frames.shape
    nb = band_masks_t.shape[1]
    nf = spec.shape[1]
    eps = 1e-10
    bands = np.empty(nb)
    for r in range(n):
        e = 0.0
        for i in range(win):
            e += np.float64(frames[r, i]) * frames[r, i]
        rms_db = 10.0 * np.log10(e / win + eps)
        out[r, 0] = rms_db
        for b in range(nb):
            bands[b] = 0.0
        total = 0.0
        cen = 0.0
        for f in range(nf):
            p = spec[r, f]
            for b in range(nb):
                bands[b] += p * band_masks_t[f, b]
            total += p * all_w[f]
            cen += p * centroid_w[f]
        top = -1e300
        onset = 0.0
        for b in range(nb):
            bands[b] = 10.0 * np.log10(bands[b] / win + eps)
            out[r, 3 + b] = bands[b]
            top = max(top, bands[b])
            onset += max(bands[b] - max(prev_bands[b], -60.0), 0.0)
        out[r, 8] = cen / (total + eps)
        out[r, 9] = onset / nb if top > -60.0 else 0.0
        out[r, 10] = bands[3] - bands[2]
        for b in range(nb):
            prev_bands[b] = bands[b]
        # voicing / pitch: the unbiased normalised autocorrelation's peak in the pitch lag range
        ac0 = ac[r, 0] + eps
        best, lag = -1e300, 0
        for k in range(min_lag, max_lag + 1):
            v = ac[r, k] / (win - k) * win / ac0
            if v > best:
                best, lag = v, k - min_lag
        voicing = min(max(best, 0.0), 1.0) if rms_db > -60.0 else 0.0
        out[r, 1] = voicing
        out[r, 2] = rate / (lag + min_lag) if voicing > voiced_thr else 0.0
        out[r, 11] = 0.0
        out[r, 12] = 0.0


def warm_up() -> bool:
    """Compile (or load) the kernel; afterwards FeatureExtractor uses it. Returns whether it is in use."""
    global READY, _ENABLED
    if READY or not _ENABLED:
        return READY
    with _lock:
        if READY or not _ENABLED:
            return READY
        try:  # once, with the exact argument types FeatureExtractor passes
            f32 = np.float32
            feature_rows(np.zeros((2, 512), f32), np.zeros((2, 257)), np.zeros((2, 1024)), np.zeros((257, 5), f32),
                         np.zeros(257, f32), np.zeros(257, f32), np.full(5, -100.0), 40, 266, 16000.0, 0.45,
                         np.zeros((2, 13), f32))
        except Exception as exc:  # noqa: BLE001 - fall back to the numpy steps, and say so
            _ENABLED = False
            log.warning("the speech-feature kernel could not be compiled (%s: %s); using numpy steps. Set "
                        "NUMBA_CACHE_DIR to a writable folder if the cache is the problem.", type(exc).__name__, exc)
            return False
        READY = True
        return True
