"""Write a contact sheet of every emotion at its peak (full intensity) on the built-in character.

    python tools/look_emotions.py                     # -> docs/emotions_contact_sheet.jpg
    python tools/look_emotions.py --size 256 --intensity 1.0 --out out/emotions.jpg

Each tile is the production renderer's frame for `emotion_vector(emotion, intensity)` alone (no idle
motion, no speech), labelled with the emotion's name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpm_npc.character.default import default_portrait_png
from lpm_npc.character.landmarks import FaceLandmarker, decode_image
from lpm_npc.character.rig import build_rig
from lpm_npc.media import contact_sheet
from lpm_npc.performance.emotion import emotion_vector
from lpm_npc.render.renderer import TorchRenderer
from lpm_npc.types import Emotion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "emotions_contact_sheet.jpg"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--intensity", type=float, default=1.0)
    ap.add_argument("--columns", type=int, default=4)
    args = ap.parse_args()

    with FaceLandmarker() as lm:
        rig = build_rig(decode_image(default_portrait_png()), lm)
    renderer = TorchRenderer()
    prep = renderer.prepare(rig)
    emotions = list(Emotion)
    motions = np.stack([emotion_vector(e, args.intensity) for e in emotions])
    frames = renderer.render(prep, motions, args.size, args.size)
    labels = [f"{e.value} {args.intensity:g}" for e in emotions]
    sheet = contact_sheet(list(frames), labels, columns=args.columns, cell=args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88]):
        raise OSError(f"could not write {out}")
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
