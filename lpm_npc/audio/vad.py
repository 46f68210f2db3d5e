"""Silero VAD (v5/v6 ONNX) as a streaming, per-session speech detector on ONNX Runtime.

The model ships inside the `silero-vad` wheel (`silero_vad/data/silero_vad.onnx`). It is located
with `importlib.util.find_spec`, which does not execute the package (`import silero_vad` would
import torch), and run directly with onnxruntime: one InferenceSession per process
(intra_op_num_threads=1, shared by all sessions and threads; ORT's `run` is thread-safe), and a
`SileroVad` per player channel holding the model's recurrent state (2, 1, 128) and the 64-sample
context that the v5/v6 model expects in front of each 512-sample chunk (as in the wheel's own
`OnnxWrapper.__call__`: input = [last 64 samples of the previous input, 512 new samples]).

Output: one speech probability per 32 ms chunk (512 samples at 16 kHz). Cost ~0.1 ms per chunk
on an idle core, ~0.3 ms on this loaded 2-core machine (`python -m lpm_npc.audio.vad` prints it).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000
CHUNK = 512          # samples per model call at 16 kHz (32 ms)
CONTEXT = 64         # samples of the previous input prepended to each chunk (v5/v6 model)
CHUNK_S = CHUNK / RATE
MODEL_FILE = "silero_vad.onnx"

_LOCK = threading.Lock()
_SESSION = None          # onnxruntime.InferenceSession, shared per process
_UNAVAILABLE: str | None = None


class VadUnavailableError(RuntimeError):
    """The silero-vad wheel or onnxruntime is missing (or the model does not load)."""


def model_path() -> Path:
    """Path of the ONNX model inside the installed `silero-vad` wheel (without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailableError("the silero-vad package is not installed")
    for root in spec.submodule_search_locations:
        p = Path(root) / "data" / MODEL_FILE
        if p.is_file():
            return p
    raise VadUnavailableError(f"silero-vad is installed but data/{MODEL_FILE} is missing")


def _session():
    global _SESSION, _UNAVAILABLE
    if _SESSION is not None:
        return _SESSION
    if _UNAVAILABLE is not None:
        raise VadUnavailableError(_UNAVAILABLE)
    with _LOCK:
        if _SESSION is None and _UNAVAILABLE is None:
            try:
                import onnxruntime as ort

                path = model_path()
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
                names = {i.name for i in sess.get_inputs()}
                if not {"input", "state", "sr"} <= names:
                    raise VadUnavailableError(f"unexpected Silero VAD inputs {sorted(names)} in {path}")
                _SESSION = sess
                log.info("Silero VAD loaded from %s", path)
            except ImportError as exc:
                _UNAVAILABLE = f"onnxruntime is not installed ({exc})"
            except VadUnavailableError as exc:
                _UNAVAILABLE = str(exc)
            except Exception as exc:  # noqa: BLE001 - a broken model file or runtime: fall back, never crash
                _UNAVAILABLE = f"Silero VAD failed to load: {exc}"
    if _SESSION is None:
        raise VadUnavailableError(_UNAVAILABLE or "Silero VAD unavailable")
    return _SESSION


def silero_available() -> bool:
    try:
        _session()
        return True
    except VadUnavailableError:
        return False


class SileroVad:
    """Streaming Silero VAD for one audio stream: push 16 kHz float samples in any chunk sizes,
    get one speech probability per completed 512-sample chunk. Constant memory."""

    def __init__(self) -> None:
        self._sess = _session()          # raises VadUnavailableError
        self._sr = np.array(RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._input = np.zeros((1, CONTEXT + CHUNK), np.float32)   # [context | chunk]
        self._pending = np.zeros(0, np.float32)
        self.chunks_emitted = 0
        self.calls_s = 0.0               # time spent in the model (for the cost printout)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities (float32, one per chunk completed by these samples)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        n = data.size // CHUNK
        out = np.zeros(n, np.float32)
        t0 = time.perf_counter()
        for k in range(n):
            buf = self._input
            buf[0, :CONTEXT] = buf[0, -CONTEXT:]
            buf[0, CONTEXT:] = data[k * CHUNK:(k + 1) * CHUNK]
            prob, state = self._sess.run(None, {"input": buf, "state": self._state, "sr": self._sr})
            self._state = state
            out[k] = float(prob.reshape(-1)[0])
        self.calls_s += time.perf_counter() - t0
        self._pending = data[n * CHUNK:].copy()
        self.chunks_emitted += n
        return out


def benchmark(seconds: float = 20.0) -> dict:
    """Cost of one model call on real-ish input (printed by `python -m lpm_npc.audio.vad`)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    x = (0.1 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
         + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    vad = SileroVad()
    vad.push(x[:CHUNK * 20])            # warm up
    vad.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    probs = vad.push(x)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"chunks": int(probs.size), "ms_per_chunk": 1000.0 * wall / probs.size,
            "cpu_ms_per_chunk": 1000.0 * cpu / probs.size,
            "model_ms_per_chunk": 1000.0 * vad.calls_s / probs.size,
            "realtime_factor": wall / seconds}


if __name__ == "__main__":  # pragma: no cover
    import sys

    r = benchmark()
    print(f"Silero VAD ({model_path()}): {r['ms_per_chunk']:.3f} ms wall, {r['cpu_ms_per_chunk']:.3f} ms CPU "
          f"per 32 ms chunk ({r['chunks']} chunks, real-time factor {r['realtime_factor']:.4f}); torch imported: "
          f"{'torch' in sys.modules}")
