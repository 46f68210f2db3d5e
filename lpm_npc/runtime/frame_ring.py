"""Frame pixels from a worker process to the server through shared memory, not the pipe.

A 256x256 RGBA frame is 256 KB. Through the worker's pipe it was pickled (a copy), written and read
through the kernel in 64 KB pieces (two more copies and a wake-up each) and unpickled (a copy):
~0.55 ms of CPU per frame over the two processes, 7 % of a 2-core machine's budget at 8 NPCs.
Through a `FrameRing` the worker copies the pixels once into shared memory and the pipe carries a
`RingRef`; the server copies them out once (~0.18 ms per frame for both sides).

One producer (the worker) and one consumer (the server's reader thread for that worker's pipe):

    worker:  ref = ring.put(data)      (None when the ring is full: the bytes go inline as before)
    server:  data = ring.take(ref)     in pipe order; frees the space up to the end of `ref`

The ring lives in a file in /dev/shm (the temporary directory where there is none, or where it is too
small: Docker gives containers 64 MB) that the server creates, allocates up front (a full tmpfs then
fails here, with a message, rather than killing the worker with SIGBUS on a write) and removes once
the worker has mapped it. Nothing goes through multiprocessing's resource tracker, which would unlink
the segment when the first of the two processes exits.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RING_BYTES = 16 << 20      # per worker: 64 frames of 256x256 RGBA, 16 of 512x512, 4 of 1024x1024
MIN_RING_PAYLOAD = 32768   # smaller payloads (JPEG frames) are cheap enough inline
_HEADER = 64               # the consumer's read position (uint64) on a cache line of its own
_POS = struct.Struct("<Q")


@dataclass(frozen=True)
class RingRef:
    """Where a payload lies in the ring: its start as a running byte count, and its length."""

    start: int
    size: int


def _shm_dir(size: int) -> str:
    try:
        st = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize >= 4 * size:
            return "/dev/shm"
    except (OSError, AttributeError):  # no /dev/shm (macOS, Windows)
        pass
    return tempfile.gettempdir()


class FrameRing:
    """A single-producer, single-consumer byte ring in a shared file mapping."""

    def __init__(self, path: str, capacity: int, mapping: mmap.mmap, owner: bool):
        self.path = path
        self.capacity = int(capacity)
        self._mm = mapping
        self._view = memoryview(mapping)
        self._owner = owner
        self._write = 0     # producer: running count of bytes placed (incl. skipped tails)
        self._read = 0      # consumer: running count of bytes released

    # -- life -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, capacity: int = RING_BYTES) -> "FrameRing":
        """Make a new ring (the server, once per worker)."""
        size = _HEADER + capacity
        fd, path = tempfile.mkstemp(prefix="lpm-npc-frames-", dir=_shm_dir(size))
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)   # ENOSPC now, not SIGBUS on a later write
            else:
                os.ftruncate(fd, size)
            mapping = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            Path(path).unlink(missing_ok=True)
            raise
        os.close(fd)
        ring = cls(path, capacity, mapping, owner=True)
        _POS.pack_into(ring._mm, 0, 0)
        return ring

    @classmethod
    def attach(cls, path: str, capacity: int) -> "FrameRing":
        """Map a ring the server made (the worker)."""
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, _HEADER + capacity)
        finally:
            os.close(fd)
        return cls(path, capacity, mapping, owner=False)

    def unlink(self) -> None:
        """Remove the file (the mapping stays valid in the processes that have it)."""
        if self._owner:
            try:
                Path(self.path).unlink()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self._view.release()
            self._mm.close()
        except (BufferError, ValueError):  # a view still exported: the mapping goes with the process
            pass
        self.unlink()  # after unmapping: Windows cannot remove a mapped file

    # -- producer ---------------------------------------------------------------------------------
    def put(self, data) -> RingRef | None:
        """Copy `data` into the ring; None when it does not fit now (the caller sends it inline)."""
        n = len(data)
        if n == 0 or n > self.capacity:
            return None
        start = self._write
        off = start % self.capacity
        if off + n > self.capacity:          # a payload never wraps: skip the tail
            start += self.capacity - off
            off = 0
        read = _POS.unpack_from(self._mm, 0)[0]
        if start + n - read > self.capacity:  # the server has not taken enough yet
            return None
        self._view[_HEADER + off:_HEADER + off + n] = data
        self._write = start + n
        return RingRef(start, n)

    # -- consumer ---------------------------------------------------------------------------------
    def take(self, ref: RingRef) -> bytes:
        """The payload's bytes; releases the ring up to its end (refs are taken in pipe order)."""
        if ref.size > self.capacity or ref.start < self._read - self.capacity:
            raise ValueError(f"frame ring reference {ref} is out of range")
        off = ref.start % self.capacity
        data = bytes(self._view[_HEADER + off:_HEADER + off + ref.size])
        self.release(ref)
        return data

    def release(self, ref: RingRef) -> None:
        """Give the space up to the end of `ref` back without reading it (a reply nobody waits for)."""
        end = ref.start + ref.size
        if end > self._read:
            self._read = end
            _POS.pack_into(self._mm, 0, end)
