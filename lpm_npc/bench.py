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
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .audio.pcm import INTERNAL_RATE, encode_pcm16
from .audio.tts import DEFAULT_NPC_VOICE, synthesize_16k
from .character.default import default_portrait_png
from .config import OutputOptions, ServerConfig, SessionOptions
from .runtime.runtime import Runtime
from .runtime.scheduler import FrameScheduler
from .loadgen import LoadgenUnavailable, build_loadgen, start_loadgen
from .client import NpcClient
from .sidecar import Sidecar
from .types import AudioChannel, PixelFormat

log = logging.getLogger(__name__)

SPEECH = ("The river froze early this year, and the old miller says the wolves came down from the hills. "
          "Keep your lantern lit and your door barred, and you will be fine.")


def _speech16k() -> np.ndarray:
    return synthesize_16k(SPEECH, voice=DEFAULT_NPC_VOICE)


def bench_stages(size: int, frames: int, speech: np.ndarray, cache_dir: Path | None, batch: int = 1) -> dict:
    """In-process, one thread: the CPU cost of each stage per frame, with `batch` sessions rendered
    together in one renderer call per tick (as the server's scheduler does)."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    runtime = Runtime(ServerConfig(cache_dir=cache_dir) if cache_dir else ServerConfig())
    scheduler = FrameScheduler(runtime.renderer, workers=1)
    try:
        sessions = [runtime.open_session(SessionOptions(output=OutputOptions(width=size, height=size)), seed=k)
                    for k in range(batch)]
        step = INTERNAL_RATE // 50
        pos = [0] * batch
        offset = [(k * 7919) % len(speech) for k in range(batch)]

        def feed(i: int) -> None:
            """~one frame of live NPC speech per session per frame, in 20 ms chunks."""
            until = int((i + 1) / 30 * INTERNAL_RATE)
            for k, session in enumerate(sessions):
                while pos[k] < until:
                    q = (pos[k] + offset[k]) % len(speech)
                    session.push_audio(AudioChannel.NPC, encode_pcm16(speech[q:q + step]), INTERNAL_RATE)
                    pos[k] += step

        for i in range(10):  # warm-up
            feed(i)
            scheduler.render_now(sessions)
        totals = {"audio": 0.0, "motion": 0.0, "render": 0.0, "encode": 0.0}
        cpu, t_start = 0.0, time.perf_counter()
        for i in range(10, 10 + frames):
            feed(i)
            c0 = time.process_time()
            for f in scheduler.render_now(sessions):
                for k in totals:
                    totals[k] += getattr(f.times, k)
            cpu += time.process_time() - c0
        wall = time.perf_counter() - t_start
        for session in sessions:
            runtime.close_session(session)
    finally:
        scheduler.close()
        runtime.close()
    n = frames * batch
    per = {k: v / n * 1000.0 for k, v in totals.items()}
    return {"size": size, "frames": frames, "batch": batch, "ms_per_frame": per,
            "cpu_ms_per_frame": cpu / n * 1000.0, "total_ms": wall / n * 1000.0, "max_fps_one_thread": n / wall}


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (the server's worker processes), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of `pid` and each of its descendants, by pid."""
    out = {}
    for p in _tree_pids(pid):
        try:
            out[p] = _proc_cpu_seconds(p)
        except (OSError, ValueError, IndexError):
            pass
    return out


def _process_name(pid: int) -> str:
    """/proc/PID/comm: the server names its processes (lpm-npc-front1, lpm-npc-worker, lpm-npc-render)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def split_server_cpu(used: dict[int, float], names: dict[int, str], main_pid: int) -> tuple[dict, dict, dict]:
    """CPU seconds per process of the server's tree, split into (front processes, worker processes, render
    service), by the names the server gives them. The render service is kept apart from the workers: one
    process renders every NPC's frames, so its cores (near 1: its Python holds one core) say whether it,
    rather than the GPU, limits a big GPU sweep."""
    groups: dict[str, dict] = {"front": {}, "worker": {}, "render": {}}
    for pid, cpu in used.items():
        groups[server_process_role(pid, names.get(pid, ""), main_pid)][pid] = cpu
    return groups["front"], groups["worker"], groups["render"]


def server_process_role(pid: int, name: str, main_pid: int) -> str:
    """"front", "render" or "worker" (helpers such as multiprocessing's resource tracker count as workers),
    by the name the server gives each of its processes."""
    if pid == main_pid or name.startswith("lpm-npc-front"):
        return "front"
    return "render" if name == "lpm-npc-render" else "worker"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants together, in MB."""
    total = 0.0
    for p in _tree_pids(pid):
        try:
            total += proc_rss_mb(p)
        except OSError:
            pass
    return total


def parse_compute_apps(csv_text: str) -> dict[int, float]:
    """pid -> MiB from `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`."""
    out: dict[int, float] = {}
    for line in csv_text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            continue
        try:
            pid, mib = int(parts[0]), float(parts[1])
        except ValueError:  # "[N/A]" (no permission) or a header
            continue
        out[pid] = out.get(pid, 0.0) + mib
    return out


def tree_gpu_mb(pid: int) -> float | None:
    """GPU memory (MiB) of `pid` and its descendants, from nvidia-smi; None without an NVIDIA GPU.

    In a container nvidia-smi may list host PIDs that match none of ours: then every compute process
    on the GPU counts (the benchmark's machine runs nothing else)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    apps = parse_compute_apps(res.stdout)
    ours = [apps[p] for p in _tree_pids(pid) if p in apps]
    return float(sum(ours)) if ours else float(sum(apps.values()))


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def bench_realtime(size: int, seconds: float, sessions: int, speech: np.ndarray, fps: int = 30,
                   pixel_format: PixelFormat = PixelFormat.RGBA8, cache_dir: Path | None = None,
                   sidecar: Sidecar | None = None, workers: int = 0, loadgen: Path | None = None,
                   backend: str = "torch", device: str = "cpu", render_service: str = "auto",
                   fronts: int = 1) -> dict:
    """N live sessions against a `lpm-npc serve` child (started here unless `sidecar` is given).

    CPU and memory count the server process and its worker processes (`workers`) together. The
    clients are Python threads, or with `loadgen` (a built lpmnpc_loadgen, see lpm_npc.loadgen) one
    native process streaming the same speech the same way."""
    own = sidecar is None
    if own:
        sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--max-sessions", str(max(16, sessions)),
                                                             "--no-admission", "--workers", str(workers),
                                                             "--backend", backend, "--device", device,
                                                             "--render-service", render_service,
                                                             "--fronts", str(fronts)])
    results: list[dict] = []
    try:
        client = sidecar.wait_ready()
        client.register_character(default_portrait_png())
        rss_idle = tree_rss_mb(sidecar.proc.pid)
        gpu_idle = tree_gpu_mb(sidecar.proc.pid)
        barrier = threading.Barrier(sessions + 1)
        warm = min(2.0, seconds / 4)

        def run_one(k: int) -> None:
            stats, frames, first, last = [], 0, None, None
            # a connection per NPC, as the native client and the engine bridges' sessions have: a server
            # with several front processes spreads connections, not streams
            own = NpcClient(sidecar.address, own_connection=True)
            try:
                with own.perform(width=size, fps=fps, pixel_format=pixel_format, stats_interval_ms=1000) as stream:
                    it = iter(stream)
                    next(it)  # started
                    barrier.wait()
                    t0 = time.monotonic()
                    chunk = INTERNAL_RATE // 50
                    offset = (k * 7919) % len(speech)  # sessions do not all say the same thing at once

                    def feed() -> None:
                        pos = 0
                        while time.monotonic() - t0 < seconds:
                            t = time.monotonic() - t0
                            # live speech with pauses: 6 s talking, 2 s silence
                            target = int(t * INTERNAL_RATE)
                            while pos < target:
                                q = (pos + offset) % len(speech)
                                if (pos // INTERNAL_RATE) % 8 < 6:
                                    stream.send_audio(AudioChannel.NPC, speech[q:q + chunk], INTERNAL_RATE)
                                pos += chunk
                            time.sleep(0.02)
                        stream.close_send()

                    feeder = threading.Thread(target=feed, daemon=True)
                    feeder.start()
                    for msg in it:
                        kind = msg.WhichOneof("msg")
                        if kind == "frame":
                            now = time.monotonic()
                            if now - t0 > warm:  # skip the start-up seconds
                                frames += 1
                                first = first or (now, msg.frame.index)
                                last = (now, msg.frame.index)
                        elif kind == "stats":
                            if time.monotonic() - t0 > warm + 1.0:
                                stats.append(msg.stats)
                    feeder.join()
            except Exception as exc:  # noqa: BLE001 - a refused or failed session is reported, not fatal
                log.warning("bench session %d failed: %s", k, exc)
                try:
                    barrier.abort()
                except threading.BrokenBarrierError:
                    pass
            finally:
                own.close()
            span = last[0] - first[0] if first and last else 1.0
            field = lambda name: [getattr(s, name) for s in stats if getattr(s, "latency_p50_ms") > 0]  # noqa: E731
            results.append({
                "fps": (frames - 1) / span if frames > 1 else 0.0,
                "dropped": (last[1] - first[1] + 1 - frames) if first and last else 0,
                "lat_p50": field("latency_p50_ms"), "lat_p95": field("latency_p95_ms"),
                "lat_p99": field("latency_p99_ms"),
                "stages": {k: [getattr(s, f"{k}_ms") for s in stats]
                           for k in ("audio", "motion", "render", "encode", "transport")},
                "batch": [s.render_batch_mean for s in stats],
            })

        native = None
        threads: list[threading.Thread] = []
        if loadgen is not None:
            native = start_loadgen(loadgen, sidecar.address, sessions, size, fps, seconds, warm, speech,
                                   pixel_format.value)
            native.wait_started()
            alive = native.alive
        else:
            threads = [threading.Thread(target=run_one, args=(k,), daemon=True) for k in range(sessions)]
            for th in threads:
                th.start()
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            alive = lambda: any(th.is_alive() for th in threads)  # noqa: E731
        time.sleep(warm)
        cpu0, me0, w0 = tree_cpu_seconds(sidecar.proc.pid), _proc_cpu_seconds(os.getpid()), time.monotonic()
        rss_peak, gpu_peak, next_gpu = 0.0, gpu_idle, w0
        while alive() and time.monotonic() - w0 < seconds - warm - 0.5:
            rss_peak = max(rss_peak, tree_rss_mb(sidecar.proc.pid))
            if gpu_idle is not None and time.monotonic() >= next_gpu:  # nvidia-smi takes tens of ms
                next_gpu = time.monotonic() + 2.0
                gpu_peak = max(gpu_peak, tree_gpu_mb(sidecar.proc.pid) or 0.0)
            time.sleep(0.25)
        cpu1, me1, w1 = tree_cpu_seconds(sidecar.proc.pid), _proc_cpu_seconds(os.getpid()), time.monotonic()
        names = {p: _process_name(p) for p in cpu1}   # now: the processes are gone once the sidecar stops
        for th in threads:
            th.join(seconds + 30)
        if native is not None:
            report = native.result(timeout=seconds + 60)
            results = report["sessions"]
            failed = [k for k, r in enumerate(results) if r.get("error")]
            if failed:
                log.warning("bench sessions %s failed to start: %s", failed,
                            "; ".join(sorted({str(results[k]["error"]) for k in failed})))
            # the client's CPU over the same window as the server's (the loadgen measures its own)
            me0, me1 = 0.0, report["client_cpu_s"] / max(1e-6, report["window_s"]) * (w1 - w0)
        client.close()
    finally:
        if own:
            sidecar.stop()
    window = max(1e-6, w1 - w0)
    cores = sum(c - cpu0.get(p, 0.0) for p, c in cpu1.items()) / window
    # where the machine's CPU goes, per frame delivered: the server process (gRPC, pacing), its
    # worker processes (audio, motion, render, encode) and this benchmark's own client
    frames_in_window = max(1e-6, sum(r["fps"] for r in results) * window)
    per_front, per_worker, per_render = split_server_cpu(
        {p: c - cpu0.get(p, 0.0) for p, c in cpu1.items()}, names, sidecar.proc.pid)
    cpu_split = {
        "server_process": sum(per_front.values()),   # all front processes together (one by default)
        "workers": sum(per_worker.values()),
        "render_service": sum(per_render.values()),
        "client": me1 - me0,
    }
    cpu_ms_per_frame = {k: round(v / frames_in_window * 1000.0, 3) for k, v in cpu_split.items()}
    pct = lambda key: [x for r in results for x in r[key]]  # noqa: E731
    p50, p95, p99 = pct("lat_p50"), pct("lat_p95"), pct("lat_p99")
    stage = {k: round(float(np.mean([x for r in results for x in r["stages"][k]] or [0.0])), 3)
             for k in ("audio", "motion", "render", "encode", "transport")}
    return {
        "size": size, "fps_target": fps, "sessions": sessions, "seconds": seconds, "workers": workers,
        "fps_per_session": [round(r["fps"], 2) for r in results],
        "aggregate_fps": round(sum(r["fps"] for r in results), 1),
        "target_fps": sessions * fps,
        "frames_dropped": sum(r["dropped"] for r in results),
        "server_cpu_cores": round(cores, 3),
        # the busiest server (front) process's cores: one process's limit is one core
        "front_process_cores_max": round(max(per_front.values(), default=0.0) / window, 3),
        "front_processes": len(per_front),
        "worker_process_cores_max": round(max(per_worker.values(), default=0.0) / window, 3),
        "render_service_cores": round(cpu_split["render_service"] / window, 3) if per_render else None,
        "cpu_ms_per_frame": cpu_ms_per_frame,
        "latency_ms_p50": round(float(np.median(p50)), 1) if p50 else None,
        "latency_ms_p95": round(float(np.median(p95)), 1) if p95 else None,
        "latency_ms_p95_worst": round(float(np.max(p95)), 1) if p95 else None,
        "latency_ms_p99": round(float(np.median(p99)), 1) if p99 else None,
        "server_ms_per_frame": stage,
        "render_batch_mean": round(float(np.mean([x for r in results for x in r["batch"]] or [0.0])), 2),
        "server_rss_mb_idle": round(rss_idle, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
        # what this row's sessions added to the server's memory; the allocator can hand back memory of an
        # earlier, bigger row meanwhile, so it is never taken below 0
        "rss_mb_per_session": round(max(0.0, rss_peak - rss_idle) / sessions, 1),
        "server_gpu_mb_idle": None if gpu_idle is None else round(gpu_idle, 1),
        "server_gpu_mb_peak": None if gpu_peak is None else round(gpu_peak, 1),
        "gpu_mb_per_session": None if gpu_idle is None else round((gpu_peak - gpu_idle) / sessions, 1),
        "client": "cpp" if loadgen is not None else "python",
        "pixel_format": pixel_format.value,
    }


def _machine() -> dict:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def bare_renderer_fps(size: int, batch: int, threads: int, cache_dir: Path | None, backend: str = "torch",
                      device: str = "cpu", jpeg_quality: int = 0) -> float | None:
    """Frames/s of the renderer alone (same kernels, no server), scaled to `threads` workers on CPU
    (a GPU backend is measured as it is: one device)."""
    try:
        from .render.throughput import bare_render_throughput
    except ImportError:
        return None
    r = bare_render_throughput(size=size, batch=batch, seconds=3.0, backend=backend, device=device,
                               jpeg_quality=jpeg_quality)
    return float(r["frames_per_s"]) * (threads if device.startswith("cpu") else 1)


def _loadgen(client: str) -> Path | None:
    """None for the Python client; the built lpmnpc_loadgen for `cpp` (LoadgenUnavailable says what is
    missing); `auto`: the native client when it builds here, else None (the Python one)."""
    if client == "python":
        return None
    if client not in ("cpp", "auto"):
        raise ValueError(f"client must be 'auto', 'python' or 'cpp', got {client!r}")
    print("building the native benchmark client (lpmnpc_loadgen) ...", flush=True)
    try:
        return build_loadgen()
    except LoadgenUnavailable as exc:
        if client == "cpp":
            raise
        print(f"the native client cannot be built here, so the benchmark uses Python clients, which take "
              f"more of this machine's CPU from the server: {str(exc).splitlines()[0]}", flush=True)
        return None


def run_scaling(sizes: list[int], session_counts: list[int], seconds: float, fps: int = 30,
                json_path: Path | None = None, plot_path: Path | None = None,
                cache_dir: Path | None = None, render_threads: int = 2, workers: int = 0,
                backend: str = "torch", device: str = "cpu", client: str = "auto",
                pixel_format: PixelFormat = PixelFormat.RGBA8, render_service: str = "auto",
                fronts: int = 1) -> dict:
    """The scaling table: aggregate fps, latency and memory for each (size, N) on one sidecar."""
    loadgen = _loadgen(client)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    speech = _speech16k()
    machine = _machine()
    print(f"lpm-npc bench (scaling): {machine['processor']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
          f"gpu {machine['gpu']}", flush=True)
    rows = []
    bare = {}
    for size in sizes:
        # a GPU is measured with the biggest batch the sweep gives one call (its best case); on CPU
        # a tick's batch per render thread or worker is small
        batch = 8 if device.startswith("cpu") else max(8, max(session_counts))
        # JPEG sessions: the bare renderer returns JPEG files too (encoded on the GPU where it can)
        bare[size] = bare_renderer_fps(size, batch, render_threads, cache_dir, backend, device,
                                       jpeg_quality=85 if pixel_format is PixelFormat.JPEG else 0)
    sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--max-sessions", str(max(session_counts)), "--no-admission",
                                                         "--render-threads", str(render_threads),
                                                         "--workers", str(workers),
                                                         "--backend", backend, "--device", device,
                                                         "--render-service", render_service,
                                                         "--fronts", str(fronts)])
    try:
        sidecar.wait_ready(300)
        # a short run first, not reported: the workers' first sessions pay one-off costs (compiled
        # kernels, GPU set-up) that a served game pays once at its start, not per row
        warm_n = min(8, max(session_counts))
        print(f"  (warm-up: {warm_n} sessions for 3 s, not reported)", flush=True)
        bench_realtime(sizes[0], 3.0, warm_n, speech, fps=fps, sidecar=sidecar, workers=workers,
                       loadgen=loadgen, pixel_format=pixel_format)
        for size in sizes:
            for n in session_counts:
                rt = bench_realtime(size, seconds, n, speech, fps=fps, sidecar=sidecar, workers=workers,
                                    loadgen=loadgen, pixel_format=pixel_format)
                rt["bare_renderer_fps"] = round(bare[size], 1) if bare[size] else None
                rt["share_of_bare"] = round(rt["aggregate_fps"] / bare[size], 3) if bare[size] else None
                rows.append(rt)
                st = rt["server_ms_per_frame"]
                print(f"  {size}x{size} N={n:3d}: {rt['aggregate_fps']:7.1f} fps of {rt['target_fps']:5d} "
                      f"| lat p50/p95/p99 {rt['latency_ms_p50']}/{rt['latency_ms_p95']}/{rt['latency_ms_p99']} ms "
                      f"| batch {rt['render_batch_mean']:.1f} | cpu {rt['server_cpu_cores']:.2f} "
                      f"| {rt['rss_mb_per_session']} MB/session "
                      + (f"(GPU {rt['gpu_mb_per_session']}) " if rt.get("gpu_mb_per_session") is not None else "")
                      + f"| ms/frame audio {st['audio']:.2f} motion {st['motion']:.2f} render {st['render']:.2f} "
                      f"encode {st['encode']:.2f} transport {st['transport']:.2f}"
                      f" | cpu ms/frame server {rt['cpu_ms_per_frame']['server_process']:.2f} "
                      f"workers {rt['cpu_ms_per_frame']['workers']:.2f} "
                      + (f"render service {rt['cpu_ms_per_frame']['render_service']:.2f} "
                         if rt["render_service_cores"] is not None else "")
                      + f"client {rt['cpu_ms_per_frame']['client']:.2f}"
                      f" | busiest server process {rt['front_process_cores_max']:.2f} cores"
                      f", worker {rt['worker_process_cores_max']:.2f}"
                      + (f", render service {rt['render_service_cores']:.2f}"
                         if rt["render_service_cores"] is not None else "")
                      + (f" | {rt['share_of_bare'] * 100:.0f}% of bare" if rt["share_of_bare"] else ""),
                      flush=True)
    finally:
        sidecar.stop()
    add_marginal_memory(rows)
    report = {**machine, "kind": "scaling", "fps": fps, "render_threads": render_threads, "workers": workers,
              "render_service": render_service, "fronts": fronts,
              "client": "cpp" if loadgen is not None else "python",
              "backend": backend, "device": device, "pixel_format": pixel_format.value,
              "rows": rows,
              "bare_renderer_fps": bare}
    print_scaling_table(report)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"wrote {json_path}")
    if plot_path:
        plot_scaling(report, Path(plot_path))
        print(f"wrote {plot_path}")
    return report


def add_marginal_memory(rows: list[dict]) -> None:
    """`rss_mb_per_added_session` per row: the peak memory over that of the same size's first row, per
    session added since. In a sweep on one server, a row's idle memory still holds what the previous
    (bigger) row allocated, so the row's own figure says little past the first row of a size."""
    for size in {r["size"] for r in rows}:
        group = sorted((r for r in rows if r["size"] == size), key=lambda r: r["sessions"])
        first = group[0]
        first["rss_mb_per_added_session"] = first["rss_mb_per_session"]
        for r in group[1:]:
            added = r["sessions"] - first["sessions"]
            if added == 0:  # the same row again
                r["rss_mb_per_added_session"] = r["rss_mb_per_session"]
                continue
            r["rss_mb_per_added_session"] = round(
                max(0.0, r["server_rss_mb_peak"] - first["server_rss_mb_peak"]) / added, 1)


def print_scaling_table(report: dict) -> None:
    print("\n| size | NPCs | frames/s (target) | p50 / p95 / p99 latency ms | mean batch | server cores | "
          "CPU ms/frame: server / workers (+ render service) / bench client | MB per added session host (GPU) | "
          "share of bare renderer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report["rows"]:
        share = f"{r['share_of_bare'] * 100:.0f}%" if r.get("share_of_bare") else "-"
        cm = r.get("cpu_ms_per_frame") or {}
        split = "-"
        if cm:
            workers = f"{cm['workers']:.2f}" + (f" (+ {cm['render_service']:.2f})" if r.get("render_service_cores")
                                                 is not None else "")
            split = f"{cm['server_process']:.2f} / {workers} / {cm['client']:.2f}"
        print(f"| {r['size']} | {r['sessions']} | {r['aggregate_fps']} ({r['target_fps']}) | "
              f"{r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['render_batch_mean']} | "
              f"{r['server_cpu_cores']} | {split} | {r.get('rss_mb_per_added_session', r['rss_mb_per_session'])}"
              + (f" ({r['gpu_mb_per_session']})" if r.get("gpu_mb_per_session") is not None else "")
              + f" | {share} |")


def plot_scaling(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for size in sorted({r["size"] for r in report["rows"]}):
        rows = [r for r in report["rows"] if r["size"] == size]
        n = [r["sessions"] for r in rows]
        ax1.plot(n, [r["aggregate_fps"] for r in rows], "o-", label=f"{size}² achieved")
        ax1.plot(n, [r["target_fps"] for r in rows], ":", color=ax1.lines[-1].get_color(), alpha=0.5)
        ax2.plot(n, [r["latency_ms_p95"] or 0 for r in rows], "o-", label=f"{size}² p95")
        ax2.plot(n, [r["latency_ms_p50"] or 0 for r in rows], "x--", color=ax2.lines[-1].get_color(),
                 label=f"{size}² p50")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NPC sessions")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("frames/s delivered (dotted: 30 fps x N)")
    ax1.set_yscale("log")
    ax2.set_ylabel("audio -> frame latency, ms")
    ax2.set_yscale("log")
    fig.suptitle(f"lpm-npc scaling — {report['processor']}, {report['cpu_count']} cores, "
                 f"gpu {report['gpu']}, {report.get('client', 'python')} client, {report['date'][:10]}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_bar(sessions: int, fps: int) -> str:
    """The latency bar that applies: one NPC (the foundation's), or many (issue 6's: one frame + lookahead)."""
    la = SessionOptions().lookahead_ms
    if sessions <= 1:
        return f"p95 <= 100 ms + lookahead {la} ms"
    return f"p95 <= one frame {1000 / fps:.0f} ms + lookahead {la} ms = {1000 / fps + la:.0f} ms"


def run_bench(size: int = 512, seconds: float = 20.0, sessions: int = 1, fps: int = 30,
              stage_frames: int = 300, json_path: Path | None = None, cache_dir: Path | None = None,
              workers: int = 0, client: str = "auto", pixel_format: PixelFormat = PixelFormat.RGBA8,
              backend: str = "torch", device: str = "cpu", render_service: str = "auto",
              fronts: int = 1) -> dict:
    loadgen = _loadgen(client)
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
    batched = bench_stages(size, max(30, stage_frames // 4), speech, cache_dir, batch=4)
    b = batched["ms_per_frame"]
    print(f"  4 sessions rendered together: {batched['cpu_ms_per_frame']:.3f} ms CPU/frame (motion {b['motion']:.3f}, "
          f"render {b['render']:.3f}, encode {b['encode']:.3f}) against {stages['cpu_ms_per_frame']:.3f} alone")
    stages["batch4"] = batched
    rt = bench_realtime(size, seconds, sessions, speech, fps=fps, cache_dir=cache_dir, workers=workers,
                        loadgen=loadgen, pixel_format=pixel_format, backend=backend, device=device,
                        render_service=render_service, fronts=fronts)
    print(f"\nReal time over loopback gRPC: {sessions} session(s), {size}x{size} {pixel_format.name} @ {fps} fps, {seconds:.0f} s of live speech "
          f"({rt['client']} client; server with {workers} worker process(es)"
          + (f" under {fronts} front processes" if fronts > 1 else "") + ")")
    print(f"  received fps        {rt['fps_per_session']} (aggregate {rt['aggregate_fps']} of {rt['target_fps']})")
    print(f"  frames dropped      {rt['frames_dropped']}")
    print(f"  server CPU          {rt['server_cpu_cores']:.2f} cores of {os.cpu_count()}  (bar: <= 1 core for one NPC)")
    print(f"  latency audio->frame p50 {rt['latency_ms_p50']} ms, p95 {rt['latency_ms_p95']} ms "
          f"(worst session {rt['latency_ms_p95_worst']}), p99 {rt['latency_ms_p99']} ms "
          f"(bar: {_latency_bar(sessions, fps)})")
    st = rt["server_ms_per_frame"]
    print(f"  server ms/frame     audio {st['audio']}, motion {st['motion']}, render {st['render']} "
          f"(batch of {rt['render_batch_mean']}), encode {st['encode']}, transport {st['transport']}")
    cm = rt["cpu_ms_per_frame"]
    print(f"  CPU ms per frame    server process{'es' if fronts > 1 else ''} {cm['server_process']}, "
          f"workers {cm['workers']}, "
          + (f"render service {cm['render_service']}, " if rt["render_service_cores"] is not None else "")
          + f"benchmark client {cm['client']} (busiest server process: {rt['front_process_cores_max']:.2f} "
          f"cores, busiest worker {rt['worker_process_cores_max']:.2f}"
          + (f", render service {rt['render_service_cores']:.2f}" if rt["render_service_cores"] is not None else "")
          + ")")
    print(f"  server memory       {rt['server_rss_mb_idle']} MB idle, {rt['server_rss_mb_peak']} MB peak, "
          f"{rt['rss_mb_per_session']} MB per session")
    if rt["gpu_mb_per_session"] is not None:
        print(f"  GPU memory          {rt['server_gpu_mb_idle']} MB idle, {rt['server_gpu_mb_peak']} MB peak, "
              f"{rt['gpu_mb_per_session']} MB per session")
    report = {**_machine(), "stages": stages, "realtime": rt}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {json_path}")
    return report
