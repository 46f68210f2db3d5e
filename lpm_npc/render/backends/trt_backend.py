"""TensorRT backend: engines built from the ONNX export (see `onnx_export`) with the `tensorrt` package.

Engines are cached on disk under cache_dir/trt, named by the ONNX file's hash, the GPU name and the
TensorRT version, so they are rebuilt when the exported model, the GPU or TensorRT changes. The
engines run on torch CUDA tensors (no host copies); the host-side parts (crop box, layer planning)
work as in the eager renderer, and the layers are composited on the GPU by torch.

Optimisation profiles: batch 1..MAX_BATCH (opt 8); sampling texture side 64..MAX_SIDE, crop 1..MAX_SIDE.
Untested on the development machine (no GPU there); `tests/test_backends.py` runs it when a GPU and
the `tensorrt` package are present.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from lpm_npc.performance.motion import NUM_CHANNELS
from lpm_npc.render.backends import onnx_export as ox
from lpm_npc.render.renderer import MAX_SIDE, PreparedRig, TorchRenderer

log = logging.getLogger(__name__)

MAX_BATCH = 32


def trt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return torch.cuda.is_available()


def engine_key(onnx_bytes: bytes, kind: str) -> str:
    import tensorrt as trt

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name())
    return f"{kind}_{ox.onnx_hash(onnx_bytes)}_{gpu}_trt{trt.__version__}.engine"


class _Engine:
    """One deserialised engine + context; runs on torch CUDA tensors."""

    def __init__(self, data: bytes):
        import tensorrt as trt

        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeError("could not deserialise the TensorRT engine")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        trt = self.trt
        ctx = self.context
        keep = []
        for name, t in feeds.items():
            if t.dtype == torch.int64 and self.engine.get_tensor_dtype(name) == trt.int32:
                t = t.to(torch.int32)
            t = t.contiguous()
            keep.append(t)
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            ctx.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outs


def build_engine(onnx_bytes: bytes, kind: str, grid_size: int, topology: tuple[int, int, int, int]) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the {kind} graph: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    prof = builder.create_optimization_profile()
    G = int(grid_size)
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = tuple(inp.shape)
        if kind == "geometry":
            if inp.name == "motion":
                prof.set_shape("motion", (1, NUM_CHANNELS), (8, NUM_CHANNELS), (MAX_BATCH, NUM_CHANNELS))
            else:
                s = tuple(int(d) for d in shape)
                prof.set_shape(inp.name, s, s, s)
        else:
            if inp.name == "x":
                prof.set_shape("x", (1, 2, G, G), (8, 2, G, G), (MAX_BATCH, 2, G, G))
            elif inp.name == "texture":
                prof.set_shape("texture", (1, 3, 64, 64), (1, 3, 512, 512), (1, 4, 2048, 2048))
            elif inp.name == "ogrid":
                prof.set_shape("ogrid", (1, 1, 1, 2), (1, 256, 256, 2), (1, MAX_SIDE, MAX_SIDE, 2))
            else:
                prof.set_shape(inp.name, (1,), (1,), (1,))
    config.add_optimization_profile(prof)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise RuntimeError(f"TensorRT could not build the {kind} engine")
    return bytes(data)


class TrtRenderer(TorchRenderer):
    """`Renderer` whose numeric core runs as TensorRT engines on the GPU (torch CUDA around them)."""

    def __init__(self, device: str = "cuda", cache_dir: Path | None = None):
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as e:  # pragma: no cover - depends on the machine
            raise RuntimeError(f"the tensorrt backend needs the `tensorrt` Python package ({e})") from e
        if not torch.cuda.is_available():
            raise RuntimeError("the tensorrt backend needs a CUDA GPU (torch.cuda.is_available() is False)")
        super().__init__(device if device.startswith("cuda") else "cuda")
        self.name = "tensorrt"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cpu_remap = False
        self.subgrid = False
        self._engines: dict[str, _Engine] = {}

    def _engine(self, kind: str, p: PreparedRig) -> _Engine:
        key = f"{kind}_{ox.topology_name(p)}"
        e = self._engines.get(key)
        if e is None:
            onnx_bytes = ox.cached_onnx(kind, p, self.cache_dir)
            name = engine_key(onnx_bytes, kind)
            path = self.cache_dir / "trt" / name if self.cache_dir is not None else None
            data = path.read_bytes() if path is not None and path.exists() else None
            if data is None:
                log.info("building TensorRT %s engine (%s)", kind, name)
                data = build_engine(onnx_bytes, kind, p.grid_size, p.topology)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(data)
                    tmp.replace(path)
            e = self._engines[key] = _Engine(data)
        return e

    def _geometry(self, p: PreparedRig, motion: torch.Tensor):
        feeds = dict(ox.rig_inputs(p))
        feeds["motion"] = motion.float()
        pos, helper, x = self._engine("geometry", p)(feeds)
        host = torch.cat([pos.reshape(-1), helper.reshape(-1)]).cpu().numpy()
        n = pos.numel()
        return host[:n].reshape(pos.shape), host[n:].reshape(helper.shape), x

    def _backward(self, p: PreparedRig, ctx, grid_box, B: int) -> torch.Tensor:
        return ctx

    def _sample(self, p: PreparedRig, x: torch.Tensor, N: int, width: int, height: int, region, alpha: bool):
        rx0, ry0, rx1, ry1 = region
        tex = self._texture(p, N)
        if not alpha:
            tex = tex[:, :3]
        ogrid = self._output_grid(N, width, height, x.device)[:, ry0:ry1, rx0:rx1]
        norm = torch.tensor([2.0 / (p.size - 1)], dtype=torch.float32, device=x.device)
        (crop,) = self._engine("sample", p)({"x": x.float(), "texture": tex, "ogrid": ogrid, "norm": norm})
        return crop


__all__ = ["TrtRenderer", "build_engine", "engine_key", "trt_available"]
