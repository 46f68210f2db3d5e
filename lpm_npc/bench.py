"""`lpm-npc bench`: the numbers of the foundation, printed (never asserted in timed tests).

1. Stage costs in-process on one thread: audio features, motion, render, encode -> max fps/core.
2. Real time over loopback gRPC against a `lpm-npc serve` child process: N sessions streaming
   speech live; received fps, frames dropped, server CPU cores used, audio-in -> frame-out
   latency (p50/p95 as measured by the server when the frame is written), memory.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .audio.pcm import INTERNAL_RATE, encode_pcm16
from .audio.tts import DEFAULT_NPC_VOICE, synthesize
from .character.default import default_portrait_png
from .config import OutputOptions, ServerConfig, SessionOptions
from .runtime.runtime import Runtime
from .sidecar import Sidecar
from .types import AudioChannel, PixelFormat

log = logging.getLogger(__name__)

SPEECH = ("The river froze early this year, and the old miller says the wolves came down from the hills. "
          "Keep your lantern lit and your door barred, and you will be fine.")


def _speech16k() -> np.ndarray:
    from .audio.pcm import resample

    clip = synthesize(SPEECH, voice=DEFAULT_NPC_VOICE)
    return resample(clip.samples, clip.sample_rate, INTERNAL_RATE).astype(np.float32)


def bench_stages(size: int, frames: int, speech: np.ndarray, cache_dir: Path | None) -> dict:
    """In-process, one torch thread: the cost of each stage per frame."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    runtime = Runtime(ServerConfig(cache_dir=cache_dir) if cache_dir else ServerConfig())
    try:
        session = runtime.open_session(SessionOptions(output=OutputOptions(width=size, height=size)), seed=1)
        step = INTERNAL_RATE // 50
        pos = 0
        for _ in range(10):  # warm-up
            session.render_next()
        totals = {"audio": 0.0, "motion": 0.0, "render": 0.0, "encode": 0.0}
        t_start = time.perf_counter()
        for i in range(frames):
            # ~one frame of live NPC audio per frame, in 20 ms chunks
            until = min(len(speech), int((i + 1) / 30 * INTERNAL_RATE))
            while pos < until:
                session.push_audio(AudioChannel.NPC, encode_pcm16(speech[pos:pos + step]), INTERNAL_RATE)
                pos += step
            f = session.render_next()
            for k in totals:
                totals[k] += getattr(f.times, k)
        wall = time.perf_counter() - t_start
        runtime.close_session(session)
    finally:
        runtime.close()
    per = {k: v / frames * 1000.0 for k, v in totals.items()}
    return {"size": size, "frames": frames, "ms_per_frame": per,
            "total_ms": wall / frames * 1000.0, "max_fps_one_thread": frames / wall}


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def bench_realtime(size: int, seconds: float, sessions: int, speech: np.ndarray, fps: int = 30,
                   pixel_format: PixelFormat = PixelFormat.RGBA8, cache_dir: Path | None = None) -> dict:
    sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--max-sessions", str(max(16, sessions))])
    results: list[dict] = []
    try:
        client = sidecar.wait_ready()
        client.register_character(default_portrait_png())
        rss_idle = proc_rss_mb(sidecar.proc.pid)
        barrier = threading.Barrier(sessions + 1)

        def run_one(k: int) -> None:
            stats, frames, first, last = [], 0, None, None
            with client.perform(width=size, fps=fps, pixel_format=pixel_format, stats_interval_ms=1000) as stream:
                it = iter(stream)
                next(it)  # started
                barrier.wait()
                t0 = time.monotonic()
                chunk = INTERNAL_RATE // 50

                def feed() -> None:
                    pos = 0
                    while time.monotonic() - t0 < seconds:
                        t = time.monotonic() - t0
                        # live speech with pauses: 6 s talking, 2 s silence
                        target = int(t * INTERNAL_RATE)
                        while pos < target:
                            sl = speech[(pos % len(speech)):(pos % len(speech)) + chunk]
                            if (pos // INTERNAL_RATE) % 8 < 6:
                                stream.send_audio(AudioChannel.NPC, sl, INTERNAL_RATE)
                            pos += chunk
                        time.sleep(0.02)
                    stream.close_send()

                feeder = threading.Thread(target=feed, daemon=True)
                feeder.start()
                for msg in it:
                    kind = msg.WhichOneof("msg")
                    if kind == "frame":
                        now = time.monotonic()
                        if now - t0 > 2.0:  # skip the start-up seconds
                            frames += 1
                            first = first or (now, msg.frame.index)
                            last = (now, msg.frame.index)
                    elif kind == "stats":
                        stats.append(msg.stats)
                feeder.join()
            span = last[0] - first[0] if first and last else 1.0
            results.append({
                "fps": (frames - 1) / span if frames > 1 else 0.0,
                "dropped": (last[1] - first[1] + 1 - frames) if first and last else 0,
                "lat_p50": [s.latency_p50_ms for s in stats[2:] if s.latency_p50_ms > 0],
                "lat_p95": [s.latency_p95_ms for s in stats[2:] if s.latency_p95_ms > 0],
                "render_ms": [s.render_ms for s in stats[2:] if s.render_ms > 0],
            })

        threads = [threading.Thread(target=run_one, args=(k,), daemon=True) for k in range(sessions)]
        for th in threads:
            th.start()
        barrier.wait()
        time.sleep(2.0)
        cpu0, w0 = _proc_cpu_seconds(sidecar.proc.pid), time.monotonic()
        rss_peak = 0.0
        while any(th.is_alive() for th in threads) and time.monotonic() - w0 < seconds - 2.5:
            rss_peak = max(rss_peak, proc_rss_mb(sidecar.proc.pid))
            time.sleep(0.25)
        cpu1, w1 = _proc_cpu_seconds(sidecar.proc.pid), time.monotonic()
        for th in threads:
            th.join(seconds + 30)
        client.close()
    finally:
        sidecar.stop()
    cores = (cpu1 - cpu0) / max(1e-6, w1 - w0)
    p50 = [x for r in results for x in r["lat_p50"]]
    p95 = [x for r in results for x in r["lat_p95"]]
    return {
        "size": size, "fps_target": fps, "sessions": sessions, "seconds": seconds,
        "fps_per_session": [round(r["fps"], 2) for r in results],
        "aggregate_fps": round(sum(r["fps"] for r in results), 1),
        "frames_dropped": sum(r["dropped"] for r in results),
        "server_cpu_cores": round(cores, 3),
        "latency_ms_p50": round(float(np.median(p50)), 1) if p50 else None,
        "latency_ms_p95": round(float(np.max(p95)), 1) if p95 else None,
        "server_render_ms": round(float(np.mean([x for r in results for x in r["render_ms"]] or [0])), 2),
        "server_rss_mb_idle": round(rss_idle, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
        "rss_mb_per_session": round((rss_peak - rss_idle) / sessions, 1),
    }


def run_bench(size: int = 512, seconds: float = 20.0, sessions: int = 1, fps: int = 30,
              stage_frames: int = 300, json_path: Path | None = None, cache_dir: Path | None = None) -> dict:
    speech = _speech16k()
    print(f"lpm-npc bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}", flush=True)
    stages = bench_stages(size, stage_frames, speech, cache_dir)
    per = stages["ms_per_frame"]
    print(f"\nPer-stage cost, one thread, {size}x{size} RGBA ({stage_frames} frames)")
    for k in ("audio", "motion", "render", "encode"):
        print(f"  {k:8s} {per[k]:7.3f} ms/frame")
    print(f"  {'total':8s} {stages['total_ms']:7.3f} ms/frame  -> {stages['max_fps_one_thread']:.0f} fps on one core "
          f"({stages['max_fps_one_thread'] / fps:.1f}x the {fps} fps real-time rate)")
    rt = bench_realtime(size, seconds, sessions, speech, fps=fps, cache_dir=cache_dir)
    print(f"\nReal time over loopback gRPC: {sessions} session(s), {size}x{size} RGBA @ {fps} fps, {seconds:.0f} s of live speech")
    print(f"  received fps        {rt['fps_per_session']} (aggregate {rt['aggregate_fps']})")
    print(f"  frames dropped      {rt['frames_dropped']}")
    print(f"  server CPU          {rt['server_cpu_cores']:.2f} cores of {os.cpu_count()}  (bar: <= 1 core for one NPC)")
    print(f"  latency audio->frame p50 {rt['latency_ms_p50']} ms, p95 {rt['latency_ms_p95']} ms (bar: p95 <= 100 ms + lookahead 80 ms)")
    print(f"  server render+encode {rt['server_render_ms']} ms/frame")
    print(f"  server memory       {rt['server_rss_mb_idle']} MB idle, {rt['server_rss_mb_peak']} MB peak, "
          f"{rt['rss_mb_per_session']} MB per session")
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "stages": stages, "realtime": rt}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {json_path}")
    return report
