"""Extra reference images of a character: what each one is used for, or why it is not used.

Each extra reference is landmarked and compared with the portrait (both in pixels of their own
image), then given a role:

- ``mouth_interior``: the same person with the mouth open (inner-lip gap >= `MIN_MOUTH_OPEN` of the
  mouth width) and the head roughly frontal. The inside of its inner-lip contour (teeth, tongue,
  cavity) is resampled into a normalised mouth frame -- u along the mouth from one inner corner to
  the other, t from the inner upper lip (0) to the inner lower lip (1) -- together with the
  opening's height profile, and colour-matched to the portrait's skin. The renderer warps it into
  the current inner-lip contour instead of the drawn cavity and teeth (see render/mouth.py).
  When several references qualify, the widest frontal opening wins.
- ``head_turn_left`` / ``head_turn_right``: the same person with the head turned by
  `MIN_TURN_YAW`..`MAX_TURN_YAW` degrees relative to the portrait (to the character's own left /
  right). Its landmarks (aligned into the rig crop) and yaw are recorded in the rig; the renderer
  does NOT use them yet (the report says so).
- ``unused: <reason>``: no face, not the same person, turned too far, or nothing the portrait does not
  already show.

The same-person check is rough, not face recognition: face-mesh geometry does not separate people
(the mesh regresses to an average face), so it compares the appearance of the eye/nose region after
aligning both faces on the eyes and nose (normalised correlation of band-passed grey levels). It
rejects clearly different faces; two similar-looking people can pass it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from lpm_npc.character.geometry import LIPS_INNER_LOWER, LIPS_INNER_UPPER, _mouth_colours
from lpm_npc.character.landmarks import FaceLandmarker
from lpm_npc.errors import InvalidInputError, NoFaceError
from lpm_npc.render.contour import TABLE_SIZE, Frame, height_table
from lpm_npc.render.mouth import catmull_rom

log = logging.getLogger(__name__)

MIN_MOUTH_OPEN = 0.12     # inner-lip gap at the centre / mouth width for a mouth-interior reference
MAX_MOUTH_YAW = 10.0      # degrees: a mouth-interior reference must be about as frontal as this
MIN_TURN_YAW = 4.0        # degrees relative to the portrait: below this a reference is no head turn
MAX_TURN_YAW = 25.0       # ... above this it is turned too far to be of use
MIN_SAME_PERSON = 0.45    # appearance correlation of the aligned eye/nose region
T_RANGE = (0.02, 0.93)     # share of the reference's opening (upper lip .. lower lip) resampled
INTERIOR_ROWS = 64        # texture rows t = 0 (inner upper lip) .. 1 (inner lower lip); columns = TABLE_SIZE

# rigid face-mesh points (eye corners, nose, upper face outline, cheekbones): pose without expression
_RIGID = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 129, 358, 98, 327, 2, 10, 338, 297, 109, 67, 234,
          454, 127, 356, 93, 323, 116, 345, 50, 280)
_CANON = 96  # side of the aligned face patch used by the same-person check


@dataclass
class MouthInterior:
    """Mouth interior texture taken from a reference (see module docstring)."""

    texture: np.ndarray   # (INTERIOR_ROWS, TABLE_SIZE, 3) uint8: rows t 0..1, columns u -1..1
    gap: np.ndarray       # (TABLE_SIZE,) float32 opening height at each u, in mouth widths

    def to_arrays(self, prefix: str = "ref_mouth_") -> dict[str, np.ndarray]:
        return {prefix + "texture": self.texture, prefix + "gap": self.gap}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "ref_mouth_") -> "MouthInterior | None":
        if prefix + "texture" not in arrays:
            return None
        return cls(texture=np.asarray(arrays[prefix + "texture"], np.uint8),
                   gap=np.asarray(arrays[prefix + "gap"], np.float32))


@dataclass
class HeadTurn:
    """A same-person reference with the head turned (recorded; not used by the renderer yet)."""

    yaw_deg: float            # + = toward the character's own left
    landmarks: np.ndarray     # (478, 3) float32, aligned into the rig crop (similarity on rigid points)


@dataclass
class ReferenceReport:
    index: int                                   # 1-based position among the extra references
    roles: list[str] = field(default_factory=list)
    reason: str = ""                             # why it is unused (when roles is empty)
    same_person: float | None = None
    yaw_deg: float | None = None
    mouth_open: float | None = None

    def describe(self) -> str:
        return "; ".join(self.roles) if self.roles else f"unused: {self.reason}"


@dataclass
class ReferenceAnalysis:
    interior: MouthInterior | None
    turns: list[HeadTurn]
    reports: list[ReferenceReport]

    @property
    def references_used(self) -> list[str]:
        """One entry per extra reference, in order: its roles, or 'unused: <reason>'."""
        return [r.describe() for r in self.reports]


# ------------------------------------------------------------------------------------------- checks
def _norm_rigid(p: np.ndarray) -> np.ndarray:
    q = p[list(_RIGID), :3].astype(np.float64)
    q = q - q.mean(0)
    return q / np.sqrt((q ** 2).sum(1).mean())


def relative_yaw(portrait: np.ndarray, ref: np.ndarray) -> float:
    """Yaw (degrees) of the reference's head relative to the portrait's, + = toward the character's left.

    3D Procrustes of the rigid mesh points (mediapipe z is in the same pixel scale as x).
    """
    A, B = _norm_rigid(portrait), _norm_rigid(ref)
    U, _, Vt = np.linalg.svd(A.T @ B)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = (U @ D @ Vt).T          # B ~ A @ R.T: rotation taking the portrait's pose to the reference's
    # x right, y down, z into the image: the nose (z < 0) moving to +x (image right) is a turn to the
    # character's own left
    return float(np.degrees(np.arctan2(-R[0, 2], R[2, 2])))


def _aligned_patch(image: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Unit-norm band-passed grey patch of the eye/nose region, aligned on eyes and nose."""
    n = _CANON
    le = p[[33, 133], :2].mean(0)
    re = p[[362, 263], :2].mean(0)
    nose = p[[1, 2, 98, 327], :2].mean(0)
    A = cv2.getAffineTransform(np.float32([le, re, nose]),
                               np.float32([[0.3 * n, 0.35 * n], [0.7 * n, 0.35 * n], [0.5 * n, 0.62 * n]]))
    scale = float(np.linalg.norm(re - le)) / (0.4 * n)
    src = image
    if scale > 2.0:  # pre-blur large faces: warpAffine has no area filter
        src = cv2.GaussianBlur(image, (0, 0), 0.5 * scale)
    g = cv2.cvtColor(cv2.warpAffine(src, A, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
                     cv2.COLOR_RGB2GRAY).astype(np.float32)
    hp = cv2.GaussianBlur(g - cv2.GaussianBlur(g, (0, 0), n / 12), (0, 0), 1.0)
    yy, xx = np.mgrid[0:n, 0:n]
    m = (((xx - 0.5 * n) / (0.42 * n)) ** 2 + ((yy - 0.45 * n) / (0.36 * n)) ** 2) < 1
    v = hp[m] - hp[m].mean()
    return v / (np.linalg.norm(v) + 1e-6)


def same_person_score(image_a: np.ndarray, lm_a: np.ndarray, image_b: np.ndarray, lm_b: np.ndarray) -> float:
    """Rough appearance similarity (-1..1) of two faces' eye/nose regions; >= MIN_SAME_PERSON counts as same."""
    return float(_aligned_patch(image_a, lm_a) @ _aligned_patch(image_b, lm_b))


def mouth_open_ratio(p: np.ndarray) -> float:
    """Inner-lip gap at the mouth centre / mouth width."""
    mw = float(np.linalg.norm(p[291, :2] - p[61, :2]))
    return float(np.linalg.norm(p[14, :2] - p[13, :2])) / max(mw, 1e-3) if p[14, 1] > p[13, 1] else 0.0


# -------------------------------------------------------------------------------- mouth interior
def extract_mouth_interior(image: np.ndarray, p: np.ndarray, colour_gain: np.ndarray | None = None) -> MouthInterior:
    """Resample the inside of the inner-lip contour of `image` (landmarks `p`) into the normalised frame.

    Uses the same frame and rounded contours as the render-time mouth layer, so a texture rendered
    into the same contour lands where it came from.
    """
    up = catmull_rom(p[list(LIPS_INNER_UPPER), :2][None].astype(np.float64))
    lo = catmull_rom(p[list(LIPS_INNER_LOWER), :2][None].astype(np.float64))
    fr = Frame(up[:, 0], up[:, -1])
    hts = height_table(fr, [up, lo])[0, :, 0]                       # (2, T) v of the upper / lower lip
    vu, vl = hts[0].astype(np.float64), np.maximum(hts[1], hts[0]).astype(np.float64)
    mw = float(np.linalg.norm(p[291, :2] - p[61, :2]))
    u = np.linspace(-1.0, 1.0, TABLE_SIZE)
    # the inner-lip landmarks of an open mouth sit a little inside the lips (mostly the lower one):
    # stop short of them so the texture holds no lip
    t = np.linspace(T_RANGE[0], T_RANGE[1], INTERIOR_ROWS)
    v = vu[None] + t[:, None] * (vl - vu)[None]                     # (H, T)
    pu = u[None] * fr.half[0]
    xs = fr.o[0, 0] + pu * fr.ex[0, 0] + v * fr.ey[0, 0]
    ys = fr.o[0, 1] + pu * fr.ex[0, 1] + v * fr.ey[0, 1]
    # texture px per image px along the mouth: blur a large source first (remap has no area filter)
    shrink = 2 * fr.half[0] / TABLE_SIZE
    src = cv2.GaussianBlur(image, (0, 0), 0.45 * shrink) if shrink > 1.5 else image
    tex = cv2.remap(src, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    if colour_gain is not None:
        tex = tex * colour_gain[None, None]
    return MouthInterior(texture=np.clip(tex + 0.5, 0, 255).astype(np.uint8),
                         gap=((T_RANGE[1] - T_RANGE[0]) * (vl - vu) / max(mw, 1e-3)).astype(np.float32))


def _colour_gain(portrait: np.ndarray, lm_p: np.ndarray, ref: np.ndarray, lm_r: np.ndarray) -> np.ndarray:
    """Per-channel gain that brings the reference's skin to the portrait's (half per channel, half grey)."""
    skin_p = _mouth_colours(portrait, lm_p)[1].astype(np.float64)
    skin_r = _mouth_colours(ref, lm_r)[1].astype(np.float64)
    lum = np.array([0.299, 0.587, 0.114])
    grey = float(skin_p @ lum) / max(float(skin_r @ lum), 1.0)
    per = skin_p / np.maximum(skin_r, 1.0)
    return np.clip(0.5 * per + 0.5 * grey, 0.7, 1.4).astype(np.float32)


def _align_to(portrait_lm: np.ndarray, ref_lm: np.ndarray) -> np.ndarray:
    """Reference landmarks mapped into the portrait's pixels by a 2D similarity on the rigid points."""
    M, _ = cv2.estimateAffinePartial2D(ref_lm[list(_RIGID), :2].astype(np.float32),
                                       portrait_lm[list(_RIGID), :2].astype(np.float32))
    out = ref_lm.astype(np.float32).copy()
    if M is None:
        return out
    out[:, :2] = ref_lm[:, :2] @ M[:, :2].T + M[:, 2]
    out[:, 2] *= float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    return out


# ------------------------------------------------------------------------------------ analysis
def analyse_references(portrait: np.ndarray, portrait_lm: np.ndarray, refs: Sequence[np.ndarray],
                       landmarker: FaceLandmarker) -> ReferenceAnalysis:
    """Give every extra reference a role (or a reason why it has none); build what the roles need.

    `portrait` is the rig crop and `portrait_lm` its landmarks (the rig's own frame).
    """
    reports: list[ReferenceReport] = []
    mouth_candidates: list[tuple[float, int, np.ndarray, np.ndarray]] = []
    turns: list[HeadTurn] = []
    for i, ref in enumerate(refs):
        rep = ReferenceReport(index=i + 1)
        reports.append(rep)
        img = np.asarray(ref)
        try:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise InvalidInputError(f"expected an RGB uint8 image, got {img.shape} {img.dtype}")
            lm = landmarker.detect(img).points
        except NoFaceError:
            rep.reason = "no face found"
            continue
        except InvalidInputError as exc:
            rep.reason = f"not a usable image ({exc})"
            continue
        rep.same_person = same_person_score(portrait, portrait_lm, img, lm)
        rep.yaw_deg = relative_yaw(portrait_lm, lm)
        rep.mouth_open = mouth_open_ratio(lm)
        # a turned head changes the aligned patch: accept less with more yaw (down to 0.25 at 20 degrees)
        need = MIN_SAME_PERSON - 0.01 * min(abs(rep.yaw_deg), 20.0)
        if rep.same_person < need:
            rep.reason = f"not the same person (appearance match {rep.same_person:.2f} < {need:.2f})"
            continue
        yaw = rep.yaw_deg
        if abs(yaw) > MAX_TURN_YAW:
            rep.reason = f"head turned too far ({yaw:+.0f} degrees from the portrait)"
            continue
        if rep.mouth_open >= MIN_MOUTH_OPEN and abs(yaw) <= MAX_MOUTH_YAW:
            mouth_candidates.append((rep.mouth_open - 0.01 * abs(yaw), i, img, lm))
        if abs(yaw) >= MIN_TURN_YAW:
            side = "left" if yaw > 0 else "right"
            rep.roles.append(f"head_turn_{side} (recorded, not yet used)")
            turns.append(HeadTurn(yaw_deg=yaw, landmarks=_align_to(portrait_lm, lm)))
    interior = None
    if mouth_candidates:
        mouth_candidates.sort(key=lambda c: -c[0])
        _, best, img, lm = mouth_candidates[0]
        interior = extract_mouth_interior(img, lm, _colour_gain(portrait, portrait_lm, img, lm))
        reports[best].roles.insert(0, "mouth_interior")
        for _, j, _, _ in mouth_candidates[1:]:
            if not reports[j].roles:
                reports[j].reason = f"another reference (#{best + 1}) supplies the mouth interior"
    for rep in reports:
        if not rep.roles and not rep.reason:
            if rep.mouth_open is not None and rep.mouth_open >= MIN_MOUTH_OPEN:
                rep.reason = f"mouth open but head turned {rep.yaw_deg:+.0f} degrees (interior needs a frontal face)"
            else:
                rep.reason = ("same person, nothing new (mouth closed or barely open, head about as turned as "
                              "in the portrait)")
    for rep in reports:
        log.info("extra reference %d: %s (same person %s, yaw %s, mouth open %s)", rep.index, rep.describe(),
                 None if rep.same_person is None else f"{rep.same_person:.2f}",
                 None if rep.yaw_deg is None else f"{rep.yaw_deg:+.1f}",
                 None if rep.mouth_open is None else f"{rep.mouth_open:.2f}")
    return ReferenceAnalysis(interior=interior, turns=turns, reports=reports)
