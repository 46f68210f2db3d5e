"""Drive a Conversation through a live Perform stream in real time, as a game would.

NPC lines are pushed `lead_s` ahead of their time with explicit sample positions (games push TTS
ahead of playback); the player's microphone is pushed as it is 'recorded', chunk by chunk.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .client import PerformStream
from .conversation import Conversation
from .types import AudioChannel
from .v1 import lpm_npc_pb2 as pb

log = logging.getLogger(__name__)


@dataclass
class LiveResult:
    started: pb.SessionStarted | None = None
    frames: int = 0
    first_index: int = -1
    last_index: int = -1
    wall_first: float = 0.0
    wall_last: float = 0.0
    stats: list[pb.Stats] = field(default_factory=list)
    events: list[pb.Event] = field(default_factory=list)
    errors: list[pb.Error] = field(default_factory=list)
    directions: list[pb.DirectionResult] = field(default_factory=list)
    client_latency_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        span = self.wall_last - self.wall_first
        return (self.frames - 1) / span if span > 0 and self.frames > 1 else 0.0


def _schedule(conv: Conversation, lead_s: float, chunk_s: float) -> list[tuple[float, int, Callable[[PerformStream], None], tuple]]:
    """(session time to send at, order, action, info) for every message of the conversation."""
    items: list = []
    order = 0
    for cue in conv.audio:
        step = max(1, int(round(chunk_s * cue.rate)))
        pcm_all = np.clip(cue.samples * 32767.0, -32768, 32767).astype("<i2")
        for k, start in enumerate(range(0, len(pcm_all), step)):
            chunk = pcm_all[start:start + step]
            t_chunk = cue.t + start / cue.rate
            if cue.channel is AudioChannel.NPC:
                send_at = t_chunk - lead_s
                index = int(round(cue.t * cue.rate)) + start

                def act(s, chunk=chunk, rate=cue.rate, index=index, text=cue.text if k == 0 else ""):
                    s.send_audio(AudioChannel.NPC, chunk, rate, sample_index=index, text=text)
                info = ("npc", t_chunk)
            else:
                send_at = t_chunk + len(chunk) / cue.rate  # a mic chunk exists once recorded

                def act(s, chunk=chunk, rate=cue.rate):
                    s.send_audio(AudioChannel.PLAYER, chunk, rate)
                info = ("player", t_chunk)
            items.append((send_at, order, act, info))
            order += 1
    for st in conv.states:
        def act(s, st=st):
            s.set_state(st.phase, st.emotion, st.intensity, st.transition_ms, st.direction)
        items.append((st.t, order, act, ("state", st.t)))
        order += 1
    cut_times = sorted(i.t for i in conv.interrupts)
    for cut in cut_times:
        items.append((cut, order, lambda s: s.interrupt(), ("interrupt", cut)))
        order += 1
    # The game stops sending a line once it is interrupted (it flushed its own playback too).
    if cut_times:
        items = [it for it in items
                 if not (it[3][0] == "npc" and any(it[3][1] >= c and it[0] >= c - 1e-9 for c in cut_times))]
    heapq.heapify(items)
    return [heapq.heappop(items) for _ in range(len(items))]


def run_live(stream: PerformStream, conv: Conversation, on_frame: Callable[[pb.VideoFrame, float], None],
             lead_s: float = 0.25, chunk_s: float = 0.04, lookahead_s: float = 0.08) -> LiveResult:
    """Play `conv` into `stream` in real time and hand every received frame to `on_frame`."""
    result = LiveResult()
    first = next(iter(stream))
    if first.WhichOneof("msg") == "error":
        raise RuntimeError(first.error.message)
    result.started = first.started
    t0 = time.monotonic()  # ~ the server's pts 0 (the first frame is due lookahead later)
    schedule = _schedule(conv, lead_s, chunk_s)
    npc_sent: list[tuple[float, float]] = []  # (wall send time, session time of the chunk)
    lock = threading.Lock()

    def sender() -> None:
        try:
            for send_at, _, act, info in schedule:
                delay = t0 + send_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                act(stream)
                if info[0] == "npc":
                    with lock:
                        npc_sent.append((time.monotonic(), info[1]))
            delay = t0 + conv.duration - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        finally:
            stream.close_send()

    thread = threading.Thread(target=sender, name="conversation-sender", daemon=True)
    thread.start()
    pending = 0
    for msg in stream:
        kind = msg.WhichOneof("msg")
        now = time.monotonic()
        if kind == "frame":
            f = msg.frame
            if result.frames == 0:
                result.wall_first, result.first_index = now, f.index
            result.frames += 1
            result.wall_last, result.last_index = now, f.index
            shows_until = f.pts_us / 1e6 + lookahead_s
            with lock:
                while pending < len(npc_sent) and npc_sent[pending][1] <= shows_until:
                    sent_wall, t_chunk = npc_sent[pending]
                    ready = max(sent_wall, t0 + t_chunk)
                    result.client_latency_ms.append(max(0.0, now - ready) * 1000.0)
                    pending += 1
            on_frame(f, now)
        elif kind == "stats":
            result.stats.append(msg.stats)
        elif kind == "event":
            result.events.append(msg.event)
        elif kind == "direction":
            result.directions.append(msg.direction)
        elif kind == "error":
            result.errors.append(msg.error)
            log.warning("server error: %s", msg.error.message)
    thread.join(5)
    return result


def frame_to_rgba(frame: pb.VideoFrame) -> np.ndarray:
    from .encode import decode_frame
    from .server.convert import PIXEL_FORMAT_FROM_PB

    return decode_frame(frame.data, frame.width, frame.height, PIXEL_FORMAT_FROM_PB[frame.format], frame.flip_y)


__all__ = ["LiveResult", "run_live", "frame_to_rgba"]
