"""PCM s16le decoding/encoding and sample-rate conversion (whole-signal and streaming)."""

from __future__ import annotations

import logging
from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import firwin, resample_poly

from lpm_npc.errors import AudioFormatError

log = logging.getLogger(__name__)

INTERNAL_RATE = 16000
MIN_RATE, MAX_RATE = 8000, 96000


def check_rate(sample_rate: int) -> int:
    """Return `sample_rate` as int, or raise AudioFormatError when outside MIN_RATE..MAX_RATE."""
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_RATE <= int(sample_rate) <= MAX_RATE:
        raise AudioFormatError(
            f"sample rate {sample_rate!r} Hz is not supported: use an integer in {MIN_RATE}..{MAX_RATE} Hz")
    return int(sample_rate)


def decode_pcm16(data: bytes, sample_rate: int, num_channels: int = 1) -> np.ndarray:
    """Decode interleaved little-endian int16 PCM into float32 mono in -1..1 (channels averaged).

    The rate is only validated here (no resampling): the result is at `sample_rate`.
    """
    check_rate(sample_rate)
    if num_channels not in (1, 2):
        raise AudioFormatError(f"num_channels must be 1 (mono) or 2 (stereo), got {num_channels!r}")
    if not data:
        raise AudioFormatError("empty PCM chunk: send at least one sample")
    frame_bytes = 2 * num_channels
    if len(data) % frame_bytes:
        raise AudioFormatError(
            f"PCM chunk of {len(data)} bytes has an odd length: it is not a whole number of "
            f"{num_channels}-channel s16le frames ({frame_bytes} bytes each); a chunk must not split a sample")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.float32) * (1.0 / 32768.0)
    if num_channels == 2:
        pcm = pcm.reshape(-1, 2).mean(axis=1)
    return pcm


def encode_pcm16(samples: np.ndarray) -> bytes:
    """Encode float samples (-1..1, clipped) as mono little-endian int16 bytes."""
    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def _ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    g = gcd(int(rate_in), int(rate_out))
    return int(rate_out) // g, int(rate_in) // g


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a whole signal with a polyphase Kaiser FIR (scipy.signal.resample_poly)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if rate_in == rate_out or x.size == 0:
        return x.copy()
    up, down = _ratio(rate_in, rate_out)
    return resample_poly(x, up, down).astype(np.float32)


@lru_cache(maxsize=32)
def _polyphase(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase bank H[phase, k] = h[phase + k*up] of resample_poly's default filter, and half_len."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
    taps = -(-len(h) // up)
    padded = np.zeros(taps * up)
    padded[: len(h)] = h
    bank = padded.reshape(taps, up).T.copy()  # bank[p, k] = h[p + k*up]
    return bank.astype(np.float64), half_len


class StreamingResampler:
    """Chunk-by-chunk resampler equal to `resample()` on the concatenated signal (no edge clicks).

    Output sample n is y[n] = sum_i x[i] h[n*down + half_len - i*up] (resample_poly's alignment), so it
    is emitted once input up to floor((n*down + half_len) / up) has arrived: a latency of about
    10 input samples per unit of max(up, down)/up (0.6 ms for 48 kHz -> 16 kHz). `flush()` returns
    the tail as if the input were followed by zeros.
    """

    def __init__(self, rate_in: int, rate_out: int = INTERNAL_RATE):
        self.rate_in = check_rate(rate_in)
        self.rate_out = check_rate(rate_out)
        self.up, self.down = _ratio(rate_in, rate_out)
        self.identity = self.rate_in == self.rate_out
        if not self.identity:
            self._bank, self._half = _polyphase(self.up, self.down)
            self._taps = self._bank.shape[1]
        self._n_out = 0          # next output index
        self._n_in = 0           # input samples received
        self._hist = np.zeros(0, np.float64)  # input samples [n_in - len(hist), n_in)

    @property
    def buffered(self) -> int:
        """Input samples held as history (bounded by the filter length)."""
        return int(self._hist.size)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples; return every output sample that is now fully determined."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.identity:
            return x.copy()
        self._hist = np.concatenate([self._hist, x.astype(np.float64)])
        self._n_in += x.size
        return self._emit(self._n_in)

    def flush(self) -> np.ndarray:
        """Return the remaining outputs of a signal that ends here; the resampler then restarts."""
        if self.identity:
            return np.zeros(0, np.float32)
        n_total = -(-self._n_in * self.up // self.down)
        pad = self._half // self.up + self._taps + 1
        self._hist = np.concatenate([self._hist, np.zeros(pad)])
        out = self._emit(self._n_in + pad, limit=n_total)
        self._n_out, self._n_in, self._hist = 0, 0, np.zeros(0, np.float64)
        return out

    def _emit(self, available: int, limit: int | None = None) -> np.ndarray:
        up, down, half = self.up, self.down, self._half
        # largest n with floor((n*down + half)/up) <= available - 1
        n_end = ((available - 1) * up + up - 1 - half) // down + 1
        if limit is not None:
            n_end = min(n_end, limit)
        start = self._n_out
        hist_start = available - self._hist.size  # global index of hist[0]
        if n_end <= start:
            self._trim(hist_start)
            return np.zeros(0, np.float32)
        n = np.arange(start, n_end, dtype=np.int64)
        j = n * down + half
        i_hi = j // up
        phase = j - i_hi * up
        idx = i_hi[:, None] - np.arange(self._taps)[None, :] - hist_start
        valid = idx >= 0
        vals = self._hist[np.where(valid, idx, 0)] * valid
        y = np.einsum("nk,nk->n", self._bank[phase], vals)
        self._n_out = n_end
        self._trim(hist_start)
        return y.astype(np.float32)

    def _trim(self, hist_start: int) -> None:
        # the next output needs input from i_hi(next) - taps + 1 onward
        j = self._n_out * self.down + self._half
        keep_from = j // self.up - self._taps + 1
        drop = keep_from - hist_start
        if drop > 0:
            self._hist = self._hist[drop:]
