"""Free-text direction -> motion primitives / emotions (sentence embeddings, offline model)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from lpm_npc.errors import InvalidInputError
from lpm_npc.performance.direction import (
    DEFAULT_THRESHOLD,
    NOMINAL_WEIGHT,
    DirectionInterpreter,
    DirectionResult,
    benchmark,
    get_interpreter,
    split_clauses,
    validate_direction,
    warm_up,
)
from lpm_npc.performance.model import PerformanceModel
from lpm_npc.performance.motion import MOTION_CHANNELS
from lpm_npc.performance.primitives import MEASURES, PRIMITIVES
from lpm_npc.types import Emotion, EventType

FPS = 30.0


# ---------------------------------------------------------------------- library (no model needed)
def test_primitive_library_is_well_formed():
    assert len(PRIMITIVES) >= 14
    for name in ("nod", "nod_slow", "head_shake", "tilt_head", "look_away", "look_down", "look_up",
                 "glance_side", "raise_eyebrows", "frown_brows", "smirk", "smile_small", "wide_eyes",
                 "squint_suspicious", "lean_in", "sigh", "roll_eyes", "nervous", "calm"):
        assert name in PRIMITIVES, name
    direct = {"head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y"}
    for p in PRIMITIVES.values():
        assert p.name and len(p.descriptions) >= 3 and p.duration_s >= 0
        peak = p.offsets(0.5)
        assert set(peak) <= set(MOTION_CHANNELS)
        assert set(p.expected) <= set(MEASURES)
        for measure, sign in p.expected.items():   # channels that are their own measure: sign at the peak
            if measure in direct:
                assert np.sign(peak[measure]) == sign, (p.name, measure)
        if p.duration_s > 0:   # timed: starts and ends at rest
            assert all(abs(v) < 1e-6 for v in p.offsets(0.0).values())
            assert all(abs(v) < 1e-6 for v in p.offsets(1.0).values())
        else:                  # held: ramps in and holds
            assert p.offsets(1.0) == pytest.approx(peak)


def test_clause_splitting_and_validation():
    assert split_clauses("looks away, a bit nervous") == ["looks away", "a bit nervous"]
    assert split_clauses("nods and smiles, then looks down") == ["nods", "smiles", "looks down"]
    for bad in ("", "   \n\t", "x" * 501):
        with pytest.raises(InvalidInputError):
            validate_direction(bad)
    assert validate_direction("  nods ") == "nods"


# ---------------------------------------------------------------------- matching (loads the model once)
@pytest.fixture(scope="module")
def interp(tmp_path_factory) -> DirectionInterpreter:
    return DirectionInterpreter(cache_dir=tmp_path_factory.mktemp("dircache")).warm_up()


def _names(r: DirectionResult) -> list[str]:
    return [m.name for m in r.matches]


@pytest.mark.parametrize("text, expected", [
    ("nods slowly", ["nod_slow"]),
    ("looks away, a bit nervous", ["look_away", "nervous"]),
    ("smirks", ["smirk"]),
    ("raises an eyebrow", ["raise_eyebrows"]),
    ("shakes head", ["head_shake"]),
    ("looks down sadly", ["look_down", "emotion:sad"]),
    ("leans in, curious", ["lean_in"]),
    ("she is very happy", ["emotion:happy"]),
    # paraphrases that are not among the descriptions
    ("gives a little nod", ["nod"]),
    ("shakes her head no", ["head_shake"]),
    ("her eyebrows shoot up", ["raise_eyebrows"]),
    ("stares at his feet", ["look_down"]),
    ("turns his eyes away from you", ["look_away"]),
    ("moves closer to hear better", ["lean_in"]),
    ("lets out a weary breath", ["sigh"]),
    ("looks up at the stars", ["look_up"]),
    ("looks terrified", ["emotion:afraid"]),
])
def test_direction_matches(interp, text, expected):
    r = interp.interpret(text)
    names = _names(r)
    for e in expected:
        assert e in names, (text, [(m.name, round(m.confidence, 2)) for m in r.matches])
    for m in r.matches:
        assert m.confidence >= DEFAULT_THRESHOLD and 0.0 < m.weight <= 1.0


def test_nonsense_matches_nothing(interp, caplog):
    with caplog.at_level(logging.INFO, logger="lpm_npc.performance.direction"):
        for text in ("the quarterly tax report", "purple monkey dishwasher"):
            r = interp.interpret(text)
            assert r.matches == [], [(m.name, m.confidence) for m in r.matches]
    assert "matched nothing" in caplog.text


def test_bad_text_raises(interp):
    for bad in ("", "   ", "nods " * 101):
        with pytest.raises(InvalidInputError) as ei:
            interp.interpret(bad)
        assert "direction" in ei.value.message


def test_intensity_and_speed_words(interp):
    slight, plain, strong = (interp.interpret(t).matches[0] for t in ("smiles slightly", "smiles", "smiles very widely"))
    assert slight.name == plain.name == "smile_small"
    assert slight.weight < plain.weight == NOMINAL_WEIGHT < strong.weight <= 1.0
    quick, nod = interp.interpret("nods quickly").matches[0], interp.interpret("nods").matches[0]
    assert quick.name == nod.name == "nod" and quick.duration_s < nod.duration_s
    slow = interp.interpret("nods slowly").matches[0]
    assert slow.name == "nod_slow" and slow.duration_s > nod.duration_s


def test_singleton_is_thread_safe():
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(warm_up())) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(out) == 3 and all(x is get_interpreter() for x in out) and get_interpreter().ready()


def test_the_encoder_gives_sentence_transformers_embeddings():
    """The direction model runs in plain torch (performance/minilm.py); sentence-transformers, which the
    model's wheel depends on, is the reference it must agree with."""
    st = pytest.importorskip("sentence_transformers")
    from lpm_npc.performance.direction import model_dir
    from lpm_npc.performance.minilm import MiniLMEncoder

    texts = ["nods slowly", "looks away, nervous", "", "Smile at the player, then frown!",
             "Café naïve 日本語", "very " * 300 + "long"]   # empty, accents, CJK, past the 256-token limit
    ours = MiniLMEncoder(model_dir()).encode(texts, batch_size=4)  # two batches, padded differently
    ref = st.SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    assert ours.shape == ref.shape == (len(texts), 384) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_loading_the_direction_model_imports_no_transformers_stack():
    """sentence-transformers pulls in transformers and scikit-learn: seconds (45 s on a cold disk) and
    about 200 MB in every server process before it says SERVING."""
    import subprocess
    import sys

    code = ("import sys; from lpm_npc.performance.direction import warm_up, encode; warm_up(); "
            "assert encode(['nods']).shape == (1, 384); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------- in the performance model
def _run(direction: str | None, t0: float = 0.5, seconds: float = 4.0, transition_s: float = 0.3,
         seed: int = 3) -> tuple[np.ndarray, np.ndarray, PerformanceModel, list]:
    """(times, values (n, channels)) of a fresh model stepped at FPS, with the direction set at t0."""
    model = PerformanceModel(seed=seed)
    times = np.arange(0.0, seconds, 1.0 / FPS)
    rows, events, applied = [], [], False
    for t in times:
        if direction is not None and not applied and t >= t0:
            model.set_dialogue_state(t0, direction=direction, transition_s=transition_s)
            applied = True
        frame, ev = model.step(float(t))
        rows.append(frame.values.copy())
        events += ev
    return times, np.array(rows), model, events


def _delta(direction: str, channel: str, **kw) -> tuple[np.ndarray, np.ndarray, PerformanceModel, list]:
    """The direction's effect on one channel: the run minus the same run without direction."""
    times, with_dir, model, events = _run(direction, **kw)
    _, base, _, _ = _run(None, **kw)
    i = MOTION_CHANNELS.index(channel)
    return times, with_dir[:, i] - base[:, i], model, events


def _peaks(x: np.ndarray, min_height: float) -> list[int]:
    return [i for i in range(1, len(x) - 1) if x[i] >= x[i - 1] and x[i] > x[i + 1] and x[i] > min_height]


def test_nods_slowly_oscillates_head_pitch(interp):
    t0 = 0.5
    times, slow, _model, events = _delta("nods slowly", "head_pitch", t0=t0)
    applied = [e for e in events if e.type == EventType.DIRECTION_APPLIED]
    assert len(applied) == 1 and isinstance(applied[0].data, DirectionResult)
    assert "nod_slow" in applied[0].data.names and "nod_slow" in applied[0].detail
    dur = PRIMITIVES["nod_slow"].duration_s
    inside = (times >= t0) & (times <= t0 + dur)
    pk = _peaks(np.where(inside, slow, 0.0), 2.0)
    assert len(pk) >= 2                                  # several dips: it oscillates
    assert np.all(np.abs(slow[times > t0 + dur + 0.05]) < 1e-3)   # and ends
    _, fast, _, _ = _delta("nods", "head_pitch", t0=t0)
    pk_fast = _peaks(fast, 1.0)
    assert pk_fast and times[pk[0]] - t0 > times[pk_fast[0]] - t0   # slower than "nods"
    assert np.mean(np.diff(times[pk])) > np.mean(np.diff(times[pk_fast]))


def test_looks_away_nervous_moves_gaze_and_idle(interp):
    times, gx, model, events = _delta("looks away, a bit nervous", "gaze_x", t0=0.5)
    assert gx[times > 1.5].min() > 0.3                  # held: eyes stay away
    assert abs(gx[times < 0.5]).max() < 1e-6
    assert model._idle.rate_scale > 1.0 and model._idle.cfg.saccade_interval_s < 1.6
    res = next(e.data for e in events if e.type == EventType.DIRECTION_APPLIED)
    assert {"look_away", "nervous"} <= set(res.names)


def test_smirk_and_eyebrow_move_their_channels(interp):
    _, smile, _, _ = _delta("smirks", "smile", t0=0.5)
    assert smile.max() > 0.2
    _, brow, _, _ = _delta("raises an eyebrow", "brow_up", t0=0.5)
    assert brow.max() > 0.4 and abs(brow[-1]) < 1e-3


def test_emotion_from_direction(interp):
    _times, smile, model, _ = _delta("she is very happy", "smile", t0=0.5)
    assert model._emotion == Emotion.HAPPY
    assert smile[-1] > 0.5


def test_explicit_emotion_wins_over_direction(interp):
    model = PerformanceModel(seed=1)
    model.step(0.0)
    model.set_dialogue_state(0.1, emotion=Emotion.SAD, direction="she is very happy")
    _, events = model.step(0.2)
    assert model._emotion == Emotion.SAD
    assert any(e.type == EventType.DIRECTION_APPLIED and "kept" in e.detail for e in events)


def test_nonsense_and_bad_direction_in_model(interp):
    model = PerformanceModel(seed=1)
    model.step(0.0)
    model.set_dialogue_state(0.1, direction="the quarterly tax report")
    _, events = model.step(0.2)
    ev = [e for e in events if e.type == EventType.DIRECTION_APPLIED]
    assert ev and ev[0].data.matches == [] and "no match" in ev[0].detail
    with pytest.raises(InvalidInputError):
        model.set_dialogue_state(0.3, direction="   ")


@pytest.mark.parametrize("text, channel, full", [("looks away", "gaze_x", 0.75), ("she is happy", "smile", 0.64)])
def test_transition_time_is_honoured(interp, text, channel, full):
    t0, tr = 1.0, 1.2
    _times, d, _, _ = _delta(text, channel, t0=t0, transition_s=tr, seconds=3.0)

    def at(t: float) -> float:
        return float(d[round(t * FPS)])

    assert abs(at(t0 - 0.1)) < 1e-6
    assert 0.2 * full < at(t0 + tr / 2) < 0.8 * full      # partial halfway
    assert at(t0 + tr) == pytest.approx(full, abs=0.03)   # full at the end of the transition
    assert at(t0 + tr + 0.5) == pytest.approx(full, abs=0.03)


def test_held_gaze_is_replaced(interp):
    model = PerformanceModel(seed=2)
    for t in np.arange(0.0, 1.0, 1 / FPS):
        model.step(float(t))
    model.set_dialogue_state(1.0, direction="looks away", transition_s=0.2)
    for t in np.arange(1.0, 2.0, 1 / FPS):
        model.step(float(t))
    model.set_dialogue_state(2.0, direction="looks down", transition_s=0.2)
    for t in np.arange(2.0, 3.0, 1 / FPS):
        frame, _ = model.step(float(t))
    assert model._dir_layer.names() == ["look_down"]
    assert frame["gaze_y"] > 0.4 and abs(frame["gaze_x"]) < 0.35


def test_print_timing(interp):
    """Measures ms per direction on this CPU (printed, not asserted)."""
    out = benchmark(repeats=1)
    assert out["n"] > 0


def test_result_converts_to_the_contract(interp):
    from lpm_npc.server import convert

    model = PerformanceModel(seed=1)
    model.step(0.0)
    model.set_dialogue_state(0.5, direction="looks away, a bit nervous", transition_s=0.4)
    _, events = model.step(0.6)
    res = next(e.data for e in events if e.type == EventType.DIRECTION_APPLIED)
    msg = convert.direction_result_pb(res)
    assert msg.text == "looks away, a bit nervous" and msg.pts_us == 500000 and msg.duration_ms == 400
    assert [m.name for m in msg.matches] == res.names and all(0 < m.weight <= 1 for m in msg.matches)


def test_then_sequences_motions(interp):
    r = interp.interpret("nods, then looks away")
    by = {m.name: m for m in r.matches}
    assert by["nod"].delay_s == 0.0 and by["look_away"].delay_s == pytest.approx(by["nod"].duration_s)
    times, gx, _, _ = _delta("nods, then looks away", "gaze_x", t0=0.5, transition_s=0.2)
    assert abs(gx[times < 0.5 + by["nod"].duration_s]).max() < 1e-6   # eyes wait for the nod
    assert gx[-1] > 0.5
