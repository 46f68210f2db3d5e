"""On a machine with a CUDA GPU: do the GPU paths agree with the CPU, and how fast is the bare renderer?

    python tools/gpu_check.py --json OUT.json

1. Agreement: the built-in character rendered by torch:cuda against torch:cpu (the reference) for the
   same motions at several sizes, with and without the matte; the tolerance of tests/test_backends.py
   (mean abs difference < 1 level, 99.9th percentile < 8 levels of 255). Then the other GPU backends
   that are installed (onnxruntime CUDA / TensorRT EP, tensorrt).
2. GPU JPEG (render/gpu_jpeg.py): the frames the GPU encodes decode to the GPU's pixels (mean abs
   difference < 2.5 levels at quality 90), flip_y flips them, and they are real JPEG files.
3. Bare renderer throughput on the GPU: frames/s by batch (one render_many call = one server tick)
   at 256x256 and 512x512, pixels back to the host, and JPEG files back instead; GPU memory.

The rig comes from the character store (the rig cache), so this runs without the face landmarker
where a cached built-in rig is present ($LPM_NPC_CACHE). Prints a table; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpm_npc.performance.motion import MotionFrame  # noqa: E402
from lpm_npc.render.backends import available_backends, make_renderer  # noqa: E402
from lpm_npc.render.renderer import RenderRequest  # noqa: E402
from lpm_npc.render.throughput import bare_render_throughput, default_rig  # noqa: E402


def motion(**w: float) -> np.ndarray:
    return MotionFrame.from_dict(0.0, w).values


MOTIONS = np.stack([motion(), motion(jaw_open=0.8, blink_l=1.0, head_yaw=8.0, gaze_x=0.5),
                    motion(smile=1.0, head_pitch=-6.0, head_roll=5.0, blink_r=0.6),
                    motion(mouth_round=0.7, jaw_open=0.4, brow_up=0.8, gaze_y=-0.6, head_yaw=-5.0)])


def diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a.astype(np.float32) - b.astype(np.float32))
    return float(d.mean()), float(np.percentile(d, 99.9))


def check_agreement(rig, results: list) -> bool:
    ok = True
    ref = make_renderer("torch", "cpu")
    pref = ref.prepare(rig)
    names = available_backends()
    print("backends here:", ", ".join(names), flush=True)
    gpu = [("torch", "cuda")]
    if "onnxruntime:cuda" in names:
        gpu.append(("onnxruntime", "cuda"))
    if "onnxruntime:tensorrt-ep" in names:
        gpu.append(("onnxruntime", "tensorrt-ep"))
    if "tensorrt:cuda" in names:
        gpu.append(("tensorrt", "cuda"))
    for backend, device in gpu:
        try:
            r = make_renderer(backend, device, Path("/tmp/lpm-npc-gpu-check"))
            p = r.prepare(rig)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"  {backend}:{device}: could not start: {exc}")
            results.append({"check": f"{backend}:{device}", "ok": False, "error": str(exc)})
            ok = False
            continue
        for w, h in ((256, 256), (320, 180), (512, 512)):
            for alpha in (False, True):
                if alpha and backend != "torch":
                    continue
                mean, p999 = diff(ref.render(pref, MOTIONS, w, h, alpha), r.render(p, MOTIONS, w, h, alpha))
                good = mean < 1.0 and p999 < 8.0
                ok &= good
                results.append({"check": f"{backend}:{device} vs torch:cpu", "size": [w, h], "alpha": alpha,
                                "mean_abs": round(mean, 4), "p99_9": round(p999, 2), "ok": good})
                print(f"  {backend}:{device} vs torch:cpu {w}x{h} alpha={alpha}: mean {mean:.3f}, "
                      f"p99.9 {p999:.2f} levels -> {'ok' if good else 'FAIL'}", flush=True)
    return ok


def check_gpu_jpeg(rig, results: list) -> bool:
    r = make_renderer("torch", "cuda")
    if not r.encodes_jpeg:
        print("  GPU JPEG: not available here (torchvision with CUDA encoding missing)")
        results.append({"check": "gpu_jpeg", "ok": False, "error": "not available"})
        return False
    p = r.prepare(rig)
    ok = True
    for flip in (False, True):
        reqs = [RenderRequest(p, m, 512, 512, flip_y=flip, jpeg_quality=90) for m in MOTIONS]
        files = r.render_many(reqs)
        pixels = r.render(p, MOTIONS, 512, 512)
        for k, f in enumerate(files):
            assert f.ndim == 1 and f.dtype == np.uint8
            bgr = cv2.imdecode(f, cv2.IMREAD_COLOR)
            good = bgr is not None and f[:2].tobytes() == b"\xff\xd8"
            if good:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                want = pixels[k, ::-1, :, :3] if flip else pixels[k, :, :, :3]
                mean, p999 = diff(rgb, want)
                good = mean < 2.5
            else:
                mean, p999 = float("nan"), float("nan")
            ok &= good
            results.append({"check": "gpu_jpeg vs gpu pixels", "flip_y": flip, "frame": k, "bytes": int(f.size),
                            "mean_abs": round(mean, 3), "p99_9": round(p999, 2), "ok": bool(good)})
            print(f"  GPU JPEG q90 flip_y={flip} frame {k}: {f.size} bytes, mean {mean:.3f}, p99.9 {p999:.1f} "
                  f"-> {'ok' if good else 'FAIL'}", flush=True)
    return ok


def throughput(results: list, sizes: list[int], batches: list[int], seconds: float) -> None:
    print("\nbare renderer on the GPU (one render_many call per tick, frames back on the host)")
    print(f"  {'size':>5} {'batch':>5} {'out':>6} {'frames/s':>9} {'ms/call':>8} {'cpu ms/frame':>12}")
    for size in sizes:
        for batch in batches:
            for jpeg in (0, 85):
                torch.cuda.reset_peak_memory_stats()
                t = bare_render_throughput(size=size, batch=batch, seconds=seconds, backend="torch", device="cuda",
                                           threads=None, jpeg_quality=jpeg)
                t["output"] = "jpeg" if jpeg else "rgba8"
                t["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                results.append({"check": "bare_throughput", **t})
                print(f"  {size:5d} {batch:5d} {t['output']:>6} {t['frames_per_s']:9.0f} {t['ms_per_call']:8.2f} "
                      f"{t['cpu_ms_per_frame']:12.3f}  (GPU peak {t['gpu_peak_mb']} MB)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--batches", default="1,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        return 2
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
            "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    print(json.dumps(info), flush=True)
    rig = default_rig()
    results: list = []
    ok = check_agreement(rig, results)
    ok &= check_gpu_jpeg(rig, results)
    throughput(results, [int(s) for s in args.sizes.split(",")], [int(b) for b in args.batches.split(",")],
               args.seconds)
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "ok": bool(ok), "results": results}, indent=2))
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
