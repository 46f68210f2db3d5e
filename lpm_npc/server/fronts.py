"""Several server processes on one port: front 0 (the `lpm-npc serve` process) starts the others.

Why: one Python process writes every frame of its streams to gRPC and paces them, about 0.6 ms of CPU
per frame (`lpm-npc bench`, "CPU ms/frame: server"); on the H100 machine one such process sent at most
1368 frames/s while the GPU could render 2460. With `--fronts F` the kernel spreads connections over F
processes listening on the same port (SO_REUSEPORT), each with its own worker processes; what they
must share is in runtime/fronts.py (admission, resume states, the render service).

Front 0 picks the port, starts the render service (when there is one) and the other fronts, and says
"listening" once every front is warmed up and bound. It starts a front that dies again (its streams
fail; their clients reconnect, to any front, and resume) at most `MAX_RESTARTS` times in
`RESTART_WINDOW_S`, and kills and starts again a front whose event loop stopped beating for
`ServerConfig.front_hang_s` (a hung front would hold its streams' NPCs frozen). On SIGINT/SIGTERM
every front drains its own streams at once. A front whose parent is gone (front 0 killed) drains and
stops too: its pipe to the parent reads EOF.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from ..config import ServerConfig
from ..runtime.fronts import FrontContext, SharedLoad, split_workers
from ..runtime.process_name import name_this_process
from ..runtime.render_service import RenderServiceProcess, use_render_service
from ..runtime.stacks import dump_stacks_on_signal, kill_with_stacks

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0   # a front warms up: torch, its workers, calibration, the direction model
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


def claim_port(host: str, port: int) -> int:
    """The port all fronts will share: `port`, checked free (no other server, ours or not, on it), or a
    free one for 0. The fronts bind with SO_REUSEPORT, which would otherwise let them join a group of
    another sidecar's sockets on the same port without a word."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: a port in TIME_WAIT is free
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            why = "is another server using the port?" if exc.errno == errno.EADDRINUSE else str(exc)
            raise OSError(f"could not bind {host}:{port}: {why}") from exc
        return s.getsockname()[1]


def _front_main(config: ServerConfig, front: FrontContext, conn: Connection, log_level: str,
                log_format: str) -> None:
    """A front process other than front 0: serve until SIGTERM/SIGINT or until the parent is gone."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    name_this_process(f"lpm-npc-front{front.slot}")
    dump_stacks_on_signal()
    from ..logs import setup_logging
    from .app import serve_forever

    setup_logging(log_level, log_format, prefix=f"front-{front.slot}")
    try:
        asyncio.run(serve_forever(config, front=front, parent=conn))
    except BaseException as exc:  # noqa: BLE001 - front 0 learns why, then the process ends
        log.exception("front %d failed", front.slot)
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        logging.shutdown()
        os._exit(1)
    _run_multiprocessing_finalizers()
    logging.shutdown()
    os._exit(0)   # skip torch's teardown (seconds on a busy machine): its workers are stopped already


def _run_multiprocessing_finalizers() -> None:
    """What the interpreter's exit would do for multiprocessing objects (a semaphore's unlink, ...), which
    `os._exit` skips: otherwise the resource tracker warns of them as leaked."""
    try:
        from multiprocessing import util

        util._run_finalizers()
    except Exception:  # noqa: BLE001 - only tidiness is at stake
        pass


class FrontGroup:
    """Front 0's handle on the fronts 1..F-1, the shared load and the render service they use."""

    def __init__(self, config: ServerConfig, log_level: str = "info", log_format: str = "text"):
        n = int(config.front_processes)
        if n < 2:
            raise ValueError("a FrontGroup is for two or more front processes")
        shares = split_workers(config.worker_processes, n) if config.worker_processes else [0] * n
        self.config = dataclasses.replace(config, port=claim_port(config.host, config.port))
        self._log = (log_level, log_format)
        self._dir = tempfile.TemporaryDirectory(prefix="lpm-npc-fronts-")
        self.load = SharedLoad(n, Path(self._dir.name))
        self.service: RenderServiceProcess | None = None
        if use_render_service(self.config):
            self.service = RenderServiceProcess(self.config)
            log.info("render service (pid %d) renders for the %d worker processes of %d fronts on %s",
                     self.service.pid, config.worker_processes, n, config.device)
        endpoint = self.service.endpoint if self.service is not None else None
        self.contexts = [FrontContext(k, n, self.load, Path(self._dir.name) / "resume", endpoint) for k in range(n)]
        self.configs = [dataclasses.replace(self.config, worker_processes=shares[k]) for k in range(n)]
        self._lock = threading.Lock()
        self._stopping = False
        self.restarts: list[float] = []
        self.procs: dict[int, mp.Process] = {}
        self._spawned: dict[int, float] = {}   # slot -> when its process was started (time.monotonic)
        self._hung: dict[int, str] = {}        # slot -> why the hang check killed it
        self.conns: dict[int, Connection] = {}
        for k in range(1, n):
            self._spawn(k)
        self._watcher: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.config.port

    def _spawn(self, slot: int, again: bool = False) -> None:
        ctx = mp.get_context("spawn")
        if again:   # calibrates on its own: the others are serving
            self.contexts[slot] = dataclasses.replace(self.contexts[slot], meet_to_calibrate=False)
        parent, child = ctx.Pipe(duplex=True)
        # Not daemonic: a front starts worker processes of its own, which a daemonic process may not.
        proc = ctx.Process(target=_front_main, name=f"lpm-npc-front-{slot}",
                           args=(self.configs[slot], self.contexts[slot], child, *self._log))
        self._spawned[slot] = time.monotonic()
        proc.start()
        child.close()
        self.procs[slot], self.conns[slot] = proc, parent

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until every other front is warmed up and listening; raise why one is not."""
        deadline = time.monotonic() + timeout
        for slot in sorted(self.conns):
            conn, proc = self.conns[slot], self.procs[slot]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"front process {slot} was not ready in {timeout:.0f} s")
                try:
                    if conn.poll(min(left, 0.5)):
                        msg = conn.recv()
                        if msg[0] == "ready":
                            break
                        raise RuntimeError(f"front process {slot} failed to start: {msg[1]}")
                except EOFError:
                    raise RuntimeError(f"front process {slot} exited during start-up (code {proc.exitcode})")
                if not proc.is_alive() and not conn.poll(0):
                    raise RuntimeError(f"front process {slot} exited during start-up (code {proc.exitcode})")
        self._watcher = threading.Thread(target=self._watch, name="fronts-watch", daemon=True)
        self._watcher.start()
        log.info("%d front processes listen on port %d (pids %s)", len(self.procs) + 1, self.port,
                 [os.getpid()] + [p.pid for p in self.procs.values()])

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.is_alive()]

    def _kill_hung(self) -> None:
        """Kill a front whose event loop has not beaten for `front_hang_s` (it beats once it serves:
        app.LoopWatch), or that has not begun to serve within `READY_TIMEOUT_S` of its start: `_watch`
        then starts it again like one that died."""
        limit = float(self.config.front_hang_s)
        if limit <= 0:
            return
        now = time.monotonic()
        victims = []
        with self._lock:
            if self._stopping:
                return
            for slot, proc in self.procs.items():
                if slot in self._hung or not proc.is_alive():
                    continue
                beat, spawned = self.load.last_beat(slot), self._spawned[slot]
                if beat >= spawned:
                    if now - beat <= limit:
                        continue
                    why = f"its event loop has not run for {now - beat:.0f} s"
                elif now - spawned > READY_TIMEOUT_S:
                    why = f"it did not start serving in {READY_TIMEOUT_S:.0f} s"
                else:
                    continue
                self._hung[slot] = why
                victims.append((slot, proc.pid, why))
        for slot, pid, why in victims:   # not under the lock: the stacks take a moment to be written
            kill_with_stacks(pid, f"front process {slot} is hung: {why}")

    def _watch(self) -> None:
        """Start again a front that died or hung (not one told to stop)."""
        while True:
            self._kill_hung()
            with self._lock:
                if self._stopping:
                    return
                sentinels = {p.sentinel: k for k, p in self.procs.items()}
            for sentinel in wait(list(sentinels), timeout=1.0):
                slot = sentinels[sentinel]
                with self._lock:
                    if self._stopping:
                        return
                    proc = self.procs[slot]
                    proc.join(5.0)   # its pipe closing can come a moment before the kernel lets it be reaped
                    self.load.clear(slot)   # its sessions are gone: their load with them
                    hung = self._hung.pop(slot, None)
                    what = (f"was hung ({hung}) and was killed" if hung is not None
                            else f"died (exit code {proc.exitcode})")
                    now = time.monotonic()
                    recent = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
                    if len(recent) >= MAX_RESTARTS:
                        log.error("front process %d %s, the %d. time in %.0f minutes; not starting it "
                                  "again: the other fronts serve on. Restart the server.", slot, what,
                                  len(recent) + 1, RESTART_WINDOW_S / 60)
                        del self.procs[slot]
                        continue
                    log.error("front process %d (pid %d) %s: its streams ended (their clients reconnect and "
                              "resume on any front); starting it again", slot, proc.pid, what)
                    try:
                        self.conns[slot].close()
                    except OSError:
                        pass
                    self.restarts.append(now)
                    self._spawn(slot, again=True)

    def signal_stop(self) -> None:
        """Tell every other front to drain and stop (they do it at the same time as front 0)."""
        with self._lock:
            self._stopping = True
            procs = list(self.procs.values())
        for p in procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def stop(self, timeout: float = 20.0) -> None:
        """After `signal_stop`: wait for the fronts, then stop the render service."""
        self.signal_stop()
        deadline = time.monotonic() + timeout
        for slot, p in list(self.procs.items()):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("front process %d did not stop in %.0f s; killing it", slot, timeout)
                p.kill()
                p.join(5.0)
        for conn in self.conns.values():
            try:
                conn.close()
            except OSError:
                pass
        if self.service is not None:
            self.service.stop()
        self._dir.cleanup()
