"""One performance, two outputs: the motion vector as ARKit blendshape weights, head and eye angles.

The same `MotionFrame` that the renderer turns into pixels is mapped here onto the 52 ARKit
blendshape coefficients (Apple's `ARFaceAnchor.BlendShapeLocation`, in Apple's documented order),
so a game can drive a 3-D rig (Unity blendshapes, Unreal morph targets / MetaHuman ARKit curves)
with exactly the performance the video shows. The full table is in docs/RIG_MAPPING.md.

Conventions (see lpm_npc/performance/motion.py):
  * `Left` / `Right` in ARKit names are the character's own sides; so are motion's `*_l` / `*_r`.
    The character's left eye appears on the image's right.
  * gaze_x > 0 looks toward the image's right, i.e. toward the character's own LEFT: the left eye
    rotates outward (away from the nose: eyeLookOutLeft) and the right eye inward, toward the nose
    (eyeLookInRight). gaze_y > 0 looks down (eyeLookDown*).
  * Head angles stay in motion's units and signs (degrees; yaw + = face turns toward the image's
    right, pitch + = chin down, roll + = clockwise in the image); `head_angles_deg` returns them.

Everything works on one frame (20,) or a batch (B, 20); the output has the same leading shape.
"""

from __future__ import annotations

import math

import numpy as np

from lpm_npc.performance.motion import CHANNEL_INDEX, NUM_CHANNELS

# Apple's order (ARFaceAnchor.BlendShapeLocation documentation: left eye, right eye, mouth and jaw,
# eyebrows, cheeks, nose, tongue); the same order as Unreal's EARFaceBlendShape 0..51.
ARKIT_NAMES: tuple[str, ...] = (
    # left eye
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    # right eye
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    # mouth and jaw
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    # eyebrows
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    # cheeks
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    # nose
    "noseSneerLeft", "noseSneerRight",
    # tongue
    "tongueOut",
)
NUM_ARKIT = len(ARKIT_NAMES)
ARKIT_INDEX: dict[str, int] = {name: i for i, name in enumerate(ARKIT_NAMES)}
assert NUM_ARKIT == 52 and len(ARKIT_INDEX) == 52

# Names this mapping never drives (the motion model has no channel for them): always 0.
ARKIT_UNUSED: tuple[str, ...] = (
    "jawForward", "jawLeft", "jawRight", "mouthClose", "mouthLeft", "mouthRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthLowerDownLeft", "mouthLowerDownRight",
    "cheekPuff", "tongueOut",
)

# Eye rotation at |gaze| = 1. The renderer moves the iris GAZE_RANGE iris radii (x, y) at |gaze| = 1
# (lpm_npc/render/renderer.py; tests check the two stay equal). An adult eyeball has a radius of
# ~12 mm and the iris a radius of ~5.9 mm (11.7 mm visible diameter), so a frontal view that shows
# the iris centre displaced by d iris radii corresponds to a rotation asin(d * 5.9 / 12).
GAZE_RANGE: tuple[float, float] = (0.75, 0.45)
EYEBALL_RADIUS_IN_IRIS_RADII = 12.0 / 5.9
GAZE_YAW_DEG_AT_1 = math.degrees(math.asin(GAZE_RANGE[0] / EYEBALL_RADIUS_IN_IRIS_RADII))    # ~21.6
GAZE_PITCH_DEG_AT_1 = math.degrees(math.asin(GAZE_RANGE[1] / EYEBALL_RADIUS_IN_IRIS_RADII))  # ~12.8

# A funnel (open rounded lips, "oh") vs a pucker (closed rounded lips, "oo"): the share of
# mouth_round that is funnel grows with the rendered jaw opening and is complete at this opening.
FUNNEL_FULL_AT_JAW = 0.25
CHEEK_FROM_SMILE = 0.6   # smile lifts the cheeks (the renderer's smile raises them too)

_C = CHANNEL_INDEX


def _as_batch(motion_values: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    m = np.asarray(motion_values, dtype=np.float32)
    if m.shape[-1] != NUM_CHANNELS:
        raise ValueError(f"motion values must have {NUM_CHANNELS} channels in the last axis, got {m.shape}")
    lead = m.shape[:-1]
    return np.nan_to_num(m.reshape(-1, NUM_CHANNELS)), lead


def arkit_weights(motion_values: np.ndarray) -> np.ndarray:
    """ARKit blendshape weights, float32 in 0..1, shape (..., 52) for motion (..., 20).

    The mapping (docs/RIG_MAPPING.md has the table) follows what the renderer draws: e.g. jawOpen is
    the rendered jaw opening, jaw_open * (1 - lips_press), because pressed lips override opening.
    """
    m, lead = _as_batch(motion_values)
    unit = np.clip(m[:, :15], 0.0, 1.0)  # expression channels live in 0..1

    def ch(name: str) -> np.ndarray:
        return unit[:, _C[name]]

    gx = np.clip(m[:, _C["gaze_x"]], -1.0, 1.0)
    gy = np.clip(m[:, _C["gaze_y"]], -1.0, 1.0)
    look_char_left = np.maximum(gx, 0.0)    # toward the image's right = the character's left
    look_char_right = np.maximum(-gx, 0.0)
    look_down = np.maximum(gy, 0.0)
    look_up = np.maximum(-gy, 0.0)

    jaw = ch("jaw_open") * (1.0 - ch("lips_press"))
    funnel_share = np.clip(jaw / FUNNEL_FULL_AT_JAW, 0.0, 1.0)
    rnd = ch("mouth_round") * (1.0 - ch("lips_press"))
    brow_up, brow_inner = ch("brow_up"), ch("brow_inner_up")

    out = np.zeros((m.shape[0], NUM_ARKIT), np.float32)

    def put(name: str, value: np.ndarray) -> None:
        out[:, ARKIT_INDEX[name]] = value

    # eyes (each eye its own blink; look directions per eye, in/out relative to that eye's nose side)
    put("eyeBlinkLeft", ch("blink_l"))
    put("eyeBlinkRight", ch("blink_r"))
    for side in ("Left", "Right"):
        put(f"eyeLookDown{side}", look_down)
        put(f"eyeLookUp{side}", look_up)
        put(f"eyeSquint{side}", ch("squint"))
        put(f"eyeWide{side}", ch("eye_wide"))
    put("eyeLookOutLeft", look_char_left)    # left eye turns away from the nose
    put("eyeLookInRight", look_char_left)    # right eye turns toward the nose
    put("eyeLookInLeft", look_char_right)
    put("eyeLookOutRight", look_char_right)
    # mouth and jaw
    put("jawOpen", jaw)
    put("mouthFunnel", rnd * funnel_share)
    put("mouthPucker", ch("mouth_round") - rnd * funnel_share)
    for side in ("Left", "Right"):
        put(f"mouthSmile{side}", ch("smile"))
        put(f"mouthFrown{side}", ch("frown"))
        put(f"mouthStretch{side}", ch("mouth_spread"))
        put(f"mouthPress{side}", ch("lips_press"))
        put(f"mouthUpperUp{side}", ch("upper_lip_raise"))
        # brows, cheeks, nose
        put(f"browDown{side}", ch("brow_down"))
        put(f"browOuterUp{side}", brow_up)
        put(f"cheekSquint{side}", CHEEK_FROM_SMILE * ch("smile"))
        put(f"noseSneer{side}", ch("nose_wrinkle"))
    put("browInnerUp", 1.0 - (1.0 - brow_up) * (1.0 - brow_inner))  # either raises the inner brow
    out = np.clip(out, 0.0, 1.0)
    return out.reshape(*lead, NUM_ARKIT)


def arkit_dict(motion_values: np.ndarray) -> dict[str, float]:
    """One frame's weights by name (for logs, JSON and tests)."""
    w = arkit_weights(np.asarray(motion_values).reshape(NUM_CHANNELS))
    return {name: float(v) for name, v in zip(ARKIT_NAMES, w)}


def gaze_angles_deg(motion_values: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Eye rotation (yaw_deg, pitch_deg): yaw + = toward the image's right (the character's left),
    pitch + = down; both eyes rotate together. Floats for one frame, arrays (B,) for a batch."""
    m, lead = _as_batch(motion_values)
    yaw = np.clip(m[:, _C["gaze_x"]], -1.0, 1.0) * GAZE_YAW_DEG_AT_1
    pitch = np.clip(m[:, _C["gaze_y"]], -1.0, 1.0) * GAZE_PITCH_DEG_AT_1
    if lead == ():
        return float(yaw[0]), float(pitch[0])
    return yaw.reshape(lead).astype(np.float32), pitch.reshape(lead).astype(np.float32)


def head_angles_deg(motion_values: np.ndarray) -> tuple[np.ndarray | float, ...]:
    """Head rotation (yaw, pitch, roll) in degrees, motion's signs (see module docstring)."""
    m, lead = _as_batch(motion_values)
    angles = [m[:, _C[n]] for n in ("head_yaw", "head_pitch", "head_roll")]
    if lead == ():
        return tuple(float(a[0]) for a in angles)
    return tuple(a.reshape(lead).astype(np.float32) for a in angles)


def rig_frame_fields(motion_values: np.ndarray) -> dict[str, object]:
    """Everything a `RigFrame` (proto) carries for one frame, ARKit52 format: weights (list of 52
    floats in ARKIT_NAMES order), head_*_deg, gaze_x/gaze_y (-1..1) and gaze_*_deg."""
    v = np.asarray(motion_values, np.float32).reshape(NUM_CHANNELS)
    yaw, pitch, roll = head_angles_deg(v)
    gyaw, gpitch = gaze_angles_deg(v)
    return {
        "weights": [float(x) for x in arkit_weights(v)],
        "head_yaw_deg": yaw, "head_pitch_deg": pitch, "head_roll_deg": roll,
        "gaze_x": float(np.clip(v[_C["gaze_x"]], -1, 1)), "gaze_y": float(np.clip(v[_C["gaze_y"]], -1, 1)),
        "gaze_yaw_deg": gyaw, "gaze_pitch_deg": gpitch,
    }
