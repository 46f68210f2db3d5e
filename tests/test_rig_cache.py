"""Prepared rigs in memory: those of live sessions always, idle ones up to a byte budget."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lpm_npc.config import DEFAULT_CHARACTER_ID, OutputOptions, ServerConfig, SessionOptions
from lpm_npc.runtime.rig_cache import PreparedRigs, nbytes

MB = 1024 * 1024


class _Prepared:
    __slots__ = ("matrix", "plate", "host")

    def __init__(self, mb: float):
        self.matrix = torch.zeros(int(mb * MB) // 4, dtype=torch.float32)
        self.plate = np.zeros(1024, np.uint8)
        self.host = {"again": self.plate, "list": [np.zeros(16, np.float64)]}   # the plate counts once


def test_nbytes_counts_every_tensor_and_array_once():
    p = _Prepared(1.0)
    assert nbytes(p) == MB + 1024 + 128


def test_idle_rigs_beyond_the_budget_go_least_recently_used_first_and_rigs_in_use_stay():
    cache = PreparedRigs(idle_budget_mb=2.5)
    for key in "abcd":
        cache.put(key, _Prepared(1.0))
    cache.get("a")                                  # a is now the most recently used
    assert cache.trim(in_use={"b"}) == ["c"]         # idle: c, d, a (3 MB) > 2.5: the oldest idle goes
    assert "b" in cache and "a" in cache and "d" in cache and "c" not in cache
    assert cache.trim(in_use={"a", "b", "d"}) == []  # nothing idle
    assert cache.trim(in_use=set()) == ["b"]         # 3 MB idle: b is the least recently used
    assert len(cache) == 2 and cache.evicted == 2
    none_idle = PreparedRigs(idle_budget_mb=0)
    none_idle.put("x", _Prepared(0.1))
    assert none_idle.trim(in_use={"x"}) == [] and none_idle.trim(in_use=()) == ["x"]


def test_a_rig_got_within_the_in_use_window_is_in_use():
    """The render service knows no sessions: a rig it rendered a frame of in the last seconds is in use."""
    cache = PreparedRigs(idle_budget_mb=0)
    cache.put("old", _Prepared(0.1))
    time.sleep(0.3)
    cache.put("new", _Prepared(0.1))
    assert cache.trim(used_within_s=0.2) == ["old"]
    time.sleep(0.3)
    assert cache.get("new") is not None                  # a render: used again now
    assert cache.trim(used_within_s=0.2) == [] and cache.trim() == ["new"]


@pytest.fixture(scope="module")
def runtime(cache_dir):
    from lpm_npc.runtime.runtime import Runtime

    rt = Runtime(ServerConfig(cache_dir=cache_dir, admission=False, idle_rig_cache_mb=0))
    rt.store.ensure_default()
    yield rt
    rt.close()


def test_a_runtime_keeps_the_rigs_of_live_sessions_and_lets_go_of_idle_ones(runtime):
    """With no idle budget: a character stays prepared while a session shows it, and goes when the last
    one closes; the next session prepares it again and renders the same frames."""
    opts = SessionOptions(output=OutputOptions(width=64, height=64))
    rig = runtime.store.get(DEFAULT_CHARACTER_ID)
    one = runtime.open_session(opts, seed=1)
    two = runtime.open_session(opts, seed=1)
    assert one.prepared is two.prepared                       # shared, not prepared twice
    assert runtime._prepare("other", rig) is not None         # another character, for a session opening now
    assert DEFAULT_CHARACTER_ID in runtime._prepared and "other" in runtime._prepared
    first = bytes(one.render_next().encoded.data)
    runtime.close_session(one)                                # no session opened for "other": it is idle
    assert DEFAULT_CHARACTER_ID in runtime._prepared and "other" not in runtime._prepared   # two shows default
    runtime.close_session(two)
    assert DEFAULT_CHARACTER_ID not in runtime._prepared and len(runtime._prepared) == 0
    three = runtime.open_session(opts, seed=1)
    assert three.prepared is not one.prepared
    assert bytes(three.render_next().encoded.data) == first
    runtime.close_session(three)
