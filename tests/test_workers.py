"""Sessions sharded over worker processes (ServerConfig.worker_processes): a real server on loopback,
real worker processes, real rendering. No wall-clock timing is asserted."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from grpc_helpers import collect, feed_realtime
from lpm_npc.config import OutputOptions, ServerConfig, SessionOptions
from lpm_npc.encode import decode_frame
from lpm_npc.runtime.session import PerformSession
from lpm_npc.runtime.workers import RemoteSession
from lpm_npc.server.convert import EVENT_FROM_PB, PIXEL_FORMAT_FROM_PB
from lpm_npc.types import AudioChannel, Emotion, EventType

SIZE = 128


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def wserver(cache_dir):
    from lpm_npc.performance.direction import warm_up
    from lpm_npc.server.app import BackgroundServer

    srv = BackgroundServer(ServerConfig(port=0, cache_dir=cache_dir, max_sessions=8, worker_processes=2,
                                        admission=False, drain_seconds=1.0))
    srv.start()
    srv.runtime.store.ensure_default()
    srv.runtime.pool.wait_ready()
    warm_up()  # directions are interpreted in the server process, as `lpm-npc serve` warms it up
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def wclient(wserver):
    from lpm_npc.client import NpcClient

    c = NpcClient(wserver.address)
    c.wait_ready(30)
    yield c
    c.close()


def rgba(frame) -> np.ndarray:
    return decode_frame(frame.data, frame.width, frame.height, PIXEL_FORMAT_FROM_PB[frame.format], frame.flip_y)


def mouth_box(server, size: int) -> tuple[slice, slice]:
    rig = server.runtime.store.get("default")
    s = size / rig.image.shape[1]
    lm = rig.landmarks[:, :2] * s
    x0, x1 = lm[78, 0], lm[308, 0]
    w = x1 - x0
    y_mid = (lm[13, 1] + lm[14, 1]) / 2
    return slice(int(y_mid - 0.08 * w), int(y_mid + 0.3 * w)), slice(int(x0 + 0.2 * w), int(x1 - 0.2 * w))


def test_sessions_stream_from_both_workers_with_correct_pts_and_sizes(wserver, wclient):
    sizes = [(96, 96), (128, 64), (64, 64), (128, 128)]
    results: dict[int, object] = {}
    pools: list = []

    def run(k: int, w: int, h: int) -> None:
        with wclient.perform(width=w, height=h, fps=30) as stream:
            results[k] = collect(stream, max_frames=12)

    threads = [threading.Thread(target=run, args=(k, w, h)) for k, (w, h) in enumerate(sizes)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and wserver.runtime.active_sessions < len(sizes):
        time.sleep(0.05)
    pools.append([len(w.sessions) for w in wserver.runtime.pool.workers])
    for th in threads:
        th.join(60)
    assert pools[0] == [2, 2], f"sessions not spread over the workers: {pools[0]}"
    for k, (w, h) in enumerate(sizes):
        got = results[k]
        assert not got.errors, got.errors
        assert len(got.frames) == 12
        for _, f in got.frames:
            assert (f.width, f.height) == (w, h) and len(f.data) == w * h * 4
            assert f.pts_us == round(f.index * 1e6 / 30)
        idx = [f.index for _, f in got.frames]
        assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_worker_frames_equal_in_process_frames(wserver, npc_speech):
    """Same seed, same inputs: a worker renders the same pixels as this process."""
    samples, _ = npc_speech
    rt = wserver.runtime
    opts = SessionOptions(output=OutputOptions(width=96, height=96))
    remote = rt.open_session(opts, seed=11)
    assert isinstance(remote, RemoteSession)
    rig = rt.store.get("default")
    local = PerformSession(opts, rig, rt._prepare("default", rig), rt.renderer, session_id=remote.session_id,
                           seed=11)
    ring_before = remote.worker.ring._read if remote.worker.ring is not None else 0
    try:
        for s in (remote, local):
            s.set_dialogue_state(emotion=Emotion.HAPPY, intensity=0.7, transition_ms=0)
        chunk = 320
        pos = 0
        worst = 0
        for i in range(36):
            until = int((i + 1) / 30 * 16000) + 1600
            while pos < until:
                pcm = (np.clip(samples[pos:pos + chunk], -1, 1) * 32767).astype("<i2").tobytes()
                for s in (remote, local):
                    s.push_audio(AudioChannel.NPC, pcm, 16000, arrived_at=1.0)
                pos += chunk
            fr, fl = remote.render_next(), local.render_next()
            assert (fr.index, fr.pts_us, fr.pts_samples) == (fl.index, fl.pts_us, fl.pts_samples)
            np.testing.assert_allclose(fr.motion.values, fl.motion.values, atol=1e-4)
            a = np.frombuffer(fr.encoded.data, np.uint8).astype(int)
            b = np.frombuffer(fl.encoded.data, np.uint8).astype(int)
            worst = max(worst, int(np.abs(a - b).max()))
        assert worst <= 2
        # the 96x96 RGBA pixels (36 KB) came through the worker's shared-memory ring, not its pipe,
        # and the ring's file was removed once the worker had mapped it
        ring = remote.worker.ring
        assert ring is not None and ring._read - ring_before >= 36 * 96 * 96 * 4 and not os.path.exists(ring.path)
        assert remote.npc_audio_pending() == local.npc_audio_pending()
        state = remote.state_dict()
        assert state.keys() == local.state_dict().keys()
    finally:
        rt.close_session(remote)
    # the worker's state reaches the resume store
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and rt.resume._items.get(remote.session_id) is None:
        time.sleep(0.02)
    assert rt.resume.take(remote.session_id) is not None


def test_worker_does_not_import_mediapipe(wserver):
    pid = wserver.runtime.pool.workers[0].pid
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    assert "mediapipe" not in maps


@pytest.mark.flaky(reruns=2, reruns_delay=2)   # real time: a VM that loses its CPU for seconds skips frames
def test_mouth_moves_with_speech(wserver, wclient, npc_speech):
    samples, _ = npc_speech
    samples = samples[: 16000 * 2]
    box = mouth_box(wserver, SIZE)
    with wclient.perform(width=SIZE, fps=30) as stream:
        t0 = time.monotonic()
        feed_realtime(stream, AudioChannel.NPC, samples, start_s=1.0, sample_index_from=1.0, t0=t0)
        got = collect(stream, seconds=3.3)
    gray = {f.index: rgba(f)[..., :3].mean(axis=2)[box].mean() for _, f in got.frames}
    silence = [v for i, v in gray.items() if 0.2 < i / 30 < 0.9]
    speech = [v for i, v in gray.items() if 1.2 < i / 30 < 2.9]
    assert len(silence) > 5 and len(speech) > 10
    assert np.std(speech) > 3 * np.std(silence) + 1.0
    started = [e for e in got.events if EVENT_FROM_PB[e.type] is EventType.NPC_SPEECH_STARTED]
    assert started and abs(started[0].pts_us / 1e6 - 1.0) < 0.25


def test_controls_and_direction_through_the_proxy(wclient):
    with wclient.perform(width=64, fps=30, send_rig=True, rig_format="native") as stream:
        collect(stream, max_frames=3)
        stream.set_state(direction="nods slowly, a bit nervous", transition_ms=200)
        got_dir = collect(stream, seconds=1.0)
        stream.interrupt()
        stream.pause()
        paused = collect(stream, seconds=0.8)
        stream.resume()
        stream.set_output(width=96, height=80, fps=15)
        after = collect(stream, seconds=1.2)
    assert len(got_dir.directions) == 1, got_dir.errors
    assert "nod_slow" in [m.name for m in got_dir.directions[0].matches]
    assert EventType.DIRECTION_APPLIED in [EVENT_FROM_PB[e.type] for e in got_dir.events]
    assert len(paused.frames) <= 3
    types = [EVENT_FROM_PB[e.type] for e in got_dir.events + paused.events + after.events]
    assert EventType.INTERRUPTED in types
    assert EventType.PAUSED in types and EventType.RESUMED in types and EventType.OUTPUT_CHANGED in types
    assert {(f.width, f.height) for _, f in after.frames[-4:]} == {(96, 80)}
    last = [f for _, f in after.frames[-5:]]   # 15 fps per frame index (a starved machine may skip some)
    assert all(b.pts_us - a.pts_us == pytest.approx((b.index - a.index) * 1e6 / 15, abs=2)
               for a, b in zip(last, last[1:]))
    # the pause skipped the clock forward: pts keep growing across it
    assert paused.frames == [] or after.frames[0][1].pts_us > paused.frames[-1][1].pts_us
    assert not [e for e in got_dir.errors + paused.errors + after.errors if e.fatal]


def test_a_killed_worker_ends_its_session_with_internal_and_others_carry_on(wserver, wclient):
    pool = wserver.runtime.pool
    victim_stream = wclient.perform(width=64, fps=30)
    other_stream = wclient.perform(width=64, fps=30)
    try:
        first = collect(victim_stream, max_frames=2)
        collect(other_stream, max_frames=2)
        sid = first.started.session_id
        victim = next(w for w in pool.workers if sid in w.sessions)
        others = [s.session_id for w in pool.workers if w is not victim for s in w.sessions.values()]
        os.kill(victim.pid, signal.SIGKILL)
        got = collect(victim_stream, seconds=10)
        fatal = [e for e in got.errors if e.fatal]
        assert fatal and fatal[0].code == grpc.StatusCode.INTERNAL.value[0], got.errors
        assert "render worker exited" in fatal[0].message
        if others:  # the session on the other worker still streams
            assert len(collect(other_stream, max_frames=5).frames) == 5
    finally:
        victim_stream.cancel()
        other_stream.cancel()
    # a replacement starts; a new session works
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(w.alive and w.ready.is_set() for w in pool.workers):
        time.sleep(0.1)
    assert victim.pid not in pool.pids() and len(pool.pids()) == 2
    assert not _alive(victim.pid)
    with wclient.perform(width=64, fps=30) as stream:
        got = collect(stream, max_frames=5)
    assert len(got.frames) == 5 and not got.errors


def test_workers_calibrate_at_once_and_the_budget_counts_them(wserver):
    """Each worker measures a talking NPC's frame while the other does too (they share the cores)."""
    from lpm_npc.runtime.capacity import Capacity

    pool = wserver.runtime.pool
    cost = pool.calibrate()
    assert cost.fixed_ms > 0 and cost.per_mpx_ms > 0
    assert cost.ms(512, 512) > cost.ms(128, 128)
    cap = Capacity(cost, wserver.runtime._budget_ms_per_s())
    assert cap.budget_ms_per_s == pytest.approx(2 * 1000 * wserver.runtime.config.utilisation)


def test_server_stop_leaves_no_worker_process(cache_dir):
    from lpm_npc.client import NpcClient
    from lpm_npc.server.app import BackgroundServer

    srv = BackgroundServer(ServerConfig(port=0, cache_dir=cache_dir, worker_processes=1, admission=False,
                                        drain_seconds=0.5)).start()
    try:
        srv.runtime.store.ensure_default()
        client = NpcClient(srv.address)
        client.wait_ready(30)
        stream = client.perform(width=64, fps=30)
        assert len(collect(stream, max_frames=3).frames) == 3  # a live session while stopping
        pids = srv.runtime.worker_pids()
        assert len(pids) == 1 and _alive(pids[0])
    finally:
        srv.stop()
    assert not any(_alive(p) for p in pids)
    stream.cancel()
    client.close()


class _RecordingWorker:
    """Stands in for a WorkerHandle: records what a RemoteSession sends, in order."""

    def __init__(self):
        self.sent: list[tuple] = []
        self.sessions = {}

    def send(self, op, *args):
        self.sent.append((op,) + args)

    def call(self, op, *args):
        from concurrent.futures import Future

        self.sent.append((op,) + args)
        return Future()


def test_audio_rides_with_the_next_render_request_and_keeps_its_order():
    w = _RecordingWorker()
    s = RemoteSession(w, SessionOptions(), "sid")
    pcm = np.zeros(320, "<i2").tobytes()
    for _ in range(3):
        s.push_audio(AudioChannel.NPC, pcm, 16000)
    assert w.sent == []                      # held: nothing woke the worker yet
    assert s.npc_audio_pending()
    s.set_dialogue_state(emotion=Emotion.SAD)
    ops = [m[0] for m in w.sent]
    assert ops == ["audio_batch", "state"]   # the audio goes first, in one message
    assert [c[0] for c in w.sent[0][2]] == [1, 2, 3]
    s.push_audio(AudioChannel.PLAYER, pcm, 16000)
    s._render_future()
    op, sid, index, chunks = w.sent[-1]
    assert (op, sid, index, [c[0] for c in chunks]) == ("render", "sid", 0, [4])
    s.pause()                                # a paused session makes no frames: audio goes at once
    s.push_audio(AudioChannel.PLAYER, pcm, 16000)
    assert w.sent[-1][0] == "audio_batch" and [c[0] for c in w.sent[-1][2]] == [5]
    with pytest.raises(Exception):
        s.push_audio(AudioChannel.NPC, b"\x00", 16000)  # an odd byte count is refused at once


def test_a_reply_to_a_request_cancelled_meanwhile_does_not_stop_the_reader():
    """A client that goes away cancels its render future; if that lands between the reader's done()
    check and set_result, the reader thread died (InvalidStateError) and every session on the worker
    waited forever."""
    import multiprocessing as mp
    from concurrent.futures import Future

    from lpm_npc.runtime.workers import REPLIES, WorkerHandle, _send

    class CancelledMeanwhile(Future):  # cancelled after the reader asked whether it was done
        def done(self):
            return False

    parent, child = mp.Pipe(duplex=True)
    h = object.__new__(WorkerHandle)   # only the reader: no process behind this pipe
    h.slot, h.conn, h.ring, h.ready, h._lock = 0, parent, None, threading.Event(), threading.Lock()
    exited = threading.Event()
    h._exited = exited.set
    lost, later = CancelledMeanwhile(), Future()
    assert lost.cancel()
    h._pending = {1: lost, 2: later}
    reader = threading.Thread(target=h._read, daemon=True)
    reader.start()
    try:
        _send(child, (REPLIES, True, [(1, True, "frame 1"), (2, True, "frame 2")]))
        assert later.result(timeout=10) == "frame 2"
        assert reader.is_alive()
    finally:
        child.close()
    assert exited.wait(10)  # the pipe closing still ends the reader the usual way
    parent.close()


def test_calibration_uses_the_workers_that_answer():
    """A worker that dies while the pool calibrates costs its figure, not the server's start."""
    from concurrent.futures import Future

    from lpm_npc.runtime.workers import WorkerExitedError, WorkerPool

    class _Worker:
        alive = True

        def __init__(self, answer):
            self.answer = answer

        def call(self, op):
            assert op == "calibrate"
            f = Future()
            if isinstance(self.answer, BaseException):
                f.set_exception(self.answer)
            else:
                f.set_result(self.answer)
            return f

    pool = WorkerPool.__new__(WorkerPool)
    pool.wait_ready = lambda timeout=None: None
    pool.workers = [_Worker((2.0, 20.0)), _Worker(WorkerExitedError("render worker exited: worker 1")),
                    _Worker((4.0, 30.0))]
    cost = pool.calibrate()
    assert (cost.fixed_ms, cost.per_mpx_ms) == (3.0, 25.0)
    pool.workers = [_Worker(WorkerExitedError("render worker exited: worker 0"))]
    with pytest.raises(WorkerExitedError, match="worker 0"):
        pool.calibrate()


def _a_new_worker_serves(rt, worker, meanwhile=lambda: None) -> None:
    """The pool replaced the hung `worker` (within 2 minutes) and the new one renders a session."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (rt.pool.workers[0] is not worker
                                               and rt.pool.workers[0].ready.is_set()):
        meanwhile()
        time.sleep(0.1)
    assert rt.pool.pids() and worker.pid not in rt.pool.pids()
    again = rt.open_session(SessionOptions(output=OutputOptions(width=64, height=64)), seed=1)
    assert again.render_next(timeout=60).index == 0
    rt.close_session(again)


def test_a_worker_whose_main_loop_hangs_is_killed_and_replaced(cache_dir, capfd, caplog):
    """A worker stuck reading half a message answers neither its frame request nor the hang check:
    after `worker_hang_s` its stacks are written to the log (where it hung) and it is killed, its session
    ends with a reason that says so, and a new worker serves the next session. (Half a message rather
    than SIGSTOP: a starved test run's SIGCONT would undo that.)"""
    import struct

    from lpm_npc.runtime.runtime import Runtime
    from lpm_npc.runtime.workers import WorkerExitedError

    rt = Runtime(ServerConfig(cache_dir=cache_dir, worker_processes=1, admission=False, worker_hang_s=1.0))
    try:
        rt.store.ensure_default()
        rt.pool.wait_ready()
        s = rt.open_session(SessionOptions(output=OutputOptions(width=64, height=64)), seed=1)
        s.render_next(timeout=60)
        time.sleep(1.5)   # a worker with nothing asked of it is left alone
        worker = rt.pool.workers[0]
        assert worker.alive and not worker.hung_why
        with worker._send_lock:   # 10 of the 1000 bytes it is told to expect, never the rest
            os.write(worker.conn.fileno(), struct.pack("!i", 1000) + b"x" * 10)
        request = s._render_future()
        # Hold the pipe's send lock meanwhile, as the server's event loop would, blocked sending to a
        # worker that no longer reads: the check must still go out (from a thread of its own).
        with worker._send_lock:
            deadline = time.monotonic() + 60
            while worker.alive and time.monotonic() < deadline:
                time.sleep(0.05)
        with pytest.raises(WorkerExitedError, match="hung"):
            request.result(60)
        assert "did not answer a check" in worker.hung_why
        assert "worker 0 is hung: a frame request has waited" in caplog.text
        err = capfd.readouterr().err   # the worker's own stderr
        # the stack of its main thread, stuck reading the rest of the message
        assert "(most recent call first)" in err and "in recv_bytes" in err and "in run" in err
        _a_new_worker_serves(rt, worker)
    finally:
        rt.close()



class _StoppedThreads:
    """Threads of another process stopped on their own, with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT):
    SIGSTOP would stop the whole process. A thread stopped while it waits for work holds no GIL, so the
    rest of the process goes on, as it does when one thread is stuck in a native call."""

    SEIZE, INTERRUPT, DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000

    def __init__(self, tids: list[int]):
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.tids, self.gone = [], set()
        for tid in tids:
            if self.libc.ptrace(self.SEIZE, tid, None, None) != 0:
                self.release()
                pytest.skip(f"ptrace is not permitted here (errno {ctypes.get_errno()})")
            self.tids.append(tid)
            assert self.libc.ptrace(self.INTERRUPT, tid, None, None) == 0

    def reap(self) -> None:
        """Collect the exit of traced threads that died (their process was killed): until their tracer
        has, the process they belonged to cannot be reaped."""
        for tid in self.tids:
            if tid in self.gone:
                continue
            try:
                pid, status = os.waitpid(tid, os.WNOHANG | self.WALL)
            except ChildProcessError:
                self.gone.add(tid)
                continue
            if pid and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                self.gone.add(tid)

    def release(self) -> None:
        for tid in self.tids:
            if tid not in self.gone:
                self.libc.ptrace(self.DETACH, tid, None, None)


def _thread_ids(pid: int, prefix: str) -> list[int]:
    """The kernel ids of a process's threads whose name (/proc/PID/task/TID/comm) starts with `prefix`."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip().startswith(prefix):
                out.append(int(tid))
    return out


def test_a_worker_whose_frame_thread_hangs_is_killed_and_replaced(cache_dir, caplog):
    """A worker whose frame threads are stuck (its main loop still answers) is told apart from one
    waiting on a stuck render service by the check's answer, and killed: its session ends with a reason
    that says so, and a new worker serves."""
    from lpm_npc.runtime.runtime import Runtime
    from lpm_npc.runtime.workers import WorkerExitedError

    rt = Runtime(ServerConfig(cache_dir=cache_dir, worker_processes=1, admission=False, worker_hang_s=1.0))
    stopped = None
    try:
        rt.store.ensure_default()
        rt.pool.wait_ready()
        s = rt.open_session(SessionOptions(output=OutputOptions(width=64, height=64)), seed=1)
        s.render_next(timeout=60)
        worker = rt.pool.workers[0]
        tids = _thread_ids(worker.pid, "frames-")   # the scheduler names its threads for this
        assert tids, "the worker's frame threads carry no kernel name"
        time.sleep(0.3)   # no frame asked: they wait for work (holding no GIL) when they are stopped
        stopped = _StoppedThreads(tids)
        request = s._render_future()
        deadline = time.monotonic() + 60
        while worker.alive and time.monotonic() < deadline:
            stopped.reap()
            time.sleep(0.05)
        with pytest.raises(WorkerExitedError, match="hung"):
            request.result(60)
        assert "frame thread is stuck" in worker.hung_why, worker.hung_why
        assert "worker 0 is hung: a frame request has waited" in caplog.text
        _a_new_worker_serves(rt, worker, stopped.reap)
    finally:
        if stopped is not None:
            stopped.reap()
            stopped.release()
        rt.close()