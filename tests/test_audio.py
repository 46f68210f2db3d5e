"""PCM decoding, WAV reading in the formats seen in practice, resampling, streaming features."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lpm_npc.audio.features import F, FEATURE_NAMES, FeatureExtractor
from lpm_npc.audio.pcm import INTERNAL_RATE, StreamingResampler, decode_pcm16, encode_pcm16, resample
from lpm_npc.audio.tts import synthesize
from lpm_npc.audio.wav import load_audio, read_audio, write_wav
from lpm_npc.errors import AudioFormatError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"


@pytest.fixture(scope="module")
def speech_16k() -> np.ndarray:
    clip = synthesize("The quick brown fox jumps over the lazy dog.")
    return resample(clip.samples, clip.sample_rate, INTERNAL_RATE)


@pytest.mark.parametrize("data,rate,channels,msg", [
    (b"", 16000, 1, "empty"),
    (b"\x01\x02\x03", 16000, 1, "whole number"),
    (b"\x01\x02\x03\x04\x05\x06", 16000, 2, "whole number"),
    (b"\x00\x00", 0, 1, "sample rate"),
    (b"\x00\x00", 1_000_000, 1, "sample rate"),
    (b"\x00\x00" * 3, 16000, 3, "num_channels"),
    (b"\x00\x00", 16000, 0, "num_channels"),
])
def test_decode_pcm16_errors(data, rate, channels, msg):
    with pytest.raises(AudioFormatError, match=msg):
        decode_pcm16(data, rate, channels)


def test_pcm16_round_trip(speech_16k):
    x = speech_16k[:4000]
    y = decode_pcm16(encode_pcm16(x), 16000)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1.0 / 16000


def test_stereo_48k_decode_and_resample(speech_16k):
    x48 = resample(speech_16k, 16000, 48000)
    stereo = np.stack([x48, 0.5 * x48], axis=1)
    mono = decode_pcm16(encode_pcm16(stereo.reshape(-1)), 48000, 2)
    assert mono.shape == (x48.size,)
    np.testing.assert_allclose(mono, 0.75 * x48, atol=2e-4)
    back = resample(mono, 48000, 16000)
    assert abs(back.size - speech_16k.size) <= 1
    n = min(back.size, speech_16k.size)
    err = np.sqrt(np.mean((back[:n] - 0.75 * speech_16k[:n]) ** 2)) / np.sqrt(np.mean(speech_16k ** 2))
    assert err < 0.02


@pytest.mark.parametrize("rate_in", [8000, 16000, 22050, 44100, 48000])
def test_streaming_resampler_matches_whole(speech_16k, rate_in):
    x = resample(speech_16k, 16000, rate_in)
    whole = resample(x, rate_in, 16000)
    r = StreamingResampler(rate_in)
    rng = np.random.default_rng(rate_in)
    out, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 700))
        out.append(r.process(x[i:i + n]))
        i += n
    body = np.concatenate(out)
    # everything emitted so far equals the whole-signal result; flush gives the rest
    np.testing.assert_allclose(body, whole[: body.size], atol=1e-5)
    assert whole.size - body.size < 40
    full = np.concatenate([body, r.flush()])
    assert full.size == whole.size
    np.testing.assert_allclose(full, whole, atol=1e-5)
    assert r.buffered < 200  # history stays bounded


def test_streaming_resampler_identity(speech_16k):
    r = StreamingResampler(16000, 16000)
    np.testing.assert_array_equal(r.process(speech_16k[:1234]), speech_16k[:1234])


def _format_tag(path: Path) -> int:
    raw = path.read_bytes()
    idx = raw.index(b"fmt ")
    return struct.unpack("<H", raw[idx + 8: idx + 10])[0]


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize("container,subtype,channels", [
    ("WAV", "PCM_16", 1), ("WAV", "PCM_24", 1), ("WAV", "FLOAT", 1), ("WAV", "PCM_16", 2),
    ("WAV", "PCM_32", 1), ("WAV", "DOUBLE", 2), ("WAV", "PCM_16", 3),
    ("WAVEX", "PCM_16", 2), ("WAVEX", "PCM_24", 1), ("WAVEX", "FLOAT", 2),
])
def test_wav_formats_load(tmp_path, speech_16k, rate, container, subtype, channels):
    x = resample(speech_16k, 16000, rate) * 0.8
    data = np.stack([x * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    path = tmp_path / f"s_{container}_{subtype}_{channels}_{rate}.wav"
    sf.write(str(path), data, rate, subtype=subtype, format=container)
    if container == "WAVEX":
        assert _format_tag(path) == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    mono, native = read_audio(path)
    assert native == rate and mono.dtype == np.float32
    expected = data.mean(axis=1)
    np.testing.assert_allclose(mono, expected, atol=1e-4)
    from_bytes, _ = read_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, mono)
    y = load_audio(path)
    assert abs(y.size - speech_16k.size) <= 2
    n = min(y.size, speech_16k.size)
    assert np.corrcoef(y[:n], speech_16k[:n])[0, 1] > 0.99


def test_write_wav_round_trip(tmp_path, speech_16k):
    path = tmp_path / "out.wav"
    write_wav(path, speech_16k, 16000)
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.samplerate == 16000
    y, rate = read_audio(path)
    np.testing.assert_allclose(y, speech_16k, atol=1e-4)


@pytest.mark.parametrize("bad", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"not audio at all" * 10])
def test_read_audio_errors(bad):
    with pytest.raises(AudioFormatError):
        read_audio(bad)


def test_read_audio_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros((0, 1)), 16000, subtype="PCM_16")
    with pytest.raises(AudioFormatError, match="no samples"):
        read_audio(path)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared development data not present")
def test_shared_speech_files_load():
    for path in sorted(DATA.glob("*.wav")):
        x = load_audio(path)
        assert x.size > 16000 and np.isfinite(x).all() and np.abs(x).max() > 0.01, path.name


def test_features_streaming_equals_batch(speech_16k):
    batch = FeatureExtractor().push(speech_16k)
    assert batch.shape == (speech_16k.size // 160, len(FEATURE_NAMES))
    fe = FeatureExtractor()
    tiny = np.concatenate([fe.push(speech_16k[i:i + 10]) for i in range(0, speech_16k.size, 10)])
    np.testing.assert_allclose(tiny, batch, atol=1e-3)
    # constant memory: internal buffers do not grow with input
    assert fe._buf.size == 512 and fe._pending.size < 160


def test_features_describe_speech(speech_16k):
    rows = FeatureExtractor().push(np.concatenate([np.zeros(8000, np.float32), speech_16k]))
    silent, speech = rows[:40], rows[60:]
    assert silent[:, F["rms_db"]].max() < -90
    loud = speech[:, F["rms_db"]] > -30
    assert loud.mean() > 0.4
    pitch = speech[loud & (speech[:, F["voicing"]] > 0.6), F["pitch_hz"]]
    assert pitch.size > 20 and 60 < np.median(pitch) < 200   # eSpeak's default male voice
    assert (speech[:, F["onset"]] > 5).sum() >= 5


@pytest.mark.parametrize("formants", [False, True])
def test_feature_kernel_gives_the_numpy_features(speech_16k, formants, monkeypatch):
    """The compiled per-row steps (used once warmed up) give the numpy steps' rows, chunk by chunk,
    the onset flux carried across chunks included."""
    from lpm_npc.audio import feature_kernel

    assert feature_kernel.warm_up(), "numba is a dependency: the features' kernel must compile"
    x = np.concatenate([np.zeros(3000, np.float32), speech_16k, np.zeros(2000, np.float32)]).astype(np.float32)
    cuts = np.cumsum(np.random.default_rng(3).integers(40, 900, size=400))
    chunks = np.split(x, cuts[cuts < x.size])
    rows = {}
    for use in (False, True):
        monkeypatch.setattr(feature_kernel, "READY", use)
        fe = FeatureExtractor(formants=formants)
        rows[use] = np.concatenate([fe.push(c) for c in chunks])
    assert rows[True].shape == rows[False].shape and rows[True].shape[0] > 200
    assert len(feature_kernel.feature_rows.signatures) == 1  # the types warm_up compiled: no compile on live audio
    assert np.abs(rows[True] - rows[False]).max() < 1e-3
    voiced = rows[True][:, F["voicing"]] > 0.45
    assert voiced.mean() > 0.2 and rows[True][voiced, F["pitch_hz"]].min() > 60  # real speech went through
