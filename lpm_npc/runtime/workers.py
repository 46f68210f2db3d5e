"""Sessions sharded over worker processes, so that one GIL no longer serialises every NPC.

With `ServerConfig.worker_processes = N >= 1` the server process keeps gRPC, the pumps (wall-clock
pacing), admission control and the resume store; each of N worker processes owns a shard of the
sessions completely: audio decode/features/lip-sync, the performance model, batched rendering and
encoding. They talk over one duplex multiprocessing pipe per worker ("spawn" context: torch and
gRPC do not survive fork):

    server -> worker   (req_id, op, args)        req_id 0: no reply wanted (one-way)
    worker -> server   (req_id, ok, payload)     payload: the result, or the exception when not ok
                       (REPLIES, True, [...])    the replies of one rendered batch together

Ops: open (options, session_id, seed, resume_state), audio_batch, state, interrupt, output, pause,
resume, skip, render (session_id, index, audio chunks that arrived since the last request) ->
(RenderedFrame, audio_seq, npc_audio_pending) (the frame's pixels in the worker's `FrameRing`, shared
memory, when they fit: the pipe then carries a `RingRef`),
render_batch ([(req_id, session_id, index, chunks), ...]: one tick's requests, one message),
state_dict, close -> state_dict, shutdown. Inputs are one-way (validated in the server process
first, so a bad chunk still gets its non-fatal error at once); only open, render and close wait.

In the server a `RemoteSession` stands in for the `PerformSession`: it mirrors the frame clock
(next index, fps changes, skips, pause), so pacing needs no round trip; `render()` asks the worker
for frame `index` and awaits the reply (a reader thread per pipe resolves futures). In the worker
render requests go to a `FrameScheduler`, so requests of one tick are rendered in one
`render_many` call. A worker that dies fails its sessions ("render worker exited: ...") and is
replaced; the others carry on.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from ..config import OutputOptions, ServerConfig, SessionOptions
from ..errors import AudioFormatError, InvalidInputError, LpmError
from .capacity import FrameCost, combine_costs
from .clock import FrameClock
from .frame_ring import MIN_RING_PAYLOAD, FrameRing, RingRef
from .render_service import RenderServiceProcess, use_render_service
from .child_signals import leave_stopping_to_the_server
from .rig_cache import PreparedRigs
from .stacks import dump_stacks_on_signal, kill_with_stacks

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
CHECK_WAIT_S = 10.0   # the hang check's wait for a worker's answer (its main loop answers in milliseconds)
REPLIES = -1  # req_id of a message that carries several replies (a worker's batch of frames)
MAX_HELD_AUDIO_BYTES = 16000  # audio held back for the next render request (0.5 s of 16 kHz mono s16)
WORKER_LOADED_RIGS = 8            # rigs a worker keeps loaded from the disk cache (they open sessions)
WORKER_IDLE_REMOTE_RIGS_MB = 16.0  # idle characters a worker keeps for its render service (rig_cache.py)


class WorkerExitedError(LpmError):
    """The worker process that owned a session is gone (status INTERNAL)."""


def _send(conn, msg) -> None:
    """One message on the pipe. Plain pickle: `Connection.send`'s ForkingPickler copies the copyreg
    dispatch table for every message (a few % of the server process at 8 NPCs), and nothing sent
    here needs its extra reducers (no sockets or fds travel)."""
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn):
    return pickle.loads(conn.recv_bytes())


class _LoopReply:
    """A pending reply settled on an event loop: the reader thread hands a whole batch of these to
    the loop in one call (`_settle_on_loop`), not one wake-up per frame."""

    __slots__ = ("loop", "fut", "post", "sent_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, post: Callable | None = None):
        self.loop = loop
        self.fut: asyncio.Future = loop.create_future()
        self.post = post  # turns the payload into the result, on the loop
        self.sent_at = time.monotonic()   # a frame request: its age is what the hang check looks at


def _settle_on_loop(replies: list[tuple["_LoopReply", bool, object]]) -> None:
    for reply, ok, payload in replies:
        fut = reply.fut
        if fut.done():  # cancelled: the stream went away
            continue
        if ok:
            try:
                fut.set_result(reply.post(payload) if reply.post is not None else payload)
            except Exception as exc:  # noqa: BLE001 - that reply only
                fut.set_exception(exc)
        else:
            fut.set_exception(payload)


def _hand_to_loops(replies: list[tuple["_LoopReply", bool, object]]) -> None:
    """Settle loop replies on their loops, one call per loop (usually the server's one)."""
    by_loop: dict = {}
    for item in replies:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, items)
        except RuntimeError:  # the loop is closed: the server is gone
            pass


def _settle(fut: Future, ok: bool, payload) -> None:
    """Give a reply to its Future. A client that goes away cancels its Future, which can happen
    between a done() check and here: that must not raise in (and end) the reader thread."""
    try:
        if ok:
            fut.set_result(payload)
        else:
            fut.set_exception(payload)
    except InvalidStateError:
        pass


# ------------------------------------------------------------------------------------------------
# worker process
# ------------------------------------------------------------------------------------------------
def _worker_main(conn, config: ServerConfig, slot: int, log_level: int, ring: tuple[str, int] | None = None,
                 service: tuple[str, bytes] | None = None) -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    from .process_name import name_this_process

    name_this_process("lpm-npc-worker")
    dump_stacks_on_signal()
    leave_stopping_to_the_server()   # a group's Ctrl-C / SIGTERM: the server drains, then stops us
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s worker-{slot} %(name)s: %(message)s")
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _Worker(conn, config, ring, service).run()
    # Skip the interpreter's teardown (torch's takes seconds on a busy machine): nothing is left
    # to flush but the logs.
    logging.shutdown()
    os._exit(0)


class _Worker:
    def __init__(self, conn, config: ServerConfig, ring: tuple[str, int] | None = None,
                 service: tuple[str, bytes] | None = None):
        from ..audio import feature_kernel
        from ..character.store import CharacterStore
        from ..render.backends import make_renderer
        from .scheduler import FrameScheduler

        self.conn = conn
        self.config = config
        self._send_lock = threading.Lock()
        self._reply_lock = threading.Lock()
        # rigs loaded from the disk cache (~1.4 MB each): needed only to open a session
        self.store = CharacterStore(config.cache_dir, max_loaded=WORKER_LOADED_RIGS)
        if service is not None:  # one render process renders for every worker (render_service.py)
            from .render_service import RemoteRenderer

            self.renderer = RemoteRenderer(*service)
        else:
            self.renderer = make_renderer(config.backend, config.device, config.cache_dir)
        feature_kernel.warm_up()  # the speech features' compiled steps, before any session's audio
        self._outbox: list[tuple] = []   # frame replies of the batch being made
        # with a render service, two threads: one tick's motion runs while the previous tick's frames
        # are rendered (the thread waiting for the service holds no GIL)
        self.scheduler = FrameScheduler(self.renderer, workers=2 if service is not None else 1,
                                        split_ticks=service is None, coalesce_s=config.coalesce_ms / 1000.0,
                                        on_batch_done=self._send_replies)
        self.sessions: dict = {}
        self.audio_seq: dict[str, int] = {}
        # by character id; with a render service an entry is only the service's key and the rig (~1.4 MB,
        # kept to prepare it again should the service let go of it): a few idle ones are enough
        self._prepared = PreparedRigs(config.idle_rig_cache_mb if service is None
                                      else min(config.idle_rig_cache_mb, WORKER_IDLE_REMOTE_RIGS_MB))
        self.ring: FrameRing | None = None
        if ring is not None:
            try:
                self.ring = FrameRing.attach(*ring)
            except (OSError, ValueError) as exc:  # frames then travel through the pipe
                log.warning("frame ring %s unavailable (%s); frames go through the pipe", ring[0], exc)

    def _write(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self.conn.send_bytes(data)
        except (OSError, ValueError, EOFError):  # the server is gone; the main loop notices
            pass

    def send(self, msg) -> None:
        try:
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable payload: report it instead
            if msg[0] <= 0:
                return
            data = pickle.dumps((msg[0], False, RuntimeError(f"worker reply could not be sent: {exc!r}")))
        self._write(data)

    def run(self) -> None:
        self.send((0, True, ("ready", os.getpid())))
        while True:
            try:
                req_id, op, args = _recv(self.conn)
            except (EOFError, OSError):
                break
            if op == "shutdown":
                break
            try:
                if op == "render":
                    self.scheduler.submit(*self._render(req_id, *args))
                    continue
                if op == "render_batch":   # one tick's requests of several sessions
                    ready = []
                    for item in args[0]:
                        try:
                            ready.append(self._render(*item))
                        except BaseException as exc:  # noqa: BLE001 - that session only
                            self.send((item[0], False, _portable(exc)))
                    # all at once, after every session's audio: the scheduler cannot start the
                    # tick's batch with only some of them (a preempted reader split batches)
                    self.scheduler.submit_many(ready)
                    continue
                result = getattr(self, "op_" + op)(*args)
                if req_id:
                    self.send((req_id, True, result))
            except BaseException as exc:  # noqa: BLE001 - goes back to the caller
                if req_id:
                    self.send((req_id, False, _portable(exc)))
                else:
                    log.warning("%s failed: %s", op, exc)
        self.scheduler.close()
        self.store.close()
        try:
            self.send((0, True, ("bye", os.getpid())))
            self.conn.close()
        except OSError:
            pass

    def _session(self, sid: str):
        session = self.sessions.get(sid)
        if session is None:
            raise LpmError(f"session {sid} is not open on this worker")
        return session

    def _render(self, req_id: int, sid: str, index: int, audio: list | None = None) -> tuple:
        """Take a render request's audio; (session, callback, index) to submit to the scheduler."""
        if audio:
            self.op_audio_batch(sid, audio)
        session = self._session(sid)

        def done(frame, error) -> None:
            if error is not None:
                reply = (req_id, False, _portable(error))
            else:
                reply = (req_id, True, (frame, self.audio_seq.get(sid, 0), session.npc_audio_pending()))
            with self._send_lock:
                self._outbox.append(reply)

        # frames the server skipped are skipped when this one begins, after those asked for before it
        return session, done, index

    def _send_replies(self) -> None:
        """A batch's frame replies in one message (REPLIES), not one wake-up of the server each; their
        pixels go through the frame ring when there is room."""
        with self._reply_lock:  # the frame ring has one writer at a time (two frame threads with a render service)
            self._send_replies_locked()

    def _send_replies_locked(self) -> None:
        with self._send_lock:
            replies, self._outbox = self._outbox, []
        if self.ring is not None:
            for _, ok, payload in replies:
                if ok:
                    self._to_ring(payload[0])
        if len(replies) > 1:
            try:
                self._write(pickle.dumps((REPLIES, True, replies), protocol=pickle.HIGHEST_PROTOCOL))
                return
            except Exception:  # noqa: BLE001 - one unpicklable frame: send them one by one
                pass
        for reply in replies:
            self.send(reply)

    def _to_ring(self, frame) -> None:
        encoded = frame.encoded
        if len(encoded.data) >= MIN_RING_PAYLOAD:
            ref = self.ring.put(encoded.data)
            if ref is not None:
                frame.encoded = dataclasses.replace(encoded, data=ref)

    # -- ops --------------------------------------------------------------------------------------
    def op_open(self, options: SessionOptions, session_id: str, seed, resume_state) -> str:
        from .session import PerformSession

        rig = self.store.get(options.character_id)
        prepared = self._prepared.get(options.character_id)
        if prepared is None:
            prepared = self._prepared.put(options.character_id, self.renderer.prepare(rig))
        self.sessions[session_id] = PerformSession(options, rig, prepared, self.renderer, session_id=session_id,
                                                   resume_state=resume_state, seed=seed)
        self.audio_seq[session_id] = 0
        return session_id

    def op_audio(self, sid, seq, channel, pcm, sample_rate, num_channels, sample_index, text, arrived_at):
        try:
            return self._session(sid).push_audio(channel, pcm, sample_rate, num_channels, sample_index, text,
                                                 arrived_at=arrived_at)
        finally:
            self.audio_seq[sid] = seq

    def op_audio_batch(self, sid, chunks: list) -> None:
        """Chunks in arrival order; a bad one is logged (the server checked them all already)."""
        for chunk in chunks:
            try:
                self.op_audio(sid, *chunk)
            except LpmError as exc:
                log.warning("session %s: audio chunk %d: %s", sid, chunk[0], exc)

    def op_state(self, sid, phase, emotion, intensity, transition_ms, direction, result) -> None:
        self._session(sid).set_dialogue_state(phase, emotion, intensity, transition_ms, direction,
                                              direction_result=result)

    def op_interrupt(self, sid) -> None:
        self._session(sid).interrupt()

    def op_output(self, sid, width, height, fps) -> None:
        self._session(sid).set_output(width, height, fps)

    def op_skip(self, sid, index, count_as_dropped) -> None:
        self._session(sid).skip_to(index, count_as_dropped)

    def op_state_dict(self, sid) -> dict:
        return self._session(sid).state_dict()

    def op_close(self, sid) -> dict | None:
        session = self.sessions.pop(sid, None)
        self.audio_seq.pop(sid, None)
        self._let_go_of_idle_rigs()
        return session.state_dict() if session is not None else None

    def _let_go_of_idle_rigs(self) -> None:
        self._prepared.trim({s.options.character_id for s in self.sessions.values()})

    def op_ping(self) -> int:
        return os.getpid()

    def op_check(self) -> float:
        """The server's hang check (answered by this main loop, so no answer = it is stuck): how long this
        worker's frames have been waiting for the render service, 0 when they are not."""
        waiting = getattr(self.renderer, "waiting_s", None)
        return float(waiting()) if waiting is not None else 0.0

    def op_calibrate(self) -> tuple[float, float]:
        """(fixed_ms, per_mpx_ms) of a talking NPC's frame here; the pool asks every worker at once."""
        from ..config import DEFAULT_CHARACTER_ID
        from .calibration import measure_talking_frame_cost

        rig = self.store.get(DEFAULT_CHARACTER_ID)
        prepared = self._prepared.get(DEFAULT_CHARACTER_ID)
        if prepared is None:
            prepared = self._prepared.put(DEFAULT_CHARACTER_ID, self.renderer.prepare(rig))
        cost = measure_talking_frame_cost(rig, prepared, self.renderer)
        return cost.fixed_ms, cost.per_mpx_ms


def _portable(exc: BaseException) -> BaseException:
    """An exception that survives pickling (LpmError subclasses do; others become RuntimeError)."""

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------------
# server side
# ------------------------------------------------------------------------------------------------
class WorkerHandle:
    """One worker process, its pipe and the reader thread that settles replies."""

    def __init__(self, pool: "WorkerPool", slot: int):
        self.pool = pool
        self.slot = slot
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self.ring: FrameRing | None = None
        try:
            self.ring = FrameRing.create()
        except (OSError, ValueError) as exc:
            log.warning("no shared memory for worker %d's frames (%s); they go through its pipe", slot, exc)
        self.proc = ctx.Process(target=_worker_main, name=f"lpm-npc-worker-{slot}",
                                args=(child, pool.config, slot, logging.getLogger().getEffectiveLevel(),
                                      (self.ring.path, self.ring.capacity) if self.ring else None,
                                      pool.service_endpoint),
                                daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.pid = self.proc.pid
        self.ready = threading.Event()
        self.alive = True
        self.exit_reason = ""
        self.hung_why = ""   # set when the pool's hang check kills it
        self.sessions: dict[str, RemoteSession] = {}
        self._pending: dict[int, Future | _LoopReply] = {}
        self._lock = threading.Lock()        # pending replies, alive
        self._send_lock = threading.Lock()   # whole messages on the pipe
        self._ids = itertools.count(1)
        self._deferred: list[tuple] = []     # render requests of this event-loop turn (under _send_lock)
        self._reader = threading.Thread(target=self._read, name=f"worker-{slot}-reader", daemon=True)
        self._reader.start()

    # -- calls ------------------------------------------------------------------------------------
    def _register(self, entry: Future | _LoopReply) -> int:
        """The request id a reply to `entry` will carry; 0, and `entry` failed, when the worker is gone."""
        with self._lock:
            if self.alive:
                req_id = next(self._ids)
                self._pending[req_id] = entry
                return req_id
            reason = self.exit_reason or "render worker exited"
        (entry.fut if isinstance(entry, _LoopReply) else entry).set_exception(WorkerExitedError(reason))
        return 0

    def call(self, op: str, *args) -> Future:
        """Send a request; the Future gets the reply (or WorkerExitedError)."""
        fut: Future = Future()
        if op == "render":
            fut.sent_at = time.monotonic()   # see oldest_render_s
        req_id = self._register(fut)
        if req_id:
            self._send_call(req_id, fut, op, args)
        return fut

    def _send_call(self, req_id: int, fut: Future, op: str, args: tuple) -> None:
        """Send registered request `req_id`; a closed pipe fails `fut`."""
        # Sent outside self._lock: the reader thread must always be able to settle replies, or a
        # worker blocked writing a frame could stop reading requests (and a full pipe deadlock us).
        try:
            with self._send_lock:
                self._write_deferred()
                _send(self.conn, (req_id, op, args))
        except (OSError, ValueError) as exc:
            with self._lock:
                self._pending.pop(req_id, None)
            _settle(fut, False, WorkerExitedError(f"render worker exited: pipe closed ({exc})"))

    def send(self, op: str, *args) -> None:
        """One-way request (no reply)."""
        if not self.alive:
            raise WorkerExitedError(self.exit_reason or "render worker exited")
        try:
            with self._send_lock:
                self._write_deferred()
                _send(self.conn, (0, op, args))
        except (OSError, ValueError) as exc:
            raise WorkerExitedError(self.exit_reason or f"render worker exited: pipe closed ({exc})") from exc

    def call_render_soon(self, loop: asyncio.AbstractEventLoop, args: tuple,
                         post: Callable | None = None) -> asyncio.Future:
        """A render request sent at the end of this event-loop turn together with the other
        sessions' requests of the same tick (one pipe message, one wake-up of the worker). Any other
        message to the worker first sends these, so the order of a session's messages holds. The
        returned Future (of `loop`) gets `post(reply)`."""
        reply = _LoopReply(loop, post)
        req_id = self._register(reply)
        if not req_id:
            return reply.fut
        with self._send_lock:
            first = not self._deferred
            self._deferred.append((req_id,) + args)
        if first:
            loop.call_soon(self._flush_deferred)
        return reply.fut

    def _flush_deferred(self) -> None:
        try:
            with self._send_lock:
                self._write_deferred()
        except (OSError, ValueError):
            pass  # the requests' futures were failed in _write_deferred

    def _write_deferred(self) -> None:
        """Send the deferred render requests (caller holds _send_lock)."""
        if not self._deferred:
            return
        items, self._deferred = self._deferred, []
        try:
            _send(self.conn, (0, "render_batch", (items,)) if len(items) > 1 else (items[0][0], "render", items[0][1:]))
        except (OSError, ValueError) as exc:
            with self._lock:
                futs = [self._pending.pop(item[0], None) for item in items]
            self._fail([f for f in futs if f is not None],
                       WorkerExitedError(f"render worker exited: pipe closed ({exc})"))
            raise

    @staticmethod
    def _deliver(replies: list[tuple]) -> None:
        """Settle (pending entry, ok, payload) replies: thread Futures here, loop replies on their
        loops in one call each."""
        on_loops = []
        for entry, ok, payload in replies:
            if isinstance(entry, _LoopReply):
                on_loops.append((entry, ok, payload))
            else:
                _settle(entry, ok, payload)
        if on_loops:
            _hand_to_loops(on_loops)

    def _fail(self, pending: list, exc: BaseException) -> None:
        """Fail pending replies of both kinds (thread Futures and loop replies)."""
        self._deliver([(entry, False, exc) for entry in pending])

    # -- hang check -----------------------------------------------------------------------------
    def oldest_render_s(self) -> float:
        """How long the oldest frame request still unanswered has waited (0: none is waiting)."""
        now = time.monotonic()
        with self._lock:
            for entry in self._pending.values():   # in request order: the first frame request is the oldest
                sent = getattr(entry, "sent_at", None)
                if sent is not None:
                    return now - sent
        return 0.0

    def hung(self, limit_s: float) -> str | None:
        """Why this worker counts as hung, or None: a frame request unanswered for `limit_s`, and then no
        answer to a check in `CHECK_WAIT_S` (its main loop is stuck), or an answer that it is not
        waiting for the render service (its frame thread is stuck; a stuck service is the service's own
        check's)."""
        age = self.oldest_render_s()
        if age < limit_s or not self.alive:
            return None
        check: Future = Future()
        req_id = self._register(check)
        if not req_id:
            return None
        # Sent from a thread of its own: a worker that does not read lets its pipe fill, and whoever
        # sends to it then blocks (holding the send lock), which must not hold this check up too.
        threading.Thread(target=self._send_call, args=(req_id, check, "check", ()),
                         name=f"worker-{self.slot}-check", daemon=True).start()
        try:   # not shorter with a short limit: a starved machine can delay a healthy worker's answer
            waiting_s = check.result(CHECK_WAIT_S)
        except FutureTimeout:
            return (f"a frame request has waited {age:.1f} s and it did not answer a check in "
                    f"{CHECK_WAIT_S:.0f} s (its main loop is stuck)")
        except Exception:  # noqa: BLE001 - it exited meanwhile: its reader thread deals with that
            return None
        if waiting_s > 0:
            return None
        age = self.oldest_render_s()
        if age < limit_s:   # answered meanwhile
            return None
        return (f"a frame request has waited {age:.1f} s and it is not waiting for the render service "
                "(its frame thread is stuck)")

    def kill(self, why: str) -> None:
        """End a hung worker (its stacks first, to the log); its reader thread then fails its sessions and
        the pool replaces it."""
        self.hung_why = why
        kill_with_stacks(self.pid, f"worker {self.slot} is hung: {why}")

    @property
    def load(self) -> tuple[int, int]:
        ss = list(self.sessions.values())
        return (len(ss), sum(s.output.width * s.output.height * s.output.fps for s in ss if not s.paused))

    # -- reader -----------------------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            try:
                req_id, ok, payload = _recv(self.conn)
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - an undecodable reply: keep reading
                log.exception("worker %d: bad reply", self.slot)
                continue
            if req_id == 0:
                if payload and payload[0] == "ready":
                    if self.ring is not None:
                        self.ring.unlink()  # the worker has it mapped: nothing is left behind if we die
                    self.ready.set()
                continue
            replies = payload if req_id == REPLIES else ((req_id, ok, payload),)
            with self._lock:
                entries = [self._pending.pop(r[0], None) for r in replies]
            wanted = []
            for entry, (req_id, ok, payload) in zip(entries, replies):
                unwanted = entry is None or (entry.fut if isinstance(entry, _LoopReply) else entry).done()
                if ok:
                    try:
                        self._from_ring(payload, unwanted)
                    except Exception as exc:  # noqa: BLE001 - that frame only
                        ok, payload = False, RuntimeError(f"frame transfer from the worker failed: {exc}")
                if not unwanted:
                    wanted.append((entry, ok, payload))
            self._deliver(wanted)
        self._exited()

    def _from_ring(self, payload, unwanted: bool) -> None:
        """Put a frame reply's pixels back from the frame ring (or only free them, when nobody waits)."""
        frame = payload[0] if isinstance(payload, tuple) and payload else None
        ref = getattr(getattr(frame, "encoded", None), "data", None)
        if not isinstance(ref, RingRef):
            return
        if self.ring is None:
            raise RuntimeError("a frame came through a frame ring this server does not have")
        if unwanted:
            self.ring.release(ref)
        else:
            frame.encoded = dataclasses.replace(frame.encoded, data=self.ring.take(ref))

    def _exited(self) -> None:
        self.proc.join(timeout=5.0)
        code = self.proc.exitcode
        if code is None:
            why = "its pipe closed"
        elif code < 0:
            try:
                why = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                why = f"killed by signal {-code}"
        else:
            why = f"exit code {code}"
        if self.hung_why:
            why = f"was hung ({self.hung_why}) and was killed"
        reason = f"render worker exited: worker {self.slot} (pid {self.pid}) {why}"
        if self.pool.closing:
            reason = f"render worker exited: the server is shutting down (worker {self.slot}, {why})"
        with self._lock:
            self.alive = False
            self.exit_reason = reason
            pending, self._pending = self._pending, {}
        self._fail(list(pending.values()), WorkerExitedError(reason))
        for s in list(self.sessions.values()):
            s._dead = reason
        if self.ring is not None:
            self.ring.close()
        self.ready.set()  # nobody waits for a dead worker
        if self.pool.closing:
            log.info("worker %d (pid %d) stopped", self.slot, self.pid)
        else:
            log.error("%s; %d session(s) lost, starting a replacement", reason, len(self.sessions))
            self.pool._replace(self)

    def stop(self, timeout: float) -> None:
        try:
            self.send("shutdown")
        except WorkerExitedError:
            pass
        deadline = time.monotonic() + timeout
        # The reader thread joins the exiting worker too: whichever reaps it first, the other's waitpid
        # fails and its join() returns with the process looking alive until the first has recorded the
        # exit code. Wait out that moment rather than call a worker that stopped "stuck".
        while self.proc.is_alive() and time.monotonic() < deadline:
            self.proc.join(min(0.05, max(0.0, deadline - time.monotonic())))
        if self.proc.is_alive():
            log.warning("worker %d did not stop in %.1f s; killing it", self.slot, timeout)
            self.proc.kill()   # it ignores SIGTERM (child_signals.py)
            self.proc.join(2.0)
        self._reader.join(timeout=5.0)
        try:
            self.conn.close()
        except OSError:
            pass


class WorkerPool:
    """N worker processes; a session goes to the least-loaded live one."""

    def __init__(self, config: ServerConfig, processes: int | None = None,
                 service: tuple[str, bytes] | None = None):
        """`service`: the (address, authkey) of a render service another process owns (front 0's, shared
        by every front's workers); else one is started here when the config asks for it."""
        self.config = config
        self.closing = False
        self._lock = threading.Lock()
        n = max(1, int(processes if processes is not None else config.worker_processes))
        self.service: RenderServiceProcess | None = None
        self.service_endpoint = service
        if service is None and use_render_service(dataclasses.replace(config, worker_processes=n)):
            self.service = RenderServiceProcess(config)
            self.service_endpoint = self.service.endpoint
            log.info("render service (pid %d) renders for %d worker processes on %s", self.service.pid, n,
                     config.device)
        self.workers: list[WorkerHandle] = [WorkerHandle(self, i) for i in range(n)]
        atexit.register(self._at_exit)
        self._closed = threading.Event()
        if config.worker_hang_s > 0:
            threading.Thread(target=self._watch_hangs, name="workers-hang-check", daemon=True).start()

    def _watch_hangs(self) -> None:
        """Kill a worker that is hung (`WorkerHandle.hung`); its sessions end and it is replaced."""
        limit = float(self.config.worker_hang_s)
        while not self._closed.wait(max(0.05, min(5.0, limit / 3))):
            for w in list(self.workers):
                if self.closing:
                    return
                why = w.hung(limit)
                if why is not None and not self.closing:
                    w.kill(why)

    @property
    def renders_through_service(self) -> bool:
        """Whether a render service makes these workers' frames: one this pool started (`service`), or
        another process's (with several fronts, front 0's: only its endpoint is known here)."""
        return self.service_endpoint is not None

    def _at_exit(self) -> None:  # the interpreter ends: its daemonic workers go with it, no replacements
        self.closing = True

    def _replace(self, dead: WorkerHandle) -> None:
        with self._lock:
            if self.closing or self.workers[dead.slot] is not dead:
                return
            self.workers[dead.slot] = WorkerHandle(self, dead.slot)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for w in list(self.workers):
            w.ready.wait(max(0.0, deadline - time.monotonic()))

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive]

    def calibrate(self, timeout: float = START_TIMEOUT_S) -> FrameCost:
        """The cost of a talking NPC's frame to one worker while all of them measure it at once (they
        share the machine's cores and caches as they will when serving): the mean of their figures."""
        self.wait_ready(timeout)
        futures = [w.call("calibrate") for w in list(self.workers) if w.alive]
        costs, errors = [], []
        for f in futures:
            try:
                costs.append(FrameCost(*f.result(timeout)))
            except Exception as exc:  # noqa: BLE001 - a worker that died meanwhile: the others still tell
                errors.append(exc)
        if not costs:
            raise errors[0] if errors else WorkerExitedError("no render worker is running to calibrate")
        if errors:
            log.warning("%d of %d workers could not calibrate (%s); using the others' figures",
                        len(errors), len(futures), errors[0])
        cost = combine_costs(costs)
        log.info("frame cost of %d workers measuring at once: %.2f ms + %.2f ms/Mpx (each: %s)", len(costs),
                 cost.fixed_ms, cost.per_mpx_ms, [(round(c.fixed_ms, 2), round(c.per_mpx_ms, 2)) for c in costs])
        return cost

    def _pick(self) -> WorkerHandle:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with self._lock:
                live = [w for w in self.workers if w.alive]
            ready = [w for w in live if w.ready.is_set()]
            if ready:
                return min(ready, key=lambda w: w.load)
            if time.monotonic() > deadline:
                raise WorkerExitedError("no render worker is running (they failed to start)")
            if live:
                live[0].ready.wait(0.5)
            else:
                time.sleep(0.2)

    def open_session(self, options: SessionOptions, session_id: str, seed: int | None = None,
                     resume_state: dict | None = None) -> "RemoteSession":
        """Start a session on the least-loaded worker (blocks for one round trip)."""
        if self.closing:
            raise WorkerExitedError("the render workers are shutting down")
        worker = self._pick()
        session = RemoteSession(worker, options, session_id)
        worker.sessions[session_id] = session  # counted in the load at once
        try:
            worker.call("open", options, session_id, seed, resume_state).result(START_TIMEOUT_S)
        except BaseException:
            worker.sessions.pop(session_id, None)
            raise
        return session

    def service_stats(self) -> tuple[int, int] | None:
        """(batches, frames) rendered by the render service so far; None without one."""
        if not self.renders_through_service:
            return None
        from .render_service import RemoteRenderer

        client = RemoteRenderer(*self.service_endpoint, timeout=10.0)
        try:
            return client.stats()
        finally:
            client.close()

    def close(self, timeout: float = 5.0) -> None:
        atexit.unregister(self._at_exit)
        with self._lock:
            self.closing = True
            workers = list(self.workers)
        self._closed.set()
        for w in workers:
            try:
                w.send("shutdown")
            except WorkerExitedError:
                pass
        for w in workers:
            w.stop(timeout)
        if self.service is not None:
            self.service.stop(timeout)


class RemoteSession:
    """The server-side stand-in for a PerformSession living in a worker process."""

    remote = True

    def __init__(self, worker: WorkerHandle, options: SessionOptions, session_id: str):
        self.options = options
        self.session_id = session_id
        self.worker = worker
        self.lookahead_s = options.lookahead_ms / 1000.0
        self._output = options.output
        self.clock = FrameClock(options.output.fps)
        self.next_index = 0
        self.paused = False
        self.frames_rendered = 0
        self.frames_skipped = 0
        self._audio_seq = 0
        self._npc_pending = False
        self._dead: str | None = None
        self._closed = False
        # Audio chunks not yet sent to the worker: they travel with the session's next render
        # request (or before any other op), one pipe message for all of them instead of one per
        # 20 ms chunk. The worker only reads NPC audio when it makes a frame, and player audio's
        # events leave with the next frame, so nothing is later; the worker is woken (and its
        # renderer interrupted for the GIL) ~3x less often.
        self._audio: list[tuple] = []
        self._audio_bytes = 0

    # -- clock mirror -----------------------------------------------------------------------------
    @property
    def output(self) -> OutputOptions:
        return self._output

    def next_pts(self) -> float:
        return self.clock.pts(self.next_index)

    def _check(self) -> None:
        if self._dead:
            raise WorkerExitedError(self._dead)

    def _send(self, op: str, *args) -> None:
        self._check()
        if self._closed:   # e.g. the pump's skip after a pause, when the client left meanwhile: moot
            return
        self._flush_audio()
        self.worker.send(op, self.session_id, *args)

    def _take_audio(self) -> list[tuple]:
        chunks, self._audio, self._audio_bytes = self._audio, [], 0
        return chunks

    def _flush_audio(self) -> None:
        if self._audio:
            self.worker.send("audio_batch", self.session_id, self._take_audio())

    # -- inputs (one-way) -------------------------------------------------------------------------
    def push_audio(self, channel, pcm: bytes, sample_rate: int, num_channels: int = 1,
                   sample_index: int | None = None, text: str = "", arrived_at: float | None = None) -> list:
        from ..audio.pcm import check_rate
        from ..types import AudioChannel
        from .session import MAX_TEXT_CHARS

        # The checks of PerformSession.push_audio, here, so a bad chunk is answered at once.
        if not isinstance(channel, AudioChannel):
            raise InvalidInputError("audio channel must be PLAYER or NPC.")
        num_channels = num_channels or 1
        check_rate(sample_rate)
        if num_channels not in (1, 2):
            raise AudioFormatError(f"num_channels must be 1 (mono) or 2 (stereo), got {num_channels!r}")
        if not pcm:
            raise AudioFormatError("empty PCM chunk: send at least one sample")
        if len(pcm) % (2 * num_channels):
            raise AudioFormatError(
                f"PCM chunk of {len(pcm)} bytes has an odd length: it is not a whole number of "
                f"{num_channels}-channel s16le frames ({2 * num_channels} bytes each); a chunk must not split a sample")
        if sample_index is not None and sample_index < 0:
            raise AudioFormatError(f"sample_index={sample_index} is negative; omit it to append.")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}.")
        self._audio_seq += 1
        if channel is AudioChannel.NPC:
            self._npc_pending = True
        self._check()
        self._audio.append((self._audio_seq, channel, bytes(pcm), sample_rate, num_channels, sample_index, text,
                            arrived_at if arrived_at is not None else time.monotonic()))
        self._audio_bytes += len(pcm)
        # a paused session makes no frames: its audio goes on at once (listening, placement)
        if self.paused or self._audio_bytes >= MAX_HELD_AUDIO_BYTES:
            self._flush_audio()
        return []

    def set_dialogue_state(self, phase=None, emotion=None, intensity: float = 1.0, transition_ms: int = 300,
                           direction: str = "", direction_result=...) -> None:
        """As PerformSession.set_dialogue_state; the direction is interpreted here, in the server
        process (the sentence model is warmed up once there, not in every worker)."""
        if not 0.0 <= intensity <= 1.0 or intensity != intensity:
            raise InvalidInputError(f"intensity={intensity} must be within 0..1.")
        if transition_ms > 60000:
            raise InvalidInputError(f"transition_ms={transition_ms} must be at most 60000.")
        result = None if direction_result is ... else direction_result
        if direction and direction_result is ...:
            from ..performance.direction import interpret_or_none

            result = interpret_or_none(direction, self.next_pts())
        self._send("state", phase, emotion, intensity, transition_ms, direction, result)

    def interrupt(self) -> None:
        self._send("interrupt")

    def set_output(self, width: int = 0, height: int = 0, fps: int = 0) -> OutputOptions:
        new = self._output.with_changes(width=width or self._output.width, height=height or self._output.height,
                                        fps=fps or self._output.fps)
        self._send("output", new.width, new.height, new.fps)
        if new.fps != self._output.fps:
            self.clock.set_fps(new.fps, self.next_index)
        self._output = new
        return new

    def pause(self) -> None:
        self.paused = True
        if not self._dead:
            self._flush_audio()

    def resume(self) -> None:
        self.paused = False

    def skip_to(self, index: int, count_as_dropped: bool = True) -> int:
        skipped = max(0, index - self.next_index)
        if skipped:
            self.next_index += skipped
            if count_as_dropped:
                self.frames_skipped += skipped
            self._send("skip", self.next_index, count_as_dropped)
        return skipped

    def npc_audio_pending(self) -> bool:
        return self._npc_pending

    # -- frames -----------------------------------------------------------------------------------
    def _next_request(self) -> tuple:
        """(session_id, index, held audio chunks) of the next render request; advances the clock mirror."""
        self._check()
        index = self.next_index
        self.next_index = index + 1
        return self.session_id, index, self._take_audio()

    def _render_future(self) -> Future:
        return self.worker.call("render", *self._next_request())

    def _took(self, reply):
        frame, seq, pending = reply
        self.frames_rendered += 1
        if seq >= self._audio_seq:  # the worker has seen all audio sent so far
            self._npc_pending = pending
        return frame

    def request_frame(self) -> asyncio.Future:
        """Ask the worker for the next frame (from the event loop); the frame index is taken now, so
        the following frame may be asked for before this one is back. The Future gets the frame."""
        return self.worker.call_render_soon(asyncio.get_running_loop(), self._next_request(), self._took)

    async def render(self):
        """The next frame, rendered by the worker (together with its other sessions due now)."""
        return await self.request_frame()

    def render_next(self, timeout: float = 60.0):
        """Blocking variant (tests, tools)."""
        return self._took(self._render_future().result(timeout))

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self, timeout: float = 10.0) -> dict:
        self._check()
        self._flush_audio()
        return self.worker.call("state_dict", self.session_id).result(timeout)

    def close(self, on_state: Callable[[dict], None] | None = None) -> None:
        """End the session in its worker; `on_state(state_dict)` runs when the worker answers."""
        if self._closed:
            return
        self._closed = True
        self.worker.sessions.pop(self.session_id, None)
        if self._dead:
            return
        self._audio, self._audio_bytes = [], 0   # the session ends: audio not yet played is moot
        fut = self.worker.call("close", self.session_id)
        if on_state is not None:
            def done(f: Future) -> None:
                if f.exception() is None and f.result() is not None:
                    on_state(f.result())
            fut.add_done_callback(done)
