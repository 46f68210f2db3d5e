"""`lpm-npc soak --served`: many NPCs coming and going on a real server for as long as a play session.

`lpm-npc soak` runs one session in-process, faster than real time. This one starts `lpm-npc serve` the
way a game's sidecar runs for many NPCs (worker processes, render service, fronts) and keeps N NPC slots
busy in real time over gRPC, as a game does when players walk through a village: each slot opens a
session, talks and listens, changes emotion, direction, size (LOD) and pause state, then ends it in
one of the ways a game ends one (half-close, cancel, or the connection dropping as when a client
vanishes) and opens the next. Some sessions use a character registered for them from a real portrait
and deleted after, so the character caches in every process turn over too.

Every `sample_s` it records each server process's memory, open file descriptors and threads by role
(front, worker, render service), and at the end fits the growth after warm-up (MB per hour). A leak,
a process that dies and is replaced, or a session that errs shows in the report.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import numpy as np

from .audio.pcm import INTERNAL_RATE
from .bench import _process_name, _tree_pids, proc_rss_mb, server_process_role
from .types import AudioChannel, Emotion, Phase, PixelFormat

log = logging.getLogger(__name__)

END_MODES = ("close", "cancel", "drop")   # half-close and wait; cancel the call; close the connection
DIRECTIONS = ("nods slowly", "looks away, a bit nervous", "raises an eyebrow", "smiles warmly",
              "shakes her head", "looks down sadly", "leans in, curious")
NPC_LINE = "I have told you before, the bridge is closed until the spring thaw. Come back when the ice is gone."
PLAYER_LINE = "Can you open the gate for me? I really need to cross today."
CHUNK_S = 0.02


@dataclass
class ServedSoakOptions:
    sessions: int = 4                 # NPC slots kept busy at once
    minutes: float = 30.0
    size: int = 64
    fps: int = 30
    workers: int = 2
    render_service: str = "on"
    fronts: int = 1
    rig_cache_mb: float | None = None   # lpm-npc serve --rig-cache-mb (None: its default)
    backend: str = "torch"             # lpm-npc serve --backend / --device
    device: str = "cpu"
    session_s: tuple[float, float] = (20.0, 90.0)   # each session lasts a random time in this range
    register_every: int = 5           # every Nth session registers a character of its own (0: never)
    sample_s: float = 60.0
    pixel_format: PixelFormat = PixelFormat.JPEG
    seed: int = 0


@dataclass
class ProcessSample:
    role: str
    pid: int
    rss_mb: float
    fds: int
    threads: int


@dataclass
class Sample:
    t_s: float
    processes: list[ProcessSample]
    sessions_opened: int
    frames: int

    def by_role(self, what: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.processes:
            out[p.role] = out.get(p.role, 0.0) + getattr(p, what)
        return out


@dataclass
class SoakCounters:
    sessions_opened: int = 0
    sessions_ended: dict = field(default_factory=lambda: {m: 0 for m in END_MODES})
    characters_registered: int = 0
    frames: int = 0
    expected_frames: float = 0.0
    frames_dropped_by_server: int = 0
    errors: list = field(default_factory=list)


def sample_processes(main_pid: int) -> list[ProcessSample]:
    out = []
    for pid in _tree_pids(main_pid):
        try:
            rss = proc_rss_mb(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/status") as f:
                threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
        except (OSError, StopIteration, ValueError):
            continue   # it exited between the listing and the read
        out.append(ProcessSample(server_process_role(pid, _process_name(pid), main_pid), pid, rss, fds, threads))
    return out


def growth_per_hour(samples: list[Sample], what: str, warm_s: float) -> dict[str, float]:
    """Least-squares slope of each role's total `what` over the samples after `warm_s`, per hour."""
    late = [s for s in samples if s.t_s >= warm_s]
    if len(late) < 2:
        return {}
    t = np.array([s.t_s for s in late]) / 3600.0
    roles = sorted({r for s in late for r in s.by_role(what)})
    out = {}
    for role in roles:
        y = np.array([s.by_role(what).get(role, 0.0) for s in late])
        out[role] = float(np.polyfit(t, y, 1)[0]) if np.ptp(t) > 0 else 0.0
    return out


def _portrait(n: int) -> bytes:
    """A real portrait (scikit-image's astronaut), cropped and lit a little differently each time, so each
    registration is a new character."""
    import cv2
    from skimage import data

    img = data.astronaut()[:, :, ::-1]
    dx, dy = (n * 7) % 40, (n * 11) % 30
    crop = img[dy:dy + 440, 40 + dx:40 + dx + 400].astype(np.int16) + (n % 9) - 4
    ok, png = cv2.imencode(".png", np.clip(crop, 0, 255).astype(np.uint8))
    assert ok
    return png.tobytes()


class _Slot(threading.Thread):
    """One NPC slot: sessions one after another until the soak ends."""

    def __init__(self, slot: int, address: str, opts: ServedSoakOptions, speech: dict, counters: SoakCounters,
                 lock: threading.Lock, stop: threading.Event, numbers: Iterator[int]):
        super().__init__(name=f"soak-npc-{slot}", daemon=True)
        self.slot, self.address, self.opts, self.speech = slot, address, opts, speech
        # one numbering for all slots, so end modes and registrations cycle evenly over the run
        self.counters, self.lock, self.stop_event, self.numbers = counters, lock, stop, numbers
        self.rng = random.Random(opts.seed * 1000 + slot)

    def _error(self, what: str) -> None:
        log.error("soak NPC %d: %s", self.slot, what)
        with self.lock:
            self.counters.errors.append(f"NPC {self.slot}: {what}")

    def run(self) -> None:
        from .client import NpcClient

        while not self.stop_event.is_set():
            with self.lock:
                n = next(self.numbers)
            client = NpcClient(self.address, own_connection=True)
            try:
                self._session(client, n)
            except Exception as exc:  # noqa: BLE001 - recorded; the slot goes on with a new session
                self._error(f"session {n}: {type(exc).__name__}: {exc}")
                time.sleep(1.0)
            finally:
                client.close()

    def _session(self, client, n: int) -> None:
        opts = self.opts
        character = "default"
        if opts.register_every and n % opts.register_every == opts.register_every - 1:
            character = client.register_character(_portrait(n), display_name=f"soak-{n}").character_id
            with self.lock:
                self.counters.characters_registered += 1
        end_mode = END_MODES[n % len(END_MODES)]
        length = self.rng.uniform(*opts.session_s)
        # a deadline: a stream the server stops sending on ends with DEADLINE_EXCEEDED (an error here)
        # instead of holding the slot forever
        stream = client.perform(character_id=character, width=opts.size, fps=opts.fps,
                                pixel_format=opts.pixel_format, stats_interval_ms=1000, timeout=length + 60.0)
        with self.lock:
            self.counters.sessions_opened += 1
        msgs = iter(stream)
        first = next(msgs)
        if first.WhichOneof("msg") != "started":
            raise RuntimeError(f"the stream began with {first.WhichOneof('msg')!r}, not 'started'")
        t0 = time.monotonic()
        plan = self._plan(length)
        sent = {"npc": 0, "player": 0}
        frames, paused_s, dropped = 0, 0.0, 0
        pause_at, resume_at = plan["pause"]
        lod_at, lod_back = plan["lod"]
        state_i = 0
        for msg in msgs:
            now = time.monotonic() - t0
            kind = msg.WhichOneof("msg")
            if kind == "frame":
                frames += 1
            elif kind == "error":
                self._error(f"session {n}: server error {msg.error.code}: {msg.error.message}")
            elif kind == "stats":
                dropped = msg.stats.frames_dropped
            while state_i < len(plan["states"]) and plan["states"][state_i][0] <= now:
                _, phase, emotion, direction = plan["states"][state_i]
                stream.set_state(phase, emotion, 0.7, 400, direction=direction)
                state_i += 1
            for channel, key, start in ((AudioChannel.PLAYER, "player", plan["player_at"]),
                                        (AudioChannel.NPC, "npc", plan["npc_at"])):
                pcm = self.speech[key]
                step = int(CHUNK_S * INTERNAL_RATE)
                until = min(len(pcm), int(max(0.0, now - start + 0.1) * INTERNAL_RATE))
                while sent[key] < until:
                    stream.send_audio(channel, pcm[sent[key]:sent[key] + step], INTERNAL_RATE,
                                      text=NPC_LINE if key == "npc" else "")
                    sent[key] += step
            if plan["interrupt"] is not None and now >= plan["interrupt"]:
                stream.interrupt()
                sent["npc"] = len(self.speech["npc"])
                plan["interrupt"] = None
            if pause_at is not None and now >= pause_at:
                stream.pause()
                pause_at = None
            if resume_at is not None and pause_at is None and now >= resume_at:
                stream.resume()
                paused_s = resume_at - plan["pause"][0]
                resume_at = None
            if lod_at is not None and now >= lod_at:
                stream.set_output(width=opts.size * 2, height=opts.size * 2)
                lod_at = None
            if lod_back is not None and lod_at is None and now >= lod_back:
                stream.set_output(width=opts.size, height=opts.size)
                lod_back = None
            if now >= length or self.stop_event.is_set():
                break
        else:   # the server ended the stream before the client did
            self._error(f"session {n}: the stream ended after {time.monotonic() - t0:.1f} of {length:.1f} s")
            end_mode = "ended by the server"
        active = time.monotonic() - t0
        if end_mode in END_MODES:
            frames += self._end(end_mode, client, stream, msgs, n)
        with self.lock:
            c = self.counters
            c.frames += frames
            c.expected_frames += max(0.0, active - paused_s) * opts.fps
            c.frames_dropped_by_server += dropped
            c.sessions_ended[end_mode] = c.sessions_ended.get(end_mode, 0) + 1
        if character != "default":
            if end_mode == "drop":
                from .client import NpcClient

                with NpcClient(self.address) as other:
                    other.delete_character(character)
            else:
                client.delete_character(character)

    def _end(self, mode: str, client, stream, msgs, n: int) -> int:
        """End the session the way `mode` says; the frames that still came (after a half-close)."""
        if mode == "cancel":
            stream.cancel()
            return 0
        if mode == "drop":   # the connection drops under the stream, as when a game process dies
            client.close()
            return 0
        stream.close_send()   # the server shows the NPC speech it has, then ends the stream
        frames, deadline = 0, time.monotonic() + 20.0
        try:
            for msg in msgs:
                if msg.WhichOneof("msg") == "frame":
                    frames += 1
                elif msg.WhichOneof("msg") == "error":
                    self._error(f"session {n}: server error {msg.error.code}: {msg.error.message}")
                if time.monotonic() > deadline:
                    self._error(f"session {n}: the stream did not end 20 s after the client half-closed")
                    break
        except grpc.RpcError as exc:
            self._error(f"session {n}: the stream failed after a half-close: {exc.code()} {exc.details()}")
        return frames

    def _plan(self, length: float) -> dict:
        """What this session does when, in seconds from its start."""
        r = self.rng
        emotions = list(Emotion)
        states, t = [], 0.0
        while t < length:
            states.append((t, r.choice([Phase.LISTENING, Phase.SPEAKING, Phase.IDLE]), r.choice(emotions),
                           r.choice(DIRECTIONS) if r.random() < 0.5 else ""))
            t += r.uniform(4.0, 12.0)
        player_at = r.uniform(0.5, max(0.6, length * 0.3))
        npc_at = player_at + len(self.speech["player"]) / INTERNAL_RATE + 0.8
        pause = r.uniform(0.3, 0.8) * length
        lod = r.uniform(0.2, 0.7) * length
        return {"states": states, "player_at": player_at, "npc_at": npc_at,
                "interrupt": npc_at + 1.5 if r.random() < 0.3 else None,
                "pause": (pause, pause + 2.0), "lod": (lod, lod + 3.0)}


def run_served_soak(opts: ServedSoakOptions, json_path: Path | None = None, cache_dir: Path | None = None) -> dict:
    from itertools import count

    from .audio.tts import DEFAULT_NPC_VOICE, DEFAULT_PLAYER_VOICE, synthesize_16k
    from .sidecar import Sidecar

    speech = {"npc": synthesize_16k(NPC_LINE, voice=DEFAULT_NPC_VOICE),
              "player": synthesize_16k(PLAYER_LINE, voice=DEFAULT_PLAYER_VOICE)}
    args = ["--workers", str(opts.workers), "--render-service", opts.render_service, "--fronts", str(opts.fronts),
            "--max-sessions", str(max(16, 2 * opts.sessions)), "--backend", opts.backend, "--device", opts.device]
    if opts.rig_cache_mb is not None:
        args += ["--rig-cache-mb", f"{opts.rig_cache_mb:g}"]
    sidecar = Sidecar(cache_dir=cache_dir, extra_args=args)
    counters, lock, stop = SoakCounters(), threading.Lock(), threading.Event()
    samples: list[Sample] = []
    pids_seen: dict[int, str] = {}
    try:
        sidecar.wait_ready(timeout=300)
        numbers = count()
        slots = [_Slot(i, sidecar.address, opts, speech, counters, lock, stop, numbers) for i in range(opts.sessions)]
        for s in slots:
            s.start()
        t0 = time.monotonic()
        end = t0 + opts.minutes * 60.0
        next_sample = t0
        print(f"soak: {opts.sessions} NPCs at {opts.size}x{opts.size}@{opts.fps} for {opts.minutes:g} min on "
              f"lpm-npc serve {' '.join(args)} (pid {sidecar.proc.pid})", flush=True)
        while True:
            now = time.monotonic()
            if now >= next_sample:
                procs = sample_processes(sidecar.proc.pid)
                for p in procs:
                    pids_seen.setdefault(p.pid, p.role)
                with lock:
                    s = Sample(now - t0, procs, counters.sessions_opened, counters.frames)
                samples.append(s)
                rss, fds, threads = s.by_role("rss_mb"), s.by_role("fds"), s.by_role("threads")
                print(f"  {s.t_s / 60:6.1f} min  sessions {s.sessions_opened:4d}  frames {s.frames:7d}  RSS MB " +
                      "  ".join(f"{r} {v:.0f}" for r, v in sorted(rss.items())) +
                      f"  fds {int(sum(fds.values()))}  threads {int(sum(threads.values()))}"
                      f"  errors {len(counters.errors)}", flush=True)
                next_sample += opts.sample_s
            if now >= end or sidecar.proc.poll() is not None:
                break
            time.sleep(min(1.0, max(0.05, min(next_sample, end) - now)))
        stop.set()
        for s in slots:
            s.join(timeout=60)
        server_alive = sidecar.proc.poll() is None
    finally:
        stop.set()
        code = sidecar.stop()
    warm_s = max(opts.sample_s, 0.25 * opts.minutes * 60.0)
    first_late = next((s for s in samples if s.t_s >= warm_s), samples[-1] if samples else None)
    last = samples[-1] if samples else None
    at_end = {p.pid for p in last.processes} if last is not None else set()
    replaced: dict[str, int] = {}
    for pid, role in pids_seen.items():
        if pid not in at_end:
            replaced[role] = replaced.get(role, 0) + 1
    report = {
        "options": {**asdict(opts), "pixel_format": opts.pixel_format.value},
        "sessions_opened": counters.sessions_opened,
        "sessions_ended": counters.sessions_ended,
        "characters_registered": counters.characters_registered,
        "frames": counters.frames,
        "delivered_share": counters.frames / counters.expected_frames if counters.expected_frames else 0.0,
        "frames_dropped_by_server": counters.frames_dropped_by_server,
        "errors": counters.errors,
        "server_alive_at_end": server_alive,
        "server_exit_code": code,
        "processes_gone": replaced,
        "warm_s": warm_s,
        "rss_mb_after_warm": first_late.by_role("rss_mb") if first_late else {},
        "rss_mb_at_end": last.by_role("rss_mb") if last else {},
        "rss_mb_per_hour": growth_per_hour(samples, "rss_mb", warm_s),
        "fds_after_warm": first_late.by_role("fds") if first_late else {},
        "fds_at_end": last.by_role("fds") if last else {},
        "threads_after_warm": first_late.by_role("threads") if first_late else {},
        "threads_at_end": last.by_role("threads") if last else {},
        "samples": [asdict(s) for s in samples],
    }
    print(f"\nsessions opened {report['sessions_opened']} (ended: " +
          ", ".join(f"{k} {v}" for k, v in report["sessions_ended"].items()) +
          f"), characters registered and deleted {report['characters_registered']}")
    print(f"frames received {report['frames']} ({100 * report['delivered_share']:.1f} % of the frames due while "
          f"unpaused), dropped by the server {report['frames_dropped_by_server']}")
    for what, unit in (("rss_mb", "MB"), ("fds", "fds"), ("threads", "threads")):
        a, b = report[f"{what}_after_warm"], report[f"{what}_at_end"]
        print(f"{what}: after warm-up ({warm_s / 60:.1f} min) -> end: " +
              "  ".join(f"{r} {a.get(r, 0):.0f} -> {b.get(r, 0):.0f}" for r in sorted(set(a) | set(b))))
    print("RSS growth after warm-up (least squares): " +
          "  ".join(f"{r} {v:+.1f} MB/h" for r, v in sorted(report["rss_mb_per_hour"].items())))
    print(f"server processes gone during the run: {replaced or 'none'}; errors: {len(counters.errors)}; "
          f"server exit code {code}")
    for e in counters.errors[:10]:
        print(f"  error: {e}")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=1))
    return report
