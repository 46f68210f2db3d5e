"""Performance model behaviour on real synthesized speech (eSpeak NG through lpm_npc.audio.tts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpm_npc.audio.pcm import INTERNAL_RATE, resample
from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, SpeechClip, synthesize
from lpm_npc.performance.emotion import EMOTION_TARGETS
from lpm_npc.performance.model import PerformanceModel
from lpm_npc.performance.motion import CHANNEL_INDEX as C
from lpm_npc.types import Emotion, EventType, Phase

FPS = 30.0
SENTENCES = [
    "Hello there, my friend. Would you bring me the big map, please?",
    "Maybe the old bridge by the mill will be open before the moon comes up.",
    "Keep your blade sharp and your purse empty, and the bandits will pass you by.",
]
CLOSED = 0.12   # jaw_open * (1 - lips_press) below this counts as a (nearly) closed mouth


def _clip16(clip: SpeechClip) -> np.ndarray:
    return resample(clip.samples, clip.sample_rate, INTERNAL_RATE)


@pytest.fixture(scope="module")
def npc_clips() -> list[SpeechClip]:
    return [synthesize(s, voice=v) for s in SENTENCES for v in (DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE)]


def _run(model: PerformanceModel, t0: float, t1: float, fps: float = FPS):
    frames, events = [], []
    for i in range(int(round(t0 * fps)), int(round(t1 * fps))):
        f, ev = model.step(i / fps)
        frames.append(f.values.copy())
        events += ev
    return np.array(frames), events


def _speak(clip: SpeechClip, start: float = 1.0, tail: float = 1.5, seed: int = 0, chunk: int | None = None):
    x = _clip16(clip)
    m = PerformanceModel(seed=seed)
    if chunk is None:
        m.push_npc_audio(x, 0.0, start_s=start)
    else:
        for i in range(0, x.size, chunk):
            m.push_npc_audio(x[i:i + chunk], 0.0, start_s=start + i / INTERNAL_RATE if i == 0 else None)
    frames, events = _run(m, 0.0, start + x.size / INTERNAL_RATE + tail)
    return x, frames, events


def _envelope_at(x: np.ndarray, start: float, times: np.ndarray) -> np.ndarray:
    """RMS (dBFS) of the audio in a 30 ms window around each time (on the NPC timeline)."""
    out = np.full(times.size, -100.0)
    for i, t in enumerate(times):
        a, b = int((t - start - 0.015) * INTERNAL_RATE), int((t - start + 0.015) * INTERNAL_RATE)
        seg = x[max(a, 0):max(b, 0)]
        if seg.size:
            out[i] = 10 * np.log10(np.mean(seg ** 2) + 1e-10)
    return out


def test_jaw_follows_speech_and_closes_in_silence(npc_clips):
    speech_means, silence = [], []
    for clip in npc_clips:
        x, frames, _ = _speak(clip)
        times = np.arange(frames.shape[0]) / FPS
        jaw = frames[:, C["jaw_open"]]
        # silence: no audio energy within +-120 ms of the frame
        env = np.max([_envelope_at(x, 1.0, times + d) for d in (-0.12, -0.06, 0.0, 0.06, 0.12)], axis=0)
        quiet, loud = env < -55, _envelope_at(x, 1.0, times) > -30
        speech_means.append(jaw[loud].mean())
        silence.append(jaw[quiet])
        assert jaw[loud].mean() > 5 * max(jaw[quiet].mean(), 0.01)
        assert jaw.max() > 0.4
    silence = np.concatenate(silence)
    assert (silence < 0.05).mean() >= 0.98
    assert np.mean(speech_means) > 0.25


def test_mouth_closes_on_bilabials(npc_clips):
    hits, total = 0, 0
    for clip in npc_clips:
        _, frames, _ = _speak(clip)
        opening = frames[:, C["jaw_open"]] * (1.0 - frames[:, C["lips_press"]])
        for p in clip.phonemes:
            if p.symbol in ("p", "b", "m"):
                k = int(round((1.0 + p.t) * FPS))
                total += 1
                hits += bool(opening[k - 1:k + 2].min() < CLOSED)
    assert total >= 20
    assert hits / total >= 0.85, f"closed at {hits}/{total} bilabials"


def test_mouth_moves_with_syllables(npc_clips):
    """The mouth opens and closes repeatedly (not a held-open mouth) and tracks the envelope."""
    x, frames, _ = _speak(npc_clips[0])
    times = np.arange(frames.shape[0]) / FPS
    jaw = frames[:, C["jaw_open"]]
    env = _envelope_at(x, 1.0, times)
    assert np.corrcoef(jaw, np.clip(env + 60, 0, None))[0, 1] > 0.6
    crossings = np.sum((jaw[1:] > 0.25) & (jaw[:-1] <= 0.25))
    assert crossings >= 8  # ~ one per stressed syllable


def test_rounded_and_spread_vowels():
    m_round = synthesize("Who knew? Two blue shoes. Oh no, go home.")
    m_spread = synthesize("We see the keys. Eat cheese, Steve.")
    _, fr, _ = _speak(m_round)
    _, fs, _ = _speak(m_spread)
    act_r = fr[:, C["jaw_open"]] > 0.1
    act_s = fs[:, C["jaw_open"]] > 0.05
    assert fs[act_s, C["mouth_spread"]].mean() > fr[act_r, C["mouth_spread"]].mean() + 0.1
    assert fr[act_r, C["mouth_round"]].mean() > fs[act_s, C["mouth_round"]].mean() + 0.05


def test_prosody_moves_head_and_brows(npc_clips):
    _, frames, events = _speak(npc_clips[0])
    times = np.arange(frames.shape[0]) / FPS
    during = (times > 1.2) & (times < 1.0 + npc_clips[0].duration_s)
    quiet = PerformanceModel(seed=0)
    silent, _ = _run(quiet, 0.0, times[-1] + 1 / FPS)
    assert frames[during, C["brow_up"]].max() > 0.1
    assert np.std(frames[during, C["head_pitch"]]) > 1.3 * np.std(silent[during, C["head_pitch"]])
    types = [e.type for e in events]
    assert types.count(EventType.NPC_SPEECH_STARTED) == 1 and types.count(EventType.NPC_SPEECH_ENDED) == 1
    start = next(e for e in events if e.type == EventType.NPC_SPEECH_STARTED)
    assert abs(start.t_s - 1.0) <= 1.5 / FPS


def test_tiny_chunks_match_one_push(npc_clips):
    _, whole, _ = _speak(npc_clips[0])
    _, tiny, events = _speak(npc_clips[0], chunk=10)
    np.testing.assert_allclose(tiny[:, C["jaw_open"]], whole[:, C["jaw_open"]], atol=0.02)
    assert [e.type for e in events].count(EventType.NPC_SPEECH_STARTED) == 1


def test_player_speech_listening_without_lip_motion():
    clip = synthesize("So I went down to the river, and the boat was gone. Then I walked for hours, "
                      "and nobody was there. What should I do now?", voice=DEFAULT_PLAYER_VOICE)
    x = _clip16(clip)
    m = PerformanceModel(seed=3)
    frames, events = [], []
    chunk = 320  # 20 ms mic chunks arriving in real time
    t_audio = 1.0
    for i in range(int(round((t_audio + x.size / INTERNAL_RATE + 2.0) * FPS))):
        t = i / FPS
        while t_audio <= t and (t_audio - 1.0) * INTERNAL_RATE < x.size:
            a = int(round((t_audio - 1.0) * INTERNAL_RATE))
            m.push_player_audio(x[a:a + chunk], t_audio)
            t_audio += chunk / INTERNAL_RATE
        f, ev = m.step(t)
        frames.append(f.values.copy())
        events += ev
        if 2.0 < t < 1.0 + clip.duration_s - 0.5:
            assert m.player_speaking or t - max([e.t_s for e in events if e.type == EventType.PLAYER_SPEECH_STARTED] or [0]) < 0.1
    frames = np.array(frames)
    assert frames[:, C["jaw_open"]].max() < 0.02
    assert frames[:, C["lips_press"]].max() < 0.02
    types = [e.type for e in events]
    assert types.count(EventType.PLAYER_SPEECH_STARTED) == 1 and types.count(EventType.PLAYER_SPEECH_ENDED) == 1
    assert types.count(EventType.BACKCHANNEL) >= 2
    assert EventType.NPC_SPEECH_STARTED not in types
    start = next(e.t_s for e in events if e.type == EventType.PLAYER_SPEECH_STARTED)
    assert abs(start - (1.0 + clip.phonemes[0].t)) < 0.2
    times = np.arange(frames.shape[0]) / FPS
    listening = (times > 2.5) & (times < 1.0 + clip.duration_s)
    assert frames[listening, C["head_roll"]].mean() > 1.5  # attentive tilt
    assert np.abs(frames[listening, C["gaze_x"]]).mean() < 0.15  # eyes on the player
    for bc in [e.t_s for e in events if e.type == EventType.BACKCHANNEL]:
        k = int(bc * FPS)
        assert frames[k:k + 20, C["head_pitch"]].max() - frames[k - 3, C["head_pitch"]] > 1.5  # a nod


def test_blink_rate_and_shape():
    m = PerformanceModel(seed=7)
    frames, _ = _run(m, 0.0, 300.0)
    blink = frames[:, C["blink_l"]]
    closed = blink > 0.5
    starts = np.nonzero(closed[1:] & ~closed[:-1])[0]
    rate = starts.size / 5.0
    assert 10 <= rate <= 25, rate
    intervals = np.diff(starts) / FPS
    assert intervals.std() > 0.3 * intervals.mean()  # natural variation, not a metronome
    assert np.array_equal(blink, frames[:, C["blink_r"]])
    # never frozen: head and gaze keep moving, ~1 degree
    yaw = frames[:, C["head_yaw"]]
    assert 0.3 < yaw.std() < 2.5
    assert np.abs(np.diff(frames[:, C["gaze_x"]])).sum() > 1.0


@pytest.mark.parametrize("emotion,up,down", [
    (Emotion.HAPPY, ["smile", "squint"], []),
    (Emotion.SAD, ["frown", "brow_inner_up"], ["head_pitch_neg"]),
    (Emotion.ANGRY, ["brow_down", "lips_press"], []),
    (Emotion.SURPRISED, ["brow_up", "eye_wide", "jaw_open"], []),
    (Emotion.AFRAID, ["brow_inner_up", "eye_wide", "mouth_spread"], []),
    (Emotion.DISGUSTED, ["nose_wrinkle", "upper_lip_raise"], []),
])
def test_emotions_and_transition_timing(emotion, up, down):
    m = PerformanceModel(seed=1)
    _run(m, 0.0, 1.0)
    m.set_dialogue_state(1.0, emotion=emotion, intensity=1.0, transition_s=0.6)
    frames, _ = _run(m, 1.0, 2.5)
    times = 1.0 + np.arange(frames.shape[0]) / FPS
    target = EMOTION_TARGETS[emotion]
    for name in up:
        ch = C[name]
        assert frames[-1, ch] > 0.8 * target[ch] > 0, name
        half = frames[np.argmin(np.abs(times - 1.3)), ch]
        assert 0.3 * target[ch] < half < 0.7 * target[ch], (name, half)
        quarter = frames[np.argmin(np.abs(times - 1.1)), ch]
        assert quarter < 0.25 * target[ch]  # eased in
    if "head_pitch_neg" in down:
        assert frames[-10:, C["head_pitch"]].mean() > 2.0  # sad: head down
    # back to neutral
    m.set_dialogue_state(2.5, emotion=Emotion.NEUTRAL, transition_s=0.3)
    back, _ = _run(m, 2.5, 3.2)
    for name in up:
        assert back[-1, C[name]] < 0.1 * target[C[name]] + 0.02


def test_intensity_scales_emotion():
    m = PerformanceModel(seed=1)
    m.set_dialogue_state(0.0, emotion=Emotion.HAPPY, intensity=0.5, transition_s=0.0)
    f, _ = m.step(0.1)
    assert abs(f["smile"] - 0.5 * EMOTION_TARGETS[Emotion.HAPPY][C["smile"]]) < 0.02


def test_speech_adds_on_top_of_emotion(npc_clips):
    x = _clip16(npc_clips[0])
    m = PerformanceModel(seed=0)
    m.set_dialogue_state(0.0, emotion=Emotion.HAPPY, transition_s=0.0)
    m.push_npc_audio(x, 0.0, start_s=0.5)
    frames, _ = _run(m, 0.0, 0.5 + x.size / INTERNAL_RATE)
    assert frames[20:, C["smile"]].mean() > 0.6
    assert frames[:, C["jaw_open"]].max() > 0.4


def test_thinking_phase_looks_away_and_furrows():
    m = PerformanceModel(seed=2)
    _run(m, 0.0, 1.0)
    m.set_dialogue_state(1.0, phase=Phase.THINKING)
    frames, _ = _run(m, 1.0, 3.0)
    assert frames[-15:, C["gaze_y"]].mean() < -0.2 and abs(frames[-15:, C["gaze_x"]].mean()) > 0.2
    assert frames[-15:, C["brow_down"]].mean() > 0.1
    assert m.phase == Phase.THINKING


def test_interrupt_closes_mouth_within_three_frames(npc_clips):
    x = _clip16(npc_clips[0])
    m = PerformanceModel(seed=0)
    m.push_npc_audio(x, 0.0, start_s=0.0)
    frames, _ = _run(m, 0.0, 1.5)
    # find a frame with the mouth open and interrupt right there
    k = int(np.argmax(frames[15:, C["jaw_open"]] > 0.4)) + 15
    t_cut = k / FPS
    m2 = PerformanceModel(seed=0)
    m2.push_npc_audio(x, 0.0, start_s=0.0)
    _run(m2, 0.0, t_cut)
    m2.interrupt(t_cut)
    after, events = _run(m2, t_cut, t_cut + 1.5)
    assert after[3:, C["jaw_open"]].max() < 0.05
    types = [e.type for e in events]
    assert EventType.INTERRUPTED in types and EventType.NPC_SPEECH_ENDED in types
    assert not m2.npc_speaking and m2.phase == Phase.LISTENING
    # new speech after the interrupt plays normally
    p = m2.push_npc_audio(x, t_cut + 1.5)
    assert p.start_s == pytest.approx(t_cut + 1.5, abs=1e-3) and p.late_s == 0
    more, _ = _run(m2, t_cut + 1.5, t_cut + 4.0)
    assert more[:, C["jaw_open"]].max() > 0.4


def test_placement_append_and_late():
    m = PerformanceModel()
    a = np.zeros(1600, np.float32)
    p1 = m.push_npc_audio(a, now_s=1.0)
    assert (p1.start_s, p1.end_s, p1.late_s) == (1.0, 1.1, 0.0)
    p2 = m.push_npc_audio(a, now_s=1.02)
    assert p2.start_s == pytest.approx(1.1) and p2.late_s == 0.0
    p3 = m.push_npc_audio(a, now_s=5.0, start_s=4.5)  # wholly in the past: nothing left to show
    assert p3.start_s == pytest.approx(5.0) and p3.end_s == pytest.approx(5.0) and p3.late_s == pytest.approx(0.5)
    p3b = m.push_npc_audio(a, now_s=5.0, start_s=4.95)  # partly late: keeps its true time (sync)
    assert p3b.start_s == pytest.approx(5.0) and p3b.end_s == pytest.approx(5.05) and p3b.late_s == pytest.approx(0.05)
    p4 = m.push_npc_audio(a, now_s=5.0, start_s=6.0)
    assert p4.start_s == pytest.approx(6.0) and p4.late_s == 0.0
    p5 = m.push_npc_audio(a, now_s=7.0)  # previous chunk ended in the past: starts now
    assert p5.start_s == pytest.approx(7.0)
    _, events = m.step(5.1)
    assert EventType.AUDIO_LATE in [e.type for e in events]


def test_deterministic_given_seed(npc_clips):
    _, a, _ = _speak(npc_clips[0], seed=5)
    _, b, _ = _speak(npc_clips[0], seed=5)
    _, c, _ = _speak(npc_clips[0], seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_frame_gaps_and_fps_changes(npc_clips):
    x = _clip16(npc_clips[0])
    m = PerformanceModel(seed=0)
    m.push_npc_audio(x, 0.0, start_s=0.0)
    t, out = 0.0, []
    rng = np.random.default_rng(0)
    while t < x.size / INTERNAL_RATE:
        f, _ = m.step(t)
        assert np.isfinite(f.values).all()
        out.append((t, f["jaw_open"]))
        t += float(rng.choice([1 / 60, 1 / 30, 1 / 15, 0.2]))
    assert max(j for _, j in out) > 0.3


def test_memory_bounded_in_long_session(npc_clips):
    x = _clip16(npc_clips[0])
    player = _clip16(npc_clips[1])
    m = PerformanceModel(seed=0)
    sizes = []
    t = 0.0
    for rep in range(40):  # ~40 conversational turns, ~10 minutes
        m.push_npc_audio(x, t)
        for i in range(0, player.size, 1600):
            m.push_player_audio(player[i:i + 1600], t + 5.0 + i / INTERNAL_RATE)
        for k in range(int(15 * 10)):
            m.step(t + k / 10)
        t += 15.0
        sizes.append((m._npc.rows.capacity, len(m._npc.rows), len(m._npc.intervals), len(m._gestures),
                      len(m._idle._blinks), len(m._player.pending)))
    sizes = np.array(sizes)
    assert sizes[-1, 0] == sizes[5, 0] and sizes[:, 0].max() <= 4096  # the row ring stopped growing
    assert sizes[:, 1].max() < 100                                      # rows behind the playhead trimmed
    assert sizes[:, 2:].max() <= 8                                      # intervals, gestures, blinks, events
    assert len(m._player.pending) == 0


def test_state_dict_round_trip():
    m = PerformanceModel(seed=4)
    m.set_dialogue_state(0.0, phase=Phase.THINKING, emotion=Emotion.SAD, intensity=0.8, transition_s=0.5)
    _run(m, 0.0, 2.0)
    d = json.loads(json.dumps(m.state_dict()))
    m2 = PerformanceModel(seed=4)
    m2.load_state_dict(d)
    f1, _ = m.step(2.0)
    f2, _ = m2.step(0.0)  # a new session clock
    for name in ("frown", "brow_inner_up", "brow_down"):
        assert abs(f1[name] - f2[name]) < 0.05, name
    assert m2.phase == Phase.THINKING
    assert m2.state_dict()["emotion"] == "sad"
    with pytest.raises(Exception):
        m2.load_state_dict({"version": 99})
