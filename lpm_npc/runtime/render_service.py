"""One render process for all worker processes: one GPU context, one batched call per tick.

With a GPU, N worker processes that each render their own sessions do not scale: the processes'
contexts time-slice the GPU and their waits spin on the CPU. Measured on one H100 (512x512, JPEG
encoded on the GPU, `python tools/gpu_contention.py`): 1 process
with batches of 8 gave 1047 frames/s; 2, 4 and 8 such processes gave 878, 1045 and 1167 frames/s
together, at 2.3, 3.8 and 6.9 ms of CPU per frame; 1 process with batches of 64 gave 2541 frames/s at
0.39 ms of CPU per frame.

So with a render service the worker processes keep everything per session that costs CPU (audio
features, lip-sync, the performance model, pacing), and hand each tick's motion vectors to this one
process, which renders the requests of every worker together in one `render_many` call (JPEG-encoded
on the GPU when the sessions ask for JPEG) and sends each worker its frames back.

    worker -> service   ("hello",)                          -> (renderer name, encodes_jpeg)
                        ("prepare", key, pickled rig)        -> key       (once per character and worker)
                        ("render", [(key, motion, w, h, alpha, bgra, flip_y, jpeg_quality), ...])
                                                             -> [frame, ...]  (pixels, or a JPEG file)
    service -> worker   (True, result) or (False, exception)

Rigs are keyed by a hash of their pickled bytes, so workers serving the same character share one
prepared copy on the GPU. Requests that arrive while a batch renders make up the next batch; after the
first request of a batch the service waits for the requests of every worker that rendered in the last
half second, at most `ServerConfig.service_coalesce_ms`: sessions tick on one server-wide grid
(`scheduler.aligned_start`), so in steady state one call renders every NPC's frame of a tick.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import pickle
import queue
import secrets
import socket
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener, wait
from pathlib import Path

import numpy as np

from ..config import ServerConfig
from ..errors import LpmError
from ..render.renderer import RenderRequest
from .child_signals import leave_stopping_to_the_server
from .rig_cache import PreparedRigs
from .stacks import dump_stacks_on_signal, kill_with_stacks

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 180.0   # a worker waits this long for the service (it warms up the GPU first)
MAX_RESTARTS = 5            # a service that died is started again at most this often ...
RESTART_WINDOW_S = 600.0    # ... within this many seconds; past that its sessions fail (a crash loop)
RIG_IN_USE_S = 10.0         # a character rendered this recently is in use: never let go (rig_cache.py)
WARM_BATCH_GPU = 64         # frames per size in the warm-up batch on a GPU
ACTIVE_S = 0.5              # a worker that sent a render request this recently is waited for


class RenderServiceError(LpmError):
    """The render service is gone or failed a batch."""


class ServiceRestartedError(RenderServiceError):
    """The connection to the render service broke and a new service answered: it holds no characters
    yet, so the worker prepares them again and repeats the request."""


class UnknownRigError(RenderServiceError):
    """A request named characters the service no longer holds (it lets go of idle ones: rig_cache.py): the
    worker prepares them again and repeats the request."""

    def __init__(self, keys):
        self.keys = sorted(keys)
        super().__init__(f"characters {', '.join(k[:12] for k in self.keys)} are not prepared in the render service")

    def __reduce__(self):
        return type(self), (self.keys,)


class RemoteRig:
    """What a worker holds for a character prepared in the render service."""

    __slots__ = ("key", "rig")

    def __init__(self, key: str, rig):
        self.key = key
        self.rig = rig   # to prepare it again if the service let it go


class RemoteRenderer:
    """The `Renderer` a worker process uses when a render service renders for it."""

    def __init__(self, address: str, authkey: bytes, timeout: float = CONNECT_TIMEOUT_S):
        self.address, self.authkey = address, authkey
        self._lock = threading.Lock()
        self._calling: dict[int, float] = {}   # thread -> when its call began (waiting for the service)
        self._keys: set[str] = set()
        self.conn = self._connect(timeout)
        name, self.encodes_jpeg = self._call(("hello",), timeout)
        self.name = f"{name} (render service)"

    def _connect(self, timeout: float) -> Connection:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return Client(self.address, family="AF_UNIX", authkey=self.authkey)
            except (FileNotFoundError, ConnectionRefusedError, EOFError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RenderServiceError(f"the render service at {self.address} did not come up in "
                                             f"{timeout:.0f} s ({exc!r}); see the server log for why it stopped")
                time.sleep(0.05)

    def _reconnect(self, cause: BaseException) -> None:
        """The service went away (caller holds _lock): wait for the server to start it again."""
        try:
            self.conn.close()
        except OSError:
            pass
        log.warning("the render service connection broke (%r); waiting for the service to come back", cause)
        self.conn = self._connect(CONNECT_TIMEOUT_S)
        self.conn.send(("hello",))
        if not self.conn.poll(CONNECT_TIMEOUT_S):
            raise RenderServiceError("the restarted render service did not answer")
        self.conn.recv()
        self._keys.clear()  # a new service holds no characters
        log.info("reconnected to the render service")

    @contextlib.contextmanager
    def _waiting(self):
        """Mark this thread as waiting for the service (from its outermost call on)."""
        me = threading.get_ident()
        outer = me not in self._calling
        if outer:
            self._calling[me] = time.monotonic()
        try:
            yield
        finally:
            if outer:
                self._calling.pop(me, None)

    def waiting_s(self) -> float:
        """How long the oldest call in progress has waited for the service (0: none is): a worker's
        answer to the server's hang check, since a worker waiting for a stuck service is not stuck itself
        (the service's own check deals with that)."""
        started = list(self._calling.values())
        return max(0.0, time.monotonic() - min(started)) if started else 0.0

    def _call(self, msg: tuple, timeout: float | None = None):
        with self._waiting():
            with self._lock:
                try:
                    self.conn.send(msg)
                    if timeout is not None and not self.conn.poll(timeout):
                        raise RenderServiceError(f"the render service did not answer {msg[0]!r} in {timeout:.0f} s")
                    ok, payload = self.conn.recv()
                except (EOFError, OSError, BrokenPipeError) as exc:
                    self._reconnect(exc)
                    raise ServiceRestartedError(f"the render service restarted ({exc!r})") from exc
        if not ok:
            raise payload
        return payload

    def _call_once_more_if_restarted(self, msg: tuple):
        try:
            return self._call(msg)
        except ServiceRestartedError:   # reconnected: ask the new service
            return self._call(msg)

    def prepare(self, rig) -> RemoteRig:
        data = pickle.dumps(rig, protocol=pickle.HIGHEST_PROTOCOL)
        key = hashlib.sha1(data).hexdigest()
        if key not in self._keys:
            self._call_once_more_if_restarted(("prepare", key, data))
            self._keys.add(key)
        return RemoteRig(key, rig)

    def stats(self) -> tuple[int, int]:
        """(batches, frames) the service has rendered, for every worker together."""
        return tuple(self._call_once_more_if_restarted(("stats",)))

    def render_many(self, requests: list[RenderRequest]) -> list[np.ndarray]:
        with self._waiting():   # also between a failed call and the next (preparing characters again)
            return self._render_many(requests)

    def _render_many(self, requests: list[RenderRequest]) -> list[np.ndarray]:
        items = [(rq.prepared.key, np.asarray(rq.motion, np.float32), int(rq.width), int(rq.height),
                  bool(rq.alpha_matte), bool(rq.bgra), bool(rq.flip_y), int(rq.jpeg_quality)) for rq in requests]
        for attempt in range(3):
            try:
                return self._call(("render", items))
            except UnknownRigError as exc:  # let go of (least recently rendered) or a new service
                self._keys -= set(exc.keys)
                if attempt == 2:
                    raise
            except ServiceRestartedError:
                if attempt == 2:
                    raise
            for rq in requests:
                if rq.prepared.key not in self._keys:
                    self.prepare(rq.prepared.rig)
        raise AssertionError("unreachable")

    def render(self, prepared: RemoteRig, motion: np.ndarray, width: int, height: int,
               alpha_matte: bool = False) -> np.ndarray:
        m = np.asarray(motion, np.float32).reshape(-1, np.asarray(motion).shape[-1])
        return np.stack(self.render_many([RenderRequest(prepared, row, width, height, alpha_matte) for row in m]))

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------
# the service process
# ------------------------------------------------------------------------------------------------
class _Service:
    def __init__(self, config: ServerConfig, listener: Listener, parent: Connection,
                 rig_in_use_s: float = RIG_IN_USE_S):
        from ..render.backends import make_renderer

        self.config = config
        self.listener = listener
        self.parent = parent
        self.renderer = make_renderer(config.backend, config.device, config.cache_dir)
        self.prepared = PreparedRigs(config.idle_rig_cache_mb)   # by key
        self.rig_in_use_s = float(rig_in_use_s)
        self.conns: list[Connection] = []
        self._new: list[Connection] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self.wait_s = config.service_coalesce_ms / 1000.0
        self.threads = max(1, int(config.render_threads))
        self._idle = self.threads
        self._last_seen: dict[Connection, float] = {}
        self.batches = 0
        self.frames = 0
        self.wait_total = 0.0     # s from a batch's first request to its dispatch to a render thread
        self.render_total = 0.0   # s inside render_many
        self.started = time.monotonic()
        self._rendering: dict[int, float] = {}   # render thread -> when its current batch began

    def warm_up(self) -> None:
        """Render the built-in character once at the common sizes (pixels and JPEG), so that CUDA's
        lazy start-up, kernel compilation and the JPEG encoder's set-up are not paid by the first NPC."""
        from ..character.store import CharacterStore
        from ..config import DEFAULT_CHARACTER_ID
        from ..render.throughput import talking_motions

        t0 = time.perf_counter()
        store = CharacterStore(self.config.cache_dir)
        try:
            prepared = self.renderer.prepare(store.get(DEFAULT_CHARACTER_ID))
        finally:
            store.close()
        device = str(getattr(self.renderer, "device", "cpu"))
        # On a GPU, a whole tick of many NPCs in one batch: the device memory such a batch needs, and the
        # JPEG encoder's states (render/nvjpeg.py, MAX_STATES), are taken now, not when dozens of sessions
        # join at once
        m = talking_motions(WARM_BATCH_GPU if device.startswith("cuda") else 4)
        jpeg = 85 if getattr(self.renderer, "encodes_jpeg", False) else 0
        for size in (256, 512):
            for q in {0, jpeg}:
                self.renderer.render_many([RenderRequest(prepared, row, size, size, jpeg_quality=q) for row in m])
        log.info("render service warm (%s) in %.1f s", self.renderer.name, time.perf_counter() - t0)

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError):
                return
            except Exception as exc:  # noqa: BLE001 - a client that failed the handshake
                log.warning("render service: a connection was refused (%s)", exc)
                continue
            with self._lock:
                self._new.append(conn)
            self._wake_w.send(b"x")

    def run(self) -> None:
        threading.Thread(target=self._accept, name="render-service-accept", daemon=True).start()
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(self.threads):
            threading.Thread(target=self._render_loop, args=(jobs,), name=f"render-service-{i}", daemon=True).start()
        self.parent.send(("ready", os.getpid()))
        pending: list[tuple[Connection, list]] = []
        while True:
            with self._lock:
                self.conns.extend(self._new)
                self._new.clear()
            ready = wait(self.conns + [self.parent, self._wake_r])
            if self.parent in ready:
                try:
                    msg = self.parent.recv()
                except (EOFError, OSError):
                    msg = None
                if msg == "check":   # the server's hang check: how long has the oldest batch rendered?
                    now = time.monotonic()
                    with self._lock:
                        oldest = max((now - t for t in self._rendering.values()), default=0.0)
                    try:
                        self.parent.send(("ok", oldest))
                    except (OSError, EOFError):
                        msg = None
                if msg != "check":
                    for _ in range(self.threads):
                        jobs.put(None)
                    return  # the server asked us to stop, or is gone
                ready = [c for c in ready if c is not self.parent]
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            for c in ready:
                if c is self._wake_r:
                    continue
                self._read(c, pending)
            with self._lock:
                free = self._idle > 0
            if not pending or not free:
                continue  # requests wait for a free render thread (the next batch grows meanwhile)
            # the other workers' requests of this tick: wait for every worker that rendered lately
            # (or until `service_coalesce_ms` passed), so that one call renders the whole tick
            now = time.monotonic()
            for c, _ in pending:
                self._last_seen[c] = now
            expected = [c for c in self.conns if now - self._last_seen.get(c, -1e9) < ACTIVE_S]
            deadline = now + self.wait_s
            while any(all(c is not p[0] for p in pending) for c in expected):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                more = wait([c for c in expected if all(c is not p[0] for p in pending)], timeout=left)
                if not more:
                    break
                for c in more:
                    self._read(c, pending)
                    self._last_seen[c] = time.monotonic()
            with self._lock:
                self._idle -= 1
                self.wait_total += time.monotonic() - now
            jobs.put(pending)
            pending = []

    def _render_loop(self, jobs: "queue.SimpleQueue") -> None:
        """A render thread: the GPU waits of one batch (the frames' transfer, the JPEG encoder) overlap
        the host work of the next (planning, kernel launches), which holds Python's GIL."""
        while True:
            batch = jobs.get()
            if batch is None:
                return
            me = threading.get_ident()
            with self._lock:
                self._rendering[me] = time.monotonic()
            try:
                self._render(batch)
            except Exception:  # noqa: BLE001 - a dead render thread would stall every worker
                log.exception("render service: a batch failed")
            with self._lock:
                self._rendering.pop(me, None)
                self._idle += 1
            self._wake_w.send(b"r")

    def _read(self, conn: Connection, pending: list) -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            self._drop(conn)
            return
        op = msg[0]
        try:
            if op == "render":
                pending.append((conn, msg[1]))
                return
            if op == "hello":
                result = (self.renderer.name, bool(getattr(self.renderer, "encodes_jpeg", False)))
            elif op == "stats":
                with self._lock:
                    result = (self.batches, self.frames)
            elif op == "prepare":
                key = msg[1]
                if key not in self.prepared:
                    self.prepared.put(key, self.renderer.prepare(pickle.loads(msg[2])))
                    self._let_go_of_idle_rigs(keep=key)
                result = key
            else:
                raise ValueError(f"unknown render service op {op!r}")
            self._reply(conn, True, result)
        except Exception as exc:  # noqa: BLE001 - goes back to that worker
            self._reply(conn, False, exc)

    def _let_go_of_idle_rigs(self, keep: str) -> None:
        """Idle rigs beyond the budget go; those rendered in the last `rig_in_use_s` (and `keep`, just
        prepared for a session about to start) stay. A worker whose rig went prepares it again."""
        gone = self.prepared.trim({keep}, used_within_s=self.rig_in_use_s)   # a render gets its rig
        if gone:
            log.debug("render service let go of %d idle characters (%d held, %.0f MB)", len(gone),
                      len(self.prepared), self.prepared.total_bytes / 2**20)

    def _drop(self, conn: Connection) -> None:
        """A worker's connection closed (the worker stopped or was replaced)."""
        if conn in self.conns:
            self.conns.remove(conn)
        self._last_seen.pop(conn, None)

    def _reply(self, conn: Connection, ok: bool, payload) -> None:
        try:
            conn.send((ok, payload))
        except (OSError, EOFError, BrokenPipeError):
            self._drop(conn)
        except Exception as exc:  # noqa: BLE001 - an unpicklable exception: send its text
            conn.send((False, RenderServiceError(str(exc))))

    def _render(self, pending: list[tuple[Connection, list]]) -> None:
        requests, spans, failed = [], [], []
        for conn, items in pending:
            start = len(requests)
            try:
                rigs = {key: self.prepared.get(key) for key in {item[0] for item in items}}
                missing = {key for key, prepared in rigs.items() if prepared is None}
                if missing:
                    raise UnknownRigError(missing)
                for key, motion, w, h, alpha, bgra, flip, jpeg in items:
                    requests.append(RenderRequest(rigs[key], motion, w, h, alpha, bgra=bgra,
                                                  flip_y=flip, jpeg_quality=jpeg))
            except Exception as exc:  # noqa: BLE001 - that worker's batch only
                del requests[start:]
                failed.append((conn, exc))
                continue
            spans.append((conn, start, len(requests)))
        for conn, exc in failed:
            self._reply(conn, False, exc)
        if not requests:
            return
        t0 = time.perf_counter()
        try:
            frames = self.renderer.render_many(requests)
        except Exception as exc:  # noqa: BLE001 - every worker of this batch gets the error
            log.exception("render service: a batch of %d frames failed", len(requests))
            for conn, _, _ in spans:
                self._reply(conn, False, RenderServiceError(f"rendering failed: {exc!r}"))
            return
        with self._lock:
            self.batches += 1
            self.frames += len(requests)
            self.render_total += time.perf_counter() - t0
        for conn, a, b in spans:
            self._reply(conn, True, frames[a:b])


def _service_main(config: ServerConfig, address: str, authkey: bytes, parent: Connection, log_level: int,
                  rig_in_use_s: float = RIG_IN_USE_S) -> None:
    from .process_name import name_this_process

    name_this_process("lpm-npc-render")
    dump_stacks_on_signal()
    leave_stopping_to_the_server()   # the server stops us after its workers
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s render-service %(name)s: %(message)s")
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    try:
        service = _Service(config, listener, parent, rig_in_use_s)
        service.warm_up()
        service.run()
        n = max(1, service.batches)
        log.info("render service stopped after %d batches, %d frames (%.1f per batch; per batch %.1f ms waiting "
                 "for the tick's requests, %.1f ms rendering; rendering %.0f%% of %.0f s)", service.batches,
                 service.frames, service.frames / n, service.wait_total / n * 1e3, service.render_total / n * 1e3,
                 100 * service.render_total / max(1e-9, time.monotonic() - service.started),
                 time.monotonic() - service.started)
    finally:
        listener.close()
        logging.shutdown()
        os._exit(0)


class RenderServiceProcess:
    """The server's handle on the render service: start it, tell workers where it is, start it again
    if it dies (same address: the workers reconnect and prepare their characters again), stop it."""

    def __init__(self, config: ServerConfig, rig_in_use_s: float = RIG_IN_USE_S):
        self._config, self._rig_in_use_s = config, rig_in_use_s
        self._dir = tempfile.TemporaryDirectory(prefix="lpm-npc-render-")
        self.address = str(Path(self._dir.name) / "service.sock")
        self.authkey = secrets.token_bytes(16)
        self._stopping = False
        self._lock = threading.Lock()
        self.restarts: list[float] = []   # monotonic times the service was started again
        self.failed: str | None = None    # why it is not started again (too many restarts)
        self._start()
        self._watcher = threading.Thread(target=self._watch, name="render-service-watch", daemon=True)
        self._watcher.start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        try:
            os.unlink(self.address)  # a service that died leaves its socket file behind
        except FileNotFoundError:
            pass
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_service_main, name="lpm-npc-render-service",
                                args=(self._config, self.address, self.authkey, child,
                                      logging.getLogger().getEffectiveLevel(), self._rig_in_use_s), daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid
        self._ready = False   # it says so once warmed up; it is not checked before

    def _hung(self) -> str | None:
        """Why the running service counts as hung (it did not answer the check, or a batch has been
        rendering for `service_hang_s`), or None."""
        if self._config.service_hang_s <= 0:   # no hang check (`lpm-npc serve --hang-timeout 0`)
            return None
        limit = max(0.1, float(self._config.service_hang_s))
        try:
            if not self._ready:   # still warming up (CUDA start, kernel compiles): nothing to check yet
                if self.conn.poll(0):
                    self._ready = self.conn.recv()[0] == "ready"
                return None
            self.conn.send("check")
            if not self.conn.poll(limit):
                return f"it did not answer the server's check in {limit:.0f} s"
            _, rendering_s = self.conn.recv()
        except (OSError, EOFError):
            return None   # it died: join() sees that
        if rendering_s > limit:
            return f"a batch has been rendering for {rendering_s:.0f} s"
        return None

    def _watch(self) -> None:
        hang_s = float(self._config.service_hang_s)
        interval = max(0.05, min(5.0, hang_s / 3)) if hang_s > 0 else 1.0
        while True:
            proc = self.proc
            proc.join(interval)
            if proc.is_alive():
                with self._lock:
                    if self._stopping:
                        return
                why = self._hung()   # not under the lock: stop() must not wait for a check
                if why is None:
                    continue
                with self._lock:
                    if self._stopping:
                        return
                kill_with_stacks(proc.pid, f"the render service is hung: {why}")
                proc.join()
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                recent = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    self.failed = (f"the render service died {len(recent) + 1} times in "
                                   f"{RESTART_WINDOW_S / 60:.0f} minutes (last exit code {proc.exitcode})")
                    log.error("%s; it is not started again and its sessions fail: restart the server", self.failed)
                    return
                log.error("the render service (pid %d) died (exit code %s); starting it again, its workers "
                          "reconnect", proc.pid, proc.exitcode)
                try:
                    self.conn.close()
                except OSError:
                    pass
                self.restarts.append(now)
                self._start()

    @property
    def endpoint(self) -> tuple[str, bytes]:
        return self.address, self.authkey

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
        try:
            self.conn.close()  # the service sees EOF and returns
        except OSError:
            pass
        # The watcher joins the process too: whichever reaps it first, the other's join() can return
        # with the process looking alive for a moment. Wait that out rather than call it stuck.
        deadline = time.monotonic() + timeout
        while self.proc.is_alive() and time.monotonic() < deadline:
            self.proc.join(min(0.05, max(0.0, deadline - time.monotonic())))
        self._watcher.join(timeout=1.0)
        if self.proc.is_alive():
            log.warning("the render service did not stop in %.1f s; killing it", timeout)
            self.proc.kill()   # it ignores SIGTERM (child_signals.py)
            self.proc.join(2.0)
        self._dir.cleanup()


def use_render_service(config: ServerConfig) -> bool:
    """Whether the worker processes render through one render service: `render_service` "on", or
    "auto" with a GPU device and worker processes (one context feeding the GPU big batches)."""
    mode = str(config.render_service).lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"render_service must be 'auto', 'on' or 'off', got {config.render_service!r}")
    if config.worker_processes < 1 or mode == "off":
        return False
    return mode == "on" or not str(config.device).startswith("cpu")
