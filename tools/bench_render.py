"""Time the bare renderer (no server) on one thread: python tools/bench_render.py [--threads 1] [--backend torch]

Each case renders `batch` sessions of the built-in character per `render_many` call (one server tick)
with a talking / blinking / head-swaying motion (`lpm_npc.render.throughput`). Prints wall ms/frame
and process-CPU ms/frame (the CPU figure is the steadier one on a shared machine).
--backend torch|onnxruntime|tensorrt, --device cpu|cpu-gridsample|cuda|tensorrt-ep (see lpm_npc.render.backends).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lpm_npc.render.throughput import bare_render_throughput, default_rig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--cases", default="256x1,512x1,256x8,512x4", help="comma-separated SIZExBATCH")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rig = default_rig()
    for case in args.cases.split(","):
        size, batch = (int(v) for v in case.split("x"))
        r = bare_render_throughput(size, batch, args.seconds, backend=args.backend, device=args.device,
                                   threads=args.threads, cache_dir=args.cache_dir, rig=rig)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['backend']} {size}x{size} B={batch} threads={args.threads}: {r['ms_per_frame']:.2f} ms/frame wall "
                  f"({r['frames_per_s']:.0f} frames/s), {r['cpu_ms_per_frame']:.2f} ms/frame CPU, "
                  f"{r['ms_per_call']:.1f} ms/call")


if __name__ == "__main__":
    main()
