"""Contact sheet of speech frames: drawn mouth interior vs the interior taken from an open-mouth reference.

    python tools/look_references.py [--clip lp_d18] [--out out/look_references.png]

Takes one talking-head clip from ../shared/data/video (development data, never committed), picks its
most closed frontal frame as the portrait and its widest frontal opening as the extra reference,
builds the rig (printing what each reference was used for) and renders mouth poses twice: top row
with the drawn interior, bottom row with the reference's. The last column is the reference itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

from lpm_npc.character.landmarks import FaceLandmarker  # noqa: E402
from lpm_npc.character.references import mouth_open_ratio  # noqa: E402
from lpm_npc.character.rig import build_rig  # noqa: E402
from lpm_npc.errors import NoFaceError  # noqa: E402
from lpm_npc.performance.motion import MotionFrame  # noqa: E402
from lpm_npc.render import mouth as mouth_mod  # noqa: E402
from lpm_npc.render import renderer as renderer_mod  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "video"
POSES = [
    ("jaw 0.3", dict(jaw_open=0.3)),
    ("jaw 0.5", dict(jaw_open=0.5)),
    ("jaw 0.8", dict(jaw_open=0.8)),
    ("round .6 jaw .3", dict(mouth_round=0.6, jaw_open=0.3)),
    ("smile .7 jaw .4", dict(smile=0.7, jaw_open=0.4)),
    ("spread .5 jaw .25", dict(mouth_spread=0.5, jaw_open=0.25)),
]


def _frontality(p: np.ndarray) -> float:
    return abs(float((p[1, 0] - (p[234, 0] + p[454, 0]) / 2) / (p[454, 0] - p[234, 0])))


def pick_frames(path: Path, landmarker: FaceLandmarker, step: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(closed-mouth frontal frame, widest-open frontal frame) of a clip, RGB."""
    cap = cv2.VideoCapture(str(path))
    best_closed, best_open = (1e9, None), (-1e9, None)
    i = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            rgb = cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
            try:
                p = landmarker.detect(rgb).points
            except NoFaceError:
                i += 1
                continue
            op, fr = mouth_open_ratio(p), _frontality(p)
            eyes = float(np.linalg.norm(p[145, :2] - p[159, :2]) + np.linalg.norm(p[374, :2] - p[386, :2]))
            eyes /= float(np.linalg.norm(p[291, :2] - p[61, :2]))
            closed = op + 2 * fr - 0.5 * eyes   # closed mouth, frontal, eyes open
            if closed < best_closed[0]:
                best_closed = (closed, rgb)
            if op - 2 * fr > best_open[0]:
                best_open = (op - 2 * fr, rgb)
        i += 1
    cap.release()
    if best_closed[1] is None or best_open[1] is None:
        raise SystemExit(f"no face in {path}")
    return best_closed[1], best_open[1]


def render_pose(renderer, prepared, size: int, weights: dict, interior) -> np.ndarray:
    import dataclasses

    p = dataclasses.replace(prepared, mouth_interior=interior, still={})  # None = the drawn interior
    return renderer.render(p, MotionFrame.from_dict(0.0, weights).values[None], size, size)[0][..., :3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="lp_d18", help="clip name under shared/data/video (without .mp4)")
    ap.add_argument("--out", default=str(ROOT / "out" / "look_references.png"))
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    path = VIDEO / f"{args.clip}.mp4"
    if not path.exists():
        raise SystemExit(f"{path} not found: this tool needs the development data in ../shared/data")
    landmarker = FaceLandmarker()
    portrait, ref = pick_frames(path, landmarker)
    rig = build_rig(portrait, landmarker, [ref])
    print("references_used:", rig.references_used)
    renderer = renderer_mod.TorchRenderer()
    prepared = renderer.prepare(rig)
    interior = mouth_mod.prepare_interior(rig.mouth_interior)
    lm = rig.landmarks
    S = args.size
    s = S / rig.size
    mw = float(np.linalg.norm(lm[291, :2] - lm[61, :2])) * s
    cx, cy = lm[[13, 14], :2].mean(0) * s
    half = int(1.3 * mw)
    y0, x0 = int(cy - 0.8 * half), int(cx - half)

    def crop(img: np.ndarray) -> np.ndarray:
        c = img[max(0, y0):y0 + 2 * half, max(0, x0):x0 + 2 * half]
        return cv2.resize(c, (256, 256), interpolation=cv2.INTER_CUBIC)

    rows = []
    for label, inter in (("drawn", None), ("reference", interior)):
        tiles = []
        for name, w in POSES:
            t = crop(render_pose(renderer, prepared, S, w, inter)).copy()
            cv2.putText(t, f"{label}: {name}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(t)
        rows.append(np.hstack(tiles))
    ref_tile = cv2.resize(ref, (256, 256), interpolation=cv2.INTER_AREA)
    tex_tile = np.zeros((256, 256, 3), np.uint8)
    if rig.mouth_interior is not None:
        tex = cv2.resize(rig.mouth_interior.texture, (256, 102), interpolation=cv2.INTER_CUBIC)
        tex_tile[77:179] = tex
    sheet = np.vstack([np.hstack([rows[0], ref_tile]), np.hstack([rows[1], tex_tile])])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print("wrote", out)
    landmarker.close()


if __name__ == "__main__":
    main()
