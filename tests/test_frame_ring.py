"""The shared-memory ring that carries frame pixels from a worker process to the server."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from lpm_npc.runtime.frame_ring import FrameRing, RingRef


def _payload(k: int, n: int) -> bytes:
    return bytes((k * 7 + i) % 251 for i in range(n))


def test_payloads_come_back_in_order_across_wraps_and_a_full_ring_says_so():
    ring = FrameRing.create(capacity=1000)
    producer = FrameRing.attach(ring.path, 1000)
    try:
        refs = [producer.put(_payload(k, 300)) for k in range(3)]
        assert all(isinstance(r, RingRef) for r in refs)
        assert producer.put(_payload(3, 300)) is None      # 900 of 1000 in use, and no payload wraps
        assert ring.take(refs[0]) == _payload(0, 300)       # frees the first 300 bytes
        r3 = producer.put(_payload(3, 300))                 # placed at the start: the 100-byte tail is skipped
        assert r3 is not None and r3.start == 1000
        for k, r in ((1, refs[1]), (2, refs[2]), (3, r3)):
            assert ring.take(r) == _payload(k, 300)
        for k in range(4, 40):                              # many laps, one in flight at a time
            r = producer.put(_payload(k, 170 + k))
            assert ring.take(r) == _payload(k, 170 + k)
        assert producer.put(b"") is None and producer.put(bytes(1001)) is None  # the caller sends these inline
    finally:
        producer.close()
        ring.close()
    assert not os.path.exists(ring.path)


def test_released_space_is_reused_without_reading_it():
    ring = FrameRing.create(capacity=600)
    producer = FrameRing.attach(ring.path, 600)
    try:
        a = producer.put(bytes(400))
        assert producer.put(bytes(400)) is None
        ring.release(a)                                     # a reply nobody waits for any more
        b = producer.put(_payload(1, 400))
        assert b is not None and ring.take(b) == _payload(1, 400)
        with pytest.raises(ValueError, match="out of range"):
            ring.take(RingRef(0, 601))
    finally:
        producer.close()
        ring.close()


def _produce(path: str, capacity: int, conn) -> None:
    ring = FrameRing.attach(path, capacity)
    for k in range(50):
        ref = None
        while ref is None:
            ref = ring.put(_payload(k, 5000 + 37 * k))
        conn.send(ref)
    conn.close()


def test_a_second_process_writes_what_this_one_reads():
    ring = FrameRing.create(capacity=40000)
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_produce, args=(ring.path, ring.capacity, child))
    proc.start()
    try:
        for k in range(50):
            assert parent.poll(60), "the producer process sent nothing"
            assert ring.take(parent.recv()) == _payload(k, 5000 + 37 * k)
    finally:
        proc.join(30)
        ring.close()
    assert proc.exitcode == 0


def test_a_small_dev_shm_is_passed_over_and_a_full_disk_fails_at_once(monkeypatch, tmp_path):
    import errno
    import tempfile

    from lpm_npc.runtime import frame_ring

    class Tiny:  # Docker's default: 64 MB of /dev/shm for the whole container, most of it in use
        f_bavail, f_frsize = 1000, 4096

    monkeypatch.setattr(frame_ring.os, "statvfs", lambda path: Tiny())
    assert frame_ring._shm_dir(16 << 20) == tempfile.gettempdir()

    monkeypatch.setattr(frame_ring.tempfile, "gettempdir", lambda: str(tmp_path))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frame_ring.os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="No space"):
        FrameRing.create(capacity=1 << 20)
    assert list(tmp_path.iterdir()) == []   # nothing left behind; the worker's frames use its pipe
