"""Write a PNG contact sheet of rendered expressions for humans to look at.

    python tools/look_render.py --portrait default --out out/sheet.png
    python tools/look_render.py --portrait /path/to/face.png --out out/face.png --size 512
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpm_npc.character.landmarks import FaceLandmarker, decode_image  # noqa: E402
from lpm_npc.character.rig import build_rig  # noqa: E402
from lpm_npc.performance.motion import MotionFrame  # noqa: E402
from lpm_npc.render.renderer import TorchRenderer  # noqa: E402

EXPRESSIONS: list[tuple[str, dict[str, float]]] = [
    ("neutral", {}),
    ("jaw 0.3", {"jaw_open": 0.3}),
    ("jaw 0.7", {"jaw_open": 0.7}),
    ("jaw 1.0", {"jaw_open": 1.0}),
    ("round", {"mouth_round": 1.0, "jaw_open": 0.2}),
    ("spread", {"mouth_spread": 1.0, "jaw_open": 0.2}),
    ("press+jaw", {"lips_press": 1.0, "jaw_open": 0.6}),
    ("smile", {"smile": 1.0}),
    ("smile+jaw", {"smile": 0.8, "jaw_open": 0.4}),
    ("frown", {"frown": 1.0}),
    ("lip raise", {"upper_lip_raise": 1.0}),
    ("brow up", {"brow_up": 1.0}),
    ("brow inner", {"brow_inner_up": 1.0}),
    ("brow down", {"brow_down": 1.0}),
    ("blink 0.5", {"blink_l": 0.5, "blink_r": 0.5}),
    ("blink", {"blink_l": 1.0, "blink_r": 1.0}),
    ("wink l", {"blink_l": 1.0}),
    ("wide", {"eye_wide": 1.0}),
    ("squint", {"squint": 1.0}),
    ("gaze right", {"gaze_x": 1.0}),
    ("gaze left+up", {"gaze_x": -1.0, "gaze_y": -1.0}),
    ("yaw +8", {"head_yaw": 8.0}),
    ("yaw -8", {"head_yaw": -8.0}),
    ("pitch +6", {"head_pitch": 6.0}),
    ("pitch -6", {"head_pitch": -6.0}),
    ("roll +5", {"head_roll": 5.0}),
    ("yaw-8 pitch6 roll-5", {"head_yaw": -8.0, "head_pitch": 6.0, "head_roll": -5.0}),
    ("yaw +20", {"head_yaw": 20.0}),
    ("yaw -20", {"head_yaw": -20.0}),
    ("pitch +15", {"head_pitch": 15.0}),
    ("roll +15", {"head_roll": 15.0}),
    ("talk", {"jaw_open": 0.5, "head_yaw": 8.0, "head_pitch": -5.0, "brow_up": 0.5}),
    ("nose wrinkle", {"nose_wrinkle": 1.0, "upper_lip_raise": 0.5}),
]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img)
    cv2.rectangle(img, (0, 0), (img.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(img, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _zoom(frame: np.ndarray, centre: np.ndarray, half: int, out: int) -> np.ndarray:
    x, y = int(centre[0]), int(centre[1])
    pad = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")
    crop = pad[y:y + 2 * half, x:x + 2 * half]
    return cv2.resize(crop, (out, out), interpolation=cv2.INTER_NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--portrait", default="default", help="image path, or 'default' (skimage astronaut)")
    ap.add_argument("--out", default="out/sheet.png")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--cols", type=int, default=7)
    ap.add_argument("--alpha", action="store_true", help="composite the alpha matte over a checkerboard")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)

    if args.portrait == "default":
        import skimage.data

        image = skimage.data.astronaut()
    else:
        image = decode_image(Path(args.portrait).read_bytes())
    lm = FaceLandmarker()
    rig = build_rig(image, lm)
    renderer = TorchRenderer()
    prep = renderer.prepare(rig)
    S = args.size
    motions = np.stack([MotionFrame.from_dict(0, w).values for _, w in EXPRESSIONS])
    t = time.perf_counter()
    frames = renderer.render(prep, motions, S, S, alpha_matte=args.alpha)
    logging.info("rendered %d frames in %.1f ms", len(frames), (time.perf_counter() - t) * 1e3)
    tiles = []
    scale = (S - 1) / (rig.size - 1)
    g = rig.geometry
    mouth_c = rig.landmarks[[13, 14], :2].mean(0) * scale
    eye_c = rig.landmarks[list(g.eye_upper[1]) + list(g.eye_lower[0]), :2].mean(0) * scale
    half_m = int(max(12, g.scales[0] * scale * 0.9))
    half_e = int(max(12, g.scales[1] * scale * 0.9))
    checker = ((np.indices((S, S)).sum(0) // 16) % 2 * 60 + 150).astype(np.float32)[..., None]
    zooms = []
    for (name, _), f in zip(EXPRESSIONS, frames):
        rgb = f[..., :3].astype(np.float32)
        if args.alpha:
            a = f[..., 3:4].astype(np.float32) / 255.0
            rgb = rgb * a + checker * (1 - a)
        rgb = rgb.astype(np.uint8)
        tiles.append(_label(rgb.copy(), name))
        if name in ("neutral", "jaw 0.3", "jaw 0.7", "jaw 1.0", "round", "spread", "press+jaw", "smile",
                    "smile+jaw", "blink 0.5", "blink", "gaze right", "gaze left+up", "yaw -8", "yaw +20"):
            zm = _zoom(rgb, mouth_c, half_m, S // 2)
            ze = _zoom(rgb, eye_c, half_e, S // 2)
            zooms.append(_label(np.concatenate([zm, ze], 0), name))
    cols = args.cols
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, 0)
    zrow = np.concatenate(zooms, 1)
    if zrow.shape[1] > sheet.shape[1]:
        half = (len(zooms) + 1) // 2
        a = np.concatenate(zooms[:half], 1)
        b = np.concatenate(zooms[half:] + [np.zeros_like(zooms[0])] * (half - len(zooms[half:])), 1)
        zrow = np.concatenate([a, b], 0)
    W = max(sheet.shape[1], zrow.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, W - x.shape[1]), (0, 0)))  # noqa: E731
    full = np.concatenate([pad(sheet), pad(zrow)], 0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(full, cv2.COLOR_RGB2BGR))
    print(f"wrote {out} ({full.shape[1]}x{full.shape[0]})")
    lm.close()


if __name__ == "__main__":
    main()
