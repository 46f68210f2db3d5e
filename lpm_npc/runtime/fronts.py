"""What several front processes on one port share: admission's load, ended sessions' state, the render service.

With `ServerConfig.front_processes = F > 1`, F server processes ("fronts") listen on the same port
(SO_REUSEPORT: the kernel hands each new connection to one of them) and each runs its own runtime,
worker processes and gRPC streams (server/fronts.py starts them). One Python process writes every
frame of its streams to gRPC and paces them (about 0.6 ms of CPU per frame): past about 1400 frames/s
that one core is the limit, whatever the GPU could render. What must still be one server across them:

- admission: `SharedLoad`, shared memory with each front's committed render load, frames per second,
  sessions and budget; a front admits a stream against the whole server's budget and sessions, under
  one cross-process lock (so two fronts opening at once cannot both take the last room);
- resuming: `DirectoryResumeStore`, ended sessions' state as files in one directory, so a reconnect that
  lands on another front still continues the face (a take is a rename: only one front gets it);
- characters: already on disk (character/store.py); a front checks the file before using a rig it
  holds, so a character deleted through one front is gone for all;
- the render service: one for all fronts' workers (one GPU context), started by front 0.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing as mp
import os
import pickle
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

RESUME_TTL_S = 600.0
RESUME_MAX = 512
_FIELDS = 4          # per front: committed render ms/s, frames/s sent, sessions, render budget ms/s
_TOKEN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


class ResumeStore(Protocol):
    """Motion/emotion state of ended sessions, kept for a while so a reconnect continues it."""

    def put(self, token: str, state: dict) -> None: ...

    def take(self, token: str) -> dict | None: ...


class MemoryResumeStore:
    """One process's resume store (a server with one front)."""

    def __init__(self, ttl_s: float = RESUME_TTL_S, max_entries: int = RESUME_MAX):
        self._ttl = ttl_s
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, token: str, state: dict) -> None:
        with self._lock:
            self._items[token] = (time.monotonic(), state)
            self._items.move_to_end(token)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def take(self, token: str) -> dict | None:
        with self._lock:
            item = self._items.pop(token, None)
        if item is None or time.monotonic() - item[0] > self._ttl:
            return None
        return item[1]


class DirectoryResumeStore:
    """The resume store of several fronts: one file per ended session in a directory they share.

    `take` renames the file to a name of its own before reading it, so when two fronts race for one
    token exactly one gets the state. Tokens come from clients: anything but a plain session-id-like
    name is simply not found."""

    def __init__(self, directory: Path, ttl_s: float = RESUME_TTL_S, max_entries: int = RESUME_MAX):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ttl = ttl_s
        self._max = max_entries

    def _path(self, token: str) -> Path | None:
        return self.dir / f"{token}.state" if _TOKEN.match(token or "") else None

    def put(self, token: str, state: dict) -> None:
        path = self._path(token)
        if path is None:
            return
        tmp = path.with_name(f".{token}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not keep session %s's state for a resume (%s)", token, exc)
            return
        self._prune()

    def take(self, token: str) -> dict | None:
        path = self._path(token)
        if path is None:
            return None
        mine = path.with_name(f".{token}.{os.getpid()}.{threading.get_ident()}.taken")
        try:
            os.rename(path, mine)
        except OSError:   # not there (never was, expired, or another front took it)
            return None
        try:
            if time.time() - mine.stat().st_mtime > self._ttl:
                return None
            return pickle.loads(mine.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            log.warning("session %s's stored state is unreadable (%s); starting fresh", token, exc)
            return None
        finally:
            mine.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Forget states past their time, and the oldest beyond `max_entries`."""
        try:
            entries = []
            for p in self.dir.glob("*.state"):
                try:
                    entries.append((p.stat().st_mtime, p))
                except FileNotFoundError:
                    continue
        except OSError:
            return
        now = time.time()
        entries.sort()
        excess = len(entries) - self._max
        for k, (mtime, p) in enumerate(entries):
            if k < excess or now - mtime > self._ttl:
                p.unlink(missing_ok=True)


@dataclass(frozen=True)
class LoadFigures:
    """Committed load: render ms per second, frames per second sent, sessions; and the render budget."""

    ms_per_s: float = 0.0
    fps: float = 0.0
    sessions: int = 0
    budget_ms_per_s: float = 0.0


class FileLock:
    """A lock across processes: `flock` on a file, plus a thread lock within each process.

    Unlike a multiprocessing semaphore, a lock held by a process that dies is let go by the kernel, so
    one crashed front cannot leave every other front waiting forever. Picklable: each process opens the
    file itself."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.touch()
        self._fd: int | None = None
        self._pid = 0
        self._thread_lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._fd, self._pid = None, 0
        self._thread_lock = threading.Lock()

    def __enter__(self) -> "FileLock":
        self._thread_lock.acquire()
        try:
            if self._fd is None or self._pid != os.getpid():
                self._fd, self._pid = os.open(self.path, os.O_RDWR), os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class SharedLoad:
    """Each front's committed load in shared memory, and the lock admission holds while it decides.

    A front writes only its own slot: at every admission and session change, and a few times a second
    (pauses, output changes). Created by front 0 before the others are spawned and handed to them.
    One more slot counts the fronts that reached calibration (`meet`)."""

    def __init__(self, fronts: int, directory: Path, ctx=None):
        ctx = ctx or mp.get_context("spawn")
        self.fronts = int(fronts)
        self.lock = FileLock(Path(directory) / "load.lock")
        self._values = ctx.RawArray("d", self.fronts * _FIELDS + 1)
        # each serving front's event loop writes the time (time.monotonic: one clock for every process)
        # here twice a second (server/app.LoopWatch); front 0 kills a front that stops (server/fronts.py)
        self._beats = ctx.RawArray("d", self.fronts)

    def beat(self, slot: int) -> None:
        self._beats[slot] = time.monotonic()

    def last_beat(self, slot: int) -> float:
        """When front `slot`'s event loop last beat (time.monotonic), 0.0 if it has not since `clear`."""
        return self._beats[slot]

    def meet(self, timeout: float) -> bool:
        """Wait until every front has called this (the fronts started together calibrate together);
        False after `timeout`."""
        with self.lock:
            self._values[-1] += 1
        deadline = time.monotonic() + timeout
        while self._values[-1] < self.fronts:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def publish(self, slot: int, figures: LoadFigures) -> None:
        """Write this front's figures (the caller holds `lock` or accepts a torn read by others for a moment)."""
        base = slot * _FIELDS
        self._values[base:base + _FIELDS] = [figures.ms_per_s, figures.fps, float(figures.sessions),
                                             figures.budget_ms_per_s]

    def of(self, slot: int) -> LoadFigures:
        base = slot * _FIELDS
        ms, fps, sessions, budget = self._values[base:base + _FIELDS]
        return LoadFigures(ms, fps, int(sessions), budget)

    def others(self, slot: int) -> LoadFigures:
        """The other fronts' figures summed."""
        figs = [self.of(k) for k in range(self.fronts) if k != slot]
        return LoadFigures(sum(f.ms_per_s for f in figs), sum(f.fps for f in figs),
                           sum(f.sessions for f in figs), sum(f.budget_ms_per_s for f in figs))

    def clear(self, slot: int) -> None:
        """A front that died holds nothing any more (and its successor has not beaten yet)."""
        with self.lock:
            self.publish(slot, LoadFigures())
            self._beats[slot] = 0.0


@dataclass(frozen=True)
class FrontContext:
    """One front's place among its siblings (passed to each front process)."""

    slot: int
    count: int
    load: SharedLoad
    resume_dir: Path
    service: tuple[str, bytes] | None = None   # the shared render service's (address, authkey)
    # the fronts started together meet before calibrating (`SharedLoad.meet`), so that every worker
    # measures its frame cost while all the others do, as they will share the cores when serving; a front
    # started again after a crash calibrates alone, the others are serving
    meet_to_calibrate: bool = True


def split_workers(total: int, fronts: int) -> list[int]:
    """Worker processes per front: `total` spread as evenly as it goes, every front at least one."""
    if fronts < 1 or total < fronts:
        raise ValueError(f"{fronts} front processes need at least {fronts} worker processes, got {total}")
    return [total // fronts + (1 if k < total % fronts else 0) for k in range(fronts)]
