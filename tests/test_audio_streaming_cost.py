"""NPC audio streaming: the chunking of pushed speech must not change the performance, and small
chunks must not cost a network run each (the timeline queues samples and processes them in blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from lpm_npc.audio.features import RATE, FeatureExtractor
from lpm_npc.audio.pcm import resample
from lpm_npc.audio.tts import synthesize
from lpm_npc.performance import lipsync_model as lm
from lpm_npc.performance.lipsync import ArticulationTracker
from lpm_npc.performance.model import PerformanceConfig, PerformanceModel

FPS = 30.0
START = 1.0
LINE = "Maybe the old bridge by the mill will be open before the moon comes up."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    clip = synthesize(LINE, voice="en-us", rate_wpm=170)
    return resample(clip.samples, clip.sample_rate, RATE).astype(np.float32)


def _n_frames(x: np.ndarray) -> int:
    return int(round((START + x.size / RATE + 0.5) * FPS))


def _upfront(x: np.ndarray, chunk: int, lipsync: str = "learned", text: str = "") -> np.ndarray:
    """Push the whole line (in `chunk`-sample pieces) before playback, then render every frame."""
    m = PerformanceModel(PerformanceConfig(lipsync=lipsync), seed=0)
    for i in range(0, x.size, chunk):
        m.push_npc_audio(x[i:i + chunk], 0.0, start_s=START + i / RATE, text=text)
    return np.array([m.step(k / FPS)[0].values.copy() for k in range(_n_frames(x))])


def _live(x: np.ndarray, chunk: int, ahead_s: float, eager: bool = False, lipsync: str = "learned") -> np.ndarray:
    """Push each chunk `ahead_s` before it plays, stepping 30 fps in between; eager: process every
    chunk as it arrives (what the timeline did before it queued audio)."""
    m = PerformanceModel(PerformanceConfig(lipsync=lipsync), seed=0)
    out, k = [], 0
    for i in range(0, x.size, chunk):
        now = START + i / RATE - ahead_s
        while k / FPS <= now:
            out.append(m.step(k / FPS)[0].values.copy())
            k += 1
        m.push_npc_audio(x[i:i + chunk], max(now, 0.0), start_s=START + i / RATE)
        if eager:
            m._npc.flush()
    while k < _n_frames(x):
        out.append(m.step(k / FPS)[0].values.copy())
        k += 1
    return np.array(out)


@pytest.mark.parametrize("lipsync", ["learned", "signal"])
def test_chunking_does_not_change_the_performance(speech, lipsync):
    whole = _upfront(speech, speech.size, lipsync)
    assert whole[:, 0].std() > 0 and np.abs(whole).max() > 0.1          # it talks
    for chunk in (160, 320, 1600, 37):                                  # 10 ms, 20 ms, 100 ms, odd
        np.testing.assert_allclose(_upfront(speech, chunk, lipsync), whole, atol=1e-4, err_msg=f"chunk {chunk}")
    # live, 20 ms chunks pushed 0.25 s before they play: every row a frame reads is already final
    np.testing.assert_allclose(_live(speech, 320, 0.25, lipsync=lipsync), whole, atol=1e-4)


def test_chunking_with_text_alignment(speech):
    # the line aligner's forward pass amplifies float rounding of the posteriors (the network's
    # output moves by ~1e-7 with the length of a run) near ties between chain states: the same
    # happened when every chunk was processed on arrival, so only a loose bound holds here
    whole = _upfront(speech, speech.size, text=LINE)
    np.testing.assert_allclose(_upfront(speech, 320, text=LINE), whole, atol=0.1)


@pytest.mark.parametrize("ahead_s", [0.0, 0.03, 0.08])
def test_lazy_processing_equals_processing_every_chunk(speech, ahead_s):
    """Audio pushed just in time: frames read provisional rows, exactly as if each chunk had been
    processed on arrival."""
    np.testing.assert_allclose(_live(speech, 320, ahead_s), _live(speech, 320, ahead_s, eager=True), atol=1e-4)


def test_small_chunks_run_the_network_in_blocks(speech, monkeypatch):
    net = lm.shared_net()
    assert net is not None
    calls = []
    orig = lm.LipSyncNet.posteriors

    def counting(self, mels):
        calls.append(mels.shape[0])
        return orig(self, mels)

    monkeypatch.setattr(lm.LipSyncNet, "posteriors", counting)
    _live(speech, 320, 0.2)
    n_chunks = -(-speech.size // 320)
    assert 0 < len(calls) <= n_chunks / 3, (len(calls), n_chunks)   # was one run per chunk


def test_tracker_and_extractor_are_chunk_invariant(speech):
    x = np.concatenate([np.zeros(4000, np.float32), speech, 0.05 * speech, speech * 2.0])
    feats = FeatureExtractor().push(x)
    ex = FeatureExtractor()
    parts = np.concatenate([ex.push(x[i:i + 333]) for i in range(0, x.size, 333)])
    np.testing.assert_allclose(parts, feats, atol=1e-4)
    a, b = ArticulationTracker(), ArticulationTracker()
    ra = a.rows(feats)
    rb = np.concatenate([b.rows(feats[i:i + 3]) for i in range(0, feats.shape[0], 3)])
    np.testing.assert_allclose(ra, rb, atol=1e-6)
    assert a.state() == pytest.approx(b.state(), abs=1e-9)


def test_tracker_without_mouth_columns_keeps_the_rest(speech):
    """The learned lip-sync writes jaw / round / spread / press itself: the tracker then skips them,
    and what it still gives (active, accent, onset, its running references) is unchanged."""
    from lpm_npc.performance.lipsync import T

    feats = FeatureExtractor().push(np.concatenate([np.zeros(4000, np.float32), speech]))
    a, b = ArticulationTracker(), ArticulationTracker()
    full, lean = a.rows(feats), b.rows(feats, mouth=False)
    mouth = [T[k] for k in ("jaw", "round", "spread", "press")]
    rest = [T[k] for k in ("active", "accent", "onset")]
    np.testing.assert_array_equal(lean[:, rest], full[:, rest])
    assert not lean[:, mouth].any() and full[:, mouth].max() > 0.3
    assert a.state() == b.state()
