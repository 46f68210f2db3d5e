"""Renderer backends behind one interface (`lpm_npc.render.renderer.Renderer`), chosen by name.

=============  ===========================  ==============================================================
backend        device                       what runs
=============  ===========================  ==============================================================
torch          cpu (default), cuda[:n]      eager torch; CPU warps with cv2.remap, CUDA with grid_sample
               cpu-gridsample               eager torch grid_sample path on CPU (reference for the others)
onnxruntime    cpu, cuda, tensorrt-ep       the exported ONNX graphs in ONNX Runtime (CPU / CUDA / TensorRT
                                            execution provider; the TRT EP caches engines in cache_dir/ort_trt)
tensorrt       cuda                         TensorRT engines built from the same ONNX graphs with the
                                            `tensorrt` package, cached in cache_dir/trt keyed by ONNX hash,
                                            GPU name and TensorRT version
=============  ===========================  ==============================================================

Every backend gives the same frame for the same motion within the tolerance tested in
tests/test_backends.py (mean abs difference < 1 level, 99.9th percentile < 8 levels of 255).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lpm_npc.render.renderer import Renderer

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def make_renderer(backend: str = "torch", device: str = "cpu", cache_dir: Path | None = None) -> Renderer:
    """Build the renderer `backend` on `device` (see the module table); raises RuntimeError when unavailable."""
    backend = backend.lower()
    if backend in ("torch", "torch-eager", "eager"):
        from lpm_npc.render.backends.torch_eager import make

        if device == "cpu-gridsample":
            return make("cpu", grid_sample=True)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("torch backend on CUDA requested but torch.cuda.is_available() is False")
        return make(device)
    if backend in ("onnxruntime", "ort"):
        try:
            from lpm_npc.render.backends.ort_backend import OrtRenderer
        except ImportError as e:  # pragma: no cover
            raise RuntimeError(f"the onnxruntime backend needs the `onnxruntime` package ({e})") from e
        return OrtRenderer(device=device, cache_dir=cache_dir)
    if backend in ("tensorrt", "trt"):
        from lpm_npc.render.backends.trt_backend import TrtRenderer

        return TrtRenderer(device="cuda" if device in ("cpu", "cuda") else device, cache_dir=cache_dir)
    raise ValueError(f"unknown renderer backend {backend!r} (expected one of {', '.join(BACKENDS)})")


def available_backends() -> list[str]:
    """'backend:device' names that can run on this machine (what `make_renderer` accepts)."""
    out = ["torch:cpu", "torch:cpu-gridsample"]
    cuda = torch.cuda.is_available()
    if cuda:
        out.append("torch:cuda")
    try:
        import onnxruntime as ort

        prov = set(ort.get_available_providers())
        if "CPUExecutionProvider" in prov:
            out.append("onnxruntime:cpu")
        if cuda and "CUDAExecutionProvider" in prov:
            out.append("onnxruntime:cuda")
        if cuda and "TensorrtExecutionProvider" in prov:
            out.append("onnxruntime:tensorrt-ep")
    except ImportError:
        pass
    from lpm_npc.render.backends.trt_backend import trt_available

    if trt_available():
        out.append("tensorrt:cuda")
    return out


__all__ = ["BACKENDS", "available_backends", "make_renderer"]
