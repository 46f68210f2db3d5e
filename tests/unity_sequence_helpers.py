"""Build and run the Unity bridge's engine-independent C# core with Debian's Mono, and replay the
message plan it writes against a live Perform stream (used by tests/test_unity_bridge.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

from google.protobuf.json_format import ParseDict

from lpm_npc.v1 import lpm_npc_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "unity_bridge"
PROTO_DIR = ROOT / "proto"
PROTO_FILE = PROTO_DIR / "lpm_npc" / "v1" / "lpm_npc.proto"
GENERATED = BRIDGE / "Runtime" / "Generated" / "LpmNpc.cs"
CORE_SOURCES = sorted((BRIDGE / "Runtime" / "Core").glob("*.cs"))
CORE_TESTS = sorted((BRIDGE / "Tests" / "Editor").glob("*.cs"))
PLAN_TOOL = BRIDGE / "Tools~" / "SequencePlan" / "Program.cs"
NUNIT_CANDIDATES = [Path("/usr/lib/cli/nunit.framework-2.6.3/nunit.framework.dll")]


def nunit_framework() -> Path | None:
    for p in NUNIT_CANDIDATES:
        if p.exists():
            return p
    found = sorted(Path("/usr/lib/cli").glob("nunit.framework*/nunit.framework.dll"))
    return found[0] if found else None


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def compile_cs(out: Path, sources: list[Path], refs: list[Path] = (), target: str = "library") -> None:
    cmd = [shutil.which("mcs"), f"-target:{target}", f"-out:{out}", "-nowarn:1591"]
    cmd += [f"-r:{r}" for r in refs] + [str(s) for s in sources]
    res = run(cmd)
    if res.returncode != 0:
        raise AssertionError(f"mcs failed:\n{res.stdout}\n{res.stderr}")


def to_message(entry: dict) -> pb.ClientMessage:
    body = {k: v for k, v in entry.items() if k not in ("t", "note")}
    return ParseDict(body, pb.ClientMessage())


def load_plan(path: Path) -> dict:
    return json.loads(path.read_text())


def replay(stream, plan: dict, t0: float, stop: threading.Event) -> threading.Thread:
    """Send every message after the config at its planned time after t0 (SessionStarted)."""
    messages = [to_message(m) for m in plan["messages"][1:]]
    times = [m["t"] for m in plan["messages"][1:]]

    sent_late: list[tuple[float, float]] = []  # (planned t, s after it) of every message sent late

    def sender() -> None:
        for t, msg in zip(times, messages):
            delay = t0 + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            try:
                stream.send(msg)
            except RuntimeError:
                return
            behind = time.monotonic() - (t0 + t)
            if behind > 0.01:
                sent_late.append((t, behind))

    th = threading.Thread(target=sender, name="unity-plan-replay", daemon=True)
    th.sent_late = sent_late  # type: ignore[attr-defined]
    th.start()
    return th
