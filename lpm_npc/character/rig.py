"""The character rig: a square bust crop of the portrait plus everything the renderer precomputes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from lpm_npc.character.geometry import FACE_OVAL, RigGeometry, build_geometry
from lpm_npc.character.landmarks import FaceLandmarker, FaceLandmarks
from lpm_npc.character.references import HeadTurn, MouthInterior, analyse_references
from lpm_npc.errors import InvalidInputError, NoFaceError

log = logging.getLogger(__name__)

RIG_FORMAT_VERSION: int = 5  # 4: extra references analysed (mouth interior, head turns, references_used); 5: stronger frown
MIN_RIG_SIZE = 512
MAX_RIG_SIZE = 1024
FACE_SHARE = 0.40  # face width / crop width
FACE_RAISE = 0.08  # face centre sits this share of the crop above the crop centre
MAX_FACE_SHARE = 0.6  # a tight source may shrink the crop until the face fills this share of it
MAX_SHIFT = 0.12  # ... or move the face off its place in the crop by this share of the side


@dataclass
class CharacterRig:
    """One character, ready for the renderer (see module docstring)."""

    image: np.ndarray        # (S, S, 3) uint8 RGB bust crop
    matte: np.ndarray        # (S, S) uint8 person matte
    landmarks: np.ndarray    # (478, 3) float32 in crop pixels
    face_score: float
    geometry: RigGeometry
    num_references: int = 1
    # what each extra reference was used for, in order: roles ("mouth_interior",
    # "head_turn_left (recorded, not yet used)", ...) or "unused: <reason>" (see character/references.py)
    references_used: list[str] = field(default_factory=list)
    mouth_interior: MouthInterior | None = None   # from an open-mouth reference; None -> drawn interior
    head_turns: list[HeadTurn] = field(default_factory=list)  # recorded, not used by the renderer yet

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def save(self, path: str | os.PathLike) -> None:
        """Write the rig to one .npz file (no pickle)."""
        arrays = {
            "format_version": np.array(RIG_FORMAT_VERSION, np.int32),
            "image": self.image,
            "matte": self.matte,
            "landmarks": self.landmarks,
            "face_score": np.array(self.face_score, np.float64),
            "num_references": np.array(self.num_references, np.int32),
            "references_used": np.array(list(self.references_used), dtype=np.str_).reshape(-1),
            "ref_turn_yaw": np.array([t.yaw_deg for t in self.head_turns], np.float32).reshape(-1),
            "ref_turn_landmarks": np.array([t.landmarks for t in self.head_turns], np.float32).reshape(-1, 478, 3),
        }
        if self.mouth_interior is not None:
            arrays.update(self.mouth_interior.to_arrays())
        arrays.update(self.geometry.to_arrays())
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharacterRig":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        version = int(data.get("format_version", -1))
        if version != RIG_FORMAT_VERSION:
            raise InvalidInputError(
                f"rig file {path} has format version {version}, expected {RIG_FORMAT_VERSION}: rebuild the rig")
        return cls(
            image=data["image"], matte=data["matte"], landmarks=data["landmarks"].astype(np.float32),
            face_score=float(data["face_score"]), geometry=RigGeometry.from_arrays(data),
            num_references=int(data["num_references"]),
            references_used=[str(x) for x in data["references_used"]],
            mouth_interior=MouthInterior.from_arrays(data),
            head_turns=[HeadTurn(yaw_deg=float(y), landmarks=lm)
                        for y, lm in zip(data["ref_turn_yaw"], data["ref_turn_landmarks"])])


def _crop_box(lm: FaceLandmarks) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side) in source pixels around the face."""
    oval = lm.points[list(FACE_OVAL), :2]
    fw = float(oval[:, 0].max() - oval[:, 0].min())
    fh = float(oval[:, 1].max() - oval[:, 1].min())
    face = max(fw, 0.8 * fh)
    side = face / FACE_SHARE
    cx = float(oval[:, 0].mean())
    cy = float((oval[:, 1].max() + oval[:, 1].min()) / 2) + FACE_RAISE * side
    return cx, cy, side


def _fit_inside(cx: float, cy: float, side: float, face: float, w: int, h: int) -> tuple[float, float, float]:
    """Shrink and shift the crop box toward the source image so that it needs as little fill as possible.

    The face may grow up to `MAX_FACE_SHARE` of the crop and move by `MAX_SHIFT` of the side; what
    still falls outside the source after that is filled by `_crop`.
    """
    side = max(min(side, float(min(w, h))), face / MAX_FACE_SHARE)
    half = side / 2
    lim = MAX_SHIFT * side
    nx = float(np.clip(cx, half, w - half)) if w >= side else w / 2
    ny = float(np.clip(cy, half, h - half)) if h >= side else h / 2
    return cx + float(np.clip(nx - cx, -lim, lim)), cy + float(np.clip(ny - cy, -lim, lim)), side


def _crop(image: np.ndarray, cx: float, cy: float, side: float, out: int) -> np.ndarray:
    """Square crop of side `side` around (cx, cy) resampled to `out` px.

    Where the crop leaves the source, the image is continued by reflection that blurs with the
    distance from the source edge (no replicated-border streaks, no mirrored sharp features).
    """
    s = out / side
    M = np.array([[s, 0, out / 2 - s * cx], [0, s, out / 2 - s * cy]], np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    src = image
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-shrink, then warp
        f = max(1, int(1 / s))
        if f > 1:
            src = cv2.resize(image, (image.shape[1] // f, image.shape[0] // f), interpolation=cv2.INTER_AREA)
            M[:, :2] *= f
        interp = cv2.INTER_LINEAR
    crop = cv2.warpAffine(src, M, (out, out), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    # distance (output px) from the source area
    Mi = cv2.invertAffineTransform(M)
    ys, xs = np.mgrid[0:out, 0:out].astype(np.float32)
    sx = Mi[0, 0] * xs + Mi[0, 1] * ys + Mi[0, 2]
    sy = Mi[1, 0] * xs + Mi[1, 1] * ys + Mi[1, 2]
    H, W = src.shape[:2]
    ext = np.maximum(np.maximum(-sx, sx - (W - 1)), np.maximum(-sy, sy - (H - 1)))
    ext = np.maximum(ext, 0.0) / (abs(Mi[0, 0]) + 1e-9)
    if ext.max() <= 0:
        return crop
    k = max(3, int(0.06 * out) | 1)
    small = cv2.resize(crop, (out // 4, out // 4), interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(cv2.GaussianBlur(small, (0, 0), k / 4.0), (out, out), interpolation=cv2.INTER_LINEAR)
    a = np.clip(ext / (0.05 * out), 0.0, 1.0)[..., None]
    a = a * a * (3 - 2 * a)
    return np.clip(crop * (1 - a) + blurred * a + 0.5, 0, 255).astype(np.uint8)


def build_rig(image_rgb: np.ndarray, landmarker: FaceLandmarker,
              extra_references: Sequence[np.ndarray] = ()) -> CharacterRig:
    """Detect the face, crop a square bust, fit landmarks on the crop and precompute the geometry."""
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInputError(f"expected an RGB uint8 image (H, W, 3), got {img.shape} {img.dtype}")
    found = landmarker.detect(img)
    cx, cy, side = _crop_box(found)
    oval = found.points[list(FACE_OVAL), :2]
    face = max(float(np.ptp(oval[:, 0])), 0.8 * float(np.ptp(oval[:, 1])))
    cx, cy, side = _fit_inside(cx, cy, side, face, img.shape[1], img.shape[0])
    size = int(min(MAX_RIG_SIZE, max(MIN_RIG_SIZE, round(side))))
    size += size % 2
    crop = _crop(img, cx, cy, side, size)
    try:
        lm_crop = landmarker.detect(crop)
        points, score = lm_crop.points, found.score
    except NoFaceError:
        log.warning("face not re-found on the crop; using the source landmarks")
        s = size / side
        points = found.points.copy()
        points[:, 0] = (points[:, 0] - cx) * s + size / 2
        points[:, 1] = (points[:, 1] - cy) * s + size / 2
        points[:, 2] *= s
        score = found.score
    matte = landmarker.matte(crop)
    refs = analyse_references(crop, points, extra_references, landmarker)
    geometry = build_geometry(points, crop, size)
    log.info("rig built: %dx%d crop, face score %.2f, %d vertices, references %s", size, size, score,
             geometry.vertices.shape[0], refs.references_used or "none")
    return CharacterRig(image=np.ascontiguousarray(crop), matte=matte, landmarks=points.astype(np.float32),
                        face_score=float(score), geometry=geometry, num_references=1 + len(extra_references),
                        references_used=refs.references_used, mouth_interior=refs.interior, head_turns=refs.turns)
