"""The native benchmark client: `lpmnpc_loadgen`, built from the Unreal bridge's portable C++ core.

`lpm-npc bench --client cpp` drives the server with it instead of Python threads. A game links that
same core (or the Unity bridge's C#), so its client cost per frame is what a game pays; the Python
client's gRPC and GIL overhead (about 1 ms of CPU per 256x256 frame) otherwise takes a share of the
very cores the benchmarked server needs.

The binary is built on first use with CMake into a folder of the temporary directory, one per checkout
(needs cmake, a C++17 compiler and gRPC C++: see unreal_bridge/Source/ThirdParty/LpmNpcCore/BUILDING.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio.pcm import encode_pcm16

log = logging.getLogger(__name__)

CORE_DIR = Path(__file__).resolve().parents[1] / "unreal_bridge" / "Source" / "ThirdParty" / "LpmNpcCore"
BINARY = "lpmnpc_loadgen"


class LoadgenUnavailable(RuntimeError):
    """The native client cannot be built here; the message says what is missing."""


def build_loadgen(build_dir: Path | None = None, core_dir: Path = CORE_DIR) -> Path:
    """Path of a built lpmnpc_loadgen (configured and built incrementally: fast when up to date).

    $LPM_NPC_LOADGEN names a binary built elsewhere (a machine without gRPC C++ to build it with);
    it is used as it is."""
    prebuilt = os.environ.get("LPM_NPC_LOADGEN")
    if prebuilt:
        exe = Path(prebuilt)
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise LoadgenUnavailable(f"LPM_NPC_LOADGEN={prebuilt} is not an executable file")
        return exe
    if not (core_dir / "CMakeLists.txt").exists():
        raise LoadgenUnavailable(
            f"the C++ core is not at {core_dir}: the native client needs a checkout of the lpm-npc repository "
            "(use --client python otherwise)")
    missing = [t for t in ("cmake", "c++", "protoc", "grpc_cpp_plugin") if shutil.which(t) is None]
    if missing:
        raise LoadgenUnavailable(
            "building the native client needs " + ", ".join(missing) + ": apt-get install cmake g++ pkg-config "
            "libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc (or use --client python)")
    # one build folder per checkout: CMake refuses a folder configured for another source tree
    tag = hashlib.sha1(str(core_dir.resolve()).encode()).hexdigest()[:8]
    build_dir = build_dir or Path(tempfile.gettempdir()) / f"lpm-npc-loadgen-build-{tag}"
    steps = (["cmake", "-S", str(core_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
              "-DLPMNPC_BUILD_TESTS=OFF", "-DLPMNPC_BUILD_TOOLS=ON"],
             ["cmake", "--build", str(build_dir), "--target", BINARY, "-j", "2"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise LoadgenUnavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    exe = build_dir / BINARY
    if not exe.exists():
        raise LoadgenUnavailable(f"the build finished but {exe} is missing")
    return exe


@dataclass
class LoadgenRun:
    """A running lpmnpc_loadgen; `result()` waits for it and returns its JSON report."""

    proc: subprocess.Popen
    out: Path
    workdir: tempfile.TemporaryDirectory

    def wait_started(self, timeout: float = 90.0) -> None:
        """Block until every session got SessionStarted (the loadgen's clock then starts)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "started":
            self.proc.kill()
            raise RuntimeError(f"lpmnpc_loadgen did not start its sessions within {timeout:.0f} s (is the server up?): {line!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = 120.0) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        if self.proc.returncode != 0:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"lpmnpc_loadgen exited with {self.proc.returncode}: {err[-2000:]}")
        try:
            return json.loads(self.out.read_text())
        finally:
            self.workdir.cleanup()


def start_loadgen(exe: Path, address: str, sessions: int, size: int, fps: int, seconds: float, warm: float,
                  speech_16k: np.ndarray, pixel_format: str = "rgba8") -> LoadgenRun:
    workdir = tempfile.TemporaryDirectory(prefix="lpm-npc-loadgen-")
    speech = Path(workdir.name) / "speech.s16"
    speech.write_bytes(encode_pcm16(speech_16k))
    out = Path(workdir.name) / "result.json"
    proc = subprocess.Popen(
        [str(exe), "--address", address, "--sessions", str(sessions), "--size", str(size), "--fps", str(fps),
         "--seconds", str(seconds), "--warm", str(warm), "--speech", str(speech), "--json", str(out),
         "--pixel-format", pixel_format],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return LoadgenRun(proc, out, workdir)
