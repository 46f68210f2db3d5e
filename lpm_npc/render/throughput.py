"""Throughput of the bare renderer: the same kernels as the server, with no server around them.

`bare_render_throughput(size, batch, seconds)` renders `batch` sessions of the built-in character per
`render_many` call (one call = one server tick) for about `seconds`, with a deterministic talking /
blinking / head-swaying motion, and reports frames/s and ms/frame. The server's throughput can be
reported as a share of it (same backend, same thread budget).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from lpm_npc.performance.motion import CHANNEL_INDEX, NUM_CHANNELS, clip_motion


@functools.lru_cache(maxsize=4)
def default_rig(cache_dir=None):
    """The built-in character's rig, through the character store: loaded from the rig cache
    (`cache_dir`, default $LPM_NPC_CACHE or ~/.cache/lpm-npc) when it is there, else built once with
    the face landmarker and cached."""
    from pathlib import Path

    from lpm_npc.character.store import CharacterStore
    from lpm_npc.config import DEFAULT_CHARACTER_ID, default_cache_dir

    store = CharacterStore(Path(cache_dir) if cache_dir else default_cache_dir())
    try:
        return store.get(DEFAULT_CHARACTER_ID)
    finally:
        store.close()


def talking_motions(n: int, fps: float = 30.0, seed: int = 0) -> np.ndarray:
    """(n, NUM_CHANNELS) float32 speech-like motion: jaw syllables, smile, blinks, head sway, gaze."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    m = np.zeros((n, NUM_CHANNELS), np.float32)
    c = CHANNEL_INDEX
    m[:, c["jaw_open"]] = np.clip(0.35 + 0.35 * np.sin(2 * np.pi * 4.0 * t) + 0.1 * rng.standard_normal(n), 0, 1)
    m[:, c["mouth_round"]] = np.clip(0.3 * np.sin(2 * np.pi * 1.3 * t), 0, 1)
    m[:, c["smile"]] = 0.3 + 0.2 * np.sin(2 * np.pi * 0.2 * t)
    m[:, c["brow_up"]] = np.clip(0.3 * np.sin(2 * np.pi * 0.5 * t), 0, 1)
    blink = np.clip(1.0 - np.abs(((t % 3.7) - 0.1) / 0.08), 0, 1)
    m[:, c["blink_l"]] = blink
    m[:, c["blink_r"]] = blink
    m[:, c["gaze_x"]] = 0.3 * np.sin(2 * np.pi * 0.25 * t)
    m[:, c["gaze_y"]] = 0.1 * np.sin(2 * np.pi * 0.17 * t)
    m[:, c["head_yaw"]] = 6.0 * np.sin(2 * np.pi * 0.3 * t)
    m[:, c["head_pitch"]] = 3.0 * np.sin(2 * np.pi * 0.23 * t + 1.0)
    m[:, c["head_roll"]] = 2.0 * np.sin(2 * np.pi * 0.19 * t + 2.0)
    return clip_motion(m).astype(np.float32)


def bare_render_throughput(size: int, batch: int, seconds: float, backend: str = "torch", device: str = "cpu",
                           threads: int | None = 1, cache_dir=None, rig=None, warmup: int = 3,
                           jpeg_quality: int = 0) -> dict:
    """Render `batch` sessions (the built-in character unless `rig`) per call for ~`seconds` of wall time.

    threads: torch / OpenCV / ORT thread budget (1 = one core, like `lpm-npc bench`'s stage costs;
    None leaves the process settings alone). jpeg_quality > 0 asks for JPEG files (encoded on the GPU by
    a renderer that can, else the pixels come back). Returns frames_per_s, ms_per_frame, ms_per_call,
    cpu_ms_per_frame (process CPU time) and the settings.
    """
    import cv2

    from lpm_npc.render.backends import make_renderer
    from lpm_npc.render.renderer import RenderRequest

    old = (torch.get_num_threads(), cv2.getNumThreads())
    if threads is not None:
        torch.set_num_threads(int(threads))
        cv2.setNumThreads(int(threads))
    try:
        r = make_renderer(backend, device, cache_dir)
        prepared = r.prepare(rig if rig is not None else default_rig(cache_dir))
        motions = talking_motions(600)
        offsets = (np.arange(batch) * 97) % len(motions)   # sessions at different points of the talk

        def call(i: int) -> None:
            r.render_many([RenderRequest(prepared, motions[(i + o) % len(motions)], size, size,
                                         jpeg_quality=jpeg_quality) for o in offsets])

        for i in range(warmup):
            call(i)
        calls = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while True:
            call(warmup + calls)
            calls += 1
            wall = time.perf_counter() - t0
            if wall >= seconds:
                break
        cpu = time.process_time() - c0
    finally:
        if threads is not None:
            torch.set_num_threads(old[0])
            cv2.setNumThreads(old[1])
    frames = calls * batch
    return {"backend": r.name, "size": size, "batch": batch, "threads": threads, "calls": calls, "frames": frames,
            "seconds": wall, "frames_per_s": frames / wall, "ms_per_frame": wall / frames * 1e3,
            "ms_per_call": wall / calls * 1e3, "cpu_ms_per_frame": cpu / frames * 1e3}
