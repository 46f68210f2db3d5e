"""Shared fixtures: a real server on a loopback port, real speech, real portraits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file from ../shared/data, or skip the test when it is absent (CI without shared data)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not present: {path}")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lpm-cache")


@pytest.fixture(scope="session")
def server(cache_dir):
    """One real gRPC server (grpc.aio on its own thread) for the whole test session."""
    from lpm_npc.config import ServerConfig
    from lpm_npc.server.app import BackgroundServer

    srv = BackgroundServer(ServerConfig(port=0, cache_dir=cache_dir, max_sessions=6, drain_seconds=1.0))
    srv.start()
    srv.runtime.store.ensure_default()
    from lpm_npc.performance.direction import warm_up

    warm_up()  # as `lpm-npc serve` does before it says SERVING (loading it would stall live streams)
    import gc

    gc.collect()
    gc.freeze()  # as `lpm-npc serve` does: full collections over the model heap would stall the frame clock
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    from lpm_npc.client import NpcClient

    c = NpcClient(server.address)
    c.wait_ready(30)
    yield c
    c.close()


@pytest.fixture(scope="session")
def npc_speech():
    """A real synthesized NPC line (eSpeak NG), 16 kHz float32, with its phoneme timings."""
    from lpm_npc.audio.pcm import resample
    from lpm_npc.audio.tts import DEFAULT_NPC_VOICE, synthesize

    clip = synthesize("Bring me the map, and maybe the old brass compass by the window.",
                      voice=DEFAULT_NPC_VOICE)
    return resample(clip.samples, clip.sample_rate, 16000).astype(np.float32), clip


@pytest.fixture(scope="session")
def player_speech():
    from lpm_npc.audio.pcm import resample
    from lpm_npc.audio.tts import DEFAULT_PLAYER_VOICE, synthesize

    clip = synthesize("Have you seen the blacksmith today? I need a new sword.", voice=DEFAULT_PLAYER_VOICE)
    return resample(clip.samples, clip.sample_rate, 16000).astype(np.float32)
