"""The built-in eSpeak NG voice: audio, phoneme and word timings, voices."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, available_voices, synthesize
from lpm_npc.errors import InvalidInputError


def test_synthesize_gives_speech_with_phonemes_in_order():
    clip = synthesize("Bring me the big map, please.")
    assert clip.sample_rate == 22050 and clip.samples.dtype == np.float32
    assert 1.0 < clip.duration_s < 5.0
    assert np.sqrt(np.mean(clip.samples ** 2)) > 0.02 and np.abs(clip.samples).max() <= 1.0
    times = [p.t for p in clip.phonemes]
    assert len(times) >= 15 and times == sorted(times)
    assert 0.0 <= times[0] and times[-1] <= clip.duration_s + 0.01
    symbols = [p.symbol for p in clip.phonemes]
    assert symbols.count("b") == 2 and "m" in symbols and "p" in symbols
    assert [w.text for w in clip.words] == ["Bring", "me", "the", "big", "map", "please"]
    assert all(a.t <= b.t for a, b in zip(clip.words, clip.words[1:]))


def test_phoneme_events_match_the_audio():
    clip = synthesize("Mama, papa.")
    # the audio before the first phoneme event and after the last one is (near) silent
    sr = clip.sample_rate
    env = np.array([np.sqrt(np.mean(clip.samples[i:i + sr // 100] ** 2)) for i in range(0, clip.samples.size, sr // 100)])
    voiced = np.nonzero(env > 0.02)[0]
    assert voiced[0] / 100 >= clip.phonemes[0].t - 0.02
    assert voiced[-1] / 100 <= clip.phonemes[-1].t + 0.05


def test_two_default_voices_differ():
    text = "Good evening, traveller."
    npc = synthesize(text, voice=DEFAULT_NPC_VOICE)
    player = synthesize(text, voice=DEFAULT_PLAYER_VOICE)
    from lpm_npc.audio.features import F, FeatureExtractor
    from lpm_npc.audio.pcm import resample

    def median_pitch(c):
        rows = FeatureExtractor().push(resample(c.samples, c.sample_rate, 16000))
        p = rows[:, F["pitch_hz"]]
        return float(np.median(p[p > 0]))

    assert median_pitch(player) > 1.4 * median_pitch(npc)


def test_rate_and_pitch_parameters():
    slow = synthesize("one two three four five", rate_wpm=110)
    fast = synthesize("one two three four five", rate_wpm=260)
    assert slow.duration_s > 1.5 * fast.duration_s


def test_available_voices_and_errors():
    voices = available_voices()
    assert any("en" in v.lower() for v in voices) and "+f3" in voices
    with pytest.raises(InvalidInputError):
        synthesize("")
    with pytest.raises(InvalidInputError):
        synthesize("hello", voice="no-such-voice-xyz")
    with pytest.raises(InvalidInputError):
        synthesize("hello", rate_wpm=5)


def test_thread_safe():
    out: list[int] = []

    def work():
        out.append(synthesize("thread safety test").samples.size)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(out) == 4 and max(out) - min(out) <= 16  # eSpeak varies by a sample or two per call
