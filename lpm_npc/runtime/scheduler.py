"""Batched frame making across sessions: one renderer call per tick and output size.

Every live session's pump asks the scheduler for its next frame (`FrameScheduler.render`). Pumps
of sessions with the same frame rate are phase-aligned on a server-wide tick grid
(`aligned_start`), so the requests of one tick arrive together; a worker waits `coalesce_s` for
the rest of the tick, then makes all of them at once:

    begin_frame (motion) for each  ->  renderer.render_many (grouped by size)  ->  finish_frame (encode)

With several workers, a tick's requests are shared between the idle ones, so the two cores of a
laptop both render. Paused sessions do not ask, so they cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import LpmError
from .process_name import name_this_thread
from .session import FrameWork, PerformSession, RenderedFrame

log = logging.getLogger(__name__)

Callback = Callable[[RenderedFrame | None, BaseException | None], None]

# Server-wide epoch of the tick grid (monotonic clock).
_EPOCH = time.monotonic()


def aligned_start(fps: int, now: float | None = None) -> float:
    """The latest tick of the server-wide grid for `fps` at or before `now`: sessions started on it
    render together. Never later than `now`, so aligning never delays a session's frames (its first
    frame is due at most one frame interval earlier, still within the NPC lookahead)."""
    now = time.monotonic() if now is None else now
    interval = 1.0 / fps
    return _EPOCH + math.floor((now - _EPOCH) / interval + 1e-9) * interval


class SchedulerClosedError(LpmError):
    """The scheduler was closed (the server is shutting down): no more frames will be made."""


@dataclass
class SchedulerStats:
    """Running totals (read by the benchmark and GetServerInfo)."""

    calls: int = 0
    frames: int = 0
    busy_s: float = 0.0
    stage_s: dict = field(default_factory=lambda: {"motion": 0.0, "render": 0.0, "encode": 0.0})

    @property
    def mean_batch(self) -> float:
        return self.frames / self.calls if self.calls else 0.0


class FrameScheduler:
    """Makes the frames of many sessions in batched renderer calls on `workers` threads."""

    def __init__(self, renderer, workers: int = 1, coalesce_s: float = 0.002, max_batch: int = 64,
                 on_batch_done: Callable[[], None] | None = None, split_ticks: bool = True):
        """`on_batch_done` runs after the callbacks of each batch (a worker process sends their
        replies in one message). split_ticks=False: a thread takes the whole queue (one tick in one
        call; the threads then overlap successive ticks, e.g. motion of one while another renders)."""
        self.split_ticks = bool(split_ticks)
        self.renderer = renderer
        self.on_batch_done = on_batch_done
        self.coalesce_s = float(coalesce_s)
        self.max_batch = int(max_batch)
        self.stats = SchedulerStats()
        self._queue: list[tuple] = []  # (session, callback) or (session, callback, index)
        self._cond = threading.Condition()
        # Held from taking a batch until its frames are begun, where a thread takes the whole queue:
        # a session with two frames asked for (two in flight) then begins them (takes their index and
        # motion) in the order asked, whichever thread takes which. Split ticks hold one request per
        # session, and their threads' motion may overlap.
        self._begin_lock = contextlib.nullcontext() if self.split_ticks else threading.Lock()
        self._idle = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._run, name=f"frames-{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for th in self._threads:
            th.start()

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, session: PerformSession, callback: Callback, index: int | None = None) -> None:
        """Ask for `session`'s next frame; `callback(frame, error)` runs on a worker thread. With
        `index`, the frames before it are skipped when this one begins (a server that skipped them)."""
        with self._cond:
            if self._closed:
                raise SchedulerClosedError("the frame scheduler is closed: the server is shutting down")
            self._queue.append((session, callback) if index is None else (session, callback, index))
            self._cond.notify()

    def submit_many(self, requests: list[tuple]) -> None:
        """`submit` for several requests at once, each (session, callback[, index]): a worker thread
        sees all of them or none."""
        if not requests:
            return
        with self._cond:
            if self._closed:
                raise SchedulerClosedError("the frame scheduler is closed: the server is shutting down")
            self._queue.extend(requests)
            self._cond.notify()

    def request(self, session: PerformSession) -> asyncio.Future:
        """Ask for the next frame of `session` now, from the event loop; the Future gets the frame.

        The session's frame index is taken before this returns (a worker process's session: its
        request goes out at the end of this event-loop turn with the tick's others), so a caller
        may ask again for the following frame before this one is back."""
        if getattr(session, "remote", False):  # a RemoteSession: its worker process batches it
            return session.request_frame()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(frame: RenderedFrame | None, error: BaseException | None) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(frame)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        self.submit(session, done)
        return fut

    async def render(self, session: PerformSession) -> RenderedFrame:
        """The next frame of `session`, made together with the other sessions due now."""
        return await self.request(session)

    def render_now(self, sessions: list[PerformSession]) -> list[RenderedFrame]:
        """Synchronously make the next frame of each session in one batch (benchmarks, offline)."""
        frames: list[RenderedFrame | None] = [None] * len(sessions)
        errors: list[BaseException] = []

        def cb(i: int) -> Callback:
            def f(frame, error):
                if error is not None:
                    errors.append(error)
                frames[i] = frame
            return f

        self._make([(s, cb(i)) for i, s in enumerate(sessions)])
        if errors:
            raise errors[0]
        return frames  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for th in self._threads:
            th.join(timeout=5.0)

    # -- workers ----------------------------------------------------------------------------------
    def _run(self) -> None:
        name_this_thread(threading.current_thread().name)   # frames-N: in `top -H` and py-spy
        while True:
            with self._cond:
                self._idle += 1
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    self._idle -= 1
                    return
            if self.coalesce_s > 0:
                time.sleep(self.coalesce_s)  # the rest of this tick's requests arrive meanwhile
            with self._begin_lock:
                with self._cond:
                    if not self._queue:
                        self._idle -= 1
                        continue
                    share = math.ceil(len(self._queue) / max(1, self._idle if self.split_ticks else 1))
                    share = min(share, self.max_batch)
                    batch, self._queue = self._queue[:share], self._queue[share:]
                    self._idle -= 1
                    if self._queue:
                        self._cond.notify()
                t0 = time.perf_counter()
                try:
                    works = self._begin(batch)
                except Exception:  # noqa: BLE001 - a dead frame thread would leave every session waiting
                    log.exception("frame scheduler: a batch of %d failed outside the render", len(batch))
                    continue
            try:
                self._finish(works, t0)
            except Exception:  # noqa: BLE001
                log.exception("frame scheduler: a batch of %d failed outside the render", len(batch))

    def _make(self, batch: list[tuple]) -> None:
        t0 = time.perf_counter()
        self._finish(self._begin(batch), t0)

    @staticmethod
    def _begin(batch: list[tuple]) -> list[tuple[PerformSession, Callback, FrameWork]]:
        """Each request's motion (begin_frame), in request order."""
        works: list[tuple[PerformSession, Callback, FrameWork]] = []
        for item in batch:
            session, cb = item[0], item[1]
            try:
                if len(item) > 2 and item[2] > session.next_index:
                    session.skip_to(item[2], count_as_dropped=False)
                works.append((session, cb, session.begin_frame()))
            except BaseException as exc:  # noqa: BLE001 - reported to that session only
                _deliver(cb, None, exc)
        return works

    def _finish(self, works: list[tuple[PerformSession, Callback, FrameWork]], t0: float) -> None:
        """Render the begun frames in one call, encode them and hand each to its callback."""
        t1 = time.perf_counter()
        rgbas: list[np.ndarray] | None = None
        render_error: BaseException | None = None
        if works:
            try:
                rgbas = self.renderer.render_many([s.render_request(w) for s, _, w in works])
            except BaseException as exc:  # noqa: BLE001
                render_error = exc
        t2 = time.perf_counter()
        n = len(works)
        per_frame = (t2 - t1) / max(1, n)
        for k, (session, cb, work) in enumerate(works):
            if render_error is not None or rgbas is None:
                _deliver(cb, None, render_error or RuntimeError("render failed"))
                continue
            try:
                frame = session.finish_frame(work, rgbas[k], per_frame, batch_size=n)
            except BaseException as exc:  # noqa: BLE001
                _deliver(cb, None, exc)
                continue
            _deliver(cb, frame, None)
        if self.on_batch_done is not None:
            self.on_batch_done()
        t3 = time.perf_counter()
        st = self.stats
        st.calls += 1
        st.frames += n
        st.busy_s += t3 - t0
        st.stage_s["motion"] += t1 - t0
        st.stage_s["render"] += t2 - t1
        st.stage_s["encode"] += t3 - t2


def _deliver(cb: Callback, frame: RenderedFrame | None, error: BaseException | None) -> None:
    """Hand a result to its requester; one requester's failing callback must not cost the others theirs."""
    try:
        cb(frame, error)
    except Exception:  # noqa: BLE001
        log.exception("frame scheduler: a frame callback failed")
