"""Many NPCs: batched frame making across sessions, admission control by render capacity."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from grpc_helpers import collect
from lpm_npc.config import OutputOptions, ServerConfig, SessionOptions
from lpm_npc.runtime.capacity import Capacity, FrameCost, measure_concurrent_frame_cost, measure_frame_cost
from lpm_npc.runtime.scheduler import FrameScheduler, SchedulerClosedError, aligned_start
from lpm_npc.runtime.session import PerformSession
from lpm_npc.types import Emotion


@pytest.fixture(scope="module")
def rig_and_prepared(server):
    rt = server.runtime
    rig = rt.store.get("default")
    return rt, rig, rt._prepare("default", rig)


def _sessions(rt, rig, prepared, sizes, seed=0):
    return [PerformSession(SessionOptions(output=OutputOptions(width=w, height=h)), rig, prepared, rt.renderer,
                           seed=seed + i) for i, (w, h) in enumerate(sizes)]


def test_batched_frames_equal_one_by_one(rig_and_prepared):
    """A tick rendered in one batched call gives the same pixels as rendering each session alone."""
    rt, rig, prepared = rig_and_prepared
    sizes = [(96, 96), (96, 96), (64, 80), (96, 96)]
    batched = _sessions(rt, rig, prepared, sizes)
    alone = _sessions(rt, rig, prepared, sizes)
    for s in batched + alone:  # something to show: two emotions
        s.set_dialogue_state(emotion=Emotion.HAPPY, transition_ms=0)
    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.0)
    try:
        for _ in range(3):
            frames_b = sched.render_now(batched)
            frames_a = [s.render_next() for s in alone]
            for fb, fa in zip(frames_b, frames_a):
                assert fb.index == fa.index and fb.pts_us == fa.pts_us
                assert fb.batch_size == len(sizes)
                a = np.frombuffer(fa.encoded.data, np.uint8).astype(int)
                b = np.frombuffer(fb.encoded.data, np.uint8).astype(int)
                assert a.shape == b.shape
                assert np.abs(a - b).max() <= 2
    finally:
        sched.close()


def test_requests_of_one_tick_share_one_render_call(rig_and_prepared):
    rt, rig, prepared = rig_and_prepared
    sessions = _sessions(rt, rig, prepared, [(64, 64)] * 4 + [(48, 48)] * 2)
    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.3)
    got, done = [], threading.Event()

    def cb(frame, error):
        got.append((frame, error))
        if len(got) == len(sessions):
            done.set()

    try:
        for s in sessions:
            sched.submit(s, cb)
        assert done.wait(60)
        assert all(e is None for _, e in got)
        assert sched.stats.calls == 1 and sched.stats.frames == len(sessions)
        assert {f.batch_size for f, _ in got} == {len(sessions)}
        sizes = {(f.encoded.width, f.encoded.height) for f, _ in got}
        assert sizes == {(64, 64), (48, 48)}
    finally:
        sched.close()


def test_submit_many_gives_a_worker_thread_all_of_a_tick_or_none(rig_and_prepared):
    """Without coalescing, requests submitted one by one can be split over render calls; the
    requests of a worker process's render_batch message go in together, so they never are."""
    rt, rig, prepared = rig_and_prepared
    sessions = _sessions(rt, rig, prepared, [(64, 64)] * 4)
    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.0)
    try:
        for tick in range(3):
            got, done = [], threading.Event()

            def cb(frame, error):
                got.append((frame, error))
                if len(got) == len(sessions):
                    done.set()

            calls = sched.stats.calls
            sched.submit_many([(s, cb) for s in sessions])
            assert done.wait(60)
            assert all(e is None for _, e in got)
            assert sched.stats.calls == calls + 1 and {f.batch_size for f, _ in got} == {4}
            assert {f.index for f, _ in got} == {tick}
    finally:
        sched.close()
    with pytest.raises(SchedulerClosedError, match="closed"):
        sched.submit_many([(sessions[0], cb)])


def test_a_failing_session_does_not_take_the_batch_down(rig_and_prepared):
    rt, rig, prepared = rig_and_prepared
    good = _sessions(rt, rig, prepared, [(64, 64)] * 2)

    class Broken:
        def begin_frame(self):
            raise RuntimeError("broken session")

    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.0)
    try:
        results = []
        sched._make([(good[0], lambda f, e: results.append((f, e))), (Broken(), lambda f, e: results.append((f, e))),
                     (good[1], lambda f, e: results.append((f, e)))])
        errors = [e for _, e in results if e is not None]
        frames = [f for f, _ in results if f is not None]
        assert len(errors) == 1 and "broken" in str(errors[0])
        assert len(frames) == 2
    finally:
        sched.close()


def test_a_failing_callback_or_batch_hook_leaves_the_frame_thread_running(rig_and_prepared):
    """A frame thread that died on a bookkeeping error left every later request waiting forever."""
    rt, rig, prepared = rig_and_prepared
    sessions = _sessions(rt, rig, prepared, [(48, 48)] * 2)
    hook_calls = []

    def failing_hook():
        hook_calls.append(1)
        if len(hook_calls) == 1:
            raise RuntimeError("batch hook failed")

    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.0, on_batch_done=failing_hook)
    try:
        got, done = [], threading.Event()

        def raising(frame, error):
            raise RuntimeError("callback failed")

        def cb(frame, error):
            got.append((frame, error))
            done.set()

        sched.submit_many([(sessions[0], raising), (sessions[1], cb)])  # both fail once, after the frames
        assert done.wait(60) and got[0][1] is None
        got.clear()
        done.clear()
        sched.submit(sessions[0], cb)
        assert done.wait(60), "the frame thread died"
        assert got[0][1] is None and got[0][0].index == 1 and len(hook_calls) == 2
    finally:
        sched.close()


def test_tick_grid_aligns_sessions():
    a = aligned_start(30, now=1000.0001)
    b = aligned_start(30, now=1000.02)
    # never later than now (aligning must not delay frames), less than one interval earlier
    assert 1000.0001 - 1 / 30 < a <= 1000.0001 and 1000.02 - 1 / 30 < b <= 1000.02
    # both land on the same grid: their difference is a whole number of frame intervals
    k = (b - a) * 30
    assert abs(k - round(k)) < 1e-6


def test_capacity_model_arithmetic():
    cap = Capacity(FrameCost(fixed_ms=2.0, per_mpx_ms=20.0), budget_ms_per_s=1700.0)
    # 256x256: 2 + 20 * 0.0655 = 3.31 ms per frame, x30 = 99 ms/s per NPC
    assert cap.load_ms_per_s(256, 256, 30) == pytest.approx(30 * (2.0 + 20.0 * 0.065536))
    assert cap.max_sessions_at(256, 256, 30) == 17
    assert cap.max_sessions_at(512, 512, 30) < cap.max_sessions_at(256, 256, 30)
    assert cap.max_sessions_at(256, 256, 15) >= 2 * cap.max_sessions_at(256, 256, 30) - 1


def test_frame_cost_is_measured_from_real_frames(rig_and_prepared):
    rt, rig, prepared = rig_and_prepared
    sched = FrameScheduler(rt.renderer, workers=1, coalesce_s=0.0)
    cache = {}

    def make(size, batch):
        if size not in cache:
            cache[size] = _sessions(rt, rig, prepared, [(size, size)] * batch)
        sched.render_now(cache[size])

    try:
        cost = measure_frame_cost(make, sizes=(64, 192), batch=2, repeats=1)
    finally:
        sched.close()
    assert cost.fixed_ms > 0 and cost.per_mpx_ms > 0
    assert cost.ms(512, 512) > cost.ms(64, 64)


def _sleepy_maker(lock: threading.Lock):
    """A frame maker whose frames take 0.5 + 20/Mpx ms each of something it holds `lock` for."""
    import time

    def make(size, batch):
        with lock:
            time.sleep(batch * (0.5 + 20.0 * size * size / 1e6) / 1000.0)
    return make


def test_concurrent_calibration_shows_what_the_makers_share():
    """Makers that serialise on one lock (threads on one GIL) each measure about twice the cost of one
    maker alone; makers that share nothing measure about the same. A single-maker measurement would
    have promised the first case twice what it can make. Judged on a run in which the machine kept
    its CPU (a starved VM stretches sleeps at random: tests/stalls.py)."""
    import time
    import warnings

    from stalls import StallMonitor

    def measure():
        one = measure_concurrent_frame_cost([_sleepy_maker(threading.Lock())], batch=4)
        shared_lock = threading.Lock()
        shared = measure_concurrent_frame_cost([_sleepy_maker(shared_lock), _sleepy_maker(shared_lock)], batch=4)
        apart = measure_concurrent_frame_cost([_sleepy_maker(threading.Lock()), _sleepy_maker(threading.Lock())],
                                              batch=4)
        return one.ms(256, 256), shared.ms(256, 256), apart.ms(256, 256)

    judged = []   # (one, shared, apart) of the tries in which the machine kept its CPU
    with StallMonitor() as machine:
        for _ in range(5):
            t0 = time.monotonic()
            one, shared, apart = measure()
            if not machine.stalled_near(t0, time.monotonic(), margin_s=0.05):
                if shared > 1.7 * one and apart < 1.3 * one:
                    return
                judged.append((one, shared, apart))
    # A try can still be stretched below the monitor's threshold (a busy 2-core VM: once, apart 2.77
    # against one 1.85 ms); a real fault fails every try.
    assert not judged, f"makers' sharing not seen in any of {len(judged)} judged tries (one, shared, apart): {judged}"
    assert one > 0 and shared > 0 and apart > 0
    warnings.warn(f"calibration sharing not judged: the machine stalled in every try ({machine.summary()})")


def test_a_failing_frame_maker_fails_the_calibration_without_hanging_the_others():
    def broken(size, batch):
        raise RuntimeError("no renderer")

    with pytest.raises(RuntimeError, match="no renderer"):
        measure_concurrent_frame_cost([_sleepy_maker(threading.Lock()), broken], batch=1, repeats=1)


def test_calibration_frames_are_those_of_talking_npcs(rig_and_prepared):
    from lpm_npc.runtime.calibration import TalkingFrameMaker
    from lpm_npc.performance.motion import CHANNEL_INDEX

    rt, rig, prepared = rig_and_prepared
    make = TalkingFrameMaker(rig, prepared, rt.renderer)
    try:
        jaw = []
        for _ in range(40):
            jaw += [f.motion.values[CHANNEL_INDEX["jaw_open"]] for f in make(64, 2)]
        assert len(jaw) == 80
        assert max(jaw) > 0.2   # the mouth moves: lip-sync and mouth layers are in the measured cost
    finally:
        make.close()


def test_in_process_capacity_counts_the_render_threads_at_once_and_the_serving_cost(cache_dir):
    from lpm_npc.runtime.runtime import Runtime

    rt = Runtime(ServerConfig(cache_dir=cache_dir, render_threads=2, serve_cost_fixed_ms=1.0,
                              serve_cost_per_mpx_ms=18.0))
    try:
        cap = rt.calibrate()
        assert cap.budget_ms_per_s == pytest.approx(2 * 1000 * rt.config.utilisation)
        assert cap.cost.fixed_ms > 1.0 and cap.cost.per_mpx_ms > 18.0
        # the serving cost is counted on top of what was measured (no lower bound: a starved VM may measure
        # a frame so slow that not one NPC fits, and then the server rightly admits none)
        assert cap.max_sessions_at(256, 256, 30) < cap.budget_ms_per_s / 30 / (1.0 + 18.0 * 0.065536)
        with pytest.raises(Exception) as err:
            rt.admit(256, 256, 30 * (cap.max_sessions_at(256, 256, 30) + 1))
        assert "--workers" in str(err.value) or (len(__import__("os").sched_getaffinity(0)) == 1)
    finally:
        rt.close()


def test_sessions_opened_at_once_are_admitted_only_up_to_capacity(cache_dir, monkeypatch):
    """A scene loading opens many NPCs at once; each open takes a while (a worker's round trip, a rig
    from disk). Admission must count the ones being opened, not only the ones already open."""
    import time

    from lpm_npc.errors import CapacityError
    from lpm_npc.runtime.runtime import Runtime

    # 10 ms per 256x256 frame -> 300 ms/s per NPC at 30 fps; budget 1 x 1000 x 0.7 = 700: two fit
    rt = Runtime(ServerConfig(cache_dir=cache_dir, render_threads=1, utilisation=0.7, frame_cost_fixed_ms=5.0,
                              frame_cost_per_mpx_ms=5.0 / 0.065536))
    rt.store.ensure_default()
    slow_get = rt.store.get

    def get(character_id):
        time.sleep(0.3)
        return slow_get(character_id)

    monkeypatch.setattr(rt.store, "get", get)
    opened, refused = [], []

    def open_one():
        try:
            opened.append(rt.open_session(SessionOptions(output=OutputOptions(width=256, height=256, fps=30))))
        except CapacityError as exc:
            refused.append(exc)

    try:
        threads = [threading.Thread(target=open_one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(opened) == 2 and len(refused) == 3
        assert "capacity is full" in str(refused[0])
        assert rt.committed_ms_per_s() == pytest.approx(2 * 300.0)
        # a failed open gives its reservation back
        monkeypatch.setattr(rt.store, "get", lambda cid: (_ for _ in ()).throw(RuntimeError("disk gone")))
        rt.close_session(opened.pop())
        with pytest.raises(RuntimeError):
            rt.open_session(SessionOptions(output=OutputOptions(width=256, height=256, fps=30)))
        assert rt.committed_ms_per_s() == pytest.approx(300.0)
    finally:
        for s in opened:
            rt.close_session(s)
        rt.close()


def test_with_workers_the_server_process_sending_limit_is_admitted_against(cache_dir):
    """Worker processes can make more frames than the one server process can send on time: admission
    refuses a stream that would take its sends past `front_cost_ms` x fps of its budget, and says so."""
    from lpm_npc.errors import CapacityError
    from lpm_npc.runtime.runtime import Runtime

    # makers: 0.1 ms a frame, plenty; server process: 10 ms a frame -> 850 / 10 = 85 frames/s
    rt = Runtime(ServerConfig(cache_dir=cache_dir, worker_processes=1, frame_cost_fixed_ms=0.1,
                              frame_cost_per_mpx_ms=0.1, front_cost_ms=10.0, utilisation=0.85))
    opened = []
    try:
        rt.store.ensure_default()
        cap = rt.capacity
        assert cap.max_frames_per_s == pytest.approx(85.0)
        assert cap.max_sessions_at(256, 256, 30) == 2   # the makers alone would fit thousands
        opts = SessionOptions(output=OutputOptions(width=64, height=64, fps=30))
        opened += [rt.open_session(opts), rt.open_session(opts)]
        with pytest.raises(CapacityError) as err:
            rt.open_session(opts)
        assert "sending capacity" in str(err.value) and "front_cost_ms" in str(err.value)
        assert err.value.status.name == "RESOURCE_EXHAUSTED"
        # a 15 fps stream still fits (60 + 15 <= 85); a paused one sends nothing
        opened.append(rt.open_session(SessionOptions(output=OutputOptions(width=64, height=64, fps=15))))
        opened[0].pause()
        opened.append(rt.open_session(opts))
        with pytest.raises(CapacityError):
            rt.open_session(opts)
    finally:
        for s in opened:
            rt.close_session(s)
        rt.close()


def test_in_process_sessions_have_no_separate_sending_limit(cache_dir):
    from lpm_npc.runtime.runtime import Runtime

    rt = Runtime(ServerConfig(cache_dir=cache_dir, render_threads=1, frame_cost_fixed_ms=1.0,
                              frame_cost_per_mpx_ms=1.0, front_cost_ms=10.0))
    try:
        assert rt.capacity.max_frames_per_s is None   # its serving cost is in the makers' frame cost
    finally:
        rt.close()


@pytest.fixture()
def small_server(cache_dir):
    """A server whose measured capacity is replaced by a fixed one: two 256x256@30 NPCs fit, three do not."""
    from lpm_npc.server.app import BackgroundServer

    # 10 ms per 256x256 frame -> 300 ms/s per NPC; budget 1 thread x 1000 x 0.7 = 700 ms/s
    cfg = ServerConfig(port=0, cache_dir=cache_dir, max_sessions=8, render_threads=1, utilisation=0.7,
                       frame_cost_fixed_ms=5.0, frame_cost_per_mpx_ms=5.0 / 0.065536, drain_seconds=0.5)
    srv = BackgroundServer(cfg).start()
    srv.runtime.store.ensure_default()
    yield srv
    srv.stop()


def test_admission_control_refuses_beyond_capacity_and_pause_frees_it(small_server, caplog):
    import logging

    from lpm_npc.client import NpcClient

    caplog.set_level(logging.INFO, logger="lpm_npc.server.servicer")

    client = NpcClient(small_server.address)
    client.wait_ready(30)
    info = client.server_info()
    assert info.capacity_pixels_per_s > 0
    a = client.perform(width=256, fps=30)
    b = client.perform(width=256, fps=30)
    try:
        collect(a, max_frames=1)
        collect(b, max_frames=1)
        assert client.server_info().committed_pixels_per_s > 0
        with pytest.raises(grpc.RpcError) as err:
            collect(client.perform(width=256, fps=30), max_frames=1)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "capacity" in err.value.details() and "ACTION_SET_OUTPUT" in err.value.details()
        assert "session refused (RESOURCE_EXHAUSTED): rendering capacity is full" in caplog.text  # for the operator
        # a far NPC at a lower level of detail still fits
        small = client.perform(width=64, fps=15)
        collect(small, max_frames=1)
        small.cancel()
        # growing a session beyond capacity is refused without ending it
        a.set_output(width=512, height=512)
        got = collect(a, max_frames=10)
        assert any(e.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and not e.fatal for e in got.errors)
        assert {(f.width, f.height) for _, f in got.frames[-3:]} == {(256, 256)}
        # a paused (invisible) NPC costs nothing: a third one is admitted
        b.pause()
        collect(b, seconds=0.3)
        c = client.perform(width=256, fps=30)
        assert len(collect(c, max_frames=2).frames) == 2
        c.cancel()
    finally:
        a.cancel()
        b.cancel()
        client.close()


def test_gpu_memory_of_the_server_tree_from_nvidia_smi(tmp_path, monkeypatch):
    """The benchmark's GPU memory per session: nvidia-smi's compute apps of the server's process tree
    (here a stand-in nvidia-smi script, since this machine has no GPU); none at all without it."""
    import os

    from lpm_npc import bench

    assert bench.parse_compute_apps("1234, 812\n1234, 100\n[N/A], [N/A]\nbad\n99, 5\n") == {1234: 912.0, 99: 5.0}
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.tree_gpu_mb(os.getpid()) is None  # no nvidia-smi: no GPU figures, no error
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{os.getpid()}, 812'\necho '4000000, 300'\n")
    smi.chmod(0o755)
    assert bench.tree_gpu_mb(os.getpid()) == 812.0   # only our tree's processes
    smi.write_text("#!/bin/sh\necho '4000000, 300'\necho '4000001, 20'\n")
    assert bench.tree_gpu_mb(os.getpid()) == 320.0   # PIDs from another namespace: the whole GPU


def test_the_benchmark_keeps_the_render_service_cpu_apart_from_the_workers():
    from lpm_npc import bench

    used = {10: 3.0, 11: 2.0, 12: 1.5, 13: 1.0, 14: 0.5, 15: 0.1}
    names = {10: "lpm-npc", 11: "lpm-npc-front1", 12: "lpm-npc-worker", 13: "lpm-npc-worker",
             14: "lpm-npc-render", 15: "python"}
    fronts, workers, render = bench.split_server_cpu(used, names, main_pid=10)
    assert fronts == {10: 3.0, 11: 2.0}
    assert workers == {12: 1.5, 13: 1.0, 15: 0.1}
    assert render == {14: 0.5}


def test_the_benchmark_prints_the_latency_bar_that_applies():
    from lpm_npc.bench import _latency_bar

    assert _latency_bar(1, 30) == "p95 <= 100 ms + lookahead 80 ms"
    assert _latency_bar(8, 30) == "p95 <= one frame 33 ms + lookahead 80 ms = 113 ms"
    assert _latency_bar(8, 15).endswith("= 147 ms")


def test_sweep_memory_per_added_session_is_taken_over_the_sizes_first_row():
    from lpm_npc.bench import add_marginal_memory

    rows = [{"size": 256, "sessions": n, "server_rss_mb_peak": peak, "rss_mb_per_session": own}
            for n, peak, own in ((1, 1600.0, 140.0), (2, 1700.0, 60.0), (8, 1724.0, 1.0))]
    rows.append({"size": 512, "sessions": 1, "server_rss_mb_peak": 1590.0, "rss_mb_per_session": 0.0})
    rows.append({"size": 512, "sessions": 4, "server_rss_mb_peak": 1580.0, "rss_mb_per_session": 0.0})
    add_marginal_memory(rows)
    # 8 NPCs: 124 MB over the first row for 7 added; 512: the allocator handed memory back -> 0, not < 0
    assert [r["rss_mb_per_added_session"] for r in rows] == [140.0, 100.0, round(124.0 / 7, 1), 0.0, 0.0]
