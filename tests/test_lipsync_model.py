"""Learned lip-sync (ONNX) on real eSpeak NG speech from voices / accents it was not trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpm_npc.audio.features import HOP, RATE
from lpm_npc.audio.pcm import resample
from lpm_npc.audio.tts import synthesize
from lpm_npc.errors import InvalidInputError
from lpm_npc.performance import lipsync_model as lm
from lpm_npc.performance.lipsync import LipSyncConfig
from lpm_npc.performance.lipsync_data import (
    HELDOUT_VARIANTS,
    TRAIN_LANGS,
    TRAIN_VARIANTS,
    make_utterance,
)
from lpm_npc.performance.lipsync_eval import run_system, utterance_metrics
from lpm_npc.performance.model import PerformanceConfig, PerformanceModel
from lpm_npc.performance.motion import CHANNEL_INDEX as C
from lpm_npc.performance.text_align import LineAligner
from lpm_npc.performance.timeline import NpcTimeline

FPS = 30.0
HELD_OUT = "en-GB-scotland+m6"      # accent and variant never trained on
CLOSED = 0.12


def _x(text: str, voice: str = HELD_OUT, rate: int = 160):
    clip = synthesize(text, voice=voice, rate_wpm=rate)
    return clip, resample(clip.samples, clip.sample_rate, RATE)


def _frames(x: np.ndarray, start: float = 1.0, text: str = "", lipsync: str = "learned") -> np.ndarray:
    m = PerformanceModel(PerformanceConfig(lipsync=lipsync), seed=0)
    m.push_npc_audio(x, 0.0, start_s=start, text=text)
    n = int(round((start + x.size / RATE + 1.0) * FPS))
    return np.array([m.step(i / FPS)[0].values.copy() for i in range(n)])


@pytest.fixture(scope="module")
def net() -> lm.LipSyncNet:
    n = lm.shared_net()
    assert n is not None, "lpm_npc/assets/lipsync_v1.onnx did not load"
    return n


def test_asset_matches_config_and_is_small(net):
    cfg = json.loads(lm.CONFIG_PATH.read_text())
    assert lm.file_sha256(lm.MODEL_PATH) == cfg["sha256"]
    assert lm.MODEL_PATH.stat().st_size < 2_000_000
    assert cfg["visemes"] == list(lm.VISEMES)
    assert 0 < net.info.lookahead and net.info.lookahead_s <= 0.06
    assert not set(HELDOUT_VARIANTS) & set(TRAIN_VARIANTS) and "en-GB-scotland" not in TRAIN_LANGS


def test_phoneme_mapping():
    v = lm.V
    assert [lm.phoneme_viseme(s) for s in ("p", "b", "m", "f", "v", "'u:", "i:", "'a", "_:", "t", "@")] == [
        v["PP"], v["PP"], v["PP"], v["FF"], v["FF"], v["round"], v["spread"], v["open"], v["sil"], v["cons"], v["mid"]]
    assert lm.phoneme_viseme(";") is None


def test_streaming_matches_one_push_and_lookahead_is_bounded(net):
    _, x = _x("Maybe the old bridge by the mill will be open before the moon comes up.")
    whole = NpcTimeline(lipsync="learned")
    whole.push(x, 0)
    tiny = NpcTimeline(lipsync="learned")
    for i in range(0, x.size, 37):
        tiny.push(x[i:i + 37], i)
    a, _ = whole.rows.window(0, 10 ** 6)
    b, _ = tiny.rows.window(0, 10 ** 6)
    np.testing.assert_allclose(a, b, atol=0.02)   # float rounding near digital silence only
    # rows up to i depend on audio up to hop i + lookahead only
    i = x.size // HOP // 2
    cut = (i + net.info.lookahead + 1) * HOP
    y = x.copy()
    y[cut:] = np.random.default_rng(0).standard_normal(y.size - cut).astype(np.float32) * 0.3
    other = NpcTimeline(lipsync="learned")
    other.push(y, 0)
    c, _ = other.rows.window(0, 10 ** 6)
    np.testing.assert_allclose(a[: i + 1, :4], c[: i + 1, :4], atol=1e-6)
    assert np.abs(a[i + 1:, :4] - c[i + 1:, :4]).max() > 0.05   # and later rows do see it


def test_closes_on_held_out_bilabials_and_in_silence(net):
    hits, total = 0, 0
    for text in ("My brother bought a puppy, a parrot and a bowl of plums.",
                 "Bring me the map, maybe by the mill, before the moon."):
        clip, x = _x(text)
        fr = _frames(x)
        opening = fr[:, C["jaw_open"]] * (1.0 - fr[:, C["lips_press"]])
        for p in clip.phonemes:
            if p.symbol.lstrip("'") in ("p", "b", "m"):
                k = int(round((1.0 + p.t) * FPS))
                total += 1
                hits += bool(opening[k - 1:k + 2].min() < CLOSED)
        quiet = np.r_[0:int(0.8 * FPS), int((1.0 + x.size / RATE + 0.3) * FPS):fr.shape[0]]
        assert (opening[quiet] < CLOSED).all()
    assert total >= 15
    assert hits / total >= 0.85, f"closed at {hits}/{total} bilabials"


def test_rounds_on_oo_and_spreads_on_ee(net):
    _, xr = _x("Who knew? Two blue shoes. Oh no, go home.")
    _, xs = _x("We see the keys. Eat cheese, Steve.")
    fr, fs = _frames(xr), _frames(xs)
    act_r, act_s = fr[:, C["jaw_open"]] > 0.05, fs[:, C["jaw_open"]] > 0.05
    assert fr[act_r, C["mouth_round"]].mean() > fs[act_s, C["mouth_round"]].mean() + 0.15
    assert fs[act_s, C["mouth_spread"]].mean() > fr[act_r, C["mouth_spread"]].mean() + 0.1


def test_fv_tucks_lower_lip_without_full_closure(net):
    _, x = _x("Five fine violins of fluffy fever.")
    fr = _frames(x)
    press = fr[:, C["lips_press"]]
    assert ((press > 0.2) & (press < 0.7)).sum() >= 3      # f/v: partial press over a nearly closed jaw


def test_text_alignment_improves_held_out_accuracy(net):
    cfg = LipSyncConfig()
    rng = np.random.default_rng(5)
    acc = {"learned": [0, 0], "learned+text": [0, 0]}
    for line, voice in (("Five fine violins arrived from the valley of fever.", "en-US-nyc+belinda"),
                        ("The wolf would wait by the wood until the rain was over.", "en-GB-scotland+klatt2")):
        u = make_utterance(line, voice, rng, 0.0, rate_wpm=170, pitch=50, speed=1.0, pad_s=(0.5, 0.5))
        for system in acc:
            m = utterance_metrics(u, run_system(u, system, cfg), cfg)
            acc[system][0] += m["correct"]
            acc[system][1] += m["speech"]
    a_audio = acc["learned"][0] / acc["learned"][1]
    a_text = acc["learned+text"][0] / acc["learned+text"][1]
    assert a_text > a_audio + 0.01, (a_audio, a_text)


def test_text_path_through_the_model_and_mismatched_text_is_harmless(net):
    line = "Keep your blade sharp and your purse empty."
    _, x = _x(line)
    plain = _frames(x)
    with_text = _frames(x, text=line)
    wrong = _frames(x, text="Zzz, hiss, sizzle, seas.")
    assert np.abs(with_text[:, C["jaw_open"]] - plain[:, C["jaw_open"]]).max() > 0.01   # the text is used
    # a wrong text must not freeze the mouth: it still moves with the audio
    assert wrong[:, C["jaw_open"]].std() > 0.5 * plain[:, C["jaw_open"]].std()


def test_aligner_is_monotonic():
    al = LineAligner.for_text("Hello, my friend.")
    post = np.zeros((60, lm.NUM_VISEMES), np.float32)
    post[:, lm.V["sil"]] = 1.0
    post[10:20] = 0.0
    post[10:20, lm.V["open"]] = 1.0
    pos = []
    for row in post:
        al.update(row[None])
        pos.append(float(al.alpha @ np.arange(al.alpha.size)))
    assert np.all(np.diff(pos) >= -1e-9)


def test_signal_mode_and_bad_mode():
    tl = NpcTimeline(lipsync="signal")
    assert tl.lipsync == "signal" and tl.net is None
    with pytest.raises(InvalidInputError):
        NpcTimeline(lipsync="magic")
