"""Emotion and dialogue-phase target expressions, and eased transitions between them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lpm_npc.performance.motion import CHANNEL_INDEX, NUM_CHANNELS
from lpm_npc.types import Emotion, Phase


def _vec(**weights: float) -> np.ndarray:
    v = np.zeros(NUM_CHANNELS, np.float32)
    for name, value in weights.items():
        v[CHANNEL_INDEX[name]] = value
    return v


# Full-intensity target expressions (added on top of the neutral face).
EMOTION_TARGETS: dict[Emotion, np.ndarray] = {
    Emotion.NEUTRAL: _vec(),
    Emotion.HAPPY: _vec(smile=0.8, squint=0.35, brow_up=0.1, head_pitch=-1.0),
    # Negative emotions push harder: many portraits smile at rest, and the face must still read
    # as sad / angry / disgusted at billboard size (see docs/emotions_contact_sheet.jpg).
    Emotion.SAD: _vec(frown=1.0, brow_inner_up=0.95, squint=0.15, gaze_y=0.3, head_pitch=5.0, blink_l=0.2, blink_r=0.2,
                      lips_press=0.2),
    Emotion.ANGRY: _vec(brow_down=1.0, lips_press=0.5, squint=0.45, frown=0.55, nose_wrinkle=0.3, head_pitch=2.5),
    Emotion.SURPRISED: _vec(brow_up=0.85, eye_wide=0.7, jaw_open=0.18, mouth_round=0.15, head_pitch=-2.0),
    Emotion.AFRAID: _vec(brow_inner_up=0.75, brow_up=0.3, eye_wide=0.6, mouth_spread=0.45, jaw_open=0.06, head_pitch=1.5),
    Emotion.DISGUSTED: _vec(nose_wrinkle=0.95, upper_lip_raise=0.9, brow_down=0.5, squint=0.35, frown=0.5, head_yaw=-3.0,
                            head_pitch=-1.0),
}

# Phase poses (gaze, head, brows); blended with an exponential follower.
PHASE_POSES: dict[Phase, np.ndarray] = {
    Phase.IDLE: _vec(),
    Phase.LISTENING: _vec(head_roll=3.0, head_pitch=1.0, brow_up=0.05),
    Phase.THINKING: _vec(gaze_x=0.45, gaze_y=-0.4, brow_down=0.2, head_roll=-2.0, head_yaw=3.0, head_pitch=-1.5),
    Phase.SPEAKING: _vec(),
}

# Channels where the phase pose replaces idle gaze wander instead of adding to it.
GAZE = np.array([CHANNEL_INDEX["gaze_x"], CHANNEL_INDEX["gaze_y"]])


def ease_in_out(u: float) -> float:
    """Smoothstep: 0 -> 1 with zero slope at both ends; 0.5 at u = 0.5."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


@dataclass
class Transition:
    """An eased move from `start` to `target` over [t0, t0 + duration]."""

    start: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CHANNELS, np.float32))
    target: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CHANNELS, np.float32))
    t0: float = 0.0
    duration: float = 0.0

    def value(self, t: float) -> np.ndarray:
        if self.duration <= 0.0 or t >= self.t0 + self.duration:
            return self.target
        return self.start + (self.target - self.start) * ease_in_out((t - self.t0) / self.duration)

    def retarget(self, t: float, target: np.ndarray, duration: float) -> None:
        self.start = np.array(self.value(t), np.float32)
        self.target = np.asarray(target, np.float32)
        self.t0, self.duration = t, max(float(duration), 0.0)


def emotion_vector(emotion: Emotion, intensity: float) -> np.ndarray:
    return EMOTION_TARGETS[emotion] * float(np.clip(intensity, 0.0, 1.5))
