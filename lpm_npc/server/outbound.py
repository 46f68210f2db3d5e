"""Bounded per-stream outbound queue: a slow reader loses old frames, never grows memory."""

from __future__ import annotations

import asyncio
from collections import deque


class OutboundQueue:
    """FIFO of server messages where at most `max_frames` video frames wait at once.

    Putting a frame when the limit is reached drops the oldest waiting frame (and its rig frame,
    if it has one). Events, stats and errors are never dropped; they are few and small.
    """

    def __init__(self, max_frames: int = 2):
        self.max_frames = max(1, max_frames)
        self._items: deque[tuple[bool, object]] = deque()
        self._frames = 0
        self._closed = False
        self._ready = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def frames_waiting(self) -> int:
        return self._frames

    def put_frame(self, *messages: object) -> None:
        """Queue one frame (the video frame plus, optionally, its rig frame) as a unit."""
        if self._closed:
            return
        while self._frames >= self.max_frames:
            self._drop_oldest_frame()
        self._items.append((True, messages))
        self._frames += 1
        self._ready.set()

    def put(self, message: object) -> None:
        if self._closed:
            return
        self._items.append((False, (message,)))
        self._ready.set()

    def close(self) -> None:
        """No more messages: `get` returns None once the queue has drained."""
        self._closed = True
        self._ready.set()

    async def get(self) -> tuple[object, ...] | None:
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        is_frame, messages = self._items.popleft()
        if is_frame:
            self._frames -= 1
        return messages

    def _drop_oldest_frame(self) -> None:
        for i, (is_frame, _) in enumerate(self._items):
            if is_frame:
                del self._items[i]
                self._frames -= 1
                self.dropped += 1
                return
