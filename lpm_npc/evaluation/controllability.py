"""Measured controllability: does asking for an emotion or a motion primitive change the RENDERED face
the way it should?

For each emotion (at full intensity, `emotion_vector`) and each motion primitive (at its peak,
`offsets(0.5)`), the built-in character is rendered at neutral and at the target, MediaPipe's face
mesh is run on both rendered frames, and a set of landmark measures is compared. Each (item, measure)
pair has an expected sign; it passes when the measured delta has that sign and is at least the
measure's margin (the size of a change the landmarker reliably resolves at the render size).

Measures (MediaPipe face-mesh indices; "face frame" = origin at the midpoint of the two eye centres,
x along the eye line toward the image's right, y perpendicular to it, pointing down; every length is
divided by the inter-ocular distance IOD = distance between the two eye centres, an eye centre being
the midpoint of its two corners 33/133 and 263/362):

  mouth_corners_up  height of the mouth corners (61, 291) above the mouth's vertical centre (the
                    midpoint of the inner-lip centres 13 and 14), / IOD. + = corners up (smile).
  mouth_width       corner-to-corner distance 61-291, / IOD.
  mouth_open        inner-lip gap, mean of the pairs 82-87, 13-14, 312-317, / IOD.
  brow_height       mean height of the upper brow points (70, 63, 105, 66, 107 and 300, 293, 334,
                    296, 336) above their eye centre, / IOD. + = brows up.
  eye_open          mean lid aperture, upper-lid mid 159/386 to lower-lid mid 145/374, / IOD.
  upper_lip_up      height of the upper lip's top (0) relative to the nose base (2): the negated
                    nose-to-lip distance, / IOD. + = upper lip raised toward the nose (disgust).
  head_yaw/pitch/roll
                    head rotation in degrees between the neutral and the target frame: a rigid
                    (Kabsch) fit of the 3-D mesh points of the forehead, nose, eye corners and
                    cheekbones (x right, y down, z away from the camera, as the renderer), decomposed
                    as R = Rz(roll) Ry(yaw) Rx(pitch) like the renderer's head rotation. Signs as in
                    motion.py: yaw + = face turns toward the image's right, pitch + = chin down,
                    roll + = clockwise on screen.
  gaze_x/gaze_y     iris centre (468, 473) relative to its eye centre in the face frame, mean of both
                    eyes, / IOD. + = toward the image's right / down.

Run it:  python -m lpm_npc.evaluation.controllability [--size 256]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np

from lpm_npc.errors import NoFaceError
from lpm_npc.performance.emotion import emotion_vector
from lpm_npc.performance.motion import NUM_CHANNELS, clip_motion
from lpm_npc.types import Emotion

MEASURES: tuple[str, ...] = (
    "mouth_corners_up", "mouth_width", "mouth_open", "brow_height", "eye_open", "upper_lip_up",
    "head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y",
)

# The smallest delta that counts (lengths in IOD, angles in degrees). Landmark jitter between two
# renders of near-identical faces at 256 px is ~0.002 IOD / ~0.3 deg; the margins are a few times that.
MARGINS: dict[str, float] = {
    "mouth_corners_up": 0.008, "mouth_width": 0.008, "mouth_open": 0.01, "brow_height": 0.008,
    "eye_open": 0.004, "upper_lip_up": 0.006,
    "head_yaw": 1.0, "head_pitch": 1.0, "head_roll": 1.0, "gaze_x": 0.01, "gaze_y": 0.008,
}

# What each emotion (full intensity) should measurably do. Only effects the emotion target drives
# strongly enough to be resolved are expected. Not asked for, because they are below what the
# landmarks resolve: the emotions' head angles (1.5..4 deg; the mesh fit recovers only ~0.45 of a
# rendered yaw/pitch and expressions shift its pitch by up to +-2..4 deg), SAD's drooping lids
# (blink 0.12 + squint 0.1 measured +0.003 IOD, i.e. nothing) and the gaze_y of SAD.
EMOTION_EXPECTED: dict[Emotion, dict[str, int]] = {
    Emotion.HAPPY: {"mouth_corners_up": +1, "mouth_width": +1, "eye_open": -1},
    Emotion.SAD: {"mouth_corners_up": -1, "brow_height": +1},
    Emotion.ANGRY: {"brow_height": -1, "eye_open": -1, "mouth_corners_up": -1},
    Emotion.SURPRISED: {"brow_height": +1, "eye_open": +1, "mouth_open": +1},
    Emotion.AFRAID: {"eye_open": +1, "brow_height": +1, "mouth_width": +1},
    Emotion.DISGUSTED: {"upper_lip_up": +1, "brow_height": -1, "eye_open": -1},
}

# mediapipe face-mesh indices
_EYE_R = (33, 133)     # the character's right eye (image left)
_EYE_L = (263, 362)
_CORNERS = (61, 291)
_LIP_CENTRE = (13, 14)
_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
_BROW_R = (70, 63, 105, 66, 107)
_BROW_L = (300, 293, 334, 296, 336)
_LIDS = ((159, 145), (386, 374))
_IRIS = (468, 473)
_NOSE_BASE, _UPPER_LIP_TOP = 2, 0
# rigid points for the head fit: nose bridge and tip, eye corners, cheekbones, nose wings (no forehead:
# the warp carries the skin above the brows with brow_up / brow_inner_up, which biased pitch by -2 deg)
_RIGID = (168, 6, 197, 195, 5, 4, 1, 33, 133, 263, 362, 50, 280, 116, 345, 129, 358, 98, 327)


@dataclass
class FaceMeasures:
    values: dict[str, float]   # the shape measures (no head angles: those are relative)
    points: np.ndarray         # (478, 3) landmarks in px


def _face_frame(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin, x axis, y axis, IOD) of the face frame."""
    er = pts[list(_EYE_R), :2].mean(0)
    el = pts[list(_EYE_L), :2].mean(0)
    x = el - er
    iod = float(np.linalg.norm(x))
    x = x / max(iod, 1e-6)
    y = np.array([-x[1], x[0]])  # x rotated +90 deg in image axes (y down): points down for a level face
    return (er + el) / 2.0, x, y, iod


def shape_measures(points: np.ndarray) -> dict[str, float]:
    """The per-frame measures (module docstring) of one face's landmarks (478, >=2) in pixels."""
    pts = np.asarray(points, np.float64)
    o, ax, ay, iod = _face_frame(pts)

    def fx(i) -> np.ndarray:  # face-frame coordinates of landmarks, in IOD
        p = pts[np.atleast_1d(i), :2] - o
        return np.stack([p @ ax, p @ ay], -1) / iod

    corners = fx(_CORNERS)
    centre_y = fx(_LIP_CENTRE)[:, 1].mean()
    er, el = fx(_EYE_R).mean(0), fx(_EYE_L).mean(0)
    brow = np.concatenate([er[1] - fx(_BROW_R)[:, 1], el[1] - fx(_BROW_L)[:, 1]]).mean()
    lids = np.mean([np.linalg.norm(fx(a)[0] - fx(b)[0]) for a, b in _LIDS])
    gaze = np.mean([fx(_IRIS[0])[0] - er, fx(_IRIS[1])[0] - el], axis=0)
    return {
        "mouth_corners_up": float(centre_y - corners[:, 1].mean()),
        "mouth_width": float(np.linalg.norm(corners[1] - corners[0])),
        "mouth_open": float(np.mean([np.linalg.norm(fx(a)[0] - fx(b)[0]) for a, b in _LIP_PAIRS])),
        "brow_height": float(brow),
        "eye_open": float(lids),
        "upper_lip_up": float(-(fx(_UPPER_LIP_TOP)[0, 1] - fx(_NOSE_BASE)[0, 1])),
        "gaze_x": float(gaze[0]),
        "gaze_y": float(gaze[1]),
    }


def head_rotation_deg(neutral: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Head (yaw, pitch, roll) of `target` relative to `neutral` (478, 3) landmark sets, degrees."""
    a = np.asarray(neutral, np.float64)[list(_RIGID)]
    b = np.asarray(target, np.float64)[list(_RIGID)]
    a = a - a.mean(0)
    b = b - b.mean(0)
    # Kabsch: R minimising |R a_i - b_i|
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    R = u @ np.diag([1.0, 1.0, d]) @ vt
    # R = Rz(roll) Ry(yaw) Rx(pitch) with the renderer's matrices (renderer.rotation_matrices)
    yaw = np.degrees(np.arcsin(np.clip(R[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(R[2, 1], R[2, 2]))
    roll = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
    return {"head_yaw": float(yaw), "head_pitch": float(pitch), "head_roll": float(roll)}


def _targets() -> list[tuple[str, str, np.ndarray, dict[str, int]]]:
    """(kind, name, motion vector, expected signs) for every emotion and every primitive."""
    items: list[tuple[str, str, np.ndarray, dict[str, int]]] = []
    for emo, expected in EMOTION_EXPECTED.items():
        items.append(("emotion", emo.value, emotion_vector(emo, 1.0), expected))
    try:
        from lpm_npc.performance.motion import CHANNEL_INDEX
        from lpm_npc.performance.primitives import PRIMITIVES
    except ImportError:  # pragma: no cover - the primitives library is optional here
        return items
    for name, prim in PRIMITIVES.items():
        v = np.zeros(NUM_CHANNELS, np.float32)
        for ch, off in prim.offsets(0.5).items():
            v[CHANNEL_INDEX[ch]] += off
        items.append(("primitive", name, v, dict(prim.expected)))
    return items


class _Renderer:
    """The built-in character, rendered with the production renderer; landmarks on its frames."""

    def __init__(self, size: int):
        from lpm_npc.character.default import default_portrait_png
        from lpm_npc.character.landmarks import FaceLandmarker, decode_image
        from lpm_npc.character.rig import build_rig
        from lpm_npc.render.renderer import TorchRenderer

        self.size = size
        self.landmarker = FaceLandmarker()
        self.rig = build_rig(decode_image(default_portrait_png()), self.landmarker)
        self.renderer = TorchRenderer()
        self.prepared = self.renderer.prepare(self.rig)

    def render(self, motions: np.ndarray) -> np.ndarray:
        return self.renderer.render(self.prepared, clip_motion(np.asarray(motions, np.float32)),
                                    self.size, self.size)[..., :3]

    def landmarks(self, frame_rgb: np.ndarray) -> np.ndarray:
        return self.landmarker.detect(np.ascontiguousarray(frame_rgb)).points

    def close(self) -> None:
        self.landmarker.close()


def controllability_report(size: int = 256) -> dict:
    """Render neutral + every emotion and primitive target at `size` px, measure, compare.

    Returns {"size", "seconds", "rows": [{item, kind, measure, delta, expected, margin, pass}],
    "passed", "total", "pass_rate", "items": {item: {measure: delta for every measure}},
    "failures": [...]} ; "items" holds all measured deltas (expected or not), for inspection.
    """
    t0 = time.perf_counter()
    r = _Renderer(size)
    try:
        targets = _targets()
        motions = np.stack([np.zeros(NUM_CHANNELS, np.float32)] + [t[2] for t in targets])
        frames = []
        for i in range(0, len(motions), 8):
            frames.extend(r.render(motions[i:i + 8]))
        pts = []
        for f in frames:
            try:
                pts.append(r.landmarks(f))
            except NoFaceError:  # a rendered face the landmarker cannot find: every row of it fails
                pts.append(None)
    finally:
        r.close()
    if pts[0] is None:
        raise NoFaceError("no face found on the rendered neutral frame")
    base = shape_measures(pts[0])
    rows, items = [], {}
    for (kind, name, _, expected), p in zip(targets, pts[1:]):
        if p is None:
            deltas = {k: float("nan") for k in MEASURES}
        else:
            m = shape_measures(p)
            deltas = {k: m[k] - base[k] for k in m}
            deltas.update(head_rotation_deg(pts[0], p))
        items[name] = {k: round(float(deltas[k]), 4) for k in MEASURES}
        for measure, sign in expected.items():
            d = float(deltas[measure])
            ok = bool(np.isfinite(d)) and d * sign >= MARGINS[measure]
            rows.append({"item": name, "kind": kind, "measure": measure, "delta": round(d, 4),
                         "expected": int(sign), "margin": MARGINS[measure], "pass": bool(ok)})
    passed = sum(r_["pass"] for r_ in rows)
    return {
        "size": size,
        "seconds": round(time.perf_counter() - t0, 2),
        "rows": rows,
        "passed": passed,
        "total": len(rows),
        "pass_rate": round(passed / max(1, len(rows)), 3),
        "failures": [f"{r_['item']}.{r_['measure']}: {r_['delta']:+.4f} (expected {'+' if r_['expected'] > 0 else '-'})"
                     for r_ in rows if not r_["pass"]],
        "items": items,
    }


def format_table(report: dict) -> str:
    lines = [f"{'item':<20} {'measure':<17} {'delta':>9} {'exp':>4} {'pass':>5}"]
    for r in report["rows"]:
        lines.append(f"{r['item']:<20} {r['measure']:<17} {r['delta']:>+9.4f} "
                     f"{'+' if r['expected'] > 0 else '-':>4} {'yes' if r['pass'] else 'NO':>5}")
    lines.append(f"passed {report['passed']}/{report['total']} in {report['seconds']} s at {report['size']} px")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = ap.parse_args()
    rep = controllability_report(args.size)
    print(json.dumps(rep, indent=1) if args.json else format_table(rep))


if __name__ == "__main__":
    main()
