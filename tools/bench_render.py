"""Time the renderer on one CPU thread: python tools/bench_render.py [--threads 1]

On CPU the renderer keeps OpenCV's thread pool at torch's thread count (cv2.remap does the warp),
so --threads bounds both. --idle also times frames whose head is still (only the face moves).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpm_npc.character.landmarks import FaceLandmarker  # noqa: E402
from lpm_npc.character.rig import build_rig  # noqa: E402
from lpm_npc.performance.motion import MotionFrame  # noqa: E402
from lpm_npc.render.renderer import TorchRenderer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--idle", action="store_true", help="also time expression-only frames (no head motion)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import skimage.data

    rig = build_rig(skimage.data.astronaut(), FaceLandmarker())
    r = TorchRenderer()
    p = r.prepare(rig)
    rng = np.random.default_rng(0)
    cases = [(256, 1, True), (512, 1, True), (1024, 1, True), (256, 8, True), (512, 4, True)]
    if args.idle:
        cases += [(256, 1, False), (512, 1, False)]
    for size, batch, head in cases:
        ms = []
        for _ in range(args.n):
            m = MotionFrame.from_dict(0, {"jaw_open": rng.uniform(0, 1), "blink_l": rng.uniform(0, 1),
                                          "smile": rng.uniform(0, 1), "head_yaw": rng.uniform(-15, 15) * head,
                                          "gaze_x": rng.uniform(-1, 1)}).values
            ms.append(np.repeat(m[None], batch, 0))
        for m in ms[:5]:
            r.render(p, m, size, size)
        t = []
        for m in ms:
            t0 = time.perf_counter()
            r.render(p, m, size, size)
            t.append(time.perf_counter() - t0)
        t = np.array(t) * 1e3
        print(f"{size}x{size} B={batch} threads={args.threads}{'' if head else ' still head'}: median {np.median(t):.2f} ms/batch, "
              f"p95 {np.percentile(t, 95):.2f} ms, {np.median(t) / batch:.2f} ms/frame")


if __name__ == "__main__":
    main()
