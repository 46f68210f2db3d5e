"""Several front processes on one port (`serve --fronts N`): one server to its clients.

Admission, resume states, characters and ServerInfo count for the whole server, whichever front
process the kernel hands a connection to; a front that dies is started again; all of them stop together.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest

from grpc_helpers import collect
from lpm_npc.config import OutputOptions, ServerConfig, SessionOptions, auto_front_processes
from lpm_npc.errors import CapacityError, NotFoundError
from lpm_npc.runtime.fronts import DirectoryResumeStore, FrontContext, SharedLoad, split_workers
from lpm_npc.types import Emotion, Phase


@pytest.fixture(scope="module")
def portrait_png() -> bytes:
    """A real portrait (scikit-image's astronaut) as PNG bytes."""
    import cv2
    import skimage.data

    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return png.tobytes()


# -- the parts they share ---------------------------------------------------------------------------
def test_resume_states_are_shared_through_a_directory_and_taken_once(tmp_path):
    a, b = DirectoryResumeStore(tmp_path), DirectoryResumeStore(tmp_path)   # two fronts
    a.put("0123456789abcdef-f0", {"emotion": "sad", "head": [0.1, 0.2]})
    results = []
    threads = [threading.Thread(target=lambda: results.append(b.take("0123456789abcdef-f0"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r is not None] == [{"emotion": "sad", "head": [0.1, 0.2]}]
    assert a.take("0123456789abcdef-f0") is None
    # a client's token is a name, never a path
    for bad in ("../x", "", "a/b", ".hidden", "x" * 100):
        b.put(bad, {"x": 1})
        assert b.take(bad) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_directory_resume_store_forgets_old_and_excess_states(tmp_path):
    store = DirectoryResumeStore(tmp_path, ttl_s=60.0, max_entries=3)
    for k in range(5):
        store.put(f"s{k}", {"k": k})
    assert store.take("s0") is None and store.take("s1") is None   # the oldest beyond max_entries
    old = tmp_path / "s2.state"
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert store.take("s2") is None                                 # past its time
    assert store.take("s4") == {"k": 4}


def test_workers_are_split_over_the_fronts_and_auto_fronts_only_with_a_gpu():
    assert split_workers(8, 4) == [2, 2, 2, 2]
    assert split_workers(5, 2) == [3, 2]
    with pytest.raises(ValueError):
        split_workers(1, 2)
    assert auto_front_processes("cpu", 16) == 1
    assert auto_front_processes("cuda", 8) == 4
    assert auto_front_processes("cuda", 2) == 1
    assert auto_front_processes("cuda", 1) == 1


def test_the_shared_port_must_be_free(tmp_path):
    from lpm_npc.server.fronts import claim_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="another server"):
            claim_port("127.0.0.1", s.getsockname()[1])
    assert claim_port("127.0.0.1", 0) > 0


def _two_fronts(tmp_path, cache_dir, **config):
    """Two runtimes as two fronts would hold them (in one process here: the sharing is what is tested)."""
    from lpm_npc.runtime.runtime import Runtime

    load = SharedLoad(2, tmp_path)
    cfg = ServerConfig(cache_dir=cache_dir, render_threads=1, frame_cost_fixed_ms=5.0, frame_cost_per_mpx_ms=1.0,
                       utilisation=0.85, **config)
    return [Runtime(cfg, FrontContext(k, 2, load, tmp_path / "resume")) for k in range(2)]


def test_admission_counts_every_fronts_sessions_against_the_whole_budget(tmp_path, cache_dir):
    """Each front measured its own makers: the server's budget is theirs together, and a stream is admitted
    against everything every front has committed (5 ms a frame: 150 ms/s per 30 fps NPC, 850 per front)."""
    a, b = _two_fronts(tmp_path, cache_dir, max_sessions=64)
    opened = []
    opts = SessionOptions(output=OutputOptions(width=64, height=64, fps=30))
    try:
        a.store.ensure_default()
        assert a.capacity.max_sessions_at(64, 64, 30) == 5        # one front's own budget
        opened += [(a, a.open_session(opts)) for _ in range(8)]   # past it: the other front's budget counts
        opened += [(b, b.open_session(opts)) for _ in range(3)]   # 11 x 150 = 1650 of 1700
        with pytest.raises(CapacityError, match="rendering capacity is full") as err:
            b.open_session(opts)
        assert "1700 render-ms" in str(err.value)
        with pytest.raises(CapacityError):
            a.open_session(opts)
        info = b.info()
        assert info["active_sessions"] == 11
        assert info["committed_pixels_per_s"] > 0.95 * info["capacity_pixels_per_s"]
        front, session = opened.pop(0)     # a session on front a ends: front b has room again
        front.close_session(session)
        opened.append((b, b.open_session(opts)))
        assert all(s.session_id.endswith(f"-f{f.front.slot}") for f, s in opened)
    finally:
        for front, s in opened:
            front.close_session(s)
        for rt in (a, b):
            rt.close()


def test_max_sessions_is_the_whole_servers_and_a_closed_front_holds_nothing(tmp_path, cache_dir):
    a, b = _two_fronts(tmp_path, cache_dir, max_sessions=3)
    opts = SessionOptions(output=OutputOptions(width=48, height=48, fps=15))
    opened = []
    try:
        a.store.ensure_default()
        opened += [(a, a.open_session(opts)), (a, a.open_session(opts)), (b, b.open_session(opts))]
        for rt in (a, b):
            with pytest.raises(CapacityError, match="capacity of 3 sessions"):
                rt.open_session(opts)
        for front, s in opened[:2]:
            front.close_session(s)
        a.close()                          # a front that stops (or dies: front 0 clears it) counts nothing
        assert b.info()["active_sessions"] == 1
        opened = opened[2:] + [(b, b.open_session(opts)), (b, b.open_session(opts))]
    finally:
        for front, s in opened:
            front.close_session(s)
        b.close()
        a.close()


def test_a_character_deleted_through_one_front_is_gone_for_the_others(tmp_path, cache_dir, portrait_png):
    from lpm_npc.character.store import CharacterStore

    one, other = CharacterStore(cache_dir), CharacterStore(cache_dir)
    info, _ = one.register(portrait_png)
    assert other.get(info.character_id) is not None    # loaded, held in memory there
    assert one.delete(info.character_id)
    with pytest.raises(NotFoundError):
        other.get(info.character_id)
    assert not other.delete(info.character_id)


# -- a real server with two fronts ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_front_server(tmp_path_factory, cache_dir):
    from lpm_npc.sidecar import Sidecar

    sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--fronts", "2", "--workers", "2", "--max-sessions", "12"])
    try:
        sidecar.wait_ready(300).close()
        yield sidecar
    finally:
        code = sidecar.stop()
        assert code == 0


def _front_of(session_id: str) -> int:
    assert "-f" in session_id, session_id
    return int(session_id.rsplit("-f", 1)[1])


def _clients_on_each_front(address: str, tries: int = 24) -> dict:
    """A client (its own connection) on each of the two fronts, found by opening a short session."""
    from lpm_npc.client import NpcClient

    found, spare = {}, []
    for _ in range(tries):
        c = NpcClient(address, own_connection=True)
        with c.perform(width=48, fps=30) as stream:
            front = _front_of(collect(stream, max_frames=1).started.session_id)
        if front in found:
            spare.append(c)
        else:
            found[front] = c
        if len(found) == 2:
            break
    for c in spare:
        c.close()
    assert sorted(found) == [0, 1], f"every connection went to front {list(found)}"
    return found


def test_connections_are_spread_over_the_fronts_and_server_info_counts_them_all(two_front_server):
    clients = _clients_on_each_front(two_front_server.address)
    try:
        streams = [clients[k].perform(width=48, fps=15) for k in (0, 1)]
        try:
            for s in streams:
                collect(s, max_frames=1)
            for k in (0, 1):
                assert clients[k].server_info().active_sessions == 2
        finally:
            for s in streams:
                s.cancel()
    finally:
        for c in clients.values():
            c.close()


def test_a_session_resumes_on_another_front(two_front_server):
    """The state of a session that ended on one front is taken by whichever front the reconnect lands on."""
    clients = _clients_on_each_front(two_front_server.address)
    try:
        with clients[0].perform(width=48, fps=30, send_rig=True, rig_format="native") as stream:
            first = collect(stream, max_frames=1)
            idx = list(first.started.rig_channel_names).index("frown")
            stream.set_state(Phase.IDLE, Emotion.SAD, 1.0, 100)
            sad = collect(stream, max_frames=30)
        token = first.started.resume_token
        assert _front_of(token) == 0 and sad.rigs[-1].weights[idx] > 0.2
        time.sleep(0.5)  # the state is stored when the stream closes (the worker sends it back)
        with clients[1].perform(width=48, fps=30, send_rig=True, rig_format="native", resume_token=token) as stream:
            resumed = collect(stream, max_frames=3)
        assert _front_of(resumed.started.session_id) == 1
        assert resumed.rigs[0].weights[idx] > 0.2
    finally:
        for c in clients.values():
            c.close()


def test_a_character_registered_on_one_front_is_used_and_deleted_on_the_other(two_front_server, portrait_png):
    clients = _clients_on_each_front(two_front_server.address)
    try:
        cid = clients[0].register_character(portrait_png, display_name="fronts").character_id
        with clients[1].perform(character_id=cid, width=48, fps=30) as stream:
            got = collect(stream, max_frames=2)
        assert not got.errors and len(got.frames) == 2
        assert cid in [c.character_id for c in clients[1].list_characters()]
        assert clients[0].delete_character(cid)
        with clients[1].perform(character_id=cid, width=48, fps=30) as stream:
            with pytest.raises(grpc.RpcError) as err:
                collect(stream, max_frames=1)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        for c in clients.values():
            c.close()


def _front_pids(root_pid: int) -> dict[int, int]:
    """Front slot -> pid, from the process names (`lpm-npc-front1`, ...) under the sidecar."""
    from lpm_npc.bench import _tree_pids

    out = {}
    for pid in _tree_pids(root_pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":   # exited, not yet reaped
            continue
        if name.startswith("lpm-npc-front"):
            out[int(name[len("lpm-npc-front"):])] = pid
    return out


def _wait_for_a_new_front_1(root_pid: int, old_pid: int, timeout_s: float) -> dict[int, int]:
    """The fronts' pids once front 1 runs under a pid other than `old_pid`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _front_pids(root_pid)
        if now.get(1) not in (None, old_pid):
            return now
        time.sleep(0.5)
    pytest.fail(f"front 1 (pid {old_pid}) was not replaced in {timeout_s:.0f} s")


def test_a_front_that_dies_is_started_again(two_front_server):
    before = _front_pids(two_front_server.proc.pid)
    assert sorted(before) == [0, 1] and before[0] == two_front_server.proc.pid
    os.kill(before[1], signal.SIGKILL)
    deadline = time.monotonic() + 240
    _wait_for_a_new_front_1(two_front_server.proc.pid, before[1], 240)
    # once warmed up and listening again, connections reach it
    while time.monotonic() < deadline:
        try:
            clients = _clients_on_each_front(two_front_server.address, tries=12)
        except AssertionError:
            time.sleep(1.0)
            continue
        for c in clients.values():
            c.close()
        return
    pytest.fail("no connection reached the restarted front 1")


def test_a_front_that_hangs_is_killed_and_started_again(cache_dir, capfd):
    """A front whose event loop stops (SIGSTOP here: every thread of it) stops beating; after
    twice `--hang-timeout` front 0 kills it and starts it again, saying why."""
    from lpm_npc.sidecar import Sidecar

    sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--fronts", "2", "--workers", "2", "--no-admission",
                                                       "--hang-timeout", "3"])
    try:
        sidecar.wait_ready(300).close()
        before = _front_pids(sidecar.proc.pid)
        assert sorted(before) == [0, 1]
        time.sleep(7.0)   # longer than a front's limit (6 s): a front that beats is left alone
        assert _front_pids(sidecar.proc.pid) == before
        os.kill(before[1], signal.SIGSTOP)
        now = _wait_for_a_new_front_1(sidecar.proc.pid, before[1], 120)
        assert now[0] == before[0]
        # the stopped process is gone (killed), not merely joined by a second one
        assert not Path(f"/proc/{before[1]}").exists() or \
            Path(f"/proc/{before[1]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        assert sidecar.stop() == 0
    err = capfd.readouterr().err
    assert "front process 1 is hung: its event loop has not run for" in err
    assert f"(pid {before[1]}): its threads' stacks follow on stderr, then it is killed" in err
    assert "was hung (its event loop has not run for" in err
