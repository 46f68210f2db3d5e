"""Typed configuration with defaults: the server, one session's output, and limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InvalidInputError
from .types import PixelFormat

SUPPORTED_FPS: tuple[int, ...] = (10, 12, 15, 20, 24, 25, 30, 60)  # < 24: level of detail
MIN_SIZE, MAX_SIZE = 16, 1024
DEFAULT_CHARACTER_ID = "default"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


MAX_AUTO_WORKERS = 8  # each worker process holds its own torch, renderer and models (~330 MB at idle)


def auto_worker_processes(device: str = "cpu") -> int:
    """`--workers auto`: one worker process per usable core on CPU (one process is held to about one
    core by Python's GIL), at most MAX_AUTO_WORKERS; 0 (everything in the server process) on one core.
    With a GPU the frames are made there, by one render service process (runtime/render_service.py), and
    the worker processes carry the per-session CPU work (audio features, lip-sync, motion; about
    1.5 ms per frame, 2.9 cores for 64 NPCs at 30 fps): half the cores, at most MAX_AUTO_WORKERS."""
    cores = usable_cores()
    if cores < 2:
        return 0
    if str(device).startswith("cpu"):
        return min(cores, MAX_AUTO_WORKERS)
    return max(1, min(cores // 2, MAX_AUTO_WORKERS))


MAX_AUTO_FRONTS = 4


def auto_front_processes(device: str = "cpu", workers: int = 0) -> int:
    """`--fronts auto`: server processes sharing the port (server/fronts.py). One on a CPU, where the
    frame makers, not the server process's ~0.6 ms per frame sent, are the limit. With a GPU device and
    worker processes, one per two workers, at most MAX_AUTO_FRONTS: on the H100 machine one server
    process sent at most 1368 frames/s (64 NPCs at 30 fps need 1920) while 3.8 of 16 cores were busy."""
    if str(device).startswith("cpu") or workers < 2:
        return 1
    return max(1, min(workers // 2, MAX_AUTO_FRONTS))


def default_cache_dir() -> Path:
    """Where rigs are cached: $LPM_NPC_CACHE, else ~/.cache/lpm-npc."""
    env = os.environ.get("LPM_NPC_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lpm-npc"


@dataclass(frozen=True)
class OutputOptions:
    """What one session's frames look like. Validated by `validated()`."""

    fps: int = 30
    width: int = 512
    height: int = 512
    pixel_format: PixelFormat = PixelFormat.RGBA8
    flip_y: bool = False
    alpha_matte: bool = False
    jpeg_quality: int = 85

    def validated(self) -> "OutputOptions":
        if self.fps not in SUPPORTED_FPS:
            raise InvalidInputError(
                f"fps={self.fps} is not supported; use one of {list(SUPPORTED_FPS)} (0 = 30)."
            )
        for name, value in (("width", self.width), ("height", self.height)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise InvalidInputError(
                    f"{name}={value} is out of range; frames are {MIN_SIZE}..{MAX_SIZE} px "
                    f"(0 = 512)."
                )
        if not 1 <= self.jpeg_quality <= 100:
            raise InvalidInputError(f"jpeg_quality={self.jpeg_quality} must be 1..100 (0 = 85).")
        return self

    def with_changes(self, **changes) -> "OutputOptions":
        return replace(self, **changes).validated()


@dataclass(frozen=True)
class SessionOptions:
    """Everything a Perform session is configured with."""

    character_id: str = DEFAULT_CHARACTER_ID
    output: OutputOptions = field(default_factory=OutputOptions)
    lookahead_ms: int = 80
    send_rig: bool = False
    rig_format: str = "arkit52"   # names in RigFrame.weights: "arkit52" or "native"
    stats_interval_ms: int = 1000
    npc_sample_rate: int = 16000
    resume_token: str = ""

    def validated(self) -> "SessionOptions":
        self.output.validated()
        if not 0 <= self.lookahead_ms <= 500:
            raise InvalidInputError(f"lookahead_ms={self.lookahead_ms} must be 0..500.")
        if not 8000 <= self.npc_sample_rate <= 96000:
            raise InvalidInputError(
                f"npc_sample_rate={self.npc_sample_rate} must be 8000..96000 Hz (0 = 16000)."
            )
        if not 100 <= self.stats_interval_ms <= 60000:
            raise InvalidInputError(
                f"stats_interval_ms={self.stats_interval_ms} must be 100..60000 (0 = 1000)."
            )
        return self


@dataclass(frozen=True)
class ServerConfig:
    """The sidecar process. Binds loopback by default: the game runs on the same machine."""

    host: str = "127.0.0.1"
    port: int = 50051
    max_sessions: int = 16
    # Portraits arrive as one message: 32 MiB leaves room for a 4K PNG; frames out are at most
    # 1024*1024*4 = 4 MiB. Anything larger is refused by gRPC with RESOURCE_EXHAUSTED.
    max_message_bytes: int = 32 * 1024 * 1024
    # A single audio chunk above this is refused (non-fatal): ~16 s of 48 kHz stereo.
    max_audio_chunk_bytes: int = 3 * 1024 * 1024
    cache_dir: Path = field(default_factory=default_cache_dir)
    backend: str = "torch"          # renderer: torch | onnxruntime | tensorrt (render/backends)
    device: str = "cpu"             # torch: cpu, cuda; onnxruntime: cpu, cuda, tensorrt-ep; tensorrt: cuda
    render_threads: int = 2
    # 0: sessions run in this process (one GIL); N >= 1: sharded over N worker processes, each
    # doing audio, motion, batched rendering and encoding for its sessions (runtime/workers.py).
    worker_processes: int = 0
    # Server processes listening on the same port (SO_REUSEPORT), each with its share of the worker
    # processes and its own gRPC streams; admission, resume states, characters and the render service
    # are shared (server/fronts.py, runtime/fronts.py). 1: one process sends every frame.
    front_processes: int = 1
    # With worker processes: "auto" (on with a GPU device), "on" or "off". On: one render process
    # renders for every worker (one GPU context, the requests of all workers in one batched call per
    # tick); the workers keep audio, lip-sync, motion and pacing (runtime/render_service.py).
    render_service: str = "auto"
    # Admission control (see runtime/capacity.py). A frame costs fixed + per-megapixel ms of one
    # frame maker (a render thread, or a worker process); 0 = measure both at start-up on this machine
    # and backend (a talking NPC's frame, all makers at once) and add the serving cost below.
    admission: bool = True
    frame_cost_fixed_ms: float = 0.0
    frame_cost_per_mpx_ms: float = 0.0
    # The server's own work per frame besides making it (the gRPC message with the pixels, pacing, a
    # worker's pipe and frame ring), added to the measured cost. `lpm-npc bench` on the 2-core VM gave
    # server + worker CPU per delivered frame about 2.2 ms over the calibrated cost at 256x256 and
    # 5.7 ms at 512x512 (docs/bench_scaling_cpu_cppclient.json); with those figures the server admitted
    # 9 NPCs at 256x256 of which 5 then ran late, so these carry a margin: 3.1 ms at 256x256, 8.1 ms at
    # 512x512.
    serve_cost_fixed_ms: float = 1.5
    serve_cost_per_mpx_ms: float = 25.0
    # With worker processes: the server process's own CPU per frame it sends (gRPC write, pacing, the
    # worker's reply), a limit of its own since it is one process. `lpm-npc bench` gave 0.59-0.81 ms
    # on the 2-core VM (JPEG, 96-128 px, 8-16 NPCs) and 0.60 ms on the H100 machine's host (JPEG 512 px,
    # 64 NPCs: it sent 1368 frames/s at most); 0 = no such limit.
    front_cost_ms: float = 0.7
    # Prepared (renderer-ready) characters no live session uses are kept, least recently used first, up
    # to this many MB per process (the render service's on its device), then let go: one takes about
    # 35 MB and 30 ms to prepare again (runtime/rig_cache.py). Those of live sessions are always kept.
    idle_rig_cache_mb: float = 256.0
    utilisation: float = 0.85       # share of the frame makers' time the server may commit
    coalesce_ms: float = 2.0        # a tick's batch waits this long for the rest of its requests
    # the render service waits at most this long for the other workers' requests of a tick (each
    # worker first runs audio and motion for its sessions: ~1.5 ms per NPC)
    service_coalesce_ms: float = 12.0
    # a render service that has not answered the server's check, or has had a batch rendering, for
    # this long is taken for hung (a stuck GPU call): it is killed and started again
    service_hang_s: float = 30.0
    # a worker process with a frame request unanswered for this long, which then does not answer a check
    # (its main loop is stuck) or answers that it is not waiting for the render service (its frame thread
    # is stuck), is taken for hung: it is killed and started again, its sessions end (their clients resume)
    worker_hang_s: float = 30.0
    # with several fronts: a front whose event loop has not beaten for this long is killed and started
    # again by front 0 (its streams end; their clients reconnect to any front and resume). Longer than a
    # worker's check takes (worker_hang_s + 10 s + a check interval): a front whose loop is blocked
    # sending to a stuck worker's full pipe then loses only that worker, not all its streams.
    front_hang_s: float = 60.0
    # a server process whose own event loop has not run for this long logs it with every thread's stack
    # (once per stall): front 0, or a one-process server, which nothing else restarts
    loop_stall_s: float = 30.0
    drain_seconds: float = 5.0
    outbound_queue_frames: int = 2
