"""Helpers for tests that talk to the real server."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from lpm_npc.audio.pcm import encode_pcm16
from lpm_npc.types import AudioChannel
from lpm_npc.v1 import lpm_npc_pb2 as pb


@dataclass
class Received:
    frames: list = field(default_factory=list)      # (wall time, VideoFrame)
    events: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    rigs: list = field(default_factory=list)
    directions: list = field(default_factory=list)  # DirectionResult
    started: pb.SessionStarted | None = None


def collect(stream, seconds: float | None = None, max_frames: int | None = None,
            on_frame=None) -> Received:
    """Read messages until `seconds` of wall time or `max_frames` frames (or the stream ends)."""
    out = Received()
    t0 = time.monotonic()
    for msg in stream:
        kind = msg.WhichOneof("msg")
        if kind == "started":
            out.started = msg.started
        elif kind == "frame":
            out.frames.append((time.monotonic(), msg.frame))
            if on_frame is not None:
                on_frame(msg.frame)
        elif kind == "event":
            out.events.append(msg.event)
        elif kind == "error":
            out.errors.append(msg.error)
        elif kind == "stats":
            out.stats.append(msg.stats)
        elif kind == "rig":
            out.rigs.append(msg.rig)
        elif kind == "direction":
            out.directions.append(msg.direction)
        if seconds is not None and time.monotonic() - t0 > seconds:
            break
        if max_frames is not None and len(out.frames) >= max_frames:
            break
    return out


def collect_until_end(stream) -> list:
    """The events left on a stream the server is ending (it may end with UNAVAILABLE/CANCELLED)."""
    events = []
    try:
        for msg in stream:
            if msg.WhichOneof("msg") == "event":
                events.append(msg.event)
    except grpc.RpcError:
        pass
    return events


def feed_realtime(stream, channel: AudioChannel, samples: np.ndarray, rate: int = 16000,
                  start_s: float = 0.0, chunk_s: float = 0.02, sample_index_from: float | None = None,
                  t0: float | None = None, stop: threading.Event | None = None) -> threading.Thread:
    """Send `samples` in real-time chunks beginning `start_s` after t0 (in a thread).

    With `sample_index_from` set, NPC chunks carry explicit sample positions starting at that
    session time (pushed 0.2 s ahead, as games push TTS)."""
    t0 = time.monotonic() if t0 is None else t0
    step = int(chunk_s * rate)

    def run() -> None:
        for k, pos in enumerate(range(0, len(samples), step)):
            lead = 0.2 if sample_index_from is not None else 0.0
            due = t0 + start_s + pos / rate - lead
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop is not None and stop.is_set():
                return
            idx = None if sample_index_from is None else int(sample_index_from * rate) + pos
            try:
                stream.send_audio(channel, samples[pos:pos + step], rate, sample_index=idx)
            except RuntimeError:
                return

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def pcm(samples: np.ndarray) -> bytes:
    return encode_pcm16(samples)
