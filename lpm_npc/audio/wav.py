"""Reading and writing audio files (WAV and anything else libsndfile reads) via soundfile."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from lpm_npc.audio.pcm import INTERNAL_RATE, resample
from lpm_npc.errors import AudioFormatError

log = logging.getLogger(__name__)


def read_audio(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Read a file path or in-memory file bytes: float32 mono (channels averaged) at its native rate.

    Handles 16/24/32-bit integer and 32/64-bit float WAV, WAVE_FORMAT_EXTENSIBLE, mono or multichannel,
    at any rate libsndfile accepts. Raises AudioFormatError when unreadable or empty.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        handle = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError, TypeError, ValueError) as exc:
        raise AudioFormatError(f"cannot read audio from {name}: {exc}") from exc
    if data.size == 0:
        raise AudioFormatError(f"audio file {name} holds no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    log.debug("read %s: %d samples x %d channels at %d Hz", name, data.shape[0], data.shape[1], rate)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def load_audio(source: str | Path | bytes, rate: int = INTERNAL_RATE) -> np.ndarray:
    """Read audio as float32 mono resampled to `rate` (16 kHz by default)."""
    samples, native = read_audio(source)
    return resample(samples, native, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write mono float samples (-1..1, clipped) as a 16-bit PCM WAV file."""
    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(path), x, int(rate), subtype="PCM_16", format="WAV")
