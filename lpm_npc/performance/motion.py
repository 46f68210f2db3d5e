"""The motion vector: the only thing the performance model hands the renderer.

One `MotionFrame` per video frame. Expression channels are weights in 0..1 (gaze in -1..1,
head angles in degrees). The renderer turns a frame into pixels from the reference image, so
identity cannot drift however long a session runs.

Conventions (image space, the character faces the camera):
  * `*_l` / `*_r` are the character's own left / right (ARKit convention): the character's left
    eye appears on the image's right side.
  * gaze_x > 0 looks toward the image's right, gaze_y > 0 looks down. 1.0 = the iris at the
    edge of its comfortable travel.
  * head_yaw > 0 turns the face toward the image's right, head_pitch > 0 nods down (chin to
    chest), head_roll > 0 tilts the head clockwise in the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MOTION_CHANNELS: tuple[str, ...] = (
    "jaw_open",         # 0..1: jaw drops, mouth opens (1 = wide open, ~35% of mouth width)
    "mouth_round",      # 0..1: rounded lips (oo/oh/w): corners move in, lips pucker
    "mouth_spread",     # 0..1: spread lips (ee/eh): corners move out, lips thin
    "lips_press",       # 0..1: lips pressed shut (p/b/m): overrides opening
    "smile",            # 0..1: mouth corners up and out, cheeks up
    "frown",            # 0..1: mouth corners down
    "upper_lip_raise",  # 0..1: upper lip up (disgust, sneer)
    "brow_up",          # 0..1: both brows raised (surprise)
    "brow_inner_up",    # 0..1: inner brows raised (sadness, fear)
    "brow_down",        # 0..1: brows lowered and drawn together (anger, focus)
    "blink_l",          # 0..1: character's left upper lid down (1 = closed)
    "blink_r",          # 0..1: character's right upper lid down
    "eye_wide",         # 0..1: upper lids raised
    "squint",           # 0..1: lower lids raised
    "nose_wrinkle",     # 0..1: nose sides up (disgust)
    "gaze_x",           # -1..1
    "gaze_y",           # -1..1
    "head_yaw",         # degrees
    "head_pitch",       # degrees
    "head_roll",        # degrees
)
NUM_CHANNELS = len(MOTION_CHANNELS)
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(MOTION_CHANNELS)}

# Expression channels live in 0..1; the rest have their own ranges.
_LOW = np.array([0.0] * 15 + [-1.0, -1.0, -30.0, -30.0, -30.0], dtype=np.float32)
_HIGH = np.array([1.0] * 15 + [1.0, 1.0, 30.0, 30.0, 30.0], dtype=np.float32)


@dataclass
class MotionFrame:
    """Motion of one video frame at presentation time `t` (seconds on the NPC-audio clock)."""

    t: float
    values: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CHANNELS, np.float32))

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32).reshape(NUM_CHANNELS)

    def __getitem__(self, name: str) -> float:
        return float(self.values[CHANNEL_INDEX[name]])

    def __setitem__(self, name: str, value: float) -> None:
        self.values[CHANNEL_INDEX[name]] = value

    def clipped(self) -> "MotionFrame":
        return MotionFrame(self.t, np.clip(self.values, _LOW, _HIGH))

    @classmethod
    def neutral(cls, t: float = 0.0) -> "MotionFrame":
        return cls(t)

    @classmethod
    def from_dict(cls, t: float, weights: dict[str, float]) -> "MotionFrame":
        frame = cls(t)
        for name, value in weights.items():
            frame[name] = value
        return frame

    def as_dict(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(MOTION_CHANNELS, self.values)}


def clip_motion(values: np.ndarray) -> np.ndarray:
    """Clip a (..., NUM_CHANNELS) array to each channel's valid range."""
    return np.clip(values, _LOW, _HIGH)
