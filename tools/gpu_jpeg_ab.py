"""GPU JPEG encoders side by side on real frames (run on a CUDA machine; see docs/GPU.md).

Renders 64 frames of the built-in character at 512x512 on the GPU, then encodes the batch with nvJPEG
called directly (render/nvjpeg.py) and with torchvision's encode_jpeg, in one thread and in two at
once: wall time and process CPU per batch, bytes per frame, and how far the decoded files are from the
pixels (mean and p99.9 absolute difference, and the same for OpenCV's CPU encoder as the reference).

    python3 tools/gpu_jpeg_ab.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lpm_npc.character.store import CharacterStore  # noqa: E402
from lpm_npc.config import DEFAULT_CHARACTER_ID, default_cache_dir  # noqa: E402
from lpm_npc.render import gpu_jpeg  # noqa: E402
from lpm_npc.render.renderer import RenderRequest, TorchRenderer  # noqa: E402
from lpm_npc.render.throughput import talking_motions  # noqa: E402

Q = 85


def frames_on_gpu(n: int = 64, size: int = 512) -> tuple[torch.Tensor, np.ndarray]:
    store = CharacterStore(default_cache_dir())
    r = TorchRenderer(device="cuda")
    p = r.prepare(store.get(DEFAULT_CHARACTER_ID))
    m = talking_motions(n)
    host = np.stack(r.render_many([RenderRequest(p, row, size, size) for row in m]))
    return torch.from_numpy(host).cuda(), host


def error(files: list[np.ndarray], host: np.ndarray) -> dict:
    diffs = []
    for f, px in zip(files, host):
        dec = cv2.cvtColor(cv2.imdecode(f, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        diffs.append(np.abs(dec.astype(np.int16) - px[..., :3].astype(np.int16)))
    d = np.stack(diffs)
    return {"mean_abs": round(float(d.mean()), 3), "p999_abs": float(np.percentile(d, 99.9)),
            "bytes_mean": int(np.mean([len(f) for f in files]))}


def timed(fn, rounds: int = 20) -> dict:
    fn()
    torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        fn()
    torch.cuda.synchronize()
    return {"wall_ms_per_batch": round((time.perf_counter() - w0) / rounds * 1e3, 2),
            "cpu_ms_per_batch": round((time.process_time() - c0) / rounds * 1e3, 2)}


def two_threads(fn, rounds: int = 20) -> dict:
    fn()
    torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    ts = [threading.Thread(target=lambda: [fn() for _ in range(rounds)]) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    torch.cuda.synchronize()
    n = 2 * rounds
    return {"wall_ms_per_batch": round((time.perf_counter() - w0) / n * 1e3, 2),
            "cpu_ms_per_batch": round((time.process_time() - c0) / n * 1e3, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    gpu, host = frames_on_gpu()
    results: dict = {"gpu": torch.cuda.get_device_name(), "frames": int(gpu.shape[0]), "size": int(gpu.shape[1]),
                     "quality": Q}
    cpu_files = [cv2.imencode(".jpg", cv2.cvtColor(px[..., :3], cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, Q])[1].reshape(-1) for px in host]
    results["opencv_cpu"] = error(cpu_files, host)
    for name in ("nvjpeg", "torchvision"):
        os.environ["LPM_NPC_GPU_JPEG"] = name
        gpu_jpeg._batch_encoder.cache_clear()
        gpu_jpeg.available.cache_clear()
        if not gpu_jpeg.available("cuda"):
            results[name] = {"error": "not available"}
            continue
        enc = gpu_jpeg._batch_encoder()
        if name == "nvjpeg" and enc is None:
            results[name] = {"error": "nvJPEG library not found or not usable"}
            continue
        fn = lambda: gpu_jpeg.encode_batch(gpu, Q)  # noqa: E731
        r = {"one_thread": timed(fn), "two_threads": two_threads(fn), **error(fn(), host)}
        flipped = gpu_jpeg.encode_batch(gpu[:2], Q, flip_y=True)
        r["flip_y"] = error(flipped, host[:2, ::-1])
        results[name] = r
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
