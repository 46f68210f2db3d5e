"""Image decoding and face landmarks (mediapipe face detector + face mesh + selfie matte).

The face *mesh* alone reports faces on some animal photos, so every mesh is gated by the face
*detector* (score >= 0.5, both detector models tried) and must overlap the detected box.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass

import numpy as np

from lpm_npc.errors import InvalidImageError, NoFaceError

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 8192
MIN_IMAGE_SIDE = 16
DETECTOR_MIN_SCORE = 0.5
SINGLE_MODEL_MIN_SCORE = 0.85
NUM_LANDMARKS = 478


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, WebP, BMP, GIF, ...) to RGB uint8 (H, W, 3).

    Grayscale and palette images are converted; RGBA is composited on white.
    Raises InvalidImageError when the bytes are empty, not an image, or too large.
    """
    if not data:
        raise InvalidImageError("image data is empty: send the bytes of a PNG or JPEG portrait")
    try:
        from PIL import Image, UnidentifiedImageError  # pillow ships with scikit-image / mediapipe
    except ImportError:  # pragma: no cover - PIL is a transitive dependency
        Image = None  # type: ignore[assignment]
    if Image is not None:
        try:
            with Image.open(io.BytesIO(bytes(data))) as img:
                w, h = img.size
                if max(w, h) > MAX_IMAGE_SIDE:
                    raise InvalidImageError(
                        f"image is {w}x{h} px; the largest side may be at most {MAX_IMAGE_SIDE} px: "
                        "downscale the portrait and send it again")
                img.load()
                if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    bg.alpha_composite(rgba)
                    rgb = bg.convert("RGB")
                else:
                    rgb = img.convert("RGB")
                arr = np.asarray(rgb, dtype=np.uint8)
        except InvalidImageError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidImageError(
                f"could not decode the image ({exc.__class__.__name__}): send a PNG or JPEG file") from exc
    else:  # pragma: no cover
        import cv2

        buf = np.frombuffer(bytes(data), np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InvalidImageError("could not decode the image: send a PNG or JPEG file")
        if max(img.shape[:2]) > MAX_IMAGE_SIDE:
            raise InvalidImageError(f"image side exceeds {MAX_IMAGE_SIDE} px: downscale it")
        arr = _cv_to_rgb(img)
    if arr.ndim != 3 or min(arr.shape[:2]) < MIN_IMAGE_SIDE:
        raise InvalidImageError(
            f"image is {arr.shape[1]}x{arr.shape[0]} px; it must be at least {MIN_IMAGE_SIDE} px on each side")
    return np.ascontiguousarray(arr)


def _cv_to_rgb(img: np.ndarray) -> np.ndarray:  # pragma: no cover - fallback path
    import cv2

    if img.dtype != np.uint8:
        img = (img / max(1, img.max()) * 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        a = img[..., 3:4].astype(np.float32) / 255.0
        rgb = img[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
        return cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class FaceLandmarks:
    """The 478 face-mesh points of one face, in pixel coordinates of the image it came from."""

    points: np.ndarray  # (478, 3) float32; z in pixels (mediapipe z * width)
    score: float  # face detector confidence
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in px


def _area(box: tuple[float, float, float, float]) -> float:
    return max(1.0, (box[2] - box[0]) * (box[3] - box[1]))


def _as_rgb(image_rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(image_rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < MIN_IMAGE_SIDE:
        raise InvalidImageError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


class FaceLandmarker:
    """Face detector (gate) + face mesh (478 points, irises) + person matte. Thread-safe."""

    def __init__(self) -> None:
        from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation

        self._lock = threading.Lock()
        self._detectors = [
            face_detection.FaceDetection(model_selection=sel, min_detection_confidence=DETECTOR_MIN_SCORE)
            for sel in (0, 1)
        ]
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1, min_detection_confidence=0.3)
        self._segmenter = selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._closed = False

    def _detect_box(self, img: np.ndarray) -> tuple[float, tuple[float, float, float, float]] | None:
        """Best face box over both detector models, or None.

        A face counts when both models (short- and full-range) see it, or when one alone is very
        sure (>= SINGLE_MODEL_MIN_SCORE): the short-range model alone scores some dogs ~0.7.
        """
        h, w = img.shape[:2]
        per_model: list[tuple[float, tuple[float, float, float, float]] | None] = []
        for det in self._detectors:
            res = det.process(img)
            best: tuple[float, tuple[float, float, float, float]] | None = None
            for d in res.detections or []:
                score = float(d.score[0]) if d.score else 0.0
                if score < DETECTOR_MIN_SCORE:
                    continue
                bb = d.location_data.relative_bounding_box
                box = (bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h)
                area = max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
                if best is None or area * score > _area(best[1]) * best[0]:
                    best = (score, box)
            per_model.append(best)
        found = [b for b in per_model if b is not None]
        if not found:
            return None
        top = max(found, key=lambda b: b[0])
        if len(found) == len(per_model) or top[0] >= SINGLE_MODEL_MIN_SCORE:
            return max(found, key=lambda b: _area(b[1]) * b[0])
        log.info("face detector gate: only one model fired (score %.2f); rejecting", top[0])
        return None

    def detect(self, image_rgb: np.ndarray) -> FaceLandmarks:
        """Find the main human face; raises NoFaceError when there is none."""
        img = _as_rgb(image_rgb)
        h, w = img.shape[:2]
        with self._lock:
            self._check_open()
            found = self._detect_box(img)
            if found is None and max(h, w) > 1600:  # tiny faces in huge images: try a downscale
                import cv2

                s = 1280.0 / max(h, w)
                small = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                f2 = self._detect_box(small)
                if f2 is not None:
                    found = (f2[0], tuple(v / s for v in f2[1]))  # type: ignore[assignment]
            if found is None:
                raise NoFaceError(
                    "no human face found in the image: use a portrait where one human face is clearly "
                    "visible, roughly frontal, and at least ~64 px wide")
            score, box = found
            res = self._mesh.process(img)
        if not res.multi_face_landmarks:
            raise NoFaceError(
                "a face was detected but its landmarks could not be fitted: use a sharper, more frontal "
                "portrait with the whole face visible")
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float32)
        if pts.shape[0] != NUM_LANDMARKS:
            raise NoFaceError(f"face mesh returned {pts.shape[0]} points, expected {NUM_LANDMARKS}")
        # the mesh must agree with the detector (the mesh alone fires on animals)
        cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
        bw, bh = box[2] - box[0], box[3] - box[1]
        if not (box[0] - 0.5 * bw <= cx <= box[2] + 0.5 * bw and box[1] - 0.5 * bh <= cy <= box[3] + 0.5 * bh):
            raise NoFaceError(
                "the detected face and the fitted landmarks disagree: use a portrait with one clear human face")
        log.debug("face found: score %.2f box %s", score, box)
        return FaceLandmarks(points=pts, score=score, bbox=tuple(float(v) for v in box))  # type: ignore[arg-type]

    def matte(self, image_rgb: np.ndarray) -> np.ndarray:
        """Person matte (H, W) uint8 0..255."""
        img = _as_rgb(image_rgb)
        with self._lock:
            self._check_open()
            res = self._segmenter.process(img)
        mask = res.segmentation_mask
        if mask is None:
            return np.full(img.shape[:2], 255, np.uint8)
        return np.clip(np.asarray(mask) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("FaceLandmarker is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for obj in (*self._detectors, self._mesh, self._segmenter):
                try:
                    obj.close()
                except Exception:  # pragma: no cover - best effort
                    log.debug("closing %r failed", obj, exc_info=True)

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
