"""The motion vector as ARKit blendshape weights (lpm_npc/performance/arkit.py, docs/RIG_MAPPING.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lpm_npc.performance.arkit import (
    ARKIT_INDEX,
    ARKIT_NAMES,
    ARKIT_UNUSED,
    GAZE_PITCH_DEG_AT_1,
    GAZE_RANGE,
    GAZE_YAW_DEG_AT_1,
    arkit_dict,
    arkit_weights,
    gaze_angles_deg,
    head_angles_deg,
    rig_frame_fields,
)
from lpm_npc.performance.motion import NUM_CHANNELS, MotionFrame

# Apple's ARFaceAnchor.BlendShapeLocation, in the documentation's order (= Unreal EARFaceBlendShape 0..51).
APPLE_52 = ["eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut"]


def w(**channels: float) -> dict[str, float]:
    return arkit_dict(MotionFrame.from_dict(0.0, channels).values)


def active(d: dict[str, float], eps: float = 1e-6) -> set[str]:
    return {k for k, v in d.items() if v > eps}


def test_names_are_apples_52_in_order():
    assert len(ARKIT_NAMES) == 52
    assert list(ARKIT_NAMES) == APPLE_52
    assert len(set(ARKIT_NAMES)) == 52
    assert set(ARKIT_UNUSED) <= set(ARKIT_NAMES)


def test_neutral_is_all_zero():
    assert not active(w())


def test_jaw_open_drives_jaw_open():
    assert active(w(jaw_open=0.7)) == {"jawOpen"}
    assert w(jaw_open=0.7)["jawOpen"] == pytest.approx(0.7)
    assert w(jaw_open=0.3)["jawOpen"] < w(jaw_open=0.8)["jawOpen"]
    # pressed lips override the opening (as rendered) and show up as mouthPress
    d = w(jaw_open=0.6, lips_press=1.0)
    assert d["jawOpen"] == pytest.approx(0.0)
    assert d["mouthPressLeft"] == d["mouthPressRight"] == pytest.approx(1.0)


def test_smile_drives_both_mouth_smiles():
    d = w(smile=0.8)
    assert d["mouthSmileLeft"] == pytest.approx(0.8) and d["mouthSmileRight"] == pytest.approx(0.8)
    assert d["mouthFrownLeft"] == d["mouthFrownRight"] == 0.0
    assert active(d) == {"mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"}


def test_blink_l_drives_eye_blink_left_only():
    assert active(w(blink_l=1.0)) == {"eyeBlinkLeft"}
    assert active(w(blink_r=0.5)) == {"eyeBlinkRight"}


def test_gaze_right_of_image_is_characters_left():
    # gaze_x > 0 looks toward the image's right = the character's own left: the left eye turns out
    # (away from the nose), the right eye turns in (toward the nose).
    assert active(w(gaze_x=0.8)) == {"eyeLookOutLeft", "eyeLookInRight"}
    assert w(gaze_x=0.8)["eyeLookOutLeft"] == pytest.approx(0.8)
    assert active(w(gaze_x=-0.5)) == {"eyeLookInLeft", "eyeLookOutRight"}
    assert active(w(gaze_y=0.6)) == {"eyeLookDownLeft", "eyeLookDownRight"}
    assert active(w(gaze_y=-0.6)) == {"eyeLookUpLeft", "eyeLookUpRight"}


def test_round_is_pucker_when_closed_funnel_when_open():
    closed, opened = w(mouth_round=1.0), w(mouth_round=1.0, jaw_open=0.5)
    assert closed["mouthPucker"] == pytest.approx(1.0) and closed["mouthFunnel"] == 0.0
    assert opened["mouthFunnel"] == pytest.approx(1.0) and opened["mouthPucker"] == pytest.approx(0.0)


def test_brows_eyes_nose():
    assert active(w(brow_up=0.5)) == {"browInnerUp", "browOuterUpLeft", "browOuterUpRight"}
    assert active(w(brow_inner_up=0.5)) == {"browInnerUp"}
    assert active(w(brow_down=0.5)) == {"browDownLeft", "browDownRight"}
    assert active(w(eye_wide=0.5)) == {"eyeWideLeft", "eyeWideRight"}
    assert active(w(squint=0.5)) == {"eyeSquintLeft", "eyeSquintRight"}
    assert active(w(nose_wrinkle=0.5)) == {"noseSneerLeft", "noseSneerRight"}
    assert active(w(upper_lip_raise=0.5)) == {"mouthUpperUpLeft", "mouthUpperUpRight"}
    assert active(w(mouth_spread=0.5)) == {"mouthStretchLeft", "mouthStretchRight"}
    assert active(w(frown=0.5)) == {"mouthFrownLeft", "mouthFrownRight"}


def test_random_inputs_stay_in_range_and_batch_matches_single():
    rng = np.random.default_rng(0)
    m = rng.uniform(-3, 3, size=(500, NUM_CHANNELS)).astype(np.float32)
    m[:, -3:] *= 20
    out = arkit_weights(m)
    assert out.shape == (500, 52) and out.dtype == np.float32
    assert np.all(out >= 0.0) and np.all(out <= 1.0) and np.all(np.isfinite(out))
    for i in (0, 17, 499):
        np.testing.assert_allclose(out[i], arkit_weights(m[i]), atol=1e-6)
    assert arkit_weights(m.reshape(25, 20, NUM_CHANNELS)).shape == (25, 20, 52)
    unused = [ARKIT_INDEX[n] for n in ARKIT_UNUSED]
    assert np.all(out[:, unused] == 0.0)


def test_gaze_and_head_angles():
    v = MotionFrame.from_dict(0, {"gaze_x": 1.0, "gaze_y": -0.5, "head_yaw": 7.0, "head_pitch": -3.0,
                                  "head_roll": 2.0}).values
    yaw, pitch = gaze_angles_deg(v)
    assert isinstance(yaw, float)
    assert yaw == pytest.approx(GAZE_YAW_DEG_AT_1) and pitch == pytest.approx(-0.5 * GAZE_PITCH_DEG_AT_1)
    assert 15 < GAZE_YAW_DEG_AT_1 < 30 and 8 < GAZE_PITCH_DEG_AT_1 < 20
    assert head_angles_deg(v) == pytest.approx((7.0, -3.0, 2.0))
    batch = np.stack([v, v * 0])
    by, bp = gaze_angles_deg(batch)
    assert bp.shape == (2,)
    assert by.shape == (2,) and by[1] == 0.0
    f = rig_frame_fields(v)
    assert len(f["weights"]) == 52 and f["gaze_yaw_deg"] == pytest.approx(yaw) and f["head_roll_deg"] == 2.0


def test_gaze_range_matches_renderer():
    from lpm_npc.render.renderer import GAZE_RANGE as RENDER_GAZE_RANGE

    assert tuple(RENDER_GAZE_RANGE) == tuple(GAZE_RANGE)


def test_mapping_doc_lists_every_name():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "RIG_MAPPING.md").read_text()
    for name in ARKIT_NAMES:
        assert f"`{name}`" in doc, name
