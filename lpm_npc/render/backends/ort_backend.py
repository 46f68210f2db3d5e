"""ONNX Runtime backend: the exported geometry and sampling graphs (see `onnx_export`) run in ORT.

device: "cpu" (CPUExecutionProvider), "cuda" (CUDAExecutionProvider, CPU fallback) or "tensorrt-ep"
(TensorrtExecutionProvider with its engine cache under cache_dir/ort_trt, then CUDA, then CPU).
Host-side parts (crop box, eye/mouth planning and compositing, uint8 conversion) run in torch on
the CPU around the graphs, exactly as in the eager renderer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lpm_npc.render.backends import onnx_export as ox
from lpm_npc.render.renderer import PreparedRig, TorchRenderer

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "tensorrt-ep")


def providers_for(device: str, cache_dir: Path | None) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device in ("tensorrt-ep", "tensorrt"):
        opts = {"trt_fp16_enable": False}
        if cache_dir is not None:
            path = Path(cache_dir) / "ort_trt"
            path.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(path))
        return [("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"unknown onnxruntime device {device!r} (expected one of {DEVICES})")


class OrtRenderer(TorchRenderer):
    """`Renderer` whose numeric core runs in ONNX Runtime."""

    def __init__(self, device: str = "cpu", cache_dir: Path | None = None, threads: int | None = None):
        import onnxruntime as ort

        super().__init__("cpu")
        if device not in DEVICES:
            raise ValueError(f"unknown onnxruntime device {device!r} (expected one of {DEVICES})")
        self.ort_device = device
        self.name = f"onnxruntime-{device}"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cpu_remap = False   # float crops come back from the sampling graph
        self.subgrid = False     # the graph computes the full coarse grid
        self._providers = providers_for(device, self.cache_dir)
        avail = ort.get_available_providers()
        wanted = self._providers[0] if isinstance(self._providers[0], str) else self._providers[0][0]
        if wanted not in avail:
            raise RuntimeError(f"onnxruntime has no {wanted} here (available: {', '.join(avail)})")
        self._opts = ort.SessionOptions()
        n = threads if threads is not None else torch.get_num_threads()
        self._opts.intra_op_num_threads = max(1, int(n))
        self._opts.inter_op_num_threads = 1
        self._opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions: dict[str, object] = {}

    def _session(self, kind: str, p: PreparedRig):
        key = f"{kind}_{ox.topology_name(p)}"
        s = self._sessions.get(key)
        if s is None:
            import onnxruntime as ort

            data = ox.cached_onnx(kind, p, self.cache_dir)
            s = self._sessions[key] = ort.InferenceSession(data, self._opts, providers=self._providers)
        return s

    def _geometry(self, p: PreparedRig, motion: torch.Tensor):
        feeds = dict(ox.numpy_inputs(p))
        feeds["motion"] = np.ascontiguousarray(motion.cpu().numpy(), np.float32)
        pos, helper, x = self._session("geometry", p).run(None, feeds)
        return pos, helper, x

    def _backward(self, p: PreparedRig, ctx, grid_box, B: int) -> torch.Tensor:
        return torch.from_numpy(ctx)

    def _sample(self, p: PreparedRig, x: torch.Tensor, N: int, width: int, height: int, region, alpha: bool):
        rx0, ry0, rx1, ry1 = region
        tex = self._texture(p, N)
        key = ("ort_tex", tex.shape[-1], alpha)
        t = p.host.get(key)
        if t is None:
            t = p.host[key] = np.ascontiguousarray((tex if alpha else tex[:, :3]).cpu().numpy())
        ogrid = self._output_grid(N, width, height, torch.device("cpu"))[:, ry0:ry1, rx0:rx1]
        feeds = {"x": np.ascontiguousarray(x.cpu().numpy(), np.float32), "texture": t,
                 "ogrid": np.ascontiguousarray(ogrid.numpy()), "norm": np.array([2.0 / (p.size - 1)], np.float32)}
        (crop,) = self._session("sample", p).run(None, feeds)
        return torch.from_numpy(crop)
