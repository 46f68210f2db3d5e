"""The Unreal bridge's portable C++ core, end to end against the real sidecar.

Builds unreal_bridge/Source/ThirdParty/LpmNpcCore with CMake (libgrpc++-dev, protobuf-compiler-grpc,
libgtest-dev), then runs its GoogleTest binary against a real server on a loopback port:
  * jitter-buffer unit tests (no server),
  * session tests against the session `server` fixture (configure, frames, speech events, interrupt,
    bad input, half-close, controls),
  * reconnect: a separate server is stopped mid-stream and a new one started on the same port.

Skips with a reason when the C++ toolchain is missing, unless LPMNPC_REQUIRE_UNREAL_CORE=1 (CI), in
which case a missing toolchain is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BRIDGE = ROOT / "unreal_bridge"
CORE = BRIDGE / "Source" / "ThirdParty" / "LpmNpcCore"
BUILD = Path(os.environ.get("LPMNPC_CORE_BUILD_DIR", CORE / "build"))
REQUIRE = os.environ.get("LPMNPC_REQUIRE_UNREAL_CORE") == "1"


def _missing_toolchain() -> str | None:
    for tool in ("cmake", "c++", "protoc", "grpc_cpp_plugin", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    for pc in ("grpc++", "protobuf"):
        if subprocess.run(["pkg-config", "--exists", pc]).returncode != 0:
            return f"pkg-config cannot find {pc} (apt-get install libgrpc++-dev libprotobuf-dev)"
    gtest = [Path("/usr/include/gtest/gtest.h"), Path("/usr/local/include/gtest/gtest.h")]
    if not any(p.exists() for p in gtest) and subprocess.run(["pkg-config", "--exists", "gtest"]).returncode != 0:
        return "GoogleTest not found (apt-get install libgtest-dev)"
    return None


def _skip_or_fail(reason: str):
    if REQUIRE:
        pytest.fail(f"LPMNPC_REQUIRE_UNREAL_CORE=1 but {reason}")
    pytest.skip(f"C++ toolchain for the Unreal bridge core: {reason}")


@pytest.fixture(scope="module")
def core_tests() -> Path:
    """Configure and build the core (incremental); the path of the gtest binary."""
    missing = _missing_toolchain()
    if missing:
        _skip_or_fail(missing)
    jobs = str(max(1, min(4, os.cpu_count() or 2)))
    configure = ["cmake", "-S", str(CORE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"]
    for cmd in (configure, ["cmake", "--build", str(BUILD), "-j", jobs]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    exe = BUILD / "lpmnpc_tests"
    assert exe.exists()
    return exe


def run_gtest(exe: Path, tmp_path: Path, gtest_filter: str, env: dict | None = None,
              timeout: float = 300) -> tuple[subprocess.Popen, Path]:
    xml = tmp_path / f"gtest-{abs(hash(gtest_filter))}.xml"
    return subprocess.Popen(
        [str(exe), f"--gtest_filter={gtest_filter}", f"--gtest_output=xml:{xml}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}), xml


def check_result(proc: subprocess.Popen, xml: Path, timeout: float, min_run: int) -> dict:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"gtest timed out after {timeout:.0f} s:\n{out[-6000:]}")
    assert xml.exists(), f"no gtest XML (exit code {proc.returncode}):\n{out[-6000:]}"
    root = ET.parse(xml).getroot()
    results = {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        failures = [f.get("message", "") for f in case.findall("failure")]
        skipped = case.find("skipped") is not None or case.get("result") == "skipped"
        results[name] = "failed" if failures else ("skipped" if skipped else "passed")
        assert not failures, f"{name} failed:\n" + "\n".join(failures) + f"\n--- output ---\n{out[-6000:]}"
    assert proc.returncode == 0, out[-6000:]
    ran = [n for n, r in results.items() if r == "passed"]
    assert len(ran) >= min_run, f"only {ran} passed; results: {results}\n{out[-3000:]}"
    return results


def test_vendored_proto_matches_the_contract():
    """The plugin carries a copy of the contract for builds outside this repository."""
    vendored = CORE / "proto" / "lpm_npc" / "v1" / "lpm_npc.proto"
    assert vendored.read_bytes() == (ROOT / "proto" / "lpm_npc" / "v1" / "lpm_npc.proto").read_bytes(), \
        "copy proto/lpm_npc/v1/lpm_npc.proto to unreal_bridge/Source/ThirdParty/LpmNpcCore/proto/lpm_npc/v1/"


def test_public_headers_expose_no_grpc_or_protobuf():
    """Engine code includes the core's headers: they must not pull in gRPC/protobuf."""
    headers = list((CORE / "include").rglob("*.h")) + list((BRIDGE / "Source" / "LpmNpc" / "Public").rglob("*.h"))
    assert headers
    for h in headers:
        includes = [line for line in h.read_text().splitlines() if line.lstrip().startswith("#include")]
        for line in includes:
            assert not any(bad in line for bad in ("grpc", "protobuf", ".pb.h")), f"{h}: {line}"


def test_jitter_buffer_unit(core_tests, tmp_path):
    proc, xml = run_gtest(core_tests, tmp_path, "JitterBuffer.*",
                          env={"LPMNPC_TEST_ADDRESS": ""})
    check_result(proc, xml, 60, min_run=7)


# Real time on a shared 2-core machine: the C++ tests judge on windows in which the server kept its clock;
# when the VM loses its CPU in every window, the run is repeated (a broken client fails every time).
@pytest.mark.flaky(reruns=2, reruns_delay=2)
def test_core_session_end_to_end(core_tests, server, tmp_path):
    """Configure, frames at rate, playhead, speech events, interrupt, bad input, half-close, controls."""
    proc, xml = run_gtest(core_tests, tmp_path, "Session.*", env={"LPMNPC_TEST_ADDRESS": server.address})
    results = check_result(proc, xml, 300, min_run=9)
    assert all(r == "passed" for r in results.values()), results


def test_core_reconnects_when_the_server_goes_away(core_tests, cache_dir, tmp_path, monkeypatch):
    """Stop the server mid-stream, start a new one on the same port: backoff, resume token, clock."""
    from lpm_npc.config import ServerConfig
    from lpm_npc.runtime.runtime import ResumeStore
    from lpm_npc.server.app import BackgroundServer

    asked: list[str] = []
    original_take = ResumeStore.take

    def recording_take(self, token):
        asked.append(token)
        return original_take(self, token)

    monkeypatch.setattr(ResumeStore, "take", recording_take)

    first = BackgroundServer(ServerConfig(port=0, cache_dir=cache_dir, max_sessions=2, drain_seconds=0.5)).start()
    first.runtime.store.ensure_default()
    port = first.port
    signal_file = tmp_path / "resume_token.txt"
    proc, xml = run_gtest(core_tests, tmp_path, "Reconnect.*",
                          env={"LPMNPC_TEST_ADDRESS": f"127.0.0.1:{port}", "LPMNPC_TEST_SIGNAL_FILE": str(signal_file)})
    second = None
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"the gtest never signalled (exit {proc.poll()}):\n{out[-6000:]}")
            time.sleep(0.05)
        token = signal_file.read_text().strip()
        assert token
        # The server goes away (drain: SERVER_DRAINING, then the streams end) and stays away a while.
        first.stop(grace_s=0.5)
        first = None
        time.sleep(1.5)
        second = BackgroundServer(ServerConfig(port=port, cache_dir=cache_dir, max_sessions=2,
                                               drain_seconds=0.5)).start()
        check_result(proc, xml, 180, min_run=1)
        assert token in asked, f"the new server was not asked to resume {token!r} (asked {asked})"
    finally:
        if proc.poll() is None:
            proc.kill()
        for srv in (first, second):
            if srv is not None:
                srv.stop(grace_s=0.5)


@pytest.mark.flaky(reruns=2, reruns_delay=2)
def test_native_loadgen_streams_speech_and_reports(core_tests, server):
    """`lpm-npc bench --client cpp`: lpmnpc_loadgen (built with the core) drives N sessions and reports."""
    from lpm_npc.bench import _speech16k
    from lpm_npc.loadgen import start_loadgen

    exe = core_tests.parent / "lpmnpc_loadgen"
    assert exe.exists(), "the core's CMake build makes lpmnpc_loadgen next to the tests"
    run = start_loadgen(exe, server.address, sessions=2, size=64, fps=30, seconds=5.0, warm=1.0,
                        speech_16k=_speech16k(), pixel_format="bgra8")
    run.wait_started()
    report = run.result(timeout=60)
    assert report["window_s"] > 3.0 and report["client_cpu_s"] > 0
    assert len(report["sessions"]) == 2
    for s in report["sessions"]:
        assert not s["error"]
        # Paced by the session clock: never faster than 30 fps. A starved CI machine skips frames
        # (CI once saw every try under 20 fps), so the floor only says frames kept coming.
        assert 2 < s["fps"] < 40, s["fps"]
        # the server's Stats arrive once a second: audio -> frame latency and the stage times
        assert s["lat_p95"] and all(0 < v < 1000 for v in s["lat_p95"])
        assert s["stages"]["render"] and s["batch"]


def test_native_loadgen_refuses_bad_arguments(core_tests):
    exe = core_tests.parent / "lpmnpc_loadgen"
    res = subprocess.run([str(exe), "--sessions", "2"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--speech is required" in res.stderr
    res = subprocess.run([str(exe), "--speech", "/nonexistent.s16"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "cannot read" in res.stderr
