"""Named motion primitives that free-text direction maps onto ("nods slowly" -> nod_slow).

Each primitive is a small, deterministic offset on top of the performance (added to the motion
vector, in the units of `MOTION_CHANNELS`), with:

  * `descriptions`: phrases the sentence-embedding matcher compares a direction clause against;
  * `duration_s`: how long one occurrence lasts (0 = held until replaced, e.g. "looks away");
  * `offsets(u)`: the channel offsets at progress u in 0..1 (u = 0.5 is at or near the peak; a
    held primitive ramps in over u in 0..0.5 and then holds);
  * `expected`: the sign each landmark measure should take at the peak, for the controllability
    benchmark (image space: head_yaw + = face turns toward image right, head_pitch + = chin down,
    gaze_y + = looking down).

Held primitives in the same `group` replace each other (a new gaze hold replaces the old one, a new
mood replaces the old mood). Mood primitives ("nervous", "calm") also change the idle life through
`idle_rate` (blink-rate multiplier) and `saccade_interval_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lpm_npc.performance.motion import CHANNEL_INDEX

MEASURES: tuple[str, ...] = (
    "mouth_corners_up", "mouth_width", "mouth_open", "brow_height", "eye_open",
    "head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y",
)

# Profiles: how the peak offsets evolve over progress u in 0..1 (all are 1.0 at u = 0.5).
PROFILES: tuple[str, ...] = ("bump", "plateau", "osc", "swing", "held")


def _smooth(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


@dataclass(frozen=True)
class MotionPrimitive:
    """One named, parameterised motion; see the module docstring."""

    name: str
    descriptions: tuple[str, ...]
    duration_s: float
    expected: dict[str, int] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)   # channel -> offset at the peak
    profile: str = "bump"
    cycles: int = 1            # osc / swing: number of half-cycles (odd, so u = 0.5 is a peak)
    group: str = ""            # held primitives of one group replace each other
    idle_rate: float | None = None          # mood: blink-rate multiplier
    saccade_interval_s: float | None = None  # mood: mean time between gaze saccades

    def __post_init__(self) -> None:
        for ch in self.peak:
            if ch not in CHANNEL_INDEX:
                raise ValueError(f"primitive {self.name}: unknown channel {ch!r}")
        for m, s in self.expected.items():
            if m not in MEASURES or s not in (-1, 1):
                raise ValueError(f"primitive {self.name}: bad expectation {m!r}={s!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"primitive {self.name}: unknown profile {self.profile!r}")
        if (self.profile == "held") != (self.duration_s == 0):
            raise ValueError(f"primitive {self.name}: held primitives (and only they) have duration 0")

    @property
    def held(self) -> bool:
        return self.duration_s == 0

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.peak)

    def envelope(self, u: float) -> float:
        """The scalar shape at progress u (channels with an oscillating profile use it signed)."""
        u = float(u)
        if self.profile == "held":
            return _smooth(2.0 * u)
        if u <= 0.0 or u >= 1.0:
            return 0.0
        if self.profile == "bump":
            return math.sin(math.pi * u) ** 2
        if self.profile == "plateau":          # attack 20 %, hold, release over the last 30 %
            if u < 0.2:
                return _smooth(u / 0.2)
            if u > 0.7:
                return _smooth((1.0 - u) / 0.3)
            return 1.0
        taper = 0.6 + 0.4 * math.sin(math.pi * u)
        if self.profile == "osc":              # repeated dips one way (nods): 0..1
            return math.sin(math.pi * self.cycles * u) ** 2 * taper
        # swing: alternating both ways (head shake): -1..1, +1 at u = 0.5 for cycles = 1, 5, 9 ...
        return math.sin(math.pi * self.cycles * u) * taper

    def offsets(self, u: float) -> dict[str, float]:
        """Channel offsets at progress u in 0..1 (u = 0.5 ~ peak)."""
        e = self.envelope(u)
        return {ch: v * e for ch, v in self.peak.items()}


def _p(name: str, duration_s: float, descriptions: tuple[str, ...], peak: dict[str, float],
       expected: dict[str, int], **kw) -> MotionPrimitive:
    return MotionPrimitive(name=name, descriptions=descriptions, duration_s=duration_s,
                           expected=expected, peak=peak, **kw)


_LIBRARY: tuple[MotionPrimitive, ...] = (
    # ---- head gestures
    _p("nod", 1.0, ("nods", "nods yes", "nods in agreement", "gives a quick nod", "nodding along",
                    "bobs her head in agreement", "nods quickly", "a few brisk nods"),
       {"head_pitch": 5.0}, {"head_pitch": +1}, profile="osc", cycles=3),
    _p("nod_slow", 2.4, ("nods slowly", "a slow deliberate nod", "nods thoughtfully", "slowly nodding",
                         "nods gravely"),
       {"head_pitch": 6.0}, {"head_pitch": +1}, profile="osc", cycles=3),
    _p("head_shake", 1.4, ("shakes head", "shakes his head in disagreement",
                           "head shake, refusing", "shaking head in disbelief"),
       {"head_yaw": 8.0}, {"head_yaw": +1}, profile="swing", cycles=5),
    _p("tilt_head", 0, ("tilts head", "cocks head to one side", "tilts her head quizzically",
                        "head tilted, puzzled", "curious, intrigued",
                        "tilts head with curiosity"),
       {"head_roll": 7.0, "brow_up": 0.1}, {"head_roll": +1}, profile="held", group="tilt"),
    # ---- gaze
    _p("look_away", 0, ("looks away", "averts gaze", "avoids eye contact", "turns her eyes away",
                        "looks off to the side"),
       {"gaze_x": 0.75, "head_yaw": 6.0}, {"gaze_x": +1, "head_yaw": +1}, profile="held", group="gaze"),
    _p("look_down", 0, ("looks down", "looks at the floor", "lowers her gaze", "eyes downcast",
                        "stares at the ground", "hangs her head"),
       {"gaze_y": 0.7, "head_pitch": 6.0}, {"gaze_y": +1, "head_pitch": +1}, profile="held", group="gaze"),
    _p("look_up", 0, ("looks up", "gazes upward", "looks up at the sky", "raises his eyes to the ceiling"),
       # the upper lids follow an upward gaze (eye_wide), or the lid hides the iris's travel
       {"gaze_y": -0.8, "head_pitch": -5.0, "brow_up": 0.15, "eye_wide": 0.45}, {"gaze_y": -1, "head_pitch": -1},
       profile="held", group="gaze"),
    _p("eye_contact", 0, ("looks at you", "makes eye contact", "looks back at the player",
                          "meets your gaze", "looks straight ahead"),
       {"gaze_x": 0.0, "gaze_y": 0.0}, {}, profile="held", group="gaze"),
    _p("glance_side", 1.2, ("glances to the side", "quick glance sideways", "a sidelong glance",
                            "shoots a look to the left", "glances over"),
       {"gaze_x": -0.8}, {"gaze_x": -1}, profile="plateau"),
    _p("roll_eyes", 1.3, ("rolls eyes", "rolls her eyes in annoyance", "eye roll, exasperated"),
       {"gaze_y": -1.0, "gaze_x": 0.25, "brow_up": 0.15, "eye_wide": 0.45}, {"gaze_y": -1}, profile="bump"),
    # ---- brows and eyes
    _p("blink", 0.7, ("blinks", "blinks a few times", "blinks rapidly in disbelief", "flutters her eyelids"),
       {"blink_l": 1.0, "blink_r": 1.0}, {"eye_open": -1}, profile="osc", cycles=3),
    _p("wink", 0.6, ("winks", "gives a wink", "winks knowingly", "a cheeky wink"),
       {"blink_l": 1.0, "squint": 0.2, "smile": 0.25, "head_roll": -2.0}, {"eye_open": -1, "mouth_corners_up": +1},
       profile="bump"),
    _p("raise_eyebrows", 1.2, ("raises eyebrows", "raises an eyebrow", "lifts her brows",
                               "eyebrows go up", "brows raised in interest"),
       {"brow_up": 0.8, "eye_wide": 0.2}, {"brow_height": +1, "eye_open": +1}, profile="plateau"),
    _p("frown_brows", 2.0, ("furrows brow", "frowns in concentration", "knits his brows",
                            "scowls", "brows drawn together"),
       {"brow_down": 0.7, "squint": 0.15}, {"brow_height": -1}, profile="plateau"),
    _p("wide_eyes", 1.5, ("eyes widen", "wide-eyed", "stares wide-eyed", "opens her eyes wide"),
       {"eye_wide": 0.8, "brow_up": 0.3}, {"eye_open": +1, "brow_height": +1}, profile="plateau"),
    _p("squint_suspicious", 2.5, ("squints suspiciously", "narrows her eyes", "eyes narrowed in suspicion",
                                  "gives a suspicious look", "distrustful squint"),
       {"squint": 0.6, "brow_down": 0.3, "blink_l": 0.15, "blink_r": 0.15},
       {"eye_open": -1, "brow_height": -1}, profile="plateau"),
    # ---- mouth
    _p("smirk", 2.0, ("smirks", "a smug half smile", "smirking knowingly", "a sly grin",
                      "crooked smile", "smug expression"),
       {"smile": 0.35, "head_roll": -3.0, "squint": 0.1}, {"mouth_corners_up": +1, "head_roll": -1},
       profile="plateau"),
    _p("smile_small", 2.5, ("smiles slightly", "a small smile", "a faint smile", "smiles warmly",
                            "gentle smile", "smiles", "grins"),
       {"smile": 0.45, "squint": 0.1}, {"mouth_corners_up": +1, "mouth_width": +1}, profile="plateau"),
    _p("pout", 2.0, ("pouts", "purses her lips", "sulky pout", "pushes his lips out"),
       {"frown": 0.5, "mouth_round": 0.35}, {"mouth_corners_up": -1, "mouth_width": -1},
       profile="plateau"),
    _p("gasp", 1.2, ("gasps", "mouth falls open", "jaw drops", "sharp intake of breath",
                     "opens mouth in shock"),
       {"jaw_open": 0.45, "eye_wide": 0.5, "brow_up": 0.5}, {"mouth_open": +1, "eye_open": +1},
       profile="bump"),
    # ---- body / posture (as far as the head shows it)
    _p("lean_in", 0, ("leans in", "leans closer, curious", "leans forward attentively",
                      "moves in to listen closely"),
       {"head_pitch": 3.0, "eye_wide": 0.35, "brow_up": 0.15}, {"head_pitch": +1, "eye_open": +1},
       profile="held", group="posture"),
    _p("sigh", 1.8, ("sighs", "lets out a sigh", "sighs wearily", "a deep resigned sigh"),
       {"brow_inner_up": 0.6, "head_pitch": 5.0, "blink_l": 0.3, "blink_r": 0.3},
       {"head_pitch": +1, "eye_open": -1}, profile="bump"),
    # ---- persistent moods (held; also change idle blinking and gaze wander)
    _p("nervous", 0, ("nervous", "anxious", "jittery and uneasy", "fidgety, on edge", "tense and worried"),
       {"brow_inner_up": 0.2, "eye_wide": 0.15}, {"brow_height": +1, "eye_open": +1},
       profile="held", group="mood", idle_rate=1.6, saccade_interval_s=0.9),
    _p("calm", 0, ("calm", "relaxed", "at ease", "serene and composed", "unbothered"),
       {"blink_l": 0.12, "blink_r": 0.12, "smile": 0.08}, {"eye_open": -1},
       profile="held", group="mood", idle_rate=0.8, saccade_interval_s=2.0),
)

PRIMITIVES: dict[str, MotionPrimitive] = {p.name: p for p in _LIBRARY}

__all__ = ["MEASURES", "PRIMITIVES", "MotionPrimitive"]
