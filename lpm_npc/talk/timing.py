"""The clocks of `lpm-npc talk`, with no device or network in them (unit-tested on their own).

One session clock: pts 0 is when the server started the session (`SessionStarted`). The server
renders the frame of session time s at about t0 + s and sends it `lookahead` later. So the client
*presents* session time s at wall time t0 + s + delay, with delay = lookahead + a jitter margin:
NPC audio sample i (sent with sample_index i) comes out of the speaker then, and the window shows
the frame whose pts is the presented time — sound and lips match (the Unity/Unreal bridges do the
same: `SessionClock` + `FrameJitterBuffer`).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class PlaybackClock:
    """Maps the audio device's playhead to session time, and says how far ahead to push audio."""

    delay_s: float = 0.2        # lookahead + jitter margin: how much later than the server we present
    push_ahead_s: float = 0.2   # NPC audio is sent this long before its session time
    lead_s: float = 0.25        # a new line starts at least this long after the server's "now"

    def presented(self, device_position_s: float) -> float:
        """Session time being heard/shown when the output device has played `device_position_s`."""
        return device_position_s - self.delay_s

    @staticmethod
    def for_lookahead(lookahead_ms: int, margin_ms: int = 120) -> PlaybackClock:
        la = lookahead_ms / 1000.0
        margin = margin_ms / 1000.0
        return PlaybackClock(delay_s=la + margin, push_ahead_s=max(0.2, la + 0.1), lead_s=max(0.25, la + 0.15))


class FrameJitterBuffer(Generic[T]):
    """Frames that arrive ahead of their presentation time; picks the newest one that is due.

    Thread-safe (the network thread adds, the display selects) and bounded (a full buffer drops its
    oldest frame). A frame whose index is not newer than the one last shown is ignored.
    """

    def __init__(self, capacity: int = 32, resync_s: float = 1.0):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.resync_s = resync_s
        self._lock = threading.Lock()
        self._entries: list[tuple[int, int, T]] = []  # (index, pts_us, frame), sorted by index
        self._last_shown = -1
        self.shown = 0
        self.skipped = 0          # superseded before their turn came
        self.dropped_overflow = 0
        self.resyncs = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, index: int, pts_us: int, frame: T) -> None:
        with self._lock:
            if index <= self._last_shown:
                return
            keys = [e[0] for e in self._entries]
            at = bisect.bisect_left(keys, index)
            if at < len(keys) and keys[at] == index:
                return
            self._entries.insert(at, (index, pts_us, frame))
            while len(self._entries) > self.capacity:
                self._entries.pop(0)
                self.dropped_overflow += 1

    def select(self, session_s: float) -> tuple[int, int, T] | None:
        """(index, pts_us, frame) to show at `session_s`, or None: keep the frame on screen."""
        with self._lock:
            if not self._entries:
                return None
            now_us = math.floor(session_s * 1e6)
            pick = -1
            for i, (_, pts, _) in enumerate(self._entries):
                if pts <= now_us:
                    pick = i
                else:
                    break
            if pick < 0:
                if self._entries[0][1] - now_us <= self.resync_s * 1e6:
                    return None
                pick = 0  # everything is far ahead: the clocks disagree, show the oldest
                self.resyncs += 1
            chosen = self._entries[pick]
            self.skipped += pick
            self.shown += 1
            self._last_shown = chosen[0]
            del self._entries[:pick + 1]
            return chosen


@dataclass
class ScheduledChunk:
    sample_index: int
    pcm: np.ndarray      # int16 mono
    text: str = ""       # the line's text, on its first chunk only
    line: int = 0

    def due_s(self, rate: int, push_ahead_s: float) -> float:
        """Session time at which this chunk should be sent."""
        return self.sample_index / rate - push_ahead_s


class LineScheduler:
    """Places NPC lines on the session clock, one after the other, and hands out chunks when due.

    `schedule` puts a line right after whatever is already scheduled, or `lead_s` after `now_s`
    when the NPC is silent; `due` returns the chunks to send now (each `push_ahead_s` before its
    time); `flush` drops what has not been sent yet (an interruption).
    """

    def __init__(self, rate: int = 16000, chunk_ms: int = 40, lead_s: float = 0.25, push_ahead_s: float = 0.2):
        if chunk_ms <= 0 or rate <= 0:
            raise ValueError("rate and chunk_ms must be positive")
        self.rate = rate
        self.chunk = max(1, rate * chunk_ms // 1000)
        self.lead_s = lead_s
        self.push_ahead_s = push_ahead_s
        self.end = 0  # sample index just after the last scheduled sample
        self._lines = 0
        self._pending: deque[ScheduledChunk] = deque()
        self._lock = threading.Lock()

    def schedule(self, pcm: np.ndarray, now_s: float, text: str = "") -> tuple[int, int]:
        """Queue a line (int16 or float -1..1 mono at `rate`); returns its (start, end) sample indices."""
        pcm = to_int16(pcm)
        if pcm.size == 0:
            raise ValueError("the line holds no samples")
        with self._lock:
            earliest = int(math.ceil((now_s + self.lead_s) * self.rate))
            start = max(self.end, earliest)
            self._lines += 1
            for k in range(0, len(pcm), self.chunk):
                self._pending.append(ScheduledChunk(start + k, pcm[k:k + self.chunk], text if k == 0 else "",
                                                    self._lines))
            self.end = start + len(pcm)
            return start, self.end

    def due(self, now_s: float) -> list[ScheduledChunk]:
        out: list[ScheduledChunk] = []
        with self._lock:
            while self._pending and self._pending[0].due_s(self.rate, self.push_ahead_s) <= now_s:
                out.append(self._pending.popleft())
        return out

    def flush(self, cut_index: int) -> int:
        """Drop unsent chunks; nothing is scheduled past `cut_index` any more. Returns chunks dropped."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
            self.end = min(self.end, max(0, cut_index))
            return dropped

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def end_s(self) -> float:
        return self.end / self.rate


class NpcTimeline:
    """What the speaker plays: NPC audio placed at session sample indices (silence elsewhere).

    Thread-safe: lines are written by the command thread, read by the audio callback. Everything
    is kept (a few MB per ten minutes) so a recording can mux what was heard.
    """

    def __init__(self, rate: int = 16000):
        self.rate = rate
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._segments: list[np.ndarray] = []

    def write(self, start: int, pcm: np.ndarray) -> None:
        pcm = to_int16(pcm)
        with self._lock:
            at = bisect.bisect_right(self._starts, start)
            self._starts.insert(at, start)
            self._segments.insert(at, pcm.copy())

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, np.int16)
        end = start + n
        with self._lock:
            for s, seg in zip(self._starts, self._segments):
                if s >= end:
                    break
                a, b = max(s, start), min(s + len(seg), end)
                if a < b:
                    out[a - start:b - start] = seg[a - s:b - s]
        return out

    def clear_from(self, index: int) -> None:
        """Silence everything from `index` on (the NPC was interrupted)."""
        with self._lock:
            keep_s, keep_seg = [], []
            for s, seg in zip(self._starts, self._segments):
                if s >= index:
                    continue
                keep_s.append(s)
                keep_seg.append(seg[:max(0, index - s)])
            self._starts, self._segments = keep_s, keep_seg

    def end(self) -> int:
        with self._lock:
            return max((s + len(seg) for s, seg in zip(self._starts, self._segments)), default=0)


def to_int16(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples).reshape(-1)
    if a.dtype == np.int16:
        return a
    return np.clip(np.round(a.astype(np.float32) * 32767.0), -32768, 32767).astype(np.int16)
