"""Several processes feeding one GPU: P processes, each rendering batches of B at 512x512 with JPEG encoded
on the GPU, all at once. Prints their frames/s together and the CPU per frame.

    python tools/gpu_contention.py

This is the measurement behind the render service (lpm_npc/runtime/render_service.py). On an H100,
1 process with batches of 64 made 2541 frames/s, 8 processes with batches of 8 made 1167 together.
blocking=1 runs each process with cudaDeviceScheduleBlockingSync (GPU waits sleep instead of spinning).
The processes start at slightly different times, so their 4 s windows overlap only mostly.
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _blocking_sync() -> None:
    """Ask torch's CUDA runtime for blocking waits before the first context is made."""
    import ctypes

    import torch

    root = os.path.join(os.path.dirname(torch.__file__), "..", "nvidia")
    for lib in glob.glob(os.path.join(root, "*", "lib", "libcudart.so*")):
        try:
            ctypes.CDLL(lib).cudaSetDeviceFlags(4)  # cudaDeviceScheduleBlockingSync
            return
        except OSError:
            continue


def work(batch: int, blocking: bool, q) -> None:
    if blocking:
        _blocking_sync()
    from lpm_npc.render.throughput import bare_render_throughput

    r = bare_render_throughput(size=512, batch=batch, seconds=4.0, backend="torch", device="cuda", threads=1,
                               jpeg_quality=85)
    q.put((r["frames_per_s"], r["cpu_ms_per_frame"], r["ms_per_call"]))


def main() -> None:
    ctx = mp.get_context("spawn")
    for blocking in (False, True):
        for procs, batch in ((1, 8), (2, 8), (4, 8), (8, 8), (4, 16), (1, 64)):
            q = ctx.Queue()
            ps = [ctx.Process(target=work, args=(batch, blocking, q)) for _ in range(procs)]
            for p in ps:
                p.start()
            res = [q.get() for _ in range(procs)]
            for p in ps:
                p.join()
            print(f"blocking={int(blocking)} P={procs} B={batch}: together {sum(r[0] for r in res):7.0f} frames/s, "
                  f"cpu ms/frame {sum(r[1] for r in res) / procs:6.2f}, ms/call {sum(r[2] for r in res) / procs:6.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
