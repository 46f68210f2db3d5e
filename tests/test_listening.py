"""Listening: Silero VAD turn-taking, backchannels in pauses, reactions, thinking, full duplex.

Real eSpeak NG speech (lpm_npc.audio.tts) with silences and noise; player audio arrives in 20 ms
mic chunks in step with the frames, as it does from a live session.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from lpm_npc.audio import vad as vad_mod
from lpm_npc.audio.pcm import INTERNAL_RATE as SR
from lpm_npc.audio.pcm import resample
from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, synthesize
from lpm_npc.evaluation.listening_eval import noise as _noise
from lpm_npc.evaluation.listening_eval import segments as _segments
from lpm_npc.evaluation.listening_eval import speech_mask as _speech_mask
from lpm_npc.performance import listening as listening_mod
from lpm_npc.performance.listening import PlayerListener, VadConfig
from lpm_npc.performance.model import PerformanceConfig, PerformanceModel
from lpm_npc.performance.motion import CHANNEL_INDEX as C
from lpm_npc.types import EventType as E
from lpm_npc.types import Phase

FPS = 30.0
MIC = 320  # 20 ms microphone chunks
MOUTH = [C[n] for n in ("jaw_open", "mouth_round", "mouth_spread", "lips_press")]

needs_silero = pytest.mark.skipif(not vad_mod.silero_available(), reason="silero-vad / onnxruntime not installed")


@functools.cache
def _say(text: str, voice: str = DEFAULT_PLAYER_VOICE, pitch: int = 50) -> np.ndarray:
    clip = synthesize(text, voice=voice, pitch=pitch)
    return resample(clip.samples, clip.sample_rate, SR).astype(np.float32)


def _sil(s: float) -> np.ndarray:
    return np.zeros(int(round(s * SR)), np.float32)


def _listen(x: np.ndarray, t0: float = 0.0, cfg: VadConfig | None = None):
    lst = PlayerListener(cfg)
    for i in range(0, x.size, MIC):
        lst.push(x[i:i + MIC], t0 + i / SR)
    return lst, lst.pop_until(1e9)


def _conversation(player: np.ndarray | None, t_end: float, player_t0: float = 1.0, npc: np.ndarray | None = None,
                  npc_t0: float = 0.0, seed: int = 0, on_event=None, model: PerformanceModel | None = None):
    """Frames at FPS with player audio arriving in real time; on_event(model, event, t) may act like a game."""
    m = model or PerformanceModel(seed=seed)
    if npc is not None:
        m.push_npc_audio(npc, 0.0, start_s=npc_t0)
    frames, events, phases, gestures = [], [], [], []
    pos = 0
    for i in range(int(round(t_end * FPS))):
        t = i / FPS
        while player is not None and pos < player.size and player_t0 + pos / SR <= t:
            m.push_player_audio(player[pos:pos + MIC], player_t0 + pos / SR)
            pos += MIC
        f, ev = m.step(t)
        frames.append(f.values.copy())
        phases.append(m.phase)
        gestures += [(g.t0, g.channel) for g in m._gestures if (g.t0, g.channel) not in gestures]
        events += ev
        for e in ev:
            if on_event is not None:
                on_event(m, e, t)
    return np.array(frames), events, phases, gestures


def _types(events) -> list:
    return [e.type for e in events]


def _first(events, etype):
    return next(e for e in events if e.type == etype)


# ---------------------------------------------------------------------------------------- VAD
@needs_silero
def test_silero_streaming_is_chunking_independent_and_torch_free():
    x = np.concatenate([_sil(0.3), _say("Have you seen the blacksmith today?"), _sil(0.3)])
    whole = vad_mod.SileroVad().push(x)
    v = vad_mod.SileroVad()
    parts, i, rng = [], 0, np.random.default_rng(1)
    while i < x.size:
        n = int(rng.integers(1, 1500))
        parts.append(v.push(x[i:i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)
    assert whole.size == x.size // vad_mod.CHUNK
    assert whole.max() > 0.9 and whole[:5].max() < 0.2          # speech found, leading silence not
    code = ("import sys, numpy as np; from lpm_npc.audio.vad import SileroVad; "
            "SileroVad().push(np.zeros(4096, np.float32)); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@needs_silero
@pytest.mark.parametrize("noise", [None, ("white", -50.0), ("pink", -42.0)])
def test_turn_boundaries_within_100ms(noise, capsys):
    a = _say("So I went down to the river, and the boat was gone.")
    b = _say("Then I walked for hours, and nobody was there.")
    clean = np.concatenate([_sil(0.7), a, _sil(1.2), b, _sil(1.0)])
    x = clean if noise is None else clean + _noise(clean.size, noise[1], noise[0])
    truth = _segments(clean)
    assert len(truth) == 2
    lst, events = _listen(x, t0=2.0)
    assert lst.backend == "silero"
    starts = [e.t_s - 2.0 for e in events if e.type == E.PLAYER_SPEECH_STARTED]
    ends = [e.t_s - 2.0 for e in events if e.type == E.PLAYER_SPEECH_ENDED]
    assert len(starts) == 2 and len(ends) == 2, _types(events)
    err_s = [s - t[0] for s, t in zip(starts, truth)]
    err_e = [e - t[1] for e, t in zip(ends, truth)]
    with capsys.disabled():
        print(f"\n[vad boundaries, noise={noise}] start errors ms {[round(1000 * e) for e in err_s]}, "
              f"end errors ms {[round(1000 * e) for e in err_e]}")
    assert max(abs(e) for e in err_s + err_e) <= 0.1
    # each event is released only once its audio has been heard (causal), within the hangover
    for e in events:
        if e.type == E.PLAYER_SPEECH_STARTED:
            assert 0.0 < e.emit_at - e.t_s <= 0.15
        if e.type == E.PLAYER_SPEECH_ENDED:
            assert 0.55 <= e.emit_at - e.t_s <= 0.85   # hangover (0.6 s) + Silero's trailing probability
    assert E.PLAYER_REACTION not in _types(events)


@needs_silero
def test_short_gap_keeps_the_turn_and_long_pause_ends_it():
    a = _say("Have you seen the blacksmith")
    b = _say("today? I need a new sword.")
    _, ev = _listen(np.concatenate([_sil(0.5), a, _sil(0.15), b, _sil(1.0)]))
    assert _types(ev).count(E.PLAYER_SPEECH_STARTED) == 1 and _types(ev).count(E.PLAYER_SPEECH_ENDED) == 1
    _, ev = _listen(np.concatenate([_sil(0.5), a, _sil(0.4), b, _sil(1.0)]))
    assert _types(ev).count(E.PLAYER_SPEECH_ENDED) == 1   # a 400 ms breath is still within the hangover
    _, ev = _listen(np.concatenate([_sil(0.5), a, _sil(1.0), b, _sil(1.0)]))
    assert _types(ev).count(E.PLAYER_SPEECH_STARTED) == 2 and _types(ev).count(E.PLAYER_SPEECH_ENDED) == 2


@needs_silero
@pytest.mark.parametrize("kind,db", [("white", -30.0), ("pink", -30.0), ("white", -20.0)])
def test_noise_alone_never_starts_a_turn(kind, db):
    x = _noise(6 * SR, db, kind, seed=3)
    _, ev = _listen(x)
    assert E.PLAYER_SPEECH_STARTED not in _types(ev)
    _, events, phases, _ = _conversation(x, 7.0)
    assert E.PLAYER_SPEECH_STARTED not in _types(events) and set(phases) == {Phase.IDLE}


def test_energy_fallback_when_silero_is_missing(monkeypatch, caplog):
    def unavailable():
        raise vad_mod.VadUnavailableError("silero-vad is not installed (simulated)")

    monkeypatch.setattr(vad_mod, "_session", unavailable)
    monkeypatch.setattr(listening_mod, "_WARNED", False)
    clean = np.concatenate([_sil(0.7), _say("Have you seen the blacksmith today? I need a new sword."), _sil(1.0)])
    with caplog.at_level(logging.WARNING, logger="lpm_npc.performance.listening"):
        lst, ev = _listen(clean)
    assert lst.backend == "energy"
    assert any("energy VAD" in r.getMessage() for r in caplog.records)
    truth = _segments(clean)
    assert _types(ev).count(E.PLAYER_SPEECH_STARTED) == 1 and _types(ev).count(E.PLAYER_SPEECH_ENDED) == 1
    assert abs(_first(ev, E.PLAYER_SPEECH_STARTED).t_s - truth[0][0]) < 0.1
    assert abs(_first(ev, E.PLAYER_SPEECH_ENDED).t_s - truth[-1][1]) < 0.15


# ---------------------------------------------------------------------------------- behaviour
@needs_silero
def test_backchannel_in_the_pause_not_while_the_player_speaks():
    a = _say("So I went down to the river, and the boat was gone. Then I walked for hours.")
    b = _say("And nobody was there. What should I do now?")
    player = np.concatenate([a, _sil(1.0), b])
    t0 = 1.0
    frames, events, phases, gestures = _conversation(player, t0 + player.size / SR + 2.5, player_t0=t0, seed=3)
    types = _types(events)
    assert types.count(E.PLAYER_SPEECH_STARTED) == 2 and types.count(E.PLAYER_SPEECH_ENDED) == 2
    assert E.PLAYER_REACTION not in types                         # ordinary speech: no startle
    mask = _speech_mask(player)
    pause = (t0 + a.size / SR, t0 + a.size / SR + 1.0)
    bcs = [e.t_s for e in events if e.type == E.BACKCHANNEL]
    assert len(bcs) >= 2
    assert any(pause[0] < t < pause[1] for t in bcs)              # a nod in the 1 s pause
    for t in bcs:                                                 # each one in a real pause of the voice
        k = int(round((t - t0) * 100))
        assert not mask[max(k - 15, 0):k].any(), f"backchannel at {t:.2f}s while the player speaks"
    # every nod / brow gesture starts in a pause, never mid-word
    for g0, ch in gestures:
        if ch in (C["head_pitch"], C["brow_up"]):
            k = int(round((g0 - t0) * 100))
            assert 0 <= k and not mask[max(k - 15, 0):k + 1].any(), f"gesture at {g0:.2f}s mid-speech"
    times = np.arange(frames.shape[0]) / FPS
    for t in bcs:                                                 # the nod is visible
        k = int(round(t * FPS))
        assert frames[k:k + 20, C["head_pitch"]].max() - frames[k - 3, C["head_pitch"]] > 1.5
    # attention while the player talks: tilt, eyes on the player, no mouth
    talking = np.array([p == Phase.LISTENING for p in phases]) & (times > t0 + 1.0) & (times < pause[0])
    assert talking.sum() > 30
    assert frames[talking, C["head_roll"]].mean() > 1.5
    assert np.abs(frames[talking, C["gaze_x"]]).mean() < 0.12
    assert frames[:, MOUTH].max() < 0.02                          # the NPC never lip-syncs the player


@needs_silero
def test_thinking_between_player_turn_and_npc_answer():
    player = _say("Have you seen the blacksmith today? I need a new sword.")
    answer = _say("He went to the mill this morning.", voice=DEFAULT_NPC_VOICE)
    t0 = 0.5
    state = {}

    def game(m, e, t):  # the game answers 1.2 s after the player's turn ends
        if e.type == E.PLAYER_SPEECH_ENDED and "answer" not in state:
            state["answer"] = t + 1.2
            m.push_npc_audio(answer, t, start_s=t + 1.2)

    t_end = t0 + player.size / SR + 4.5
    frames, events, phases, _ = _conversation(player, t_end, player_t0=t0, on_event=game)
    ended = _first(events, E.PLAYER_SPEECH_ENDED)
    think = _first(events, E.THINKING_STARTED)
    npc = _first(events, E.NPC_SPEECH_STARTED)
    assert ended.t_s < think.t_s < npc.t_s
    assert think.t_s - ended.t_s < 0.8                    # right after the turn is known to be over
    assert abs(npc.t_s - state["answer"]) < 1.5 / FPS
    times = np.arange(frames.shape[0]) / FPS
    thinking = (times > think.t_s + 0.6) & (times < npc.t_s)
    assert all(phases[i] == Phase.THINKING for i in np.nonzero(thinking)[0])
    assert frames[thinking, C["gaze_y"]].mean() < -0.2 and abs(frames[thinking, C["gaze_x"]].mean()) > 0.2
    assert frames[thinking, C["brow_down"]].mean() > 0.1
    assert all(phases[i] == Phase.SPEAKING for i in np.nonzero((times > npc.t_s + 0.05) & (times < npc.t_s + 1.0))[0])
    assert _types(events).count(E.THINKING_STARTED) == 1
    # without an answer the thinking look times out back to the designer's phase
    _, events2, phases2, _ = _conversation(player, t0 + player.size / SR + 5.0, player_t0=t0)
    th = _first(events2, E.THINKING_STARTED).t_s
    assert phases2[int((th + 1.0) * FPS)] == Phase.THINKING and phases2[-1] == Phase.IDLE


@needs_silero
def test_loud_high_pitched_burst_makes_the_npc_react():
    calm = _say("So I went down to the river, and the boat was gone.") * 0.3
    shout = np.clip(_say("Look out! A dragon!", pitch=95) * 1.3, -1.0, 1.0)
    player = np.concatenate([calm, _sil(0.25), shout, _sil(0.5)])
    t0 = 1.0
    frames, events, _, _ = _conversation(player, t0 + player.size / SR + 1.5, player_t0=t0, seed=2)
    reactions = [e for e in events if e.type == E.PLAYER_REACTION]
    t_shout = t0 + (calm.size + _sil(0.25).size) / SR
    assert len(reactions) == 1, [(e.t_s, e.detail) for e in reactions]
    r = reactions[0]
    assert t_shout < r.t_s < t_shout + 0.5
    assert "loud" in r.detail and r.data["level_db"] >= r.data["ref_level_db"] + 8
    k = int(round(r.t_s * FPS))
    for ch, rise in (("eye_wide", 0.25), ("brow_up", 0.25)):
        assert frames[k:k + 25, C[ch]].max() - frames[k - 5:k, C[ch]].max() > rise, ch
        assert frames[k + 40:, C[ch]].max() < 0.15, ch          # briefly
    assert frames[:, MOUTH].max() < 0.02


@needs_silero
def test_high_pitch_alone_is_a_reaction_too():
    calm = _say("So I went down to the river, and the boat was gone.")
    squeal = _say("Oh my, a dragon!", pitch=99) * 1.6     # excited: higher and a little louder (+4 dB)
    player = np.concatenate([calm, _sil(0.2), squeal, _sil(0.5)])
    _, ev = _listen(player)
    reactions = [e for e in ev if e.type == E.PLAYER_REACTION]
    assert len(reactions) == 1 and reactions[0].detail == "high_pitch", [(e.t_s, e.detail) for e in reactions]
    assert reactions[0].t_s > calm.size / SR


@needs_silero
def test_full_duplex_overlap_and_barge_in():
    npc = _say("Bring me the map, and maybe the old brass compass by the window, if you can find it.",
               voice=DEFAULT_NPC_VOICE)
    player = np.concatenate([_say("Wait, wait! I have something to tell you."), _sil(0.2)])
    t_npc, t_player = 0.5, 2.0
    t_end = t_npc + npc.size / SR + 1.0
    alone, _, _, _ = _conversation(None, t_end, npc=npc, npc_t0=t_npc)
    both, ev_both, phases, _ = _conversation(player, t_end, player_t0=t_player, npc=npc, npc_t0=t_npc)
    # overlap: the player's voice never reaches the mouth, the NPC keeps speaking
    np.testing.assert_allclose(both[:, MOUTH], alone[:, MOUTH], atol=1e-5)
    times = np.arange(both.shape[0]) / FPS
    assert E.PLAYER_SPEECH_STARTED in _types(ev_both)
    npc_end = _first(ev_both, E.NPC_SPEECH_ENDED).t_s
    assert all(e.t_s > npc_end for e in ev_both if e.type == E.THINKING_STARTED)  # never thinks while speaking
    assert all(phases[i] == Phase.SPEAKING for i in np.nonzero((times > 1.0) & (times < t_npc + npc.size / SR - 0.2))[0])
    assert E.BACKCHANNEL not in _types(ev_both) or all(
        e.t_s > t_npc + npc.size / SR for e in ev_both if e.type == E.BACKCHANNEL)
    # barge-in: the game interrupts when the player starts talking
    cut = {}

    def game(m, e, t):
        if e.type == E.PLAYER_SPEECH_STARTED and "t" not in cut:
            cut["t"] = t
            m.interrupt(t)

    frames, events, phases, _ = _conversation(player, t_player + player.size / SR + 2.0, player_t0=t_player,
                                              npc=npc, npc_t0=t_npc, on_event=game)
    k = int(round(cut["t"] * FPS))
    assert cut["t"] - t_player < 0.2
    assert frames[k + 3:, C["jaw_open"]].max() < 0.05                      # mouth closed, stays closed
    types = _types(events)
    assert E.INTERRUPTED in types and E.NPC_SPEECH_ENDED in types
    end = _first(events, E.PLAYER_SPEECH_ENDED).t_s
    hang = int(np.ceil(PerformanceConfig().npc_speech_hangover_s * FPS)) + 1   # NPC speech hangover after the cut
    listening = [phases[i] for i in range(k + hang, int(end * FPS))]
    assert listening and all(p == Phase.LISTENING for p in listening)
    think = _first(events, E.THINKING_STARTED).t_s
    assert think > end and phases[int((think + 0.2) * FPS)] == Phase.THINKING


@needs_silero
def test_listener_state_round_trips():
    player = _say("So I went down to the river, and the boat was gone. Then I walked for hours.")
    m = PerformanceModel(seed=1)
    _conversation(player, 1.0 + player.size / SR + 1.0, model=m)
    d = json.loads(json.dumps(m.state_dict()))
    assert d["player"]["ref_level_db"] is not None and d["player"]["ref_log_pitch"] is not None
    m2 = PerformanceModel(seed=1)
    m2.load_state_dict(d)
    assert m2._player.ref_level_db == pytest.approx(m._player.ref_level_db)
    assert m2._player.ref_log_pitch == pytest.approx(m._player.ref_log_pitch)


@needs_silero
def test_silero_cost_printout(capsys):
    """Measured, not asserted: Silero cost per 32 ms chunk on this machine."""
    r = vad_mod.benchmark(5.0)
    with capsys.disabled():
        print(f"\n[silero vad] {r['ms_per_chunk']:.3f} ms wall / {r['cpu_ms_per_chunk']:.3f} ms CPU per 32 ms chunk ({r['chunks']} chunks, "
              f"real-time factor {r['realtime_factor']:.4f})")
    assert r["chunks"] == int(5.0 * SR) // vad_mod.CHUNK


def test_default_config_uses_silero_when_installed():
    m = PerformanceModel(PerformanceConfig())
    assert m._player.backend == ("silero" if vad_mod.silero_available() else "energy")
