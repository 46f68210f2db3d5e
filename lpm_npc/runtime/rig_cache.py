"""Renderer-ready rigs kept in memory: every rig in use, plus the most recently used idle ones up to a
byte budget.

A prepared rig is large (about 35 MB for the built-in character with the torch renderer, most of it
the deformation field's matrix; on a GPU it lives in device memory), and preparing one again takes
about 30 ms. The caches used to keep a fixed count (64 per process, 128 in the render service): a
game that registers and deletes characters through a long play session would grow each process by
GBs before the count was reached. Now a rig a live session uses is never let go (the session would
only prepare it again, doubling it), and idle ones are let go, least recently used first, once they
take more than `ServerConfig.idle_rig_cache_mb`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Collection

import numpy as np


def nbytes(obj, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Bytes of the tensors and arrays reachable from `obj` (attributes, slots, dicts, lists), each once."""
    seen = _seen if _seen is not None else set()
    if obj is None or id(obj) in seen or _depth > 6 or isinstance(obj, (str, bytes, int, float, bool)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "element_size") and hasattr(obj, "numel"):
        return int(obj.numel() * obj.element_size())
    if isinstance(obj, dict):
        return sum(nbytes(v, seen, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(nbytes(v, seen, _depth + 1) for v in obj)
    total = 0
    if hasattr(obj, "__dict__"):
        total += nbytes(vars(obj), seen, _depth + 1)
    for name in getattr(type(obj), "__slots__", ()):
        total += nbytes(getattr(obj, name, None), seen, _depth + 1)
    return total


class PreparedRigs:
    """Prepared rigs by key (thread-safe). `trim(in_use)` lets go of idle ones beyond the budget; a rig
    counts as in use when named in `in_use`, or got (or put) within `used_within_s`."""

    def __init__(self, idle_budget_mb: float):
        self.idle_budget = int(max(0.0, float(idle_budget_mb)) * 1024 * 1024)
        # key -> [prepared, bytes, monotonic time last got or put], least recently used first
        self._items: OrderedDict[str, list] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            item[2] = time.monotonic()
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, prepared) -> object:
        size = nbytes(prepared)
        with self._lock:
            self._items[key] = [prepared, size, time.monotonic()]
            self._items.move_to_end(key)
        return prepared

    def discard(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def trim(self, in_use: Collection[str] = (), used_within_s: float = 0.0) -> list[str]:
        """Let go of the least recently used idle rigs while the idle ones exceed the budget."""
        in_use = set(in_use)
        recent = time.monotonic() - used_within_s
        out = []
        with self._lock:
            idle = [(k, size) for k, (_, size, used) in self._items.items()
                    if k not in in_use and not (used_within_s > 0 and used >= recent)]
            excess = sum(size for _, size in idle) - self.idle_budget
            for key, size in idle:
                if excess <= 0:
                    break
                del self._items[key]
                excess -= size
                out.append(key)
            self.evicted += len(out)
        return out

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(item[1] for item in self._items.values())
