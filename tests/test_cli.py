"""The command line as a user runs it: render an MP4 with muxed audio, serve and stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import soundfile as sf

from lpm_npc.media import ffmpeg_exe


def _streams(path) -> str:
    """ffmpeg's description of a media file's streams."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def _run_cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lpm_npc", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture()
def cli_env(cache_dir, monkeypatch):
    import os

    return dict(os.environ, LPM_NPC_CACHE=str(cache_dir))


def test_render_writes_mp4_with_npc_audio_from_awkward_wav(tmp_path, npc_speech, cli_env):
    samples, _ = npc_speech
    from lpm_npc.audio.pcm import resample

    x48 = resample(samples[:24000], 16000, 48000)
    wav = tmp_path / "line.wav"
    sf.write(wav, np.stack([x48, 0.5 * x48], axis=1), 48000, subtype="PCM_24")  # 48 kHz stereo 24-bit
    out = tmp_path / "preview.mp4"
    result = _run_cli("render", "--npc-audio", str(wav), "--emotion", "happy", "--size", "128", "-o", str(out),
                      env=cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    info = _streams(out)
    assert re.search(r"Stream .*Video: h264.*128x128", info), info
    assert re.search(r"Stream .*Audio: aac", info), info
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info)
    seconds = int(duration.group(2)) * 60 + float(duration.group(3))
    assert 0.5 + 1.5 <= seconds <= 0.5 + 1.5 + 1.5


def test_render_reports_a_picture_without_a_face(tmp_path, npc_speech, cli_env):
    samples, _ = npc_speech
    wav = tmp_path / "line.wav"
    sf.write(wav, samples[:8000], 16000)
    img = tmp_path / "wall.png"
    cv2.imwrite(str(img), np.full((300, 300, 3), 128, np.uint8))
    result = _run_cli("render", "--portrait", str(img), "--npc-audio", str(wav), "-o", str(tmp_path / "x.mp4"),
                      env=cli_env)
    assert result.returncode == 2
    assert "no human face" in result.stderr


def test_render_reports_an_unreadable_wav(tmp_path, cli_env):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    result = _run_cli("render", "--npc-audio", str(bad), "-o", str(tmp_path / "x.mp4"), env=cli_env)
    assert result.returncode == 2
    assert "audio" in result.stderr.lower()


def test_serve_stops_cleanly_on_sigterm(cache_dir):
    from lpm_npc.sidecar import Sidecar

    sidecar = Sidecar(cache_dir=cache_dir)
    try:
        client = sidecar.wait_ready(timeout=120)
        stream = client.perform(width=64, fps=30)
        first = next(iter(stream))
        assert first.WhichOneof("msg") == "started"
        t = time.monotonic()
        sidecar.proc.send_signal(signal.SIGTERM)
        # the open stream is told to resume elsewhere, then ends; the process exits 0
        kinds = []
        try:
            for msg in stream:
                kinds.append(msg.event.type if msg.WhichOneof("msg") == "event" else None)
        except Exception:
            pass
        code = sidecar.proc.wait(30)
        elapsed = time.monotonic() - t
        client.close()
    finally:
        sidecar.stop()
    from lpm_npc.v1 import lpm_npc_pb2 as pb

    assert code == 0
    assert pb.Event.TYPE_SERVER_DRAINING in kinds
    assert elapsed < 5.0 + 5.0  # the drain budget plus start-up slack


def test_serve_with_workers_drains_when_its_whole_process_group_gets_sigterm(cache_dir, tmp_path):
    """systemd (KillMode=control-group), `timeout` and a terminal's Ctrl-C signal every process of the
    group at once, the worker processes and the render service included. They must leave the stopping
    to the server: before, they died at once, the drain's sessions lost their renderer, and the server
    started new workers and a new render service on its way out."""
    from lpm_npc.sidecar import Sidecar
    from lpm_npc.v1 import lpm_npc_pb2 as pb

    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        sidecar = Sidecar(cache_dir=cache_dir, extra_args=["--workers", "2", "--render-service", "on"],
                          stderr=log_file, start_new_session=True)
        try:
            client = sidecar.wait_ready(timeout=180)
            stream = client.perform(width=64, fps=30)
            msgs = iter(stream)
            assert next(msgs).WhichOneof("msg") == "started"
            for _ in range(5):
                next(msgs)
            os.killpg(sidecar.proc.pid, signal.SIGTERM)
            kinds, errors = [], []
            try:
                for msg in msgs:
                    if msg.WhichOneof("msg") == "event":
                        kinds.append(msg.event.type)
                    elif msg.WhichOneof("msg") == "error":
                        errors.append(msg.error.message)
            except Exception:
                pass
            code = sidecar.proc.wait(60)
            client.close()
        finally:
            sidecar.stop()
    log = log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert pb.Event.TYPE_SERVER_DRAINING in kinds
    assert not errors, errors
    for wrong in ("starting a replacement", "starting it again", "killed by SIGTERM", "did not stop"):
        assert wrong not in log, log[-3000:]
    assert "render service stopped after" in log   # it was stopped by the server, in order


def test_serve_refuses_a_busy_port(cache_dir):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = _run_cli("serve", "--port", str(port), "--cache-dir", str(cache_dir), timeout=120)
    assert result.returncode == 2
    assert "could not bind" in result.stderr or "address" in result.stderr.lower()


def test_workers_auto_is_one_process_per_usable_core(monkeypatch):
    import argparse
    import os

    from lpm_npc import cli, config

    assert cli._workers_arg("auto") == "auto" and cli._workers_arg("3") == 3
    for bad in ("-1", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._workers_arg(bad)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cli._workers("auto", "cpu") == 2 and cli._workers(0, "cpu") == 0
    assert cli._workers("auto", "cuda") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert cli._workers("auto", "cpu") == config.MAX_AUTO_WORKERS and cli._workers("auto", "cuda") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    assert cli._workers("auto", "cuda") == 6   # half the cores with a GPU (the render service renders)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cli._workers("auto", "cpu") == 0   # one core: no worker processes to spread over
