"""The sidecar process: grpc.aio server, health, reflection, graceful drain on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Callable

import cv2
import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..config import ServerConfig
from ..runtime.fronts import FrontContext
from ..runtime.runtime import Runtime
from ..v1 import lpm_npc_pb2 as pb
from ..v1 import lpm_npc_pb2_grpc as pb_grpc
from .servicer import NpcServicer

log = logging.getLogger(__name__)
BEAT_S = 0.5   # a server's event loop notes it runs this often (with several fronts: front 0 reads it)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NpcService"].full_name


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Message limits and keepalive settings for hour-long streams."""
    return [
        # Two sidecars must never silently share a port (gRPC enables SO_REUSEPORT by default); several
        # fronts of one server do share it, on purpose (server/fronts.py checks the port is free first).
        ("grpc.so_reuseport", 1 if config.front_processes > 1 else 0),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class LoopWatch:
    """The event loop notes that it runs (every BEAT_S at most), and a thread logs, with every thread's
    stack, when it has not run for `limit_s`.

    Every stream the process sends is frozen then. With several fronts each note is also the front's
    heartbeat (`beat`), and front 0 kills and restarts a front that stops beating (server/fronts.py);
    front 0 and a one-process server have nobody to do that, so at least the log says where the loop
    is stuck. Once per stall; it says when the loop runs again."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit_s: float, beat: Callable[[], None] | None = None):
        self.limit_s = float(limit_s)
        self.stalls = 0
        self._last = time.monotonic()
        self._loop = loop
        self._beat = beat
        self._every = min(BEAT_S, self.limit_s / 4) if self.limit_s > 0 else BEAT_S
        self._stop = threading.Event()
        if self.limit_s > 0 or beat is not None:
            loop.call_soon_threadsafe(self._tick)
        if self.limit_s > 0:
            threading.Thread(target=self._watch, name="loop-watch", daemon=True).start()

    def _tick(self) -> None:
        self._last = time.monotonic()
        if self._beat is not None:
            self._beat()
        if not self._stop.is_set():
            self._loop.call_later(self._every, self._tick)

    def _watch(self) -> None:
        stalled_since = None
        while not self._stop.wait(max(0.05, min(5.0, self.limit_s / 3))):
            stale = time.monotonic() - self._last
            if stale > self.limit_s and stalled_since is None:
                stalled_since = self._last
                self.stalls += 1
                log.error("this server process's event loop has not run for %.0f s: every stream it sends is "
                          "frozen. Its threads' stacks:\n%s", stale, _stacks())
            elif stale <= self.limit_s and stalled_since is not None:
                log.warning("the event loop runs again after a stall of about %.0f s", self._last - stalled_since)
                stalled_since = None

    def stop(self) -> None:
        self._stop.set()


def _stacks() -> str:
    """Every thread's current stack, as text (for the log)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame))
                     for ident, frame in sys._current_frames().items())


@dataclass
class RunningServer:
    server: grpc.aio.Server
    servicer: NpcServicer
    health: health.aio.HealthServicer
    runtime: Runtime
    executor: ThreadPoolExecutor
    port: int
    loop_watch: LoopWatch | None = None

    async def drain_and_stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, tell streams to resume elsewhere, let them finish within the budget."""
        grace = self.runtime.config.drain_seconds if grace_s is None else grace_s
        log.info("draining: %d active sessions, %.1f s budget", self.runtime.active_sessions, grace)
        await self.health.enter_graceful_shutdown()
        self.servicer.announce_drain()
        await self.server.stop(grace)
        await self.servicer.stop_pumps()  # a pump still sleeping to its next frame must not render
        if self.loop_watch is not None:
            self.loop_watch.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.runtime.close()


async def start_server(config: ServerConfig, runtime: Runtime | None = None,
                       serving: bool = True) -> RunningServer:
    """Start serving on config.host:config.port (port 0 picks a free one).

    With serving=False the health service says NOT_SERVING until the caller finishes warming up
    (serve_forever does: default rig, frame-cost calibration, the direction model)."""
    _one_thread_per_render()
    runtime = runtime or Runtime(config)
    # Load the sentence model for free-text directions in the background: the first direction
    # would otherwise wait seconds for it.
    executor = ThreadPoolExecutor(max_workers=max(1, config.render_threads), thread_name_prefix="render")
    server = grpc.aio.server(options=grpc_options(config), maximum_concurrent_rpcs=None)
    servicer = NpcServicer(runtime, executor)
    pb_grpc.add_NpcServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"could not bind {address}: is another server using the port?")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING if serving
                                  else health_pb2.HealthCheckResponse.NOT_SERVING)
    log.info("lpm-npc serving on %s:%d (backend %s, max %d sessions)", config.host, port,
             runtime.renderer.name, config.max_sessions)
    front = runtime.front
    beat = (lambda: front.load.beat(front.slot)) if front is not None else None
    return RunningServer(server, servicer, health_servicer, runtime, executor, port,
                         LoopWatch(asyncio.get_running_loop(), config.loop_stall_s, beat))


def _one_thread_per_render() -> None:
    """One render = one core: parallelism comes from sessions running on the executor's threads."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the CPU warp uses cv2.remap; one thread per render as well


async def _warm(runtime: Runtime, warm_default: bool) -> None:
    """Everything a first session would otherwise wait for: the default rig, the worker processes,
    the frame-cost calibration and the direction model."""
    loop = asyncio.get_running_loop()
    if warm_default:
        # Build (or load) the default character now so the first session starts without a pause.
        await loop.run_in_executor(None, runtime.store.ensure_default)
    if runtime.pool is not None:
        # Worker processes import torch and load the renderer (seconds): be ready before SERVING.
        await loop.run_in_executor(None, runtime.pool.wait_ready)
    if runtime.config.admission:
        # Measure what a frame costs here, for admission control (about a second).
        await loop.run_in_executor(None, runtime.calibrate)
    if warm_default:
        # The sentence model for free-text directions: loading it takes seconds of CPU (and the GIL),
        # which would stall live sessions; do it before saying SERVING.
        from ..performance.direction import warm_up

        try:
            await loop.run_in_executor(None, warm_up)
        except Exception:  # noqa: BLE001 - directions then answer "not applied"; the rest works
            log.exception("the direction model could not be loaded")
    runtime.publish_load()


def _logging_setup() -> tuple[str, str]:
    """This process's log level and format, for the front processes it starts."""
    from ..logs import JsonFormatter

    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
    return logging.getLevelName(root.getEffectiveLevel()).lower(), fmt


async def serve_forever(config: ServerConfig, ready: threading.Event | None = None,
                        warm_default: bool = True, front: FrontContext | None = None,
                        parent: Connection | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain and stop.

    With `config.front_processes` > 1 this process is front 0 and starts the others (server/fronts.py);
    they call this with their `front` and the `parent` pipe they report ready on."""
    loop = asyncio.get_running_loop()
    group = None
    if front is None and config.front_processes > 1:
        from ..runtime.process_name import name_this_process
        from .fronts import FrontGroup

        name_this_process("lpm-npc-front0")
        group = FrontGroup(config, *_logging_setup())
        config, front = group.configs[0], group.contexts[0]
    try:
        if front is None:
            # One process: bind at once and say NOT_SERVING while warming up (health tells clients).
            running = await start_server(config, serving=False)
            await _warm(running.runtime, warm_default)
        else:
            # One of several on a port: the kernel may hand this process a connection as soon as it
            # listens, so it warms up first, and front 0 listens once every other front does.
            _one_thread_per_render()
            runtime = await loop.run_in_executor(None, Runtime, config, front)
            try:
                await _warm(runtime, warm_default)
                if group is not None:
                    await loop.run_in_executor(None, group.wait_ready)
                running = await start_server(config, runtime, serving=False)
            except BaseException:
                runtime.close()
                raise
    except BaseException:
        if group is not None:
            await loop.run_in_executor(None, group.stop)
        raise
    for name in ("", SERVICE_NAME):
        await running.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    # Everything imported and built so far (torch, mediapipe, the default rig) lives for the whole
    # process: move it out of the collector's reach so a full collection never stalls the frame clock.
    gc.collect()
    gc.freeze()
    _watch_gc_pauses()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass
    if parent is not None:
        parent.send(("ready", running.port))
        _stop_when_parent_is_gone(parent, loop, stop)
    if ready is not None:
        ready.set()
    if front is None or group is not None:
        print(f"lpm-npc listening on {config.host}:{running.port}", flush=True)
    await stop.wait()
    log.info("signal received, shutting down")
    if group is not None:
        group.signal_stop()   # every front drains its own streams at the same time
    await running.drain_and_stop()
    if group is not None:
        await loop.run_in_executor(None, group.stop)


def _stop_when_parent_is_gone(parent: Connection, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """A front process whose front 0 is gone (killed) drains and stops: its pipe reads EOF."""

    def watch() -> None:
        try:
            while True:
                parent.recv()
        except (EOFError, OSError):
            pass
        log.info("front 0 is gone; stopping")
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _watch_gc_pauses(threshold_ms: float = 30.0) -> None:
    """Log garbage-collector pauses long enough to delay frames."""
    started: dict[str, float] = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            ms = (time.perf_counter() - started.pop("t")) * 1000.0
            if ms > threshold_ms:
                log.warning("garbage collection (generation %d) paused the server for %.0f ms",
                            info.get("generation", -1), ms)

    gc.callbacks.append(callback)


class BackgroundServer:
    """A server on its own thread and event loop: for the demo, tests and benchmarks."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lpm-npc-server", daemon=True)
        self.running: RunningServer | None = None

    def start(self) -> "BackgroundServer":
        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start_server(self.config), self.loop).result(120)
        return self

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def runtime(self) -> Runtime:
        assert self.running is not None
        return self.running.runtime

    def stop(self, grace_s: float = 1.0) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.drain_and_stop(grace_s), self.loop).result(30)
            self.running = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
